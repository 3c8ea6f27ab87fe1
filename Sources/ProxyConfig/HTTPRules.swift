import ProxyRules
import ProxySystem

/// `http-request`, `http-response`, `tcp-request`, and the 1.x `req*`/`rsp*` family.
extension ConfigParser {
    static let httpRequestActions = ["return", "deny", "allow", "redirect", "set-header", "add-header", "del-header",
                                     "replace-header", "replace-value", "set-path", "replace-path", "set-uri",
                                     "replace-uri", "set-var", "set-var-fmt", "unset-var", "tarpit", "use-service"]
    static let httpResponseActions = ["allow", "deny", "return", "set-header", "add-header", "del-header", "replace-header",
                                      "replace-value", "set-status", "set-var", "set-var-fmt", "unset-var"]

    /// An action both `http-request` and `http-response` have.
    enum SharedAction {
        case setHeader(HeaderField), addHeader(HeaderField), deleteHeader(HeaderNameMatch)
        case replaceHeader(String, RegexReplacement), replaceValue(String, RegexReplacement)
        case setVariable(VariableScope, String, SampleExpression, VariableConditions)
        case setVariableFormat(VariableScope, String, String, VariableConditions)
        case unsetVariable(VariableScope, String)
    }

    /// Parses the actions shared by both directions; nil for any other action. `keyword` is
    /// `http-request` or `http-response`; `phase` is where the rule runs, for fetch checks.
    func parseSharedAction(_ action: String, _ rest: ArraySlice<String>, _ keyword: String, _ phase: RulePhase) throws -> SharedAction? {
        // set-var(scope.name), set-var-fmt(scope.name), unset-var(scope.name)
        for prefix in ["set-var(", "set-var-fmt(", "unset-var("] where action.hasPrefix(prefix) {
            let verb = String(prefix.dropLast())
            guard action.hasSuffix(")") else { throw ConfigError("\(keyword) \(verb): missing ')' in '\(action)'") }
            let parts = action.dropFirst(prefix.count).dropLast().split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            let inner = parts[0]
            // `set-var(NAME,ifnotempty,...)`: HAProxy 2.6's conditions.
            var conditions: VariableConditions = []
            if parts.count > 1 {
                guard verb != "unset-var" else { throw ConfigError("\(keyword) unset-var: no conditions after the name ('\(parts.dropFirst().joined(separator: ","))')") }
                do { conditions = try VariableConditions.parse(parts.dropFirst(), what: "\(keyword) \(verb)(\(inner))") } catch let e as RuleError {
                    throw ConfigError(e.message)
                }
            }
            let (scope, name) = try VariableScope.parseName(inner, what: "\(keyword) \(verb)")
            try checkVariableScope(scope, phase, "\(keyword) \(verb)(\(inner))")
            switch verb {
            case "set-var":
                try Values.expect(rest, 1, usage: "\(keyword) set-var(<scope>.<name>) <expression>")
                let expression = try SampleExpression.parse(rest.first!)
                try checkFetch(expression, phase, "\(keyword) set-var(\(inner))")
                return .setVariable(scope, name, expression, conditions)
            case "set-var-fmt":
                try Values.expect(rest, 1, usage: "\(keyword) set-var-fmt(<scope>.<name>) <format>")
                return .setVariableFormat(scope, name, try checkFormat(rest.first!, "\(keyword) set-var-fmt(\(inner))", phase: phase), conditions)
            default:
                try Values.expect(rest, 0, usage: "\(keyword) unset-var(<scope>.<name>) [if|unless <condition>]")
                return .unsetVariable(scope, name)
            }
        }
        switch action {
        case "set-var", "set-var-fmt", "unset-var":
            throw ConfigError("\(keyword) \(action): the form is '\(keyword) \(action)(<scope>.<name>) ...'")
        case "set-header", "add-header":
            try Values.expect(rest, 2, usage: "\(keyword) \(action) <name> <format>")
            try checkHeaderName(rest.first!, action)
            let field = HeaderField(name: rest.first!, value: try checkFormat(rest.last!, "\(keyword) \(action)", phase: phase))
            return action == "set-header" ? .setHeader(field) : .addHeader(field)
        case "del-header":
            guard let name = rest.first else { throw ConfigError("missing argument; the form is '\(keyword) del-header <name> [-m <method>]'") }
            var method = "str"
            if rest.count == 3, rest[rest.startIndex + 1] == "-m" {
                method = rest.last!
            } else if rest.count > 1, rest[rest.startIndex + 1] == "-m" {
                throw ConfigError("\(keyword) del-header: '-m' needs exactly one method: str, beg, end, sub or reg")
            } else {
                try Values.expect(rest, 1, usage: "\(keyword) del-header <name> [-m str|beg|end|sub|reg]")
            }
            let lower = name.lowercased()
            switch method {
            case "str": return .deleteHeader(.exact(lower))
            case "beg": return .deleteHeader(.prefix(lower))
            case "end": return .deleteHeader(.suffix(lower))
            case "sub": return .deleteHeader(.substring(lower))
            case "reg":
                do { return .deleteHeader(.regex(try PosixRegex(name))) } catch let e as PosixRegex.CompileError {
                    throw ConfigError("\(keyword) del-header: regex '\(name)' does not compile: \(e.description)")
                }
            default:
                throw ConfigError("\(keyword) del-header: '-m \(method)' is not a method here; use str, beg, end, sub or reg")
            }
        case "replace-header", "replace-value":
            try Values.expect(rest, 3, usage: "\(keyword) \(action) <name> <regex> <replacement>")
            let r = try regexReplacement(rest[rest.startIndex + 1], rest.last!, "\(keyword) \(action)")
            return action == "replace-header" ? .replaceHeader(rest.first!, r) : .replaceValue(rest.first!, r)
        default:
            return nil
        }
    }

    func parseHTTPRequestRule(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        let (words, condition) = try splitCondition(args)
        guard let action = words.first else {
            throw ConfigError("'http-request' needs an action: \(Self.httpRequestActions.joined(separator: ", "))")
        }
        var rest = words.dropFirst()
        let parsed: HTTPRequestAction
        if let shared = try parseSharedAction(action, rest, "http-request", .request) {
            switch shared {
            case .setHeader(let f): parsed = .setHeader(f)
            case .addHeader(let f): parsed = .addHeader(f)
            case .deleteHeader(let m): parsed = .deleteHeader(m)
            case .replaceHeader(let n, let r): parsed = .replaceHeader(name: n, r)
            case .replaceValue(let n, let r): parsed = .replaceValue(name: n, r)
            case .setVariable(let s, let n, let e, let c): parsed = .setVariable(s, n, e, c)
            case .setVariableFormat(let s, let n, let f, let c): parsed = .setVariableFormat(s, n, f, c)
            case .unsetVariable(let s, let n): parsed = .unsetVariable(s, n)
            }
        } else {
            switch action {
            case "allow":
                try Values.expect(rest, 0, usage: "http-request allow [if|unless <condition>]")
                parsed = .allow
            case "deny":
                parsed = .deny(try parseLocalResponse(&rest, defaultStatus: 403, action: "deny"))
            case "tarpit":
                parsed = .tarpit(try parseLocalResponse(&rest, defaultStatus: 500, action: "tarpit"))
            case "return":
                parsed = .returnResponse(try parseLocalResponse(&rest, defaultStatus: 200, action: "return"))
            case "redirect":
                parsed = .redirect(try parseRedirect(rest))
            case "set-path", "set-uri":
                try Values.expect(rest, 1, usage: "http-request \(action) <format>")
                let f = try checkFormat(rest.first!, "http-request \(action)", phase: .request)
                parsed = action == "set-path" ? .setPath(f) : .setURI(f)
            case "replace-path", "replace-uri":
                try Values.expect(rest, 2, usage: "http-request \(action) <regex> <replacement>")
                let r = try regexReplacement(rest.first!, rest.last!, "http-request \(action)")
                parsed = action == "replace-path" ? .replacePath(r) : .replaceURI(r)
            case "use-service":
                try Values.expect(rest, 1, usage: "http-request use-service prometheus-exporter [if|unless <condition>]")
                guard let name = LocalServiceName(rawValue: rest.first!) else {
                    throw ConfigError("http-request use-service: unknown service '\(rest.first!)'; the one service is 'prometheus-exporter'")
                }
                parsed = .useService(name)
            default:
                throw unknownAction(action, "http-request", Self.httpRequestActions)
            }
        }
        let name = action.firstIndex(of: "(").map { String(action[..<$0]) } ?? action
        if let c = condition { checkCondition(c, .request, "http-request \(name)", at: location) }
        proxy!.httpRequestRules.append(Rule(action: parsed, condition: condition, location: location,
                                            summary: "http-request \(name)"))
    }

    /// `redirect location|prefix|scheme ... [if|unless COND]` at proxy level: the same as
    /// `http-request redirect`, run after every `http-request` rule of the proxy (HAProxy's
    /// order), whatever the lines' order.
    func parseProxyRedirect(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        let (words, condition) = try splitCondition(args)
        let parsed = HTTPRequestAction.redirect(try parseRedirect(words))
        if let c = condition { checkCondition(c, .request, "redirect", at: location) }
        proxy!.redirectRules.append(Rule(action: parsed, condition: condition, location: location, summary: "redirect"))
    }

    func parseHTTPResponseRule(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        let (words, condition) = try splitCondition(args)
        guard let action = words.first else {
            throw ConfigError("'http-response' needs an action: \(Self.httpResponseActions.joined(separator: ", "))")
        }
        let rest = words.dropFirst()
        let parsed: HTTPResponseAction
        if let shared = try parseSharedAction(action, rest, "http-response", .response) {
            switch shared {
            case .setHeader(let f): parsed = .setHeader(f)
            case .addHeader(let f): parsed = .addHeader(f)
            case .deleteHeader(let m): parsed = .deleteHeader(m)
            case .replaceHeader(let n, let r): parsed = .replaceHeader(name: n, r)
            case .replaceValue(let n, let r): parsed = .replaceValue(name: n, r)
            case .setVariable(let s, let n, let e, let c): parsed = .setVariable(s, n, e, c)
            case .setVariableFormat(let s, let n, let f, let c): parsed = .setVariableFormat(s, n, f, c)
            case .unsetVariable(let s, let n): parsed = .unsetVariable(s, n)
            }
        } else {
            switch action {
            case "set-status":
                guard let codeText = rest.first else { throw ConfigError("missing argument; the form is 'http-response set-status <code> [reason <text>]'") }
                let code = try Values.integer(codeText, for: "http-response set-status", in: 100...999)
                var reason: String?
                if rest.count == 3, rest[rest.startIndex + 1] == "reason" { reason = rest.last! } else {
                    try Values.expect(rest, 1, usage: "http-response set-status <code> [reason <text>]")
                }
                parsed = .setStatus(code, reason: reason)
            case "allow":
                try Values.expect(rest, 0, usage: "http-response allow [if|unless <condition>]")
                parsed = .allow
            case "deny", "return":
                var r = rest
                let response = try parseLocalResponse(&r, defaultStatus: action == "deny" ? 502 : 200, action: action, keyword: "http-response", phase: .response)
                parsed = action == "deny" ? .deny(response) : .returnResponse(response)
            default:
                throw unknownAction(action, "http-response", Self.httpResponseActions)
            }
        }
        let name = action.firstIndex(of: "(").map { String(action[..<$0]) } ?? action
        if let c = condition { checkCondition(c, .response, "http-response \(name)", at: location) }
        proxy!.httpResponseRules.append(Rule(action: parsed, condition: condition, location: location,
                                             summary: "http-response \(name)"))
    }

    // MARK: where fetches may be used

    /// The fix a message carries for a request fetch used where the request is gone.
    static func captureHint(_ e: SampleExpression, response: Bool = false) -> String {
        let base = String(e.fetch.description.prefix { $0 != "(" }.map { $0 == "." ? "_" : $0 })
        let name = base.isEmpty ? "x" : base
        let expression = ([e.fetch.description] + e.converters.map(\.description)).joined(separator: ",")
        let side = response ? "response" : "request"
        return "capture it while the \(side) is there: 'http-\(side) set-var(txn.\(name)) \(expression)', then read 'var(txn.\(name))'"
    }

    /// An action may not read what its phase does not have: an error, as HAProxy's alert.
    func checkFetch(_ e: SampleExpression, _ phase: RulePhase, _ what: String) throws {
        // `be_name` in a frontend's request or connection rules: no backend is chosen yet
        // (HAProxy refuses it there too).
        if case .backendName = e.fetch, phase == .request || phase == .connection, proxy?.kind == .frontend {
            throw ConfigError("\(what): 'be_name' cannot work here: no backend is chosen yet in a frontend's request rules; read it in the backend's rules, in response rules or in the log")
        }
        guard !e.fetch.usage.isAvailable(in: phase) else { return }
        if phase == .check {
            // HAProxy loads these and finds nothing at run time; a check has no client.
            var needs = e.fetch.usage.needs
            if case .variable(let s) = e.fetch.usage { needs = "a '\(s.rawValue).' variable, which a health check does not have (it has 'check.', 'sess.' and 'proc.' ones)" }
            else if e.fetch.usage != .connection { needs = "a client's HTTP message, which a health check does not have" }
            throw ConfigError("\(what): '\(e.description)' cannot work in a health check: it needs \(needs); a check reads the server's answer (res.payload), its variables, the environment and process state")
        }
        var fix = ""
        if phase == .response || phase == .log, e.fetch.usage == .request { fix = "; " + Self.captureHint(e) }
        if phase == .log, e.fetch.usage == .response || e.fetch.usage == .currentMessage {
            fix = "; " + Self.captureHint(e, response: e.fetch.usage == .response || e.fetch.description.hasPrefix("res."))
            if case .status = e.fetch { fix = "; the status is '%ST'" }
        }
        let needs = phase == .log && e.fetch.usage != .variable(.req) && e.fetch.usage != .variable(.res)
            ? "an HTTP message, and both are gone when the log line is written" : e.fetch.usage.needs
        throw ConfigError("\(what): '\(e.description)' cannot work here: it needs \(needs)\(fix)")
    }

    /// A variable of a scope that does not exist in the phase could never be set or read.
    func checkVariableScope(_ scope: VariableScope, _ phase: RulePhase, _ what: String) throws {
        guard FetchUsage.variable(scope).isAvailable(in: phase) else {
            if scope == .check { throw ConfigError("\(what): a 'check.' variable exists only in health checks (tcp-check, http-check); use a 'txn.' or 'sess.' variable") }
            let other = phase == .check ? "check." : scope == .req ? "txn." : scope == .res ? "txn." : "sess."
            throw ConfigError("\(what): a '\(scope.rawValue).' variable does not exist during the \(phase.rawValue); use a '\(other)' variable")
        }
    }

    /// An ACL whose every term reads what the phase does not have never matches: HAProxy
    /// warns and loads it; so do we, with the fix.
    func checkCondition(_ c: Condition, _ phase: RulePhase, _ rule: String, at location: SourceLocation) {
        for acl in c.acls {
            let unavailable = acl.terms.filter { !$0.expression.fetch.usage.isAvailable(in: phase) }
            guard !unavailable.isEmpty, unavailable.count == acl.terms.count else { continue }
            let first = unavailable[0].expression
            var fix = ""
            if phase == .response, first.fetch.usage == .request { fix = "; " + Self.captureHint(first) }
            let label = acl.name.hasPrefix("{") ? "anonymous acl \(acl.name)" : "acl '\(acl.name)'"
            warning("\(label) will never match in '\(rule)': '\(first.keyword)' needs \(first.fetch.usage.needs)\(fix)", at: location)
        }
    }

    func parseTCPRequestRule(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let layerText = args.first else { throw ConfigError("'tcp-request' needs 'connection' or 'content'") }
        if layerText == "inspect-delay" {
            try Values.expect(args.dropFirst(), 1, usage: "tcp-request inspect-delay <time>")
            let ms = try Values.time(args[args.startIndex + 1], for: "tcp-request inspect-delay")
            if let p = proxy, p.kind == .backend {
                warning("'tcp-request inspect-delay' in backend '\(p.name)' changes nothing here: the client's first bytes are inspected in a frontend or listen section", at: location)
                return
            }
            proxy!.settings.inspectDelay = ms
            proxy!.settings.inspectDelayLocation = location
            return
        }
        guard let layer = TCPRequestAction.Layer(rawValue: layerText) else {
            if ["session"].contains(layerText) { throw ConfigError("'tcp-request \(layerText)' is not supported yet") }
            throw ConfigError("unknown 'tcp-request \(layerText)'; use 'tcp-request connection' or 'tcp-request content'")
        }
        if layer == .connection, let p = proxy, p.kind == .backend {
            warning("'tcp-request connection' is ignored in backend '\(p.name)': it needs a frontend or listen section", at: location)
            return
        }
        let (words, condition) = try splitCondition(args.dropFirst())
        let phase: RulePhase = layer == .connection ? .connection : (proxy?.mode == .http ? .request : .connection)
        if let c = condition, layer == .connection {
            for acl in c.acls where acl.terms.contains(where: { $0.expression.fetch.scope == .request }) {
                throw ConfigError("tcp-request connection: ACL '\(acl.name)' reads the HTTP request, which is not known when the connection is accepted; use 'tcp-request content' or 'http-request'")
            }
        }
        guard let verdictText = words.first else { throw ConfigError("tcp-request \(layerText): the action is 'accept' or 'reject'") }
        var summary = "tcp-request \(layerText) \(verdictText)"
        if let verdict = TCPRequestAction.Verdict(rawValue: verdictText) {
            if verdict == .expectProxy {
                guard layer == .connection else {
                    throw ConfigError("'tcp-request content expect-proxy' does not exist; use 'tcp-request connection expect-proxy layer4 if COND'")
                }
                guard words.count == 2, words[words.startIndex + 1] == "layer4" else {
                    throw ConfigError("tcp-request connection expect-proxy: the form is 'expect-proxy layer4 [if|unless <condition>]'")
                }
            } else {
                try Values.expect(words, 1, usage: "tcp-request \(layerText) accept|reject [if|unless <condition>]")
            }
            proxy!.tcpRequestRules.append(Rule(action: TCPRequestAction(layer: layer, verdict: verdict), condition: condition,
                                               location: location, summary: summary))
            return
        }
        let operation: TCPRequestAction.Operation
        if layer == .content && (verdictText.hasPrefix("set-var") || verdictText.hasPrefix("unset-var")) {
            // The variables of a TCP session: no `req.`/`res.` split without HTTP.
            switch try parseSharedAction(verdictText, words.dropFirst(), "tcp-request content", phase) {
            case .setVariable(let scope, let name, let e, let c)?: operation = .setVariable(scope, name, e, c)
            case .setVariableFormat(let scope, let name, let f, let c)?: operation = .setVariableFormat(scope, name, f, c)
            case .unsetVariable(let scope, let name)?: operation = .unsetVariable(scope, name)
            default: throw ConfigError("tcp-request content: unknown action '\(verdictText)'")
            }
            summary = "tcp-request content \(verdictText)"
        } else if layer == .content && verdictText == "capture" {
            let rest = Array(words.dropFirst())
            guard rest.count == 3, rest[1] == "len", let length = Int(rest[2]), length > 0, length <= 65536 else {
                throw ConfigError("tcp-request content capture: the form is 'capture <sample> len <length>'")
            }
            let e: SampleExpression
            do { e = try SampleExpression.parse(rest[0]) } catch let error as RuleError { throw ConfigError("tcp-request content capture: \(error.message)") }
            try checkFetch(e, phase, "tcp-request content capture")
            guard let p = proxy, p.kind != .backend else {
                throw ConfigError("tcp-request content capture: a capture slot belongs to a frontend; write it in a frontend or listen section")
            }
            operation = .capture(e, length: length, slot: p.requestCaptures.count)
            proxy!.requestCaptures.append(length)
        } else {
            if ["track-sc0", "track-sc1", "track-sc2", "set-var", "capture", "sc-inc-gpc0", "silent-drop", "close", "set-src", "do-resolve",
                "set-var-fmt", "unset-var", "set-dst", "set-log-level", "switch-mode", "use-service"].contains(where: { verdictText.hasPrefix($0) }) {
                throw ConfigError("'tcp-request \(layerText) \(verdictText)' is not supported yet")
            }
            throw ConfigError("tcp-request \(layerText): unknown action '\(verdictText)'; the actions are accept, reject\(layer == .content ? ", set-var(), set-var-fmt(), unset-var() and capture" : " and expect-proxy")")
        }
        proxy!.tcpRequestRules.append(Rule(action: TCPRequestAction(layer: layer, verdict: nil, operation: operation), condition: condition,
                                           location: location, summary: summary))
    }

    /// `[status N] [content-type T] [string S | lf-string S | file F | lf-file F | errorfile F | default-errorfiles] [hdr N V]*`,
    /// and `deny_status N` for deny and tarpit.
    func parseLocalResponse(_ rest: inout ArraySlice<String>, defaultStatus: Int, action: String,
                            keyword: String = "http-request", phase: RulePhase = .request) throws -> LocalResponse {
        var response = LocalResponse(status: defaultStatus)
        var bodySet = false
        var bodyKeyword = ""
        func value(_ w: String) throws -> String {
            guard let v = rest.popFirst() else { throw ConfigError("\(keyword) \(action): '\(w)' needs a value") }
            return v
        }
        func setBody(_ b: LocalResponse.Body) throws {
            if bodySet { throw ConfigError("\(keyword) \(action): only one body (string, file, errorfile...) may be given") }
            bodySet = true
            response.body = b
        }
        while let w = rest.popFirst() {
            if ["string", "lf-string", "file", "lf-file", "errorfile", "default-errorfiles"].contains(w) { bodyKeyword = w }
            switch w {
            case "status", "deny_status":
                if w == "deny_status" && action == "return" { throw ConfigError("\(keyword) return: use 'status', not 'deny_status'") }
                response.status = try Values.integer(try value(w), for: "\(keyword) \(action) \(w)", in: 200...599)
            case "content-type": response.contentType = try value(w)
            case "string": try setBody(.text(try value(w)))
            case "lf-string": try setBody(.format(try checkFormat(try value(w), "\(keyword) \(action) lf-string", phase: phase)))
            case "file", "lf-file", "errorfile":
                let path = try value(w)
                let bytes: [UInt8]
                do { bytes = try FileSystem.readFile(path, limit: 1 << 20) } catch let e as SystemError {
                    throw ConfigError("\(keyword) \(action): cannot read '\(path)': \(e.reason)")
                }
                if bytes.count > config.global.bufferSize {
                    throw ConfigError("\(keyword) \(action): '\(path)' is \(bytes.count) bytes; it must fit in tune.bufsize (\(config.global.bufferSize))")
                }
                if w == "errorfile" {
                    guard bytes.starts(with: Array("HTTP/1.".utf8)) else {
                        throw ConfigError("\(keyword) \(action): errorfile '\(path)' is not a raw HTTP response")
                    }
                    try setBody(.rawResponse(path: path, bytes: bytes))
                } else if w == "lf-file" {
                    let text = String(decoding: bytes, as: UTF8.self)
                    try setBody(.formatFile(path: path, text: try checkFormat(text, "\(keyword) \(action) lf-file '\(path)'", phase: phase)))
                } else {
                    try setBody(.file(path: path, bytes: bytes))
                }
            case "default-errorfiles": try setBody(.defaultErrorFile)
            case "errorfiles": throw ConfigError("\(keyword) \(action): 'errorfiles' (http-errors sections) is not supported yet")
            case "hdr":
                let name = try value(w)
                let v = try value(w)
                try checkHeaderName(name, action)
                response.headers.append(HeaderField(name: name, value: try checkFormat(v, "\(keyword) \(action) hdr", phase: phase)))
            default:
                let known = ["status", "content-type", "string", "lf-string", "file", "lf-file", "errorfile", "default-errorfiles", "hdr"]
                var hint = ""
                if let near = Similarity.closest(to: w, in: known) { hint = "; did you mean '\(near)'?" }
                throw ConfigError("\(keyword) \(action): unknown argument '\(w)'\(hint)")
            }
        }
        if response.contentType != nil, case .none = response.body {
            throw ConfigError("\(keyword) \(action): 'content-type' needs a body ('string' or 'file')")
        }
        if case .file = response.body, response.contentType == nil {
            throw ConfigError("\(keyword) \(action): 'file' needs a 'content-type', e.g. content-type text/html")
        }
        switch response.body {
        case .text, .format, .formatFile:
            if response.contentType == nil {
                throw ConfigError("\(keyword) \(action): '\(bodyKeyword)' needs a 'content-type', e.g. content-type text/plain")
            }
        default: break
        }
        if [204, 304].contains(response.status) || response.status < 200 {
            if case .none = response.body {} else { throw ConfigError("\(keyword) \(action): status \(response.status) cannot have a body") }
        }
        return response
    }

    func parseRedirect(_ args: ArraySlice<String>) throws -> Redirect {
        var rest = args
        // Options may come before the kind (`redirect code 302 location /app`), as HAProxy
        // 2.6 reads them: they move after the target.
        var leading: [String] = []
        options: while let w = rest.first, Redirect.Kind(rawValue: w) == nil {
            switch w {
            case "code", "set-cookie", "clear-cookie":
                guard rest.count >= 2 else { break options }
                leading += [w, rest[rest.startIndex + 1]]
                rest = rest.dropFirst(2)
            case "drop-query", "append-slash":
                leading.append(w)
                rest = rest.dropFirst()
            default:
                break options
            }
        }
        if !leading.isEmpty, rest.count >= 2 { rest = ArraySlice(Array(rest.prefix(2)) + leading + Array(rest.dropFirst(2))) }
        guard let kindText = rest.popFirst(), let kind = Redirect.Kind(rawValue: kindText) else {
            throw ConfigError("http-request redirect: the form is 'http-request redirect location|prefix|scheme <target> [code <code>] [drop-query] [append-slash] [set-cookie N[=V]] [clear-cookie N]'")
        }
        guard let target = rest.popFirst() else { throw ConfigError("http-request redirect \(kindText): missing target") }
        var r = Redirect(kind: kind, target: try checkFormat(target, "http-request redirect", phase: .request))
        while let w = rest.popFirst() {
            switch w {
            case "code":
                guard let c = rest.popFirst(), let code = Int(c), [301, 302, 303, 307, 308].contains(code) else {
                    throw ConfigError("http-request redirect: 'code' is 301, 302, 303, 307 or 308")
                }
                r.code = code
            case "drop-query": r.dropQuery = true
            case "append-slash": r.appendSlash = true
            case "set-cookie":
                guard let c = rest.popFirst() else { throw ConfigError("http-request redirect: 'set-cookie' needs a value") }
                r.setCookie = c
            case "clear-cookie":
                guard let c = rest.popFirst() else { throw ConfigError("http-request redirect: 'clear-cookie' needs a name") }
                r.clearCookie = c
            default:
                throw ConfigError("http-request redirect: unknown option '\(w)'; use code, drop-query, append-slash, set-cookie or clear-cookie")
            }
        }
        return r
    }

    /// The actions HAProxy 2.6 documents for `http-request` and for `http-response`.
    static let haproxyRequestActions: Set<String> = [
            "add-acl", "add-header", "allow", "auth", "cache-use", "capture", "del-acl", "del-header",
            "del-map", "deny", "disable-l7-retry", "do-resolve", "early-hint", "normalize-uri", "redirect",
            "reject", "replace-header", "replace-path", "replace-pathq", "replace-uri", "replace-value",
            "return", "sc-inc-gpc", "sc-inc-gpc0", "sc-inc-gpc1", "sc-set-gpt", "sc-set-gpt0",
            "send-spoe-group", "set-dst", "set-dst-port", "set-header", "set-log-level", "set-map", "set-mark",
            "set-method", "set-nice", "set-path", "set-pathq", "set-priority-class", "set-priority-offset",
            "set-query", "set-src", "set-src-port", "set-timeout", "set-tos", "set-uri", "set-var",
            "set-var-fmt", "silent-drop", "strict-mode", "tarpit", "track-sc0", "track-sc1", "track-sc2",
            "unset-var", "use-service", "wait-for-body", "wait-for-handshake",
    ]
    static let haproxyResponseActions: Set<String> = [
            "add-acl", "add-header", "allow", "cache-store", "capture", "del-acl", "del-header", "del-map",
            "deny", "redirect", "replace-header", "replace-value", "return", "sc-inc-gpc", "sc-inc-gpc0",
            "sc-inc-gpc1", "sc-set-gpt", "sc-set-gpt0", "send-spoe-group", "set-header", "set-log-level",
            "set-map", "set-mark", "set-nice", "set-status", "set-tos", "set-var", "set-var-fmt",
            "silent-drop", "strict-mode", "track-sc0", "track-sc1", "track-sc2", "unset-var", "wait-for-body",
    ]

    func unknownAction(_ action: String, _ keyword: String, _ known: [String]) -> ConfigError {
        var hint = ""
        if let near = Similarity.closest(to: action, in: known) { hint = "; did you mean '\(near)'?" }
        // HAProxy 2.6's actions for this rule set: one we do not build says so.
        let others: Set<String> = keyword == "http-response" ? Self.haproxyResponseActions : Self.haproxyRequestActions
        if others.contains(action) { return ConfigError("'\(keyword) \(action)' is not supported yet") }
        return ConfigError("unknown action '\(action)' for '\(keyword)'\(hint); the actions are \(known.joined(separator: ", "))")
    }

    func checkHeaderName(_ name: String, _ action: String) throws {
        let tokenChars = Set("!#$%&'*+-.^_`|~".unicodeScalars)
        guard !name.isEmpty, name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || tokenChars.contains($0) }) else {
            throw ConfigError("\(action): '\(name)' is not a valid header name")
        }
    }

    func regexReplacement(_ pattern: String, _ template: String, _ what: String) throws -> RegexReplacement {
        do {
            let regex = try PosixRegex(pattern)
            return RegexReplacement(regex: regex, template: template)
        } catch let e as PosixRegex.CompileError {
            throw ConfigError("\(what): regex '\(pattern)' does not compile: \(e.description)")
        }
    }

    /// Checks a log-format string: its `%` variables must exist, and `%[expr]` fetches must
    /// exist and work in `phase`.
    @discardableResult
    func checkFormat(_ text: String, _ what: String, phase: RulePhase, separators: Bool = false) throws -> String {
        let nodes: [LogFormatNode]
        do { nodes = try LogFormatText.parse(text, separators: separators) } catch {
            throw ConfigError("\(what): \(error.message)")
        }
        for case .sample(let e, _) in nodes {
            do { try checkFetch(e, phase, "\(what): in '%[\(e.description)]'") } catch let e as RuleError {
                throw ConfigError("\(what): \(e.message)")
            }
        }
        return text
    }

    /// The 1.x `req*`/`rsp*` keywords: accepted with a warning that shows the modern form.
    func parseLegacyRule(_ keyword: String, _ args: ArraySlice<String>, at location: SourceLocation) throws {
        let (words, condition) = try splitCondition(args)
        let request = keyword.hasPrefix("req")
        let base = String(keyword.dropFirst(3))
        let caseInsensitive = base.hasPrefix("i")
        let verb = caseInsensitive ? String(base.dropFirst()) : base
        let prefix = request ? "http-request" : "http-response"
        func compile(_ p: String) throws -> PosixRegex {
            do { return try PosixRegex(p, caseInsensitive: caseInsensitive) } catch let e as PosixRegex.CompileError {
                throw ConfigError("\(keyword): regex '\(p)' does not compile: \(e.description)")
            }
        }
        let operation: LegacyRewrite.Operation
        var modern: String
        let conditionText = condition.map { " " + $0.description } ?? ""
        switch verb {
        case "rep":
            try Values.expect(words, 2, usage: "\(keyword) <regex> <replacement> [if|unless <condition>]")
            let pattern = words.first!, template = words.last!
            operation = .replace(try compile(pattern), template: template)
            if let name = Self.headerName(inRegex: pattern) {
                modern = "\(prefix) replace-header \(name) <regex on the value> <replacement> (the regex sees the value, not the whole line)"
            } else if request {
                modern = "http-request replace-uri (or replace-path) with a regex on the URI alone"
            } else {
                modern = "http-response replace-header <name> <regex> <replacement>"
            }
        case "add":
            try Values.expect(words, 1, usage: "\(keyword) <header line> [if|unless <condition>]")
            operation = .add(words.first!)
            let line = words.first!
            if let colon = line.firstIndex(of: ":") {
                modern = "\(prefix) add-header \(line[..<colon]) '\(String(line[line.index(after: colon)...]).trimmingBlanks())'"
            } else {
                modern = "\(prefix) add-header <name> <value>"
            }
        case "del":
            try Values.expect(words, 1, usage: "\(keyword) <regex> [if|unless <condition>]")
            operation = .delete(try compile(words.first!))
            modern = "\(prefix) del-header \(Self.headerName(inRegex: words.first!) ?? "<name>")"
        case "deny":
            try Values.expect(words, 1, usage: "\(keyword) <regex> [if|unless <condition>]")
            operation = .deny(try compile(words.first!))
            modern = "http-request deny if { <fetch> -m reg \(words.first!) }"
        case "allow":
            try Values.expect(words, 1, usage: "\(keyword) <regex> [if|unless <condition>]")
            operation = .allow(try compile(words.first!))
            modern = "http-request allow if { <fetch> -m reg \(words.first!) }"
        default:
            throw ConfigError("keyword '\(keyword)' is not supported yet")
        }
        modern += conditionText
        warning("'\(keyword)' is a 1.x keyword (HAProxy 2.1 and later reject it); the modern form is: \(modern)", at: location)
        proxy!.legacyRewrites.append(Rule(action: LegacyRewrite(direction: request ? .request : .response, operation: operation),
                                          condition: condition, location: location, summary: keyword))
    }

    /// For a header-line regex such as `^(Location:\ )(.*)` or `^X-Foo:`, the header name.
    static func headerName(inRegex pattern: String) -> String? {
        var p = Substring(pattern)
        if p.hasPrefix("^") { p = p.dropFirst() }
        if p.hasPrefix("(") { p = p.dropFirst() }
        let name = p.prefix { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }
        guard !name.isEmpty, p.dropFirst(name.count).hasPrefix(":") else { return nil }
        return String(name)
    }

}
