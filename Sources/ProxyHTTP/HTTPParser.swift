import Glibc

/// Parses HTTP/1.x heads in place over bytes, strictly (RFC 9112 and HAProxy's defaults).
///
/// The parser is called again as bytes arrive; it first looks for the end of the head from
/// where the previous call stopped, and only then parses the whole head once. Any bare LF,
/// control character, space before a colon, or conflicting framing is refused with a 4xx.
public struct HTTPParser: Sendable {
    /// Where to resume looking for the end of the head.
    public private(set) var scanned = 0
    /// Maximum head size (`tune.bufsize - tune.maxrewrite`).
    public var maxHeadLength: Int
    /// Maximum number of header lines (HAProxy's default: 101).
    public var maxHeaders = 101

    public init(maxHeadLength: Int) {
        self.maxHeadLength = maxHeadLength
    }

    public enum Result: Equatable {
        case incomplete
        case complete
        case invalid(HTTPParseError)
    }

    public mutating func reset() { scanned = 0 }

    @inline(__always) static func isTokenChar(_ b: UInt8) -> Bool {
        // tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
        switch b {
        case 0x30...0x39, 0x41...0x5a, 0x61...0x7a: return true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2a, 0x2b, 0x2d, 0x2e, 0x5e, 0x5f, 0x60, 0x7c, 0x7e: return true
        default: return false
        }
    }

    /// Finds the blank line ending the head, from where the last call stopped. Every LF
    /// must follow a CR: a bare LF is refused at once rather than waited on.
    @inline(__always)
    mutating func findEnd(_ p: UnsafeRawBufferPointer, isRequest: Bool) -> Result? {
        let count = p.count
        guard let base = p.baseAddress else { return nil }
        var i = scanned
        while i < count {
            guard let hit = memchr(base + i, 10, count - i) else { break }
            let lf = base.distance(to: UnsafeRawPointer(hit))
            if lf == 0 || p[lf - 1] != 13 {
                return .invalid(HTTPParseError(isRequest ? 400 : 502, "bare LF in the message head"))
            }
            if lf >= 3 && p[lf - 2] == 10 && p[lf - 3] == 13 {
                scanned = lf + 1
                return .complete
            }
            i = lf + 1
        }
        // Resume after the last complete line next time.
        var resume = count
        while resume > scanned && p[resume - 1] != 10 { resume -= 1 }
        scanned = max(scanned, resume >= 2 ? resume - 2 : 0)
        if count > maxHeadLength {
            var sawLF = false
            if memchr(base, 10, min(count, maxHeadLength)) != nil { sawLF = true }
            if isRequest && !sawLF { return .invalid(HTTPParseError(414, "request line longer than \(maxHeadLength) bytes")) }
            return .invalid(HTTPParseError(isRequest ? 431 : 502, "header block larger than \(maxHeadLength) bytes"))
        }
        return nil
    }

    /// Parses a request head at the start of `p`.
    public mutating func parseRequest(_ p: UnsafeRawBufferPointer, into head: inout MessageHead) -> Result {
        if let early = findEnd(p, isRequest: true), case .invalid = early { return early }
        guard scanned >= 4, scanned <= p.count, p[scanned - 1] == 10, p[scanned - 2] == 13,
              p[scanned - 3] == 10, p[scanned - 4] == 13 else { return .incomplete }
        if scanned > maxHeadLength {
            return .invalid(HTTPParseError(431, "header block larger than \(maxHeadLength) bytes"))
        }
        head.reset()
        let end = scanned
        // Method.
        var i = 0
        while i < end, Self.isTokenChar(p[i]) { i += 1 }
        if i == 0 || p[i] != 0x20 { return .invalid(HTTPParseError(400, "malformed method in request line")) }
        head.method = ByteRange(0, i)
        i += 1
        let targetStart = i
        while i < end {
            let b = p[i]
            if b == 0x20 { break }
            if b <= 0x20 || b == 0x7f { return .invalid(HTTPParseError(400, "control character or space in request target")) }
            // A fragment never travels in a request (RFC 9110 §4.2.4); HAProxy 2.6 refuses it too.
            if b == 0x23 { return .invalid(HTTPParseError(400, "'#' (a fragment) in request target")) }
            i += 1
        }
        if i == targetStart || i >= end { return .invalid(HTTPParseError(400, "missing request target")) }
        head.target = ByteRange(targetStart, i)
        i += 1
        // "HTTP/1.x" CRLF
        guard i + 10 <= end, p[i] == 0x48, p[i + 1] == 0x54, p[i + 2] == 0x54, p[i + 3] == 0x50, p[i + 4] == 0x2f,
              p[i + 5] == 0x31, p[i + 6] == 0x2e, p[i + 7] >= 0x30, p[i + 7] <= 0x39, p[i + 8] == 13, p[i + 9] == 10 else {
            return .invalid(HTTPParseError(400, "malformed HTTP version in request line (only HTTP/1.x is served)"))
        }
        head.minorVersion = Int(p[i + 7] - 0x30)
        head.startLineEnd = i + 10
        if let e = parseHeaders(p, from: i + 10, end: end, into: &head, isRequest: true) { return .invalid(e) }
        head.length = end
        // Framing rules for requests.
        if head.hasTransferEncoding {
            if head.contentLength != nil { return .invalid(HTTPParseError(400, "both Content-Length and Transfer-Encoding")) }
            if head.minorVersion == 0 { return .invalid(HTTPParseError(400, "Transfer-Encoding in an HTTP/1.0 request")) }
            if !head.chunked { return .invalid(HTTPParseError(400, "Transfer-Encoding whose final coding is not chunked")) }
        }
        if head.minorVersion >= 1 && head.host == nil { return .invalid(HTTPParseError(400, "HTTP/1.1 request without Host")) }
        return .complete
    }

    /// Parses a response head at the start of `p`.
    public mutating func parseResponse(_ p: UnsafeRawBufferPointer, into head: inout MessageHead) -> Result {
        if let early = findEnd(p, isRequest: false), case .invalid = early { return early }
        guard scanned >= 4, scanned <= p.count, p[scanned - 1] == 10, p[scanned - 2] == 13,
              p[scanned - 3] == 10, p[scanned - 4] == 13 else { return .incomplete }
        head.reset()
        let end = scanned
        guard end >= 14, p[0] == 0x48, p[1] == 0x54, p[2] == 0x54, p[3] == 0x50, p[4] == 0x2f, p[5] == 0x31, p[6] == 0x2e,
              p[7] >= 0x30, p[7] <= 0x39, p[8] == 0x20 else {
            return .invalid(HTTPParseError(502, "malformed status line from server"))
        }
        head.minorVersion = Int(p[7] - 0x30)
        var status = 0
        for k in 9..<12 {
            let d = p[k]
            guard d >= 0x30 && d <= 0x39 else { return .invalid(HTTPParseError(502, "malformed status code from server")) }
            status = status * 10 + Int(d - 0x30)
        }
        guard status >= 100 else { return .invalid(HTTPParseError(502, "status code below 100 from server")) }
        head.status = status
        var i = 12
        if p[i] == 0x20 { i += 1 }
        let reasonStart = i
        while i < end, p[i] != 13 {
            if p[i] < 0x20 && p[i] != 9 { return .invalid(HTTPParseError(502, "control character in status line")) }
            i += 1
        }
        guard i + 1 < end, p[i + 1] == 10 else { return .invalid(HTTPParseError(502, "bare CR in status line")) }
        head.reasonPhrase = ByteRange(reasonStart, i)
        head.startLineEnd = i + 2
        if let e = parseHeaders(p, from: i + 2, end: end, into: &head, isRequest: false) {
            return .invalid(HTTPParseError(502, "invalid response header: \(e.reason)"))
        }
        head.length = end
        if head.hasTransferEncoding && head.contentLength != nil { head.contentLength = nil }
        return .complete
    }

    @inline(__always)
    public static func equalsLower(_ p: UnsafeRawBufferPointer, _ r: ByteRange, _ lower: StaticString) -> Bool {
        let n = lower.utf8CodeUnitCount
        guard r.count == n else { return false }
        let s = lower.utf8Start
        var k = 0
        let start = Int(r.start)
        while k < n {
            if p[start + k] | 0x20 != s[k] { return false }
            k += 1
        }
        return true
    }

    /// Parses header lines between `start` and the final CRLF at `end - 2`.
    func parseHeaders(_ p: UnsafeRawBufferPointer, from start: Int, end: Int, into head: inout MessageHead, isRequest: Bool) -> HTTPParseError? {
        var i = start
        let last = end - 2
        while i < last {
            let lineStart = i
            let c0 = p[i]
            if c0 == 0x20 || c0 == 9 { return HTTPParseError(400, "obsolete line folding in headers") }
            while i < last, Self.isTokenChar(p[i]) { i += 1 }
            let nameEnd = i
            if nameEnd == lineStart { return HTTPParseError(400, "malformed header name") }
            if p[i] != 0x3a {
                if p[i] == 0x20 || p[i] == 9 { return HTTPParseError(400, "whitespace between header name and colon") }
                return HTTPParseError(400, "invalid character in header name")
            }
            i += 1
            while i < last, p[i] == 0x20 || p[i] == 9 { i += 1 }
            let valueStart = i
            var valueEnd = i
            while i < end {
                let b = p[i]
                if b == 13 { break }
                if b < 0x20 && b != 9 || b == 0x7f { return HTTPParseError(400, b == 10 ? "bare LF in headers" : "control character in a header value") }
                i += 1
                if b != 0x20 && b != 9 { valueEnd = i }
            }
            guard i + 1 < end, p[i + 1] == 10 else { return HTTPParseError(400, "bare CR in headers") }
            i += 2
            if head.headers.count >= maxHeaders { return HTTPParseError(400, "more than \(maxHeaders) header lines") }
            let line = HeaderLine(name: ByteRange(lineStart, nameEnd), value: ByteRange(valueStart, valueEnd), line: ByteRange(lineStart, i))
            head.headers.append(line)
            if let e = interpret(p, line, &head, isRequest: isRequest) { return e }
        }
        return nil
    }

    /// Notes the headers that decide framing and connection handling.
    @inline(__always)
    func interpret(_ p: UnsafeRawBufferPointer, _ h: HeaderLine, _ head: inout MessageHead, isRequest: Bool) -> HTTPParseError? {
        let n = h.name
        switch n.count {
        case 4 where Self.equalsLower(p, n, "host"):
            if head.host != nil && isRequest { return HTTPParseError(400, "more than one Host header") }
            head.host = h.value
        case 7 where Self.equalsLower(p, n, "upgrade"):
            head.hasUpgradeHeader = true
        case 10 where Self.equalsLower(p, n, "connection"):
            forEachToken(p, h.value) { t in
                if Self.equalsLower(p, t, "close") { head.connectionClose = true }
                else if Self.equalsLower(p, t, "keep-alive") { head.connectionKeepAlive = true }
                else if Self.equalsLower(p, t, "upgrade") { head.connectionUpgrade = true }
            }
        case 14 where Self.equalsLower(p, n, "content-length"):
            var result: HTTPParseError?
            forEachToken(p, h.value) { t in
                guard result == nil else { return }
                var v: Int64 = 0
                if t.isEmpty { result = HTTPParseError(400, "empty Content-Length"); return }
                for k in Int(t.start)..<Int(t.end) {
                    let d = p[k]
                    guard d >= 0x30 && d <= 0x39, v < Int64.max / 10 - 10 else {
                        result = HTTPParseError(400, "invalid Content-Length"); return
                    }
                    v = v * 10 + Int64(d - 0x30)
                }
                if let existing = head.contentLength, existing != v {
                    result = HTTPParseError(400, "different Content-Length values"); return
                }
                head.contentLength = v
            }
            if let r = result { return r }
        case 17 where Self.equalsLower(p, n, "transfer-encoding"):
            head.hasTransferEncoding = true
            var lastIsChunked = false
            var chunkedSeen = false
            var bad = false
            forEachToken(p, h.value) { t in
                if Self.equalsLower(p, t, "chunked") {
                    if chunkedSeen { bad = true }
                    chunkedSeen = true
                    lastIsChunked = true
                } else {
                    lastIsChunked = false
                }
            }
            if bad { return HTTPParseError(400, "chunked applied twice") }
            head.chunked = lastIsChunked
        default:
            break
        }
        return nil
    }

    /// Calls `body` with each comma-separated token of a value, blanks trimmed.
    @inline(__always)
    func forEachToken(_ p: UnsafeRawBufferPointer, _ r: ByteRange, _ body: (ByteRange) -> Void) {
        var i = Int(r.start)
        let end = Int(r.end)
        while i <= end {
            while i < end, p[i] == 0x20 || p[i] == 9 { i += 1 }
            let s = i
            while i < end, p[i] != 0x2c { i += 1 }
            var e = i
            while e > s, p[e - 1] == 0x20 || p[e - 1] == 9 { e -= 1 }
            if e > s || i < end { body(ByteRange(s, e)) }
            i += 1
        }
    }
}

extension MessageHead {
    /// Decides how the request body is delimited.
    public var requestFraming: BodyFraming {
        if chunked { return .chunked }
        if let n = contentLength, n > 0 { return .contentLength(n) }
        return .none
    }

    /// Decides how the response body is delimited, given the request method.
    public func responseFraming(requestWasHEAD: Bool) -> BodyFraming {
        if requestWasHEAD || status == 204 || status == 304 || (status >= 100 && status < 200) { return .none }
        if chunked { return .chunked }
        if let n = contentLength { return n > 0 ? .contentLength(n) : .none }
        return .untilClose
    }
}
