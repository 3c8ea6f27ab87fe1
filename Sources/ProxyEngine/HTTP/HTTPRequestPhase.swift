import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// The request side of a transaction: the head read and parsed, the rules, the route, the
/// head rewritten for the server, and the body relayed by its framing.
extension HTTPTransaction {
    // MARK: request head

    func parseOrReadHead() -> Bool {
        if input == nil {
            guard client.readable, !client.eof else { return false }
            input = buffers.take()
            // Room for a typical head's headers at once (8: most requests and responses; a
            // larger head grows it once per connection), taken with the first request's bytes:
            // a connection that sends none (a probe, a TLS handshake alone) allocates none.
            if request.headers.capacity == 0 {
                request.headers.reserveCapacity(8)
                response.headers.reserveCapacity(8)
            }
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
                    captureError(isRequest: true, reason: e.reason, bytes: inBuf.readable)
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
                // Client closed: silently when idle, as HAProxy does; a failed TLS handshake
                // is logged and counted.
                if client.transport?.handshakeFailed == true { context.tlsHandshakeFailed(acceptor, peer: clientIP, port: clientPort, at: acceptedAt) }
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
        serverNameValue = 0
        toldServerToClose = false
        let bytes = requestBytes
        requestWasHEAD = request.method.count == 4 && bytes[Int(request.method.start)] == UInt8(ascii: "H")
        requestWasPOST = request.method.count == 4 && bytes[Int(request.method.start)] == UInt8(ascii: "P")
            && bytes[Int(request.method.start) + 1] == UInt8(ascii: "O")
        pathRange = computePath(bytes)
        upgradeRequested = request.connectionUpgrade && request.hasUpgradeHeader
        closeAfterResponse = !request.wantsKeepAlive || settings.options.httpConnectionMode == .close
            || context.model.stopping.load(ordering: .relaxed)
        if frontend.accessLogReadsRequestLine {
            requestLineForLog = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<max(0, request.startLineEnd - 2)]), as: UTF8.self)
        }
        // monitor-uri answers before any rule.
        if let m = settings.monitorURI, matchesMonitorURI(m, bytes) {
            sendLocal(Array("HTTP/1.1 200 OK\r\ncontent-length: 58\r\ncache-control: no-cache\r\ncontent-type: text/html\r\n\r\n<html><body><h1>200 OK</h1>\nService ready.\n</body></html>\n".utf8), status: 200)
            return
        }
        // Frontend rules (`tcp-request content`, then `http-request`), then routing, then
        // the backend's own rules.
        if !frontend.tcpContentRules.isEmpty || frontend.requestCaptures > 0 {
            captures = [[UInt8]?](repeating: nil, count: frontend.requestCaptures)
            if rejectedByContentRules(frontend.tcpContentRules, frontend.contentFormats) { return }
        }
        if applyRequestRules(frontend.rules.request, legacy: frontend.rules.legacyRequest) { return }
        if let stats = frontend.statsPage, matchesStats(stats.settings) { startService(.stats(proxyName: frontend.name, stats.settings)); return }
        var chosen: Backend?
        let samples = HTTPSamples(session: self, phase: .request)
        routing: for (route, guardState) in frontend.routes {
            switch guardState {
            case .always: break
            case .never: continue
            case .when(let c): if !c.evaluate(samples) { continue }
            }
            switch route {
            case .fixed(let b): chosen = b
            case .dynamic(let format):
                // A computed name that names no backend ends the rules: the default backend
                // takes the request, as in HAProxy.
                chosen = context.model.backends[String(decoding: format.render(samples), as: UTF8.self)]
            }
            break routing
        }
        backend = chosen ?? frontend.defaultBackend
        guard let backend else {
            respondWithError(503, reason: "no backend", state: "SC")
            return
        }
        if backend !== frontend.ownBackend {
            if !backend.tcpContentRules.isEmpty, rejectedByContentRules(backend.tcpContentRules, backend.contentFormats) { return }
            if applyRequestRules(backend.rules.request, legacy: backend.rules.legacyRequest) { return }
            if let stats = backend.statsPage, matchesStats(stats.settings) { startService(.stats(proxyName: backend.name, stats.settings)); return }
        }
        if backend.settings.options.httpConnectionMode == .close { closeAfterResponse = true }
        persistServer = nil
        cookieMatched = false
        if let cookie = backend.settings.cookie { applyPersistence(cookie, backend) }
        retriesLeft = backend.settings.retries
        connectToServer()
    }

    /// Keeps a refused message for `show errors`.
    func captureError(isRequest: Bool, reason: String, bytes: UnsafeRawBufferPointer) {
        context.model.errors.record(isRequest: isRequest, frontend: frontend.name, backend: backend?.name,
                                    server: server?.server?.name ?? slotServer?.name, source: "\(clientIP):\(clientPort)",
                                    reason: reason, bytes: bytes)
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
        if let n = backend?.sendNameHeader {
            writeHeaders(&w, p, naming: n)
        } else if let list = rewrittenHeaders {
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
    func forwardedForHeader(_ backend: Backend?) -> String? {
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

    /// The headers with `http-send-name-header`: the client's copies of that header left out,
    /// and the server's name added last, where a retry on another server can rewrite it.
    @inline(never)
    func writeHeaders(_ w: inout HeadWriter, _ p: UnsafeRawBufferPointer, naming n: Backend.NameHeader) {
        serverNameValue = 0
        if let list = rewrittenHeaders {
            for h in list where !Self.isHopByHop(h.name, keepUpgrade: upgradeRequested) {
                if h.name.withUnsafeBytes({ Self.sameName($0, 0..<$0.count, n.lower) }) { continue }
                w.append(h.name); w.append(": "); w.append(h.value); w.append("\r\n")
            }
        } else {
            for h in request.headers where !isHopByHop(p, h.name, keepUpgrade: upgradeRequested) {
                if Self.sameName(p, Int(h.name.start)..<Int(h.name.end), n.lower) { continue }
                w.append(UnsafeRawBufferPointer(rebasing: p[Int(h.line.start)..<Int(h.line.end)]))
            }
        }
        guard let chosen = slotServer ?? triedServer else { return }
        w.append(n.name); w.append(": ")
        let at = w.buffer.tail
        w.append(string: chosen.name)
        serverNameValue = at << 32 | (w.buffer.tail - at)
        w.append("\r\n")
    }

    /// Whether the header name at `range` of `p` is `lower`, ASCII case aside.
    static func sameName(_ p: UnsafeRawBufferPointer, _ range: Range<Int>, _ lower: [UInt8]) -> Bool {
        guard range.count == lower.count else { return false }
        for (k, i) in range.enumerated() where CaseFold.lower.apply(p[i]) != lower[k] { return false }
        return true
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
                captureError(isRequest: true, reason: why, bytes: chunk)
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

    /// `tcp-request content` rules in HTTP mode, on each request: operations apply, a
    /// `reject` closes the connection with no response (logged "PR", as HAProxy does).
    func rejectedByContentRules(_ rules: [Rule<TCPRequestAction>], _ formats: [String: LogFormat]) -> Bool {
        var samples = HTTPSamples(session: self, phase: .request)
        let verdict = rules.evaluate(&samples) { op, samples in
            switch op {
            case .setVariable(let scope, let name, let e, let c):
                guard let v = TCPRequestAction.Operation.value(e, samples) else { break }
                samples.session.variables.assign(scope, name, v, if: c, model: samples.session.context.model)
            case .setVariableFormat(let scope, let name, let f, let c):
                samples.session.variables.assign(scope, name, .string((formats[f] ?? LogFormat(f)).render(samples)), if: c, model: samples.session.context.model)
            case .unsetVariable(let scope, let name):
                samples.session.variables.assign(scope, name, nil, model: samples.session.context.model)
            case .capture(let e, let length, let slot):
                if slot < samples.session.captures.count {
                    samples.session.captures[slot] = TCPRequestAction.Operation.captured(e, length: length, samples)
                }
            }
        }
        guard verdict.reject else { return false }
        terminationState = "PR"
        logStatus = -1
        responseStarted = true
        logTransaction()
        close()
        return true
    }
}
