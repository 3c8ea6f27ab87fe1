import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// The runtime API's server commands, with HAProxy 2.6's words, levels and answers (taken
/// from Debian's 2.6.12): `get weight`, `set weight`, `set server b/s state|weight|health|
/// addr`, `disable|enable server`, `show servers state`, `show backend`. A success answers
/// with an empty line only; an error with HAProxy's sentence.
extension RuntimeCommands {
    /// Proxies in declaration order with HAProxy's ids: the first user proxy is #2.
    public var proxyIDs: [(name: String, id: Int)] {
        engine.model.configuration.proxies.enumerated().map { ($0.element.name, $0.offset + 2) }
    }

    /// A backend by name or `#id`.
    func backend(_ word: Substring) -> Backend? {
        let model = engine.model
        if word.hasPrefix("#"), let id = Int(word.dropFirst()) {
            guard let name = proxyIDs.first(where: { $0.id == id })?.name else { return nil }
            return model.backends[name]
        }
        return model.backends[String(word)]
    }

    /// `backend/server` (either part may be `#id`): the server, or HAProxy's error sentence.
    func server(_ word: String?) -> Result<(Backend, Server), CommandError> {
        guard let word, let slash = word.firstIndex(of: "/") else { return .failure(CommandError("Require 'backend/server'.")) }
        guard let b = backend(word[..<slash]) else { return .failure(CommandError("No such backend.")) }
        let name = word[word.index(after: slash)...]
        let s: Server?
        if name.hasPrefix("#"), let id = Int(name.dropFirst()) {
            s = id >= 1 && id <= b.servers.count ? b.servers[id - 1] : nil
        } else {
            s = b.server(named: String(name))
        }
        guard let s else { return .failure(CommandError("No such server.")) }
        return .success((b, s))
    }

    /// An error answer: one sentence, then the empty line.
    struct CommandError: Error {
        let text: String
        init(_ text: String) { self.text = text }
    }

    static let done = "\n"

    func answer(_ r: Result<String, CommandError>) -> String {
        switch r {
        case .success(let text): return text
        case .failure(let e): return e.text + "\n\n"
        }
    }

    // MARK: weights

    func getWeight(_ words: [String]) -> String {
        answer(server(words.count > 2 ? words[2] : nil).map { _, s in
            "\(s.weight) (initial \(s.definition.options.weight))\n\n"
        })
    }

    /// `set weight b/s W[%]` and `set server b/s weight W[%]`.
    func setWeight(_ target: String?, _ value: String?) -> String {
        answer(server(target).flatMap { b, s -> Result<String, CommandError> in
            guard let value, !value.isEmpty else { return .failure(CommandError("Require <weight> or <weight%>.")) }
            let initial = s.definition.options.weight
            var digits = Substring(value)
            let relative = digits.hasSuffix("%")
            if relative { digits = digits.dropLast() }
            let sign = digits.hasPrefix("-") ? -1 : 1
            if digits.hasPrefix("-") || digits.hasPrefix("+") { digits = digits.dropFirst() }
            guard !digits.isEmpty, digits.first!.isASCII, digits.first!.isNumber else {
                return .failure(CommandError("Empty weight string empty or preceded by garbage"))
            }
            guard digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits) else {
                return .failure(CommandError("Trailing garbage in weight string"))
            }
            var w = sign * n
            if relative {
                guard w >= 0 else { return .failure(CommandError("Relative weight must be positive.")) }
                w = min(256, initial * w / 100)
            } else if w < 0 || w > 256 {
                return .failure(CommandError("Absolute weight can only be between 0 and 256 inclusive."))
            }
            // Map-based hashing and static-rr cannot re-weigh one server: off or as configured.
            if b.hasStaticAlgorithm, w != 0, w != initial {
                return .failure(CommandError("Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."))
            }
            s.setWeight(w)
            return .success(Self.done)
        })
    }

    // MARK: state, health, address

    func setServer(_ words: [String]) -> String {
        guard words.count > 3 else {
            if words.count == 3, case .failure(let e) = server(words[2]) { return e.text + "\n\n" }
            return "usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | agent-send | check-addr | check-port | fqdn | health | ssl | state | weight\n\n"
        }
        let value = words.count > 4 ? words[4] : nil
        switch words[3] {
        case "state":
            return answer(server(words[2]).flatMap { _, s in
                switch value {
                case "ready": s.setAdminState(.ready); s.adminByAgent.store(false, ordering: .relaxed)
                case "drain": s.setAdminState(.drain); s.adminByAgent.store(false, ordering: .relaxed)
                case "maint": s.setAdminState(.maintenance); s.adminByAgent.store(false, ordering: .relaxed)
                default: return .failure(CommandError("'set server <srv> state' expects 'ready', 'drain' and 'maint'."))
                }
                return .success(Self.done)
            })
        case "weight":
            return setWeight(words[2], value)
        case "health":
            return answer(server(words[2]).flatMap { _, s in
                switch value {
                case "up": s.setUp(true)
                case "stopping", "down": s.setUp(false)
                default: return .failure(CommandError("'set server <srv> health' expects 'up', 'stopping', or 'down'."))
                }
                return .success(Self.done)
            })
        case "addr":
            return answer(server(words[2]).flatMap { _, s in setAddress(s, value, port: words.count > 6 && words[5] == "port" ? words[6] : nil) })
        default:
            return answer(server(words[2]).flatMap { _, _ in
                .failure(CommandError("usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | agent-send | check-addr | check-port | fqdn | health | ssl | state | weight"))
            })
        }
    }

    /// `set server b/s addr IP [port P]`, answered as HAProxy words it.
    func setAddress(_ s: Server, _ text: String?, port portText: String?) -> Result<String, CommandError> {
        let by = " by 'stats socket command'"
        guard let text, let ip = IPAddress(parsing: text) else { return .failure(CommandError("Invalid addr '\(text ?? "")'\(by)")) }
        var address = s.address
        let oldIP = AddressText.ip(address)
        let oldPort = address.port
        var parts: [String] = []
        var next = ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: oldPort) : SocketAddress(ipv6: ip.bytes16, port: oldPort)
        let newIP = AddressText.ip(next)
        parts.append(newIP == oldIP ? "no need to change the addr" : "IP changed from '\(oldIP)' to '\(newIP)'")
        if let portText {
            if let p = UInt16(portText) {
                next.setPort(p)
                parts.append(p == oldPort ? "no need to change the port" : "port changed from '\(oldPort)' to '\(p)'")
            } else {
                parts.append("problem converting port '\(portText)' to an int")
            }
        }
        address = next
        s.setAddress(address)
        return .success(parts.joined(separator: ", ") + by + "\n\n")
    }

    /// `show servers state [backend]`, format version 1, as HAProxy 2.6 writes it.
    func showServersState(_ words: [String]) -> String {
        let header = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
        var selected = proxyIDs.compactMap { p in engine.model.backends[p.name].map { ($0, p.id) } }
        if words.count > 3 {
            guard let b = backend(Substring(words[3])) else { return "Can't find backend.\n\n" }
            selected = selected.filter { $0.0 === b }
        }
        let now = Clock.wallClock().seconds
        var text = header
        for (b, id) in selected {
            for (i, s) in b.servers.enumerated() {
                let o = s.definition.options
                let op = s.isUp.load(ordering: .relaxed) && !s.awaitsAddress ? 2 : 0
                var admin: Int
                switch s.operatorAdminState {
                case .ready: admin = 0
                case .drain: admin = 0x08
                case .maintenance: admin = o.disabled ? 0x04 : 0x01
                }
                if s.awaitsAddress { admin |= 0x20 } // SRV_ADMF_RMAINT
                // Check columns: status (1 = not yet run / no check), result, health, state
                // (6 = configured and enabled, as HAProxy writes for a checked server).
                let check = o.check ? "\(s.isUp.load(ordering: .relaxed) ? 15 : 7) \(s.isUp.load(ordering: .relaxed) ? 3 : 2) \(s.isUp.load(ordering: .relaxed) ? o.rise + o.fall - 1 : 0) 6"
                    : "1 0 \(op == 2 ? 2 : 0) 0"
                let a = s.address
                let addr = a.family == AF_UNIX ? (a.unixPath ?? "-") : s.awaitsAddress && a.ipv4 == 0 ? "-" : AddressText.ip(a)
                text += "\(id) \(b.name) \(i + 1) \(s.name) \(addr) \(op) \(admin) \(s.weight) \(o.weight) \(max(0, now - s.lastChange.load(ordering: .relaxed))) \(check) 0 0 0 - \(a.port) - 0 \(o.checkPort ?? 0) - - 0\n"
            }
        }
        return text + "\n"
    }

    /// `show backend`: `# name`, then each backend.
    func showBackend() -> String {
        "# name\n" + proxyIDs.filter { engine.model.backends[$0.name] != nil }.map { $0.name + "\n" }.joined() + "\n"
    }
}
