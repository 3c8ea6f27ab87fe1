import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// The fetches of a request, read straight from the session's buffer: no copies.
struct RequestSamples: SampleContext {
    unowned(unsafe) let session: HTTPSession

    @inline(__always) var bytes: UnsafeRawBufferPointer { session.requestBytes }
    @inline(__always) var head: MessageHead { session.request }

    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        switch fetch {
        case .path:
            let r = session.pathRange
            return visit(.bytes(UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)])))
        case .url:
            let r = head.target
            return visit(.bytes(UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)])))
        case .method:
            let r = head.method
            return visit(.bytes(UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)])))
        case .requestVersion:
            return (head.minorVersion == 0 ? "1.0" : "1.1").utf8.withContiguousStorageIfAvailable { visit(.bytes(UnsafeRawBufferPointer($0))) } ?? false
        case .header(let name, let occurrence):
            return visitHeader(name, occurrence: occurrence, split: true, visit)
        case .fullHeader(let name, let occurrence):
            return visitHeader(name, occurrence: occurrence, split: false, visit)
        case .headerCount(let name):
            var n = 0
            for h in head.headers where name == nil || equalsName(h.name, name!) { n += 1 }
            return visit(.integer(Int64(n)))
        case .cookie(let name):
            return visitCookie(name, visit)
        case .urlParameter(let name, let delimiter):
            return visitURLParameter(name, delimiter: delimiter ?? UInt8(ascii: "&"), visit)
        case .source:
            return visit(.ip(session.clientIP))
        case .sourcePort:
            return visit(.integer(Int64(session.clientAddress.port)))
        case .destination:
            return visit(.ip(session.localIP))
        case .destinationPort:
            return visit(.integer(Int64(session.localAddress.port)))
        case .requestLength:
            return visit(.integer(Int64(session.bufferedRequestBytes)))
        case .contentLength:
            guard let n = head.contentLength else { return false }
            return visit(.integer(n))
        case .isHTTP:
            return visit(.boolean(true))
        case .backendUsableServers(let name):
            let backend = name.flatMap { session.context.model.backends[$0] } ?? session.backend
            guard let b = backend else { return visit(.integer(0)) }
            return visit(.integer(Int64(b.usableServerCount)))
        case .serverIsUp(let b, let s):
            guard let server = session.context.model.backends[b]?.servers.first(where: { $0.name == s }) else { return false }
            return visit(.boolean(server.isUsable))
        case .stopping:
            return visit(.boolean(session.context.model.stopping.load(ordering: .relaxed)))
        case .variable(let scope, let name):
            guard let v = session.variable(scope, name) else { return false }
            return Array(v.utf8).withUnsafeBytes { visit(.bytes($0)) }
        case .env(let name):
            guard let v = getenv(name) else { return false }
            return visit(.bytes(UnsafeRawBufferPointer(start: v, count: strlen(v))))
        case .envInteger(let name):
            return visit(.integer(AtolReading(getenv(name).map { String(cString: $0) } ?? "").value))
        case .constantBool(let b):
            return visit(.boolean(b))
        case .constantInt(let i):
            return visit(.integer(i))
        }
    }

    @inline(__always) func equalsName(_ r: ByteRange, _ lowerName: String) -> Bool {
        let p = bytes
        guard r.count == lowerName.utf8.count else { return false }
        var i = Int(r.start)
        for c in lowerName.utf8 {
            var b = p[i]
            if b >= 0x41 && b <= 0x5a { b |= 0x20 }
            if b != c { return false }
            i += 1
        }
        return true
    }

    func visitHeader(_ name: String, occurrence: Int?, split: Bool, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        var values: [ByteRange] = []
        let wantAll = occurrence == nil
        for h in head.headers where equalsName(h.name, name) {
            if split {
                var i = Int(h.value.start)
                let end = Int(h.value.end)
                while i <= end {
                    while i < end, p[i] == 0x20 || p[i] == 9 { i += 1 }
                    let s = i
                    var inQuote = false
                    while i < end, inQuote || p[i] != 0x2c { if p[i] == 0x22 { inQuote.toggle() }; i += 1 }
                    var e = i
                    while e > s, p[e - 1] == 0x20 || p[e - 1] == 9 { e -= 1 }
                    let r = ByteRange(s, e)
                    if wantAll {
                        if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[s..<e]))) { return true }
                    } else {
                        values.append(r)
                    }
                    i += 1
                }
            } else if wantAll {
                if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[Int(h.value.start)..<Int(h.value.end)]))) { return true }
            } else {
                values.append(h.value)
            }
        }
        guard let occ = occurrence, !values.isEmpty else { return false }
        let index = occ > 0 ? occ - 1 : values.count + occ
        guard index >= 0 && index < values.count else { return false }
        let r = values[index]
        return visit(.bytes(UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)])))
    }

    func visitCookie(_ name: String, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        let n = Array(name.utf8)
        for h in head.headers where equalsName(h.name, "cookie") {
            var i = Int(h.value.start)
            let end = Int(h.value.end)
            while i < end {
                while i < end, p[i] == 0x20 || p[i] == 0x3b { i += 1 }
                let ks = i
                while i < end, p[i] != 0x3d, p[i] != 0x3b { i += 1 }
                let ke = i
                var vs = i, ve = i
                if i < end, p[i] == 0x3d {
                    i += 1
                    vs = i
                    while i < end, p[i] != 0x3b { i += 1 }
                    ve = i
                    while ve > vs, p[ve - 1] == 0x20 { ve -= 1 }
                }
                if ke - ks == n.count, (0..<n.count).allSatisfy({ p[ks + $0] == n[$0] }) {
                    if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[vs..<ve]))) { return true }
                }
            }
        }
        return false
    }

    func visitURLParameter(_ name: String, delimiter: UInt8, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        let t = head.target
        var i = Int(t.start)
        let end = Int(t.end)
        while i < end, p[i] != 0x3f { i += 1 }
        guard i < end else { return false }
        i += 1
        let n = Array(name.utf8)
        while i < end {
            let ks = i
            while i < end, p[i] != 0x3d, p[i] != delimiter, p[i] != 0x23 { i += 1 }
            let ke = i
            var vs = i, ve = i
            if i < end, p[i] == 0x3d {
                i += 1
                vs = i
                while i < end, p[i] != delimiter, p[i] != 0x23 { i += 1 }
                ve = i
            }
            if ke - ks == n.count, (0..<n.count).allSatisfy({ p[ks + $0] == n[$0] }) {
                if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[vs..<ve]))) { return true }
            }
            if i < end, p[i] == 0x23 { return false }
            i += 1
        }
        return false
    }
}

/// A compiled log-format string: literal text, `%[fetch,conv]` samples and `%xx` aliases.
struct LogFormat {
    enum Segment {
        case literal([UInt8])
        case sample(SampleExpression)
        case alias(String)
    }
    let segments: [Segment]
    /// True when the text has no `%` parts (the common case: a constant header value).
    let isConstant: Bool

    init(_ text: String) {
        var segs: [Segment] = []
        var literal: [UInt8] = []
        let b = Array(text.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%"), i + 1 < b.count {
                if b[i + 1] == UInt8(ascii: "%") { literal.append(b[i]); i += 2; continue }
                var j = i + 1
                if b[j] == UInt8(ascii: "{") { while j < b.count, b[j] != UInt8(ascii: "}") { j += 1 }; j += 1 }
                if j < b.count, b[j] == UInt8(ascii: "[") {
                    var k = j + 1
                    var depth = 0
                    while k < b.count, !(b[k] == UInt8(ascii: "]") && depth == 0) {
                        if b[k] == UInt8(ascii: "(") { depth += 1 }
                        if b[k] == UInt8(ascii: ")") { depth -= 1 }
                        k += 1
                    }
                    if let e = try? SampleExpression.parse(String(decoding: b[(j + 1)..<min(k, b.count)], as: UTF8.self)) {
                        if !literal.isEmpty { segs.append(.literal(literal)); literal = [] }
                        segs.append(.sample(e))
                    }
                    i = k + 1
                    continue
                }
                var k = j
                while k < b.count, (b[k] | 0x20) >= 0x61, (b[k] | 0x20) <= 0x7a { k += 1 }
                if !literal.isEmpty { segs.append(.literal(literal)); literal = [] }
                segs.append(.alias(String(decoding: b[j..<k], as: UTF8.self)))
                i = k
                continue
            }
            literal.append(b[i])
            i += 1
        }
        if !literal.isEmpty { segs.append(.literal(literal)) }
        segments = segs
        isConstant = segs.allSatisfy { if case .literal = $0 { return true } else { return false } }
    }

    /// The constant value, when `isConstant`.
    var constant: [UInt8] {
        segments.flatMap { if case .literal(let l) = $0 { return l } else { return [] } }
    }

    /// Renders the format for a request.
    func render(_ samples: RequestSamples) -> [UInt8] {
        var out: [UInt8] = []
        for s in segments {
            switch s {
            case .literal(let l): out += l
            case .sample(let e):
                _ = samples.visitSamples(of: e.fetch) { raw in
                    let (v, fold) = e.convert(raw)
                    switch v {
                    case .bytes(let p):
                        for c in p {
                            switch fold {
                            case .lower: out.append(c >= 0x41 && c <= 0x5a ? c | 0x20 : c)
                            case .upper: out.append(c >= 0x61 && c <= 0x7a ? c & ~0x20 : c)
                            case .none: out.append(c)
                            }
                        }
                    case .integer(let n): out += Array(String(n).utf8)
                    case .boolean(let b): out.append(b ? 0x31 : 0x30)
                    case .ip(let a): out += Array(a.description.utf8)
                    }
                    return true
                }
            case .alias(let name):
                let s = samples.session
                switch name {
                case "ci": out += Array(s.clientIP.description.utf8)
                case "cp": out += Array(String(s.clientAddress.port).utf8)
                case "fi": out += Array(s.localIP.description.utf8)
                case "fp": out += Array(String(s.localAddress.port).utf8)
                case "ft", "f": out += Array(s.frontend.name.utf8)
                case "b": out += Array((s.backend?.name ?? "<NOSRV>").utf8)
                case "pid": out += Array(String(getpid()).utf8)
                case "H": out += Array(s.context.model.logger.hostname.utf8)
                default: break
                }
            }
        }
        return out
    }
}
