import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// A backend: its servers, rules, and the balancing state shared by every thread.
public final class Backend: @unchecked Sendable {
    public let name: String
    public let definition: ProxyDefinition
    public let servers: [Server]
    private let serverIndex: [String: Server]
    public var mode: ProxyMode { settings.mode }
    /// Stored, not computed from `definition`: a field read never copies the whole struct.
    public let settings: ProxySettings
    /// `balance source|uri`: requests need a hash key.
    let hashesRequests: Bool
    /// Map-based hashing and `static-rr`: one server's weight cannot change alone (the
    /// runtime API accepts only 0 or the initial weight, as HAProxy does).
    public var hasStaticAlgorithm: Bool {
        switch settings.balance {
        case .source, .uri, .staticRoundRobin: return true
        default: return false
        }
    }
    /// Read on every request: kept apart so reading one never copies the settings.
    let forwardFor: ForwardFor?
    /// `http-send-name-header`: the header's name, as written and lower-cased.
    let sendNameHeader: NameHeader?
    final class NameHeader: Sendable {
        let name: [UInt8], lower: [UInt8]
        init(_ text: String) { name = Array(text.utf8); lower = Array(text.lowercased().utf8) }
    }
    let timeouts: Timeouts
    let balancer: Balancer
    /// Error pages by status (raw responses read at load).
    public let errorPages: [Int: [UInt8]]
    /// Its stats page, when `stats` lines enable one (read per request: nil costs one test).
    let statsPage: StatsEndpoint?
    /// The proxy's HTTP rules, compiled.
    let rules: CompiledHTTPRules
    /// `tcp-request content` rules of the backend: run once it is chosen.
    let tcpContentRules: [Rule<TCPRequestAction>]
    let contentFormats: [String: LogFormat]

    /// Where its counters start in each loop's block (`CounterTable`).
    public internal(set) var statBase = 0
    /// The most sessions it held at once (`smax`).
    public let peakSessions = Atomic<Int>(0)
    /// The most requests its queue held at once (`qmax`).
    public let peakQueue = Atomic<Int>(0)
    /// Slots its servers hold now (`scur`).
    public let active = Atomic<Int>(0)

    /// How many of its normal and backup servers take traffic now (the log lines' "N active
    /// and M backup servers"), in one pass.
    func usableCounts() -> (active: Int, backups: Int) {
        var active = 0, backups = 0
        for s in servers where s.isUsable { if s.isBackup { backups += 1 } else { active += 1 } }
        return (active, backups)
    }

    /// `serverTLS` holds the TLS servers' contexts by `backend/server`, loaded beforehand.
    init(definition: ProxyDefinition, serverTLS: [String: ServerTLS]) throws {
        name = definition.name
        self.definition = definition
        settings = definition.settings
        forwardFor = definition.settings.options.forwardFor
        sendNameHeader = definition.settings.sendNameHeader.map(NameHeader.init)
        timeouts = definition.settings.timeouts
        switch definition.settings.balance {
        case .source, .uri: hashesRequests = true
        default: hashesRequests = false
        }
        var list: [Server] = []
        for (i, s) in definition.servers.enumerated() {
            list.append(Server(definition: s, backend: definition.name, index: i, address: try Self.resolve(s.address),
                                      keepAlive: definition.settings.options.serverKeepAlive,
                                      tls: serverTLS["\(definition.name)/\(s.name)"]))
            // `option tcp-smart-connect`: where the connection has bytes to send at once, as
            // HAProxy decides it (a request in HTTP mode, a PROXY header).
            list[i].keepAliveProbes = definition.settings.serverProbes
            list[i].delaysHandshakeACK = definition.settings.options.smartConnect
                && (definition.settings.mode == .http || s.options.sendProxy != nil)
        }
        servers = list
        serverIndex = Dictionary(list.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        balancer = Balancer(algorithm: definition.settings.balance, servers: list)
        let pages = definition.settings.errorPages.mapValues(\.bytes)
        errorPages = pages
        statsPage = definition.settings.stats.enabled ? StatsEndpoint(definition.settings.stats) : nil
        rules = CompiledHTTPRules(definition, errorPages: pages)
        tcpContentRules = definition.isFrontend ? [] : definition.tcpRequestRules.filter { $0.action.layer == .content }
        contentFormats = tcpContentRules.compiledFormats
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

    /// Requests waiting in its queue now (`qcur`).
    public var queued: Int { queue.count }

    /// A slot may be free: wake the oldest queued request on its loop.
    func slotFreed() {
        guard let next = queue.takeOldest() else { return }
        next.loop.post { next.waiter.leaveQueue() }
    }

    /// The server with this name (for `srv_is_up`), without a scan.
    public func server(named name: String) -> Server? { serverIndex[name] }

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
        response = p.httpResponseRules.map { CompiledResponseRule($0, errorPages: errorPages) }
        legacyRequest = p.legacyRewrites.filter { $0.action.direction == .request }.map { ($0.guardState, $0.action) }
        legacyResponse = p.legacyRewrites.filter { $0.action.direction == .response }.map { ($0.guardState, $0.action) }
        hasResponseRules = !response.isEmpty || !legacyResponse.isEmpty
    }
}
