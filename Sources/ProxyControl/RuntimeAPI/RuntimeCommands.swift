import ProxyConfig
import ProxyEngine
import ProxySystem
import Glibc

/// The runtime API's commands: words in, text out. Each answer ends with an empty line, as
/// HAProxy's CLI does, so scripts that read up to it work unchanged. `_getsocks` and `quit`
/// act on the connection and live in `RuntimeAPIServer`.
public struct RuntimeCommands {
    public let engine: ProxyEngine
    let startedAt: Int
    let threads: Int
    /// True once this process is soft-stopping.
    var stopping: () -> Bool

    public init(engine: ProxyEngine, startedAt: Int, threads: Int, stopping: @escaping () -> Bool) {
        self.engine = engine
        self.startedAt = startedAt
        self.threads = threads
        self.stopping = stopping
    }

    /// A command line split into commands (`;`), each into words. A backslash escapes the
    /// next character, as in HAProxy.
    public static func split(_ line: String) -> [[String]] {
        var commands: [[String]] = []
        var words: [String] = []
        var word = ""
        var escaped = false
        var inWord = false
        for c in line {
            if escaped { word.append(c); escaped = false; inWord = true; continue }
            switch c {
            case "\\": escaped = true
            case " ", "\t", "\r":
                if inWord { words.append(word); word = ""; inWord = false }
            case ";":
                if inWord { words.append(word); word = ""; inWord = false }
                if !words.isEmpty { commands.append(words) }
                words = []
            default:
                word.append(c); inWord = true
            }
        }
        if inWord { words.append(word) }
        if !words.isEmpty { commands.append(words) }
        return commands
    }

    /// A command: the words that name it, the level it needs, and its help line.
    struct Command {
        let words: [String]
        let level: AccessLevel
        let help: String
    }

    /// Every command, in help order. `_getsocks` and `quit` act on the connection and live
    /// in `RuntimeAPIServer`; `_getsocks` needs `expose-fd listeners` rather than a level.
    static let commands: [Command] = [
        Command(words: ["help"], level: .user, help: "list the commands"),
        Command(words: ["prompt"], level: .user, help: "toggle interactive mode with prompt"),
        Command(words: ["quit"], level: .user, help: "close this connection"),
        Command(words: ["set", "timeout", "cli"], level: .user, help: "change this session's idle timeout (seconds)"),
        Command(words: ["show", "info"], level: .user, help: "report information about the running process"),
        Command(words: ["show", "stat"], level: .user, help: "report counters for each proxy and server"),
        Command(words: ["show", "version"], level: .user, help: "show version of the current process"),
        Command(words: ["show", "cli", "level"], level: .user, help: "display the level of the current CLI session"),
        Command(words: ["show", "backend"], level: .user, help: "list backends in the current running config"),
        Command(words: ["show", "servers", "state"], level: .user, help: "dump volatile server information (all or for a single backend)"),
        Command(words: ["show", "resolvers"], level: .user, help: "dump counters from all resolvers section and associated name servers"),
        Command(words: ["show", "env"], level: .operator, help: "dump environment variables known to the process"),
        Command(words: ["get", "weight"], level: .user, help: "report a server's current weight"),
        Command(words: ["set", "weight"], level: .admin, help: "change a server's weight (deprecated)"),
        Command(words: ["set", "server"], level: .admin, help: "change a server's state, weight, health or address"),
        Command(words: ["disable", "server"], level: .admin, help: "disable a server for maintenance (use 'set server' instead)"),
        Command(words: ["enable", "server"], level: .admin, help: "enable a disabled server (use 'set server' instead)"),
        Command(words: ["disable", "health"], level: .admin, help: "disable health checks on a server (it counts as up)"),
        Command(words: ["enable", "health"], level: .admin, help: "enable health checks on a server"),
        Command(words: ["shutdown", "sessions", "server"], level: .admin, help: "kill sessions on a server"),
        Command(words: ["show", "errors"], level: .operator, help: "report the last request and response errors for each proxy"),
        Command(words: ["show", "sess"], level: .operator, help: "report the list of current sessions or dump this exact session"),
        Command(words: ["shutdown", "session"], level: .admin, help: "kill a specific session"),
        Command(words: ["set", "maxconn", "server"], level: .admin, help: "change a server's maxconn setting"),
        Command(words: ["set", "maxconn", "frontend"], level: .admin, help: "change a frontend's maxconn setting"),
        Command(words: ["set", "maxconn", "global"], level: .admin, help: "change the per-process maxconn setting"),
        Command(words: ["disable", "frontend"], level: .admin, help: "temporarily disable specific frontend (its ports refuse)"),
        Command(words: ["enable", "frontend"], level: .admin, help: "re-enable specific frontend"),
        Command(words: ["clear", "counters"], level: .operator, help: "clear max statistics counters (or all counters with 'all')"),
        Command(words: ["show", "acl"], level: .operator, help: "report the ACL files, or one's entries"),
        Command(words: ["get", "acl"], level: .operator, help: "report whether a value matches an ACL file, and which pattern"),
        Command(words: ["add", "acl"], level: .admin, help: "add a pattern to an ACL file ([@version] file pattern)"),
        Command(words: ["del", "acl"], level: .admin, help: "delete a pattern (or #id) from an ACL file"),
        Command(words: ["clear", "acl"], level: .admin, help: "delete every pattern of an ACL file ([@version] file)"),
        Command(words: ["prepare", "acl"], level: .admin, help: "start a new version of an ACL file"),
        Command(words: ["commit", "acl"], level: .admin, help: "make a prepared version of an ACL file current (@version file)"),
        Command(words: ["show", "map"], level: .operator, help: "report the map files, or one's entries"),
        Command(words: ["get", "map"], level: .operator, help: "report the value a key finds in a map file"),
        Command(words: ["add", "map"], level: .admin, help: "add an entry to a map file ([@version] file key value, or file << payload)"),
        Command(words: ["set", "map"], level: .admin, help: "change the value of a key (or #id) in a map file"),
        Command(words: ["del", "map"], level: .admin, help: "delete a key (or #id) from a map file"),
        Command(words: ["clear", "map"], level: .admin, help: "delete every entry of a map file ([@version] file)"),
        Command(words: ["prepare", "map"], level: .admin, help: "start a new version of a map file"),
        Command(words: ["commit", "map"], level: .admin, help: "make a prepared version of a map file current (@version file)"),
        Command(words: ["show", "ssl", "cert"], level: .operator, help: "display the SSL certificates used in memory, or the details of a file"),
        Command(words: ["set", "ssl", "cert"], level: .admin, help: "replace a certificate file (FILE << PEM with certificate, chain and key)"),
        Command(words: ["commit", "ssl", "cert"], level: .admin, help: "commit a certificate file: new connections get it, no reload"),
        Command(words: ["abort", "ssl", "cert"], level: .admin, help: "abort a transaction for a certificate file"),
        Command(words: ["new", "ssl", "cert"], level: .admin, help: "create a new, unused certificate file"),
        Command(words: ["del", "ssl", "cert"], level: .admin, help: "delete an unused certificate file"),
        Command(words: ["show", "runtime-state"], level: .operator, help: "the runtime changes a reload carries (proxy -c -V -x reads it)"),
        Command(words: ["set", "var"], level: .operator, help: "set a process-wide variable (proc.NAME) from an expression or a format"),
        Command(words: ["get", "var"], level: .operator, help: "retrieve contents of a process-wide variable"),
        Command(words: ["unset", "var"], level: .operator, help: "remove a process-wide variable"),
        Command(words: ["experimental-mode"], level: .admin, help: "accepted for HAProxy's scripts; 'set var' needs no mode here"),
        Command(words: ["expert-mode"], level: .admin, help: "accepted for HAProxy's scripts; nothing is hidden here"),
    ]

    public func run(_ words: [String], level: AccessLevel) -> String {
        guard let command = Self.commands.first(where: { words.starts(with: $0.words) }) else {
            return "Unknown command: '\(words.joined(separator: " "))'.\n" + usage(level)
        }
        guard command.level <= level else { return "Permission denied\n\n" }
        switch command.words {
        case ["show", "info"]:
            if let form = words.dropFirst(2).first(where: { $0 == "typed" || $0 == "json" }) {
                return infoTyped(infoFields(), json: form == "json") + "\n"
            }
            return info()
        case ["show", "stat"]: return showStat(words, level: level)
        case ["show", "version"]: return ProductVersion.compatible + "\n\n"
        case ["show", "cli", "level"]: return "\(level)\n\n"
        case ["show", "backend"]: return showBackend()
        case ["show", "servers", "state"]: return showServersState(words)
        case ["show", "resolvers"]: return showResolvers(words.count > 2 ? words[2] : nil)
        case ["show", "env"]: return showEnvironment(words.count > 2 ? words[2] : nil)
        case ["get", "weight"]: return getWeight(words)
        case ["set", "weight"]: return setWeight(words.count > 2 ? words[2] : nil, words.count > 3 ? words[3] : nil)
        case ["set", "server"]: return setServer(words)
        case ["disable", "server"], ["enable", "server"]:
            return answer(server(words.count > 2 ? words[2] : nil).map { _, s in
                s.setAdminState(words[0] == "disable" ? .maintenance : .ready)
                return Self.done
            })
        case ["prompt"], ["experimental-mode"], ["expert-mode"]: return "\n"
        case ["disable", "health"], ["enable", "health"]:
            return answer(server(words.count > 2 ? words[2] : nil).flatMap { _, s in
                let enable = words[0] == "enable"
                if enable && !s.definition.options.check {
                    return .failure(CommandError("Health check was not configured on this server, cannot enable."))
                }
                s.checksEnabled.store(enable, ordering: .relaxed)
                // Unchecked, a server counts as up; the next check decides again.
                if !enable { s.setUp(true) }
                return .success(Self.done)
            })
        case ["shutdown", "sessions", "server"]:
            return answer(server(words.count > 3 ? words[3] : nil).map { _, s in
                engine.shutdownSessions(server: s)
                return Self.done
            })
        case ["set", "maxconn", "server"]:
            return answer(server(words.count > 3 ? words[3] : nil).flatMap { _, s in
                guard words.count > 4, let n = Int(words[4]), n >= 0 else { return .failure(CommandError("Require <maxconn>.")) }
                s.setMaxconn(n)
                return .success(Self.done)
            })
        case ["show", "errors"]: return showErrors(words)
        case ["show", "acl"], ["get", "acl"], ["add", "acl"], ["del", "acl"], ["clear", "acl"], ["prepare", "acl"], ["commit", "acl"]:
            return runPatternCommand(words[0], .acl, words, level: level)
        case ["show", "map"], ["get", "map"], ["add", "map"], ["set", "map"], ["del", "map"], ["clear", "map"], ["prepare", "map"],
             ["commit", "map"]:
            return runPatternCommand(words[0], .map, words, level: level)
        case ["set", "maxconn", "frontend"]: return setMaxconnFrontend(words)
        case ["set", "maxconn", "global"]: return setMaxconnGlobal(words)
        case ["disable", "frontend"], ["enable", "frontend"]: return setFrontendState(words)
        case ["clear", "counters"]:
            if words.count > 2, words[2] == "all" {
                guard level >= .admin else { return "Permission denied\n\n" }
                engine.model.counters.clearAll()
            }
            clearPeaks()
            return Self.done
        case ["show", "ssl", "cert"], ["set", "ssl", "cert"], ["commit", "ssl", "cert"], ["abort", "ssl", "cert"],
             ["new", "ssl", "cert"], ["del", "ssl", "cert"]:
            return runCertificateCommand(words)
        case ["set", "var"]: return setVariable(words)
        case ["get", "var"]: return getVariable(words)
        case ["unset", "var"]: return unsetVariable(words)
        default: return usage(level)
        }
    }

    /// `show resolvers [section]`: each name server's counters, as HAProxy 2.6 lays them out.
    func showResolvers(_ only: String?) -> String {
        let sections = engine.model.resolverCounters.sections.filter { only == nil || $0.name == only }
        if only != nil && sections.isEmpty { return "Can't find that resolvers section\n\n" }
        var text = ""
        for section in sections {
            text += "Resolvers section \(section.name)\n"
            for n in section.nameservers { text += n.lines }
        }
        return text + "\n"
    }

    /// `clear counters`: the peaks start again from now.
    func clearPeaks() {
        let model = engine.model
        for f in model.frontends { f.peakSessions.store(f.active.load(ordering: .relaxed), ordering: .relaxed) }
        for b in model.backends.values {
            b.peakSessions.store(b.active.load(ordering: .relaxed), ordering: .relaxed)
            b.peakQueue.store(b.queued, ordering: .relaxed)
            for s in b.servers { s.peakSessions.store(s.active.load(ordering: .relaxed), ordering: .relaxed) }
        }
    }

    /// `show env [NAME]`: the environment the process runs with, `NAME=value` per line.
    func showEnvironment(_ name: String?) -> String {
        var lines: [String] = []
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            if let name {
                if text.hasPrefix(name + "=") { return text + "\n\n" }
            } else {
                lines.append(text)
            }
            p += 1
        }
        if name != nil { return "Variable not found\n\n" }
        return lines.map { $0 + "\n" }.joined() + "\n"
    }

    /// The commands this level may use, as HAProxy lists them.
    func usage(_ level: AccessLevel) -> String {
        var text = "The following commands are valid at this level:\n"
        for c in Self.commands where c.level <= level {
            text += "  " + c.words.joined(separator: " ").padding(to: 24) + ": " + c.help + "\n"
        }
        return text + "\n"
    }

    /// `show info`: every key Debian's HAProxy 2.6.12 prints, in its order. Values we have
    /// are real; SSL, compression, peers and pools, which we do not have, are 0; rates and
    /// the idle percentage, which we do not measure, are empty.
    func info() -> String {
        infoFields().map { "\($0.0): \($0.1)\n" }.joined() + "\n"
    }

    /// `show info`'s fields, in order.
    func infoFields() -> [(String, String)] {
        let now = Clock.wallClock().seconds
        let uptime = max(0, now - startedAt)
        let days = uptime / 86_400, hours = uptime / 3600 % 24, minutes = uptime / 60 % 60, seconds = uptime % 60
        let model = engine.model
        let pipes = model.pipesInUse.load(ordering: .relaxed)
        var cumConns = 0, cumReq = 0, bytesOut = 0
        for f in model.frontends {
            let t = model.counters.totals(f.statBase)
            cumConns += t.sessions; cumReq += t.requests; bytesOut += t.bytesOut
        }
        let current = model.activeConnections.load(ordering: .relaxed)
        let version = ProductVersion.compatible
        let tlsHandshakes = model.tls.handshakes.load(ordering: .relaxed)
        let fields: [(String, String)] = [
            ("Name", "proxy"), ("Version", version), ("Release_date", ProductVersion.releaseDate),
            ("Nbthread", "\(threads)"), ("Nbproc", "1"), ("Process_num", "1"), ("Pid", "\(ProcessCalls.pid)"),
            ("Uptime", "\(days)d \(hours)h\(String(minutes).leftPadded(2))m\(String(seconds).leftPadded(2))s"),
            ("Uptime_sec", "\(uptime)"), ("Memmax_MB", "0"), ("PoolAlloc_MB", "0"), ("PoolUsed_MB", "0"), ("PoolFailed", "0"),
            ("Ulimit-n", "\(model.configuration.global.ulimitN ?? 0)"), ("Maxsock", "\(model.configuration.global.maxsock ?? 0)"),
            ("Maxconn", "\(model.connectionLimit.load(ordering: .relaxed))"), ("Hard_maxconn", "\(model.maxConnections)"),
            ("CurrConns", "\(current)"), ("CumConns", "\(cumConns)"), ("CumReq", "\(cumReq)"),
            ("MaxSslConns", "0"), ("CurrSslConns", "\(model.tls.open.load(ordering: .relaxed))"), ("CumSslConns", "\(tlsHandshakes)"),
            ("Maxpipes", "\(model.maxPipes)"), ("PipesUsed", "\(pipes)"),
            ("PipesFree", "0"),  // pipes are closed, never pooled
            ("ConnRate", ""), ("ConnRateLimit", "0"), ("MaxConnRate", ""), ("SessRate", ""), ("SessRateLimit", "0"),
            ("MaxSessRate", ""), ("SslRate", "0"), ("SslRateLimit", "0"), ("MaxSslRate", "0"), ("SslFrontendKeyRate", "0"),
            ("SslFrontendMaxKeyRate", "0"), ("SslFrontendSessionReuse_pct", tlsHandshakes == 0 ? "0" : "\(model.tls.resumed.load(ordering: .relaxed) * 100 / tlsHandshakes)"), ("SslBackendKeyRate", "0"),
            ("SslBackendMaxKeyRate", "0"), ("SslCacheLookups", "0"), ("SslCacheMisses", "0"), ("CompressBpsIn", "0"),
            ("CompressBpsOut", "0"), ("CompressBpsRateLim", "0"), ("Tasks", "\(current)"), ("Run_queue", "0"),
            ("Idle_pct", ""), ("node", model.configuration.global.node ?? ProcessCalls.hostname), ("Stopping", stopping() ? "1" : "0"),
            ("Jobs", "\(current + engine.listeners.count)"), ("Unstoppable Jobs", "0"), ("Listeners", "\(engine.listeners.count)"),
            ("ActivePeers", "0"), ("ConnectedPeers", "0"), ("DroppedLogs", "\(model.logger.dropped.load(ordering: .relaxed))"),
            ("BusyPolling", "0"), ("FailedResolutions", "0"), ("TotalBytesOut", "\(bytesOut)"), ("TotalSplicdedBytesOut", ""),
            ("BytesOutRate", ""), ("DebugCommandsIssued", "0"), ("CumRecvLogs", "0"), ("Build info", version),
            ("Memmax_bytes", "0"), ("PoolAlloc_bytes", "0"), ("PoolUsed_bytes", "0"), ("Start_time_sec", "\(startedAt)"),
            ("Tainted", "0"),
        ]
        return fields
    }
}

extension String {
    public func padding(to width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
    public func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
