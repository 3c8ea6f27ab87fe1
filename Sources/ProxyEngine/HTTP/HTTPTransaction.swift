import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// One client connection in HTTP mode: its keep-alive life and, one at a time, its
/// transactions (request head → rules → server → response). Pipelined requests wait in
/// the input buffer and are answered in order.
final class HTTPTransaction: LoopObject, QueueWaiter, ConnectionOwner {
    enum Phase {
        /// Waiting for (the rest of) a request head.
        case head
        /// Waiting for a server connection to complete.
        case connecting
        /// Request sent or being sent; waiting for or relaying the response.
        case exchange
        /// Every server is at its maxconn: waiting in the backend's queue.
        case queued
        /// After a 101: raw bytes both ways.
        case tunnel
        /// Response sent, output shut: reading until the client closes.
        case draining
        /// `http-request tarpit`: holding the request until `timeout tarpit`, then answering.
        case tarpit
        /// A response is still going out: the next request (pipelined) waits for it, so a
        /// response never shares the output buffer with another.
        case flushing
    }

    /// The client's connection; events from it and from the server connection come here.
    let client: Connection
    unowned(unsafe) let context: LoopContext
    /// The acceptor that took this connection: its slot is released when it closes.
    let acceptor: Acceptor
    let frontend: RuntimeFrontend
    /// The client's address and port, kept small: the session stays within malloc's fast
    /// per-thread cache (1,032 bytes), which a full `SocketAddress` or two would push it past.
    let clientIP: IPAddress
    let clientPort: UInt16
    /// AF_INET, AF_INET6 (IPv4-mapped addresses included) or AF_UNIX (`clientIP` reads 0.0.0.0).
    let clientFamily: Int32
    /// The address and port the client reached, asked of the kernel only when a rule or log needs it.
    lazy var local: (ip: IPAddress, port: UInt16) = {
        let a = client.localAddress
        return (Self.ip(of: a), a.port)
    }()
    var localIP: IPAddress { local.ip }

    var phase = Phase.head
    var closed = false

    /// Bytes from the client: request heads (and pipelined requests).
    var input: Buffer?
    /// Bytes for the client: response heads and bodies.
    var output: Buffer?
    /// Bytes for the server: the rewritten request head and body.
    var toServer: Buffer?
    /// Bytes from the server until its response head is parsed.
    var fromServer: Buffer?
    var server: Connection?

    // The transaction.
    var parser: HTTPParser
    var request = MessageHead()
    var responseParser: HTTPParser
    var response = MessageHead()
    var backend: RuntimeBackend?
    var requestBody = BodyState.none
    var responseBody = BodyState.none
    var responseStarted = false
    var requestWasHEAD = false
    var requestWasPOST = false
    var closeAfterResponse = false
    var transactions = 0
    var retriesLeft = 0
    var triedServer: RuntimeServer?
    var requestHeadLength = 0
    /// The request is already in `toServer` (a retry must not compose it again).
    var requestComposed = false
    /// `toServer` still holds the whole request from offset 0, so a retry can resend it.
    var requestReplayable = false
    /// We asked the server to close after this response: never pool the connection.
    var toldServerToClose = false
    var upgradeRequested = false
    /// Set when rules rewrote the request: the new target and header list.
    var rewrittenTarget: [UInt8]?
    var rewrittenHeaders: [(name: [UInt8], value: [UInt8])]?
    var responseEdits: [(name: [UInt8], value: [UInt8])]?
    var statusOverride: (Int, String?)?
    var variables = SessionVariables()
    /// The answer a tarpit gives once its delay is over.
    var tarpitResponse: (bytes: [UInt8], status: Int)?
    var pathRange = ByteRange.empty
    /// The balancing key (`balance source|uri`) and the transaction it was computed for.
    var hashKey: (transaction: Int, key: UInt64)?
    // Timing and counters for the log line.
    var acceptedAt: (seconds: Int, microseconds: Int)
    var requestStartMs: Int64 = 0
    var headReceivedMs: Int64 = 0
    var connectStartMs: Int64 = 0
    var connectedMs: Int64 = 0
    var responseHeadMs: Int64 = 0
    var bytesToClient = 0
    var logStatus = 0
    var terminationState = "--"
    var requestLineForLog = ""

    enum BodyState {
        case none
        case length(Int64)
        case chunked(ChunkedBodyTracker)
        case untilClose
        case done
    }

    init(connection: Connection, peer: SocketAddress, acceptor: Acceptor, context: LoopContext) {
        client = connection
        self.context = context
        self.acceptor = acceptor
        frontend = acceptor.frontend
        clientIP = Self.ip(of: peer)
        clientPort = peer.port
        clientFamily = peer.family
        let maxHead = context.model.configuration.global.bufferSize - context.model.configuration.global.maxRewrite
        parser = HTTPParser(maxHeadLength: maxHead)
        responseParser = HTTPParser(maxHeadLength: maxHead)
        // Room for a typical head's headers at once, rather than growing through 1, 2, 4, 8.
        request.headers.reserveCapacity(16)
        response.headers.reserveCapacity(16)
        acceptedAt = Clock.wallClock()
        super.init()
        connection.owner = self
    }

    static func ip(of a: SocketAddress) -> IPAddress {
        if let v4 = a.ipv4 { return IPAddress(v4: v4) }
        let b = a.addressBytes
        return b.count == 16 ? IPAddress(bytes16: b) : IPAddress(v4: 0)
    }

    var loop: EventLoop { context.loop }
    var buffers: BufferPool { context.loop.buffers }
    var settings: ProxySettings { frontend.settings }

    // MARK: views for rules

    var requestBytes: UnsafeRawBufferPointer {
        guard let b = input else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: b.base + b.head, count: max(requestHeadLength, b.count))
    }

    /// The response head being processed, in `fromServer` (valid until it is consumed).
    var responseBytes: UnsafeRawBufferPointer {
        guard let b = fromServer else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return b.readable
    }

    var bufferedRequestBytes: Int { input?.count ?? 0 }

    // MARK: events

    func connectionReady(_ connection: Connection, events: UInt32) {
        if closed { return }
        progress()
    }

    override func resume() {
        if !closed { progress() }
    }

    override func timerFired() {
        if closed { return }
        switch phase {
        case .head:
            if let b = input, !b.isEmpty {
                respondWithError(408, reason: "timeout while waiting for the request", state: "cR")
            } else if transactions > 0 && context.model.stopping.load(ordering: .relaxed) {
                // A soft stop retires idle keep-alive connections without a reset.
                lingerAlways = true
                shutdownAndDrain()
            } else {
                close()
            }
        case .connecting:
            connectFailed(ETIMEDOUT)
        case .exchange:
            // Before the response head: the client gets a 504; in the middle of the body, a close.
            if responseStarted { terminationState = "sD"; close() } else { respondWithError(504, reason: "server timeout", state: "sH") }
        case .queued:
            queueTicket?.cancelledInQueue = true
            queueTicket = nil
            respondWithError(503, reason: "timeout in the queue", state: "sQ")
        case .flushing:
            close()
        case .tarpit:
            terminationState = "PT"
            let answer = tarpitResponse ?? (HTTPStatusText.errorPage(500), 500)
            tarpitResponse = nil
            sendLocal(answer.bytes, status: answer.status, close: true)
        case .tunnel, .draining:
            close()
        }
    }

    /// Gives back the server slot this transaction held, waking a queued request.
    func releaseSlot() {
        guard let s = slotServer else { return }
        slotServer = nil
        s.active.subtract(1, ordering: .relaxed)
        if let b = context.model.backends[s.backendName] { b.slotFreed() }
    }

    /// Called on this loop when a slot may be free: try to get a server again.
    func leaveQueue() {
        guard !closed, phase == .queued else { return }
        queueTicket = nil
        connectToServer()
        if !closed { progress() }
    }

    /// Arms the timeout that fits the current phase.
    func updateDeadline() {
        let t = frontend.timeouts
        let backendTimeouts = backend?.timeouts ?? t
        var ms: Int?
        switch phase {
        case .head:
            let idle = (input?.isEmpty ?? true) && transactions > 0
            ms = idle ? (t.httpKeepAlive ?? t.httpRequest ?? t.client) : (t.httpRequest ?? t.client)
        case .connecting:
            ms = backendTimeouts.connect ?? 5000
        case .queued:
            let limit = Int64(backendTimeouts.queue ?? backendTimeouts.connect ?? 5000)
            loop.setDeadline(self, queuedAtMs + limit)
            return
        case .exchange:
            ms = backendTimeouts.server ?? t.client
        case .tunnel:
            ms = backendTimeouts.tunnel ?? t.tunnel ?? backendTimeouts.server ?? t.client
        case .draining:
            ms = t.clientFin ?? 1000
        case .flushing:
            ms = t.client
        case .tarpit:
            return
        }
        if let ms { loop.setDeadline(self, loop.now + Int64(ms)) } else { loop.clearDeadline(self) }
    }

    // MARK: the pump

    /// Moves bytes and advances the transaction until nothing more can happen now.
    func progress() {
        var rounds = 0
        while !closed {
            rounds += 1
            if rounds > 64 { loop.runAgain(self); break }
            var moved = false
            if flushToClient() { moved = true }
            if closed { return }
            if flushToServer() { moved = true }
            if closed { return }
            switch phase {
            case .head:
                if parseOrReadHead() { moved = true }
            case .connecting:
                if checkConnect() { moved = true }
            case .queued:
                break
            case .exchange:
                if relayRequestBody() { moved = true }
                if closed { return }
                if relayResponse() { moved = true }
                if closed { return }
                if phase == .exchange, readPipelined() { moved = true }
            case .tunnel:
                if relayTunnel() { moved = true }
            case .draining:
                if drainClient() { moved = true }
            case .tarpit:
                break
            case .flushing:
                if output?.isEmpty ?? true { finishFlushing(); moved = true }
            }
            if !moved { break }
        }
        if !closed {
            if phase == .head { releaseIdleBuffers() }
            updateDeadline()
        }
    }

    /// Between requests a connection holds no buffer (DECISIONS: idle holds none).
    @inline(__always)
    func releaseIdleBuffers() {
        if let b = output, b.isEmpty { buffers.give(b); output = nil }
        if let b = input, b.isEmpty { buffers.give(b); input = nil }
        if let b = toServer, b.isEmpty { buffers.give(b); toServer = nil }
        if let b = fromServer, b.isEmpty { buffers.give(b); fromServer = nil }
    }

    /// Writes pending output to the client. Returns true if bytes left.
    func flushToClient() -> Bool {
        guard let out = output, !out.isEmpty, client.writable else { return false }
        guard let n = client.write(from: out) else {
            terminationState = "CD"
            close()
            return false
        }
        bytesToClient += n
        if out.isEmpty { out.clear() }
        return n > 0
    }

    func flushToServer() -> Bool {
        guard let s = server, s.connected, s.writable, let out = toServer, !out.isEmpty else { return false }
        guard let n = s.write(from: out) else {
            serverFailed()
            return false
        }
        if out.isEmpty, !requestReplayable { out.clear() }
        return n > 0
    }

    // MARK: request head

    func parseOrReadHead() -> Bool {
        if input == nil {
            guard client.readable, !client.eof else { return false }
            input = buffers.take()
        }
        let inBuf = input!
        var moved = false
        if inBuf.isEmpty { inBuf.clear() }
        while true {
            if !inBuf.isEmpty {
                if requestStartMs == 0 { requestStartMs = loop.now }
                let result = parser.parseRequest(inBuf.readable, into: &request)
                switch result {
                case .complete:
                    startTransaction()
                    return true
                case .invalid(let e):
                    respondWithError(e.status, reason: e.reason, state: "PR")
                    return true
                case .incomplete:
                    if inBuf.freeSpace == 0 {
                        if inBuf.head > 0 { inBuf.compact(); parser.reset(); continue }
                        respondWithError(431, reason: "request head too large", state: "PR")
                        return true
                    }
                }
            }
            guard let n = client.read(into: inBuf) else { break }
            moved = true
            if n == 0 {
                // Client closed: silently when idle, as HAProxy does.
                if !inBuf.isEmpty { terminationState = "CR" }
                close()
                return true
            }
        }
        if inBuf.isEmpty && phase == .head {
            // Idle keep-alive: hold no buffer.
            buffers.give(inBuf)
            input = nil
        }
        return moved
    }

    // MARK: transaction start

    func startTransaction() {
        headReceivedMs = loop.now
        requestHeadLength = request.length
        transactions += 1
        rewrittenTarget = nil
        rewrittenHeaders = nil
        responseEdits = nil
        statusOverride = nil
        responseStarted = false
        backend = nil
        triedServer = nil
        requestComposed = false
        requestReplayable = false
        toldServerToClose = false
        let bytes = requestBytes
        requestWasHEAD = request.method.count == 4 && bytes[Int(request.method.start)] == UInt8(ascii: "H")
        requestWasPOST = request.method.count == 4 && bytes[Int(request.method.start)] == UInt8(ascii: "P")
            && bytes[Int(request.method.start) + 1] == UInt8(ascii: "O")
        pathRange = computePath(bytes)
        upgradeRequested = request.connectionUpgrade && request.hasUpgradeHeader
        closeAfterResponse = !request.wantsKeepAlive || settings.options.httpConnectionMode == .close
            || context.model.stopping.load(ordering: .relaxed)
        if frontend.settings.options.httpLog || frontend.settings.options.logASAP {
            requestLineForLog = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<max(0, request.startLineEnd - 2)]), as: UTF8.self)
        }
        // monitor-uri answers before any rule.
        if let m = settings.monitorURI, matchesMonitorURI(m, bytes) {
            sendLocal(Array("HTTP/1.1 200 OK\r\ncontent-length: 58\r\ncache-control: no-cache\r\ncontent-type: text/html\r\n\r\n<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n".utf8), status: 200)
            return
        }
        // Frontend rules, then routing, then the backend's own rules.
        if applyRequestRules(frontend.rules.request, legacy: frontend.rules.legacyRequest) { return }
        var chosen: RuntimeBackend?
        let samples = HTTPSamples(session: self, phase: .request)
        for (b, guardState) in frontend.routes {
            switch guardState {
            case .always: chosen = b
            case .never: continue
            case .when(let c): if c.evaluate(samples) { chosen = b }
            }
            if chosen != nil { break }
        }
        backend = chosen ?? frontend.defaultBackend
        guard let backend else {
            respondWithError(503, reason: "no backend", state: "SC")
            return
        }
        if backend !== frontend.ownBackend {
            if applyRequestRules(backend.rules.request, legacy: backend.rules.legacyRequest) { return }
        }
        if backend.settings.options.httpConnectionMode == .close { closeAfterResponse = true }
        persistServer = nil
        cookieMatched = false
        if let cookie = backend.settings.cookie { applyPersistence(cookie, backend) }
        retriesLeft = backend.settings.retries
        connectToServer()
    }

    func equal(_ p: UnsafeRawBufferPointer, _ r: ByteRange, _ s: String) -> Bool {
        guard r.count == s.utf8.count else { return false }
        var i = Int(r.start)
        for c in s.utf8 { if p[i] != c { return false }; i += 1 }
        return true
    }

    /// `monitor-uri`, as HAProxy compares it: a value starting with `/` against the path with
    /// its query (of an absolute-form target too), any other value against the whole target.
    func matchesMonitorURI(_ m: String, _ p: UnsafeRawBufferPointer) -> Bool {
        let t = request.target
        if m.hasPrefix("/") { return equal(p, ByteRange(Int(pathRange.start), Int(t.end)), m) }
        return equal(p, t, m)
    }

    /// The path part of the target: origin-form up to `?`, or the path of an absolute URI.
    func computePath(_ p: UnsafeRawBufferPointer) -> ByteRange {
        let t = request.target
        var s = Int(t.start)
        let e = Int(t.end)
        if p[s] != UInt8(ascii: "/") {
            // absolute-form: skip "scheme://authority"
            var i = s
            while i + 2 < e, !(p[i] == 0x3a && p[i + 1] == 0x2f && p[i + 2] == 0x2f) { i += 1 }
            if i + 2 < e {
                i += 3
                while i < e, p[i] != 0x2f { i += 1 }
                s = i
            }
        }
        var q = s
        while q < e, p[q] != UInt8(ascii: "?"), p[q] != UInt8(ascii: "#") { q += 1 }
        return ByteRange(s, q)
    }

    // MARK: server side

    /// The balancing key of this transaction, computed once while the request head is in the
    /// buffer (a retry comes after the head is gone).
    func balanceKey(_ backend: RuntimeBackend) -> UInt64 {
        switch backend.settings.balance {
        case .source:
            // The address's bytes as the kernel gave them: 4, 16, or none for a UNIX socket.
            switch clientFamily {
            case AF_INET: return withUnsafeBytes(of: clientIP.v4Value.bigEndian) { fnv1a($0) }
            case AF_INET6: return clientIP.bytes16.withUnsafeBytes { fnv1a($0) }
            default: return fnv1a(UnsafeRawBufferPointer(start: nil, count: 0))
            }
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

    func connectToServer() {
        guard let backend else { return }
        var key: UInt64 = 0
        if backend.hashesRequests {
            if let (t, k) = hashKey, t == transactions { key = k } else {
                key = balanceKey(backend)
                hashKey = (transactions, key)
            }
        }
        let excluded = retriesLeft < backend.settings.retries && backend.settings.options.redispatch && retriesLeft == 0 ? triedServer : nil
        releaseSlot()
        // A valid persistence cookie wins over the balancer while its server is usable.
        let persisted = persistServer.flatMap { $0.isUsable && $0.hasRoom && $0 !== excluded ? $0 : nil }
        // A slot is taken with a compare-and-swap: a server another loop just filled is passed
        // over (a few tries), then the request queues.
        var picked: RuntimeServer?
        if let p = persisted, p.reserveSlot() { picked = p }
        for _ in 0..<4 where picked == nil {
            guard let candidate = backend.balancer.pick(hashKey: key, allBackups: backend.settings.options.allBackups,
                                                        excluding: excluded, scratch: &context.scratchServers)
                ?? (excluded != nil && triedServer?.hasRoom == true ? triedServer : nil) else { break }
            if candidate.reserveSlot() { picked = candidate }
        }
        guard let chosen = picked else {
            enqueueOrRefuse(backend)
            return
        }
        slotServer = chosen
        triedServer = chosen
        connectStartMs = loop.now
        // Reuse this session's own connection, or (not for a first request) a pooled one.
        if let s = server, s.server === chosen, !s.eof, !s.closed {
            sendRequest(on: s)
            return
        }
        if let s = server { server = nil; context.pool.release(s) }
        if transactions > 1 || backend.settings.httpReuse == .always || backend.settings.httpReuse == .aggressive,
           backend.settings.httpReuse != .never, let pooled = context.pool.take(chosen) {
            pooled.owner = self
            server = pooled
            sendRequest(on: pooled)
            return
        }
        do {
            let c = try Connection.open(to: chosen, context: context) { [unowned self] in local.port }
            c.owner = self
            server = c
            phase = .connecting
            prepareRequest()
            if c.connected && !closed { phase = .exchange; connectedMs = loop.now }
        } catch let e as SystemError {
            connectFailed(e.code)
        } catch {
            connectFailed(EIO)
        }
    }

    /// Every usable server is full: wait in the backend's queue, or get a 503.
    func enqueueOrRefuse(_ backend: RuntimeBackend) {
        let usable = backend.servers.contains { $0.isUsable }
        guard usable else {
            respondWithError(503, reason: "no server available", state: "SC")
            return
        }
        let ticket = QueueTicket(self, loop: loop)
        guard backend.queue.enqueue(ticket, limit: backend.queueLimit) else {
            respondWithError(503, reason: "queue full", state: "sQ")
            return
        }
        if phase != .queued { queuedAtMs = loop.now }
        queueTicket = ticket
        phase = .queued
        // A slot may have been freed between the pick and the enqueue: look again.
        if backend.servers.contains(where: { $0.isUsable && $0.hasRoom }) { backend.slotFreed() }
    }

    func sendRequest(on s: Connection) {
        phase = .exchange
        connectedMs = loop.now
        prepareRequest()
    }

    /// Composes the request once; on a retry, rewinds it, or gives up if it was streamed.
    func prepareRequest() {
        guard requestComposed else { composeRequest(); return }
        guard requestReplayable, let out = toServer else {
            respondWithError(502, reason: "cannot retry a streamed request", state: "SH")
            return
        }
        out.head = 0
        server?.requests += 1
    }

    func checkConnect() -> Bool {
        guard let s = server else { return false }
        guard s.writable || s.readable || s.errored else { return false }
        if s.errored {
            connectFailed(s.pendingError)
            return true
        }
        s.connected = true
        s.writable = true
        connectedMs = loop.now
        phase = .exchange
        return true
    }

    func connectFailed(_ code: Int32) {
        if let s = server { server = nil; s.close() }
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
        let wasReused = s.requests > 1
        server = nil
        s.close()
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

    /// Writes the rewritten request head, and the body bytes already buffered, for the server.
    /// A head that rewrites made too large for the buffer gets a 500, and nothing is sent.
    func composeRequest() {
        guard let inBuf = input, let s = server else { return }
        s.requests += 1
        requestComposed = true
        let out = toServer ?? buffers.take()
        toServer = out
        out.clear()
        let p = requestBytes
        var w = HeadWriter(out)
        // Request line.
        w.append(UnsafeRawBufferPointer(rebasing: p[Int(request.method.start)..<Int(request.method.end)]))
        w.append(" ")
        if let t = rewrittenTarget { w.append(t) } else {
            w.append(UnsafeRawBufferPointer(rebasing: p[Int(request.target.start)..<Int(request.target.end)]))
        }
        w.append(request.minorVersion == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
        // Headers, without hop-by-hop ones.
        if let list = rewrittenHeaders {
            for h in list where !Self.isHopByHop(h.name, keepUpgrade: upgradeRequested) {
                w.append(h.name); w.append(": "); w.append(h.value); w.append("\r\n")
            }
        } else {
            for h in request.headers where !isHopByHop(p, h.name, keepUpgrade: upgradeRequested) {
                w.append(UnsafeRawBufferPointer(rebasing: p[Int(h.line.start)..<Int(h.line.end)]))
            }
        }
        let b = backend
        if frontend.forwardFor != nil || b?.forwardFor != nil, let header = forwardedForHeader(b) {
            w.append(string: header); w.append(": "); w.append(string: clientIP.description); w.append("\r\n")
        }
        if upgradeRequested {
            w.append("connection: upgrade\r\n")
        } else if backendClosesServerSide {
            // Only the configuration closes the server side. A client that closes (or a soft
            // stop) leaves the server connection reusable: the pool takes it, which spares
            // the server a close and a TIME_WAIT per request, as HAProxy does.
            w.append("connection: close\r\n")
            toldServerToClose = true
        } else if request.minorVersion == 0 {
            w.append("connection: keep-alive\r\n")
        }
        w.append("\r\n")
        guard w.fits else {
            out.clear()
            respondWithError(500, reason: "the rewritten request head does not fit in tune.bufsize; raise tune.maxrewrite", state: "PR")
            return
        }
        // What response rules may still read of the request, copied before its head goes.
        if b?.rules.hasResponseRules == true || frontend.rules.hasResponseRules {
            variables.capturedMethod = Array(UnsafeRawBufferPointer(rebasing: p[Int(request.method.start)..<Int(request.method.end)]))
        }
        // Consume the head from the input and move what body is already there.
        inBuf.head += requestHeadLength
        requestHeadLength = 0
        parser.reset()
        switch request.requestFraming {
        case .none: requestBody = .done
        case .contentLength(let n): requestBody = .length(n)
        case .chunked: requestBody = .chunked(ChunkedBodyTracker())
        case .untilClose: requestBody = .done
        }
        moveRequestBody()
        if case .done = requestBody { requestReplayable = true }
    }

    /// The `option forwardfor` header to add, if any: the frontend's and the backend's options
    /// together, with the backend's header name when it has one; a client in either's
    /// `except` network gets none, nor does a request that has the header with `if-none`.
    func forwardedForHeader(_ backend: RuntimeBackend?) -> String? {
        let f = frontend.forwardFor, b = backend?.forwardFor
        guard let chosen = b ?? f else { return nil }
        if f?.except?.contains(clientIP) == true || b?.except?.contains(clientIP) == true { return nil }
        if (f?.ifNone == true || b?.ifNone == true) && hasHeader(chosen.header) { return nil }
        return chosen.header
    }

    var backendClosesServerSide: Bool {
        let mode = backend?.settings.options.httpConnectionMode ?? .keepAlive
        return mode != .keepAlive || settings.options.httpConnectionMode != .keepAlive
    }

    func hasHeader(_ name: String) -> Bool {
        let view = MessageView(bytes: requestBytes, head: request)
        let lower = name.lowercased()
        return request.headers.contains { view.equalsName($0.name, lower) }
    }

    @inline(__always)
    func isHopByHop(_ p: UnsafeRawBufferPointer, _ n: ByteRange, keepUpgrade: Bool) -> Bool {
        switch n.count {
        case 2: return HTTPParser.equalsLower(p, n, "te")
        case 7: return HTTPParser.equalsLower(p, n, "trailer") || (!keepUpgrade && HTTPParser.equalsLower(p, n, "upgrade"))
        case 10: return HTTPParser.equalsLower(p, n, "connection") || HTTPParser.equalsLower(p, n, "keep-alive")
        case 16: return HTTPParser.equalsLower(p, n, "proxy-connection")
        default: return false
        }
    }

    static func isHopByHop(_ name: [UInt8], keepUpgrade: Bool) -> Bool {
        let lower = String(decoding: name, as: UTF8.self).lowercased()
        return ["connection", "keep-alive", "proxy-connection", "te", "trailer"].contains(lower) || (!keepUpgrade && lower == "upgrade")
    }

    /// Moves request body bytes from the input buffer to the server buffer, by framing.
    @discardableResult
    func moveRequestBody() -> Bool {
        guard let inBuf = input, let out = toServer, !inBuf.isEmpty else { return false }
        if out.isEmpty { out.clear() }
        let room = out.freeSpace
        guard room > 0 else { return false }
        switch requestBody {
        case .length(let remaining):
            let n = Int(min(Int64(min(inBuf.count, room)), remaining))
            guard n > 0 else { return false }
            // n ≤ room: it fits, by construction.
            precondition(out.append(UnsafeRawBufferPointer(start: inBuf.base + inBuf.head, count: n)))
            inBuf.head += n
            requestBody = remaining - Int64(n) == 0 ? .done : .length(remaining - Int64(n))
            return true
        case .chunked(var tracker):
            let avail = min(inBuf.count, room)
            let chunk = UnsafeRawBufferPointer(start: inBuf.base + inBuf.head, count: avail)
            switch tracker.consume(chunk) {
            case .more:
                precondition(out.append(chunk))
                inBuf.head += avail
                requestBody = .chunked(tracker)
            case .ended(let n):
                precondition(out.append(UnsafeRawBufferPointer(rebasing: chunk[0..<n])))
                inBuf.head += n
                requestBody = .done
            case .invalid(let why):
                respondWithError(400, reason: why, state: "PR")
            }
            return true
        default:
            return false
        }
    }

    func relayRequestBody() -> Bool {
        switch requestBody {
        case .length, .chunked:
            var moved = false
            if let inBuf = input, !inBuf.isEmpty { if moveRequestBody() { moved = true } }
            guard let inBuf = input else { return moved }
            if inBuf.isEmpty { inBuf.clear() }
            if toServer?.freeSpace ?? 0 > 0, inBuf.freeSpace > 0 {
                if inBuf.head > 0 && inBuf.isEmpty { inBuf.clear() }
                if let n = client.read(into: inBuf) {
                    if n == 0 { terminationState = "CD"; abortTransaction(); return true }
                    moved = true
                    moveRequestBody()
                }
            }
            return moved
        default:
            return false
        }
    }

    /// Reads ahead while a response is pending (pipelining), and notices a client close.
    func readPipelined() -> Bool {
        guard client.readable, !client.eof else { return false }
        if case .done = requestBody {} else { return false }
        if input == nil { input = buffers.take() }
        guard let inBuf = input else { return false }
        if inBuf.freeSpace == 0 { inBuf.compact() }
        guard inBuf.freeSpace > 0 else { return false }
        guard let n = client.read(into: inBuf) else { return false }
        if n == 0 {
            // Half-closed client: finish this response, then close (no abortonclose).
            closeAfterResponse = true
            if settings.options.abortOnClose || backend?.settings.options.abortOnClose == true {
                terminationState = "CQ"
                abortTransaction()
            }
        }
        return true
    }

    // MARK: response

    func relayResponse() -> Bool {
        guard let s = server, s.connected else { return false }
        var moved = false
        if !responseStarted {
            if fromServer == nil {
                guard s.readable else { return false }
                fromServer = buffers.take()
            }
            let inBuf = fromServer!
            // Stop as soon as the transaction moved on (finished, failed, or server released).
            while !responseStarted && server === s && phase == .exchange {
                if !inBuf.isEmpty {
                    switch responseParser.parseResponse(inBuf.readable, into: &response) {
                    case .incomplete:
                        if inBuf.freeSpace == 0 {
                            if inBuf.head > 0 { inBuf.compact(); responseParser.reset(); continue }
                            respondWithError(502, reason: "response head too large", state: "PH")
                            return true
                        }
                    case .invalid(let e):
                        respondWithError(502, reason: e.reason, state: "PH")
                        return true
                    case .complete:
                        switch startResponse() {
                        case .started: moved = true; continue
                        case .waitForOutput: return moved
                        case .failed: return true
                        }
                    }
                }
                guard let n = s.read(into: inBuf) else { break }
                moved = true
                if n == 0 {
                    serverFailed()
                    return true
                }
            }
            return moved
        }
        // Body.
        guard let out = output else { return moved }
        switch responseBody {
        case .done, .none:
            return moved
        default:
            break
        }
        if out.isEmpty { out.clear() }
        guard out.freeSpace > 0 else { return moved }
        var limit = Int.max
        if case .length(let remaining) = responseBody { limit = Int(min(Int64(Int.max), remaining)) }
        let before = out.tail
        guard let n = s.read(into: out, max: limit) else { return moved }
        if n == 0 {
            if case .untilClose = responseBody {
                responseBody = .done
                closeAfterResponse = true
                finishResponse(serverReusable: false)
            } else {
                terminationState = "SD"
                serverFailed()
            }
            return true
        }
        trackResponseBody(from: before)
        return true
    }

    /// Follows the response framing over bytes just appended to `output` at `from`.
    func trackResponseBody(from start: Int) {
        guard let out = output else { return }
        let n = out.tail - start
        switch responseBody {
        case .length(let remaining):
            let left = remaining - Int64(n)
            if left <= 0 { responseBody = .done; finishResponse(serverReusable: left == 0) } else { responseBody = .length(left) }
        case .chunked(var tracker):
            switch tracker.consume(UnsafeRawBufferPointer(start: out.base + start, count: n)) {
            case .more: responseBody = .chunked(tracker)
            case .ended(let used):
                out.tail = start + used
                responseBody = .done
                finishResponse(serverReusable: used == n)
            case .invalid:
                terminationState = "SD"
                server.map { $0.eof = true }
                responseBody = .done
                closeAfterResponse = true
                finishResponse(serverReusable: false)
            }
        default:
            break
        }
    }

    /// Turns a parsed response head into the client's head, and starts the body.
    /// What `startResponse` did with a parsed head.
    enum ResponseStart {
        case started
        /// An interim response is still going out: the head is parsed again once it is.
        case waitForOutput
        case failed
    }

    func startResponse() -> ResponseStart {
        guard let inBuf = fromServer else { return .failed }
        // A head is written only into an empty output buffer (after an interim response, the
        // client must first have all of it), so it always has the whole buffer.
        if let out = output, !out.isEmpty {
            responseParser.reset()
            return .waitForOutput
        }
        let p = inBuf.readable
        let status = response.status
        responseHeadMs = loop.now
        if status >= 100 && status < 200 && status != 101 {
            // Interim response: forward it and wait for the final one.
            let out = output ?? buffers.take()
            output = out
            out.clear()
            guard out.append(UnsafeRawBufferPointer(rebasing: p[0..<response.length])) else {
                respondWithError(502, reason: "interim response too large", state: "PH")
                return .failed
            }
            inBuf.head += response.length
            responseParser.reset()
            if inBuf.isEmpty { inBuf.clear() }
            return .started
        }
        responseStarted = true
        logStatus = status
        let cookieSettings = backend?.settings.cookie
        // rewrite/prefix: the server's own Set-Cookie carries the server's identity.
        if let cookie = cookieSettings, cookie.mode == .rewrite || cookie.mode == .prefix,
           let value = triedServer?.definition.options.cookie {
            rewriteServerCookie(cookie, value)
        }
        // insert + indirect: a cookie of that name the server sets itself is removed (unless `preserve`).
        if let cookie = cookieSettings, cookie.mode == .insert, cookie.indirect, !cookie.preserve {
            let prefix = Array((cookie.name + "=").utf8)
            let view = MessageView(bytes: p, head: response)
            if response.headers.contains(where: { view.equalsName($0.name, "set-cookie") && view.slice($0.value).starts(with: prefix) }) {
                responseEdits = editableResponseHeaders().filter { !(HeaderEdit.isNamed($0.name, "set-cookie") && $0.value.starts(with: prefix)) }
            }
        }
        // Response rules (backend's, then frontend's).
        if let b = backend, b.rules.hasResponseRules { applyResponseRules(b.rules.response, legacy: b.rules.legacyResponse) }
        if backend !== frontend.ownBackend, frontend.rules.hasResponseRules {
            applyResponseRules(frontend.rules.response, legacy: frontend.rules.legacyResponse)
        }
        var framing = response.responseFraming(requestWasHEAD: requestWasHEAD)
        if status == 101 { framing = .none }
        let serverKeepAlive = response.wantsKeepAlive && !backendClosesServerSide
        if case .untilClose = framing { closeAfterResponse = true }
        if context.model.stopping.load(ordering: .relaxed) { closeAfterResponse = true }
        let out = output ?? buffers.take()
        output = out
        out.clear()
        var w = HeadWriter(out)
        // Status line.
        if let (code, reason) = statusOverride {
            w.append(response.minorVersion == 0 ? "HTTP/1.0 " : "HTTP/1.1 ")
            w.append(decimal: code); w.append(" ")
            w.append(string: reason ?? HTTPStatusText.reason(code)); w.append("\r\n")
            logStatus = code
        } else {
            w.append(UnsafeRawBufferPointer(rebasing: p[0..<response.startLineEnd]))
        }
        if let list = responseEdits {
            for h in list where !Self.isHopByHop(h.name, keepUpgrade: status == 101) {
                w.append(h.name); w.append(": "); w.append(h.value); w.append("\r\n")
            }
        } else {
            for h in response.headers where !isHopByHop(p, h.name, keepUpgrade: status == 101) {
                w.append(UnsafeRawBufferPointer(rebasing: p[Int(h.line.start)..<Int(h.line.end)]))
            }
        }
        if let cookie = backend?.settings.cookie, let server = triedServer, let value = server.definition.options.cookie,
           cookie.mode == .insert, shouldInsertCookie(cookie, server, p) {
            let dated = cookie.maxIdle != nil || cookie.maxLife != nil
            let now = Clock.wallClock().seconds
            let stored = dated ? "\(value)|\(now)|\(cookieFirstSeen ?? now)" : value
            w.append("set-cookie: ")
            w.append(string: "\(cookie.name)=\(stored); path=/")
            for d in cookie.domains { w.append(string: "; domain=\(d)") }
            if cookie.httpOnly { w.append("; HttpOnly") }
            if cookie.secure { w.append("; Secure") }
            w.append("\r\n")
            if cookie.noCache { w.append("cache-control: private\r\n") }
        }
        if status == 101 {
            w.append("connection: upgrade\r\n")
        } else if closeAfterResponse {
            w.append("connection: close\r\n")
        } else if request.minorVersion == 0 {
            w.append("connection: keep-alive\r\n")
        }
        w.append("\r\n")
        guard w.fits else {
            // Rewrites made the head larger than a buffer: a 500, and nothing of it is sent.
            out.clear()
            responseStarted = false
            respondWithError(500, reason: "the rewritten response head does not fit in tune.bufsize; raise tune.maxrewrite", state: "PH")
            return .failed
        }
        if frontend.settings.options.logASAP {
            // Log now, with the bytes known so far, prefixed with '+' as HAProxy does.
            loggedEarly = true
            logTransaction(early: true)
        }
        inBuf.head += response.length
        responseParser.reset()
        // Body bytes that came with the head.
        switch framing {
        case .none: responseBody = .done
        case .contentLength(let n): responseBody = .length(n)
        case .chunked: responseBody = .chunked(ChunkedBodyTracker())
        case .untilClose: responseBody = .untilClose
        }
        if status == 101 {
            phase = .tunnel
            // Anything already read from the server belongs to the tunnel: after the head now
            // if it fits, or kept in fromServer until the head is out (relayTunnel).
            if inBuf.isEmpty || out.append(inBuf.readable) {
                buffers.give(inBuf)
                fromServer = nil
            }
            return .started
        }
        if !inBuf.isEmpty, case .done = responseBody {} else if !inBuf.isEmpty {
            let before = out.tail
            var take = inBuf.count
            if case .length(let r) = responseBody { take = Int(min(Int64(take), r)) }
            take = min(take, out.freeSpace)
            precondition(out.append(UnsafeRawBufferPointer(start: inBuf.base + inBuf.head, count: take)))
            inBuf.head += take
            trackResponseBody(from: before)
            if !inBuf.isEmpty, case .done = responseBody { server?.eof = true }
            else if !inBuf.isEmpty, out.freeSpace == 0 {
                // More than fits: keep the rest in fromServer and move it as output drains.
                return .started
            }
        }
        if let f = fromServer, f.isEmpty {
            buffers.give(f)
            fromServer = nil
        }
        if case .done = responseBody, phase == .exchange, server != nil {
            finishResponse(serverReusable: serverKeepAlive && (fromServer?.isEmpty ?? true))
        } else {
            pendingServerReusable = serverKeepAlive
        }
        return .started
    }

    var pendingServerReusable = true
    /// The server whose request slot (maxconn) this transaction holds.
    var slotServer: RuntimeServer?
    var queueTicket: QueueTicket?
    /// The server the client's persistence cookie names (while it is usable).
    var persistServer: RuntimeServer?
    /// The client presented a cookie naming the server that served it.
    var cookieMatched = false
    /// `maxlife`: when the persistence cookie was first set (wall seconds), carried in it.
    var cookieFirstSeen: Int?
    var queuedAtMs: Int64 = 0
    /// Always drain before closing (idle connections retired by a soft stop).
    var lingerAlways = false
    /// The line was already logged at the response head (`option logasap`).
    var loggedEarly = false

    /// The response is fully read from the server: release or keep the server connection.
    func finishResponse(serverReusable: Bool) {
        releaseSlot()
        guard let s = server else { return }
        // Only a connection whose request went out whole: a body cut short by an early
        // response would make the server read the next request as the rest of it.
        let reusable = serverReusable && pendingServerReusable && !s.eof && !toldServerToClose && (fromServer?.isEmpty ?? true)
            && (toServer?.isEmpty ?? true)
            && { if case .done = requestBody { return true } else { return false } }()
        pendingServerReusable = true
        if reusable && !closeAfterResponse {
            // Keep it attached: the next request of this client likely goes to the same server.
        } else if reusable {
            server = nil
            context.pool.release(s)
        } else {
            server = nil
            s.close()
        }
        if let f = fromServer { buffers.give(f); fromServer = nil }
        endTransactionWhenFlushed()
    }

    /// Once the response is on its way, logs and either closes or waits for the next request.
    func endTransactionWhenFlushed() {
        if loggedEarly { loggedEarly = false; bytesToClient = 0; terminationState = "--" } else { logTransaction() }
        variables.transactionDone()
        if let t = toServer { buffers.give(t); toServer = nil }
        responseStarted = false
        requestBody = .none
        responseBody = .none
        requestStartMs = 0
        if closeAfterResponse {
            phase = .draining
            if flushToClient() {}
            if output?.isEmpty ?? true { shutdownAndDrain() }
            return
        }
        backend = nil
        if let out = output, !out.isEmpty {
            phase = .flushing
            return
        }
        finishFlushing()
    }

    /// The last response is out: back to reading requests, holding no buffer while idle.
    func finishFlushing() {
        phase = .head
        if let out = output { buffers.give(out); output = nil }
        if let inBuf = input, inBuf.isEmpty { buffers.give(inBuf); input = nil }
    }

    // MARK: tunnel (after 101)

    func relayTunnel() -> Bool {
        guard let s = server else { close(); return false }
        var moved = false
        if toServer == nil { toServer = buffers.take() }
        if output == nil { output = buffers.take() }
        // Anything left in the input buffer goes first.
        if let inBuf = input, !inBuf.isEmpty, let ts = toServer, ts.isEmpty {
            ts.clear()
            precondition(ts.append(inBuf.readable))
            inBuf.clear()
            moved = true
        }
        if let ts = toServer, ts.isEmpty {
            ts.clear()
            if let n = client.read(into: ts) {
                moved = true
                if n == 0 { s.shutdownWrite() }
            }
        }
        // Bytes that came with the 101 and did not fit after its head go first.
        if let f = fromServer, let out = output, out.isEmpty {
            out.clear()
            precondition(out.append(f.readable))
            buffers.give(f)
            fromServer = nil
            moved = true
        }
        if let out = output, out.isEmpty, fromServer == nil {
            out.clear()
            if let n = s.read(into: out) {
                moved = true
                if n == 0 { client.shutdownWrite() }
            }
        }
        if client.eof && s.eof && (output?.isEmpty ?? true) && (toServer?.isEmpty ?? true) {
            close()
            return false
        }
        return moved
    }

    // MARK: local responses

    /// Sends a complete response made by the proxy (rules, errors) and closes if asked.
    func sendLocal(_ bytes: [UInt8], status: Int, close shouldClose: Bool = false) {
        logStatus = status
        if shouldClose { closeAfterResponse = true }
        let out = output ?? buffers.take()
        output = out
        if out.isEmpty { out.clear() }
        // A new transaction starts only once the last response is out (parseOrReadHead), so
        // the buffer is empty: only a response rendered larger than tune.bufsize fails here,
        // and the client gets a 500 instead of a cut one.
        if !out.append(bytes) {
            logStatus = 500
            terminationState = "PR"
            closeAfterResponse = true
            out.clear()
            if !out.append(HTTPStatusText.errorPage(500)) { close(); return }
        }
        // Skip the request body, if any, by closing afterwards (we do not read it).
        if let inBuf = input {
            inBuf.head += requestHeadLength
            requestHeadLength = 0
            switch request.requestFraming {
            case .none: break
            case .contentLength(let n) where Int64(inBuf.count) >= n: inBuf.head += Int(n)
            default:
                closeAfterResponse = true
                lingerAlways = true
            }
        }
        parser.reset()
        if let s = server {
            server = nil
            s.close()
        }
        phase = .exchange
        _ = flushToClient()
        endTransactionWhenFlushed()
    }

    /// `http-request tarpit`: holds the request for `timeout tarpit` (else `timeout connect`)
    /// of the proxy whose rule fired, then answers and closes. No server is contacted.
    func tarpit(_ bytes: [UInt8], status: Int) {
        let t = (backend ?? frontend.ownBackend)?.settings.timeouts ?? settings.timeouts
        let delay = Int64((backend == nil ? settings.timeouts.tarpit ?? settings.timeouts.connect : t.tarpit ?? t.connect) ?? 0)
        tarpitResponse = (bytes, status)
        phase = .tarpit
        loop.setDeadline(self, loop.now + delay)
    }

    /// Answers with an error page (the configured errorfile, or the built-in one).
    func respondWithError(_ status: Int, reason: String, state: String) {
        terminationState = state
        releaseSlot()
        if let s = server { server = nil; s.close(abort: true) }
        let page = backend?.errorPages[status] ?? frontend.errorPages[status] ?? HTTPStatusText.errorPage(status)
        if responseStarted {
            close()
            return
        }
        toServer.map { buffers.give($0) }
        toServer = nil
        if let f = fromServer { buffers.give(f); fromServer = nil }
        sendLocal(page, status: status, close: true)
    }

    func abortTransaction() {
        if let s = server { server = nil; s.close(abort: true) }
        close()
    }

    // MARK: closing

    /// Half-closes our side and reads until the client closes, so that a request racing the
    /// close is not answered with a reset (RFC 9112 §9.6). When the request was read to its
    /// end and nothing more is buffered or signalled, closes at once, as HAProxy does.
    func shutdownAndDrain() {
        client.shutdownWrite()
        let nothingPending = (input?.isEmpty ?? true) && !client.readable && !client.hangup && !lingerAlways
            && { if case .none = requestBody { return true }; if case .done = requestBody { return true }; return false }()
        if nothingPending {
            close()
            return
        }
        phase = .draining
        if let b = output { buffers.give(b); output = nil }
        if let b = toServer { buffers.give(b); toServer = nil }
        // Read only if the client already signalled something; otherwise wait for its FIN.
        if client.readable { _ = drainClient() }
        if !closed { loop.setDeadline(self, loop.now + 1000) }
    }

    func drainClient() -> Bool {
        if output != nil && !(output!.isEmpty) { return false }
        if let out = output, out.isEmpty, phase == .draining, !closed {
            buffers.give(out)
            output = nil
            client.shutdownWrite()
        }
        let inBuf = input ?? buffers.take()
        input = inBuf
        var moved = false
        while !client.eof {
            inBuf.clear()
            guard let n = client.read(into: inBuf) else { break }
            moved = true
            if n == 0 { break }
        }
        if client.eof { close() }
        return moved
    }

    func close() {
        guard !closed else { return }
        closed = true
        releaseSlot()
        queueTicket?.cancelledInQueue = true
        queueTicket = nil
        loop.clearDeadline(self)
        client.close()
        if let s = server { server = nil; s.close() }
        for b in [input, output, toServer, fromServer] { if let b { buffers.give(b) } }
        input = nil; output = nil; toServer = nil; fromServer = nil
        context.sessionClosed(self)
    }

    // MARK: logging

    func logTransaction(early: Bool = false) {
        let o = frontend.settings.options
        guard !frontend.logDestinations.isEmpty else { return }
        if o.dontLogNull && transactions == 0 { return }
        let now = loop.now
        let tr = headReceivedMs - requestStartMs
        let tw: Int64 = 0
        let tc = connectedMs >= connectStartMs && connectStartMs > 0 ? connectedMs - connectStartMs : -1
        let trs = responseHeadMs >= connectedMs && connectedMs > 0 ? responseHeadMs - connectedMs : -1
        let ta = now - requestStartMs
        let serverName = triedServer?.name ?? "<NOSRV>"
        let backendName = backend?.name ?? frontend.name
        let line: String
        if o.httpLog {
            line = "\(clientIP):\(clientPort) [\(Logger.acceptDate(seconds: acceptedAt.seconds, microseconds: acceptedAt.microseconds))] \(frontend.name) \(backendName)/\(serverName) \(tr)/\(tw)/\(tc)/\(trs)/\(early ? "+" : "")\(ta) \(logStatus) \(early ? "+" : "")\(bytesToClient + (early ? (output?.count ?? 0) : 0)) - - \(terminationState)-- \(context.model.activeConnections.load(ordering: .relaxed))/\(frontend.active.load(ordering: .relaxed))/0/0/0 0/0 \"\(requestLineForLog)\""
        } else if o.tcpLog {
            // `option tcplog` in an HTTP frontend: one line per transaction, in tcplog layout.
            line = "\(clientIP):\(clientPort) [\(Logger.acceptDate(seconds: acceptedAt.seconds, microseconds: acceptedAt.microseconds))] \(frontend.name) \(backendName)/\(serverName) \(tw)/\(tc)/\(early ? "+" : "")\(ta) \(early ? "+" : "")\(bytesToClient) \(terminationState) \(context.model.activeConnections.load(ordering: .relaxed))/\(frontend.active.load(ordering: .relaxed))/0/0/0 0/0"
        } else {
            line = "Connect from \(clientIP):\(clientPort) to \(localIP):\(local.port) (\(frontend.name)/HTTP)"
        }
        context.model.logger.log(line, to: frontend.logDestinations)
        if !early {
            bytesToClient = 0
            terminationState = "--"
        }
    }
}

extension HTTPTransaction {
    /// Reads the persistence cookie: picks its server, and for `indirect` or `prefix`,
    /// takes it (or its prefix) out of the request before the server sees it.
    func applyPersistence(_ cookie: CookieSettings, _ backend: RuntimeBackend) {
        var value: String?
        _ = MessageView(bytes: requestBytes, head: request).visitCookie(cookie.name, inResponse: false) { sample in
            if case .bytes(let p) = sample { value = String(decoding: p, as: UTF8.self) }
            return true
        }
        cookieFirstSeen = nil
        guard var v = value else { return }
        if cookie.mode == .prefix, let tilde = v.firstIndex(of: "~") { v = String(v[..<tilde]) }
        if cookie.maxIdle != nil || cookie.maxLife != nil {
            // SERVER|last-seen|first-seen (wall seconds): an idle or too old cookie is ignored.
            let parts = v.split(separator: "|", omittingEmptySubsequences: false)
            v = String(parts[0])
            let now = Clock.wallClock().seconds
            let last = parts.count > 1 ? Int(parts[1]) : nil
            let first = parts.count > 2 ? Int(parts[2]) : nil
            if let maxIdle = cookie.maxIdle, let last, now - last > maxIdle / 1000 { v = "" }
            if let maxLife = cookie.maxLife, let first, now - first > maxLife / 1000 { v = "" }
            if !v.isEmpty { cookieFirstSeen = first }
        }
        if let s = backend.servers.first(where: { $0.definition.options.cookie == v }) {
            persistServer = s
            cookieMatched = true
        }
        let strip = (cookie.indirect && cookie.mode == .insert) || cookie.mode == .prefix
        guard strip else { return }
        var list = editableRequestHeaders()
        list = list.compactMap { h in
            guard String(decoding: h.name, as: UTF8.self).lowercased() == "cookie" else { return h }
            let items = String(decoding: h.value, as: UTF8.self).split(separator: ";").map { String($0).trimmingBlanks() }
            let kept = items.compactMap { item -> String? in
                guard item.hasPrefix(cookie.name + "=") else { return item }
                if cookie.mode == .prefix, let tilde = item.firstIndex(of: "~") {
                    return cookie.name + "=" + String(item[item.index(after: tilde)...])
                }
                return nil
            }
            return kept.isEmpty ? nil : (h.name, Array(kept.joined(separator: "; ").utf8))
        }
        rewrittenHeaders = list
    }

    /// `rewrite` replaces the value of the server's Set-Cookie; `prefix` prefixes it.
    func rewriteServerCookie(_ cookie: CookieSettings, _ serverValue: String) {
        var list = editableResponseHeaders()
        var changed = false
        list = list.map { h in
            guard String(decoding: h.name, as: UTF8.self).lowercased() == "set-cookie" else { return h }
            let text = String(decoding: h.value, as: UTF8.self)
            guard text.hasPrefix(cookie.name + "=") else { return h }
            changed = true
            let rest = text.dropFirst(cookie.name.count + 1)
            let valueEnd = rest.firstIndex(of: ";") ?? rest.endIndex
            let original = rest[..<valueEnd]
            let newValue = cookie.mode == .rewrite ? serverValue : serverValue + "~" + original
            return (h.name, Array((cookie.name + "=" + newValue + rest[valueEnd...]).utf8))
        }
        if changed { responseEdits = list }
    }
}

extension HTTPTransaction {
    /// Whether `insert` sets the cookie on this response: not when the client already has
    /// the right one (unless it is dated and needs refreshing), with `postonly` only after a
    /// POST, and with `preserve` not when the server set the cookie itself.
    func shouldInsertCookie(_ cookie: CookieSettings, _ server: RuntimeServer, _ p: UnsafeRawBufferPointer) -> Bool {
        let dated = cookie.maxIdle != nil || cookie.maxLife != nil
        // Only `indirect` spares a client that already has the right cookie; without it the
        // cookie goes out on every response, as in HAProxy.
        if cookie.indirect && cookieMatched && persistServer === server && !dated { return false }
        if cookie.postOnly && !requestWasPOST { return false }
        if cookie.preserve {
            let prefix = Array((cookie.name + "=").utf8)
            for h in response.headers where HTTPParser.equalsLower(p, h.name, "set-cookie") {
                let v = p[Int(h.value.start)..<Int(h.value.end)]
                if v.starts(with: prefix) { return false }
            }
        }
        return true
    }
}
