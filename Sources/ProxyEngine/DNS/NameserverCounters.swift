import ProxyConfig
import Synchronization

/// One name server's counters for `show resolvers`, with HAProxy's names: written by the loop
/// that runs its section, read by the runtime API.
public final class NameserverCounters: Sendable {
    public let name: String
    let sent = Atomic<Int>(0), sendErrors = Atomic<Int>(0), valid = Atomic<Int>(0), updates = Atomic<Int>(0)
    let nx = Atomic<Int>(0), timeouts = Atomic<Int>(0), refused = Atomic<Int>(0), other = Atomic<Int>(0)
    let invalid = Atomic<Int>(0), truncated = Atomic<Int>(0), outdated = Atomic<Int>(0)

    init(name: String) { self.name = name }

    enum Counter { case sent, sendErrors, valid, updates, nx, timeouts, refused, other, invalid, truncated, outdated }

    func add(_ counter: Counter) {
        switch counter {
        case .sent: sent.wrappingAdd(1, ordering: .relaxed)
        case .sendErrors: sendErrors.wrappingAdd(1, ordering: .relaxed)
        case .valid: valid.wrappingAdd(1, ordering: .relaxed)
        case .updates: updates.wrappingAdd(1, ordering: .relaxed)
        case .nx: nx.wrappingAdd(1, ordering: .relaxed)
        case .timeouts: timeouts.wrappingAdd(1, ordering: .relaxed)
        case .refused: refused.wrappingAdd(1, ordering: .relaxed)
        case .other: other.wrappingAdd(1, ordering: .relaxed)
        case .invalid: invalid.wrappingAdd(1, ordering: .relaxed)
        case .truncated: truncated.wrappingAdd(1, ordering: .relaxed)
        case .outdated: outdated.wrappingAdd(1, ordering: .relaxed)
        }
    }

    /// `show resolvers`' lines for this name server, in HAProxy 2.6's order and layout.
    public var lines: String {
        let rows: [(String, Int)] = [
            ("sent", sent.load(ordering: .relaxed)), ("snd_error", sendErrors.load(ordering: .relaxed)),
            ("valid", valid.load(ordering: .relaxed)), ("update", updates.load(ordering: .relaxed)),
            ("cname", 0), ("cname_error", 0), ("any_err", 0), ("nx", nx.load(ordering: .relaxed)),
            ("timeout", timeouts.load(ordering: .relaxed)), ("refused", refused.load(ordering: .relaxed)),
            ("other", other.load(ordering: .relaxed)), ("invalid", invalid.load(ordering: .relaxed)), ("too_big", 0),
            ("truncated", truncated.load(ordering: .relaxed)), ("outdated", outdated.load(ordering: .relaxed)),
        ]
        var text = " nameserver \(name):\n"
        for (label, value) in rows {
            text += "  " + label + ":" + String(repeating: " ", count: max(1, 12 - label.count)) + "\(value)\n"
        }
        return text
    }
}

/// Every `resolvers` section's name servers and their counters, in declaration order, used
/// by a server or not (as `show resolvers` lists them).
public struct ResolverCounters: Sendable {
    public let sections: [(name: String, nameservers: [NameserverCounters])]

    init(_ definitions: [ResolversDefinition]) {
        sections = definitions.map { d in (d.name, d.nameservers.map { NameserverCounters(name: $0.name) }) }
    }

    func counters(section: String, nameserver: String) -> NameserverCounters? {
        sections.first { $0.name == section }?.nameservers.first { $0.name == nameserver }
    }
}
