import ProxyConfig
import ProxyEngine
import ProxySystem

/// `show errors [iid|proxy] [request|response]`: the last refused request per frontend and
/// response per backend, in HAProxy's layout, with the reason our parser gave instead of a
/// byte position, and the capture escaped line by line, long lines wrapped with `+`.
extension RuntimeCommands {
    func showErrors(_ words: [String]) -> String {
        var args = Array(words.dropFirst(2))
        var kind: Bool?  // true: requests only, false: responses only
        if let last = args.last, last == "request" || last == "response" {
            kind = last == "request"
            args.removeLast()
        }
        var proxy: String?
        if let first = args.first, first != "-1" {
            if let id = Int(first) {
                guard let name = proxyIDs.first(where: { $0.id == id })?.name else { return "No such proxy.\n\n" }
                proxy = name
            } else {
                guard proxyIDs.contains(where: { $0.name == first }) else { return "No such proxy.\n\n" }
                proxy = first
            }
        }
        let ids = Dictionary(proxyIDs.map { ($0.name, $0.id) }, uniquingKeysWith: { a, _ in a })
        let now = Clock.wallClock()
        let (events, captures) = engine.model.errors.all()
        var text = "Total events captured on [\(Logger.acceptDate(seconds: now.seconds, microseconds: now.microseconds))] : \(events)\n"
        for c in captures {
            if let kind, kind != c.isRequest { continue }
            let owner = c.isRequest ? c.frontend : c.backend ?? c.frontend
            if let proxy, proxy != owner { continue }
            func id(_ name: String?) -> String { name.flatMap { ids[$0] }.map(String.init) ?? "-1" }
            text += " \n[\(Logger.acceptDate(seconds: c.date.seconds, microseconds: c.date.microseconds))] "
            if c.isRequest {
                text += "frontend \(c.frontend) (#\(id(c.frontend))): invalid request\n"
                text += "  backend \(c.backend ?? "<NONE>") (#\(id(c.backend))), "
            } else {
                text += "backend \(owner) (#\(id(owner))): invalid response\n"
                text += "  frontend \(c.frontend) (#\(id(c.frontend))), "
            }
            text += "server \(c.server ?? "<NONE>") (#-1), event #\(c.event), src \(c.source)\n"
            text += "  reason: \(c.reason)\n  len \(c.bytes.count)\n  \n"
            text += Self.hexText(c.bytes)
        }
        return text + "\n"
    }

    /// The capture as `  OFFSET  text` lines: one per line of the message, control bytes
    /// escaped, and a line longer than 64 columns continued on `  OFFSET+ ` lines.
    static func hexText(_ bytes: [UInt8]) -> String {
        var out = ""
        var line = ""
        var lineStart = 0
        var continued = false
        func emit(next: Int) {
            let offset = String(lineStart)
            out += "  " + String(repeating: "0", count: max(0, 5 - offset.count)) + offset + (continued ? "+ " : "  ") + line + "\n"
            line = ""
            lineStart = next
        }
        for (i, b) in bytes.enumerated() {
            switch b {
            case 0x0d: line += "\\r"
            case 0x0a: line += "\\n"
            case 0x09: line += "\\t"
            case 0x5c: line += "\\\\"
            case 0x20...0x7e: line += String(UnicodeScalar(b))
            default: line += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
            }
            if b == 0x0a {
                emit(next: i + 1)
                continued = false
            } else if line.count >= 64 {
                emit(next: i + 1)
                continued = true
            }
        }
        if !line.isEmpty { emit(next: bytes.count) }
        return out
    }
}
