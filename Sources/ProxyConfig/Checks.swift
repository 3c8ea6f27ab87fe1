import Glibc
import ProxyRules

/// What runs once every file is parsed: reference checks, then folding of load-time conditions.
extension ConfigParser {
    func finish(files: [String]) -> LoadResult {
        endSection()
        config.files = files
        config.environment = environment
        config.patternReferences = references
        for i in config.proxies.indices where !config.proxies[i].redirectRules.isEmpty {
            config.proxies[i].httpRequestRules += config.proxies[i].redirectRules
            config.proxies[i].redirectRules = []
        }
        config.reindex()
        checkGlobal()
        checkNames()
        for index in config.proxies.indices { checkProxy(index) }
        checkListeners()
        checkBackendReferences()
        checkResolvers()
        checkTracking()
        checkObserve()
        checkExternalChecks()
        warnAboutEnvIntJunk()
        fold()
        config.unenforcedKeywords = unenforced
        let failed = diagnostics.contains { $0.severity == .error }
        return LoadResult(configuration: failed ? nil : config, diagnostics: diagnostics)
    }

    func checkGlobal() {
        let g = config.global
        if g.maxRewrite >= g.bufferSize {
            error("tune.maxrewrite (\(g.maxRewrite)) must be smaller than tune.bufsize (\(g.bufferSize)); the default is 1024", at: maxRewriteLocation)
        }
    }

    func checkNames() {
        var seen: [String: ProxyDefinition] = [:]
        var seenFrontends: [String: ProxyDefinition] = [:]
        for p in config.proxies {
            if p.isBackend {
                if let other = seen[p.name] {
                    error("\(p.kind.rawValue) '\(p.name)' has the same name as \(other.kind.rawValue) '\(other.name)' declared at \(other.location); rename one of them", at: p.location)
                    continue
                }
                seen[p.name] = p
            }
            if p.isFrontend {
                if let other = seenFrontends[p.name] {
                    error("\(p.kind.rawValue) '\(p.name)' has the same name as \(other.kind.rawValue) '\(other.name)' declared at \(other.location); rename one of them", at: p.location)
                    continue
                }
                seenFrontends[p.name] = p
            }
        }
    }

    /// `server ... ssl`: verification needs authorities (HAProxy 2.6's rule, with the fix in
    /// the message), and `sni` needs what is known when the connection opens.
    func checkServerTLS(_ s: ServerDefinition, in p: ProxyDefinition) {
        let tls = s.options.serverTLS
        guard s.options.ssl || s.options.checksUseTLS else { return }
        let verifies = tls.verify ?? config.global.serverVerify
        if verifies && tls.caFile == nil {
            error("server '\(p.name)/\(s.name)': 'ssl' verifies the server's certificate by default, but there is no 'ca-file' to verify it with; add 'ca-file /etc/ssl/certs/ca-certificates.crt' (or 'ca-file @system-ca'), or 'verify none' on the line (or 'ssl-server-verify none' in global) where the network is trusted", at: s.location)
        }
        if !verifies {
            let idle = [tls.verifyHost.map { _ in "verifyhost" }, tls.caFile.map { _ in "ca-file" }, tls.crlFile.map { _ in "crl-file" }].compactMap { $0 }
            if !idle.isEmpty {
                warning("server '\(p.name)/\(s.name)': \(idle.map { "'\($0)'" }.joined(separator: ", ")) change\(idle.count == 1 ? "s" : "") nothing with 'verify none': the server's certificate is not checked", at: s.location)
            }
        }
        if let e = tls.sni {
            let phase: RulePhase = p.mode == .http ? .request : .connection
            if !e.fetch.usage.isAvailable(in: phase) {
                error("server '\(p.name)/\(s.name)': sni '\(e)' is not known when a connection to the server opens in mode \(p.mode.rawValue)\(p.mode == .tcp ? "; use ssl_fc_sni or a constant" : "")", at: s.location)
            }
        }
        if tls.settings.over(config.global.defaultServerTLS).effectiveRange == nil {
            error("server '\(p.name)/\(s.name)': no TLS version is left between ssl-min-ver, ssl-max-ver and the no-tlsv1x options", at: s.location)
        }
    }

    func backendHint(_ name: String) -> String {
        if let near = Similarity.closest(to: name, in: config.backends.map(\.name)) { return "; did you mean '\(near)'?" }
        return ""
    }

    func checkProxy(_ index: Int) {
        let p = config.proxies[index]
        let label = "\(p.kind.rawValue) '\(p.name)'"
        if p.isFrontend {
            if p.binds.isEmpty {
                warning("\(label) has no 'bind' line, so it receives no traffic; declare it as a backend if this was intended", at: p.location)
            }
            var targets: [(String, SourceLocation)] = p.useBackendRules.map { ($0.backend, $0.location) }
            if let d = p.settings.defaultBackend { targets.append((d, p.settings.defaultBackendLocation ?? p.location)) }
            if p.mode == .tcp, let r = p.useBackendRules.first(where: { $0.backend.contains("%[") }) {
                error("\(label): 'use_backend \(r.backend)' computes the backend's name per request, which needs 'mode http' here", at: r.location)
            }
            for (name, location) in targets where !name.contains("%[") {
                guard let backend = config.backend(named: name) else {
                    error("\(label) routes to backend '\(name)', which does not exist\(backendHint(name))", at: location)
                    continue
                }
                if p.mode == .http && backend.settings.mode == .tcp {
                    error("\(label) is in http mode but backend '\(name)' is in tcp mode; an http frontend can only use http backends (set 'mode http' in '\(name)')", at: location)
                }
            }
            // `req.ssl_sni`, `req.ssl_hello_type`: the client's first bytes, which only a TCP
            // frontend with `tcp-request inspect-delay` waits for.
            let conditions = p.tcpRequestRules.filter { $0.action.layer == .content }.compactMap { r in r.condition.map { ($0, r.location) } }
                + p.useBackendRules.compactMap { r in r.condition.map { ($0, r.location) } }
            // `tcp-smart-connect` where a new server connection has nothing to send at once.
            if p.isBackend, p.settings.options.smartConnect, p.mode == .tcp, !p.servers.contains(where: { $0.options.sendProxy != nil }) {
                warning("\(label): 'option tcp-smart-connect' changes nothing here: in TCP mode a server connection has nothing to send with its handshake unless it sends a PROXY header", at: p.location)
            }
            // Keep-alive probes without keep-alive: the socket never sends one.
            if p.isFrontend, !p.settings.clientProbes.isEmpty, !p.settings.options.clientKeepAlive {
                warning("\(label): 'clitcpka-*' changes nothing without 'option clitcpka' (or 'option tcpka'): TCP keep-alive is off", at: p.settings.clientProbes.location ?? p.location)
            }
            if p.isBackend, !p.settings.serverProbes.isEmpty, !p.settings.options.serverKeepAlive {
                warning("\(label): 'srvtcpka-*' changes nothing without 'option srvtcpka' (or 'option tcpka'): TCP keep-alive is off", at: p.settings.serverProbes.location ?? p.location)
            }
            if p.settings.inspectDelay != nil && (p.mode == .http || !p.readsClientHello) {
                warning("\(label): 'tcp-request inspect-delay' changes nothing here: \(p.mode == .http ? "mode http waits for the request anyway" : "no 'tcp-request content' rule or 'use_backend' reads the client's first bytes (req.ssl_sni, req.ssl_hello_type, req.ssl_ver)")", at: p.settings.inspectDelayLocation ?? p.location)
            }
            for (c, location) in conditions {
                guard let term = c.acls.flatMap(\.terms).first(where: { $0.expression.fetch.readsClientHello }) else { continue }
                if p.mode == .http {
                    warning("\(label): '\(term.expression.keyword)' reads a TLS ClientHello that mode http never sees; it matches nothing here (use ssl_fc_sni with 'bind ... ssl')", at: location)
                } else if p.settings.inspectDelay == nil {
                    warning("\(label): '\(term.expression.keyword)' needs the client's first bytes, but there is no 'tcp-request inspect-delay' to wait for them; it matches nothing. Add 'tcp-request inspect-delay 5s' and 'tcp-request content accept if { req.ssl_hello_type 1 }'", at: location)
                }
            }
            checkAccessLog(index, label)
            if p.settings.timeouts.client == nil && p.kind == .frontend {
                warning("\(label) has no 'timeout client'; idle clients are never timed out. Set 'timeout client' (e.g. 30s) here or in defaults", at: p.location)
            }
        }
        if p.isBackend {
            if p.settings.timeouts.connect == nil || p.settings.timeouts.server == nil {
                let missing = [p.settings.timeouts.connect == nil ? "connect" : nil, p.settings.timeouts.server == nil ? "server" : nil]
                    .compactMap { $0 }.map { "'timeout \($0)'" }.joined(separator: " and ")
                if !p.servers.isEmpty {
                    warning("\(label) has no \(missing); stalled servers are never timed out. Set them here or in defaults", at: p.location)
                }
            }
            for s in p.servers where s.options.check && s.address.port == nil && s.options.checkPort == nil {
                if case .unix = s.address.host { continue }
                error("server '\(s.name)' in \(label) has neither a service port nor a check port, so it cannot be checked; add a port to its address, or 'port N'", at: s.location)
            }
            for s in p.servers { checkServerTLS(s, in: p) }
            checkTCPCheck(p, label)
            if p.settings.cookie == nil {
                for s in p.servers where s.options.cookie != nil {
                    warning("server '\(s.name)' has a cookie but \(label) has no 'cookie' line, so it is not used", at: s.location)
                }
            }
        }
        if p.mode == .tcp {
            let httpRules: [(SourceLocation, String)] =
                p.httpRequestRules.map { ($0.location, $0.summary) } + p.httpResponseRules.map { ($0.location, $0.summary) } +
                p.legacyRewrites.map { ($0.location, $0.summary) }
            for (location, summary) in httpRules {
                error("'\(summary)' needs HTTP, but \(label) is in tcp mode; add 'mode http' to it (or to its defaults)", at: location)
            }
            if let m = p.settings.monitorURI, p.isFrontend {
                warning("'monitor-uri \(m)' has no effect in tcp mode (\(label))", at: p.location)
            }
        }
    }

    /// `tcp-check` rules need `option tcp-check`; a `connect ssl` needs the servers' TLS
    /// settings (`ssl` or `check-ssl`, with their `verify` and `ca-file`).
    func checkTCPCheck(_ p: ProxyDefinition, _ label: String) {
        let rules = p.settings.tcpCheckRules
        guard let check = p.settings.tcpCheck else {
            if !rules.isEmpty {
                warning("\(label): its 'tcp-check' rules do nothing without 'option tcp-check'; add it to run them", at: p.location)
            }
            return
        }
        if check.origin != "tcp-check" && !rules.isEmpty {
            warning("\(label): 'option \(check.origin)' runs its own steps; the 'tcp-check' rules are not used", at: p.location)
        }
        guard check.origin == "tcp-check" else { return }
        for case .connect(let c) in rules where c.ssl {
            for s in p.servers where s.options.check && !s.options.ssl && s.options.checkSSL != true {
                error("server '\(s.name)' in \(label): 'tcp-check connect ssl' needs 'ssl' or 'check-ssl' on the server (with 'verify none' or a 'ca-file') to know how to check its certificate", at: s.location)
            }
        }
    }

    /// An HTTP log layout in a TCP frontend: HAProxy falls back to tcplog for `option
    /// httplog` and refuses a `log-format` that reads HTTP; so do we, with the fix.
    func checkAccessLog(_ index: Int, _ label: String) {
        let p = config.proxies[index]
        guard let format = p.settings.accessLog, p.mode == .tcp else { return }
        let location = p.settings.accessLogLocation ?? p.location
        switch format {
        case .http, .httpCLF:
            warning("\(label): '\(format.keyword)' needs 'mode http'; this tcp frontend logs with 'option tcplog'", at: location)
            config.proxies[index].settings.accessLog = .tcp
        case .custom(let text):
            guard let nodes = try? LogFormatText.parse(text, separators: true) else { return }
            for case .variable(let v, _) in nodes where v.needsHTTP {
                error("\(label): log-format variable '%\(v.rawValue)' is reserved for mode http; remove it from this tcp frontend's log-format", at: location)
                return
            }
        case .tcp:
            break
        }
    }

    /// `nbsrv(b)` and `srv_is_up(b/s)` must name a backend and server that exist.
    func checkBackendReferences() {
        for (fetch, location, owner) in backendReferences {
            switch fetch {
            case .backendUsableServers(let b?):
                if !config.hasBackend(named: b) { error("nbsrv(\(b)): no backend named '\(b)'\(backendHint(b))", at: location) }
            case .backendUsableServers(nil):
                if let p = owner, !p.isBackend {
                    error("nbsrv without a backend name counts the current backend, but \(p.kind.rawValue) '\(p.name)' is not one; name it, e.g. nbsrv(app)", at: location)
                }
            case .serverIsUp(let b, let s):
                if let backend = config.backend(named: b) {
                    if !backend.servers.contains(where: { $0.name == s }) {
                        var hint = ""
                        if let near = Similarity.closest(to: s, in: backend.servers.map(\.name)) { hint = "; did you mean '\(near)'?" }
                        error("srv_is_up(\(b)/\(s)): backend '\(b)' has no server '\(s)'\(hint)", at: location)
                    }
                } else {
                    error("srv_is_up(\(b)/\(s)): no backend named '\(b)'\(backendHint(b))", at: location)
                }
            default:
                break
            }
        }
    }

    /// Junk in a variable read by `env_int` warns, whether or not a rule uses the ACL.
    func warnAboutEnvIntJunk() {
        var seen = Set<String>()
        for (name, location) in envIntReads where seen.insert(name).inserted {
            let raw = environment[name] ?? ""
            let reading = AtolReading(raw)
            if reading.overflowed {
                reportedFoldWarnings.insert(warn(location, "env_int(\(name)): value '\(raw)' does not fit 64 bits; read as \(reading.value)"))
            } else if reading.hadJunk {
                reportedFoldWarnings.insert(warn(location, "env_int(\(name)): value '\(raw)' is not a plain integer; read as \(reading.value), as atol() would"))
            }
        }
    }

    func warn(_ location: SourceLocation, _ message: String) -> String {
        warning(message, at: location)
        return message
    }

    /// Every condition in a proxy with the line it is on.
    func conditions(of p: ProxyDefinition) -> [(Condition, SourceLocation)] {
        var list: [(Condition, SourceLocation)] = []
        for r in p.useBackendRules { if let c = r.condition { list.append((c, r.location)) } }
        for r in p.httpRequestRules { if let c = r.condition { list.append((c, r.location)) } }
        for r in p.httpResponseRules { if let c = r.condition { list.append((c, r.location)) } }
        for r in p.tcpRequestRules { if let c = r.condition { list.append((c, r.location)) } }
        for r in p.legacyRewrites { if let c = r.condition { list.append((c, r.location)) } }
        return list
    }

    /// Two `bind` lines on the same socket would split traffic between proxies: warn.
    func checkListeners() {
        var owners: [ListenerKey: (String, SourceLocation)] = [:]
        for p in config.proxies where p.isFrontend {
            for b in p.binds {
                for key in b.listenerKeys {
                    if let (owner, at) = owners[key], case .inet = key.address {
                        warning("\(key) is also bound by '\(owner)' at \(at); connections would be split between them", at: b.location)
                    } else {
                        owners[key] = (p.name, b.location)
                    }
                }
            }
        }
    }

    /// Decides load-time conditions against the final environment.
    func fold() {
        var reported = reportedFoldWarnings
        func decide(_ condition: Condition?, _ location: SourceLocation, _ rule: String) -> RuleGuard {
            guard let condition else { return .always }
            var warnings: [String] = []
            let outcome = condition.fold(in: environment, warnings: &warnings)
            for w in warnings where reported.insert(w).inserted { warning(w, at: location) }
            switch outcome {
            case .always(let reasons):
                config.foldedRules.append(FoldedRule(location: location, rule: rule, applies: true, reasons: reasons))
                return .always
            case .never(let reasons):
                config.foldedRules.append(FoldedRule(location: location, rule: rule, applies: false, reasons: reasons))
                return .never
            case .dynamic(let simplified, _):
                return .when(simplified)
            }
        }
        for i in config.proxies.indices {
            var p = config.proxies[i]
            for j in p.useBackendRules.indices {
                p.useBackendRules[j].guardState = decide(p.useBackendRules[j].condition, p.useBackendRules[j].location,
                                                         "use_backend \(p.useBackendRules[j].backend)")
            }
            for j in p.httpRequestRules.indices {
                p.httpRequestRules[j].guardState = decide(p.httpRequestRules[j].condition, p.httpRequestRules[j].location, p.httpRequestRules[j].summary)
            }
            for j in p.httpResponseRules.indices {
                p.httpResponseRules[j].guardState = decide(p.httpResponseRules[j].condition, p.httpResponseRules[j].location, p.httpResponseRules[j].summary)
            }
            for j in p.tcpRequestRules.indices {
                p.tcpRequestRules[j].guardState = decide(p.tcpRequestRules[j].condition, p.tcpRequestRules[j].location, p.tcpRequestRules[j].summary)
            }
            for j in p.legacyRewrites.indices {
                p.legacyRewrites[j].guardState = decide(p.legacyRewrites[j].condition, p.legacyRewrites[j].location, p.legacyRewrites[j].summary)
            }
            config.proxies[i] = p
        }
    }
}

extension ConfigParser {
    /// `track [BACKEND/]SERVER`: the server exists, is checked (by a health or an agent
    /// check), and no chain of tracking comes back to where it started.
    /// `option external-check`: the global switch and a command, as HAProxy requires; a
    /// command that is not an executable file is worth a warning now.
    func checkExternalChecks() {
        for p in config.proxies where !p.settings.externalCheck && p.kind != .defaults
            && (p.settings.externalCheckCommand != nil || !p.settings.externalCheckPath.isEmpty) && p.servers.contains(where: { $0.options.check }) {
            warning("\(p.kind.rawValue) '\(p.name)': 'external-check command|path' has no effect without 'option external-check'", at: p.location)
        }
        for p in config.proxies where p.settings.externalCheck && p.kind != .frontend {
            guard p.servers.contains(where: { $0.options.check }) else { continue }
            let at = p.settings.externalCheckLocation ?? p.location
            if !config.global.externalCheck {
                error("\(p.kind.rawValue) '\(p.name)': 'option external-check' needs 'external-check' in the global section (a safety switch, as in HAProxy)", at: at)
            }
            guard let command = p.settings.externalCheckCommand else {
                error("\(p.kind.rawValue) '\(p.name)': 'option external-check' needs 'external-check command <path>'", at: at)
                continue
            }
            if command.hasPrefix("/") && access(command, X_OK) != 0 {
                warning("\(p.kind.rawValue) '\(p.name)': external-check command '\(command)' is not an executable file: its checks will fail", at: at)
            }
        }
    }

    /// `observe`: layer 7 needs HTTP (HAProxy 2.6 alerts and loads the file: so do we, and
    /// the server observes nothing), and without `check` nothing acts on what it counts.
    func checkObserve() {
        for pi in config.proxies.indices {
            let p = config.proxies[pi]
            for (si, s) in p.servers.enumerated() {
                guard let layer = s.options.observe else {
                    if s.options.errorReactionSet {
                        warning("server '\(p.name)/\(s.name)': 'error-limit' and 'on-error' have no effect without 'observe layer4|layer7'", at: s.location)
                    }
                    continue
                }
                if layer == .layer7 && p.mode != .http {
                    warning("server '\(p.name)/\(s.name)': 'observe layer7' only applies to HTTP backends: ignored in mode \(p.mode.rawValue); use 'observe layer4'", at: s.location)
                    config.proxies[pi].servers[si].options.observe = nil
                } else if !s.options.check {
                    warning("server '\(p.name)/\(s.name)': 'observe' has no effect without 'check': add 'check' so that the errors it counts can act on the server", at: s.location)
                }
            }
        }
    }

    func checkTracking() {
        func find(_ name: String, from p: ProxyDefinition) -> (ProxyDefinition, ServerDefinition)? {
            let parts = name.split(separator: "/", maxSplits: 1).map(String.init)
            let backend = parts.count == 2 ? config.backend(named: parts[0]) : p
            guard let b = backend, let s = b.servers.first(where: { $0.name == parts.last! }) else { return nil }
            return (b, s)
        }
        for p in config.proxies {
            for s in p.servers {
                guard let target = s.options.track else { continue }
                if s.options.check {
                    error("server '\(p.name)/\(s.name)': 'check' and 'track' cannot be used together: a tracking server takes its health from the one it tracks; remove one of them", at: s.location)
                    continue
                }
                guard var (tb, ts) = find(target, from: p) else {
                    error("server '\(p.name)/\(s.name)': 'track \(target)': no such server; the form is 'track [backend/]server'", at: s.location)
                    continue
                }
                var seen: Set<String> = ["\(p.name)/\(s.name)"]
                var broken = false
                // Follow the chain to the server that really checks.
                while let next = ts.options.track {
                    guard seen.insert("\(tb.name)/\(ts.name)").inserted, let found = find(next, from: tb) else { broken = true; break }
                    (tb, ts) = found
                }
                if broken || seen.contains("\(tb.name)/\(ts.name)") {
                    error("server '\(p.name)/\(s.name)': 'track \(target)' leads to a loop of tracking servers", at: s.location)
                } else if !ts.options.check && !ts.options.agentCheck {
                    error("server '\(p.name)/\(s.name)': cannot track '\(tb.name)/\(ts.name)': it has no 'check' nor 'agent-check'; add 'check' to it", at: s.location)
                }
            }
        }
    }
}
