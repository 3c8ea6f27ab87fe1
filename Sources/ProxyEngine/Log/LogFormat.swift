import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

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

    /// Renders the format with no request: literals and load-time or process fetches
    /// (`global set-var-fmt`); an alias that needs a connection renders empty.
    func renderConstant(model: RuntimeModel) -> [UInt8] {
        var out: [UInt8] = []
        for s in segments {
            switch s {
            case .literal(let l): out += l
            case .sample(let e):
                _ = ProcessSamples.visit(e.fetch, model: model, backend: nil) { raw in
                    guard let (v, fold) = e.convert(raw) else { return false }
                    out += SampleValue(v, fold: fold).text
                    return true
                }
            case .alias: break
            }
        }
        return out
    }

    /// Renders the format in one phase of a transaction.
    func render(_ samples: HTTPSamples) -> [UInt8] {
        var out: [UInt8] = []
        for s in segments {
            switch s {
            case .literal(let l): out += l
            case .sample(let e):
                _ = samples.visitSamples(of: e.fetch) { raw in
                    guard let (v, fold) = e.convert(raw) else { return false }
                    out += SampleValue(v, fold: fold).text
                    return true
                }
            case .alias(let name):
                // LogFormatVariables.supported lists these; the loader refuses any other.
                let s = samples.session
                switch name {
                case "ci": out += Array(s.clientIP.description.utf8)
                case "cp": out += Array(String(s.clientPort).utf8)
                case "fi": out += Array(s.localIP.description.utf8)
                case "fp": out += Array(String(s.local.port).utf8)
                case "ft", "f": out += Array(s.frontend.name.utf8)
                case "b": out += Array((s.backend?.name ?? "<NOSRV>").utf8)
                case "s": out += Array((s.triedServer?.name ?? "<NOSRV>").utf8)
                case "pid": out += Array(String(ProcessCalls.pid).utf8)
                case "H": out += Array(s.context.model.logger.hostname.utf8)
                case "Ts": out += Array(String(Clock.wallClock().seconds).utf8)
                default: break
                }
            }
        }
        return out
    }
}
