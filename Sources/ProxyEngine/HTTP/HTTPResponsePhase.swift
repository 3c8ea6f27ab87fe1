import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// The response side of a transaction: the server's head parsed and rewritten for the client,
/// the body relayed by its framing, the end of the exchange, and the tunnel after a 101.
extension HTTPTransaction {

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
                            s.server?.observed(.invalidHeaders)
                            respondWithError(502, reason: "response head too large", state: "PH")
                            return true
                        }
                    case .invalid(let e):
                        captureError(isRequest: false, reason: e.reason, bytes: inBuf.readable)
                        s.server?.observed(.invalidHeaders)
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

    /// Runs the backend's response rules, then the frontend's; true when one answered in the
    /// server's place (out of line: most proxies have none).
    @inline(never)
    func answeredByResponseRules() -> Bool {
        if let b = backend, b.rules.hasResponseRules, applyResponseRules(b.rules.response, legacy: b.rules.legacyResponse) { return true }
        if backend !== frontend.ownBackend, frontend.rules.hasResponseRules,
           applyResponseRules(frontend.rules.response, legacy: frontend.rules.legacyResponse) { return true }
        return false
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
        // `observe`: one load and a test on the usual path (no server observes).
        if let observing = slotServer, observing.observes {
            observing.observed(ObservedOutcome.goodStatus(status) ? .goodResponse : .wrongStatus)
        }
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
        // Response rules (backend's, then frontend's). A `deny` or `return` answers in the
        // server's place: nothing of its response went out.
        if (backend?.rules.hasResponseRules ?? false) || frontend.rules.hasResponseRules, answeredByResponseRules() { return .failed }
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
        // Logged first: the line's byte counts are what this transaction moved since the last count.
        if loggedEarly { loggedEarly = false; bytesToClient = 0; terminationState = "--" } else { logTransaction() }
        countTransaction()
        variables.transactionDone()
        idleSinceMs = loop.now
        if !requestLineForLog.isEmpty { requestLineForLog = "" }
        if !captures.isEmpty { captures = [] }
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

}
