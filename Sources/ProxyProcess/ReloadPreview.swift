import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// `proxy -c -V [-x SOCKET]`: which rules read runtime variables (`var(proc.NAME)`), and,
/// asked of the running process through its stats socket, what a reload with this file
/// would keep of its runtime changes and what the file would override, item by item.
enum ReloadPreview {
    /// `FILE:LINE: RULE reads proc.NAME` for each rule whose condition reads a process variable.
    static func runtimeVariableRules(_ configuration: Configuration) -> [String] {
        func names(_ c: Condition?) -> [String] {
            guard let c else { return [] }
            var out: [String] = []
            for acl in c.acls {
                for term in acl.terms {
                    if case .variable(.proc, let name, _) = term.expression.fetch, !out.contains(name) { out.append(name) }
                }
            }
            return out
        }
        var lines: [String] = []
        func add(_ location: SourceLocation, _ what: String, _ c: Condition?) {
            let vars = names(c)
            if !vars.isEmpty { lines.append("\(location): \(what) reads \(vars.map { "proc." + $0 }.joined(separator: ", ")) at run time") }
        }
        for p in configuration.proxies {
            for r in p.useBackendRules { add(r.location, "use_backend \(r.backend)", r.condition) }
            for r in p.httpRequestRules { add(r.location, r.summary, r.condition) }
            for r in p.httpResponseRules { add(r.location, r.summary, r.condition) }
            for r in p.tcpRequestRules { add(r.location, r.summary, r.condition) }
        }
        return lines
    }

    /// Asks the process behind `socket` for its runtime state (waiting at most 100 ms to
    /// reach it) and says what a reload with `configuration` would do with each item.
    static func describe(_ configuration: Configuration, socket: String) -> [String] {
        let answer: String
        do {
            answer = try CLIClient.exchange("show runtime-state", socket: socket, timeoutMilliseconds: 100)
        } catch {
            return ["runtime state: cannot reach the running process at \(socket) within 100 ms (\(error)); nothing to compare"]
        }
        guard !answer.hasPrefix("Permission denied"), !answer.hasPrefix("Unknown command") else {
            return ["runtime state: \(socket) answered '\(answer.split(separator: "\n").first ?? "")'; it needs operator level and a proxy of this version"]
        }
        let lines = answer.split(separator: "\n").map(String.init)
        guard let model = try? RuntimeModel(configuration: configuration) else {
            return ["runtime state: cannot build the new configuration's model to compare"]
        }
        let result = RuntimeState.apply(lines, to: model)
        var out = ["runtime state of the process at \(socket): a reload with this file keeps \(result.kept) change\(result.kept == 1 ? "" : "s"), the file overrides \(result.overridden.count)"]
        out += result.keptItems.map { "  keeps: \($0)" }
        out += result.overridden.map { "  file wins: \($0)" }
        return out
    }
}
