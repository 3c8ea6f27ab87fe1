import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// `show stat`: HAProxy 2.6.12's CSV, byte for byte in its layout. The header is Debian's
/// 2.6.12 header up to and including the `-` column (the module columns after it, which
/// HAProxy does not promise, are left out); every line ends with `,`; each row kind has
/// HAProxy's shape, with the same fields empty. Values come from the per-thread counters,
/// summed here; a figure we do not measure (rates, timings, compression, cache) is empty,
/// or 0 where we do not have the feature at all.
extension RuntimeCommands {
    static let statFields = "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status".split(separator: ",").map(String.init)

    /// Each row kind's shape, from HAProxy 2.6.12's output: `@` is a field we fill (empty
    /// when we have no value), anything else is written as it is.
    static let statShapes: [String: [String]] = [
        "httpFrontend": "@,@,,,@,@,@,@,@,@,0,0,0,,,,,@,,,,,,,,,@,@,@,,,,@,,0,,,,,@,@,@,@,@,@,,,,@,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,@,,,,@,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,",
        "tcpFrontend": "@,@,,,@,@,@,@,@,@,0,0,0,,,,,@,,,,,,,,,@,@,@,,,,@,,0,,,,,,,,,,,,,,@,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,@,,,,@,,0,0,0,,,,,,,,,,,0,,,,,,,,",
        "httpServer": "@,@,@,@,@,@,@,@,@,@,,0,,@,0,0,0,@,@,@,@,,,@,,,@,@,@,,@,@,@,,,,,,,@,@,@,@,@,@,,,,@,0,0,,,,,,,,,,,,@,@,@,,@,,,,@,@,@,@,,@,,,,,,,,0,@,0,,,0,,,,,,0,0,0,0,0,@,,,",
        "httpCheckedServer": "@,@,@,@,@,@,,@,@,@,,0,,@,0,0,0,@,@,@,@,@,@,@,,,@,@,@,,@,@,@,,,,@,@,@,@,@,@,@,@,@,,,,@,0,0,,,,,,@,,,,,,@,@,@,@,@,@,@,@,@,@,@,@,,@,,,,,,,,0,@,0,,,0,,,,,,0,0,0,0,0,@,,,",
        "tcpServer": "@,@,@,@,@,@,,@,@,@,,0,,@,0,0,0,@,@,@,@,,,@,,,@,@,@,,@,@,@,,,,,,,,,,,,,,,,,0,0,,,,,,,,,,,,@,@,@,,@,,,,@,@,@,@,,@,,,,,,,,0,@,0,,,0,,,,,,0,0,0,0,0,@,,,",
        // A checked server in tcp mode: the tcp layout with the check columns of an HTTP one.
        "tcpCheckedServer": "@,@,@,@,@,@,,@,@,@,,0,,@,0,0,0,@,@,@,@,@,@,@,,,@,@,@,,@,@,@,,,,@,@,@,,,,,,,,,,,0,0,,,,,,@,,,,,,@,@,@,@,@,@,@,@,@,@,@,@,,@,,,,,,,,0,@,0,,,0,,,,,,0,0,0,0,0,@,,,",
        "httpBackend": "@,@,@,@,@,@,@,@,@,@,0,0,,@,0,0,0,@,@,@,@,,@,@,,,@,@,@,,@,,@,,,,,,,@,@,@,@,@,@,,,,@,0,0,0,0,0,0,,,,,,,,,,,,,,,,,,,,,@,@,,,,,,,0,@,0,0,0,,,,,,,0,,,,,@,@,@,@",
        "tcpBackend": "@,@,@,@,@,@,@,@,@,@,0,0,,@,0,0,0,@,@,@,@,,@,@,,,@,@,@,,@,,@,,,,,,,,,,,,,,,,,0,0,0,0,0,0,,,,,,,,,,,,,,,,,,,,,@,@,,,,,,,0,@,0,,,,,,,,,0,,,,,@,@,@,@",

    ].mapValues { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }

    /// One CSV row of a kind, its `@` fields taken from `values` by column name.
    public func statRow(_ kind: String, _ values: [String: String]) -> String {
        let shape = Self.statShapes[kind]!
        var fields: [String] = []
        fields.reserveCapacity(104)
        for (i, name) in Self.statFields.enumerated() {
            let s = shape[i]
            fields.append(s == "@" ? Self.csvField(values[name] ?? "") : s)
        }
        return fields.joined(separator: ",") + ",-,\n"
    }

    /// A field as HAProxy writes it in CSV: in double quotes (its own doubled) when it holds
    /// a comma, a quote or a line break, as a check's info quoting a server's answer may.
    static func csvField(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == 0x2c || $0 == 0x22 || $0 == 0x0a || $0 == 0x0d }) else { return text }
        var out = "\""
        for c in text { if c == "\"" { out += "\"\"" } else { out.append(c) } }
        return out + "\""
    }

    /// The counters every row kind shares.
    func counterValues(_ t: StatTotals, peak: Int, http: Bool) -> [String: String] {
        var v: [String: String] = [
            "stot": "\(t.sessions)", "bin": "\(t.bytesIn)", "bout": "\(t.bytesOut)", "smax": "\(peak)",
            "econ": "\(t.connectErrors)", "pid": "1",
        ]
        if http {
            for (i, name) in ["hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"].enumerated() {
                v[name] = "\(t.responses[i])"
            }
        }
        v["req_tot"] = "\(t.requests)"
        return v
    }

    /// `show stat`: frontends, servers and backends, in the order of the configuration.
    func showStat(_ words: [String], level: AccessLevel) -> String {
        // `show stat [{iid|proxy} type sid] [up|no-maint]`: a proxy (-1: all), a type mask
        // (1 frontends, 2 backends, 4 servers) and a server id (-1: all).
        var args = Array(words.dropFirst(2))
        let form = args.first { $0 == "typed" || $0 == "json" }
        let onlyUp = args.contains("up"), noMaint = args.contains("no-maint")
        args.removeAll { $0 == "up" || $0 == "no-maint" || $0 == "desc" || $0 == "typed" || $0 == "json" }
        var proxyFilter: Int?, typeMask = 7, serverFilter: Int?
        if args.count >= 3 {
            if let n = Int(args[0]) { proxyFilter = n == -1 ? nil : n } else {
                guard let id = proxyIDs.first(where: { $0.name == args[0] })?.id else { return "No such proxy.\n\n" }
                proxyFilter = id
            }
            typeMask = Int(args[1]).map { $0 == -1 ? 7 : $0 } ?? 7
            serverFilter = Int(args[2]).flatMap { $0 == -1 ? nil : $0 }
        }
        let rows = statRows(level: level, proxyFilter: proxyFilter, typeMask: typeMask, serverFilter: serverFilter,
                            onlyUp: onlyUp, noMaint: noMaint)
        if form == "typed" { return statTyped(rows) + "\n" }
        if form == "json" { return statJSON(rows) + "\n" }
        var text = Self.statHeader
        for row in rows { text += statRow(row.kind, row.values) }
        return text + "\n"
    }

    /// One row of `show stat`: its shape and its values by column name.
    public struct StatRow {
        public var kind: String
        public var values: [String: String]
        public var isFrontend: Bool { kind.hasSuffix("Frontend") }
        public var isBackend: Bool { kind.hasSuffix("Backend") }
    }

    /// `show stat`'s header line.
    public static let statHeader = "# " + statFields.joined(separator: ",") + ",-,\n"

    /// The rows of `show stat`, in the order of the configuration, filtered as asked.
    public func statRows(level: AccessLevel, proxyFilter: Int? = nil, typeMask: Int = 7, serverFilter: Int? = nil,
                         onlyUp: Bool = false, noMaint: Bool = false, proxies: Set<String>? = nil) -> [StatRow] {
        let model = engine.model
        var rows: [StatRow] = []
        let stopping = stopping()
        let now = Clock.wallClock().seconds
        for (name, id) in proxyIDs where (proxyFilter == nil || proxyFilter == id) && (proxies?.contains(name) ?? true) {
            if typeMask & 1 != 0, let f = model.frontends.first(where: { $0.name == name }) {
                let http = f.mode == .http
                var v = counterValues(model.counters.totals(f.statBase), peak: f.peakSessions.load(ordering: .relaxed), http: http)
                v["pxname"] = name; v["svname"] = "FRONTEND"; v["iid"] = "\(id)"; v["sid"] = "0"; v["type"] = "0"
                v["scur"] = "\(f.active.load(ordering: .relaxed))"
                v["slim"] = "\(sessionLimit(f))"
                v["status"] = stopping ? "STOP" : f.disabled.load(ordering: .relaxed) ? "PAUSED" : "OPEN"
                v["mode"] = http ? "http" : "tcp"
                v["conn_tot"] = v["stot"]
                rows.append(StatRow(kind: http ? "httpFrontend" : "tcpFrontend", values: v))
            }
            guard let b = model.backends[name] else { continue }
            let http = b.mode == .http
            let usableActive = b.servers.filter { !$0.isBackup && $0.isUsable }
            let usableBackup = b.servers.filter { $0.isBackup && $0.isUsable }
            for (i, s) in b.servers.enumerated() where typeMask & 4 != 0 && (serverFilter == nil || serverFilter == i + 1) {
                if onlyUp && !(s.isUp.load(ordering: .relaxed) && s.adminState != .maintenance) { continue }
                if noMaint && s.adminState == .maintenance { continue }
                let o = s.definition.options
                let totals = model.counters.totals(s.statBase)
                var v = counterValues(totals, peak: s.peakSessions.load(ordering: .relaxed), http: http)
                let check = s.lastCheck.withLock { $0 }
                v["pxname"] = name; v["svname"] = s.name; v["iid"] = "\(id)"; v["sid"] = "\(i + 1)"; v["type"] = "2"
                v["qcur"] = "0"; v["qmax"] = "0"
                v["scur"] = "\(s.active.load(ordering: .relaxed))"
                v["slim"] = o.maxconn > 0 ? "\(o.maxconn)" : ""
                v["status"] = serverStatus(s)
                v["weight"] = "\(s.weight)"; v["uweight"] = "\(s.weight)"
                v["act"] = s.isBackup ? "0" : "1"; v["bck"] = s.isBackup ? "1" : "0"
                v["lastchg"] = "\(max(0, now - s.lastChange.load(ordering: .relaxed)))"
                v["lbtot"] = "\(totals.chosen)"
                v["connect"] = v["stot"]
                v["mode"] = http ? "http" : "tcp"
                // The address only from operator level, as HAProxy hides it from `user`.
                if level >= .operator {
                    let a = s.address
                    // A server waiting for its resolvers has no address to show.
                    v["addr"] = a.family == AF_UNIX ? (a.unixPath ?? "") : s.awaitsAddress && a.ipv4 == 0 ? "" : a.description
                }
                v["agg_server_status"] = v["status"]
                v["tracked"] = s.tracked.map { "\($0.backendName)/\($0.name)" } ?? ""
                if o.agentCheck {
                    let agent = s.lastAgent.withLock { $0 }
                    v["agent_status"] = agent.status.isEmpty ? "INI" : agent.status
                    v["agent_code"] = agent.code.map { "\($0)" } ?? ""
                    v["agent_desc"] = agent.description
                    v["agent_rise"] = "1"; v["agent_fall"] = "1"
                    v["agent_health"] = s.agentDown.load(ordering: .relaxed) ? "0" : "1"
                }
                if o.check {
                    v["chkfail"] = "\(check.failures)"; v["chkdown"] = "\(check.downTransitions)"
                    v["check_status"] = check.status.isEmpty ? "INI" : check.status
                    v["check_code"] = check.code.map { "\($0)" } ?? ""
                    v["check_duration"] = check.status.isEmpty ? "" : "\(check.durationMs)"
                    v["check_desc"] = check.description
                    v["last_chk"] = check.info
                    v["check_rise"] = "\(o.rise)"; v["check_fall"] = "\(o.fall)"; v["check_health"] = "\(check.health)"
                }
                rows.append(StatRow(kind: o.check ? (http ? "httpCheckedServer" : "tcpCheckedServer") : http ? "httpServer" : "tcpServer", values: v))
            }
            guard typeMask & 2 != 0 else { continue }
            let totals = model.counters.totals(b.statBase)
            var v = counterValues(totals, peak: b.peakSessions.load(ordering: .relaxed), http: http)
            v["pxname"] = name; v["svname"] = "BACKEND"; v["iid"] = "\(id)"; v["sid"] = "0"; v["type"] = "1"
            v["qcur"] = "\(b.queued)"; v["qmax"] = "\(b.peakQueue.load(ordering: .relaxed))"
            v["scur"] = "\(b.active.load(ordering: .relaxed))"
            v["slim"] = "\(max(1, (model.maxConnections + 9) / 10))"  // HAProxy's default fullconn
            let up = !usableActive.isEmpty || !usableBackup.isEmpty || b.servers.isEmpty  // no server at all: UP, as HAProxy says
            v["status"] = up ? "UP" : "DOWN"
            let serving = usableActive.isEmpty ? usableBackup : usableActive
            v["weight"] = "\(serving.reduce(0) { $0 + $1.weight })"; v["uweight"] = v["weight"]
            v["act"] = "\(usableActive.count)"; v["bck"] = "\(usableBackup.count)"
            v["chkdown"] = "0"
            v["lastchg"] = "\(max(0, now - (b.servers.map { $0.lastChange.load(ordering: .relaxed) }.max() ?? now)))"
            v["lbtot"] = "\(totals.chosen)"
            v["connect"] = v["stot"]
            v["mode"] = http ? "http" : "tcp"
            v["algo"] = b.settings.balance.name
            v["agg_server_status"] = "\(up ? 0 : 1)"; v["agg_server_check_status"] = "0"; v["agg_check_status"] = "0"
            rows.append(StatRow(kind: http ? "httpBackend" : "tcpBackend", values: v))
        }
        return rows
    }

    /// A server's status as `show stat` spells it.
    public func serverStatus(_ s: Server) -> String {
        switch s.adminState {
        case .maintenance where s.awaitsAddress && s.operatorAdminState != .maintenance: return "MAINT (resolution)"
        case .maintenance where s.inheritsMaintenance && s.operatorAdminState != .maintenance:
            return "MAINT (via \(s.tracked.map { "\($0.backendName)/\($0.name)" } ?? "?"))"
        case .maintenance: return "MAINT"
        case .drain: return s.adminByAgent.load(ordering: .relaxed) ? "DRAIN (agent)" : "DRAIN"
        case .ready:
            if !s.isUp.load(ordering: .relaxed) && s.agentDown.load(ordering: .relaxed) { return "DOWN (agent)" }
            if !s.definition.options.check && s.tracked == nil { return s.isUp.load(ordering: .relaxed) ? "no check" : "DOWN" }
            let up = s.isUp.load(ordering: .relaxed)
            let word = up && s.isNoLoadBalancing ? "NOLB" : up ? "UP" : "DOWN"
            // On the way down (`UP 1/3`: one more failure of 3) or up (`DOWN 1/2`), from the
            // check's health counter, as HAProxy prints it.
            let o = s.definition.options
            guard o.check, s.tracked == nil else { return word }
            let health = s.lastCheck.withLock { $0.status.isEmpty ? -1 : $0.health }
            if up && health >= 0 && health < o.rise + o.fall - 1 { return "\(word) \(max(1, health - o.rise + 1))/\(o.fall)" }
            if !up && health > 0 { return "DOWN \(health)/\(o.rise)" }
            return word
        }
    }
}

extension BalanceAlgorithm {
    /// The name `show stat` prints in `algo`.
    var name: String {
        switch self {
        case .roundRobin: return "roundrobin"
        case .staticRoundRobin: return "static-rr"
        case .leastConnections: return "leastconn"
        case .first: return "first"
        case .source: return "source"
        case .uri: return "uri"
        case .random: return "random"
        }
    }
}
