import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// What an operator set a server to (HAProxy's administrative states).
public enum ServerAdminState: Int, Sendable {
    /// Takes traffic as its health allows.
    case ready = 0
    /// No new traffic, except clients its persistence cookie sends back.
    case drain = 1
    /// No traffic at all (`disabled`, or maintenance set at run time).
    case maintenance = 2
}

/// A server as the loops see it: its configuration, and the live state every thread shares
/// and the runtime API changes: administrative state, weight, address, health, slots.
public final class Server: @unchecked Sendable {
    public let name: String
    public let backendName: String
    public let definition: ServerDefinition
    /// Where connections go; changed at run time (`set server ... addr`) under its lock.
    private let currentAddress: Locked<SocketAddress>
    public var address: SocketAddress { currentAddress.withLock { $0 } }
    /// The weight now (0 to 256); the configured one is `definition.options.weight`.
    private let currentWeight: Atomic<Int>
    public var weight: Int { currentWeight.load(ordering: .relaxed) }
    /// The operator's state (`ServerAdminState`, bits 0-1) and `awaitingAddress` (bit 2):
    /// one word, so `isUsable` stays one load.
    private let admin: Atomic<Int>
    static let awaitingAddressBit = 4
    /// `http-check disable-on-404` saw a 404: `NOLB`, no new traffic but persistent clients.
    static let noLoadBalancingBit = 8
    /// The server it tracks is in maintenance: `MAINT (via b/s)`.
    static let inheritedMaintenanceBit = 16
    /// The state as traffic sees it: maintenance while it waits for an address.
    public var adminState: ServerAdminState {
        let raw = admin.load(ordering: .relaxed)
        return raw & (Self.awaitingAddressBit | Self.inheritedMaintenanceBit) != 0 ? .maintenance : ServerAdminState(rawValue: raw & 3) ?? .ready
    }
    /// In maintenance because the server it tracks is.
    public var inheritsMaintenance: Bool { admin.load(ordering: .relaxed) & Self.inheritedMaintenanceBit != 0 }
    /// `track`: the server whose state this one follows, and those that follow this one (set
    /// once, before the loops start).
    public internal(set) var tracked: Server?
    public internal(set) var trackers: [Server] = []
    /// The state the operator (or the file) set, whatever the resolvers say.
    public var operatorAdminState: ServerAdminState { ServerAdminState(rawValue: admin.load(ordering: .relaxed) & 3) ?? .ready }
    /// No address yet, or none left in its resolvers' answers: `MAINT (resolution)`.
    public var awaitsAddress: Bool { admin.load(ordering: .relaxed) & Self.awaitingAddressBit != 0 }
    /// `maxconn` now (0: no limit); the runtime API's `set maxconn server` changes it.
    private let currentMaxconn: Atomic<Int>
    public var maxconn: Int { currentMaxconn.load(ordering: .relaxed) }
    public func setMaxconn(_ n: Int) { currentMaxconn.store(max(0, n), ordering: .relaxed) }
    /// Health checks running (`disable health` pauses them; the server then counts as up).
    public let checksEnabled = Atomic<Bool>(true)
    public let maxqueue: Int
    public let isBackup: Bool
    /// Position in its backend.
    public let index: Int
    /// Connections in use now (for `maxconn` and `leastconn`).
    public let active = Atomic<Int>(0)
    /// Health: UP unless its checks say otherwise.
    public let isUp = Atomic<Bool>(true)
    /// In maintenance (`disabled`, or set at run time): no traffic, no checks.
    public var isDisabled: Bool { adminState == .maintenance }
    /// When the server last came back UP (coarse ms), for `slowstart`; 0 when not ramping.
    public let upSince = Atomic<Int64>(0)
    let slowStart: Int64

    /// Where its counters start in each loop's block (`CounterTable`).
    public internal(set) var statBase = 0
    /// The most sessions it held at once (`smax`).
    public let peakSessions = Atomic<Int>(0)

    /// `ssl` / `check-ssl`: the TLS client side, loaded with the configuration.
    public let tls: ServerTLS?

    /// The last check's result, for `show stat` (written by its check's loop).
    public let lastCheck = Locked(CheckResult())
    /// The last agent check's result (`agent-check`).
    public let lastAgent = Locked(CheckResult())
    /// Its agent said `down`, `failed` or `stopped`: DOWN whatever the health check says,
    /// until the agent says `up`.
    public let agentDown = Atomic<Bool>(false)
    /// The administrative state was last set by its agent (`DRAIN (agent)`).
    public let adminByAgent = Atomic<Bool>(false)
    /// `observe`: which traffic outcomes count (nil: none), and the errors in a row so far
    /// (every loop adds to it).
    let observedLayer: ObservedLayer?
    let consecutiveErrors = Atomic<Int>(0)
    /// Runs `on-error` on its check's loop, with HAProxy's description of the errors (set
    /// when the check is made, before the loops start).
    var onObservedErrors: ((String) -> Void)?

    init(definition: ServerDefinition, backend: String, index: Int, address: SocketAddress, keepAlive: Bool, tls: ServerTLS?) {
        self.definition = definition
        self.tls = tls
        self.keepAlive = keepAlive
        name = definition.name
        backendName = backend
        currentAddress = Locked(address)
        currentWeight = Atomic(definition.options.weight)
        var state = definition.options.disabled ? ServerAdminState.maintenance.rawValue : ServerAdminState.ready.rawValue
        if case .name = definition.address.host, definition.address.resolved == nil { state |= Self.awaitingAddressBit }
        admin = Atomic(state)
        currentMaxconn = Atomic(definition.options.maxconn)
        maxqueue = definition.options.maxqueue
        isBackup = definition.options.backup
        slowStart = Int64(definition.options.slowStart ?? 0)
        observedLayer = definition.options.check ? definition.options.observe : nil
        self.index = index
        switch definition.address.host {
        case .unix: followsClientPort = false
        case .name(let n) where n.hasPrefix("_"): followsClientPort = false
        default: followsClientPort = definition.address.port == nil
        }
    }

    /// Usable for new traffic: ready, up and with a weight.
    @inline(__always) public var isUsable: Bool {
        admin.load(ordering: .relaxed) == ServerAdminState.ready.rawValue && weight > 0 && isUp.load(ordering: .relaxed)
    }

    /// May take a client its persistence cookie names: up and not in maintenance (a
    /// draining server still serves the clients it has).
    @inline(__always) public var acceptsPersistent: Bool {
        admin.load(ordering: .relaxed) & ~Self.noLoadBalancingBit <= ServerAdminState.drain.rawValue && isUp.load(ordering: .relaxed)
    }

    /// In `NOLB` (its checks answered 404 under `http-check disable-on-404`).
    public var isNoLoadBalancing: Bool { admin.load(ordering: .relaxed) & Self.noLoadBalancingBit != 0 }

    /// Enters or leaves `NOLB`; true when that changed anything.
    @discardableResult
    public func setNoLoadBalancing(_ on: Bool) -> Bool { setFlag(Self.noLoadBalancingBit, on) }

    /// Sets the administrative state (the runtime API's `set server ... state`); waiting for
    /// an address is the resolvers' to end, not the operator's. Its trackers follow its
    /// maintenance.
    public func setAdminState(_ state: ServerAdminState) {
        var current = admin.load(ordering: .relaxed)
        while true {
            let next = (current & ~3) | state.rawValue
            if next == current { return }
            let (done, seen) = admin.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if done { markChanged(); break }
            current = seen
        }
        propagateMaintenance()
    }

    /// Tells its trackers (and theirs) whether they are in maintenance through it.
    func propagateMaintenance() {
        let inMaintenance = adminState == .maintenance
        for t in trackers where t.setFlag(Self.inheritedMaintenanceBit, inMaintenance) { t.propagateMaintenance() }
    }

    /// Sets or clears one of the admin word's flags; true when that changed anything.
    func setFlag(_ bit: Int, _ on: Bool) -> Bool {
        var current = admin.load(ordering: .relaxed)
        while true {
            let next = on ? current | bit : current & ~bit
            if next == current { return false }
            let (done, seen) = admin.compareExchange(expected: current, desired: next, ordering: .relaxed)
            if done { markChanged(); return true }
            current = seen
        }
    }

    /// Enters or leaves `MAINT (resolution)`; true when that changed anything.
    @discardableResult
    public func setAwaitingAddress(_ waiting: Bool) -> Bool { setFlag(Self.awaitingAddressBit, waiting) }

    /// Sets the health (checks, or the runtime API's `set server ... health`).
    public func setUp(_ up: Bool) {
        if isUp.exchange(up, ordering: .relaxed) != up { markChanged() }
        for t in trackers { t.setUp(up) }
    }

    /// When the server's state last changed (wall seconds): `show servers state`.
    public let lastChange = Atomic<Int>(Clock.wallClock().seconds)
    func markChanged() { lastChange.store(Clock.wallClock().seconds, ordering: .relaxed) }

    /// Sets the weight, 0 to 256 (the runtime API's `set weight`).
    public func setWeight(_ w: Int) { currentWeight.store(max(0, min(256, w)), ordering: .relaxed) }

    /// Points new connections at another address (the runtime API's `set server ... addr`).
    public func setAddress(_ a: SocketAddress) { currentAddress.withLock { $0 = a } }

    /// The weight to balance with now, scaled by 16 (as HAProxy scales) so that a ramp has
    /// room: during `slowstart` after coming back UP it grows from 1 to the full weight.
    @inline(__always) func effectiveWeight(now: Int64) -> Int {
        let full = weight * 16
        guard slowStart > 0 else { return full }
        let since = upSince.load(ordering: .relaxed)
        guard since > 0 else { return full }
        let elapsed = now - since
        if elapsed >= slowStart { return full }
        return max(1, Int(Int64(full) * max(elapsed, 0) / slowStart))
    }

    /// No port of its own, or an offset: connections go to the client's destination port.
    /// (An SRV name's port comes from its records instead.)
    public let followsClientPort: Bool

    /// `option srvtcpka` (or `tcpka`) in its backend.
    let keepAlive: Bool
    /// `option tcp-smart-connect`: the handshake's last ACK waits to ride on the first bytes
    /// (set once, before the loops start).
    var delaysHandshakeACK = false
    /// `tcp-ut`: TCP_USER_TIMEOUT on its connections, in milliseconds.
    var userTimeout: Int? { definition.options.userTimeout }
    /// `srvtcpka-*` of its backend (set once, before the loops start).
    var keepAliveProbes = KeepAliveProbes()

    /// The address for a client that connected to `port`: that port plus the offset.
    func address(forDestinationPort port: UInt16) -> SocketAddress {
        var a = address
        let p = Int(port) + (definition.address.portOffset ?? 0)
        a.setPort(UInt16(clamping: max(0, min(65535, p))))
        return a
    }

    /// Takes one of its `maxconn` slots, or none (compare-and-swap: two loops can never both
    /// take the last one).
    @inline(__always)
    public func reserveSlot() -> Bool {
        let limit = maxconn
        guard limit > 0 else { active.add(1, ordering: .relaxed); return true }
        var current = active.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = active.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Below its `maxconn` (0 means unlimited).
    @inline(__always) public var hasRoom: Bool {
        let limit = maxconn
        return limit == 0 || active.load(ordering: .relaxed) < limit
    }
}

/// What the last health check found, as `show stat` reports it.
public struct CheckResult: Sendable {
    /// HAProxy's short status (`L4OK`, `L7OK`, `L4CON`, `L4TOUT`, `L7STS`, ...), empty before the first.
    public var status = ""
    /// The HTTP status of a layer-7 check.
    public var code: Int?
    public var durationMs: Int64 = 0
    public var description = ""
    /// The reason's `info` text (`last_chk`), empty without one.
    public var info = ""
    /// Failed checks and UP-to-DOWN transitions (`chkfail`, `chkdown`).
    public var failures = 0
    public var downTransitions = 0
    /// The health counter: `rise + fall - 1` when up, counting down to 0 as checks fail.
    public var health = 0
    public init() {}
}
