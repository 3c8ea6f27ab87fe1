import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// The values one access-log line may print, taken from a finished HTTP transaction or TCP
/// stream when it is logged (so nothing in it points into a buffer).
struct LogRecord {
    var client: (ip: IPAddress, port: Int)?
    var frontendAddress: (ip: IPAddress, port: Int)?
    var serverAddress: (ip: IPAddress, port: Int)?
    var backendSource: (ip: IPAddress, port: Int)?
    unowned(unsafe) var frontend: Frontend
    var overTLS = false
    var backendName: String
    var serverName: String
    var accepted: (seconds: Int, microseconds: Int)
    var requestStart: (seconds: Int, microseconds: Int)?
    /// Timers in milliseconds, as HAProxy's: -1 when the step never happened.
    var handshake: Int64 = 0, idle: Int64 = 0, request: Int64 = -1, queue: Int64 = -1, connect: Int64 = -1
    var response: Int64 = -1, active: Int64 = 0, total: Int64 = 0
    /// `option logasap`: the line goes before the end, totals get a '+'.
    var early = false
    var status: Int = 0
    var bytesOut = 0, bytesIn = 0
    var termination = "--"
    var cookieState = "--"
    var activeConnections = 0, frontendConnections = 0, backendConnections = 0, serverConnections = 0
    var retries = 0, serverQueue = 0, backendQueue = 0
    /// A retry went to another server (`option redispatch`): `%rc` reads `+N`, as HAProxy's.
    var redispatched = false
    /// The request line, without CRLF; nil when no request was read.
    var requestLine: String?
    var tls: TLSTransport?
    /// The frontend's request capture slots (`%hr`, `%hrl`): empty when it declares none.
    var requestCaptures: [[UInt8]?] = []
    var isHTTP: Bool
    unowned(unsafe) var model: RuntimeModel
}

/// A compiled log-format string: literal text, separators, `%` variables and `%[fetch,conv]`
/// samples. Access-log lines, header values, bodies and redirects all use it.
struct LogFormat {
    let nodes: [LogFormatNode]
    /// True when the text has no `%` parts (the common case: a constant header value).
    let isConstant: Bool
    /// Whether a variable reads the request line, which is then kept for the log.
    let readsRequestLine: Bool
    /// Whether a variable needs the address the server connection left from (`%bi`, `%bp`).
    let readsBackendSource: Bool
    /// An access-log line prints "-" for a value that is absent; a header value, a body or
    /// a redirect prints nothing there, as HAProxy does.
    let dashWhenAbsent: Bool

    /// Compiles `text`, which the loader checked; separators only in access-log lines.
    init(_ text: String, separators: Bool = false) {
        let parsed = (try? LogFormatText.parse(text, separators: separators)) ?? [.literal(Array(text.utf8))]
        nodes = parsed
        dashWhenAbsent = separators
        isConstant = parsed.allSatisfy { if case .literal = $0 { return true } else { return false } }
        var line = false, source = false
        for case .variable(let v, _) in parsed {
            if v.readsRequestLine { line = true }
            if v == .backendSourceIP || v == .backendSourcePort { source = true }
        }
        for case .sample(let e, _) in parsed where e.fetch == .method { line = true }
        readsRequestLine = line
        readsBackendSource = source
    }

    /// The constant value, when `isConstant`.
    var constant: [UInt8] {
        nodes.flatMap { if case .literal(let l) = $0 { return l } else { return [] } }
    }

    /// Renders the format with no request: literals and load-time or process fetches
    /// (`global set-var-fmt`); a variable that needs a connection renders empty.
    func renderConstant(model: RuntimeModel) -> [UInt8] {
        var out: [UInt8] = []
        for n in nodes {
            switch n {
            case .literal(let l): out += l
            case .separator: out.append(0x20)
            case .sample(let e, _):
                _ = ProcessSamples.visit(e.fetch, model: model, backend: nil) { raw in
                    guard let (v, fold) = e.convert(raw) else { return false }
                    out += SampleValue(v, fold: fold).text
                    return true
                }
            case .variable: break
            }
        }
        return out
    }

    /// Renders the format in one phase of a transaction (header values, bodies, redirects).
    func render(_ samples: HTTPSamples) -> [UInt8] {
        let record: LogRecord? = nodes.contains { if case .variable = $0 { return true } else { return false } }
            ? samples.session.logRecord(early: false) : nil
        return render(record, samples)
    }

    /// Renders one line from `record` (nil: variables print "-") and `samples` for `%[...]`.
    func render(_ record: LogRecord?, _ samples: some SampleContext) -> [UInt8] {
        render(samples) { v, flags, w in
            if let r = record { w.variable(v, flags, r) } else { w.text(nil as [UInt8]?, flags) }
        }
    }

    /// Renders the text: `samples` answer `%[...]`, `variable` writes each `%` variable.
    @inline(__always)
    func render(_ samples: some SampleContext, variable: (LogVariable, LogFlags, inout LogLineWriter) -> Void) -> [UInt8] {
        var w = LogLineWriter()
        w.dashWhenAbsent = dashWhenAbsent
        for n in nodes {
            switch n {
            case .literal(let l):
                w.out += l
                w.lastWasSpace = false
            case .separator:
                if !w.lastWasSpace { w.out.append(0x20); w.lastWasSpace = true }
            case .sample(let e, let flags):
                var value: SampleValue?
                _ = samples.visitSamples(of: e.fetch) { raw in
                    guard let (v, fold) = e.convert(raw) else { return false }
                    value = SampleValue(v, fold: fold)
                    return true
                }
                w.text(value.map(\.text), flags)
            case .variable(let v, let flags):
                variable(v, flags, &w)
            }
        }
        return w.out
    }
}

/// Writes one log line's fields, as HAProxy prints them.
struct LogLineWriter {
    var out: [UInt8] = []
    /// After a separator, or after a field that printed nothing: the next separator is skipped.
    var lastWasSpace = true
    var dashWhenAbsent = true

    init() { out.reserveCapacity(256) }

    /// A string field: "-" when absent (`""` when quoted), `E` escaping `"`, `\` and `]`. A NUL
    /// byte ends the text, as in HAProxy (a server's answer in a check's info, say).
    mutating func text<S: Sequence>(_ bytes: S?, _ flags: LogFlags) where S.Element == UInt8 {
        if flags.contains(.quote) { out.append(0x22) }
        if let bytes {
            var any = false
            for b in bytes {
                if b == 0 { break }
                any = true
                if flags.contains(.escape), b == 0x22 || b == 0x5c || b == 0x5d { out.append(0x5c) }
                out.append(b)
            }
            if !any && !flags.contains(.quote) && dashWhenAbsent { out.append(0x2d) }
        } else if !flags.contains(.quote) && dashWhenAbsent {
            out.append(0x2d)
        }
        if flags.contains(.quote) { out.append(0x22) }
        lastWasSpace = false
    }

    mutating func text(_ s: String?, _ flags: LogFlags) { text(s.map { Array($0.utf8) }, flags) }

    /// Request-line text: bytes a terminal or a log parser would misread become `#XX`.
    mutating func encoded(_ s: Substring.UTF8View?, _ flags: LogFlags) {
        if flags.contains(.quote) { out.append(0x22) }
        let hex = Array("0123456789ABCDEF".utf8)
        for b in s ?? "<BADREQ>".utf8[...] {
            if b < 0x20 || b >= 0x7f || b == 0x22 || b == 0x23 {
                out += [0x23, hex[Int(b >> 4)], hex[Int(b & 15)]]
            } else {
                out.append(b)
            }
        }
        if flags.contains(.quote) { out.append(0x22) }
        lastWasSpace = false
    }

    /// A captured value: `{`, `|`, `}`, `"`, `#` and bytes a terminal would misread as `#XX`.
    mutating func captureText(_ c: [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        for b in c {
            if b < 0x20 || b >= 0x7f || b == 0x7b || b == 0x7c || b == 0x7d || b == 0x22 || b == 0x23 {
                out += [0x23, hex[Int(b >> 4)], hex[Int(b & 15)]]
            } else {
                out.append(b)
            }
        }
    }

    mutating func number(_ n: Int64, plus: Bool = false) {
        if plus { out.append(0x2b) }
        out += Array(String(n).utf8)
        lastWasSpace = false
    }

    mutating func hex(_ n: UInt64, width: Int) {
        var s = String(n, radix: 16, uppercase: true)
        if s.count < width { s = String(repeating: "0", count: width - s.count) + s }
        out += Array(s.utf8)
        lastWasSpace = false
    }

    mutating func ip(_ a: IPAddress?, _ flags: LogFlags) {
        guard let a else { text(nil as [UInt8]?, flags); return }
        if flags.contains(.hex) {
            if a.isV4 { hex(UInt64(a.v4Value), width: 8) } else { for b in a.bytes16 { hex(UInt64(b), width: 2) } }
        } else {
            text(a.description, flags)
        }
    }

    mutating func port(_ p: Int?, _ flags: LogFlags) {
        guard let p else { text(nil as [UInt8]?, flags); return }
        if flags.contains(.hex) { hex(UInt64(p), width: 4) } else { number(Int64(p)) }
    }

    mutating func raw(_ s: String) {
        out += Array(s.utf8)
        lastWasSpace = false
    }

    mutating func variable(_ v: LogVariable, _ flags: LogFlags, _ r: LogRecord) {
        switch v {
        case .bytesRead: number(Int64(r.bytesOut), plus: r.early)
        case .bytesUploaded: number(Int64(r.bytesIn))
        case .requestCookie, .responseCookie: text(nil as [UInt8]?, flags)
        case .hostname: text(r.model.logger.hostname, flags)
        case .uniqueID: text(nil as [UInt8]?, flags)
        case .status: number(Int64(r.status))
        case .gmtDate: raw(LogDates.gmt(r.accepted.seconds))
        case .localDate: raw(LogDates.local(r.accepted.seconds))
        case .date: raw(Logger.acceptDate(seconds: r.accepted.seconds, microseconds: r.accepted.microseconds))
        case .requestDate:
            let t = r.requestStart ?? r.accepted
            raw(Logger.acceptDate(seconds: t.seconds, microseconds: t.microseconds))
        case .requestDateGMT: raw(LogDates.gmt((r.requestStart ?? r.accepted).seconds))
        case .requestDateLocal: raw(LogDates.local((r.requestStart ?? r.accepted).seconds))
        case .timestamp:
            if flags.contains(.hex) { hex(UInt64(r.accepted.seconds), width: 8) } else { number(Int64(r.accepted.seconds)) }
        case .milliseconds:
            let ms = r.accepted.microseconds / 1000
            if flags.contains(.hex) { hex(UInt64(ms), width: 2) } else { raw(ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)") }
        case .handshakeTime: number(r.handshake)
        case .idleTime: number(r.idle)
        case .requestTime: number(r.request)
        case .requestTotalTime: number(r.request >= 0 ? r.handshake + r.idle + r.request : -1)
        case .queueTime: number(r.queue)
        case .connectTime: number(r.connect)
        case .responseTime: number(r.response)
        case .activeTime: number(r.active, plus: r.early)
        case .totalTime: number(r.total, plus: r.early)
        case .userTime: number(r.total - r.idle, plus: r.early)
        case .dataTime:
            let before = [r.request, r.queue, r.connect, r.response]
            number(before.allSatisfy { $0 >= 0 } ? r.total - r.handshake - r.idle - before.reduce(0, +) : -1)
        case .activeConnections: number(Int64(r.activeConnections))
        case .frontendConnections: number(Int64(r.frontendConnections))
        case .backendConnections: number(Int64(r.backendConnections))
        case .serverConnections: number(Int64(r.serverConnections))
        case .retries: number(Int64(r.retries), plus: r.redispatched)
        case .serverQueue: number(Int64(r.serverQueue))
        case .backendQueue: number(Int64(r.backendQueue))
        case .backend: text(r.backendName, flags)
        case .server: text(r.serverName, flags)
        case .frontend: text(r.frontend.name, flags)
        case .frontendTransport: text(r.overTLS ? r.frontend.name + "~" : r.frontend.name, flags)
        case .clientIP: ip(r.client?.ip, flags)
        case .clientPort: port(r.client?.port, flags)
        case .frontendIP: ip(r.frontendAddress?.ip, flags)
        case .frontendPort: port(r.frontendAddress?.port, flags)
        case .serverIP: ip(r.serverAddress?.ip, flags)
        case .serverPort: port(r.serverAddress?.port, flags)
        case .backendSourceIP: ip(r.backendSource?.ip, flags)
        case .backendSourcePort: port(r.backendSource?.port, flags)
        case .logCounter:
            let n = r.frontend.logCount.wrappingAdd(1, ordering: .relaxed).oldValue
            if flags.contains(.hex) { hex(UInt64(n), width: 4) } else { number(Int64(n)) }
        case .requestCounter:
            let n = r.model.requestCount.wrappingAdd(1, ordering: .relaxed).oldValue
            if flags.contains(.hex) { hex(UInt64(n), width: 4) } else { number(Int64(n)) }
        case .pid:
            if flags.contains(.hex) { hex(UInt64(ProcessCalls.pid), width: 4) } else { number(Int64(ProcessCalls.pid)) }
        case .requestHeaders:
            guard !r.requestCaptures.isEmpty else { break }
            if flags.contains(.quote) { out.append(0x22) }
            out.append(0x7b)
            for (i, c) in r.requestCaptures.enumerated() {
                if i > 0 { out.append(0x7c) }
                if let c { captureText(c) }
            }
            out.append(0x7d)
            if flags.contains(.quote) { out.append(0x22) }
            lastWasSpace = false
        case .requestHeaderList:
            for (i, c) in r.requestCaptures.enumerated() {
                if i > 0 { out.append(0x20) }
                if flags.contains(.quote) { out.append(0x22) }
                if let c { captureText(c) } else if !flags.contains(.quote) { out.append(0x2d) }
                if flags.contains(.quote) { out.append(0x22) }
                lastWasSpace = false
            }
        case .responseHeaders, .responseHeaderList:
            // No response capture slots (`capture response header` is not built): HAProxy
            // prints nothing here either when a frontend declares none.
            break
        case .termination: raw(r.termination)
        case .terminationCookie: raw(r.termination + r.cookieState)
        case .tlsCipher: text(r.tls.flatMap { $0.established ? Array($0.cipherText) : nil }, flags)
        case .tlsVersion: text(r.tls.flatMap { $0.established ? Array($0.protocolText) : nil }, flags)
        case .requestLine: encoded(r.requestLine?.utf8[...], flags)
        case .method, .uriPath, .pathOnly, .query, .uri, .httpVersion:
            encoded(RequestLineParts(r.requestLine).part(v), flags)
        }
    }
}

/// The parts of a logged request line that `%HM`, `%HU`, `%HP`, `%HPO`, `%HQ`, `%HV` print.
struct RequestLineParts {
    let method: Substring?
    let target: Substring?
    let version: Substring?

    init(_ line: String?) {
        guard let line else { method = nil; target = nil; version = nil; return }
        let words = line.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
        method = words.count >= 2 ? words[0] : nil
        target = words.count >= 2 ? words[1] : nil
        version = words.count >= 2 ? (words.count == 3 ? words[2] : "HTTP/0.9") : nil
    }

    func part(_ v: LogVariable) -> Substring.UTF8View? {
        switch v {
        case .method: return method?.utf8
        case .httpVersion: return version?.utf8
        case .uri: return target?.utf8
        case .uriPath: return target.map { $0.prefix { $0 != "?" } }?.utf8
        case .query: return target.map { t in t.firstIndex(of: "?").map { t[$0...] } ?? "" }?.utf8
        case .pathOnly:
            guard var t = target else { return nil }
            // An absolute target (`http://host/p`): the path starts after the authority.
            if !t.hasPrefix("/"), let colon = t.firstIndex(of: ":"), t[colon...].hasPrefix("://") {
                let authority = t[t.index(colon, offsetBy: 3)...]
                t = authority.firstIndex(of: "/").map { authority[$0...] } ?? "/"
            }
            return t.prefix { $0 != "?" }.utf8
        default: return nil
        }
    }
}

/// Dates as `%T`, `%Tl`, `%trg` and `%trl` print them: `30/Nov/2026:06:47:37 +0000`.
enum LogDates {
    static func gmt(_ seconds: Int) -> String { format(seconds, local: false) }
    static func local(_ seconds: Int) -> String { format(seconds, local: true) }

    static func format(_ seconds: Int, local: Bool) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        if local { localtime_r(&t, &tm) } else { gmtime_r(&t, &tm) }
        let offset = local ? Int(tm.tm_gmtoff) : 0
        let o = abs(offset)
        let zone = (offset < 0 ? "-" : "+") + two(Int32(o / 3600)) + two(Int32(o / 60 % 60))
        return "\(two(tm.tm_mday))/\(Logger.months[Int(tm.tm_mon)])/\(tm.tm_year + 1900):\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) \(zone)"
    }
}
