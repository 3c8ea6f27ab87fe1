import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// A frontend: where connections arrive, its rules and its routing.
public final class Frontend: @unchecked Sendable {
    public let name: String
    public let definition: ProxyDefinition
    public var mode: ProxyMode { settings.mode }
    /// Stored, not computed from `definition`: a field read never copies the whole struct.
    public let settings: ProxySettings
    /// Read on every request: kept apart so reading one never copies the settings.
    let forwardFor: ForwardFor?
    let timeouts: Timeouts
    /// Where a `use_backend` rule sends: a backend, or a name computed per request
    /// (`use_backend %[req.hdr(host),lower,map(hosts.map,www)]`).
    enum Route {
        case fixed(Backend)
        case dynamic(LogFormat)
    }
    /// `use_backend` rules with their targets resolved.
    let routes: [(Route, RuleGuard)]
    let defaultBackend: Backend?
    /// For a `listen` section: itself as a backend.
    let ownBackend: Backend?
    public let active = Atomic<Int>(0)
    /// Its `maxconn` (Int.max: none), changed at run time by `set maxconn frontend`.
    public let maxconn: Atomic<Int>
    /// `disable frontend`: its TCP listeners refuse connections until `enable frontend`.
    public let disabled = Atomic<Bool>(false)
    /// The listen backlog its sockets were given, for `enable frontend` to listen again.
    public var backlog: Int { settings.backlog ?? settings.maxconn ?? 1024 }
    public let errorPages: [Int: [UInt8]]
    /// The proxy's HTTP rules, compiled.
    let rules: CompiledHTTPRules
    let tcpConnectionRules: [Rule<TCPRequestAction>]
    let tcpContentRules: [Rule<TCPRequestAction>]
    /// How many request capture slots its sessions hold (`tcp-request content capture`).
    let requestCaptures: Int
    /// Its `tcp-request content set-var-fmt` formats, compiled.
    let contentFormats: [String: LogFormat]
    /// `tcp-request inspect-delay` (ms), when a TCP frontend's content rules or routes read
    /// the client's first bytes; nil: nothing waits for them.
    let inspectDelay: Int64?
    var logDestinations: [LogDestination] = []
    /// The access-log line (`option httplog|tcplog`, `log-format`); nil: "Connect from".
    let accessLog: LogFormat?
    /// Read per request: whether the log needs the request line, or the server side's address.
    let accessLogReadsRequestLine: Bool
    let accessLogReadsSource: Bool
    /// Lines logged (`%lc`).
    let logCount = Atomic<Int>(0)
    /// Its stats page, when `stats` lines enable one (read per request: nil costs one test).
    let statsPage: StatsEndpoint?

    /// Where its counters start in each loop's block (`CounterTable`).
    public internal(set) var statBase = 0
    /// The most sessions it held at once (`smax`).
    public let peakSessions = Atomic<Int>(0)

    init(definition: ProxyDefinition, backends: [String: Backend], logger: Logger) {
        name = definition.name
        self.definition = definition
        settings = definition.settings
        maxconn = Atomic(definition.settings.maxconn ?? .max)
        forwardFor = definition.settings.options.forwardFor
        timeouts = definition.settings.timeouts
        routes = definition.useBackendRules.compactMap { r in
            if r.backend.contains("%[") { return (.dynamic(LogFormat(r.backend)), r.guardState) }
            return backends[r.backend].map { (.fixed($0), r.guardState) }
        }
        ownBackend = definition.kind == .listen ? backends[definition.name] : nil
        defaultBackend = definition.settings.defaultBackend.flatMap { backends[$0] } ?? ownBackend
        let pages = definition.settings.errorPages.mapValues(\.bytes)
        errorPages = pages
        rules = CompiledHTTPRules(definition, errorPages: pages)
        tcpConnectionRules = definition.tcpRequestRules.filter { $0.action.layer == .connection }
        tcpContentRules = definition.tcpRequestRules.filter { $0.action.layer == .content }
        requestCaptures = definition.requestCaptures.count
        contentFormats = tcpContentRules.compiledFormats
        inspectDelay = definition.mode == .tcp && definition.readsClientHello ? definition.settings.inspectDelay.map(Int64.init) : nil
        logDestinations = logger.destinations(for: definition.settings.logs)
        let format = logDestinations.isEmpty ? nil : definition.settings.accessLog.map { LogFormat($0.text, separators: true) }
        accessLog = format
        accessLogReadsRequestLine = format?.readsRequestLine ?? false
        accessLogReadsSource = format?.readsBackendSource ?? false
        statsPage = definition.settings.stats.enabled ? StatsEndpoint(definition.settings.stats) : nil
    }
}
