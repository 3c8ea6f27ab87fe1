import ProxyConfig
import ProxyEngine
import ProxySystem
import Glibc

/// `http-request use-service prometheus-exporter`: the metrics in HAProxy's exporter names
/// (`haproxy_process_*`, `haproxy_frontend_*`, `haproxy_backend_*`, `haproxy_server_*`) and
/// labels (`proxy`, `server`, `code`, one-hot `state`), from the per-thread counters summed
/// on read. A figure we do not measure is left out rather than written as 0. Ours on top:
/// `haproxy_process_reloads_total`, `haproxy_process_last_reload_success`, `..._generation`.
public final class PrometheusExporter: LocalService, @unchecked Sendable {
    let commands: RuntimeCommands

    public init(commands: RuntimeCommands) {
        self.commands = commands
    }

    /// The scopes a scrape asks for (`?scope=`, repeatable; none means all) and `?no-maint`.
    struct Query {
        var scopes: Set<String> = []
        var noMaint = false

        init(_ target: String) {
            guard let q = target.firstIndex(of: "?") else { return }
            for pair in target[target.index(after: q)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                switch parts[0] {
                case "scope": if parts.count == 2 { scopes.insert(String(parts[1])) }
                case "no-maint": noMaint = true
                default: break
                }
            }
        }

        func wants(_ scope: String) -> Bool { scopes.isEmpty || scopes.contains(scope) || scopes.contains("*") }
    }

    public func respond(to request: ServiceRequest) -> ServiceResponse {
        ServiceResponse(status: 200, headers: [("content-type", "text/plain; version=0.0.4"), ("cache-control", "no-cache")],
                        body: render(Query(request.target)))
    }

    static let codes = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
    static let serverStates = ["DOWN", "UP", "MAINT", "DRAIN", "NOLB"]
    static let checkStates = ["HANA", "SOCKERR", "L4OK", "L4TOUT", "L4CON", "L6OK", "L6TOUT", "L6RSP", "L7TOUT", "L7RSP",
                              "L7OK", "L7OKC", "L7STS", "PROCERR", "PROCTOUT", "PROCOK"]

    /// The whole exposition, built once per scrape.
    func render(_ query: Query) -> [UInt8] {
        let model = commands.engine.model
        var out = MetricsText()
        let frontends = model.frontends
        // Backends in the configuration's order, each with its counters summed once.
        let backends = commands.proxyIDs.compactMap { model.backends[$0.name] }
        if query.wants("global") { renderProcess(&out, model) }
        if query.wants("frontend") { renderFrontends(&out, frontends, model) }
        if query.wants("backend") { renderBackends(&out, backends, model) }
        if query.wants("server") { renderServers(&out, backends, model, noMaint: query.noMaint) }
        return out.bytes
    }

    func renderProcess(_ out: inout MetricsText, _ model: RuntimeModel) {
        let now = Clock.wallClock().seconds
        var connections = 0, requests = 0, bytesOut = 0
        for f in model.frontends {
            let t = model.counters.totals(f.statBase)
            connections += t.sessions; requests += t.requests; bytesOut += t.bytesOut
        }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let gauges: [(String, String, Int)] = [
            ("nbthread", "Event-loop threads serving traffic", commands.threads),
            ("nbproc", "Worker processes (always 1)", 1),
            ("relative_process_id", "This worker's number (always 1)", 1),
            ("uptime_seconds", "Seconds since this process started", max(0, now - commands.startedAt)),
            ("max_fds", "The file-descriptor limit of this process", Int(limit.rlim_cur)),
            ("max_connections", "The most connections this process accepts at once", model.connectionLimit.load(ordering: .relaxed)),
            ("hard_max_connections", "The most connections this process accepts at once", model.maxConnections),
            ("current_connections", "Connections open now", model.activeConnections.load(ordering: .relaxed)),
        ]
        for (name, help, value) in gauges { out.single("haproxy_process_" + name, "gauge", help, value) }
        out.single("haproxy_process_connections_total", "counter", "Connections accepted since start (carried over reloads)", connections)
        out.single("haproxy_process_requests_total", "counter", "HTTP requests received since start (carried over reloads)", requests)
        out.single("haproxy_process_max_pipes", "gauge", "The most pipes splicing may hold", model.maxPipes)
        out.single("haproxy_process_pipes_used_total", "counter", "Pipes in use for splicing", model.pipesInUse.load(ordering: .relaxed))
        let tls = model.tls
        let handshakes = tls.handshakes.load(ordering: .relaxed)
        out.single("haproxy_process_current_ssl_connections", "gauge", "TLS client connections open now", tls.open.load(ordering: .relaxed))
        out.single("haproxy_process_ssl_connections_total", "counter", "TLS handshakes completed with clients since start", handshakes)
        out.single("haproxy_process_frontend_ssl_reuse", "gauge", "Percent of client TLS handshakes that resumed a session",
                   handshakes == 0 ? 0 : tls.resumed.load(ordering: .relaxed) * 100 / handshakes)
        out.single("haproxy_process_ssl_failed_handshakes_total", "counter", "Client TLS handshakes that failed (ours: HAProxy logs them only)",
                   tls.failures.load(ordering: .relaxed))
        out.single("haproxy_process_stopping", "gauge", "1 once this process is soft-stopping", commands.stopping() ? 1 : 0)
        let listeners = commands.engine.listeners.count
        out.single("haproxy_process_jobs", "gauge", "Connections and listeners held", model.activeConnections.load(ordering: .relaxed) + listeners)
        out.single("haproxy_process_listeners", "gauge", "Listening sockets", listeners)
        out.single("haproxy_process_dropped_logs_total", "counter", "Log lines dropped because the log path was full",
                   model.logger.dropped.load(ordering: .relaxed))
        out.single("haproxy_process_bytes_out_total", "counter", "Bytes sent to clients", bytesOut)
        out.family("haproxy_process_build_info", "gauge", "The version, as a label")
        out.sample("haproxy_process_build_info", [("version", ProductVersion.compatible)], 1)
        out.single("haproxy_process_start_time_seconds", "gauge", "When this process started, in seconds since the epoch", commands.startedAt)
        let generation = model.generation.load(ordering: .relaxed)
        out.single("haproxy_process_reloads_total", "counter", "Reloads in this chain of processes (ours)", generation)
        out.single("haproxy_process_generation", "gauge", "This process's place in its chain of reloads, 0 for a fresh start (ours)", generation)
        out.single("haproxy_process_last_reload_success", "gauge", "1: the reload that started this process succeeded, as it serves (ours)", 1)
    }

    func renderFrontends(_ out: inout MetricsText, _ frontends: [Frontend], _ model: RuntimeModel) {
        let totals = frontends.map { model.counters.totals($0.statBase) }
        let labels = frontends.map { [("proxy", $0.name)] }
        func each(_ name: String, _ type: String, _ help: String, _ value: (Int) -> Int?) {
            out.family("haproxy_frontend_" + name, type, help)
            for i in frontends.indices { if let v = value(i) { out.sample("haproxy_frontend_" + name, labels[i], v) } }
        }
        each("current_sessions", "gauge", "Sessions open now") { frontends[$0].active.load(ordering: .relaxed) }
        each("max_sessions", "gauge", "The most sessions open at once") { frontends[$0].peakSessions.load(ordering: .relaxed) }
        each("limit_sessions", "gauge", "The frontend's maxconn") { self.commands.sessionLimit(frontends[$0]) }
        each("sessions_total", "counter", "Sessions accepted") { totals[$0].sessions }
        each("bytes_in_total", "counter", "Bytes received from clients") { totals[$0].bytesIn }
        each("bytes_out_total", "counter", "Bytes sent to clients") { totals[$0].bytesOut }
        out.family("haproxy_frontend_status", "gauge", "The frontend's state, one-hot: UP while it accepts")
        let stopping = commands.stopping()
        for i in frontends.indices {
            let down = stopping || frontends[i].disabled.load(ordering: .relaxed)
            out.sample("haproxy_frontend_status", labels[i] + [("state", "DOWN")], down ? 1 : 0)
            out.sample("haproxy_frontend_status", labels[i] + [("state", "UP")], down ? 0 : 1)
        }
        let http = frontends.indices.filter { frontends[$0].mode == .http }
        Self.responsesByClass(&out, "haproxy_frontend_http_responses_total", labels, totals, http)
        out.family("haproxy_frontend_http_requests_total", "counter", "HTTP requests received")
        for i in http { out.sample("haproxy_frontend_http_requests_total", labels[i], totals[i].requests) }
        each("connections_total", "counter", "Connections accepted") { totals[$0].sessions }
    }

    func renderBackends(_ out: inout MetricsText, _ backends: [Backend], _ model: RuntimeModel) {
        let totals = backends.map { model.counters.totals($0.statBase) }
        let labels = backends.map { [("proxy", $0.name)] }
        let now = Clock.wallClock().seconds
        func usable(_ b: Backend) -> (active: [Server], backup: [Server]) {
            (b.servers.filter { !$0.isBackup && $0.isUsable }, b.servers.filter { $0.isBackup && $0.isUsable })
        }
        let serving = backends.map(usable)
        func each(_ name: String, _ type: String, _ help: String, _ value: (Int) -> Int) {
            out.family("haproxy_backend_" + name, type, help)
            for i in backends.indices { out.sample("haproxy_backend_" + name, labels[i], value(i)) }
        }
        each("current_queue", "gauge", "Requests waiting for a server now") { backends[$0].queued }
        each("max_queue", "gauge", "The most requests waiting at once") { backends[$0].peakQueue.load(ordering: .relaxed) }
        each("current_sessions", "gauge", "Sessions on this backend now") { backends[$0].active.load(ordering: .relaxed) }
        each("max_sessions", "gauge", "The most sessions at once") { backends[$0].peakSessions.load(ordering: .relaxed) }
        each("sessions_total", "counter", "Sessions given to this backend") { totals[$0].sessions }
        each("bytes_in_total", "counter", "Bytes received from clients for this backend") { totals[$0].bytesIn }
        each("bytes_out_total", "counter", "Bytes sent to clients from this backend") { totals[$0].bytesOut }
        each("connection_errors_total", "counter", "Failed connection attempts to its servers") { totals[$0].connectErrors }
        each("response_errors_total", "counter", "Responses that failed") { totals[$0].responseErrors }
        out.family("haproxy_backend_status", "gauge", "The backend's state, one-hot: UP while a server can take traffic")
        for i in backends.indices {
            let up = !serving[i].active.isEmpty || !serving[i].backup.isEmpty || backends[i].servers.isEmpty
            out.sample("haproxy_backend_status", labels[i] + [("state", "DOWN")], up ? 0 : 1)
            out.sample("haproxy_backend_status", labels[i] + [("state", "UP")], up ? 1 : 0)
        }
        func weight(_ i: Int) -> Int {
            let s = serving[i].active.isEmpty ? serving[i].backup : serving[i].active
            return s.reduce(0) { $0 + $1.weight }
        }
        each("weight", "gauge", "The summed weight of the servers taking traffic", weight)
        each("active_servers", "gauge", "Active servers taking traffic") { serving[$0].active.count }
        each("backup_servers", "gauge", "Backup servers taking traffic") { serving[$0].backup.count }
        each("check_last_change_seconds", "gauge", "Seconds since a server of this backend last changed state") { i in
            max(0, now - (backends[i].servers.map { $0.lastChange.load(ordering: .relaxed) }.max() ?? now))
        }
        each("loadbalanced_total", "counter", "Times the balancer chose a server") { totals[$0].chosen }
        let http = backends.indices.filter { backends[$0].mode == .http }
        Self.responsesByClass(&out, "haproxy_backend_http_responses_total", labels, totals, http)
        out.family("haproxy_backend_http_requests_total", "counter", "HTTP requests given to this backend")
        for i in http { out.sample("haproxy_backend_http_requests_total", labels[i], totals[i].requests) }
        each("connection_attempts_total", "counter", "Connection attempts to its servers") { totals[$0].sessions }
        each("uweight", "gauge", "The summed user weight of the servers taking traffic", weight)
    }

    func renderServers(_ out: inout MetricsText, _ backends: [Backend], _ model: RuntimeModel, noMaint: Bool) {
        var servers: [(Backend, Server)] = []
        for b in backends { for s in b.servers where !(noMaint && s.adminState == .maintenance) { servers.append((b, s)) } }
        let totals = servers.map { model.counters.totals($0.1.statBase) }
        let labels = servers.map { [("proxy", $0.0.name), ("server", $0.1.name)] }
        let checks = servers.map { $0.1.lastCheck.withLock { $0 } }
        let now = Clock.wallClock().seconds
        func each(_ name: String, _ type: String, _ help: String, _ value: (Int) -> Int?) {
            out.family("haproxy_server_" + name, type, help)
            for i in servers.indices { if let v = value(i) { out.sample("haproxy_server_" + name, labels[i], v) } }
        }
        each("current_sessions", "gauge", "Sessions on this server now") { servers[$0].1.active.load(ordering: .relaxed) }
        each("max_sessions", "gauge", "The most sessions at once") { servers[$0].1.peakSessions.load(ordering: .relaxed) }
        each("limit_sessions", "gauge", "The server's maxconn, when it has one") { i in
            let m = servers[i].1.definition.options.maxconn
            return m > 0 ? m : nil
        }
        each("sessions_total", "counter", "Sessions given to this server") { totals[$0].sessions }
        each("bytes_in_total", "counter", "Bytes received from clients for this server") { totals[$0].bytesIn }
        each("bytes_out_total", "counter", "Bytes sent to clients from this server") { totals[$0].bytesOut }
        each("connection_errors_total", "counter", "Failed connection attempts") { totals[$0].connectErrors }
        each("response_errors_total", "counter", "Responses that failed") { totals[$0].responseErrors }
        out.family("haproxy_server_status", "gauge", "The server's state, one-hot")
        for i in servers.indices {
            let status = Self.promState(commands.serverStatus(servers[i].1))
            for state in Self.serverStates { out.sample("haproxy_server_status", labels[i] + [("state", state)], state == status ? 1 : 0) }
        }
        each("weight", "gauge", "The server's effective weight") { servers[$0].1.weight }
        let checked = servers.indices.filter { servers[$0].1.definition.options.check }
        out.family("haproxy_server_check_failures_total", "counter", "Failed health checks")
        for i in checked { out.sample("haproxy_server_check_failures_total", labels[i], checks[i].failures) }
        out.family("haproxy_server_check_up_down_total", "counter", "Transitions from UP to DOWN")
        for i in checked { out.sample("haproxy_server_check_up_down_total", labels[i], checks[i].downTransitions) }
        each("check_last_change_seconds", "gauge", "Seconds since the server last changed state") {
            max(0, now - servers[$0].1.lastChange.load(ordering: .relaxed))
        }
        each("loadbalanced_total", "counter", "Times the balancer chose this server") { totals[$0].chosen }
        out.family("haproxy_server_check_status", "gauge", "The last health check's result, one-hot (servers with checks)")
        for i in checked {
            let status = checks[i].status.isEmpty ? "HANA" : checks[i].status
            for state in Self.checkStates { out.sample("haproxy_server_check_status", labels[i] + [("state", state)], state == status ? 1 : 0) }
        }
        out.family("haproxy_server_check_code", "gauge", "The last layer-7 check's HTTP status")
        for i in checked { out.sample("haproxy_server_check_code", labels[i], checks[i].code ?? 0) }
        out.family("haproxy_server_check_duration_seconds", "gauge", "How long the last health check took")
        for i in checked { out.sample("haproxy_server_check_duration_seconds", labels[i], milliseconds: Int(checks[i].durationMs)) }
        let http = servers.indices.filter { servers[$0].0.mode == .http }
        Self.responsesByClass(&out, "haproxy_server_http_responses_total", labels, totals, http)
        each("connection_attempts_total", "counter", "Connection attempts") { totals[$0].sessions }
        each("uweight", "gauge", "The server's user weight") { servers[$0].1.weight }
    }

    /// `*_http_responses_total`: one sample per status class and object.
    static func responsesByClass(_ out: inout MetricsText, _ name: String, _ labels: [[(String, String)]], _ totals: [StatTotals], _ rows: [Int]) {
        out.family(name, "counter", "HTTP responses by status class")
        for (c, code) in codes.enumerated() {
            for i in rows { out.sample(name, labels[i] + [("code", code)], totals[i].responses[c]) }
        }
    }

    /// `show stat`'s status as the exporter's one-hot state: `UP 1/3` and `no check` are UP.
    static func promState(_ status: String) -> String {
        if status.hasPrefix("MAINT") { return "MAINT" }
        if status.hasPrefix("DRAIN") { return "DRAIN" }
        if status.hasPrefix("NOLB") { return "NOLB" }
        if status.hasPrefix("DOWN") { return "DOWN" }
        return "UP"
    }
}

/// The text exposition format, written straight into bytes.
struct MetricsText {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 16) }

    mutating func append(_ s: String) { bytes.append(contentsOf: s.utf8) }

    mutating func family(_ name: String, _ type: String, _ help: String) {
        append("# HELP "); append(name); append(" "); append(help)
        append("\n# TYPE "); append(name); append(" "); append(type); bytes.append(10)
    }

    mutating func single(_ name: String, _ type: String, _ help: String, _ value: Int) {
        family(name, type, help)
        sample(name, [], value)
    }

    mutating func labels(_ labels: [(String, String)]) {
        guard !labels.isEmpty else { return }
        bytes.append(UInt8(ascii: "{"))
        for (i, (k, v)) in labels.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            append(k); append("=\"")
            for c in v.utf8 {
                switch c {
                case UInt8(ascii: "\\"): append("\\\\")
                case UInt8(ascii: "\""): append("\\\"")
                case 10: append("\\n")
                default: bytes.append(c)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Int) {
        append(name)
        self.labels(labels)
        bytes.append(UInt8(ascii: " "))
        append(String(value))
        bytes.append(10)
    }

    /// A duration in seconds with millisecond precision.
    mutating func sample(_ name: String, _ labels: [(String, String)], milliseconds: Int) {
        append(name)
        self.labels(labels)
        bytes.append(UInt8(ascii: " "))
        append("\(milliseconds / 1000).\(String(milliseconds % 1000).leftPadded(3))")
        bytes.append(10)
    }
}
