import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// How an accepted connection becomes a session: `tcp-request connection` rules on the
/// real addresses, the PROXY-protocol stage when the listener or a rule expects one, then
/// `tcp-request content` rules and the route (TCP mode) on the addresses the stage gave,
/// and the `TCPStream` or `HTTPTransaction` that carries it.
extension LoopContext {
    /// Sets up a new connection, whose slot its acceptor reserved.
    func accepted(fd: FileDescriptor, client: SocketAddress, acceptor: Acceptor) {
        let frontend = acceptor.frontend
        counters.add(frontend.statBase, .sessions)
        CounterTable.raise(frontend.peakSessions, to: frontend.active.load(ordering: .relaxed))
        if client.family != AF_UNIX { try? Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1) }
        if frontend.settings.options.clientKeepAlive {
            try? Socket.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1)
            if client.family != AF_UNIX { frontend.settings.clientProbes.apply(to: fd) }
        }
        var expectProxy = acceptor.acceptsProxy
        if !frontend.tcpConnectionRules.isEmpty {
            let local = Socket.localAddress(fd)
            var samples = ConnectionSamples(client: HTTPTransaction.ip(of: client), clientPort: client.port,
                                            local: HTTPTransaction.ip(of: local), localPort: local.port, model: model)
            samples.frontendName = frontend.name
            let verdict = frontend.tcpConnectionRules.evaluate(samples)
            if verdict.reject {
                fd.close()
                connectionEnded(acceptor)
                return
            }
            if verdict.expectProxy { expectProxy = true }
        }
        // An HTTPS client: its handshake is tried at once (below), and epoll is asked for
        // writability only when a write blocks.
        let tlsFirst = acceptor.tls != nil && !expectProxy && frontend.mode == .http
        guard let connection = try? Connection.accepted(fd, context: self, writesLater: tlsFirst) else {
            fd.close(); connectionEnded(acceptor); return
        }
        if expectProxy {
            let stage = ProxyProtocolReceiver(connection: connection, peer: client, acceptor: acceptor, context: self)
            sessions += 1
            openSessions[ObjectIdentifier(stage)] = stage
            stage.start()
            return
        }
        startSession(connection, peer: client, local: nil, acceptor: acceptor)
    }

    /// Hands a connection to its application, with the client's address (`peer`) and the
    /// address it reached (`local`, nil to ask the kernel), as a PROXY header may have set them.
    /// `bytesWaiting`: the stage saw bytes after its header, which no new event will announce.
    /// `payload`: the client's first bytes, once `tcp-request inspect-delay` looked at them.
    func startSession(_ connection: Connection, peer: SocketAddress, local: SocketAddress?, acceptor: Acceptor, bytesWaiting: Bool = false,
                      payload: [UInt8]? = nil) {
        let frontend = acceptor.frontend
        // `bind ... ssl`: TLS after any PROXY header, under whatever the frontend speaks.
        if let tls = acceptor.tls {
            guard let t = TLSTransport(accepting: connection.fd, context: tls.current.value, counters: model.tls) else {
                connection.close(abort: true)
                connectionEnded(acceptor)
                return
            }
            connection.transport = t
            // An HTTPS client's ClientHello is usually queued by the time it is accepted, as
            // HAProxy finds too: the handshake is tried at once (below), saving a wakeup, and
            // epoll reports it if it was not there. Elsewhere (TCP mode, after a PROXY header)
            // the handshake waits for its edge, unless a stage saw bytes no edge will announce.
            if !bytesWaiting && connection.reportsWritable { connection.readable = false }
        }
        if frontend.mode == .tcp {
            // Rules or routes that read the client's first bytes wait for them (bounded).
            if payload == nil, let delay = frontend.inspectDelay, connection.transport == nil {
                let stage = ContentInspector(connection: connection, peer: peer, local: local, acceptor: acceptor, context: self)
                sessions += 1
                openSessions[ObjectIdentifier(stage)] = stage
                stage.start(delay: delay, bytesWaiting: bytesWaiting)
                return
            }
            let localAddress = local ?? connection.localAddress
            var session = TCPSessionStart()
            let verdict: (reject: Bool, backend: Backend?) = (payload ?? []).withUnsafeBytes { bytes in
                var samples = ConnectionSamples(client: HTTPTransaction.ip(of: peer), clientPort: peer.port,
                                                local: HTTPTransaction.ip(of: localAddress), localPort: localAddress.port, model: model)
                if payload != nil { samples.payload = bytes }
                samples.frontendName = frontend.name
                samples.captures = [[UInt8]?](repeating: nil, count: frontend.requestCaptures)
                // tcp-request content rules, then the route, then the backend's content rules:
                // in TCP mode all read the connection (and the variables set so far).
                if frontend.tcpContentRules.evaluate(&samples, perform: { Self.perform($0, &$1, frontend.contentFormats) }).reject { return (true, nil) }
                var chosen: Backend?
                // A TCP frontend has fixed routes only (the loader refuses a computed name there).
                for (route, g) in frontend.routes where g.allows(samples) {
                    if case .fixed(let b) = route { chosen = b }
                    break
                }
                if let b = chosen ?? frontend.defaultBackend, b !== frontend.ownBackend, !b.tcpContentRules.isEmpty {
                    if b.tcpContentRules.evaluate(&samples, perform: { Self.perform($0, &$1, b.contentFormats) }).reject { return (true, nil) }
                }
                session.variables = samples.variables
                session.captures = samples.captures
                return (false, chosen)
            }
            if verdict.reject {
                connection.close()
                connectionEnded(acceptor)
                return
            }
            guard let backend = verdict.backend ?? frontend.defaultBackend else {
                connection.close()
                connectionEnded(acceptor)
                return
            }
            if backend.mode == .tcp {
                let s = TCPStream(connection: connection, peer: peer, local: local, acceptor: acceptor, backend: backend, context: self)
                s.variables = session.variables
                s.captures = session.captures
                sessions += 1
                openSessions[ObjectIdentifier(s)] = s
                s.start()
                return
            }
        }
        let s = HTTPTransaction(connection: connection, peer: peer, local: local, acceptor: acceptor, context: self)
        sessions += 1
        openSessions[ObjectIdentifier(s)] = s
        s.updateDeadline()
        if bytesWaiting || !connection.reportsWritable { s.progress() }
    }

    /// A client's TLS handshake failed: HAProxy's connection-error line (`SSL handshake
    /// failure`) on the frontend's log, at notice.
    func tlsHandshakeFailed(_ acceptor: Acceptor, peer: IPAddress, port: UInt16, at accepted: (seconds: Int, microseconds: Int)) {
        let frontend = acceptor.frontend
        model.tls.failures.add(1, ordering: .relaxed)
        guard !frontend.logDestinations.isEmpty else { return }
        let date = Logger.acceptDate(seconds: accepted.seconds, microseconds: accepted.microseconds)
        let bind = acceptor.listener.options.name ?? acceptor.listener.key.description
        model.logger.log("\(peer):\(port) [\(date)] \(frontend.name)/\(bind): SSL handshake failure", to: frontend.logDestinations, level: .notice)
    }

    /// Resumes the acceptors paused here, unless the operator paused them (SIGTTOU).
    func resumePausedAcceptors() {
        guard !pausedAcceptors.isEmpty, !adminPaused else { return }
        let list = pausedAcceptors
        pausedAcceptors.removeAll()
        acceptorsPaused.store(false, ordering: .relaxed)
        for a in list { a.resumeAccepting() }
    }

    /// A connection ended: its slot goes back, and a paused acceptor may go on.
    func connectionEnded(_ acceptor: Acceptor) {
        acceptor.releaseSlot()
        resumePausedAcceptors()
        // A connection handed over by another loop's acceptor: wake that one if it paused.
        if let a = acceptingContext, a.acceptorsPaused.load(ordering: .relaxed) {
            a.loop.post { a.resumePausedAcceptors() }
        }
    }

    func sessionClosed(_ s: LoopObject) {
        sessions -= 1
        openSessions[ObjectIdentifier(s)] = nil
        if let h = s as? HTTPTransaction { connectionEnded(h.acceptor) } else if let t = s as? TCPStream { connectionEnded(t.acceptor) }
        else if let p = s as? ProxyProtocolReceiver { connectionEnded(p.acceptor) }
        else if let c = s as? ContentInspector { connectionEnded(c.acceptor) }
        onSessionClosed?()
    }

    /// A `tcp-request content` operation on a connection's samples: variables and captures
    /// that later rules, the route, the stream and its log line read.
    static func perform(_ op: TCPRequestAction.Operation, _ samples: inout ConnectionSamples, _ formats: [String: LogFormat]) {
        switch op {
        case .setVariable(let scope, let name, let e, let c):
            guard let v = TCPRequestAction.Operation.value(e, samples) else { break }
            samples.variables.assign(scope, name, v, if: c, model: samples.model)
        case .setVariableFormat(let scope, let name, let f, let c):
            samples.variables.assign(scope, name, .string((formats[f] ?? LogFormat(f)).render(nil, samples)), if: c, model: samples.model)
        case .unsetVariable(let scope, let name):
            samples.variables.assign(scope, name, nil, model: samples.model)
        case .capture(let e, let length, let slot):
            if slot < samples.captures.count { samples.captures[slot] = TCPRequestAction.Operation.captured(e, length: length, samples) }
        }
    }
}

/// What a TCP session's content rules leave for its stream: variables and captures.
struct TCPSessionStart {
    var variables = SessionVariables()
    var captures: [[UInt8]?] = []
}
