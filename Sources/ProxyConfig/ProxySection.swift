import ProxyRules
import ProxySystem

/// Which sections may hold a keyword: `defaults`, and the capability it needs.
struct KeywordScope {
    enum Capability { case frontend, backend, any }
    var inDefaults: Bool
    var capability: Capability
}

/// The keywords of `defaults`, `frontend`, `backend` and `listen`.
extension ConfigParser {
    static let proxyKeywords: [String: KeywordScope] = {
        let d = true
        var t: [String: KeywordScope] = [:]
        func add(_ names: [String], _ inDefaults: Bool, _ cap: KeywordScope.Capability) {
            for n in names { t[n] = KeywordScope(inDefaults: inDefaults, capability: cap) }
        }
        add(["mode", "log", "errorfile", "option", "timeout", "stats", "http-reuse"], d, .any)
        add(["maxconn", "backlog", "monitor-uri", "default_backend", "clitimeout", "log-format"], d, .frontend)
        add(["balance", "hash-type", "retries", "default-server", "cookie", "http-check", "tcp-check", "srvtimeout", "contimeout",
             "external-check"], d, .backend)
        add(["bind", "use_backend"], false, .frontend)
        add(["clitcpka-cnt", "clitcpka-idle", "clitcpka-intvl"], d, .frontend)
        add(["http-send-name-header", "fullconn"], d, .backend)
        add(["srvtcpka-cnt", "srvtcpka-idle", "srvtcpka-intvl"], d, .backend)
        add(["redirect"], false, .any)
        add(["server", "server-template"], false, .backend)
        add(["acl", "http-request", "http-response", "tcp-request", "reqrep", "reqirep", "rsprep", "rspirep",
             "reqadd", "rspadd", "reqdel", "reqidel", "rspdel", "rspidel", "reqdeny", "reqallow"], false, .any)
        return t
    }()

    /// HAProxy proxy keywords we do not support yet (so a typo hint is not offered for them).
    static let knownUnsupportedProxy: Set<String> = [
        "description", "id", "disabled", "enabled", "capture", "unique-id-format", "unique-id-header",
        "log-format-sd", "log-tag", "error-log-format", "filter", "compression", "rate-limit",
        "use-server", "force-persist", "ignore-persist", "persist", "stick-table", "stick", "tcp-response",
        "http-after-response", "http-error", "errorloc", "errorloc302", "errorloc303", "errorfiles",
        "monitor", "monitor-net", "email-alert", "source", "dispatch",
        "load-server-state-from-file", "server-state-file-name", "declare", "max-keep-alive-queue",
        "max-session-srv-conns", "dynamic-cookie-key", "unique-id", "grace", "reqtarpit", "reqpass", "reqipass",
        "reqideny", "reqiallow", "rspdeny", "rspideny", "bind-process", "retry-on", "transparent", "use-fcgi-app",
    ]

    func parseProxyKeyword(_ words: [String], at location: SourceLocation) throws {
        var keyword = words[0]
        var args = words.dropFirst()
        var negated = false
        var reset = false
        if keyword == "no" || keyword == "default", let next = args.first, next == "option" || next == "log" {
            negated = keyword == "no"
            reset = keyword == "default"
            keyword = next
            args = args.dropFirst()
            if keyword == "log" {
                try Values.expect(args, 0, usage: "no log")
                settings.logs = []
                return
            }
        }
        guard let scope = Self.proxyKeywords[keyword] else {
            let known = Array(Self.proxyKeywords.keys) + ["no"]
            let sectionText = proxy.map { "\($0.kind.rawValue) '\($0.name)'" } ?? "defaults section"
            throw unknownKeyword(keyword, section: sectionText, known: known,
                                 unsupported: Self.knownUnsupportedProxy.contains(keyword))
        }
        if proxy == nil && !scope.inDefaults {
            throw ConfigError("'\(keyword)' is not allowed in a defaults section; put it in a frontend, backend or listen section")
        }
        if let p = proxy, !capabilityAllows(scope.capability, p.kind) {
            warning("'\(keyword)' is ignored in \(p.kind.rawValue) '\(p.name)': it needs a \(scope.capability == .frontend ? "frontend" : "backend") or listen section", at: location)
            return
        }
        switch keyword {
        case "mode":
            try Values.expect(args, 1, usage: "mode tcp|http")
            guard let m = ProxyMode(rawValue: args.first!) else {
                if args.first == "health" { throw ConfigError("'mode health' is not supported anymore; use 'mode tcp' with 'monitor-uri' or a 'http-request return' rule") }
                throw ConfigError("unknown mode '\(args.first!)'; use 'mode tcp' or 'mode http'")
            }
            settings.mode = m
        case "bind":
            try parseBind(args, at: location)
        case "maxconn":
            try Values.expect(args, 1, usage: "maxconn <number>")
            settings.maxconn = try Values.integer(args.first!, for: "maxconn")
        case "clitcpka-cnt", "clitcpka-idle", "clitcpka-intvl", "srvtcpka-cnt", "srvtcpka-idle", "srvtcpka-intvl":
            let isCount = keyword.hasSuffix("-cnt")
            try Values.expect(args, 1, usage: "\(keyword) <\(isCount ? "count" : "time, in seconds unless a unit is given")>")
            var probes = keyword.hasPrefix("cli") ? settings.clientProbes : settings.serverProbes
            // The kernel's limits: 127 probes, 32767 seconds.
            if isCount {
                probes.count = try Values.integer(args.first!, for: keyword, in: 1...127)
            } else {
                let text = args.first!
                let ms = try Values.time(text.allSatisfy(\.isNumber) ? text + "s" : text, for: keyword)
                let seconds = (ms + 999) / 1000
                guard (1...32767).contains(seconds) else { throw ConfigError("\(keyword): '\(text)' is out of range; it must be between 1s and 32767s") }
                if keyword.hasSuffix("-idle") { probes.idle = seconds } else { probes.interval = seconds }
            }
            probes.location = probes.location ?? location
            if keyword.hasPrefix("cli") { settings.clientProbes = probes } else { settings.serverProbes = probes }
        case "backlog":
            try Values.expect(args, 1, usage: "backlog <number>")
            settings.backlog = try Values.integer(args.first!, for: "backlog", in: 1...Int(Int32.max))
        case "timeout":
            try parseTimeout(args)
        case "clitimeout", "srvtimeout", "contimeout":
            try Values.expect(args, 1, usage: "\(keyword) <time>")
            let modern = ["clitimeout": "client", "srvtimeout": "server", "contimeout": "connect"][keyword]!
            warning("'\(keyword)' is a 1.x keyword; write 'timeout \(modern) \(args.first!)'", at: location)
            try parseTimeout([modern, args.first!][...])
        case "balance":
            settings.balance = try parseBalance(args)
        case "hash-type":
            guard let m = args.first, ["map-based", "consistent"].contains(m) else {
                throw ConfigError("hash-type: the form is 'hash-type map-based|consistent [sdbm|djb2|wt6|crc32|none] [avalanche]'")
            }
            for f in args.dropFirst() where !["sdbm", "djb2", "wt6", "crc32", "none", "avalanche"].contains(f) {
                throw ConfigError("hash-type: unknown function '\(f)'; use sdbm, djb2, wt6, crc32 or none, optionally followed by avalanche")
            }
            settings.hashType = args.joined(separator: " ")
            // Balancing by hash is map-based over FNV-1a here: another function or the
            // consistent ring changes which server a key goes to.
            if settings.hashType != "map-based" { notEnforced(.hashType, at: location) }
        case "retries":
            try Values.expect(args, 1, usage: "retries <number>")
            settings.retries = try Values.integer(args.first!, for: "retries")
        case "log":
            settings.logs.append(try parseLog(args, inGlobal: false))
        case "log-format":
            guard args.count == 1 else {
                throw ConfigError(args.isEmpty ? "'log-format' needs a format string, e.g. log-format \"%ci:%cp [%tr] %ft %b/%s %ST %B %{+Q}r\""
                                               : "'log-format' takes one argument: put the format in double quotes, or escape its spaces with '\\ '")
            }
            _ = try checkFormat(args.first!, "log-format", phase: .log, separators: true)
            setAccessLog(.custom(args.first!), at: location)
        case "fullconn":
            // It sets the load at which a server with `minconn` reaches its `maxconn`; without
            // `minconn` (not supported yet) HAProxy does nothing with it either.
            try Values.expect(args, 1, usage: "fullconn <number>")
            _ = try Values.integer(args.first!, for: "fullconn", in: 1...Int(Int32.max))
            warning("'fullconn' changes nothing here: it only scales a server's 'minconn', which is not supported yet", at: location)
        case "http-send-name-header":
            try Values.expect(args, 1, usage: "http-send-name-header <header name>, e.g. 'http-send-name-header X-Server'")
            let name = args.first!
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
                throw ConfigError("http-send-name-header: '\(name)' is not a header name")
            }
            settings.sendNameHeader = name
        case "monitor-uri":
            try Values.expect(args, 1, usage: "monitor-uri <uri>")
            settings.monitorURI = args.first!
        case "errorfile":
            try parseErrorFile(args)
        case "default_backend":
            try Values.expect(args, 1, usage: "default_backend <backend>")
            settings.defaultBackend = args.first!
            settings.defaultBackendLocation = location
        case "use_backend":
            let (action, condition) = try splitCondition(args)
            try Values.expect(action, 1, usage: "use_backend <backend> [if|unless <condition>]")
            if let c = condition { checkCondition(c, .request, "use_backend", at: location) }
            let name = action.first!
            if name.contains("%[") { _ = try checkFormat(name, "use_backend", phase: .request) }
            proxy!.useBackendRules.append(UseBackendRule(backend: name, condition: condition, location: location))
        case "server":
            try parseServer(args, at: location)
        case "server-template":
            try parseServerTemplate(args, at: location)
        case "default-server":
            settings.defaultServer = try parseServerOptions(args, base: settings.defaultServer, at: location, isDefault: true)
        case "cookie":
            settings.cookie = try parseCookie(args)
            if let w = cookieWarning { warning(w, at: location); cookieWarning = nil }
        case "option":
            if reset {
                try resetOption(args)
            } else {
                try parseOption(args, negated: negated, at: location)
            }
        case "http-check":
            try parseHTTPCheck(args)
        case "tcp-check":
            try parseTCPCheckRule(args, at: location)
        case "external-check":
            // `external-check command <path>`, `external-check path <PATH>`.
            guard args.count == 2, let what = args.first else {
                throw ConfigError("'external-check' needs 'command <path>' or 'path <PATH>'")
            }
            switch what {
            case "command": settings.externalCheckCommand = args.last!
            case "path": settings.externalCheckPath = args.last!
            default: throw ConfigError("'external-check \(what)': expects 'command' or 'path'")
            }
        case "acl":
            try parseACL(args)
        case "http-request":
            try parseHTTPRequestRule(args, at: location)
        case "redirect":
            try parseProxyRedirect(args, at: location)
        case "http-response":
            try parseHTTPResponseRule(args, at: location)
        case "tcp-request":
            try parseTCPRequestRule(args, at: location)
        case "stats":
            try parseProxyStats(args, at: location)
        case "http-reuse":
            try Values.expect(args, 1, usage: "http-reuse never|safe|aggressive|always")
            guard let r = HTTPReuse(rawValue: args.first!) else {
                throw ConfigError("http-reuse: unknown mode '\(args.first!)'; use never, safe, aggressive or always")
            }
            settings.httpReuse = r
        default:
            try parseLegacyRule(keyword, args, at: location)
        }
    }

    func capabilityAllows(_ cap: KeywordScope.Capability, _ kind: ProxyKind) -> Bool {
        switch cap {
        case .any: return true
        case .frontend: return kind != .backend
        case .backend: return kind != .frontend
        }
    }

    /// `timeout <name> <time>`.
    func parseTimeout(_ args: ArraySlice<String>) throws {
        let names = ["client", "server", "connect", "http-request", "http-keep-alive", "queue", "tunnel", "check",
                     "client-fin", "server-fin", "tarpit"]
        guard let name = args.first else { throw ConfigError("'timeout' needs a name: \(names.joined(separator: ", "))") }
        guard names.contains(name) else {
            var hint = ""
            if let near = Similarity.closest(to: name, in: names) { hint = "; did you mean 'timeout \(near)'?" }
            throw ConfigError("unknown timeout '\(name)'\(hint)")
        }
        try Values.expect(args.dropFirst(), 1, usage: "timeout \(name) <time>")
        let v = try Values.time(args.last!, for: "timeout \(name)")
        switch name {
        case "client": settings.timeouts.client = v
        case "server": settings.timeouts.server = v
        case "connect": settings.timeouts.connect = v
        case "http-request": settings.timeouts.httpRequest = v
        case "http-keep-alive": settings.timeouts.httpKeepAlive = v
        case "queue": settings.timeouts.queue = v
        case "tunnel": settings.timeouts.tunnel = v
        case "check": settings.timeouts.check = v
        case "client-fin": settings.timeouts.clientFin = v
        case "server-fin": settings.timeouts.serverFin = v
        default: settings.timeouts.tarpit = v
        }
    }

    func parseBalance(_ args: ArraySlice<String>) throws -> BalanceAlgorithm {
        let names = ["roundrobin", "static-rr", "leastconn", "first", "source", "uri", "random"]
        // A bare `balance` is round robin, as HAProxy 2.6 reads it.
        guard let name = args.first else { return .roundRobin }
        var rest = args.dropFirst()
        switch name {
        case "roundrobin", "static-rr", "leastconn", "first", "source":
            if let extra = rest.first { throw ConfigError("balance \(name): unexpected '\(extra)'") }
            return ["roundrobin": .roundRobin, "static-rr": .staticRoundRobin, "leastconn": .leastConnections,
                    "first": .first, "source": .source][name]!
        case "uri":
            var length: Int?, depth: Int?, whole = false, pathOnly = false
            while let w = rest.popFirst() {
                switch w {
                case "len": length = try Values.integer(rest.popFirst() ?? "", for: "balance uri len", in: 1...65535)
                case "depth": depth = try Values.integer(rest.popFirst() ?? "", for: "balance uri depth", in: 1...255)
                case "whole": whole = true
                case "path-only": pathOnly = true
                default: throw ConfigError("balance uri: unknown option '\(w)'; use len, depth, whole or path-only")
                }
            }
            return .uri(length: length, depth: depth, whole: whole, pathOnly: pathOnly)
        case "random":
            var draws = 2
            if let w = rest.popFirst() {
                if let n = Int(w), n >= 1 { return .random(draws: n) }
                guard w.hasPrefix("("), w.hasSuffix(")"), let n = Int(w.dropFirst().dropLast()), n >= 1 else {
                    throw ConfigError("balance random: the form is 'balance random[(<draws>)]'")
                }
                draws = n
            }
            return .random(draws: draws)
        case "hdr", "url_param", "rdp-cookie", "hash", "uri_param":
            throw ConfigError("balance '\(name)' is not supported yet; use one of \(names.joined(separator: ", "))")
        default:
            if name.hasPrefix("random("), name.hasSuffix(")"), let n = Int(name.dropFirst(7).dropLast()), n >= 1 {
                return .random(draws: n)
            }
            if name.hasPrefix("hdr(") || name.hasPrefix("rdp-cookie") {
                throw ConfigError("balance '\(name)' is not supported yet; use one of \(names.joined(separator: ", "))")
            }
            var hint = ""
            if let near = Similarity.closest(to: name, in: names) { hint = "; did you mean '\(near)'?" }
            throw ConfigError("unknown balance algorithm '\(name)'\(hint)")
        }
    }

    /// `bind ADDR[,ADDR...] [options]`.
    func parseBind(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let addressList = args.first else {
            throw ConfigError("'bind' needs an address, e.g. 'bind :80' or 'bind 127.0.0.1:8080'")
        }
        var addresses: [ListenAddress] = []
        do {
            for part in addressList.split(separator: ",") {
                let names = environment["LISTEN_FDNAMES"]
                if part.hasPrefix("fd@"), Int32(part.dropFirst(3)) == nil, !part.dropFirst(3).isEmpty, names == nil {
                    // `-c` in ExecStartPre= or ExecReload= runs without systemd's sockets: the
                    // name is resolved when the service itself starts (a start without it fails).
                    warning("bind '\(part)': LISTEN_FDNAMES is not set, so the name is not checked here; systemd sets it for the service's ExecStart= only", at: location)
                    addresses.append(.inheritedFD(-1))
                    continue
                }
                addresses += try Addresses.listen(String(part), resolving: resolvesNames, descriptorNames: names)
            }
        } catch let e as ConfigError {
            throw ConfigError("bind: \(e.message)")
        }
        var options = BindOptions()
        var rest = args.dropFirst()
        func value(_ opt: String) throws -> String {
            guard let v = rest.popFirst() else { throw ConfigError("bind: '\(opt)' needs a value") }
            return v
        }
        let knownOptions = ["name", "maxconn", "accept-proxy", "backlog", "ssl", "crt", "v4v6", "v6only", "interface",
                            "namespace", "transparent", "defer-accept", "tfo", "mode", "user", "group", "uid", "gid",
                            "process", "thread", "alpn", "npn", "id", "nice", "level", "tcp-ut", "mss", "ciphers", "ciphersuites",
                            "curves", "ssl-min-ver", "ssl-max-ver", "no-sslv3", "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13",
                            "force-tlsv12", "force-tlsv13", "no-tls-tickets", "prefer-client-ciphers", "allow-0rtt", "strict-sni",
                            "ca-file", "crl-file", "verify", "tls-ticket-keys", "crt-list"]
        var tlsOptionSeen = false
        while let opt = rest.popFirst() {
            switch opt {
            case "name":
                options.name = try value(opt)
                notEnforced(.bindName, at: location)
            case "maxconn": options.maxconn = try Values.integer(try value(opt), for: "bind maxconn")
            case "backlog": options.backlog = try Values.integer(try value(opt), for: "bind backlog", in: 1...Int(Int32.max))
            case "accept-proxy":
                options.acceptProxy = true
            case "ssl":
                options.ssl = true
            case "crt":
                options.certificates.append(try value(opt))
            case "crt-list":
                options.certificateLists.append(try value(opt))
            case "ca-file":
                options.caFile = try value(opt)
                tlsOptionSeen = true
            case "crl-file":
                options.crlFile = try value(opt)
                tlsOptionSeen = true
            case "tls-ticket-keys":
                options.ticketKeysFile = try value(opt)
                tlsOptionSeen = true
            case "verify":
                switch try value(opt) {
                case "none": options.clientVerify = 0
                case "optional": options.clientVerify = 1
                case "required": options.clientVerify = 2
                case let v: throw ConfigError("bind verify: the value is none, optional or required, not '\(v)'")
                }
                tlsOptionSeen = true
            case "ca-ignore-err", "crt-ignore-err":
                throw ConfigError("bind: '\(opt)' is not supported yet: a client certificate that does not verify ends the handshake")
            case "v4v6": options.v4v6 = true
            case "v6only": options.v6only = true
            case "interface": options.interface = try value(opt)
            case "namespace":
                options.namespace = try value(opt)
                notEnforced(.namespace, at: location)
            case "transparent": options.transparent = true
            case "defer-accept": options.deferAccept = true
            case "tfo":
                options.tcpFastOpen = true
            case "mode":
                let m = try value(opt)
                guard let v = UInt32(m, radix: 8) else { throw ConfigError("bind: 'mode' needs an octal value, e.g. mode 660") }
                options.mode = v
            case "user": options.uid = try Self.resolveUser(try value(opt)).uid
            case "group": options.gid = try Self.resolveGroup(try value(opt))
            case "uid": options.uid = UInt32(try Values.integer(try value(opt), for: "bind uid", in: 0...Int(Int32.max)))
            case "gid": options.gid = UInt32(try Values.integer(try value(opt), for: "bind gid", in: 0...Int(Int32.max)))
            case "mss":
                options.maximumSegmentSize = try Values.integer(try value(opt), for: "bind mss", in: 1...65535)
            case "tcp-ut":
                options.userTimeout = try Values.time(try value(opt), for: "bind tcp-ut")
            case "process", "thread", "id", "nice":
                _ = try value(opt)
                notEnforced(opt == "process" ? .bindProcess : opt == "thread" ? .bindThread : opt == "id" ? .bindID : .bindNice, at: location)
            case "alpn":
                // We speak HTTP/1.1: `h2` is taken out of the list, with a warning, so that a
                // real config loads; `h2` alone would offer nothing a client asked for.
                let list = try value(opt).split(separator: ",").map(String.init)
                let kept = list.filter { $0 != "h2" }
                if kept.isEmpty { throw ConfigError("bind: 'alpn \(list.joined(separator: ","))': HTTP/2 is not offered; add http/1.1, e.g. 'alpn h2,http/1.1'") }
                if kept.count < list.count { warning("bind: HTTP/2 is not offered yet: 'h2' is left out of alpn, and http/1.1 is negotiated", at: location) }
                options.tls.alpn = kept
                tlsOptionSeen = true
            case "npn":
                _ = try value(opt)
                warning("bind: 'npn' is obsolete (ALPN replaced it) and ignored", at: location)
            case "allow-0rtt":
                warning("bind: 'allow-0rtt' is accepted, but 0-RTT is not enabled (replayable early data is never taken)", at: location)
            case "expose-fd", "level", "severity-output":
                throw ConfigError("bind: '\(opt)' belongs on a 'stats socket' line in the global section (the runtime API)")
            case "accept-netscaler-cip", "ca-sign-file", "ca-sign-pass", "ca-verify-file", "ecdhe", "generate-certificates",
                 "no-ca-names", "proto", "quic-force-retry", "shards":
                throw ConfigError("bind: '\(opt)' is not supported yet")
            default:
                if try options.tls.apply(opt, next: { try value(opt) }) { tlsOptionSeen = true; continue }
                var hint = ""
                if let near = Similarity.closest(to: opt, in: knownOptions) { hint = "; did you mean '\(near)'?" }
                throw ConfigError("bind: unknown option '\(opt)'\(hint)")
            }
        }
        if tlsOptionSeen && !options.ssl {
            warning("bind: TLS options without 'ssl' on the line change nothing; add 'ssl crt ...'", at: location)
        }
        if options.ssl && options.clientVerify == 0 && (options.caFile != nil || options.crlFile != nil) {
            warning("bind: 'ca-file' and 'crl-file' check client certificates only with 'verify optional' or 'verify required'; without, they change nothing", at: location)
        }
        if options.ssl && options.clientVerify > 0 && options.caFile == nil {
            throw ConfigError("bind: 'verify \(options.clientVerify == 1 ? "optional" : "required")' checks client certificates against a 'ca-file', and there is none; add 'ca-file /path/to/client-ca.pem'")
        }
        if options.ssl && options.tls.over(TLSSettings()).effectiveRange == nil {
            throw ConfigError("bind: no TLS version is left between ssl-min-ver, ssl-max-ver and the no-tlsv1x options")
        }
        if options.v4v6 && options.v6only { throw ConfigError("bind: 'v4v6' and 'v6only' contradict each other") }
        if options.mode != nil || options.uid != nil || options.gid != nil,
           addresses.contains(where: { if case .unix = $0 { return false } else { return true } }) {
            warning("bind: 'mode', 'user', 'group', 'uid' and 'gid' only apply to UNIX socket paths; they have no effect on \(addressList)", at: location)
        }
        proxy!.binds.append(BindLine(addresses: addresses, options: options, location: location))
    }

    /// `server NAME ADDRESS [options]`.
    func parseServer(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let name = args.first else { throw ConfigError("'server' needs a name and an address, e.g. 'server web1 10.0.0.1:80 check'") }
        guard args.count >= 2 else { throw ConfigError("server '\(name)' needs an address, e.g. 'server \(name) 10.0.0.1:80'") }
        try addServer(name: name, address: args[args.startIndex + 1], options: args.dropFirst(2), at: location)
    }

    /// `server-template PREFIX COUNT|LOW-HIGH FQDN[:PORT] [options]`: servers PREFIX1..PREFIXN
    /// sharing one name, whose addresses the resolvers spread over them.
    func parseServerTemplate(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        let usage = "server-template <prefix> <count|low-high> <fqdn>[:port] [options]"
        guard args.count >= 3 else { throw ConfigError("missing argument; the form is '\(usage)'") }
        let prefix = args.first!
        let range = args[args.startIndex + 1]
        let ids: ClosedRange<Int>
        if let dash = range.firstIndex(of: "-"), let low = Int(range[..<dash]), let high = Int(range[range.index(after: dash)...]), low >= 0, low <= high {
            ids = low...high
        } else if let n = Int(range), n >= 1 {
            ids = 1...n
        } else {
            throw ConfigError("server-template: '\(range)' is not a count or a range; e.g. 'server-template srv 5 app:80' or 'srv 1-5'")
        }
        guard ids.count <= 10_000 else { throw ConfigError("server-template: \(ids.count) servers is too many (at most 10000)") }
        var cache: [String: IPAddress?] = [:]
        for i in ids {
            try addServer(name: "\(prefix)\(i)", address: args[args.startIndex + 2], options: args.dropFirst(3), at: location, template: true, resolved: &cache)
        }
    }

    func addServer(name: String, address text: String, options words: ArraySlice<String>, at location: SourceLocation) throws {
        var cache: [String: IPAddress?] = [:]
        try addServer(name: name, address: text, options: words, at: location, template: false, resolved: &cache)
    }

    /// Adds one server; `resolved` keeps the libc answers of a template's slots (asked once).
    func addServer(name: String, address text: String, options words: ArraySlice<String>, at location: SourceLocation,
                   template: Bool, resolved cache: inout [String: IPAddress?]) throws {
        if let bad = name.first(where: { !($0.isLetter || $0.isNumber || "-_.:".contains($0)) }) {
            throw ConfigError("server name '\(name)' has an invalid character '\(bad)'")
        }
        // By index: iterating the definitions by value would copy each one (quadratic in a
        // backend's servers, which a 1,000-slot template makes plain).
        if let i = proxy!.servers.indices.first(where: { proxy!.servers[$0].name == name }) {
            throw ConfigError("server '\(name)' is already declared in backend '\(proxy!.name)' at \(proxy!.servers[i].location)")
        }
        var address: ServerAddress
        do { address = try Addresses.server(text, resolving: false) } catch let e as ConfigError {
            throw ConfigError("server '\(name)': \(e.message)")
        }
        let options = try parseServerOptions(words, base: settings.defaultServer, at: location, isDefault: false)
        if options.agentCheck && options.agentPort == nil {
            throw ConfigError("server '\(name)': 'agent-check' needs 'agent-port <port>' (the agent listens beside the server)")
        }
        if case .name(let host) = address.host {
            // init-addr: the first method that gives an address wins; -dr appends 'none'.
            var methods = options.initAddr ?? [.last, .libc]
            if ignoresResolutionFailures && !methods.contains(.none) { methods.append(.none) }
            var found = false
            var askedLibc = false
            for m in methods where !found {
                switch m {
                case .last:
                    continue // the previous process's address comes with the handover
                case .libc:
                    guard resolvesNames else { found = true; continue }
                    askedLibc = true
                    let key = host + (options.resolvePreferIPv4 ? "/4" : "")
                    if cache[key] == nil { cache[key] = .some(Addresses.resolve(host, family: options.resolvePreferIPv4 ? .ipv4 : nil)) }
                    if let ip = cache[key]! { address.resolved = ip; found = true }
                case .none:
                    found = true
                case .ip(let ip):
                    address.resolved = ip
                    found = true
                }
            }
            if !found {
                throw ConfigError("server '\(name)': cannot resolve server address '\(host)'; use an IP address or a name the resolver knows, or 'init-addr last,libc,none' with 'resolvers' to start without one (or start with -dr)")
            }
            if address.resolved == nil && askedLibc && resolvesNames && !template {
                let wait = options.resolvers.map { "; it starts in MAINT (resolution) until resolvers '\($0)' finds it" } ?? ", disabling server (MAINT (resolution): no 'resolvers' will look again)"
                warning("server '\(proxy!.name)/\(name)': could not resolve address '\(host)'\(wait)", at: location)
            }
        } else if options.resolvers != nil && !template {
            warning("server '\(proxy!.name)/\(name)': 'resolvers' has nothing to resolve in an IP address", at: location)
        }
        proxy!.servers.append(ServerDefinition(name: name, address: address, options: options, location: location))
    }

    static let serverKeywords = ["check", "inter", "fastinter", "downinter", "rise", "fall", "port", "addr", "weight", "maxconn",
                     "maxqueue", "backup", "disabled", "enabled", "cookie", "send-proxy", "slowstart", "no-check",
                     "no-backup", "no-send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn",
                     "check-send-proxy", "ssl", "no-ssl", "verify", "verifyhost", "no-verifyhost", "ca-file", "crl-file", "crt",
                     "sni", "alpn", "check-ssl", "no-check-ssl", "check-sni", "check-alpn", "ssl-reuse", "no-ssl-reuse",
                     "tls-tickets", "no-tls-tickets", "ciphers", "ciphersuites", "ssl-min-ver", "ssl-max-ver", "no-sslv3",
                     "no-tlsv10", "no-tlsv11", "no-tlsv12", "no-tlsv13", "force-tlsv12", "force-tlsv13", "proxy-v2-options",
                     "on-marked-down", "on-marked-up", "resolvers", "resolve-prefer", "resolve-net", "resolve-opts", "init-addr",
                     "track", "agent-check", "no-agent-check", "agent-port", "agent-inter", "agent-send", "agent-addr",
                     "observe", "error-limit", "on-error", "tcp-ut", "max-reuse", "no-tfo"]
    static let unsupportedServerKeywords: Set<String> = ["id", "redir", "minconn", "source", "usesrc",
                                                                    "proto", "pool-max-conn", "check-proto", "check-via-socks4", "log-proto",
                                                                    "pool-low-conn", "pool-purge-delay", "stick", "ws",
                                                                    "tfo", "namespace", "health-check", "non-stick", "socks4"]

    func parseServerOptions(_ args: ArraySlice<String>, base: ServerOptions, at location: SourceLocation, isDefault: Bool) throws -> ServerOptions {
        var o = base
        var rest = args
        let what = isDefault ? "default-server" : "server"
        func value(_ opt: String) throws -> String {
            guard let v = rest.popFirst() else { throw ConfigError("\(what): '\(opt)' needs a value") }
            return v
        }
        while let opt = rest.popFirst() {
            switch opt {
            case "check": o.check = true
            case "on-marked-down":
                let v = try value(opt)
                guard v == "shutdown-sessions" else { throw ConfigError("\(what) on-marked-down: the action is 'shutdown-sessions'") }
                o.shutdownSessionsWhenDown = true
            case "observe":
                let v = try value(opt)
                switch v {
                case "none": o.observe = nil
                case "layer4": o.observe = .layer4
                case "layer7": o.observe = .layer7
                default: throw ConfigError("\(what) observe: expects one of 'none', 'layer4', 'layer7' but got '\(v)'")
                }
            case "error-limit":
                let v = try value(opt)
                guard let n = Int(v), n > 0 else { throw ConfigError("\(what) error-limit: it has to be a number above 0, not '\(v)'") }
                o.errorLimit = n
                o.errorReactionSet = true
            case "on-error":
                let v = try value(opt)
                guard let action = OnErrorAction(rawValue: v) else {
                    throw ConfigError("\(what) on-error: expects one of 'fastinter', 'fail-check', 'sudden-death' or 'mark-down' but got '\(v)'")
                }
                o.onError = action
                o.errorReactionSet = true
            case "on-marked-up":
                let v = try value(opt)
                guard v == "shutdown-backup-sessions" else { throw ConfigError("\(what) on-marked-up: the action is 'shutdown-backup-sessions'") }
                o.shutdownBackupSessionsWhenUp = true
            case "no-check": o.check = false
            case "track": o.track = try value(opt)
            case "agent-check": o.agentCheck = true
            case "no-agent-check": o.agentCheck = false
            case "agent-port": o.agentPort = try Values.integer(try value(opt), for: "\(what) agent-port", in: 1...65535)
            case "agent-inter": o.agentInter = try positiveTime(try value(opt), "\(what) agent-inter", at: location)
            case "agent-send": o.agentSend = try value(opt)
            case "agent-addr":
                let a = try value(opt)
                guard let ip = IPAddress(parsing: a) ?? (resolvesNames ? Addresses.resolve(a, family: nil) : IPAddress(v4: 0)) else {
                    throw ConfigError("\(what) agent-addr: cannot resolve '\(a)'")
                }
                o.agentAddress = ip
            case "resolvers": o.resolvers = try value(opt)
            case "resolve-prefer":
                switch try value(opt) {
                case "ipv4": o.resolvePreferIPv4 = true
                case "ipv6": o.resolvePreferIPv4 = false
                case let v: throw ConfigError("\(what) resolve-prefer: unknown family '\(v)'; use ipv4 or ipv6")
                }
            case "resolve-net":
                o.resolveNets = try value(opt).split(separator: ",").map {
                    guard let n = IPNetwork(parsing: String($0)) else { throw ConfigError("\(what) resolve-net: '\($0)' is not a network; the form is 10.0.0.0/8[,...]") }
                    return n
                }
            case "resolve-opts":
                for v in try value(opt).split(separator: ",") {
                    switch v {
                    case "allow-dup-ip": o.allowDuplicateIP = true
                    case "prevent-dup-ip": o.allowDuplicateIP = false
                    case "ignore-weight": o.ignoreSRVWeight = true
                    default: throw ConfigError("\(what) resolve-opts: unknown option '\(v)'; use allow-dup-ip, prevent-dup-ip or ignore-weight")
                    }
                }
            case "init-addr":
                o.initAddr = try value(opt).split(separator: ",", omittingEmptySubsequences: false).map {
                    switch $0 {
                    case "last": return .last
                    case "libc": return .libc
                    case "none": return InitAddrMethod.none
                    default:
                        guard let ip = IPAddress(parsing: String($0)) else {
                            throw ConfigError("\(what) init-addr: '\($0)' is neither last, libc, none nor an IP address")
                        }
                        return .ip(ip)
                    }
                }
            case "inter": o.inter = try positiveTime(try value(opt), "\(what) inter", at: location)
            case "fastinter": o.fastInter = try positiveTime(try value(opt), "\(what) fastinter", at: location)
            case "downinter": o.downInter = try positiveTime(try value(opt), "\(what) downinter", at: location)
            case "rise": o.rise = try Values.integer(try value(opt), for: "\(what) rise", in: 1...Int(Int32.max))
            case "fall": o.fall = try Values.integer(try value(opt), for: "\(what) fall", in: 1...Int(Int32.max))
            case "port": o.checkPort = try Values.integer(try value(opt), for: "\(what) port", in: 1...65535)
            case "addr":
                let a = try value(opt)
                guard let ip = IPAddress(parsing: a) ?? (resolvesNames ? Addresses.resolve(a, family: nil) : IPAddress(v4: 0)) else {
                    throw ConfigError("\(what) addr: cannot resolve '\(a)'")
                }
                o.checkAddress = ip
            case "weight": o.weight = try Values.integer(try value(opt), for: "\(what) weight", in: 0...256)
            case "maxconn": o.maxconn = try Values.integer(try value(opt), for: "\(what) maxconn")
            case "maxqueue": o.maxqueue = try Values.integer(try value(opt), for: "\(what) maxqueue")
            case "tcp-ut": o.userTimeout = try Values.time(try value(opt), for: "\(what) tcp-ut")
            case "max-reuse": o.maxReuse = try Values.integer(try value(opt), for: "\(what) max-reuse", in: -1...Int(Int32.max))
            case "no-tfo":
                warning("\(what): 'no-tfo' changes nothing here: TCP Fast Open to servers is never used", at: location)
            case "backup": o.backup = true
            case "no-backup": o.backup = false
            case "disabled": o.disabled = true
            case "enabled": o.disabled = false
            case "cookie":
                o.cookie = try value(opt)
            case "send-proxy": o.sendProxy = .v1
            case "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn":
                // The SSL TLV tells how the client reached us (flags 0 when not over TLS).
                o.sendProxy = .v2
                if opt != "send-proxy-v2" { o.proxyV2SSL.enabled = true }
                if opt == "send-proxy-v2-ssl-cn" { o.proxyV2SSL.commonName = true }
            case "proxy-v2-options":
                for option in try value(opt).split(separator: ",").map(String.init) {
                    switch option {
                    case "ssl": o.proxyV2SSL.enabled = true
                    case "cert-cn": o.proxyV2SSL.enabled = true; o.proxyV2SSL.commonName = true
                    case "ssl-cipher": o.proxyV2SSL.enabled = true; o.proxyV2SSL.cipher = true
                    case "authority", "crc32c", "unique-id", "cert-sig", "cert-key":
                        throw ConfigError("\(what): proxy-v2-options '\(option)' is not supported yet (ssl, cert-cn and ssl-cipher are)")
                    default:
                        throw ConfigError("\(what): unknown proxy-v2-options '\(option)'; the options are ssl, cert-cn, ssl-cipher, cert-sig, cert-key, authority, crc32c and unique-id")
                    }
                }
            case "no-send-proxy", "no-send-proxy-v2", "no-send-proxy-v2-ssl", "no-send-proxy-v2-ssl-cn":
                o.sendProxy = nil
                o.proxyV2SSL = ProxyV2SSL()
            case "check-send-proxy": o.checkSendProxy = true
            case "no-check-send-proxy": o.checkSendProxy = false
            case "slowstart": o.slowStart = try Values.time(try value(opt), for: "\(what) slowstart")
            case "ssl": o.ssl = true
            case "no-ssl": o.ssl = false
            case "verify":
                switch try value(opt) {
                case "none": o.serverTLS.verify = false
                case "required": o.serverTLS.verify = true
                case let v: throw ConfigError("\(what) verify: the value is 'none' or 'required', not '\(v)'")
                }
            case "verifyhost": o.serverTLS.verifyHost = try value(opt)
            case "no-verifyhost": o.serverTLS.verifyHost = nil
            case "ca-file": o.serverTLS.caFile = try value(opt)
            case "crl-file": o.serverTLS.crlFile = try value(opt)
            case "crt": o.serverTLS.certificate = try value(opt)
            case "sni":
                let text = try value(opt)
                do { o.serverTLS.sni = try SampleExpression.parse(text) } catch let e as RuleError {
                    throw ConfigError("\(what) sni '\(text)': \(e.message); the value is a sample expression, e.g. 'sni req.hdr(host)' or 'sni str(example.com)'")
                }
                if o.serverTLS.sni!.outputType == .boolean {
                    throw ConfigError("\(what) sni '\(text)': the expression gives a boolean, not a name")
                }
            case "alpn", "check-alpn":
                // We speak HTTP/1.1 to servers: `h2` is taken out, as on `bind`.
                let list = try value(opt).split(separator: ",").map(String.init)
                let kept = list.filter { $0 != "h2" }
                if kept.isEmpty { throw ConfigError("\(what) '\(opt) \(list.joined(separator: ","))': HTTP/2 is not spoken to servers; add http/1.1") }
                if kept.count < list.count { warning("\(what): HTTP/2 is not spoken to servers yet: 'h2' is left out of \(opt)", at: location) }
                if opt == "alpn" { o.serverTLS.settings.alpn = kept } else { o.serverTLS.checkALPN = kept }
            case "check-ssl": o.checkSSL = true
            case "no-check-ssl": o.checkSSL = false
            case "check-sni": o.serverTLS.checkSNI = try value(opt)
            case "ssl-reuse": o.serverTLS.reuse = true
            case "no-ssl-reuse": o.serverTLS.reuse = false
            case "tls-tickets": o.serverTLS.settings.noTickets = false
            case "curves", "strict-sni", "prefer-client-ciphers":
                throw ConfigError("\(what): '\(opt)' is a 'bind' option; a server line does not take it")
            case "npn":
                _ = try value(opt)
                warning("\(what): 'npn' is obsolete (ALPN replaced it) and ignored", at: location)
            case "allow-0rtt":
                warning("\(what): 'allow-0rtt' is accepted, but 0-RTT is not used (early data is never sent)", at: location)
            default:
                if try o.serverTLS.settings.apply(opt, next: { try value(opt) }) { continue }
                if Self.unsupportedServerKeywords.contains(opt) { throw ConfigError("\(what): option '\(opt)' is not supported yet") }
                var hint = ""
                if let near = Similarity.closest(to: opt, in: Self.serverKeywords) { hint = "; did you mean '\(near)'?" }
                throw ConfigError("\(what): unknown option '\(opt)'\(hint)")
            }
        }
        // TLS options on a server without TLS (neither `ssl` nor TLS checks) change nothing.
        if !isDefault && !o.ssl && !o.checksUseTLS && (o.serverTLS != base.serverTLS) {
            warning("server: TLS options without 'ssl' (or 'check-ssl') on the line change nothing; add 'ssl'", at: location)
        }
        return o
    }

    func positiveTime(_ text: String, _ what: String, at location: SourceLocation? = nil) throws -> Milliseconds {
        let v = try lenientTime(text, what, at: location)
        if v == 0 { throw ConfigError("\(what): must be greater than 0") }
        return v
    }

    /// A server timer as HAProxy 2.6 reads it: characters after a valid value (`1s[`) are
    /// a warning, not an error (HAProxy says it will refuse them one day).
    func lenientTime(_ text: String, _ what: String, at location: SourceLocation?) throws -> Milliseconds {
        do { return try Values.time(text, for: what) } catch {
            guard let location else { throw error }
            let digits = text.prefix { $0.isASCII && $0.isNumber }
            let rest = text.dropFirst(digits.count)
            guard !digits.isEmpty, let unit = ["us", "ms", "s", "m", "h", "d", ""].first(where: { rest.hasPrefix($0) }) else { throw error }
            let junk = rest.dropFirst(unit.count)
            guard let c = junk.first, !(c.isLetter || c.isNumber) else { throw error }
            let value = try Values.time(String(digits) + unit, for: what)
            warning("\(what): unexpected character '\(c)' after the timer value '\(text)'; it is read as '\(digits)\(unit)' (HAProxy 2.6 warns the same and will refuse it)", at: location)
            return value
        }
    }

    /// `cookie NAME [rewrite|insert|prefix] [indirect] [nocache] ...`.
    func parseCookie(_ args: ArraySlice<String>) throws -> CookieSettings {
        guard let name = args.first else { throw ConfigError("'cookie' needs a name, e.g. 'cookie SERVERID insert indirect nocache'") }
        var c = CookieSettings(name: name)
        var rest = args.dropFirst()
        var modeSet = false
        let known = ["insert", "rewrite", "prefix", "indirect", "nocache", "postonly", "preserve", "httponly", "secure",
                     "domain", "maxidle", "maxlife"]
        while let w = rest.popFirst() {
            switch w {
            case "insert", "rewrite", "prefix":
                if modeSet { throw ConfigError("cookie: only one of insert, rewrite and prefix may be given") }
                modeSet = true
                c.mode = CookieSettings.Mode(rawValue: w)!
            case "indirect": c.indirect = true
            case "nocache": c.noCache = true
            case "postonly": c.postOnly = true
            case "preserve": c.preserve = true
            case "httponly": c.httpOnly = true
            case "secure": c.secure = true
            case "domain":
                guard let d = rest.popFirst() else { throw ConfigError("cookie: 'domain' needs a value") }
                c.domains.append(d)
            case "maxidle", "maxlife":
                guard let t = rest.popFirst() else { throw ConfigError("cookie: '\(w)' needs a time") }
                let v = try Values.time(t, for: "cookie \(w)")
                if w == "maxidle" { c.maxIdle = v } else { c.maxLife = v }
            case "dynamic", "attr":
                throw ConfigError("cookie: '\(w)' is not supported yet")
            default:
                var hint = ""
                if let near = Similarity.closest(to: w, in: known) { hint = "; did you mean '\(near)'?" }
                throw ConfigError("cookie: unknown option '\(w)'\(hint)")
            }
        }
        if c.mode != .insert && (c.noCache || c.postOnly || c.maxIdle != nil || c.maxLife != nil) {
            cookieWarning = "cookie: 'nocache', 'postonly', 'maxidle' and 'maxlife' only take effect with 'insert'"
        }
        return c
    }

    /// `errorfile CODE FILE`: the file is a raw HTTP response, read now.
    func parseErrorFile(_ args: ArraySlice<String>) throws {
        try Values.expect(args, 2, usage: "errorfile <code> <file>")
        let codes = [200, 400, 401, 403, 404, 405, 407, 408, 410, 413, 414, 425, 429, 431, 500, 501, 502, 503, 504]
        guard let code = Int(args.first!), codes.contains(code) else {
            throw ConfigError("errorfile: status '\(args.first!)' cannot be set; use one of \(codes.map(String.init).joined(separator: ", "))")
        }
        let path = args.last!
        let bytes: [UInt8]
        do { bytes = try FileSystem.readFile(path, limit: 1 << 20) } catch let e as SystemError {
            throw ConfigError("errorfile \(code): cannot read '\(path)': \(e.reason)")
        }
        guard bytes.starts(with: Array("HTTP/1.".utf8)) else {
            throw ConfigError("errorfile \(code): '\(path)' is not a raw HTTP response; it must start with a status line such as 'HTTP/1.0 \(code) ...' followed by headers and a blank line")
        }
        if bytes.count > config.global.bufferSize {
            throw ConfigError("errorfile \(code): '\(path)' is \(bytes.count) bytes; it must fit in tune.bufsize (\(config.global.bufferSize))")
        }
        settings.errorPages[code] = ErrorPage(status: code, path: path, bytes: bytes)
    }

    nonisolated(unsafe) static let optionFlags: [String: WritableKeyPath<ProxyOptions, Bool>] = [
            "httplog": \.httpLog, "tcplog": \.tcpLog, "dontlognull": \.dontLogNull, "dontlog-normal": \.dontLogNormal, "logasap": \.logASAP, "prefer-last-server": \.preferLastServer,
            "redispatch": \.redispatch, "allbackups": \.allBackups, "abortonclose": \.abortOnClose, "log-health-checks": \.logHealthChecks,
            "clitcpka": \.clientKeepAlive, "srvtcpka": \.serverKeepAlive,
        ]

    /// `option httplog|tcplog` and `log-format`: the last one wins, as in HAProxy, which
    /// warns when a defaults section says two.
    func setAccessLog(_ format: AccessLogFormat, at location: SourceLocation) {
        if proxy == nil, let old = settings.accessLog, old != format {
            warning("'\(format.keyword)' overrides the previous '\(old.keyword)' in this defaults section", at: location)
        }
        settings.accessLog = format
        settings.accessLogLocation = location
    }

    /// `default option NAME`: the option goes back to its built-in value.
    func resetOption(_ args: ArraySlice<String>) throws {
        guard let name = args.first, args.count == 1 else { throw ConfigError("the form is 'default option <name>'") }
        let fresh = ProxySettings()
        if let key = Self.optionFlags[name] {
            settings.options[keyPath: key] = fresh.options[keyPath: key]
            if name == "httplog" || name == "tcplog" { settings.accessLog = nil }
            return
        }
        switch name {
        case "tcpka":
            settings.options.clientKeepAlive = false
            settings.options.serverKeepAlive = false
        case "tcp-smart-accept": settings.options.smartAccept = nil
        case "tcp-smart-connect": settings.options.smartConnect = false
        case "httpclose", "http-server-close", "http-keep-alive", "forceclose":
            settings.options.httpConnectionMode = fresh.options.httpConnectionMode
        case "forwardfor": settings.options.forwardFor = nil
        case "httpchk": settings.httpCheck = nil
        case "tcp-check", "redis-check", "smtpchk", "pgsql-check", "ssl-hello-chk", "mysql-check", "ldap-check": settings.tcpCheck = nil
        case "splice-auto", "splice-request", "splice-response": break
        default: throw ConfigError("'default option \(name)': unknown option '\(name)'")
        }
    }

    /// `option NAME [...]` and `no option NAME`.
    func parseOption(_ args: ArraySlice<String>, negated: Bool, at location: SourceLocation) throws {
        guard let name = args.first else { throw ConfigError("'option' needs a name, e.g. 'option httplog'") }
        let rest = args.dropFirst()
        let frontendOnly: Set<String> = ["httplog", "tcplog", "dontlognull", "dontlog-normal", "logasap", "clitcpka", "idle-close-on-response", "tcp-smart-accept"]
        let backendOnly: Set<String> = ["tcp-smart-connect", "prefer-last-server", "redispatch", "allbackups", "abortonclose", "srvtcpka", "httpchk", "tcp-check", "redis-check", "smtpchk", "pgsql-check", "ssl-hello-chk", "mysql-check", "ldap-check", "external-check"]
        if let p = proxy {
            if frontendOnly.contains(name) && p.kind == .backend {
                warning("'option \(name)' is ignored in backend '\(p.name)': it needs a frontend or listen section", at: location)
                return
            }
            if backendOnly.contains(name) && p.kind == .frontend {
                warning("'option \(name)' is ignored in frontend '\(p.name)': it needs a backend or listen section", at: location)
                return
            }
        }
        let flags = Self.optionFlags
        if let key = flags[name] {
            if name == "httplog", let extra = rest.first, extra != "clf" { throw ConfigError("option httplog: unexpected '\(extra)'") }
            if name == "redispatch", let interval = rest.first {
                // `option redispatch <interval>`: every Nth retry, or the Nth from the end.
                guard rest.count == 1, let n = Int(interval) else {
                    throw ConfigError("option redispatch: the interval is an integer (-1: the last retry, the default; N: every Nth retry; 0: never)")
                }
                settings.options.redispatchInterval = n
            } else if name != "httplog", let extra = rest.first { throw ConfigError("option \(name): unexpected '\(extra)'") }
            settings.options[keyPath: key] = !negated
            if name == "httplog" || name == "tcplog" {
                let format: AccessLogFormat = name == "tcplog" ? .tcp : rest.first == "clf" ? .httpCLF : .http
                if !negated {
                    setAccessLog(format, at: location)
                } else if settings.accessLog == format {
                    settings.accessLog = nil
                }
            }
            return
        }
        switch name {
        case "splice-auto", "splice-request", "splice-response":
            // TCP mode always splices; HTTP mode copies bodies through its buffers.
            if let extra = rest.first { throw ConfigError("option \(name): unexpected '\(extra)'") }
            if !negated && settings.mode == .http { notEnforced(.spliceInHTTPMode, at: location) }
        case "idle-close-on-response":
            // What it asks is what a soft stop always does here: an idle keep-alive
            // connection is answered once more, with `Connection: close`, not cut.
            if let extra = rest.first { throw ConfigError("option \(name): unexpected '\(extra)'") }
        case "tcpka":
            if let extra = rest.first { throw ConfigError("option tcpka: unexpected '\(extra)'") }
            settings.options.clientKeepAlive = !negated
            settings.options.serverKeepAlive = !negated
        case "tcp-smart-accept", "tcp-smart-connect":
            if let extra = rest.first { throw ConfigError("option \(name): unexpected '\(extra)'") }
            if name == "tcp-smart-accept" { settings.options.smartAccept = !negated } else { settings.options.smartConnect = !negated }
        case "httpclose", "http-server-close", "http-keep-alive", "forceclose":
            if let extra = rest.first { throw ConfigError("option \(name): unexpected '\(extra)'") }
            var modeName = name
            if name == "forceclose" {
                warning("'option forceclose' is a 1.x keyword; write 'option httpclose'", at: location)
                modeName = "httpclose"
            }
            let mode = HTTPConnectionMode(rawValue: modeName)!
            if negated {
                if settings.options.httpConnectionMode == mode { settings.options.httpConnectionMode = .keepAlive }
            } else {
                settings.options.httpConnectionMode = mode
            }
        case "forwardfor":
            if negated { settings.options.forwardFor = nil; return }
            var ff = ForwardFor()
            var r = rest
            while let w = r.popFirst() {
                switch w {
                case "except":
                    guard let n = r.popFirst(), let net = IPNetwork(parsing: n) else {
                        throw ConfigError("option forwardfor: 'except' needs a network, e.g. 'except 127.0.0.0/8'")
                    }
                    ff.except = net
                case "header":
                    guard let h = r.popFirst(), !h.isEmpty else { throw ConfigError("option forwardfor: 'header' needs a header name") }
                    ff.header = h
                case "if-none": ff.ifNone = true
                default:
                    throw ConfigError("option forwardfor: unknown argument '\(w)'; the form is 'option forwardfor [except <network>] [header <name>] [if-none]'")
                }
            }
            settings.options.forwardFor = ff
        case "tcp-check", "redis-check", "smtpchk", "pgsql-check", "ssl-hello-chk", "mysql-check", "ldap-check":
            if negated { if settings.tcpCheck != nil { settings.tcpCheck = nil }; return }
            settings.tcpCheck = try Self.protocolCheck(name, rest)
            settings.httpCheck = nil
        case "external-check":
            if let extra = rest.first { throw ConfigError("option external-check: unexpected '\(extra)'") }
            if negated { throw ConfigError("'no option external-check' is not supported (nor by HAProxy 2.6): set the option in the sections that want it") }
            settings.externalCheck = true
            settings.externalCheckLocation = location
        case "httpchk":
            settings.tcpCheck = nil
            if negated { settings.httpCheck = nil; return }
            var check = settings.httpCheck ?? HTTPCheck()
            switch rest.count {
            case 0: break
            case 1: check.uri = rest.first!
            case 2: check.method = rest.first!; check.uri = rest.last!
            case 3:
                check.method = rest.first!
                check.uri = rest[rest.startIndex + 1]
                check.version = rest.last!
            default:
                throw ConfigError("option httpchk: too many arguments; the form is 'option httpchk [<method> <uri> [<version>]]'")
            }
            settings.httpCheck = check
        default:
            let all = Array(flags.keys) + ["tcpka", "tcp-smart-accept", "tcp-smart-connect", "httpclose", "http-server-close", "http-keep-alive", "forwardfor", "httpchk", "forceclose", "external-check",
                                           "tcp-check", "redis-check", "smtpchk", "pgsql-check", "ssl-hello-chk", "mysql-check", "ldap-check",
                                           "splice-auto", "splice-request", "splice-response", "idle-close-on-response"]
            let unsupported: Set<String> = ["http-use-htx", "http-buffer-request", "originalto", "persist",
                                            "http-pretend-keepalive",
                                            "http-no-delay", "httpslog", "log-separate-errors", "nolinger", "socket-stats",
                                            "checkcache", "accept-invalid-http-request", "accept-invalid-http-response",
                                            "contstats", "independent-streams", "http-ignore-probes", "http-tunnel",
                                            "transparent", "disable-h2-upgrade", "h1-case-adjust-bogus-client",
                                            "http-restrict-req-hdr-names", "spop-check", "http-use-proxy-header",
                                            "h1-case-adjust-bogus-server"]
            if unsupported.contains(name) { throw ConfigError("'option \(name)' is not supported yet") }
            var hint = ""
            if let near = Similarity.closest(to: name, in: all) { hint = "; did you mean 'option \(near)'?" }
            throw ConfigError("unknown option '\(name)'\(hint)")
        }
    }

    /// `acl NAME FETCH [flags] [operator] [values]`.
    func parseACL(_ args: ArraySlice<String>) throws {
        guard let name = args.first else { throw ConfigError("'acl' needs a name and a fetch, e.g. 'acl is_static path_beg /static'") }
        if let bad = name.first(where: { !($0.isLetter || $0.isNumber || "-_.:".contains($0)) }) {
            throw ConfigError("ACL name '\(name)' has an invalid character '\(bad)'; use letters, digits, '-', '_', '.', ':'")
        }
        if args.count < 2 { throw ConfigError("acl '\(name)' needs a fetch, e.g. 'acl \(name) path_beg /static'") }
        let term = try ACLTerm.parse(args.dropFirst(), loadPatternFile: loadPatternFile, references: references)
        noteReferences(term, at: currentLocation)
        if let existing = proxy!.acls[name] { existing.append(term) } else { proxy!.acls[name] = ACL(name: name, terms: [term]) }
    }

    /// Remembers what a term reads that needs checking once the whole config is known.
    func noteReferences(_ term: ACLTerm, at location: SourceLocation) {
        switch term.expression.fetch {
        case .envInteger(let name): envIntReads.append((name, location))
        case .backendUsableServers, .serverIsUp: backendReferences.append((term.expression.fetch, location, proxy))
        default: break
        }
    }

    /// Reads a `-f` pattern file into lines.
    func loadPatternFile(_ path: String) throws -> [String] {
        do {
            let bytes = try FileSystem.readFile(path)
            return String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        } catch let e as SystemError {
            throw RuleError("cannot read pattern file '\(path)': \(e.reason)")
        }
    }

    /// Splits `ACTION... if|unless COND...` into the action words and the parsed condition.
    func splitCondition(_ args: ArraySlice<String>) throws -> (ArraySlice<String>, Condition?) {
        guard let index = args.firstIndex(where: { $0 == "if" || $0 == "unless" }) else { return (args, nil) }
        let polarity: Condition.Polarity = args[index] == "if" ? .ifTrue : .unless
        let p = proxy
        let condition = try Condition.parse(polarity: polarity, args[(index + 1)...],
                                             lookup: { p?.acls[$0] },
                                             knownNames: { Array(p?.acls.keys ?? [:].keys) },
                                             loadPatternFile: loadPatternFile, references: references)
        for f in condition.alternatives.joined() where f.text.hasPrefix("{") {
            for t in f.acl.terms { noteReferences(t, at: currentLocation) }
        }
        return (args[..<index], condition)
    }

    /// `stats enable|uri|realm|auth|refresh|admin|hide-version|show-legends|show-node|show-desc|scope`
    /// in a proxy.
    func parseProxyStats(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let sub = args.first else { throw ConfigError("'stats' needs a subcommand: enable, uri, realm, auth, refresh, admin, hide-version") }
        let rest = args.dropFirst()
        switch sub {
        case "enable":
            try Values.expect(rest, 0, usage: "stats enable")
            settings.stats.enabled = true
        case "uri":
            try Values.expect(rest, 1, usage: "stats uri <prefix>")
            settings.stats.uri = rest.first!
            settings.stats.enabled = true
        case "realm":
            try Values.expect(rest, 1, usage: "stats realm <realm>")
            settings.stats.realm = rest.first!
            settings.stats.enabled = true
        case "auth":
            try Values.expect(rest, 1, usage: "stats auth <user>:<password>")
            let text = rest.first!
            guard let colon = text.firstIndex(of: ":") else {
                throw ConfigError("stats auth: '\(text)' has no ':'; the form is 'stats auth <user>:<password>'")
            }
            settings.stats.credentials.append((String(text[..<colon]), String(text[text.index(after: colon)...])))
            settings.stats.enabled = true
        case "refresh":
            try Values.expect(rest, 1, usage: "stats refresh <time>")
            settings.stats.refresh = try Values.time(rest.first!, for: "stats refresh")
            settings.stats.enabled = true
        case "admin":
            guard proxy != nil else { throw ConfigError("'stats admin' is not allowed in a defaults section") }
            let (action, condition) = try splitCondition(rest)
            if !action.isEmpty || condition == nil { throw ConfigError("the form is 'stats admin if|unless <condition>'") }
            if let c = condition { checkCondition(c, .request, "stats admin", at: location) }
            settings.stats.admin = condition
        case "hide-version":
            try Values.expect(rest, 0, usage: "stats hide-version")
            settings.stats.hideVersion = true
            settings.stats.enabled = true
        case "show-legends":
            try Values.expect(rest, 0, usage: "stats show-legends")
            settings.stats.showLegends = true
            settings.stats.enabled = true
        case "show-node":
            guard rest.count <= 1 else { throw ConfigError("the form is 'stats show-node [<name>]'") }
            settings.stats.showNode = rest.first ?? ""
            settings.stats.enabled = true
        case "show-desc":
            settings.stats.showDescription = rest.joined(separator: " ")
            settings.stats.enabled = true
        case "scope":
            try Values.expect(rest, 1, usage: "stats scope <proxy>|.")
            settings.stats.scopes.append(rest.first!)
            settings.stats.enabled = true
        case "socket", "timeout":
            throw ConfigError("'stats \(sub)' belongs in the global section")
        default:
            let known = ["enable", "uri", "realm", "auth", "refresh", "admin", "hide-version", "show-legends", "show-node", "show-desc", "scope"]
            var hint = ""
            if let near = Similarity.closest(to: sub, in: known) { hint = "; did you mean 'stats \(near)'?" }
            throw ConfigError("'stats \(sub)' is not supported yet\(hint)")
        }
    }
}
