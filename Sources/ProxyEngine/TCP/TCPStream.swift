import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// A client connection in TCP mode: bytes forwarded both ways between two `Connection`s,
/// byte for byte, with half-close carried across (a FIN from one side becomes a FIN on the
/// other); spliced through a pipe per direction when both connections are raw.
final class TCPStream: LoopObject, ConnectionOwner, QueueWaiter {
    let client: Connection
    unowned(unsafe) let context: LoopContext
    /// The acceptor that took this connection: its slot is released when it closes.
    let acceptor: Acceptor
    let frontend: Frontend
    let backend: Backend
    var server: Connection?
    var closed = false
    var toServer: Buffer?
    var toClient: Buffer?
    var retriesLeft: Int
    var connecting = false
    /// Zero-copy forwarding through a pipe per direction; nil means plain read/write.
    var upPipe: KernelPipe?
    var downPipe: KernelPipe?
    var upInPipe = 0
    var downInPipe = 0
    var splicing = true
    var slotServer: Server?
    /// The server of the last attempt (for `redispatch`).
    var triedServer: Server?
    /// Logged already at the connection to the server (`option logasap`).
    var loggedEarly = false
    // For the log line.
    let clientAddress: SocketAddress
    /// The address the client reached, when a PROXY header named it (else the kernel's).
    var localAddress: SocketAddress?
    let acceptedAt = Clock.wallClock()
    var acceptedMs: Int64 = 0
    var connectedMs: Int64 = -1
    var bytesToClient = 0

    /// Its place in the backend's queue while every server is at its `maxconn`, and since when.
    var queueTicket: QueueTicket?
    var queuedAtMs: Int64 = 0
    var connectStartMs: Int64 = 0
    /// What `tcp-request content set-var|capture` left: rules, the log and `sni` read them.
    var variables = SessionVariables()
    var captures: [[UInt8]?] = []
    /// Where the server connection left from, kept when the log prints `%bi` or `%bp`.
    var serverSource: SocketAddress?

    func releaseSlot() {
        guard let s = slotServer else { return }
        slotServer = nil
        backend.release(s)
    }

    init(connection: Connection, peer: SocketAddress, local: SocketAddress?, acceptor: Acceptor, backend: Backend, context: LoopContext) {
        client = connection
        clientAddress = peer
        localAddress = local
        acceptedMs = context.loop.now
        self.acceptor = acceptor
        frontend = acceptor.frontend
        self.backend = backend
        self.context = context
        retriesLeft = backend.settings.retries
        super.init()
        connection.owner = self
    }

    var loop: EventLoop { context.loop }

    /// What a server's `sni` expression reads in a TCP stream: the connection and its TLS.
    var streamSamples: ConnectionSamples {
        let local = reached
        var samples = ConnectionSamples(client: HTTPTransaction.ip(of: clientAddress), clientPort: clientAddress.port,
                                        local: HTTPTransaction.ip(of: local), localPort: local.port, model: context.model,
                                        tls: client.transport as? TLSTransport)
        samples.variables = variables
        samples.captures = captures
        samples.frontendName = frontend.name
        samples.backendName = backend.name
        return samples
    }

    /// The address the client reached: from its PROXY header, or asked of the kernel once.
    var reached: SocketAddress {
        if let a = localAddress { return a }
        let a = client.localAddress
        localAddress = a
        return a
    }

    /// A TLS client's handshake runs before the server is chosen and reached, as in HAProxy:
    /// its outcome (`ssl_fc_sni`...) is known to the route and to a server's `sni`.
    var awaitingHandshake = false

    func start() {
        if let t = client.transport as? TLSTransport, !t.established {
            awaitingHandshake = true
            progress()
            return
        }
        connect()
        if !closed { progress() }
    }

    /// Moves the client's TLS handshake on: true once it is done and the server is being
    /// reached; false while it waits, or when it failed (logged as HAProxy does, closed).
    func finishClientHandshake() -> Bool {
        guard let t = client.transport as? TLSTransport else { awaitingHandshake = false; return true }
        do {
            guard try t.handshake() else {
                if t.wants == .read { client.readable = false } else { client.waitWritable() }
                updateDeadline()
                return false
            }
        } catch {
            if t.handshakeFailed {
                context.tlsHandshakeFailed(acceptor, peer: HTTPTransaction.ip(of: clientAddress), port: clientAddress.port, at: acceptedAt)
            }
            close()
            return false
        }
        awaitingHandshake = false
        connect()
        return !closed
    }

    func connect(woken: QueueTicket? = nil) {
        // `option redispatch`: the last retry goes to another server than the one that failed.
        let excluded = backend.settings.options.redispatches(attempt: backend.settings.retries - retriesLeft, of: backend.settings.retries) ? triedServer : nil
        var request = AdmissionRequest(excluding: excluded, wokenTicket: woken)
        if case .source = backend.settings.balance {
            let ip = HTTPTransaction.ip(of: clientAddress)
            request.hashKey = Backend.sourceKey(ip, family: clientAddress.family)
        }
        let chosen: Server
        switch backend.admit(self, loop: loop, counters: context.counters, request, scratch: &context.scratchServers) {
        case .server(let s):
            chosen = s
        case .queued(let ticket):
            if queueTicket == nil && woken == nil { queuedAtMs = loop.now }
            queueTicket = ticket
            updateDeadline()
            return
        case .refused:
            close()
            return
        }
        slotServer = chosen
        triedServer = chosen
        connectStartMs = loop.now
        do {
            var serverName: String?
            if let tls = chosen.tls, tls.sendsServerName { serverName = tls.serverName(in: streamSamples) }
            let c = try Connection.open(to: chosen, context: context, serverName: serverName) { [unowned self] in reached.port }
            c.owner = self
            if let v = chosen.definition.options.sendProxy {
                // The client's address and the one it reached; UNKNOWN/LOCAL for a UNIX client.
                let unix = clientAddress.family == AF_UNIX
                c.preface = ProxyProtocol.encode(v, source: unix ? nil : clientAddress, destination: unix ? nil : reached,
                                                 ssl: chosen.definition.options.proxyV2SSL, client: client.transport as? TLSTransport)
            }
            server = c
            connecting = !c.connected
            if c.connected {
                connectedMs = loop.now; noteServerSource()
                if chosen.observes { chosen.observed(.connected) }
            }
        } catch {
            chosen.observed(.connectFailed)
            retryOrClose()
        }
    }

    /// The server connection failed: a TLS handshake that did not complete counts as a failed
    /// connect (retried); anything later ends the stream.
    func serverFailed() {
        if let s = server, let t = s.transport, t.handshakeFailed, bytesToClient == 0 { retryOrClose() } else { close() }
    }

    func retryOrClose() {
        releaseSlot()
        if let s = server { server = nil; s.close() }
        if retriesLeft > 0 {
            retriesLeft -= 1
            connect()
        } else {
            close()
        }
    }

    func connectionReady(_ connection: Connection, events: UInt32) {
        if closed { return }
        progress()
    }

    override func timerFired() {
        if connecting { server?.server?.observed(.connectFailed) }
        close()
    }

    /// A slot was freed for this connection: try again, first in line.
    func leaveQueue() {
        guard !closed, let ticket = queueTicket else { return }
        queueTicket = nil
        connect(woken: ticket)
        if !closed { progress() }
    }

    override func resume() {
        if !closed { progress() }
    }

    func progress() {
        if awaitingHandshake, !finishClientHandshake() { return }
        guard let s = server else { return }
        if connecting {
            guard s.writable || s.readable || s.errored else { updateDeadline(); return }
            if s.errored {
                s.server?.observed(.connectFailed)
                retryOrClose()
                if !closed { updateDeadline() }
                return
            }
            connecting = false
            if let observing = s.server, observing.observes { observing.observed(.connected) }
            s.established()
            connectedMs = loop.now
            noteServerSource()
            if frontend.settings.options.logASAP {
                // Log now, totals so far prefixed with '+', as HAProxy does.
                logConnection(early: true)
                loggedEarly = true
            }
        }
        // A stage's preface (the PROXY header) goes before any byte of the client's.
        if s.preface != nil {
            guard let done = s.flushPreface() else { close(); return }
            if !done { updateDeadline(); return }
        }
        if splicing {
            if upPipe == nil {
                // Two pipes out of `maxpipes`, or copying through buffers from here on.
                let model = context.model
                if Acceptor.reserve(model.pipesInUse, below: model.maxPipes, count: 2) {
                    do {
                        upPipe = try KernelPipe()
                        downPipe = try KernelPipe()
                    } catch {
                        upPipe?.close()
                        upPipe = nil
                        model.pipesInUse.subtract(2, ordering: .relaxed)
                        splicing = false
                    }
                } else {
                    splicing = false
                }
            }
            if splicing, client.canSplice, s.canSplice { spliceBothWays(s); return }
        }
        if toServer == nil { toServer = loop.buffers.take() }
        if toClient == nil { toClient = loop.buffers.take() }
        let up = toServer!, down = toClient!
        var rounds = 0
        while !closed && rounds < 64 {
            rounds += 1
            var moved = false
            // client -> server
            if !up.isEmpty || s.preface != nil {
                guard let n = s.write(from: up) else { serverFailed(); return }
                if up.isEmpty { up.clear() }
                if n > 0 { moved = true }
            }
            if up.isEmpty && client.readable && !client.eof {
                up.clear()
                if client.read(into: up) != nil { moved = true }
            }
            if client.eof && up.isEmpty && s.preface == nil && !s.writeShut { s.shutdownWrite() }
            // server -> client
            if !down.isEmpty {
                guard let n = client.write(from: down) else { close(); return }
                bytesToClient += n
                if down.isEmpty { down.clear() }
                if n > 0 { moved = true }
            }
            if down.isEmpty && s.readable && !s.eof {
                down.clear()
                if s.read(into: down) != nil { moved = true }
                if s.eof, let t = s.transport, t.handshakeFailed { serverFailed(); return }
            }
            if s.eof && down.isEmpty && !client.writeShut { client.shutdownWrite() }
            if client.writeShut && s.writeShut { close(); return }
            if !moved { break }
            if rounds == 64 { loop.runAgain(self) }
        }
        if !closed { updateDeadline() }
    }

    /// Moves bytes both ways with splice(2): socket → pipe → socket, no copy in user space.
    func spliceBothWays(_ s: Connection) {
        guard let up = upPipe, let down = downPipe else { return }
        let chunk = 1 << 16
        var rounds = 0
        while !closed && rounds < 64 {
            rounds += 1
            var moved = false
            do {
                // client -> pipe -> server
                if upInPipe > 0 && s.writable {
                    let n = try s.splice(from: up.readEnd, count: upInPipe)
                    upInPipe -= n
                    moved = n > 0
                }
                if upInPipe == 0 && client.readable && !client.eof {
                    // A short splice may only mean the pipe's slots filled: not drained.
                    if let n = try client.splice(to: up.writeEnd, count: chunk) { upInPipe = n; moved = true }
                }
                if client.eof && upInPipe == 0 && !s.writeShut { s.shutdownWrite() }
                // server -> pipe -> client
                if downInPipe > 0 && client.writable {
                    let n = try client.splice(from: down.readEnd, count: downInPipe)
                    downInPipe -= n
                    bytesToClient += n
                    moved = moved || n > 0
                }
                if downInPipe == 0 && s.readable && !s.eof {
                    if let n = try s.splice(to: down.writeEnd, count: chunk) { downInPipe = n; moved = true }
                }
                if s.eof && downInPipe == 0 && !client.writeShut { client.shutdownWrite() }
            } catch {
                close()
                return
            }
            if client.writeShut && s.writeShut { close(); return }
            if !moved { break }
            if rounds == 64 { loop.runAgain(self) }
        }
        if !closed { updateDeadline() }
    }

    /// One line per connection: the frontend's access-log format (`option tcplog`,
    /// `log-format`), or HAProxy's "Connect from" notice without one.
    func logConnection(early: Bool = false) {
        guard !frontend.logDestinations.isEmpty, !loggedEarly else { return }
        if frontend.settings.options.dontLogNull && bytesToClient == 0 && connectedMs < 0 { return }
        // `option dontlog-normal`: a connection that reached its server without a retry.
        if frontend.settings.options.dontLogNormal && connectedMs >= 0 && backend.settings.retries == retriesLeft { return }
        let line: String
        if let format = frontend.accessLog {
            line = String(decoding: format.render(logRecord(early: early), streamSamples), as: UTF8.self)
        } else {
            line = "Connect from \(HTTPTransaction.ip(of: clientAddress)):\(clientAddress.port) (\(frontend.name)/TCP)"
        }
        context.model.logger.log(line, to: frontend.logDestinations)
    }

    @inline(__always) func noteServerSource() {
        if frontend.accessLogReadsSource, let s = server { serverSource = s.localAddress }
    }

    /// The values of this stream's log line, now.
    func logRecord(early: Bool) -> LogRecord {
        let server = triedServer ?? slotServer
        var r = LogRecord(frontend: frontend, backendName: backend.name, serverName: server?.name ?? "<NOSRV>",
                          accepted: acceptedAt, isHTTP: false, model: context.model)
        r.client = (HTTPTransaction.ip(of: clientAddress), Int(clientAddress.port))
        let local = localAddress ?? client.localAddress
        r.frontendAddress = (HTTPTransaction.ip(of: local), Int(local.port))
        if let s = server { let a = s.address; r.serverAddress = (HTTPTransaction.ip(of: a), Int(a.port)) }
        r.backendSource = serverSource.map { (HTTPTransaction.ip(of: $0), Int($0.port)) }
        r.overTLS = acceptor.tls != nil
        r.tls = client.transport as? TLSTransport
        if let t = r.tls, t.establishedAtMs > 0 { r.handshake = max(0, t.establishedAtMs - acceptedMs) }
        r.queue = connectStartMs > 0 ? (queuedAtMs > 0 ? max(0, connectStartMs - queuedAtMs) : 0) : -1
        r.connect = connectedMs >= 0 && connectStartMs > 0 ? connectedMs - connectStartMs : -1
        r.total = loop.now - acceptedMs
        r.active = r.total
        r.early = early
        r.bytesOut = bytesToClient
        r.bytesIn = client.bytesIn
        r.termination = connectedMs < 0 ? "SC" : "--"
        r.activeConnections = context.model.activeConnections.load(ordering: .relaxed)
        r.frontendConnections = frontend.active.load(ordering: .relaxed)
        r.backendConnections = backend.active.load(ordering: .relaxed)
        r.serverConnections = server?.active.load(ordering: .relaxed) ?? 0
        r.retries = max(0, backend.settings.retries - retriesLeft)
        r.redispatched = backend.settings.options.redispatchedWithin(r.retries, of: backend.settings.retries)
        if frontend.requestCaptures > 0 {
            r.requestCaptures = captures.count == frontend.requestCaptures ? captures : [[UInt8]?](repeating: nil, count: frontend.requestCaptures)
        }
        return r
    }

    /// The client's bytes, for one object's counters.
    @inline(__always) func countBytes(_ base: Int) {
        context.counters.add(base, .bytesIn, client.bytesIn)
        context.counters.add(base, .bytesOut, client.bytesOut)
    }

    func updateDeadline() {
        let t = frontend.settings.timeouts
        let b = backend.settings.timeouts
        let ms: Int?
        if queueTicket != nil {
            // `timeout queue` (else `timeout connect`) from the first time it queued.
            loop.setDeadline(self, queuedAtMs + Int64(b.queue ?? b.connect ?? 5000))
            return
        }
        if connecting {
            ms = b.connect ?? 5000
        } else if client.writeShut || server?.writeShut == true {
            ms = (client.writeShut ? t.clientFin : b.serverFin) ?? b.tunnel ?? t.client
        } else {
            ms = b.tunnel ?? t.tunnel ?? min(t.client ?? Int.max, b.server ?? Int.max)
        }
        if let ms, ms != Int.max { loop.setDeadline(self, loop.now + Int64(ms)) } else { loop.clearDeadline(self) }
    }

    func close() {
        guard !closed else { return }
        closed = true
        logConnection()
        // Bytes from and to the client, for the frontend, the backend and the server.
        countBytes(frontend.statBase)
        countBytes(backend.statBase)
        if let s = triedServer { countBytes(s.statBase) }
        releaseSlot()
        if let t = queueTicket { queueTicket = nil; backend.cancel(t) }
        loop.clearDeadline(self)
        client.close()
        if let s = server { server = nil; s.close() }
        if let b = toServer { loop.buffers.give(b) }
        if let b = toClient { loop.buffers.give(b) }
        if let up = upPipe, let down = downPipe {
            up.close()
            down.close()
            context.model.pipesInUse.subtract(2, ordering: .relaxed)
        }
        upPipe = nil
        downPipe = nil
        toServer = nil
        toClient = nil
        context.sessionClosed(self)
    }
}
