import ProxyConfig
import ProxyEngine
import ProxySystem

/// The `typed` and `json` forms of `show stat` and `show info` (and the stats page's
/// `;typed` and `;json`): each value with its position, name and HAProxy's tags (origin,
/// nature, scope) and type, as HAProxy 2.6.12 prints them. Empty values are left out, as
/// HAProxy leaves out the fields an object does not have.
extension RuntimeCommands {
    /// Each `show stat` field's tags and type (`ORIGIN NATURE SCOPE:TYPE`), as Debian's
    /// HAProxy 2.6.12 reports them for servers and frontends; backends differ where noted.
    static let statTags: [String: String] = [
        "pxname": "KNS:str", "svname": "KNS:str", "qcur": "MGP:u32", "qmax": "MMP:u32", "scur": "MGP:u32",
        "smax": "MMP:u32", "slim": "CLP:u32", "stot": "MCP:u64", "bin": "MCP:u64", "bout": "MCP:u64",
        "dreq": "MCP:u64", "dresp": "MCP:u64", "ereq": "MCP:u64", "econ": "MCP:u64", "eresp": "MCP:u64",
        "wretr": "MCP:u64", "wredis": "MCP:u64", "status": "SGP:str", "weight": "MaP:u32", "act": "SGP:u32",
        "bck": "SGP:u32", "chkfail": "MCP:u64", "chkdown": "MCP:u64", "lastchg": "MAP:u32", "downtime": "MCP:u32",
        "qlimit": "CLP:u32", "pid": "KGP:u32", "iid": "KGS:u32", "sid": "KGS:u32", "throttle": "",
        "lbtot": "MCP:u64", "tracked": "", "type": "CGS:u32", "rate": "MRP:u32", "rate_lim": "CLP:u32",
        "rate_max": "MMP:u32", "check_status": "MOP:str", "check_code": "MOP:u32", "check_duration": "MDP:u64",
        "hrsp_1xx": "MCP:u64", "hrsp_2xx": "MCP:u64", "hrsp_3xx": "MCP:u64", "hrsp_4xx": "MCP:u64",
        "hrsp_5xx": "MCP:u64", "hrsp_other": "MCP:u64", "hanafail": "", "req_rate": "MRP:u32",
        "req_rate_max": "MMP:u32", "req_tot": "MCP:u64", "cli_abrt": "MCP:u64", "srv_abrt": "MCP:u64",
        "comp_in": "MCP:u64", "comp_out": "MCP:u64", "comp_byp": "MCP:u64", "comp_rsp": "MCP:u64",
        "lastsess": "MAP:s32", "last_chk": "MOP:str", "last_agt": "", "qtime": "MaP:u32", "ctime": "MaP:u32",
        "rtime": "MaP:u32", "ttime": "MaP:u32", "agent_status": "", "agent_code": "", "agent_duration": "",
        "check_desc": "MOP:str", "agent_desc": "", "check_rise": "CGS:u32", "check_fall": "CGS:u32",
        "check_health": "CGS:u32", "agent_rise": "", "agent_fall": "", "agent_health": "", "addr": "CGS:str",
        "cookie": "CNS:str", "mode": "CGS:str", "algo": "CGS:str", "conn_rate": "MRP:u32",
        "conn_rate_max": "MMP:u32", "conn_tot": "MCP:u64", "intercepted": "MCP:u64", "dcon": "MCP:u64",
        "dses": "MCP:u64", "wrew": "MCP:u64", "connect": "MCP:u64", "reuse": "MCP:u64", "cache_lookups": "MCP:u64",
        "cache_hits": "MCP:u64", "srv_icur": "MGP:u32", "src_ilim": "", "qtime_max": "MMP:u32",
        "ctime_max": "MMP:u32", "rtime_max": "MMP:u32", "ttime_max": "MMP:u32", "eint": "MCP:u64",
        "idle_conn_cur": "MGP:u32", "safe_conn_cur": "MGP:u32", "used_conn_cur": "MGP:u32",
        "need_conn_est": "MGP:u32", "uweight": "MaP:u32", "agg_server_status": "MGP:u32",
        "agg_server_check_status": "MGP:u32", "agg_check_status": "MGP:u32",
    ]
    static let backendStatTags: [String: String] = ["rate": "MGP:u32", "rate_max": "MGP:u32", "act": "MGP:u32", "bck": "MGP:u32"]

    /// Each `show info` field's position in HAProxy's table (typed and JSON forms number
    /// them so; some positions are fields a build leaves out), tags and type.
    static let infoTags: [String: String] = [
        "Name": "0:POS:str", "Version": "1:POS:str", "Release_date": "2:POS:str", "Nbthread": "3:CGS:u32",
        "Nbproc": "4:CGS:u32", "Process_num": "5:KGP:u32", "Pid": "6:SGP:u32", "Uptime": "7:MDP:str",
        "Uptime_sec": "8:MDP:u32", "Memmax_MB": "9:CLP:u32", "PoolAlloc_MB": "10:MGP:u32",
        "PoolUsed_MB": "11:MGP:u32", "PoolFailed": "12:MCP:u32", "Ulimit-n": "13:CLP:u32", "Maxsock": "14:CLP:u32",
        "Maxconn": "15:CLP:u32", "Hard_maxconn": "16:CLP:u32", "CurrConns": "17:MGP:u32", "CumConns": "18:MCP:u32",
        "CumReq": "19:MCP:u32", "MaxSslConns": "20:MMP:u32", "CurrSslConns": "21:MGP:u32",
        "CumSslConns": "22:MCP:u32", "Maxpipes": "23:CLP:u32", "PipesUsed": "24:MGP:u32", "PipesFree": "25:MGP:u32",
        "ConnRate": "26:MRP:u32", "ConnRateLimit": "27:CLP:u32", "MaxConnRate": "28:MMP:u32",
        "SessRate": "29:MRP:u32", "SessRateLimit": "30:CLP:u32", "MaxSessRate": "31:MRP:u32",
        "SslRate": "32:MRP:u32", "SslRateLimit": "33:CLP:u32", "MaxSslRate": "34:MMP:u32",
        "SslFrontendKeyRate": "35:MGP:u32", "SslFrontendMaxKeyRate": "36:MMP:u32",
        "SslFrontendSessionReuse_pct": "37:MGP:u32", "SslBackendKeyRate": "38:MRP:u32",
        "SslBackendMaxKeyRate": "39:MMP:u32", "SslCacheLookups": "40:MCP:u32", "SslCacheMisses": "41:MCP:u32",
        "CompressBpsIn": "42:MRP:u32", "CompressBpsOut": "43:MRP:u32", "CompressBpsRateLim": "44:CLP:u32",
        "Tasks": "47:MGP:u32", "Run_queue": "48:MGP:u32", "Idle_pct": "49:MaP:u32", "node": "50:COS:str",
        "Stopping": "52:MGP:u32", "Jobs": "53:MGP:u32", "Unstoppable Jobs": "54:MGP:u32", "Listeners": "55:MGP:u32",
        "ActivePeers": "56:MGP:u32", "ConnectedPeers": "57:MGP:u32", "DroppedLogs": "58:MGP:u32",
        "BusyPolling": "59:MGP:u32", "FailedResolutions": "60:MGP:u32", "TotalBytesOut": "61:MGP:u64",
        "TotalSplicdedBytesOut": "62:MGP:u64", "BytesOutRate": "63:MRP:u64", "DebugCommandsIssued": "64:MGP:u32",
        "CumRecvLogs": "65:MCP:u32", "Build info": "66:POS:str", "Memmax_bytes": "67:CLP:u32",
        "PoolAlloc_bytes": "68:MGP:u64", "PoolUsed_bytes": "69:MGP:u64", "Start_time_sec": "70:MDP:u32",
        "Tainted": "71:SGP:str",
    ]

    static let origins: [Character: String] = ["K": "Key", "M": "Metric", "C": "Config", "S": "Status", "P": "Product"]
    static let natures: [Character: String] = ["N": "Name", "G": "Gauge", "M": "Max", "L": "Limit", "C": "Counter", "R": "Rate",
                                               "a": "Avg", "A": "Age", "O": "Output", "D": "Duration", "T": "Time"]
    static let scopes: [Character: String] = ["S": "Service", "P": "Process"]

    /// A value as JSON: a number for the numeric types, else a string.
    static func jsonValue(_ value: String, type: String) -> String {
        if type != "str", Int64(value) != nil || UInt64(value) != nil { return value }
        var out = "\""
        for c in value.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if c.value < 0x20 { out += "\\u00" + (c.value < 16 ? "0" : "") + String(c.value, radix: 16) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }

    /// `{"origin":...,"nature":...,"scope":...}` from three tag letters.
    static func jsonTags(_ tags: Substring) -> String {
        let t = Array(tags)
        guard t.count == 3 else { return "{}" }
        return "{\"origin\":\"\(origins[t[0]] ?? "Unknown")\",\"nature\":\"\(natures[t[1]] ?? "Unknown")\",\"scope\":\"\(scopes[t[2]] ?? "Unknown")\"}"
    }

    /// One row's fields as written in the CSV (shape constants included), by position.
    func statFieldValues(_ kind: String, _ values: [String: String]) -> [String] {
        let shape = Self.statShapes[kind]!
        return Self.statFields.enumerated().map { i, name in shape[i] == "@" ? (values[name] ?? "") : shape[i] }
    }

    /// `show stat typed`: `F.IID.SID.POS.NAME.1:TAGS:TYPE:VALUE` per non-empty field.
    func statTyped(_ rows: [StatRow]) -> String {
        var text = ""
        for row in rows {
            let letter = row.isFrontend ? "F" : row.isBackend ? "B" : "S"
            let iid = row.values["iid"] ?? "0", sid = row.values["sid"] ?? "0"
            for (pos, value) in statFieldValues(row.kind, row.values).enumerated() where !value.isEmpty {
                let name = Self.statFields[pos]
                guard let tag = (row.isBackend ? Self.backendStatTags[name] : nil) ?? Self.statTags[name], !tag.isEmpty else { continue }
                text += "\(letter).\(iid).\(sid).\(pos).\(name).1:\(tag):\(value)\n"
            }
        }
        return text
    }

    /// `show stat json`: an array per object of HAProxy's field objects.
    func statJSON(_ rows: [StatRow]) -> String {
        var objects: [String] = []
        for row in rows {
            let type = row.isFrontend ? "Frontend" : row.isBackend ? "Backend" : "Server"
            let iid = row.values["iid"] ?? "0", sid = row.values["sid"] ?? "0"
            var fields: [String] = []
            for (pos, value) in statFieldValues(row.kind, row.values).enumerated() where !value.isEmpty {
                let name = Self.statFields[pos]
                guard let tag = (row.isBackend ? Self.backendStatTags[name] : nil) ?? Self.statTags[name], !tag.isEmpty else { continue }
                let parts = tag.split(separator: ":")
                fields.append("{\"objType\":\"\(type)\",\"proxyId\":\(iid),\"id\":\(sid),\"field\":{\"pos\":\(pos),\"name\":\"\(name)\"},\"processNum\":1,\"tags\":\(Self.jsonTags(parts[0])),\"value\":{\"type\":\"\(parts[1])\",\"value\":\(Self.jsonValue(value, type: String(parts[1])))}}")
            }
            objects.append("[" + fields.joined(separator: ",") + "]")
        }
        return "[" + objects.joined(separator: ",") + "]\n"
    }

    /// `show info typed` and `show info json` from `show info`'s fields.
    func infoTyped(_ fields: [(String, String)], json: Bool) -> String {
        var lines: [String] = []
        for (name, value) in fields where !value.isEmpty {
            guard let tag = Self.infoTags[name] else { continue }
            let all = tag.split(separator: ":")
            let pos = all[0], parts = all.dropFirst()
            let typedTag = parts.joined(separator: ":")
            if json {
                lines.append("{\"field\":{\"pos\":\(pos),\"name\":\"\(name)\"},\"processNum\":1,\"tags\":\(Self.jsonTags(parts[1])),\"value\":{\"type\":\"\(parts[2])\",\"value\":\(Self.jsonValue(value, type: String(parts[2])))}}")
            } else {
                lines.append("\(pos).\(name).1:\(typedTag):\(value)")
            }
        }
        return json ? "[" + lines.joined(separator: ",") + "]\n" : lines.map { $0 + "\n" }.joined()
    }
}
