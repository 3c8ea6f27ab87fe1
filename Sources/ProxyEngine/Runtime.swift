import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// A server as the loops see it: its address and the live state every thread shares.
public final class RuntimeServer: @unchecked Sendable {
    public let name: String
    public let backendName: String
    public let address: SocketAddress
    public let definition: ServerDefinition
    public let weight: Int
    public let maxconn: Int
    public let maxqueue: Int
    public let isBackup: Bool
    /// Position in its backend.
    public let index: Int
    /// Connections in use now (for `maxconn` and `leastconn`).
    public let active = Atomic<Int>(0)
    /// Health: UP unless its checks say otherwise.
    public let isUp = Atomic<Bool>(true)
    /// Administratively disabled (`disabled`).
    public let isDisabled: Bool
    /// When the server last came back UP (coarse ms), for `slowstart`; 0 when not ramping.
    public let upSince = Atomic<Int64>(0)
    let slowStart: Int64

    init(definition: ServerDefinition, backend: String, index: Int, address: SocketAddress, keepAlive: Bool) {
        self.definition = definition
        self.keepAlive = keepAlive
        name = definition.name
        backendName = backend
        self.address = address
        weight = definition.options.weight
        maxconn = definition.options.maxconn
        maxqueue = definition.options.maxqueue
        isBackup = definition.options.backup
        isDisabled = definition.options.disabled
        slowStart = Int64(definition.options.slowStart ?? 0)
        self.index = index
    }

    /// Usable for new traffic: up, enabled and with a weight.
    @inline(__always) public var isUsable: Bool { !isDisabled && weight > 0 && isUp.load(ordering: .relaxed) }

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
    public var followsClientPort: Bool { definition.address.port == nil && { if case .unix = definition.address.host { return false } else { return true } }() }

    /// `option srvtcpka` (or `tcpka`) in its backend.
    let keepAlive: Bool

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
        guard maxconn > 0 else { active.add(1, ordering: .relaxed); return true }
        var current = active.load(ordering: .relaxed)
        while current < maxconn {
            let (exchanged, original) = active.compareExchange(expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Below its `maxconn` (0 means unlimited).
    @inline(__always) public var hasRoom: Bool { maxconn == 0 || active.load(ordering: .relaxed) < maxconn }
}

/// A backend: its servers, rules, and the balancing state shared by every thread.
public final class RuntimeBackend: @unchecked Sendable {
    public let name: String
    public let definition: ProxyDefinition
    public let servers: [RuntimeServer]
    private let serverIndex: [String: RuntimeServer]
    public var mode: ProxyMode { settings.mode }
    /// Stored, not computed from `definition`: a field read never copies the whole struct.
    public let settings: ProxySettings
    /// `balance source|uri`: requests need a hash key.
    let hashesRequests: Bool
    /// Read on every request: kept apart so reading one never copies the settings.
    let forwardFor: ForwardFor?
    let timeouts: Timeouts
    let balancer: Balancer
    /// Error pages by status (raw responses read at load).
    public let errorPages: [Int: [UInt8]]
    /// The proxy's HTTP rules, compiled.
    let rules: CompiledHTTPRules

    init(definition: ProxyDefinition) throws {
        name = definition.name
        self.definition = definition
        settings = definition.settings
        forwardFor = definition.settings.options.forwardFor
        timeouts = definition.settings.timeouts
        switch definition.settings.balance {
        case .source, .uri: hashesRequests = true
        default: hashesRequests = false
        }
        var list: [RuntimeServer] = []
        for (i, s) in definition.servers.enumerated() {
            list.append(RuntimeServer(definition: s, backend: definition.name, index: i, address: try Self.resolve(s.address),
                                      keepAlive: definition.settings.options.serverKeepAlive))
        }
        servers = list
        serverIndex = Dictionary(list.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        balancer = Balancer(algorithm: definition.settings.balance, servers: list)
        let pages = definition.settings.errorPages.mapValues(\.bytes)
        errorPages = pages
        rules = CompiledHTTPRules(definition, errorPages: pages)
    }

    /// Turns a configured server address into a socket address. Names were resolved at load;
    /// one left unresolved (`-dr`) gets the unspecified address, and its server is disabled.
    static func resolve(_ a: ServerAddress) throws -> SocketAddress {
        let port = UInt16(a.port ?? 0)
        switch a.host {
        case .ip(let ip):
            return socketAddress(ip, port: port)
        case .name:
            return socketAddress(a.resolved ?? IPAddress(v4: 0), port: port)
        case .unix(let path):
            return try SocketAddress(checkedUnixPath: path)
        }
    }

    static func socketAddress(_ ip: IPAddress, port: UInt16) -> SocketAddress {
        ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: port) : SocketAddress(ipv6: ip.bytes16, port: port)
    }

    /// Requests waiting for a server slot, oldest first, shared by every loop.
    let queue = BackendQueue()

    /// How many requests may wait: the sum of the usable servers' `maxqueue` (0: no limit).
    var queueLimit: Int {
        var total = 0
        for s in servers where s.isUsable {
            if s.maxqueue == 0 { return .max }
            total += s.maxqueue
        }
        return total
    }

    /// A request slot on `server` was freed: wake the oldest queued request on its loop.
    func slotFreed() {
        guard let next = queue.takeOldest() else { return }
        next.loop.post { next.waiter.leaveQueue() }
    }

    /// The server with this name (for `srv_is_up`), without a scan.
    public func server(named name: String) -> RuntimeServer? { serverIndex[name] }

    /// Servers usable now: normal ones, or backups when no normal server is usable.
    public var usableServerCount: Int {
        servers.reduce(0) { $0 + ($1.isUsable && !$1.isBackup ? 1 : 0) }
    }
}

/// A proxy's `http-request`, `http-response` and 1.x rules, ready to run.
struct CompiledHTTPRules {
    let request: [CompiledRequestRule]
    let response: [CompiledResponseRule]
    let legacyRequest: [(RuleGuard, LegacyRewrite)]
    let legacyResponse: [(RuleGuard, LegacyRewrite)]

    /// Response rules of any kind run on this proxy's responses.
    let hasResponseRules: Bool

    init(_ p: ProxyDefinition, errorPages: [Int: [UInt8]]) {
        request = p.httpRequestRules.map { CompiledRequestRule($0, errorPages: errorPages) }
        response = p.httpResponseRules.map { CompiledResponseRule($0) }
        legacyRequest = p.legacyRewrites.filter { $0.action.direction == .request }.map { ($0.guardState, $0.action) }
        legacyResponse = p.legacyRewrites.filter { $0.action.direction == .response }.map { ($0.guardState, $0.action) }
        hasResponseRules = !response.isEmpty || !legacyResponse.isEmpty
    }
}

/// A frontend: where connections arrive, its rules and its routing.
public final class RuntimeFrontend: @unchecked Sendable {
    public let name: String
    public let definition: ProxyDefinition
    public var mode: ProxyMode { settings.mode }
    /// Stored, not computed from `definition`: a field read never copies the whole struct.
    public let settings: ProxySettings
    /// Read on every request: kept apart so reading one never copies the settings.
    let forwardFor: ForwardFor?
    let timeouts: Timeouts
    /// `use_backend` rules with their targets resolved.
    let routes: [(RuntimeBackend, RuleGuard)]
    let defaultBackend: RuntimeBackend?
    /// For a `listen` section: itself as a backend.
    let ownBackend: RuntimeBackend?
    public let active = Atomic<Int>(0)
    public let errorPages: [Int: [UInt8]]
    /// The proxy's HTTP rules, compiled.
    let rules: CompiledHTTPRules
    let tcpConnectionRules: [Rule<TCPRequestAction>]
    let tcpContentRules: [Rule<TCPRequestAction>]
    var logDestinations: [LogDestination] = []

    init(definition: ProxyDefinition, backends: [String: RuntimeBackend], logger: Logger) {
        name = definition.name
        self.definition = definition
        settings = definition.settings
        forwardFor = definition.settings.options.forwardFor
        timeouts = definition.settings.timeouts
        routes = definition.useBackendRules.compactMap { r in backends[r.backend].map { ($0, r.guardState) } }
        ownBackend = definition.kind == .listen ? backends[definition.name] : nil
        defaultBackend = definition.settings.defaultBackend.flatMap { backends[$0] } ?? ownBackend
        let pages = definition.settings.errorPages.mapValues(\.bytes)
        errorPages = pages
        rules = CompiledHTTPRules(definition, errorPages: pages)
        tcpConnectionRules = definition.tcpRequestRules.filter { $0.action.layer == .connection }
        tcpContentRules = definition.tcpRequestRules.filter { $0.action.layer == .content }
        logDestinations = logger.destinations(for: definition.settings.logs)
    }
}

/// Everything the loops share, built once from a checked configuration.
public final class RuntimeModel: @unchecked Sendable {
    public let configuration: Configuration
    public let frontends: [RuntimeFrontend]
    public let backends: [String: RuntimeBackend]
    /// Connections open across all loops (global `maxconn`).
    public let activeConnections = Atomic<Int>(0)
    public let maxConnections: Int
    /// Kernel pipes held by TCP splicing across all loops, and the most it may hold (`maxpipes`).
    public let pipesInUse = Atomic<Int>(0)
    public let maxPipes: Int
    /// True once a soft stop began.
    public let stopping = Atomic<Bool>(false)
    /// `proc.` variables, shared by every loop.
    public let processVariables = Locked<VariableTable>([:])
    public let logger: Logger

    /// `logger` is opened by the start-up before any chroot; tests let the model open one.
    public init(configuration: Configuration, logger: Logger? = nil) throws {
        self.configuration = configuration
        var backends: [String: RuntimeBackend] = [:]
        for p in configuration.proxies where p.isBackend { backends[p.name] = try RuntimeBackend(definition: p) }
        self.backends = backends
        let logger = logger ?? Logger(configuration: configuration)
        self.logger = logger
        frontends = configuration.proxies.filter(\.isFrontend).map { RuntimeFrontend(definition: $0, backends: backends, logger: logger) }
        maxConnections = configuration.global.maxconn ?? 4096
        maxPipes = configuration.global.maxpipes ?? maxConnections / 2
    }
}
