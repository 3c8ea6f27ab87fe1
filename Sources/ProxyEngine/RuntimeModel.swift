import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// Everything the loops share, built once from a checked configuration.
public final class RuntimeModel: @unchecked Sendable {
    public let configuration: Configuration
    public let frontends: [Frontend]
    public let backends: [String: Backend]
    /// Connections open across all loops (global `maxconn`).
    public let activeConnections = Atomic<Int>(0)
    /// Closes every session on a server, on every loop (`on-marked-down shutdown-sessions`);
    /// the engine sets it.
    var shutdownSessionsOf: ((Server) -> Void)?
    /// Requests and TCP sessions logged with `%rt`.
    let requestCount = Atomic<Int>(0)
    public let maxConnections: Int
    /// The limit in force: `maxConnections` until `set maxconn global` lowers it.
    public let connectionLimit = Atomic<Int>(0)
    /// Kernel pipes held by TCP splicing across all loops, and the most it may hold (`maxpipes`).
    public let pipesInUse = Atomic<Int>(0)
    /// Client TLS: handshakes completed, of which resumed, failed, and sessions open now
    /// (`show info`'s CumSslConns, SslFrontendSessionReuse_pct, CurrSslConns).
    public let tls = TLSCounters()
    /// `show resolvers`: each name server's counters.
    public let resolverCounters: ResolverCounters
    public let maxPipes: Int
    /// True once a soft stop began.
    public let stopping = Atomic<Bool>(false)
    /// `proc.` variables, shared by every loop.
    public let processVariables = Locked<VariableTable>([:])
    public let logger: Logger
    /// Every frontend's, backend's and server's counters, one block per loop.
    public let counters: CounterTable
    /// The stats page and the Prometheus exporter, installed before the loops start.
    public let services = LocalServices()
    /// The last refused request and response per proxy (`show errors`).
    public let errors = ErrorCaptures()
    /// This process's place in its chain of reloads: 0 for a fresh start, the old one's + 1.
    public let generation = Atomic<Int>(0)

    /// `logger` is opened by the start-up before any chroot; tests let the model open one.
    /// `serverTLS`: the TLS servers' contexts (`ServerTLS.loadAll`), loaded before any chroot;
    /// nil loads them here.
    public init(configuration: Configuration, logger: Logger? = nil, serverTLS: [String: ServerTLS]? = nil) throws {
        self.configuration = configuration
        resolverCounters = ResolverCounters(configuration.resolvers)
        var backends: [String: Backend] = [:]
        let tls = try serverTLS ?? ServerTLS.loadAll(configuration)
        for p in configuration.proxies where p.isBackend { backends[p.name] = try Backend(definition: p, serverTLS: tls) }
        self.backends = backends
        // `track`: each tracking server learns its target's state now, and follows it after.
        for (_, b) in backends {
            for s in b.servers {
                guard let target = s.definition.options.track else { continue }
                let parts = target.split(separator: "/", maxSplits: 1).map(String.init)
                guard let tb = parts.count == 2 ? backends[parts[0]] : b, let ts = tb.server(named: parts.last!) else { continue }
                s.tracked = ts
                ts.trackers.append(s)
            }
        }
        for (_, b) in backends {
            for s in b.servers where s.tracked == nil && !s.trackers.isEmpty {
                s.setUp(s.isUp.load(ordering: .relaxed))
                s.propagateMaintenance()
            }
        }
        let logger = logger ?? Logger(configuration: configuration)
        self.logger = logger
        frontends = configuration.proxies.filter(\.isFrontend).map { Frontend(definition: $0, backends: backends, logger: logger) }
        // Every frontend, backend and server gets its slots in each loop's counter block.
        var objects = 0
        func next() -> Int { defer { objects += 1 }; return objects * StatField.allCases.count }
        for f in frontends { f.statBase = next() }
        for p in configuration.proxies {
            guard let b = backends[p.name] else { continue }
            b.statBase = next()
            for s in b.servers { s.statBase = next() }
        }
        counters = CounterTable(threads: configuration.global.threads, objects: objects)
        maxConnections = configuration.global.maxconn ?? 4096
        connectionLimit.store(maxConnections, ordering: .relaxed)
        maxPipes = configuration.global.maxpipes ?? maxConnections / 2
        // `global set-var` / `set-var-fmt`: the variables' values at start (a reload may then
        // carry a runtime value over them).
        for v in configuration.global.initialVariables {
            if let e = v.expression {
                var value: SampleValue?
                _ = ProcessSamples.visit(e.fetch, model: self, backend: nil) { raw in
                    guard let (converted, fold) = e.convert(raw) else { return false }
                    value = SampleValue(converted, fold: fold)
                    return true
                }
                if let value { processVariables.withLock { $0[v.name] = value } }
            } else if let f = v.format {
                let text = LogFormat(f).renderConstant(model: self)
                processVariables.withLock { $0[v.name] = .string(text) }
            }
        }
    }
}
