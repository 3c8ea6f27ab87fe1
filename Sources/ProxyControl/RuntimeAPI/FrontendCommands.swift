import ProxyConfig
import ProxyEngine
import ProxySystem

/// `set maxconn frontend|global`, `disable frontend` and `enable frontend`: HAProxy's
/// answers, but a value that is not a number is refused instead of read as 0.
extension RuntimeCommands {
    /// A frontend by name or `#ID`.
    func frontend(_ word: String?) -> Frontend? {
        guard let word else { return nil }
        if word.hasPrefix("#"), let id = Int(word.dropFirst()) {
            guard let name = proxyIDs.first(where: { $0.id == id })?.name else { return nil }
            return engine.model.frontends.first { $0.name == name }
        }
        return engine.model.frontends.first { $0.name == word }
    }

    func setMaxconnFrontend(_ words: [String]) -> String {
        guard words.count > 3 else { return "Frontend name expected.\n\n" }
        guard let f = frontend(words[3]) else { return "No such frontend.\n\n" }
        guard words.count > 4, let n = Int(words[4]), n >= 0 else { return "Integer value expected.\n\n" }
        f.maxconn.store(n == 0 ? .max : n, ordering: .relaxed)
        engine.limitsChanged()
        return Self.done
    }

    func setMaxconnGlobal(_ words: [String]) -> String {
        let hard = engine.model.maxConnections
        guard words.count > 3, let n = Int(words[3]), n >= 0 else { return "Expects an integer value.\n\n" }
        guard n <= hard else { return "Value out of range. Must be between 0 and \(hard).\n\n" }
        engine.model.connectionLimit.store(n == 0 ? hard : n, ordering: .relaxed)
        engine.limitsChanged()
        return Self.done
    }

    func setFrontendState(_ words: [String]) -> String {
        guard words.count > 2 else { return "Frontend name expected.\n\n" }
        guard let f = frontend(words[2]) else { return "No such frontend.\n\n" }
        let enable = words[0] == "enable"
        switch engine.setFrontend(f, enabled: enable) {
        case nil: return "This process is stopping; its successor owns the sockets now.\n\n"
        case false?: return enable ? "All sockets are already enabled.\n\n" : "All sockets are already disabled.\n\n"
        case true?: break
        }
        return Self.done
    }

    /// A frontend's `slim`: its runtime maxconn, else the process's.
    func sessionLimit(_ f: Frontend) -> Int {
        let n = f.maxconn.load(ordering: .relaxed)
        return n == .max ? engine.model.connectionLimit.load(ordering: .relaxed) : n
    }
}
