import ProxyConfig
import ProxyHTTP
import ProxyRules

/// How an HTTP health check judges the server's answer: `http-check expect` rules in order,
/// with the `set-var` lines between them, or a 2xx/3xx status by default.
extension HealthCheck {
    func evaluate() {
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/"), text.count >= 12, let status = Int(text.dropFirst(9).prefix(3)) else {
            complete(false, reason: "Layer7 invalid response", code: nil)
            return
        }
        // `http-check disable-on-404`, before any `expect`: a running server that answers 404
        // stops taking new traffic (a stopped one stays stopped: the 404 is then a failure).
        if disableOn404 && status == 404 && isUp {
            if server.setNoLoadBalancing(true) { stopping(duration: context.loop.now - startedMs) }
            complete(true, reason: "Layer7 check conditionally passed", code: 404)
            return
        }
        var bodyStart = response.count
        if response.count >= 4 {
            for i in 0...(response.count - 4) where response[i] == 13 && response[i + 1] == 10 && response[i + 2] == 13 && response[i + 3] == 10 {
                bodyStart = i + 4
                break
            }
        }
        let body = String(decoding: response[bodyStart...], as: UTF8.self)
        // The status line's reason phrase: the info HAProxy reports with a status.
        let lineEnd = response.firstIndex(of: 13) ?? response.count
        let phrase = lineEnd > 13 ? String(decoding: response[13..<lineEnd], as: UTF8.self) : ""
        func info(_ text: String, _ comment: String?) -> String {
            let full = comment.map { text + " comment: " + $0 } ?? text
            return full.isEmpty ? "" : ", info: \"\(full)\""
        }
        if expectations.isEmpty {
            let ok = (200..<400).contains(status)
            complete(ok, reason: ok ? "Layer7 check passed" : "Layer7 wrong status" + info(phrase, nil), code: status)
            return
        }
        // The response head, parsed by the first `expect hdr|fhdr` that needs it.
        var head: MessageHead?
        for (index, e) in expectations.enumerated() {
            if index > 0 { for a in httpActions where a.afterExpectations == index { run(a.action) } }
            var ok: Bool
            let regex = expectationRegexes[index]
            switch e.kind {
            case .status: ok = e.pattern.split(separator: ",").contains { part in
                    let range = part.split(separator: "-")
                    if range.count == 2, let lo = Int(range[0]), let hi = Int(range[1]) { return (lo...hi).contains(status) }
                    return Int(part) == status
                }
            case .rstatus: ok = regex.pattern?.matches(String(status)) ?? false
            case .string: ok = body.contains(e.pattern)
            case .rstring: ok = regex.pattern?.matches(body) ?? false
            case .stringFormat:
                let pattern = String(decoding: render(e.pattern), as: UTF8.self)
                guard !pattern.isEmpty else {
                    complete(false, reason: "Layer7 invalid response" + info("log-format string evaluated to an empty string", e.comment), code: nil)
                    return
                }
                ok = body.contains(pattern)
            case .header, .fullHeader:
                if head == nil {
                    var parsed = MessageHead()
                    var parser = HTTPParser(maxHeadLength: response.count)
                    if response.withUnsafeBytes({ parser.parseResponse($0, into: &parsed) }) == .complete { head = parsed }
                }
                guard let head else {
                    complete(false, reason: "Layer7 invalid response", code: nil)
                    return
                }
                guard let found = headerMatches(e.headerMatch!, full: e.kind == .fullHeader, regex, head: head) else {
                    complete(false, reason: "Layer7 invalid response" + info("log-format string evaluated to an empty string", e.comment), code: nil)
                    return
                }
                ok = found
            }
            if e.negated { ok.toggle() }
            if !ok {
                // HAProxy's words: a status or a header that does not match is L7STS with the
                // phrase, a body that does not is L7RSP; `error-status`, `on-error` and
                // `comment` change them.
                let onStatus = e.kind == .status || e.kind == .rstatus || e.kind == .header || e.kind == .fullHeader
                let words = e.errorStatus.flatMap { TCPCheck.errorStatuses[$0] } ?? (onStatus ? "Layer7 wrong status" : "Layer7 invalid response")
                let text = e.onError.map { String(decoding: render($0), as: UTF8.self) } ?? (onStatus ? phrase : "HTTP content check did not match")
                let code = e.statusCode.flatMap { integer($0) }.map { Int(truncatingIfNeeded: $0) } ?? status
                complete(false, reason: words + info(text, e.comment), code: words == "Layer7 wrong status" || e.statusCode != nil ? code : nil)
                return
            }
        }
        for a in httpActions where a.afterExpectations == expectations.count { run(a.action) }
        let last = expectations[expectations.count - 1]
        let words = last.okStatus.flatMap { TCPCheck.okStatuses[$0] } ?? "Layer7 check passed"
        let reason = words + info(last.onSuccess.map { String(decoding: render($0), as: UTF8.self) } ?? "", nil)
        // `status-code EXPR` sets the code HAProxy reports (the status by default).
        let code = last.statusCode.flatMap { integer($0) }.map { Int(truncatingIfNeeded: $0) } ?? status
        // `ok-status L7OKC`: a running server stops taking new traffic (`NOLB`), as in HAProxy.
        if last.okStatus == "L7OKC" && isUp && server.setNoLoadBalancing(true) { stopping(duration: context.loop.now - startedMs, reason: reason, code: code) }
        complete(true, reason: reason, code: code)
    }

    /// `expect hdr|fhdr`: whether a header of the response head (as the project's HTTP parser
    /// reads it) matches by name (without case) and, when asked, by one of its values (`hdr`:
    /// each comma-separated value; `fhdr`: the whole value), with case. Nil: a log-format
    /// pattern rendered empty.
    func headerMatches(_ m: HeaderMatch, full: Bool, _ regex: (pattern: PosixRegex?, value: PosixRegex?), head: MessageHead) -> Bool? {
        let name = m.nameIsFormat ? render(m.name) : Array(m.name.utf8)
        let value = m.value.map { m.valueIsFormat ? render($0) : Array($0.utf8) }
        if name.isEmpty || value?.isEmpty == true { return nil }
        let lowerName = name.map(Self.lower)
        for h in head.headers {
            let fieldName = response[Int(h.name.start)..<Int(h.name.end)]
            let lowerField = fieldName.map(Self.lower)
            let named: Bool
            switch m.nameMethod {
            case .str: named = lowerField == lowerName
            case .beg: named = lowerField.starts(with: lowerName)
            case .end: named = lowerField.reversed().starts(with: lowerName.reversed())
            case .sub: named = ByteSearch.contains(lowerField, lowerName)
            case .reg: named = regex.pattern?.matches(bytes: fieldName) ?? false
            }
            guard named else { continue }
            guard let value else { return true }
            let fieldValue = response[Int(h.value.start)..<Int(h.value.end)]
            let values = full ? [fieldValue] : fieldValue.split(separator: 0x2c, omittingEmptySubsequences: false).map { Self.trimmed($0) }
            for v in values {
                let hit: Bool
                switch m.valueMethod {
                case .str: hit = v.elementsEqual(value)
                case .beg: hit = v.starts(with: value)
                case .end: hit = v.reversed().starts(with: value.reversed())
                case .sub: hit = ByteSearch.contains(v, value)
                case .reg: hit = regex.value?.matches(bytes: v) ?? false
                }
                if hit { return true }
            }
        }
        return false
    }

    @inline(__always) static func lower(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5a ? b | 0x20 : b }

    /// A comma-separated value without the blanks around it.
    static func trimmed(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var t = s
        while let f = t.first, f == 0x20 || f == 0x09 { t = t.dropFirst() }
        while let l = t.last, l == 0x20 || l == 0x09 { t = t.dropLast() }
        return t
    }
}
