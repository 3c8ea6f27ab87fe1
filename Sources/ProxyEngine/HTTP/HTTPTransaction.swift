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
        /// A request for a service (the stats page's form): waiting for its body.
        case service
    }

    /// The client's connection; events from it and from the server connection come here.
    let client: Connection
    unowned(unsafe) let context: LoopContext
    /// The acceptor that took this connection: its slot is released when it closes.
    let acceptor: Acceptor
    let frontend: Frontend
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
    var backend: Backend?
    var requestBody = BodyState.none
    var responseBody = BodyState.none
    var responseStarted = false
    var requestWasHEAD = false
    var requestWasPOST = false
    var closeAfterResponse = false
    var transactions = 0
    var retriesLeft = 0
    var triedServer: Server?
    var requestHeadLength = 0
    /// The request is already in `toServer` (a retry must not compose it again).
    var requestComposed = false
    /// Where `http-send-name-header`'s value sits in `toServer` (offset << 32 | length), so
    /// that a retry on another server rewrites it; 0: none. Set by each request composed for
    /// a backend with the header.
    var serverNameValue = 0
    /// `toServer` still holds the whole request from offset 0, so a retry can resend it.
    var requestReplayable = false
    /// We asked the server to close after this response: never pool the connection.
    var toldServerToClose = false
    var upgradeRequested = false
    /// Set when rules rewrote the request: the new target and header list.
    var rewrittenTarget: [UInt8]?
    var rewrittenHeaders: [(name: [UInt8], value: [UInt8])]?
    var responseEdits: [(name: [UInt8], value: [UInt8])]?
    /// `http-response set-status`: kept in `extras` (most transactions never set one).
    var statusOverride: (Int, String?)? {
        get { extras?.statusOverride }
        set {
            if extras == nil { if newValue == nil { return }; extras = TransactionExtras() }
            extras!.statusOverride = newValue
        }
    }
    var variables = SessionVariables()
    /// The answer a tarpit gives once its delay is over.
    var tarpitResponse: (bytes: [UInt8], status: Int)? {
        get { extras?.tarpitResponse }
        set {
            if extras == nil { if newValue == nil { return }; extras = TransactionExtras() }
            extras!.tarpitResponse = newValue
        }
    }
    /// A service waiting for the request body (`.service`).
    var pendingService: ServiceRoute?
    /// What is left of a local response larger than the output buffer, sent as it drains.
    var localTail: ArraySlice<UInt8> = []
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
    /// What only some log formats and rules read (capture slots, the server side's address),
    /// apart so that an idle connection stays small.
    var extras: TransactionExtras?
    /// This request's capture slots (`tcp-request content capture`).
    var captures: [[UInt8]?] {
        get { extras?.captures ?? [] }
        set {
            if extras == nil { if newValue.isEmpty { return }; extras = TransactionExtras() }
            extras!.captures = newValue
        }
    }
    /// When the connection was accepted, and since when it has been idle (`%Th`, `%Ti`).
    var acceptedMs: Int64 = 0
    var idleSinceMs: Int64 = 0

    enum BodyState {
        case none
        case length(Int64)
        case chunked(ChunkedBodyTracker)
        case untilClose
        case done
    }

    init(connection: Connection, peer: SocketAddress, local: SocketAddress?, acceptor: Acceptor, context: LoopContext) {
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
        acceptedAt = Clock.wallClock()
        acceptedMs = context.loop.now
        idleSinceMs = acceptedMs
        super.init()
        connection.owner = self
        // A PROXY header named the address the client reached.
        if let local { self.local = (Self.ip(of: local), local.port) }
    }

    static func ip(of a: SocketAddress) -> IPAddress {
        if let v4 = a.ipv4 { return IPAddress(v4: v4) }
        let b = a.addressBytes
        return b.count == 16 ? IPAddress(bytes16: b) : IPAddress(v4: 0)
    }

    var loop: EventLoop { context.loop }
    var buffers: BufferPool { context.loop.buffers }
    var settings: ProxySettings { frontend.settings }

    var pendingServerReusable = true
    /// The server whose request slot (maxconn) this transaction holds.
    var slotServer: Server?
    /// The backend that granted `slotServer` (it gets the slot back).
    var slotBackend: Backend?
    /// The client connection's byte counts already added to the statistics.
    var countedIn = 0
    var countedOut = 0
    var queueTicket: QueueTicket?
    /// The server the client's persistence cookie names (while it is usable).
    var persistServer: Server?
    /// The client presented a cookie naming the server that served it.
    var cookieMatched = false
    /// `maxlife`: when the persistence cookie was first set (wall seconds), carried in it.
    var cookieFirstSeen: Int?
    var queuedAtMs: Int64 = 0
    /// Always drain before closing (idle connections retired by a soft stop).
    var lingerAlways = false
    /// The line was already logged at the response head (`option logasap`).
    var loggedEarly = false


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
            if responseStarted { terminationState = "sD"; close() } else {
                server?.server?.observed(.readTimeout)
                respondWithError(504, reason: "server timeout", state: "sH")
            }
        case .queued:
            cancelQueueTicket()
            respondWithError(503, reason: "timeout in the queue", state: "sQ")
        case .flushing:
            close()
        case .service:
            respondWithError(408, reason: "timeout while waiting for the request body", state: "cR")
        case .tarpit:
            terminationState = "PT"
            let answer = tarpitResponse ?? (HTTPStatusText.errorPage(500), 500)
            tarpitResponse = nil
            sendLocal(answer.bytes, status: answer.status, close: true)
        case .tunnel, .draining:
            close()
        }
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
            // A large local response still going out gets the client timeout, not client-fin.
            ms = (output?.isEmpty ?? true) ? (t.clientFin ?? 1000) : t.client
        case .flushing:
            ms = t.client
        case .service:
            ms = t.httpRequest ?? t.client
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
            case .service:
                if readServiceBody() { moved = true }
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
        if out.isEmpty {
            out.clear()
            if !localTail.isEmpty { refillFromLocalTail(out) }
        }
        return n > 0
    }

    /// Moves the next part of a large local response into the drained output buffer.
    func refillFromLocalTail(_ out: Buffer) {
        let n = min(out.freeSpace, localTail.count)
        let ok = localTail.withUnsafeBytes { out.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        precondition(ok, "a drained buffer takes its free space")
        localTail = localTail.dropFirst(n)
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

    // MARK: local responses

    /// Sends a complete response made by the proxy (rules, errors) and closes if asked. A
    /// response after which the connection closes says `connection: close`, so a keep-alive
    /// client (during a soft stop, say) never sends its next request into a closed socket.
    func sendLocal(_ bytes: [UInt8], status: Int, close shouldClose: Bool = false, requestRead: Bool = false) {
        logStatus = status
        if shouldClose { closeAfterResponse = true }
        // Skip the request body, if any, by closing afterwards (we do not read it); unless it
        // was read already (an answer in the server's place).
        if let inBuf = input, !requestRead {
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
        var response = closeAfterResponse ? Self.announcingClose(bytes) : bytes
        // A HEAD gets the head alone, its Content-Length kept, as HAProxy sends it.
        if requestWasHEAD, let end = Self.headEnd(response) { response.removeSubrange(end...) }
        let out = output ?? buffers.take()
        output = out
        if out.isEmpty { out.clear() }
        // A new transaction starts only once the last response is out (parseOrReadHead), so
        // the buffer is empty; a response larger than it (the stats page, the metrics) goes
        // out in buffer-sized parts, the rest held in `localTail` until the buffer drains.
        if !out.append(response) {
            localTail = response[...]
            refillFromLocalTail(out)
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

    /// Where a response's head ends (after its blank line), if it has one.
    static func headEnd(_ response: [UInt8]) -> Int? {
        guard response.count >= 4 else { return nil }
        for i in 0...(response.count - 4) where response[i] == 13 && response[i + 1] == 10 && response[i + 2] == 13 && response[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    /// `response` with `connection: close` after its status line, unless its head already
    /// has a Connection header.
    static func announcingClose(_ response: [UInt8]) -> [UInt8] {
        guard let lineEnd = response.firstIndex(of: UInt8(ascii: "\n")) else { return response }
        var i = lineEnd + 1
        while i < response.count {
            guard let end = response[i...].firstIndex(of: UInt8(ascii: "\n")) else { break }
            if end - i <= 1 { break }  // the empty line: the head ends
            if end - i > 11, response[i..<(i + 11)].map({ $0 | 0x20 }).elementsEqual("connection:".utf8) { return response }
            i = end + 1
        }
        var out = response
        out.insert(contentsOf: Array("connection: close\r\n".utf8), at: lineEnd + 1)
        return out
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

    /// `http-response deny|return`: the server's response (and its connection, whose body is
    /// left unread) is dropped, and `bytes` go to the client in its place.
    @inline(never)
    func replaceResponse(_ bytes: [UInt8], status: Int, state: String) {
        terminationState = state
        responseStarted = false
        responseEdits = nil
        statusOverride = nil
        // The next response on this connection is parsed from its own start.
        responseParser.reset()
        releaseSlot()
        if let s = server { server = nil; s.close(abort: true) }
        // The request went to the server whole: the client's connection stays open for the
        // next one, as in HAProxy; a request still streaming its body closes it.
        let requestDone: Bool = { if case .done = requestBody { return true }; return false }()
        toServer.map { buffers.give($0) }
        toServer = nil
        if let f = fromServer { buffers.give(f); fromServer = nil }
        sendLocal(bytes, status: status, close: !requestDone, requestRead: requestDone)
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
        // Bytes of a request that never finished count for the frontend.
        context.counters.add(frontend.statBase, .bytesIn, client.bytesIn - countedIn)
        context.counters.add(frontend.statBase, .bytesOut, client.bytesOut - countedOut)
        countedIn = client.bytesIn
        countedOut = client.bytesOut
        closed = true
        releaseSlot()
        cancelQueueTicket()
        loop.clearDeadline(self)
        client.close()
        if let s = server { server = nil; s.close() }
        for b in [input, output, toServer, fromServer] { if let b { buffers.give(b) } }
        input = nil; output = nil; toServer = nil; fromServer = nil
        context.sessionClosed(self)
    }

    // MARK: statistics and logging

    /// Adds the finished transaction to the frontend's, backend's and server's counters.
    func countTransaction() {
        let counters = context.counters
        let bin = client.bytesIn - countedIn, bout = client.bytesOut - countedOut
        countedIn = client.bytesIn
        countedOut = client.bytesOut
        counters.transaction(frontend.statBase, status: logStatus, bytesIn: bin, bytesOut: bout)
        if let b = backend { counters.transaction(b.statBase, status: logStatus, bytesIn: bin, bytesOut: bout) }
        if let s = triedServer { counters.transaction(s.statBase, status: logStatus, bytesIn: bin, bytesOut: bout) }
    }

    func logTransaction(early: Bool = false) {
        guard !frontend.logDestinations.isEmpty else { return }
        if frontend.settings.options.dontLogNull && transactions == 0 { return }
        // `option dontlog-normal`: no error, no retry, no 5xx: nothing to say.
        let retried = backend.map { b in triedServer != nil && b.settings.retries > retriesLeft } ?? false
        // A state starting with L (an answer of our own: return, redirect) is normal too.
        let normalState = terminationState.utf8.first == UInt8(ascii: "-") || terminationState.utf8.first == UInt8(ascii: "L")
        if !(frontend.settings.options.dontLogNormal && normalState && logStatus < 500 && !retried) {
            let line: String
            if let format = frontend.accessLog {
                let record = logRecord(early: early)
                line = String(decoding: format.render(record, HTTPSamples(session: self, phase: .log)), as: UTF8.self)
            } else {
                line = "Connect from \(clientIP):\(clientPort) to \(localIP):\(local.port) (\(frontend.name)/HTTP)"
            }
            context.model.logger.log(line, to: frontend.logDestinations)
        }
        if !early {
            bytesToClient = 0
            terminationState = "--"
        }
    }

    /// The values of this transaction's log line, now.
    func logRecord(early: Bool) -> LogRecord {
        let now = loop.now
        let started = requestStartMs > 0 ? requestStartMs : now
        var r = LogRecord(frontend: frontend, backendName: backend?.name ?? frontend.name,
                          serverName: triedServer?.name ?? "<NOSRV>", accepted: acceptedAt, isHTTP: true,
                          model: context.model)
        r.client = (clientIP, Int(clientPort))
        r.frontendAddress = (localIP, Int(local.port))
        if let s = triedServer { let a = s.address; r.serverAddress = (HTTPTransaction.ip(of: a), Int(a.port)) }
        r.backendSource = extras?.serverSource
        r.overTLS = acceptor.tls != nil
        r.tls = client.transport as? TLSTransport
        if transactions <= 1, let t = r.tls, t.establishedAtMs > 0 { r.handshake = max(0, t.establishedAtMs - acceptedMs) }
        r.idle = max(0, started - idleSinceMs - r.handshake)
        r.request = headReceivedMs >= started && requestStartMs > 0 ? headReceivedMs - started : -1
        if connectStartMs >= started && requestStartMs > 0 {
            r.queue = queuedAtMs >= started && queuedAtMs <= connectStartMs ? connectStartMs - queuedAtMs : 0
        }
        r.connect = connectedMs >= connectStartMs && connectStartMs > 0 ? connectedMs - connectStartMs : -1
        r.response = responseHeadMs >= connectedMs && connectedMs > 0 ? responseHeadMs - connectedMs : -1
        r.active = now - started
        r.total = r.handshake + r.idle + r.active
        r.early = early
        r.status = logStatus
        // With what waits in the output buffer: the line is written as the response is queued.
        // Logged before the transaction is counted: what the client sent and got since.
        r.bytesOut = client.bytesOut - countedOut + (output?.count ?? 0)
        r.bytesIn = client.bytesIn - countedIn
        r.termination = terminationState
        r.activeConnections = context.model.activeConnections.load(ordering: .relaxed)
        r.frontendConnections = frontend.active.load(ordering: .relaxed)
        r.backendConnections = backend?.active.load(ordering: .relaxed) ?? 0
        r.serverConnections = triedServer?.active.load(ordering: .relaxed) ?? 0
        if let b = backend, triedServer != nil {
            r.retries = max(0, b.settings.retries - retriesLeft)
            r.redispatched = b.settings.options.redispatchedWithin(r.retries, of: b.settings.retries)
        }
        r.requestLine = requestLineForLog.isEmpty ? nil : requestLineForLog
        if frontend.requestCaptures > 0 {
            r.requestCaptures = captures.count == frontend.requestCaptures ? captures : [[UInt8]?](repeating: nil, count: frontend.requestCaptures)
        }
        if requestStartMs > 0 {
            let us = acceptedAt.microseconds + Int(requestStartMs - acceptedMs) * 1000
            r.requestStart = (acceptedAt.seconds + us / 1_000_000, us % 1_000_000)
        }
        return r
    }
}

/// The parts of a transaction only some configurations use, allocated on first use.
final class TransactionExtras {
    /// `tcp-request content capture` slots of the current request.
    var captures: [[UInt8]?] = []
    /// Where the server connection left from (`%bi`, `%bp`).
    var serverSource: (ip: IPAddress, port: Int)?
    /// `http-response set-status`, and the answer a tarpit gives when it ends.
    var statusOverride: (Int, String?)?
    var tarpitResponse: (bytes: [UInt8], status: Int)?
}
