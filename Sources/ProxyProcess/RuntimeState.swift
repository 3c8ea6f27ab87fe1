import ProxyConfig
import ProxyControl
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// Runtime changes that survive a reload: what the runtime API set (a server's admin state,
/// weight, address, maxconn, paused checks; `proc.` variables) travels over the handover as
/// state lines, beside the configured value it overrode. The new process applies each one
/// unless its own file changed that same item from the old file; then the file wins, and
/// the start-up says so.
///
///     server-admin   BACKEND SERVER ready|drain|maint CONFIGURED-DISABLED(0|1)
///     server-weight  BACKEND SERVER RUNTIME CONFIGURED
///     server-maxconn BACKEND SERVER RUNTIME CONFIGURED
///     server-addr    BACKEND SERVER IP PORT CONFIGURED-ADDRESS
///     server-checks  BACKEND SERVER on|off
///     server-checkcounts BACKEND SERVER FAILED-CHECKS UP-TO-DOWN-TRANSITIONS (counters, carried)
///     var            NAME bool|int|str|ip HEX-VALUE HEX-CONFIGURED-LINE (its global set-var)
///     counters       frontend|backend NAME VALUES...  /  counters server BACKEND SERVER VALUES...
///     generation     N (the old process's place in the chain of reloads)
///     pattern        acl|map HEX-PATH LOADED-DIGEST [HEX-KEY[:HEX-VALUE]]... (a file changed at run time)
///     frontend-state   FRONTEND disabled
///     frontend-maxconn FRONTEND RUNTIME CONFIGURED (0: none)
///     global-maxconn   RUNTIME CONFIGURED
///
/// Counters are carried as the old process's totals when the new one asks: they never go
/// back to 0 at a reload (Prometheus `rate()` sees no reset); what the old process still
/// counts while it drains after that moment is not carried yet.
enum RuntimeState {
    /// True for the first word of a line this carries (the handover passes those on).
    static func carries(_ kind: Substring) -> Bool {
        kind.hasPrefix("server-") || kind.hasPrefix("frontend-") || ["var", "counters", "generation", "global-maxconn", "pattern"].contains(kind)
    }

    /// The lines describing `model`'s runtime state, for the handover.
    static func lines(_ model: RuntimeModel) -> [String] {
        var out: [String] = ["generation \(model.generation.load(ordering: .relaxed))"]
        for (_, b) in model.backends {
            for s in b.servers {
                let o = s.definition.options
                let id = "\(b.name) \(s.name)"
                let admin = s.operatorAdminState
                let state = admin == .ready ? "ready" : admin == .drain ? "drain" : "maint"
                out.append("server-admin \(id) \(state) \(o.disabled ? 1 : 0)")
                out.append("server-weight \(id) \(s.weight) \(o.weight)")
                out.append("server-maxconn \(id) \(s.maxconn) \(o.maxconn)")
                let a = s.address
                // A server waiting for its resolvers has no address worth keeping.
                if (a.family == AF_INET || a.family == AF_INET6) && !s.awaitsAddress {
                    out.append("server-addr \(id) \(AddressText.ip(a)) \(a.port) \(configured(s))")
                }
                out.append("server-checks \(id) \(s.checksEnabled.load(ordering: .relaxed) ? "on" : "off")")
                let check = s.lastCheck.withLock { $0 }
                if check.failures > 0 || check.downTransitions > 0 {
                    out.append("server-checkcounts \(id) \(check.failures) \(check.downTransitions)")
                }
            }
        }
        for f in model.frontends {
            if f.disabled.load(ordering: .relaxed) { out.append("frontend-state \(f.name) disabled") }
            let runtime = f.maxconn.load(ordering: .relaxed)
            out.append("frontend-maxconn \(f.name) \(runtime == .max ? 0 : runtime) \(f.settings.maxconn ?? 0)")
        }
        out.append("global-maxconn \(model.connectionLimit.load(ordering: .relaxed)) \(model.maxConnections)")
        for r in model.configuration.patternReferences?.all ?? [] where !r.path.isEmpty && r.entries != r.loaded {
            let items = r.entries.map { hex(Array($0.key.utf8)) + ($0.value.map { ":" + hex(Array($0.utf8)) } ?? "") }
            out.append((["pattern", r.kind.rawValue, hex(Array(r.path.utf8)), digest(r.loaded)] + items).joined(separator: " "))
        }
        let c = model.counters
        for f in model.frontends { out.append("counters frontend \(f.name) " + c.values(f.statBase).map(String.init).joined(separator: " ")) }
        for (_, b) in model.backends {
            out.append("counters backend \(b.name) " + c.values(b.statBase).map(String.init).joined(separator: " "))
            for s in b.servers {
                out.append("counters server \(b.name) \(s.name) " + c.values(s.statBase).map(String.init).joined(separator: " "))
            }
        }
        for (name, value) in model.processVariables.withLock({ $0 }) {
            let (type, bytes): (String, [UInt8])
            switch value {
            case .boolean(let b): (type, bytes) = ("bool", [b ? 0x31 : 0x30])
            case .integer(let i): (type, bytes) = ("int", Array(String(i).utf8))
            case .string(let s): (type, bytes) = ("str", s)
            case .ip(let ip): (type, bytes) = ("ip", Array(ip.description.utf8))
            }
            let configured = model.configuration.global.initialVariables.first { $0.name == name }?.text ?? ""
            out.append("var \(name) \(type) \(hex(bytes)) \(hex(Array(configured.utf8)))")
        }
        return out
    }

    /// A `counters KIND NAME... VALUES` (or `delta ...`) line's object in `model` and values.
    static func counterLine(_ w: [Substring], _ model: RuntimeModel) -> (Int, [Int])? {
        let base: Int?
        let values: ArraySlice<Substring>
        switch w[1] {
        case "frontend":
            base = model.frontends.first { $0.name == w[2] }?.statBase
            values = w.dropFirst(3)
        case "backend":
            base = model.backends[String(w[2])]?.statBase
            values = w.dropFirst(3)
        case "server" where w.count >= 4:
            base = model.backends[String(w[2])]?.server(named: String(w[3]))?.statBase
            values = w.dropFirst(4)
        default:
            return nil
        }
        guard let base else { return nil }
        return (base, values.compactMap { Int($0) })
    }

    /// Every object's counters, by `KIND NAME`: what a successor starts from.
    static func counterSnapshot(_ model: RuntimeModel) -> [String: [Int]] {
        var out: [String: [Int]] = [:]
        let c = model.counters
        for f in model.frontends { out["frontend \(f.name)"] = c.values(f.statBase) }
        for (_, b) in model.backends {
            out["backend \(b.name)"] = c.values(b.statBase)
            for s in b.servers { out["server \(b.name) \(s.name)"] = c.values(s.statBase) }
        }
        return out
    }

    /// The counters in the `counters` lines of `lines`, by `KIND NAME`, as `counterSnapshot`.
    static func snapshot(fromLines lines: [String]) -> [String: [Int]] {
        var out: [String: [Int]] = [:]
        for line in lines where line.hasPrefix("counters ") {
            let w = line.split(separator: " ")
            guard w.count >= 3 else { continue }
            let nameWords = w[1] == "server" ? 3 : 2
            guard w.count > nameWords else { continue }
            out[w[1...nameWords].joined(separator: " ")] = w.dropFirst(nameWords + 1).compactMap { Int($0) }
        }
        return out
    }

    /// What was counted since `baseline`: one `delta KIND NAME VALUES` line per object that
    /// moved (a value that went down, after `clear counters`, counts as 0).
    static func deltaLines(since baseline: [String: [Int]], _ model: RuntimeModel) -> [String] {
        var lines: [String] = []
        for (key, now) in counterSnapshot(model) {
            let before = baseline[key] ?? Array(repeating: 0, count: now.count)
            let delta = zip(now, before).map { max(0, $0 - $1) }
            if delta.contains(where: { $0 > 0 }) { lines.append("delta \(key) " + delta.map(String.init).joined(separator: " ")) }
        }
        return lines.sorted()
    }

    /// Adds a predecessor's final deltas to this process's counters (any thread: the adds
    /// are atomic). Returns how many objects they touched.
    @discardableResult
    static func applyDeltas(_ lines: [String], to model: RuntimeModel) -> Int {
        var n = 0
        for line in lines {
            let w = line.split(separator: " ")
            guard w.first == "delta", w.count >= 3, let (base, values) = counterLine(w, model) else { continue }
            model.counters.carry(base, values)
            n += 1
        }
        return n
    }

    /// The lines of the old process with the highest generation (the last of equals); the
    /// replies of several old processes are told apart by their `from PID` lines.
    static func newestBlock(_ lines: [String]) -> ArraySlice<String> {
        var blocks: [ArraySlice<String>] = []
        var start = lines.startIndex
        for (i, line) in lines.enumerated() where line.hasPrefix("from ") {
            if i > start { blocks.append(lines[start..<i]) }
            start = i + 1
        }
        if start < lines.endIndex { blocks.append(lines[start...]) }
        func generation(_ b: ArraySlice<String>) -> Int {
            b.first { $0.hasPrefix("generation ") }.flatMap { Int($0.dropFirst(11)) } ?? 0
        }
        return blocks.enumerated().max { (generation($0.element), $0.offset) < (generation($1.element), $1.offset) }?.element ?? []
    }

    /// What a file held at load (FNV-1a over its keys and values): a reload compares it to
    /// tell whether the new file changed it.
    static func digest(_ entries: [PatternReference.Entry]) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for e in entries {
            for b in Array(e.key.utf8) + [0] + Array((e.value ?? "").utf8) + [1] { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        }
        return String(h, radix: 16)
    }

    /// A server's configured address as its file wrote it (what a reload compares).
    static func configured(_ s: Server) -> String {
        s.definition.address.description + (s.definition.address.portOffset.map { "+\($0)" } ?? "")
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.isEmpty ? "-" : bytes.map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    static func unhex(_ text: Substring) -> [UInt8]? {
        if text == "-" { return [] }
        guard text.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = text.startIndex
        while i < text.endIndex {
            let j = text.index(i, offsetBy: 2)
            guard let b = UInt8(text[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        return out
    }

    /// Applies the carried lines to a new model; returns what the start-up reports: each
    /// item the new file changed (the file wins), and how many changes were kept.
    static func apply(_ allLines: [String], to model: RuntimeModel) -> (kept: Int, overridden: [String], keptItems: [String]) {
        var keptItems: [String] = []
        var overridden: [String] = []
        func keep(_ what: String) { keptItems.append(what) }
        // Everything comes from the newest old process (the highest generation): its state is
        // the operator's latest word, and its counters already hold its predecessors' (each
        // older one still draining sends what it counts after that to its newest successor).
        let lines = newestBlock(allLines)
        var counters: [Int: [Int]] = [:]
        defer { for (base, v) in counters { model.counters.carry(base, v) } }
        for line in lines {
            let w = line.split(separator: " ")
            guard let kind = w.first else { continue }
            if kind == "generation", w.count == 2, let n = Int(w[1]) {
                model.generation.store(n + 1, ordering: .relaxed)
                continue
            }
            if kind == "counters", w.count >= 3 {
                if let (base, values) = counterLine(w, model) { counters[base] = values }
                continue
            }
            if kind == "var", w.count == 4 || w.count == 5 {
                guard let bytes = unhex(w[3]) else { continue }
                // A `global set-var` line changed since the old file: the file wins.
                let oldLine = w.count == 5 ? unhex(w[4]).map { String(decoding: $0, as: UTF8.self) } ?? "" : ""
                let newLine = model.configuration.global.initialVariables.first { $0.name == w[1] }?.text ?? ""
                if oldLine != newLine {
                    overridden.append("variable proc.\(w[1]): its 'set-var' line changed in the configuration; the runtime value is dropped")
                    continue
                }
                let text = String(decoding: bytes, as: UTF8.self)
                let value: SampleValue?
                switch w[2] {
                case "bool": value = .boolean(text == "1")
                case "int": value = Int64(text).map { .integer($0) }
                case "str": value = .string(bytes)
                case "ip": value = IPAddress(parsing: text).map { .ip($0) }
                default: value = nil
                }
                if let value {
                    model.processVariables.withLock { $0[String(w[1])] = value }
                    keep("variable proc.\(w[1]) = \(String(decoding: value.text, as: UTF8.self))")
                }
                continue
            }
            if kind == "pattern", w.count >= 4, let kindValue = PatternReference.Kind(rawValue: String(w[1])),
               let pathBytes = unhex(w[2]), let refs = model.configuration.patternReferences {
                let path = String(decoding: pathBytes, as: UTF8.self)
                guard let r = refs.find(path, kind: kindValue), !r.path.isEmpty else { continue }
                guard digest(r.loaded) == w[3] else {
                    overridden.append("\(kindValue.rawValue) \(path): the file changed; its runtime entries are dropped")
                    continue
                }
                var items: [(String, String?)] = []
                for item in w.dropFirst(4) {
                    let parts = item.split(separator: ":", maxSplits: 1)
                    guard let k = unhex(parts[0]) else { continue }
                    let v = parts.count == 2 ? unhex(parts[1]).map { String(decoding: $0, as: UTF8.self) } : nil
                    items.append((String(decoding: k, as: UTF8.self), v))
                }
                do {
                    try r.replace(with: items)
                    keep("\(kindValue.rawValue) \(path): \(items.count) entr\(items.count == 1 ? "y" : "ies") set at run time")
                } catch {
                    overridden.append("\(kindValue.rawValue) \(path): its runtime entries no longer load (\(error)); the file wins")
                }
                continue
            }
            if kind == "frontend-state", w.count == 3, w[2] == "disabled",
               let f = model.frontends.first(where: { $0.name == w[1] }) {
                // Applied before the engine starts: its acceptors stay off, its sockets shut.
                f.disabled.store(true, ordering: .relaxed)
                keep("frontend \(w[1]): disabled")
                continue
            }
            if kind == "frontend-maxconn", w.count == 4, let f = model.frontends.first(where: { $0.name == w[1] }),
               let runtime = Int(w[2]), let old = Int(w[3]), runtime != old {
                if (f.settings.maxconn ?? 0) != old {
                    overridden.append("frontend \(w[1]): 'maxconn' changed in the configuration; its runtime value \(runtime) is dropped")
                } else {
                    f.maxconn.store(runtime == 0 ? .max : runtime, ordering: .relaxed)
                    keep("frontend \(w[1]): maxconn \(runtime)")
                }
                continue
            }
            if kind == "global-maxconn", w.count == 3, let runtime = Int(w[1]), let old = Int(w[2]), runtime != old {
                if model.maxConnections != old {
                    overridden.append("global: 'maxconn' changed in the configuration; its runtime value \(runtime) is dropped")
                } else {
                    model.connectionLimit.store(min(runtime, model.maxConnections), ordering: .relaxed)
                    keep("global: maxconn \(runtime)")
                }
                continue
            }
            guard kind.hasPrefix("server-"), w.count >= 4, let b = model.backends[String(w[1])],
                  let s = b.server(named: String(w[2])) else { continue }
            let o = s.definition.options
            let item = "server \(w[1])/\(w[2])"
            switch kind {
            case "server-admin" where w.count == 5:
                let state: ServerAdminState = w[3] == "drain" ? .drain : w[3] == "maint" ? .maintenance : .ready
                let runtimeChanged = state != (w[4] == "1" ? .maintenance : .ready)
                guard runtimeChanged else { continue }
                if (w[4] == "1") != o.disabled {
                    overridden.append("\(item): 'disabled' changed in the configuration; its runtime state '\(w[3])' is dropped")
                } else {
                    s.setAdminState(state)
                    keep("\(item): state \(w[3])")
                }
            case "server-weight" where w.count == 5, "server-maxconn" where w.count == 5:
                guard let runtime = Int(w[3]), let old = Int(w[4]), runtime != old else { continue }
                let isWeight = kind == "server-weight"
                let configured = isWeight ? o.weight : o.maxconn
                if configured != old {
                    overridden.append("\(item): '\(isWeight ? "weight" : "maxconn")' changed in the configuration (\(old) -> \(configured)); its runtime value \(runtime) is dropped")
                } else if isWeight {
                    s.setWeight(runtime)
                    keep("\(item): weight \(runtime)")
                } else {
                    s.setMaxconn(runtime)
                    keep("\(item): maxconn \(runtime)")
                }
            case "server-addr" where w.count == 6:
                guard let ip = IPAddress(parsing: String(w[3])), let port = UInt16(w[4]) else { continue }
                let current = s.address
                // The old process's address: init-addr's 'last', and what its resolvers learnt.
                if s.awaitsAddress, configured(s) == String(w[5]) {
                    s.setAddress(ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: port) : SocketAddress(ipv6: ip.bytes16, port: port))
                    s.setAwaitingAddress(false)
                    keep("\(item): address \(w[3]) port \(w[4]) (it had none at load)")
                    continue
                }
                guard AddressText.ip(current) != String(w[3]) || current.port != port else { continue }
                if configured(s) != String(w[5]) {
                    overridden.append("\(item): its address changed in the configuration; the runtime address \(w[3]):\(w[4]) is dropped")
                } else {
                    s.setAddress(ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: port) : SocketAddress(ipv6: ip.bytes16, port: port))
                    keep("\(item): address \(w[3]) port \(w[4])")
                }
            case "server-checkcounts" where w.count == 5:
                // Counters: they go on from the old process's (the old one checks no more
                // once it stops, so there is nothing to add later).
                guard s.definition.options.check, let failures = Int(w[3]), let downs = Int(w[4]) else { continue }
                s.lastCheck.withLock { $0.failures += failures; $0.downTransitions += downs }
            case "server-checks":
                if w[3] == "off" {
                    s.checksEnabled.store(false, ordering: .relaxed)
                    keep("\(item): health checks disabled")
                }
            default:
                continue
            }
        }
        return (keptItems.count, overridden, keptItems)
    }
}
