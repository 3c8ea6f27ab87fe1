import ProxyRules
import ProxySystem

/// The health-check rules of a proxy section: `option tcp-check` and the protocol checks,
/// `tcp-check ...` and `http-check ...` lines.
extension ConfigParser {
    /// `option tcp-check`, and the protocol checks HAProxy builds on it: Redis (`PING`, then
    /// `+PONG`), SMTP (a 2xx banner, `HELO`, a 2xx answer), PostgreSQL (a startup message for
    /// `user U`, then an authentication request, 'R').
    static func protocolCheck(_ name: String, _ args: ArraySlice<String>) throws -> TCPCheck {
        var check = TCPCheck()
        check.origin = name
        /// One expect as HAProxy defines the check: its status words and its info texts, which
        /// quote the server's answer (`res.payload`), and the code it reports (`status-code`).
        func expect(_ kind: TCPCheck.Expectation.Kind, _ text: String, negated: Bool = false, minRecv: Int? = nil,
                    okStatus: String? = nil, errorStatus: String? = nil, timeoutStatus: String? = nil,
                    onError: String? = nil, onSuccess: String? = nil, statusCode: String? = nil) -> TCPCheck.Step {
            var e = TCPCheck.Expectation(kind: kind, negated: negated, pattern: kind == .binary ? (Self.hexBytes(text) ?? []) : Array(text.utf8), text: text)
            e.minRecv = minRecv
            e.okStatus = okStatus; e.errorStatus = errorStatus; e.timeoutStatus = timeoutStatus
            e.onError = onError; e.onSuccess = onSuccess
            e.statusCode = statusCode.flatMap { try? SampleExpression.parse($0) }
            return .expect(e)
        }
        let replyLine = "%[res.payload(0,0),cut_crlf]", replyText = "%[res.payload(4,0),ltrim(' '),cut_crlf]"
        switch name {
        case "tcp-check":
            if let extra = args.first { throw ConfigError("option tcp-check: unexpected '\(extra)'") }
        case "redis-check":
            if let extra = args.first { throw ConfigError("option redis-check: unexpected '\(extra)'") }
            check.steps = [.send(Array("*1\r\n$4\r\nPING\r\n".utf8)),
                           expect(.string, "+PONG", errorStatus: "L7STS", onError: replyLine, onSuccess: "Redis server is ok")]
        case "smtpchk":
            var greeting = "HELO localhost"
            if !args.isEmpty {
                guard args.count == 2, let verb = args.first, verb == "HELO" || verb == "EHLO" else {
                    throw ConfigError("option smtpchk: the form is 'option smtpchk [HELO|EHLO <domain>]'")
                }
                greeting = "\(verb) \(args.last!)"
            }
            // A banner, which must be 2xx; the greeting, whose answer (one line or several)
            // must be 2xx; a QUIT and its 2xx, as HAProxy 2.6 runs it (Debian's 2.6.12 closes
            // the session with QUIT: HAProxy issue 1812).
            let status = "res.payload(0,3)"
            check.steps = [expect(.rstring, "^[0-9]{3}[ \r]", minRecv: 4, errorStatus: "L7RSP", onError: replyLine),
                           expect(.rstring, "^2[0-9]{2}[ \r]", minRecv: 4, errorStatus: "L7STS", onError: replyText, statusCode: status),
                           .send(Array("\(greeting)\r\n".utf8)),
                           expect(.rstring, "^(2[0-9]{2}-[^\r]*\r\n)*2[0-9]{2}[ \r]", errorStatus: "L7STS", onError: replyText, onSuccess: replyText,
                                  statusCode: status),
                           .send(Array("QUIT\r\n".utf8)),
                           expect(.rstring, "^2[0-9]{2}[- \r]", minRecv: 4, errorStatus: "L7STS", onError: replyText, onSuccess: replyText,
                                  statusCode: status)]
        case "ldap-check":
            // An LDAPv3 anonymous simple bind (message 1, version 3, empty name and password);
            // the answer must be a bind response whose result is success (RFC 4511, 4.1.9).
            if let extra = args.first { throw ConfigError("option ldap-check: unexpected '\(extra)'") }
            check.steps = [.send([0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00]),
                           .expect(.init(kind: .ldapBindResponse, negated: false, pattern: [], text: "", comment: nil))]
        case "mysql-check":
            // Without a user: the greeting alone (HAProxy's deprecated form). With one: a login
            // without password and a QUIT, then the greeting and the login's answer.
            let mysqlGreeting = TCPCheck.Step.expect(.init(kind: .mysqlGreeting, negated: false, pattern: [], text: "", comment: nil))
            guard !args.isEmpty else { check.steps = [mysqlGreeting]; break }
            guard args.first == "user", args.count >= 2, args.count <= 3, let user = args.dropFirst().first, !user.isEmpty else {
                throw ConfigError("option mysql-check: the form is 'option mysql-check [user <username> [post-41|pre-41]]'")
            }
            let version = args.count == 3 ? args.last! : "post-41"
            guard version == "post-41" || version == "pre-41" else {
                throw ConfigError("option mysql-check: '\(version)' is neither post-41 nor pre-41")
            }
            var body: [UInt8]
            if version == "post-41" {
                // Capabilities with CLIENT_PROTOCOL_41, max packet, UTF-8, 23 bytes of padding.
                body = [0x00, 0x82, 0x00, 0x00, 0x00, 0x80, 0x00, 0x01, 0x21] + [UInt8](repeating: 0, count: 23)
            } else {
                body = [0x00, 0x80, 0x00, 0x00, 0x01]
            }
            body += Array(user.utf8) + [0x00, 0x00]
            let login = [UInt8(body.count & 0xff), UInt8(body.count >> 8 & 0xff), UInt8(body.count >> 16 & 0xff), 0x01] + body
            let quit: [UInt8] = [0x01, 0x00, 0x00, 0x00, 0x01]
            check.steps = [.send(login + quit), mysqlGreeting,
                           .expect(.init(kind: .mysqlReply, negated: false, pattern: [], text: "", comment: nil))]
        case "ssl-hello-chk":
            // An SSLv3 ClientHello; any TLS server answers with a handshake (0x16) or an
            // alert (0x15) record, as HAProxy's check requires (a layer-6 check).
            if let extra = args.first { throw ConfigError("option ssl-hello-chk: unexpected '\(extra)'") }
            check.steps = [.send(Self.sslv3ClientHello),
                           expect(.rbinary, "^1[56]", minRecv: 5, okStatus: "L6OK", errorStatus: "L6RSP", timeoutStatus: "L6TOUT")]
        default: // pgsql-check
            guard args.count == 2, args.first == "user", let user = args.last, !user.isEmpty else {
                throw ConfigError("option pgsql-check: the form is 'option pgsql-check user <username>'")
            }
            // Length, protocol 3.0, "user" NUL name NUL, a final NUL.
            let body = [0, 3, 0, 0] + Array("user".utf8) + [0] + Array(user.utf8) + [0, 0] as [UInt8]
            let length = UInt32(body.count + 4)
            let packet = [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + body
            // An error ('E') quotes the server's message; the answer must be an authentication
            // request ('R') of a known method.
            check.steps = [.send(packet),
                           expect(.rstring, "^E", negated: true, minRecv: 5, errorStatus: "L7RSP", onError: "%[res.payload(6,0)]"),
                           expect(.rbinary, "^52000000(08|0A|0C)000000(00|02|03|04|05|06)", minRecv: 9, errorStatus: "L7STS",
                                  onError: "PostgreSQL unknown error", onSuccess: "PostgreSQL server is ok")]
        }
        return check
    }

    /// `option ssl-hello-chk`'s ClientHello: SSL 3.0, a fixed random, no session, RSA and
    /// ECDHE suites, no compression.
    static let sslv3ClientHello: [UInt8] = {
        let suites: [UInt8] = [0xc0, 0x2f, 0xc0, 0x2b, 0xc0, 0x13, 0xc0, 0x09, 0x00, 0x2f, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x05, 0x00, 0x04]
        var body: [UInt8] = [0x03, 0x00] + Array(repeating: 0x5a, count: 32) + [0x00]
        body += [UInt8(suites.count >> 8), UInt8(suites.count & 0xff)] + suites + [0x01, 0x00]
        let handshake: [UInt8] = [0x01, 0x00, UInt8(body.count >> 8), UInt8(body.count & 0xff)] + body
        return [0x16, 0x03, 0x00, UInt8(handshake.count >> 8), UInt8(handshake.count & 0xff)] + handshake
    }()

    /// `deadbeef` as bytes; nil when it is not an even count of hexadecimal digits.
    static func hexBytes(_ text: String) -> [UInt8]? {
        text.isEmpty ? nil : Hexadecimal.bytes(text.utf8)
    }

    /// `tcp-check connect|send|send-lf|send-binary|send-binary-lf|expect|set-var|unset-var|comment`:
    /// the steps `option tcp-check` runs.
    func parseTCPCheckRule(_ args: ArraySlice<String>, at location: SourceLocation) throws {
        guard let sub = args.first else { throw ConfigError("'tcp-check' needs an action: connect, send, send-lf, send-binary, send-binary-lf, expect, set-var, unset-var or comment") }
        var rest = args.dropFirst()
        var steps = settings.tcpCheckRules
        /// `comment TEXT` anywhere in the rule.
        func takeComment() throws -> String? {
            guard let i = rest.firstIndex(of: "comment") else { return nil }
            guard i + 1 < rest.endIndex else { throw ConfigError("tcp-check \(sub): 'comment' needs a text") }
            let text = rest[i + 1]
            rest.removeSubrange(i...(i + 1))
            return text
        }
        if let action = try parseCheckVariableAction(sub, rest, check: "tcp-check") {
            steps.append(.variable(action))
            settings.tcpCheckRules = steps
            return
        }
        switch sub {
        case "connect":
            // The first opens the check's connection; a later one ends it and opens another.
            if !steps.contains(where: { if case .connect = $0 { return true }; return false }),
               !steps.allSatisfy({ switch $0 { case .comment, .variable: return true; default: return false } }) {
                throw ConfigError("tcp-check connect: the first 'connect' must come before the other rules (only set-var and comment lines may come before it): it opens the check's connection")
            }
            let comment = try takeComment()
            let (c, connectComment) = try parseCheckConnect(rest, check: "tcp-check", at: location)
            // The rule's own comment (what a failed connection reports).
            if let text = comment ?? connectComment { steps.append(.comment(text, line: false)) }
            steps.append(.connect(c))
        case "send", "send-binary":
            let comment = try takeComment()
            try Values.expect(rest, 1, usage: "tcp-check \(sub) <\(sub == "send" ? "string" : "hexadecimal string")> [comment <text>]")
            let text = rest.first!
            if sub == "send" {
                steps.append(.send(Array(text.utf8)))
            } else {
                guard let bytes = Self.hexBytes(text) else { throw ConfigError("tcp-check send-binary: '\(text)' is not an even count of hexadecimal digits") }
                steps.append(.send(bytes))
            }
            if let comment { steps.insert(.comment(comment, line: false), at: steps.count - 1) }
        case "send-lf", "send-binary-lf":
            let comment = try takeComment()
            let binary = sub == "send-binary-lf"
            try Values.expect(rest, 1, usage: "tcp-check \(sub) <\(binary ? "hexadecimal log-format" : "log-format")> [comment <text>]")
            let text = try checkFormatInCheck(rest.first!, "tcp-check \(sub)", hexadecimal: binary, at: location)
            steps.append(.sendFormat(text, binary: binary))
            if let comment { steps.insert(.comment(comment, line: false), at: steps.count - 1) }
        case "set-var", "set-var-fmt", "unset-var":
            throw ConfigError("tcp-check \(sub): the form is 'tcp-check \(sub)(<scope>.<name>) ...'")
        case "expect":
            var comment = try takeComment()
            // Options, before or after the pattern (HAProxy takes both).
            let (found, plain) = try parseExpectOptions(rest, check: "tcp-check", at: location)
            var options = TCPCheck.Expectation(kind: .string, negated: false, pattern: [], text: "")
            if let c = found.comment { comment = c }
            options.minRecv = found.minRecv
            options.okStatus = found.okStatus; options.errorStatus = found.errorStatus; options.timeoutStatus = found.timeoutStatus
            options.onSuccess = found.onSuccess; options.onError = found.onError; options.statusCode = found.statusCode
            rest = ArraySlice(plain)
            var negated = false
            if rest.first == "!" { negated = true; rest = rest.dropFirst() }
            guard let kindText = rest.popFirst(), let kind = TCPCheck.Expectation.Kind(rawValue: kindText),
                  [.string, .rstring, .binary, .rbinary, .stringFormat, .binaryFormat].contains(kind) else {
                throw ConfigError("tcp-check expect: the form is 'tcp-check expect [!] string|rstring|binary|rbinary|string-lf|binary-lf <pattern>'")
            }
            try Values.expect(rest, 1, usage: "tcp-check expect [!] \(kindText) <pattern>")
            let text = rest.first!
            var pattern = Array(text.utf8)
            switch kind {
            case .binary:
                guard let bytes = Self.hexBytes(text) else { throw ConfigError("tcp-check expect binary: '\(text)' is not an even count of hexadecimal digits") }
                pattern = bytes
            case .rstring, .rbinary:
                try Self.compileCheckRegex(text, "tcp-check expect \(kindText)")
            case .stringFormat, .binaryFormat:
                _ = try checkFormatInCheck(text, "tcp-check expect \(kindText)", hexadecimal: kind == .binaryFormat, at: location)
            case .string, .mysqlGreeting, .mysqlReply, .ldapBindResponse:
                break
            }
            options.kind = kind
            options.negated = negated
            options.pattern = pattern
            options.text = text
            options.comment = comment
            steps.append(.expect(options))
        case "comment":
            try Values.expect(rest, 1, usage: "tcp-check comment <text>")
            steps.append(.comment(rest.first!, line: true))
        default:
            throw ConfigError("unknown 'tcp-check \(sub)'; use connect, send, send-lf, send-binary, send-binary-lf, expect, set-var, set-var-fmt, unset-var or comment")
        }
        settings.tcpCheckRules = steps
    }

    /// The options of a `tcp-check connect` or `http-check connect` line: where the check's
    /// connection goes and how, and its `comment`.
    func parseCheckConnect(_ words: ArraySlice<String>, check: String, at location: SourceLocation) throws -> (TCPCheck.Connect, String?) {
        var rest = words
        var c = TCPCheck.Connect()
        var comment: String?
        while let w = rest.popFirst() {
            func value() throws -> String {
                guard let v = rest.popFirst() else { throw ConfigError("\(check) connect: '\(w)' needs a value") }
                return v
            }
            switch w {
            case "default": c.serverDefaults = true
            case "comment": comment = try value()
            case "linger":
                warning("\(check) connect: 'linger' changes nothing here: a check's connection is closed with a reset once it is judged", at: location)
            case "port":
                let v = try value()
                if v.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    c.port = try Values.integer(v, for: "\(check) connect port", in: 1...65535)
                } else {
                    // A sample expression, worked out at each check (`var(check.port)`).
                    let e: SampleExpression
                    do { e = try SampleExpression.parse(v) } catch let e as RuleError {
                        throw ConfigError("\(check) connect port: '\(v)' is neither a port nor a sample expression: \(e.message)")
                    }
                    try checkFetch(e, .check, "\(check) connect port")
                    guard e.outputType == .integer || e.outputType == .any || e.outputType == .string else {
                        throw ConfigError("\(check) connect port: '\(v)' gives \(e.outputType.rawValue), not a port number")
                    }
                    c.portExpression = e
                }
            case "addr":
                let v = try value()
                guard let ip = IPAddress(parsing: v) else { throw ConfigError("\(check) connect: addr '\(v)' is not an IP address") }
                c.address = ip
            case "ssl": c.ssl = true
            case "sni": c.sni = try value()
            case "send-proxy": c.sendProxy = true
            case "alpn":
                let v = try value()
                let list = v.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard list.allSatisfy({ !$0.isEmpty && $0.utf8.count < 256 }) else {
                    throw ConfigError("\(check) connect: alpn '\(v)' is not a comma-separated list of protocol names")
                }
                c.alpn = list
            case "proto", "via-socks4", "check-sni":
                throw ConfigError("\(check) connect: '\(w)' is not supported yet")
            default:
                throw ConfigError("\(check) connect: unknown argument '\(w)'; use port, addr, ssl, sni, alpn, send-proxy, linger or comment")
            }
        }
        if (c.sni != nil || c.alpn != nil) && !c.ssl && !c.serverDefaults {
            warning("\(check) connect: 'sni' and 'alpn' change nothing without 'ssl' (the connection is plain)", at: location)
        }
        return (c, comment)
    }

    /// The options of a `tcp-check expect` or `http-check expect` line, wherever they stand
    /// (HAProxy takes them before or after the pattern), and the line's other words in order.
    func parseExpectOptions(_ words: ArraySlice<String>, check: String, at location: SourceLocation) throws
        -> (options: (comment: String?, minRecv: Int?, okStatus: String?, errorStatus: String?, timeoutStatus: String?,
                      onSuccess: String?, onError: String?, statusCode: SampleExpression?), plain: [String]) {
        var rest = words
        var o: (comment: String?, minRecv: Int?, okStatus: String?, errorStatus: String?, timeoutStatus: String?,
                onSuccess: String?, onError: String?, statusCode: SampleExpression?) = (nil, nil, nil, nil, nil, nil, nil, nil)
        var plain: [String] = []
        while let w = rest.popFirst() {
            func value() throws -> String {
                guard let v = rest.popFirst() else { throw ConfigError("\(check) expect: '\(w)' needs a value") }
                return v
            }
            func status(_ table: [String: String]) throws -> String {
                let v = try value()
                guard table[v] != nil else {
                    throw ConfigError("\(check) expect: '\(w)' expects one of \(table.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")) but got '\(v)'")
                }
                return v
            }
            func format() throws -> String {
                try checkFormatInCheck(try value(), "\(check) expect \(w)", at: location)
            }
            switch w {
            case "comment": o.comment = try value()
            case "min-recv":
                let n = try Values.integer(try value(), for: "\(check) expect min-recv", in: -1...Int(Int32.max))
                o.minRecv = n == -1 ? nil : n
            case "ok-status": o.okStatus = try status(TCPCheck.okStatuses)
            case "error-status": o.errorStatus = try status(TCPCheck.errorStatuses)
            case "tout-status": o.timeoutStatus = try status(TCPCheck.timeoutStatuses)
            case "on-success": o.onSuccess = try format()
            case "on-error": o.onError = try format()
            case "status-code":
                let v = try value()
                let e: SampleExpression
                do { e = try SampleExpression.parse(v) } catch let e as RuleError { throw ConfigError("\(check) expect status-code: \(e.message)") }
                try checkFetch(e, .check, "\(check) expect status-code")
                o.statusCode = e
            default: plain.append(w)
            }
        }
        return (o, plain)
    }

    /// `http-check expect ...` and `http-check send ...`.
    func parseHTTPCheck(_ args: ArraySlice<String>) throws {
        guard let sub = args.first else { throw ConfigError("'http-check' needs 'expect' or 'send'") }
        var rest = args.dropFirst()
        var check = settings.httpCheck ?? HTTPCheck()
        switch sub {
        case "expect":
            // Options, before or after the pattern (HAProxy takes both).
            let (found, plain) = try parseExpectOptions(rest, check: "http-check", at: currentLocation)
            var e = HTTPCheck.Expectation(kind: .status, negated: false, pattern: "", comment: found.comment ?? check.pendingComment)
            check.pendingComment = nil
            e.okStatus = found.okStatus; e.errorStatus = found.errorStatus; e.timeoutStatus = found.timeoutStatus
            e.onSuccess = found.onSuccess; e.onError = found.onError; e.statusCode = found.statusCode
            if found.minRecv != nil {
                warning("http-check expect min-recv changes nothing here: the whole response head is read before it is judged", at: currentLocation)
            }
            rest = ArraySlice(plain)
            if rest.first == "!" { e.negated = true; rest = rest.dropFirst() }
            guard let kindText = rest.popFirst(), let kind = HTTPCheck.Expectation.Kind(rawValue: kindText) else {
                throw ConfigError("http-check expect: the form is 'http-check expect [!] status|rstatus|string|rstring|string-lf|hdr|fhdr <pattern>'")
            }
            if kind == .header || kind == .fullHeader {
                e.headerMatch = try parseHeaderMatch(kindText, rest)
                e.pattern = e.headerMatch!.name
            } else {
                try Values.expect(rest, 1, usage: "http-check expect [!] \(kindText) <pattern>")
                e.pattern = rest.first!
            }
            if kind == .rstatus || kind == .rstring {
                try Self.compileCheckRegex(e.pattern, "http-check expect \(kindText)")
            }
            if kind == .stringFormat { _ = try checkFormatInCheck(e.pattern, "http-check expect string-lf", at: currentLocation) }
            e.kind = kind
            check.expectations.append(e)
        case "comment":
            try Values.expect(rest, 1, usage: "http-check comment <text>")
            check.pendingComment = rest.first!
        case "connect":
            guard check.connect == nil, check.expectations.isEmpty else {
                throw ConfigError("http-check connect: only one 'connect', before the first 'expect', is supported yet (it opens the check's connection)")
            }
            let (c, comment) = try parseCheckConnect(rest, check: "http-check", at: currentLocation)
            if let comment { check.pendingComment = comment }
            check.connect = c
        case "send":
            check.sendSeen = true
            while let w = rest.popFirst() {
                guard let v = rest.popFirst() else { throw ConfigError("http-check send: '\(w)' needs a value") }
                switch w {
                case "meth": check.method = v
                case "uri": check.uri = v; check.uriFormat = nil
                case "uri-lf": check.uriFormat = try checkFormatInCheck(v, "http-check send uri-lf", at: currentLocation)
                case "ver": check.version = v
                case "hdr":
                    guard let hv = rest.popFirst() else { throw ConfigError("http-check send: 'hdr' needs a name and a value") }
                    // A header's value is a log-format text, as in HAProxy.
                    check.headers.append(HeaderField(name: v, value: try checkFormatInCheck(hv, "http-check send hdr \(v)", at: currentLocation)))
                case "body": check.body = v; check.bodyFormat = nil
                case "body-lf":
                    check.bodyFormat = try checkFormatInCheck(v, "http-check send body-lf", at: currentLocation)
                    check.body = nil
                case "comment":
                    // HAProxy reports a send's comment nowhere for an HTTP check (a failed
                    // send is the connection's failure): accepted, and said to change nothing.
                    warning("http-check send: 'comment' changes nothing here (a failed request is reported as its connection's failure); put it on the 'http-check expect' line to see it", at: currentLocation)
                default:
                    throw ConfigError("http-check send: unknown argument '\(w)'; use meth, uri, uri-lf, ver, hdr, body, body-lf or comment")
                }
            }
        case "disable-on-404":
            try Values.expect(rest, 0, usage: "http-check disable-on-404")
            check.disableOn404 = true
        case "send-state":
            try Values.expect(rest, 0, usage: "http-check send-state")
            check.sendState = true
        case _ where sub.hasPrefix("set-var(") || sub.hasPrefix("set-var-fmt(") || sub.hasPrefix("unset-var("):
            guard let action = try parseCheckVariableAction(sub, rest, check: "http-check") else { return }
            check.variableActions.append(.init(action: action, afterExpectations: check.expectations.count,
                                               beforeSend: !check.sendSeen && check.expectations.isEmpty))
        case "set-var", "set-var-fmt", "unset-var":
            throw ConfigError("http-check \(sub): the form is 'http-check \(sub)(<scope>.<name>) ...'")
        default:
            throw ConfigError("unknown 'http-check \(sub)'; use 'http-check expect' or 'http-check send'")
        }
        settings.httpCheck = check
    }

    /// A regex of a check's pattern, compiled to see that it does.
    static func compileCheckRegex(_ pattern: String, _ what: String) throws {
        do { _ = try PosixRegex(pattern) } catch let e as PosixRegex.CompileError {
            throw ConfigError("\(what): regex '\(pattern)' does not compile: \(e.description)")
        }
    }

    /// `hdr|fhdr name|name-lf [-m METHOD] NAME [value|value-lf [-m METHOD] VALUE]`.
    func parseHeaderMatch(_ kind: String, _ words: ArraySlice<String>) throws -> HeaderMatch {
        var rest = words
        let form = "'http-check expect \(kind) name|name-lf [-m str|beg|end|sub|reg] <name> [value|value-lf [-m str|beg|end|sub|reg] <value>]'"
        func method(_ isFormat: Bool) throws -> HeaderMatch.Method {
            guard rest.first == "-m" else { return .str }
            rest = rest.dropFirst()
            guard let text = rest.popFirst() else { throw ConfigError("http-check expect \(kind): '-m' needs a method: str, beg, end, sub or reg") }
            guard let m = HeaderMatch.Method(rawValue: text) else {
                throw ConfigError("http-check expect \(kind): '-m' takes str, beg, end, sub or reg, not '\(text)'")
            }
            if m == .reg && isFormat { throw ConfigError("http-check expect \(kind): a log-format text (name-lf, value-lf) cannot be matched as a regex ('-m reg')") }
            return m
        }
        guard let nameWord = rest.popFirst(), nameWord == "name" || nameWord == "name-lf" else {
            throw ConfigError("http-check expect \(kind): the header's name comes first; the form is \(form)")
        }
        var match = HeaderMatch(name: "")
        match.nameIsFormat = nameWord == "name-lf"
        match.nameMethod = try method(match.nameIsFormat)
        guard let name = rest.popFirst() else { throw ConfigError("http-check expect \(kind): '\(nameWord)' needs a pattern; the form is \(form)") }
        match.name = name
        if match.nameIsFormat { _ = try checkFormatInCheck(name, "http-check expect \(kind) name-lf", at: currentLocation) }
        if match.nameMethod == .reg { try Self.compileCheckRegex(name, "http-check expect \(kind) name") }
        if let valueWord = rest.popFirst() {
            guard valueWord == "value" || valueWord == "value-lf" else {
                throw ConfigError("http-check expect \(kind): unexpected '\(valueWord)'; the form is \(form)")
            }
            match.valueIsFormat = valueWord == "value-lf"
            match.valueMethod = try method(match.valueIsFormat)
            guard let value = rest.popFirst() else { throw ConfigError("http-check expect \(kind): '\(valueWord)' needs a pattern; the form is \(form)") }
            match.value = value
            if match.valueIsFormat { _ = try checkFormatInCheck(value, "http-check expect \(kind) value-lf", at: currentLocation) }
            if match.valueMethod == .reg { try Self.compileCheckRegex(value, "http-check expect \(kind) value") }
        }
        if let extra = rest.first { throw ConfigError("http-check expect \(kind): unexpected '\(extra)'; the form is \(form)") }
        return match
    }

    /// `set-var(scope.name) EXPR`, `set-var-fmt(scope.name) FMT`, `unset-var(scope.name)` of a
    /// `tcp-check` or `http-check` line; nil when `word` is another action. Only `proc.`,
    /// `sess.` and `check.` variables exist in a check, as in HAProxy.
    func parseCheckVariableAction(_ word: String, _ rest: ArraySlice<String>, check: String) throws -> CheckVariableAction? {
        guard word.hasPrefix("set-var(") || word.hasPrefix("set-var-fmt(") || word.hasPrefix("unset-var(") else { return nil }
        guard let shared = try parseSharedAction(word, rest, check, .check) else { return nil }
        switch shared {
        case .setVariable(let scope, let name, let e, let c): return CheckVariableAction(scope: scope, name: name, value: .expression(e), conditions: c)
        case .setVariableFormat(let scope, let name, let f, let c):
            return CheckVariableAction(scope: scope, name: name, value: .format(try checkFormatInCheck(f, "\(check) set-var-fmt", at: currentLocation)), conditions: c)
        case .unsetVariable(let scope, let name): return CheckVariableAction(scope: scope, name: name, value: nil)
        default: return nil
        }
    }

    /// The `%` variables that have a value in a health check: the host, the process, the
    /// backend and server checked, the server's address and the date.
    static let checkLogVariables: Set<LogVariable> = [.hostname, .pid, .backend, .server, .serverIP, .serverPort,
                                                        .date, .gmtDate, .localDate, .timestamp, .milliseconds]

    /// Checks a log-format text of a health check: its fetches must work there (no client,
    /// no request), and a `%` variable with no value there is a warning. With `hexadecimal`
    /// (`send-binary-lf`, `binary-lf`), its literal text must be hexadecimal digits.
    func checkFormatInCheck(_ text: String, _ what: String, hexadecimal: Bool = false, at location: SourceLocation) throws -> String {
        _ = try checkFormat(text, what, phase: .check)
        let nodes = (try? LogFormatText.parse(text, separators: false)) ?? []
        for case .variable(let v, _) in nodes where !Self.checkLogVariables.contains(v) {
            warning("\(what): '%\(v.rawValue)' has no value in a health check (it prints nothing); the ones that do are \(Self.checkLogVariables.map { "%" + $0.rawValue }.sorted().joined(separator: " "))", at: location)
        }
        if hexadecimal {
            for case .literal(let bytes) in nodes where !bytes.allSatisfy({ Hexadecimal.digit($0) != nil }) {
                throw ConfigError("\(what): '\(String(decoding: bytes, as: UTF8.self))' is not hexadecimal digits")
            }
        }
        return text
    }
}
