import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// A transaction's way to a server: the balancing key, the slot and the queue, connecting,
/// reusing a pooled connection, and retries after a failure.
extension HTTPTransaction {
    /// Gives back the server slot this transaction held, waking a queued request.
    func releaseSlot() {
        guard let s = slotServer, let b = slotBackend else { return }
        slotServer = nil
        slotBackend = nil
        b.release(s)
    }

    /// Leaves the backend's queue, if this transaction waits in it.
    func cancelQueueTicket() {
        guard let t = queueTicket else { return }
        queueTicket = nil
        backend?.cancel(t)
    }

    /// Called on this loop when a slot was freed for this request: try again, first in line.
    func leaveQueue() {
        // A ticket cancelled after the slot took it was passed on by `Backend.cancel`.
        guard !closed, phase == .queued, let ticket = queueTicket else { return }
        queueTicket = nil
        connectToServer(woken: ticket)
        if !closed { progress() }
    }

    // MARK: server side

    /// The balancing key of this transaction, computed once while the request head is in the
    /// buffer (a retry comes after the head is gone).
    func balanceKey(_ backend: Backend) -> UInt64 {
        switch backend.settings.balance {
        case .source:
            return Backend.sourceKey(clientIP, family: clientFamily)
        case .uri(let length, let depth, let whole, let pathOnly):
            let p = requestBytes
            let start = pathOnly ? pathRange.start : request.target.start
            var r = ByteRange(Int(start), Int(whole ? request.target.end : pathRange.end))
            if let depth {
                var slashes = 0
                var i = Int(pathRange.start)
                while i < Int(r.end) { if p[i] == 0x2f { slashes += 1; if slashes > depth { break } }; i += 1 }
                r.end = Int32(i)
            }
            if let length, r.count > length { r.end = r.start + Int32(length) }
            return fnv1a(UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)]))
        default:
            return 0
        }
    }

    func connectToServer(woken: QueueTicket? = nil) {
        guard let backend else { return }
        var key: UInt64 = 0
        if backend.hashesRequests {
            if let (t, k) = hashKey, t == transactions { key = k } else {
                key = balanceKey(backend)
                hashKey = (transactions, key)
            }
        }
        let excluded = backend.settings.options.redispatches(attempt: backend.settings.retries - retriesLeft, of: backend.settings.retries) ? triedServer : nil
        releaseSlot()
        var request = AdmissionRequest(hashKey: key, excluding: excluded, wokenTicket: woken)
        // A valid persistence cookie wins over the balancer while its server takes its clients
        // (up, not in maintenance: a draining or weight-0 server still does, as in HAProxy).
        request.persisted = persistServer
        // `option prefer-last-server`: the server this session's connection goes to, while
        // it takes traffic.
        // Not with a hash-based balance, whose choice is the request's own (as in HAProxy).
        if request.persisted == nil, backend.settings.options.preferLastServer, !backend.hashesRequests, let last = server?.server,
           last.backendName == backend.name, last.isUsable, server?.eof == false { request.persisted = last }
        if excluded != nil { request.fallback = triedServer }
        let chosen: Server
        switch backend.admit(self, loop: loop, counters: context.counters, request, scratch: &context.scratchServers) {
        case .server(let s):
            chosen = s
        case .queued(let ticket):
            if phase != .queued { queuedAtMs = loop.now }
            queueTicket = ticket
            phase = .queued
            return
        case .refused(let status, let reason, let state):
            respondWithError(status, reason: reason, state: state)
            return
        }
        slotServer = chosen
        slotBackend = backend
        triedServer = chosen
        connectStartMs = loop.now
        // Reuse this session's own connection, or (not for a first request) a pooled one. A
        // TLS server's connection serves the name (`sni EXPR`) it was opened with.
        if let s = server, s.server === chosen, !s.eof, !s.closed, chosen.tls == nil || sendsSameName(s, chosen.tls!), ConnectionPool.mayReuse(s, chosen) {
            sendRequest(on: s)
            return
        }
        let serverName = chosen.tls == nil ? nil : requestServerName(chosen.tls!)
        if let s = server { server = nil; context.pool.release(s) }
        if transactions > 1 || backend.settings.httpReuse == .always || backend.settings.httpReuse == .aggressive,
           backend.settings.httpReuse != .never, let pooled = context.pool.take(chosen, serverName: serverName) {
            pooled.owner = self
            server = pooled
            sendRequest(on: pooled)
            return
        }
        do {
            let c = try Connection.open(to: chosen, context: context, serverName: serverName) { [unowned self] in local.port }
            c.owner = self
            if let v = chosen.definition.options.sendProxy { c.preface = proxyHeader(v, ssl: chosen.definition.options.proxyV2SSL) }
            server = c
            phase = .connecting
            prepareRequest()
            if c.connected && !closed {
                phase = .exchange; connectedMs = loop.now; noteServerSource()
                if chosen.observes { chosen.observed(.connected) }
            }
        } catch let e as SystemError {
            connectFailed(e.code)
        } catch {
            connectFailed(EIO)
        }
    }

    /// The SNI `sni EXPR` gives for this request, nil without one (out of line: the plain
    /// path stays small).
    @inline(never)
    func requestServerName(_ tls: ServerTLS) -> String? {
        guard tls.sendsServerName else { return nil }
        return tls.serverName(in: HTTPSamples(session: self, phase: .request))
    }

    /// Whether connection `s` to a TLS server sends the name this request would.
    @inline(never)
    func sendsSameName(_ s: Connection, _ tls: ServerTLS) -> Bool {
        guard tls.sendsServerName else { return true }
        return s.serverName == requestServerName(tls)
    }

    /// The PROXY header a new server connection opens with (`send-proxy[-v2]`): the client's
    /// address and the one it reached, as a PROXY header from the front may have set them.
    func proxyHeader(_ version: ProxyProtocolVersion, ssl: ProxyV2SSL) -> [UInt8] {
        let tls = client.transport as? TLSTransport
        guard clientFamily != AF_UNIX else { return ProxyProtocol.encode(version, source: nil, destination: nil, ssl: ssl, client: tls) }
        return ProxyProtocol.encode(version, source: ProxyProtocol.address(clientIP, clientPort),
                                    destination: ProxyProtocol.address(local.ip, local.port), ssl: ssl, client: tls)
    }

    func sendRequest(on s: Connection) {
        phase = .exchange
        connectedMs = loop.now
        noteServerSource()
        prepareRequest()
    }

    /// Composes the request once; on a retry, rewinds it, or gives up if it was streamed.
    func prepareRequest() {
        guard requestComposed else { composeRequest(); return }
        rewindRequest()
    }

    /// A retry: the request composed for the last attempt goes out again, from its start.
    @inline(never)
    func rewindRequest() {
        guard requestReplayable, let out = toServer else {
            respondWithError(502, reason: "cannot retry a streamed request", state: "SH")
            return
        }
        out.head = 0
        server?.requests += 1
        // (A value left by an earlier request to another backend is never read: only a backend
        // with the header composes one, and it sets it afresh.)
        if serverNameValue != 0, backend?.sendNameHeader != nil, let chosen = slotServer ?? triedServer, !rewriteServerName(out, chosen.name) {
            respondWithError(500, reason: "the request with the name of server '\(chosen.name)' does not fit in tune.bufsize", state: "PR")
        }
    }

    /// `http-send-name-header` on a retry: the value written for the last server becomes
    /// `name`, the bytes after it moved by the difference. False if that does not fit.
    @inline(never)
    func rewriteServerName(_ out: Buffer, _ name: String) -> Bool {
        let at = serverNameValue >> 32, old = serverNameValue & 0xffff_ffff
        var name = name
        return name.withUTF8 { new in
            guard let bytes = new.baseAddress else { return false }
            if new.count == old && memcmp(out.base + at, bytes, old) == 0 { return true }
            let delta = new.count - old
            guard out.tail + delta <= out.capacity else { return false }
            (out.base + at + new.count).copyMemory(from: out.base + at + old, byteCount: out.tail - at - old)
            (out.base + at).copyMemory(from: bytes, byteCount: new.count)
            out.tail += delta
            serverNameValue = at << 32 | new.count
            return true
        }
    }

    func checkConnect() -> Bool {
        guard let s = server else { return false }
        guard s.writable || s.readable || s.errored else { return false }
        if s.errored {
            connectFailed(s.pendingError)
            return true
        }
        s.established()
        connectedMs = loop.now
        noteServerSource()
        phase = .exchange
        if let observing = s.server, observing.observes { observing.observed(.connected) }
        return true
    }

    func connectFailed(_ code: Int32) {
        if let s = server { server = nil; s.close() }
        triedServer?.observed(.connectFailed)
        if retriesLeft > 0 {
            retriesLeft -= 1
            connectToServer()
            return
        }
        respondWithError(503, reason: "cannot connect to server", state: "SC")
    }

    /// The server failed while sending the request or before a response head arrived.
    func serverFailed() {
        guard let s = server else { return }
        // A TLS server that refused the handshake (or whose certificate did not verify) is a
        // connection failure: retried, then 503 with `SC`, as HAProxy counts it.
        if let t = s.transport, t.handshakeFailed, !responseStarted {
            connectFailed(EPROTO)
            return
        }
        let wasReused = s.requests > 1
        server = nil
        s.close()
        if !responseStarted { s.server?.observed(.brokenPipe) }
        if !responseStarted && wasReused && retriesLeft > 0 {
            // A pooled connection closed by the server as we used it: retry once, fresh.
            retriesLeft -= 1
            connectToServer()
            return
        }
        if responseStarted {
            terminationState = "SD"
            close()
        } else {
            respondWithError(502, reason: "server closed the connection", state: "SH")
        }
    }


    /// `%bi`/`%bp` in the access log: where the server connection left from.
    @inline(__always) func noteServerSource() {
        if frontend.accessLogReadsSource, let s = server {
            let a = s.localAddress
            if extras == nil { extras = TransactionExtras() }
            extras!.serverSource = (HTTPTransaction.ip(of: a), Int(a.port))
        }
    }
}
