import ProxyRules
import ProxySystem

/// The `global` section's keywords.
extension ConfigParser {
    static let globalKeywords = [
        "daemon", "maxconn", "pidfile", "nbthread", "log", "stats", "hard-stop-after", "grace", "spread-checks",
        "mworker-max-reloads", "mworker-max-old-workers", "master-worker",
        "ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites", "ssl-default-bind-curves", "ssl-default-bind-options",
        "ssl-default-server-ciphers", "ssl-default-server-ciphersuites", "ssl-default-server-curves", "ssl-default-server-options",
        "ssl-server-verify", "tune.ssl.default-dh-param", "crt-base", "ca-base", "tune.ssl.cachesize", "tune.ssl.lifetime",
        "close-spread-time", "user", "group", "uid", "gid", "chroot", "ulimit-n", "tune.bufsize",
        "tune.maxrewrite", "server-state-file", "setenv", "presetenv", "unsetenv", "resetenv", "set-var", "set-var-fmt",
        "strict-limits", "noreuseport", "zero-warning", "fd-hard-limit", "maxpipes", "node",
        "nosplice", "max-spread-checks", "no-memory-trimming", "set-dumpable", "noepoll", "nopoll", "nokqueue",
        "noevports", "nogetaddrinfo",
    ]

    /// Keywords HAProxy has in `global` that we do not support yet.
    static let knownUnsupportedGlobal: Set<String> = [
        "nbproc", "description", "quiet", "debug",
        "log-send-hostname", "log-tag", "lua-load", "stats bind-process", "cpu-map", "h1-case-adjust",
        "expose-experimental-directives", "maxsslconn", "maxconnrate",
        "server-state-base", "localpeer", "unix-bind", "busy-polling",
        "cluster-secret", "default-path", "h1-accept-payload-with-any-method", "h1-case-adjust-file",
        "h2-workaround-bogus-websocket-clients", "issuers-chain-path", "maxcompcpuusage", "maxcomprate",
        "maxsessrate", "maxsslrate", "maxzlibmem", "numa-cpu-mapping", "pp2-never-send-local", "profiling.tasks",
        "ssl-dh-param-file", "ssl-mode-async", "ssl-propquery", "ssl-provider", "ssl-provider-path",
        "ssl-skip-self-issued-ca", "insecure-setuid-wanted",
    ]

    func parseGlobalKeyword(_ words: [String], at location: SourceLocation) throws {
        if words[0] == "no" {
            guard words.count == 2, words[1] == "strict-limits" || words[1] == "set-dumpable" else {
                throw ConfigError("'no' in global only applies to 'strict-limits' and 'set-dumpable'")
            }
            if words[1] == "strict-limits" { config.global.strictLimits = false } else { config.global.setDumpable = false }
            return
        }
        let keyword = words[0]
        let args = words.dropFirst()
        switch keyword {
        case "daemon":
            try Values.expect(args, 0, usage: "daemon")
            config.global.daemon = true
        case "maxconn":
            try Values.expect(args, 1, usage: "maxconn <number>")
            config.global.maxconn = try Values.integer(args.first!, for: "maxconn", in: 1...Int(Int32.max))
        case "pidfile":
            try Values.expect(args, 1, usage: "pidfile <path>")
            config.global.pidfile = args.first!
        case "nbthread":
            try Values.expect(args, 1, usage: "nbthread <number>")
            config.global.threads = try Values.integer(args.first!, for: "nbthread", in: 1...64)
        case "log":
            config.global.logs.append(try parseLog(args, inGlobal: true))
        case "stats":
            try parseGlobalStats(args, at: location)
        case "mworker-max-reloads", "mworker-max-old-workers":
            // Under -W: a worker that survived this many reloads is stopped (HAProxy's, 50 by
            // default as in 3.3); at most this many old workers at once, the oldest stopped
            // first (ours, 8 by default).
            try Values.expect(args, 1, usage: "\(keyword) <number>")
            let n = try Values.integer(args.first!, for: keyword, in: 1...100_000)
            if keyword == "mworker-max-reloads" { config.global.masterMaxReloads = n } else { config.global.masterMaxOldWorkers = n }
            config.global.masterSettingsLocation = location
        case "ssl-default-bind-ciphers", "ssl-default-bind-ciphersuites", "ssl-default-bind-curves", "ssl-default-bind-options":
            try parseDefaultTLS(keyword, args, into: &config.global.defaultBindTLS, bind: true)
        case "ssl-default-server-ciphers", "ssl-default-server-ciphersuites", "ssl-default-server-curves", "ssl-default-server-options":
            try parseDefaultTLS(keyword, args, into: &config.global.defaultServerTLS, bind: false)
        case "ssl-server-verify":
            try Values.expect(args, 1, usage: "ssl-server-verify none|required")
            switch args.first! {
            case "none": config.global.serverVerify = false
            case "required": config.global.serverVerify = true
            default: throw ConfigError("ssl-server-verify: the value is 'none' or 'required', not '\(args.first!)'")
            }
        case "tune.ssl.cachesize":
            try Values.expect(args, 1, usage: "tune.ssl.cachesize <sessions>")
            config.global.tlsCacheSize = try Values.integer(args.first!, for: keyword, in: 0...10_000_000)
        case "tune.ssl.lifetime":
            try Values.expect(args, 1, usage: "tune.ssl.lifetime <time> (seconds by default)")
            // HAProxy reads a bare number as seconds here.
            let text = args.first!
            let ms = text.allSatisfy(\.isNumber) ? (Int(text) ?? 0) * 1000 : try Values.time(text, for: keyword)
            guard ms >= 1000 else { throw ConfigError("tune.ssl.lifetime: must be at least 1s") }
            config.global.tlsLifetime = ms / 1000
        case "tune.ssl.default-dh-param":
            // DHE parameters follow the certificate's key size (OpenSSL's automatic choice);
            // the value is checked, and said not to be used.
            try Values.expect(args, 1, usage: "tune.ssl.default-dh-param <bits>")
            let bits = try Values.integer(args.first!, for: keyword, in: 1024...16384)
            warning("'tune.ssl.default-dh-param \(bits)': DHE parameters follow each certificate's key size (OpenSSL's automatic choice); the value is not used", at: location)
        case "crt-base", "ca-base":
            try Values.expect(args, 1, usage: "\(keyword) <directory>")
            if keyword == "crt-base" { config.global.certificateBase = args.first! } else { config.global.authorityBase = args.first! }
        case "master-worker":
            // As -W; what a worker's unexpected death does.
            guard args.count <= 1 else { throw ConfigError("'master-worker' takes at most one option: exit-on-failure or no-exit-on-failure") }
            switch args.first {
            case nil, "no-exit-on-failure": config.global.masterExitOnFailure = false
            case "exit-on-failure": config.global.masterExitOnFailure = true
            default: throw ConfigError("'master-worker \(args.first!)': the option is exit-on-failure (HAProxy's default: a worker's death stops everything) or no-exit-on-failure (ours: it is replaced)")
            }
            config.global.masterWorker = true
        case "nosplice":
            try Values.expect(args, 0, usage: "nosplice")
            config.global.noSplice = true
        case "max-spread-checks":
            try Values.expect(args, 1, usage: "max-spread-checks <time>")
            config.global.maxSpreadChecks = try Values.time(args.first!, for: "max-spread-checks")
        case "no-memory-trimming":
            try Values.expect(args, 0, usage: "no-memory-trimming")
            config.global.noMemoryTrimming = true
        case "set-dumpable":
            try Values.expect(args, 0, usage: "set-dumpable")
            config.global.setDumpable = true
        case "noepoll":
            throw ConfigError("'noepoll': proxy has no poller but epoll; remove the line")
        case "nopoll", "nokqueue", "noevports", "nogetaddrinfo":
            try Values.expect(args, 0, usage: keyword)
            let why = keyword == "nogetaddrinfo" ? "names are resolved at load with getaddrinfo(3), the only resolver proxy has"
                : "proxy polls with epoll only, so there is no \(keyword.dropFirst(2)) to turn off"
            warning("'\(keyword)' changes nothing here: \(why); the line can go", at: location)
        case "spread-checks":
            try Values.expect(args, 1, usage: "spread-checks <0..50>")
            config.global.spreadChecks = try Values.integer(args.first!, for: "spread-checks", in: 0...50)
        case "hard-stop-after":
            try Values.expect(args, 1, usage: "hard-stop-after <time>")
            config.global.hardStopAfter = try Values.time(args.first!, for: "hard-stop-after")
        case "grace":
            try Values.expect(args, 1, usage: "grace <time>")
            config.global.grace = try Values.time(args.first!, for: "grace")
        case "close-spread-time":
            try Values.expect(args, 1, usage: "close-spread-time <time>")
            config.global.closeSpreadTime = args.first! == "infinite" ? Values.maxMilliseconds : try Values.time(args.first!, for: "close-spread-time")
            notEnforced(.closeSpreadTime, at: location)
        case "user":
            try Values.expect(args, 1, usage: "user <name>")
            let (uid, gid) = try Self.resolveUser(args.first!)
            config.global.user = args.first!
            config.global.uid = uid
            if config.global.gid == nil { config.global.gid = gid }
        case "group":
            try Values.expect(args, 1, usage: "group <name>")
            config.global.group = args.first!
            config.global.gid = try Self.resolveGroup(args.first!)
        case "uid":
            try Values.expect(args, 1, usage: "uid <number>")
            config.global.uid = UInt32(try Values.integer(args.first!, for: "uid", in: 0...Int(Int32.max)))
        case "gid":
            try Values.expect(args, 1, usage: "gid <number>")
            config.global.gid = UInt32(try Values.integer(args.first!, for: "gid", in: 0...Int(Int32.max)))
        case "chroot":
            try Values.expect(args, 1, usage: "chroot <directory>")
            config.global.chroot = args.first!
            if FileSystem.kind(of: args.first!) != .directory {
                warning("chroot: directory '\(args.first!)' does not exist; 'proxy -f' will refuse to start until it does", at: location)
            }
        case "ulimit-n":
            try Values.expect(args, 1, usage: "ulimit-n <number>")
            config.global.ulimitN = try Values.integer(args.first!, for: "ulimit-n", in: 1...Int(Int32.max))
        case "tune.bufsize":
            try Values.expect(args, 1, usage: "tune.bufsize <bytes>")
            let n = try Values.size(args.first!, for: "tune.bufsize")
            guard n >= 1024 else { throw ConfigError("tune.bufsize: \(n) is too small; use at least 1024 bytes (default 16384)") }
            config.global.bufferSize = n
        case "tune.maxrewrite":
            try Values.expect(args, 1, usage: "tune.maxrewrite <bytes>")
            config.global.maxRewrite = try Values.size(args.first!, for: "tune.maxrewrite")
            maxRewriteLocation = location
        case "server-state-file":
            try Values.expect(args, 1, usage: "server-state-file <path>")
            config.global.serverStateFile = args.first!
            notEnforced(.serverStateFile, at: location)
        case "setenv", "presetenv":
            try Values.expect(args, 2, usage: "\(keyword) <name> <value>")
            let name = args.first!, value = args.last!
            if keyword == "setenv" || environment[name] == nil { environment.set(name, value) }
        case "set-var", "set-var-fmt":
            // HAProxy 2.6: a process variable's value at start, from load-time fetches
            // (constants, the environment) or a format of them.
            try Values.expect(args, 2, usage: "\(keyword) proc.<name> <\(keyword == "set-var" ? "expression" : "format")>")
            let (scope, name) = try VariableScope.parseName(args.first!, what: keyword)
            guard scope == .proc else { throw ConfigError("\(keyword): only 'proc.' variables can be set in global, not '\(args.first!)'") }
            var v = InitialVariable(name: name, text: "\(keyword) \(args.joined(separator: " "))")
            if keyword == "set-var" {
                let e = try SampleExpression.parse(args.last!)
                guard e.fetch.scope == .load else {
                    throw ConfigError("set-var: '\(args.last!)' is not known at start; in global only constants and the environment are (e.g. str(on), env(NAME), int(1))")
                }
                v.expression = e
            } else {
                v.format = args.last!
            }
            config.global.initialVariables.removeAll { $0.name == name }
            config.global.initialVariables.append(v)
        case "unsetenv":
            for name in args { environment.unset(name) }
        case "resetenv":
            environment.reset(keeping: Set(args))
        case "strict-limits":
            try Values.expect(args, 0, usage: "strict-limits")
            config.global.strictLimits = true
        case "external-check":
            try Values.expect(args, 0, usage: "external-check")
            config.global.externalCheck = true
        case "insecure-fork-wanted":
            try Values.expect(args, 0, usage: "insecure-fork-wanted")
            warning("'insecure-fork-wanted' has no effect here: external checks start with posix_spawn, which needs no fork; the line can go", at: location)
        case "node":
            try Values.expect(args, 1, usage: "node <name>")
            config.global.node = args.first!
        case "zero-warning":
            try Values.expect(args, 0, usage: "zero-warning")
            config.global.zeroWarning = true
        case "fd-hard-limit":
            try Values.expect(args, 1, usage: "fd-hard-limit <number>")
            config.global.fdHardLimit = try Values.integer(args.first!, for: "fd-hard-limit", in: 1...Int(Int32.max))
        case "maxpipes":
            try Values.expect(args, 1, usage: "maxpipes <number>")
            config.global.maxpipes = try Values.integer(args.first!, for: "maxpipes", in: 0...Int(Int32.max))
        case "noreuseport":
            try Values.expect(args, 0, usage: "noreuseport")
            config.global.noReusePort = true
        default:
            throw unknownKeyword(keyword, section: "global", known: Self.globalKeywords,
                                 unsupported: Self.knownUnsupportedGlobal.contains(keyword))
        }
    }

    /// `stats socket ...` and `stats timeout ...` in `global`.
    func parseGlobalStats(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let sub = args.first else { throw ConfigError("'stats' needs 'socket' or 'timeout'") }
        let rest = args.dropFirst()
        switch sub {
        case "socket":
            guard let target = rest.first else {
                throw ConfigError("missing address; the form is 'stats socket <path|addr:port> [mode M] [level L] [expose-fd listeners]'")
            }
            let address: ListenAddress
            if target.contains("@") || target.hasPrefix("/") || !target.contains(":") {
                address = target.contains("@") || target.hasPrefix("/") ? try Addresses.listen(target)[0] : .unix(path: target)
            } else {
                address = try Addresses.listen(target)[0]
            }
            var socket = StatsSocket(address: address, location: location)
            var opts = rest.dropFirst()
            while let opt = opts.popFirst() {
                switch opt {
                case "mode":
                    guard let m = opts.popFirst(), let v = UInt32(m, radix: 8) else { throw ConfigError("stats socket: 'mode' needs an octal value, e.g. mode 600") }
                    socket.mode = v
                case "level":
                    guard let l = opts.popFirst(), let level = AccessLevel(name: l) else {
                        throw ConfigError("stats socket: 'level' is user, operator or admin")
                    }
                    socket.level = level
                case "expose-fd":
                    guard opts.popFirst() == "listeners" else { throw ConfigError("stats socket: the form is 'expose-fd listeners'") }
                    socket.exposeListeners = true
                case "uid", "gid":
                    guard let v = opts.popFirst(), let n = UInt32(v) else { throw ConfigError("stats socket: '\(opt)' needs a numeric id") }
                    if opt == "uid" { socket.uid = n } else { socket.gid = n }
                case "user":
                    guard let v = opts.popFirst() else { throw ConfigError("stats socket: 'user' needs a name") }
                    socket.uid = try Self.resolveUser(v).uid
                case "group":
                    guard let v = opts.popFirst() else { throw ConfigError("stats socket: 'group' needs a name") }
                    socket.gid = try Self.resolveGroup(v)
                case "name":
                    guard opts.popFirst() != nil else { throw ConfigError("stats socket: '\(opt)' needs a value") }
                    notEnforced(.statsSocketName, at: location)
                default:
                    var hint = ""
                    if let near = Similarity.closest(to: opt, in: ["mode", "level", "expose-fd", "user", "group", "uid", "gid"]) { hint = "; did you mean '\(near)'?" }
                    throw ConfigError("stats socket: unknown option '\(opt)'\(hint)")
                }
            }
            config.global.statsSockets.append(socket)
        case "timeout":
            try Values.expect(rest, 1, usage: "stats timeout <time>")
            config.global.statsTimeout = try Values.time(rest.first!, for: "stats timeout")
        case "maxconn":
            try Values.expect(rest, 1, usage: "stats maxconn <number>")
            config.global.statsMaxConnections = try Values.integer(rest.first!, for: "stats maxconn", in: 1...Int(Int32.max))
        default:
            throw ConfigError("unknown 'stats \(sub)' in global; use 'stats socket' or 'stats timeout'")
        }
    }

    /// A user's uid and primary gid, looked up at load as HAProxy does (so `-c` fails on a typo).
    static func resolveUser(_ name: String) throws -> (uid: UInt32, gid: UInt32) {
        guard let u = UserDatabase.user(named: name) else { throw ConfigError("cannot find user id for '\(name)'") }
        return u
    }

    static func resolveGroup(_ name: String) throws -> UInt32 {
        guard let g = UserDatabase.group(named: name) else { throw ConfigError("cannot find group id for '\(name)'") }
        return g
    }

    /// Records a keyword that parses but has no effect yet, with the warning DECISIONS asks for.
    /// `ssl-default-bind-*` and `ssl-default-server-*`: a list (`ciphers`, `ciphersuites`,
    /// `curves`) or the options; `strict-sni` and `prefer-client-ciphers` are bind-only.
    func parseDefaultTLS(_ keyword: String, _ args: ArraySlice<String>, into settings: inout TLSSettings, bind: Bool) throws {
        if keyword.hasSuffix("-options") {
            var rest = args[...]
            while let w = rest.popFirst() {
                let bindOnly = w == "strict-sni" || w == "prefer-client-ciphers"
                let known = try !(bindOnly && !bind) && settings.apply(w) {
                    guard let v = rest.popFirst() else { throw ConfigError("'\(w)' needs a value") }
                    return v
                }
                if !known {
                    throw ConfigError("\(keyword): unknown option '\(w)' (no-sslv3, no-tlsv10..no-tlsv13, force-tlsv12, ssl-min-ver, ssl-max-ver, no-tls-tickets\(bind ? ", prefer-client-ciphers" : ""))")
                }
            }
            return
        }
        try Values.expect(args, 1, usage: "\(keyword) <list>")
        let v = args.first!
        if keyword.hasSuffix("ciphers") { settings.ciphers = v }
        else if keyword.hasSuffix("ciphersuites") { settings.ciphersuites = v }
        else { settings.curves = v }
    }

    func notEnforced(_ keyword: NotEnforced, at location: SourceLocation) {
        warning("'\(keyword.rawValue)' is accepted but not enforced yet", at: location)
        unenforced.append(UnenforcedKeyword(location: location, keyword: keyword))
    }

    /// `log global`, or `log <target> [len N] [format F] [sample R:S] <facility> [max [min]]`.
    func parseLog(_ args: ArraySlice<String>, inGlobal: Bool) throws -> LogTarget {
        guard let target = args.first else {
            throw ConfigError("missing target; the form is 'log <address> [format <fmt>] <facility> [<level>]' or 'log global'")
        }
        if target == "global" {
            if inGlobal { throw ConfigError("'log global' only makes sense in a proxy or defaults section") }
            try Values.expect(args, 1, usage: "log global")
            return .global
        }
        let address: LogDestination.Address
        switch target {
        case "stdout": address = .stdout
        case "stderr": address = .stderr
        default:
            if target.hasPrefix("fd@") {
                guard let fd = Int32(target.dropFirst(3)) else { throw ConfigError("log: '\(target)' needs a descriptor number") }
                address = fd == 1 ? .stdout : fd == 2 ? .stderr : .fd(fd)
            } else if target.hasPrefix("unix@") {
                address = .unix(String(target.dropFirst(5)))
            } else if target.hasPrefix("/") {
                address = .unix(target)
            } else if target.hasPrefix("ring@") {
                throw ConfigError("log: ring buffers ('\(target)') are not supported yet")
            } else {
                var t = Substring(target)
                if t.hasPrefix("udp@") || t.hasPrefix("udp4@") || t.hasPrefix("udp6@") || t.hasPrefix("ipv4@") || t.hasPrefix("ipv6@") {
                    t = t[t.index(after: t.firstIndex(of: "@")!)...]
                } else if t.hasPrefix("tcp@") {
                    throw ConfigError("log: TCP log servers ('\(target)') are not supported yet; use udp@ or a unix socket")
                }
                let (host, portText) = Addresses.splitHostPort(String(t))
                let port = try portText.map { try Addresses.port($0, in: target) } ?? 514
                // Resolved now, once: a log line never waits for DNS.
                let ip = IPAddress(parsing: host) ?? (resolvesNames ? Addresses.resolve(host, family: nil) : nil)
                guard ip != nil || !resolvesNames else { throw ConfigError("log: cannot resolve '\(host)'") }
                address = .udp(host: host, address: ip, port: port)
            }
        }
        var rest = args.dropFirst()
        var format = LogDestination.Format.local
        var length: Int?
        var sample: LogSampling?
        while let w = rest.first, ["len", "format", "sample"].contains(w) {
            rest = rest.dropFirst()
            guard let v = rest.popFirst() else { throw ConfigError("log: '\(w)' needs a value") }
            switch w {
            case "len": length = try Values.integer(v, for: "log len", in: 80...65535)
            case "format":
                guard let f = LogDestination.Format(rawValue: v) else {
                    throw ConfigError("log: unknown format '\(v)'; use one of \(LogDestination.Format.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                format = f
            default:
                sample = try Self.parseSampling(v)
            }
        }
        guard let facility = rest.popFirst() else {
            throw ConfigError("log: missing facility after '\(target)', e.g. 'log \(target) local0'")
        }
        let facilities = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
                          "ftp", "ntp", "audit", "alert", "cron2"] + (0...7).map { "local\($0)" }
        guard facilities.contains(facility) else {
            var hint = ""
            if let near = Similarity.closest(to: facility, in: facilities) { hint = "; did you mean '\(near)'?" }
            throw ConfigError("log: unknown facility '\(facility)'\(hint)")
        }
        var destination = LogDestination(address: address, format: format, facility: facility, length: length, sample: sample)
        if let max = rest.popFirst() {
            guard let level = LogLevel(name: max) else { throw ConfigError("log: unknown level '\(max)'; use one of \(LogLevel.names.joined(separator: ", "))") }
            destination.maxLevel = level
        }
        if let min = rest.popFirst() {
            guard let level = LogLevel(name: min) else { throw ConfigError("log: unknown minimum level '\(min)'; use one of \(LogLevel.names.joined(separator: ", "))") }
            destination.minLevel = level
        }
        if let extra = rest.first { throw ConfigError("log: unexpected '\(extra)'") }
        return .target(destination)
    }

    /// `sample 1,3-4:5`: positions (single or ranges, 1-based, not overlapping) and the
    /// period, which must cover the highest position.
    static func parseSampling(_ text: String) throws -> LogSampling {
        guard let colon = text.lastIndex(of: ":") else { throw ConfigError("log sample: missing sample size in '\(text)'; the form is 'sample <ranges>:<size>', e.g. 1,3-4:5") }
        guard let size = Int(text[text.index(after: colon)...]), size > 0 else {
            throw ConfigError("log sample: '\(text[text.index(after: colon)...])' is not a sample size")
        }
        var ranges: [ClosedRange<Int>] = []
        for part in text[..<colon].split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds.last!), low >= 1, low <= high else {
                throw ConfigError("log sample: wrong sample range '\(part)'")
            }
            if ranges.contains(where: { $0.overlaps(low...high) }) { throw ConfigError("log sample: ranges are overlapping in '\(text)'") }
            ranges.append(low...high)
        }
        let top = ranges.map(\.upperBound).max() ?? 0
        guard size >= top else { throw ConfigError("log sample: size \(size) must be at least \(top), the highest position") }
        return LogSampling(ranges: ranges, size: size)
    }

    /// The error for a keyword we do not know: a typo hint, or "not supported yet".
    /// A keyword HAProxy removed, with what replaced it, an HAProxy keyword we do not support
    /// yet, or no keyword at all (with a close one when there is).
    func unknownKeyword(_ keyword: String, section: String, known: [String], unsupported: Bool) -> ConfigError {
        if let why = Self.removedKeywords[keyword] { return ConfigError("\(why) (in \(section))") }
        if unsupported || Self.unsupportedPrefixes.contains(where: { keyword.hasPrefix($0) }) {
            return ConfigError("keyword '\(keyword)' is not supported yet (in \(section))")
        }
        if let near = Similarity.closest(to: keyword, in: known) {
            return ConfigError("unknown keyword '\(keyword)' in \(section); did you mean '\(near)'?")
        }
        return ConfigError("unknown keyword '\(keyword)' in \(section)")
    }

    /// Keywords HAProxy 2.6 no longer has, and what to write instead.
    static let removedKeywords: [String: String] = {
        var r: [String: String] = [
            "nbproc": "'nbproc' was removed in HAProxy 2.5: one process runs 'nbthread' threads; remove it (and use 'nbthread N')",
            "debug": "'debug' was removed in HAProxy 2.x; use '-d' on the command line",
            "monitor-net": "'monitor-net' was removed in HAProxy 2.0; use 'http-request return status 200 if { src <network> }'",
            "block": "'block' was removed in HAProxy 2.0; use 'http-request deny if <condition>'",
            "bind-process": "'bind-process' was removed in HAProxy 2.5 with nbproc; every bind line is served by the one process (remove it)",
            "stats bind-process": "'stats bind-process' was removed in HAProxy 2.5 with nbproc; remove it",
            "tune.chksize": "'tune.chksize' was removed in HAProxy 2.x; checks read into tune.bufsize buffers (remove it)",
            "reqpass": "'reqpass' was removed in HAProxy 2.1; remove it (the request passes anyway)",
            "reqipass": "'reqipass' was removed in HAProxy 2.1; remove it (the request passes anyway)",
        ]
        for k in ["reqtarpit", "reqitarpit"] { r[k] = "'\(k)' was removed in HAProxy 2.1; use 'http-request tarpit if { <fetch> -m reg <regex> }'" }
        for k in ["reqideny", "reqiallow"] {
            r[k] = "'\(k)' was removed in HAProxy 2.1; use 'http-request \(k.hasSuffix("deny") ? "deny" : "allow") if { <fetch> -i -m reg <regex> }'"
        }
        for k in ["rspdeny", "rspideny"] { r[k] = "'\(k)' was removed in HAProxy 2.1; use 'http-response deny if { <fetch> -m reg <regex> }'" }
        return r
    }()

    /// Families of HAProxy keywords (device detection, Lua, tuning) we do not support yet.
    static let unsupportedPrefixes = ["tune.", "lua-", "51degrees-", "deviceatlas-", "wurfl-", "ssl-engine", "httpclient."]
}
