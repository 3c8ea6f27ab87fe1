/// The type of a sample, as HAProxy names them.
public enum SampleType: String, Sendable {
    case boolean = "bool", integer = "int", string = "str", ip = "ip", any = "any"
}

/// When a fetch's value is known: this decides where a rule may use it, and what folds.
public enum FetchScope: Int, Comparable, Sendable {
    /// Known once the config is loaded (`env`, `env_int`, constants): folded at load.
    case load = 0
    /// Process state that changes at run time (`nbsrv`, `stopping`, `var(proc.x)`).
    case process = 1
    /// Known once a connection is accepted (`src`, `dst`...).
    case connection = 2
    /// Needs the HTTP request (`path`, `hdr`...).
    case request = 3

    public static func < (a: FetchScope, b: FetchScope) -> Bool { a.rawValue < b.rawValue }
}

/// Scope of a variable: `proc.`, `sess.`, `txn.`, `req.`, `res.`; `check.` lives for one
/// run of a health check.
public enum VariableScope: String, Sendable, CaseIterable {
    case proc, sess, txn, req, res, check
}

/// Which HTTP message a header or cookie fetch reads: the message being processed (`hdr`,
/// `cook`: the request in request rules, the response in response rules), or one of them.
public enum MessageSide: Sendable, Equatable {
    case current, request, response
}

/// When a rule runs: as the connection is accepted, on the request, or on the response;
/// or when the access-log line is written, once both messages are gone; or in a health
/// check (`tcp-check`, `http-check`), which has no client at all.
public enum RulePhase: String, Sendable {
    case connection, request, response, log
    case check = "health check"
}

/// What a fetch needs, as HAProxy 2.6 classifies fetches; it decides where a rule may use it.
public enum FetchUsage: Sendable, Equatable {
    /// Known at load: the environment, constants.
    case load
    /// Process state: server health, `stopping`.
    case process
    /// The connection: `src`, `dst`...
    case connection
    /// Copied when the request was parsed, so valid in response rules too: `method`, `req.ver`.
    case capturedRequest
    /// The message being processed: `hdr()`, `cook()`.
    case currentMessage
    /// The request head itself: `path`, `url`, `req.hdr()`...: gone once it is sent.
    case request
    /// The response: `status`, `res.hdr()`.
    case response
    /// A variable, whose scope says when it exists.
    case variable(VariableScope)
    /// What a server answered a health check (`res.payload`).
    case checkAnswer

    /// Whether a fetch of this class can give a value in `phase`.
    public func isAvailable(in phase: RulePhase) -> Bool {
        if phase == .check {
            // A check has a server and its answer, no client: the environment, process
            // state and its own `check.` and `sess.` variables (one run each), and `proc.`.
            switch self {
            case .load, .process, .checkAnswer: return true
            case .variable(let scope): return scope == .proc || scope == .sess || scope == .check
            default: return false
            }
        }
        switch self {
        case .checkAnswer: return false
        case .load, .process, .connection: return true
        case .capturedRequest: return phase != .connection
        case .currentMessage: return phase == .request || phase == .response
        case .request: return phase == .request
        case .response: return phase == .response
        case .variable(let scope):
            switch scope {
            case .proc, .sess: return true
            case .txn: return phase != .connection
            case .req: return phase == .request
            case .res: return phase == .response
            case .check: return false
            }
        }
    }

    /// What the fetch needs, for messages: "the request", "the response".
    public var needs: String {
        switch self {
        case .request: return "the request, which is gone once it is sent to the server"
        case .response: return "the response, which does not exist yet"
        case .variable(.check): return "a 'check.' variable, which only health checks have"
        case .variable(let s): return "a '\(s.rawValue).' variable, which does not exist there"
        case .capturedRequest, .currentMessage: return "an HTTP message"
        case .connection: return "a client connection"
        case .checkAnswer: return "what a server answered a health check, which only tcp-check and http-check rules have"
        default: return "nothing"
        }
    }
}

/// A sample fetch with its arguments checked and parsed.
public enum Fetch: Equatable, Sendable, CustomStringConvertible {
    case env(String)
    case envInteger(String)
    case constantBool(Bool)
    case constantInt(Int64)
    case constantString(String)
    /// `ipv4(...)` and `ipv6(...)`.
    case constantIP(IPAddress)
    /// `bin(HEX)`: bytes, matched and stored as a string is.
    case constantBinary([UInt8])
    case source, sourcePort, destination, destinationPort
    case path, url, query, method, requestVersion
    /// `base`: the first Host header's value followed by the path (the path alone without one).
    case base
    case urlParameter(String, delimiter: UInt8?)
    /// A header's values (comma-split), optionally one occurrence (negative counts from the end).
    case header(String, occurrence: Int?, side: MessageSide)
    /// The full header lines' values, not comma-split (`req.fhdr`).
    case fullHeader(String, occurrence: Int?, side: MessageSide)
    case headerCount(String?, side: MessageSide)
    /// A cookie's value: from `Cookie` in a request, from `Set-Cookie` in a response.
    case cookie(String, side: MessageSide)
    case requestLength
    case contentLength
    case isHTTP
    /// The response's status code and HTTP version.
    case status
    case responseVersion
    case backendUsableServers(String?)
    case serverIsUp(backend: String, server: String)
    case stopping
    /// `date([OFFSET[,UNIT]])`: now since the epoch in s, ms or us (UNIT as parts of a second:
    /// 1, 1000, 1000000), plus OFFSET in that unit; `date_us`: now's microseconds.
    case date(offset: Int64, perSecond: Int64)
    case dateMicroseconds
    /// `hostname`; `proc`: the process's number (always 1: one process, several threads).
    case hostName
    case processNumber
    /// `fe_name`; `be_name` (the frontend's own until a backend is chosen, as in HAProxy);
    /// `srv_name`, once a server answered.
    case frontendName, backendName, serverName
    /// `ssl_fc`: the client connection is TLS; `ssl_fc_sni`, `ssl_fc_protocol`, `ssl_fc_cipher`.
    case tlsFrontend
    case tlsServerName
    case tlsProtocol
    case tlsCipher
    /// `ssl_fc_alpn`, `ssl_fc_session_reused`.
    case tlsALPN
    case tlsResumed
    /// `ssl_c_*`, `ssl_fc_has_crt`: the client certificate (`bind ... verify`).
    case tlsClient(TLSClientField)
    /// `req.ssl_hello_type`, `req.ssl_sni`: read from the client's first bytes, a TLS
    /// ClientHello not terminated here (`tcp-request inspect-delay`, TCP mode).
    case helloType
    case helloServerName
    /// `req.ssl_ver`: the ClientHello's version, major × 65536 + minor.
    case helloVersion
    /// `capture.req.hdr(N)`: request capture slot N (`tcp-request content capture`).
    case capturedRequestHeader(Int)
    /// `var(scope.name[,default])`.
    case variable(VariableScope, String, defaultValue: String?)
    /// `res.payload(offset,length)`: bytes of a health check's answer (length 0: to its end).
    case responsePayload(offset: Int, length: Int)

    /// Whether it reads the client's first bytes, which only `tcp-request inspect-delay`
    /// waits for in a TCP frontend.
    public var readsClientHello: Bool {
        switch self {
        case .helloType, .helloServerName, .helloVersion: return true
        default: return false
        }
    }

    /// Where the value is known.
    public var scope: FetchScope {
        switch self {
        case .env, .envInteger, .constantBool, .constantInt, .constantString, .constantIP, .constantBinary: return .load
        case .backendUsableServers, .serverIsUp, .stopping, .variable, .date, .dateMicroseconds, .hostName, .processNumber: return .process
        case .source, .sourcePort, .destination, .destinationPort, .tlsFrontend, .tlsServerName, .tlsProtocol, .tlsCipher, .tlsALPN, .tlsResumed, .tlsClient,
             .frontendName: return .connection
        // The client's first bytes: not known when the connection is accepted.
        case .helloType, .helloServerName, .helloVersion: return .request
        default: return .request
        }
    }

    /// What it needs, and so where a rule may use it.
    public var usage: FetchUsage {
        switch self {
        case .env, .envInteger, .constantBool, .constantInt, .constantString, .constantIP, .constantBinary: return .load
        case .backendUsableServers, .serverIsUp, .stopping, .date, .dateMicroseconds, .hostName, .processNumber: return .process
        case .source, .sourcePort, .destination, .destinationPort, .tlsFrontend, .tlsServerName, .tlsProtocol, .tlsCipher, .tlsALPN, .tlsResumed, .tlsClient,
             .helloType, .helloServerName, .helloVersion, .frontendName, .backendName: return .connection
        case .serverName: return .response
        case .method, .requestVersion: return .capturedRequest
        // Captured in the session: there whenever a rule or the log reads it.
        case .capturedRequestHeader: return .connection
        case .header(_, _, let side), .fullHeader(_, _, let side), .headerCount(_, let side), .cookie(_, let side):
            switch side {
            case .current: return .currentMessage
            case .request: return .request
            case .response: return .response
            }
        case .status, .responseVersion: return .response
        case .variable(let s, _, _): return .variable(s)
        case .responsePayload: return .checkAnswer
        case .path, .url, .query, .urlParameter, .requestLength, .contentLength, .isHTTP, .base: return .request
        }
    }

    public var outputType: SampleType {
        switch self {
        case .env, .constantString, .constantBinary, .path, .base, .url, .query, .method, .requestVersion, .responseVersion, .urlParameter, .header,
             .fullHeader, .cookie, .tlsServerName, .tlsProtocol, .tlsCipher, .tlsALPN, .helloServerName, .capturedRequestHeader,
             .responsePayload, .hostName, .frontendName, .backendName, .serverName: return .string
        case .date, .dateMicroseconds, .processNumber: return .integer
        case .helloType, .helloVersion: return .integer
        case .envInteger, .constantInt, .sourcePort, .destinationPort, .headerCount, .requestLength,
             .contentLength, .backendUsableServers, .status: return .integer
        case .constantBool, .isHTTP, .serverIsUp, .stopping, .tlsFrontend, .tlsResumed: return .boolean
        case .tlsClient(let f):
            switch f {
            case .used, .hasCertificate: return .boolean
            case .verify: return .integer
            case .subjectDN, .issuerDN, .serial: return .string
            }
        case .source, .destination, .constantIP: return .ip
        case .variable: return .any
        }
    }

    public var description: String {
        func side(_ s: MessageSide, _ name: String) -> String {
            switch s {
            case .current: return name
            case .request: return "req." + name
            case .response: return "res." + name
            }
        }
        switch self {
        case .env(let n): return "env(\(n))"
        case .envInteger(let n): return "env_int(\(n))"
        case .constantBool(let b): return "bool(\(b ? 1 : 0))"
        case .constantInt(let i): return "int(\(i))"
        case .constantString(let s): return "str(\(s))"
        case .constantIP(let ip): return ip.isV4 ? "ipv4(\(ip))" : "ipv6(\(ip))"
        case .constantBinary(let b): return "bin(\(b.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()))"
        case .source: return "src"
        case .sourcePort: return "src_port"
        case .destination: return "dst"
        case .destinationPort: return "dst_port"
        case .path: return "path"
        case .base: return "base"
        case .url: return "url"
        case .query: return "query"
        case .method: return "method"
        case .requestVersion: return "req.ver"
        case .responseVersion: return "res.ver"
        case .status: return "status"
        case .urlParameter(let n, _): return "url_param(\(n))"
        case .header(let n, let o, let s): return side(s, "hdr") + (o.map { "(\(n),\($0))" } ?? "(\(n))")
        case .fullHeader(let n, let o, let s): return side(s == .current ? .request : s, "fhdr") + (o.map { "(\(n),\($0))" } ?? "(\(n))")
        case .headerCount(let n, let s): return side(s, "hdr_cnt") + (n.map { "(\($0))" } ?? "")
        case .cookie(let n, let s): return side(s, "cook") + "(\(n))"
        case .requestLength: return "req.len"
        case .contentLength: return "req.hdr_val(content-length)"
        case .isHTTP: return "req.proto_http"
        case .backendUsableServers(let b): return b.map { "nbsrv(\($0))" } ?? "nbsrv"
        case .serverIsUp(let b, let s): return "srv_is_up(\(b)/\(s))"
        case .stopping: return "stopping"
        case .date(let o, let unit): return "date(\(o),\(unit == 1 ? "s" : unit == 1000 ? "ms" : "us"))"
        case .dateMicroseconds: return "date_us"
        case .hostName: return "hostname"
        case .processNumber: return "proc"
        case .frontendName: return "fe_name"
        case .backendName: return "be_name"
        case .serverName: return "srv_name"
        case .tlsFrontend: return "ssl_fc"
        case .tlsServerName: return "ssl_fc_sni"
        case .tlsProtocol: return "ssl_fc_protocol"
        case .tlsCipher: return "ssl_fc_cipher"
        case .tlsALPN: return "ssl_fc_alpn"
        case .tlsResumed: return "ssl_fc_session_reused"
        case .tlsClient(let f): return f.rawValue
        case .helloType: return "req.ssl_hello_type"
        case .helloServerName: return "req.ssl_sni"
        case .helloVersion: return "req.ssl_ver"
        case .capturedRequestHeader(let n): return "capture.req.hdr(\(n))"
        case .variable(let s, let n, let d): return "var(\(s.rawValue).\(n)" + (d.map { ",\($0)" } ?? "") + ")"
        case .responsePayload(let o, let l): return "res.payload(\(o),\(l))"
        }
    }
}

/// What a client certificate fetch reads.
public enum TLSClientField: String, CaseIterable, Sendable, Equatable {
    /// `ssl_c_used`: the client sent a certificate (this connection, or the resumed one).
    case used = "ssl_c_used"
    /// `ssl_c_verify`: OpenSSL's verification result, 0 when it verified.
    case verify = "ssl_c_verify"
    /// `ssl_c_s_dn`, `ssl_c_i_dn`: subject and issuer, as `/C=FR/O=.../CN=...`.
    case subjectDN = "ssl_c_s_dn"
    case issuerDN = "ssl_c_i_dn"
    /// `ssl_c_serial`: the serial number's bytes.
    case serial = "ssl_c_serial"
    /// `ssl_fc_has_crt`: a certificate came in this very handshake.
    case hasCertificate = "ssl_fc_has_crt"
}

extension VariableScope {
    /// Splits `scope.name`, checking both parts as HAProxy does: the name has letters,
    /// digits, `_` and `.` only.
    public static func parseName(_ text: String, what: String) throws -> (VariableScope, String) {
        guard let dot = text.firstIndex(of: "."), let scope = VariableScope(rawValue: String(text[..<dot])) else {
            throw RuleError("\(what): invalid variable name '\(text)'; a name starts with its scope: proc, sess, txn, req, res or check, e.g. txn.path")
        }
        let name = String(text[text.index(after: dot)...])
        guard !name.isEmpty, name.utf8.allSatisfy({ ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5f || $0 == 0x2e }) else {
            throw RuleError("\(what): invalid variable name '\(text)'; use letters, digits, '_' and '.' after the scope")
        }
        return (scope, name)
    }
}

/// An error in a rule, fetch or ACL, with the message an operator reads.
public struct RuleError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The fetch keywords: their argument grammar and the match method their ACL form implies.
public enum FetchRegistry {
    /// One keyword, e.g. `path_beg` is `path` with the `beg` method.
    struct Entry: Sendable {
        /// How many arguments: a range, and a builder from the raw arguments.
        let arguments: ClosedRange<Int>
        let build: @Sendable ([String]) throws -> Fetch
        let method: MatchMethod?
        let usage: String
    }

    static func noArgs(_ f: Fetch, _ m: MatchMethod? = nil, _ usage: String) -> Entry {
        Entry(arguments: 0...0, build: { _ in f }, method: m, usage: usage)
    }

    static func header(_ m: MatchMethod?, _ name: String, full: Bool = false, side: MessageSide) -> Entry {
        Entry(arguments: 0...2, build: { args in
            guard let n = args.first, !n.isEmpty else {
                throw RuleError("fetch '\(name)' needs a header name, e.g. \(name)(host)")
            }
            var occurrence: Int?
            if args.count > 1 {
                guard let o = Int(args[1]) else {
                    throw RuleError("fetch '\(name)': occurrence '\(args[1])' is not an integer")
                }
                occurrence = o
            }
            return full ? .fullHeader(n.lowercased(), occurrence: occurrence, side: side) : .header(n.lowercased(), occurrence: occurrence, side: side)
        }, method: m, usage: "\(name)(<name>[,<occ>])")
    }

    static func envName(_ name: String, _ make: @escaping @Sendable (String) -> Fetch) -> Entry {
        Entry(arguments: 1...1, build: { args in
            let n = args[0]
            guard let first = n.utf8.first, !(first >= 0x30 && first <= 0x39), n.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) }) else {
                throw RuleError("fetch '\(name)': '\(n)' is not a variable name")
            }
            return make(n)
        }, method: nil, usage: "\(name)(<NAME>)")
    }

    static let entries: [String: Entry] = {
        var e: [String: Entry] = [:]
        e["env"] = envName("env") { .env($0) }
        e["env_int"] = envName("env_int") { .envInteger($0) }
        e["src"] = noArgs(.source, nil, "src")
        e["src_port"] = noArgs(.sourcePort, nil, "src_port")
        e["dst"] = noArgs(.destination, nil, "dst")
        e["dst_port"] = noArgs(.destinationPort, nil, "dst_port")
        e["method"] = noArgs(.method, nil, "method")
        e["req.ver"] = noArgs(.requestVersion, nil, "req.ver")
        e["req_ver"] = e["req.ver"]
        e["req.len"] = noArgs(.requestLength, nil, "req.len")
        e["req.proto_http"] = noArgs(.isHTTP, nil, "req.proto_http")
        e["stopping"] = noArgs(.stopping, nil, "stopping")
        e["date"] = Entry(arguments: 0...2, build: { args in
            var offset: Int64 = 0
            if let a = args.first, !a.isEmpty {
                guard let o = Int64(a) else { throw RuleError("fetch 'date': the offset is an integer (in the unit asked for), not '\(a)'") }
                offset = o
            }
            let units: [String: Int64] = ["s": 1, "ms": 1000, "us": 1_000_000]
            guard args.count < 2 || args[1].isEmpty || units[args[1]] != nil else { throw RuleError("fetch 'date': the unit is s, ms or us, not '\(args[1])'") }
            return .date(offset: offset, perSecond: args.count < 2 || args[1].isEmpty ? 1 : units[args[1]]!)
        }, method: nil, usage: "date([<offset>],[<unit>])")
        e["date_us"] = noArgs(.dateMicroseconds, nil, "date_us")
        e["hostname"] = noArgs(.hostName, nil, "hostname")
        e["proc"] = noArgs(.processNumber, nil, "proc")
        e["fe_name"] = noArgs(.frontendName, nil, "fe_name")
        e["be_name"] = noArgs(.backendName, nil, "be_name")
        e["srv_name"] = noArgs(.serverName, nil, "srv_name")
        e["ssl_fc"] = noArgs(.tlsFrontend, nil, "ssl_fc")
        e["ssl_fc_sni"] = noArgs(.tlsServerName, nil, "ssl_fc_sni")
        e["ssl_fc_protocol"] = noArgs(.tlsProtocol, nil, "ssl_fc_protocol")
        e["ssl_fc_cipher"] = noArgs(.tlsCipher, nil, "ssl_fc_cipher")
        e["ssl_fc_alpn"] = noArgs(.tlsALPN, nil, "ssl_fc_alpn")
        e["ssl_fc_session_reused"] = noArgs(.tlsResumed, nil, "ssl_fc_session_reused")
        e["ssl_fc_is_resumed"] = noArgs(.tlsResumed, nil, "ssl_fc_is_resumed")
        for f in TLSClientField.allCases { e[f.rawValue] = noArgs(.tlsClient(f), nil, f.rawValue) }
        e["req.ssl_hello_type"] = noArgs(.helloType, nil, "req.ssl_hello_type")
        e["req_ssl_hello_type"] = e["req.ssl_hello_type"]
        e["req.ssl_sni"] = noArgs(.helloServerName, nil, "req.ssl_sni")
        e["req_ssl_sni"] = e["req.ssl_sni"]
        e["req.ssl_ver"] = noArgs(.helloVersion, nil, "req.ssl_ver")
        e["capture.req.hdr"] = Entry(arguments: 1...1, build: { args in
            guard let n = Int(args[0]), n >= 0 else { throw RuleError("fetch 'capture.req.hdr': '\(args[0])' is not a capture slot number") }
            return .capturedRequestHeader(n)
        }, method: nil, usage: "capture.req.hdr(<slot>)")
        e["req_ssl_ver"] = e["req.ssl_ver"]
        // No inspect-delay yet: the end of the wait is always reached; no RDP cookie is parsed.
        e["wait_end"] = noArgs(.isHTTP, nil, "wait_end")
        e["req.rdp_cookie_cnt"] = noArgs(.constantInt(0), nil, "req.rdp_cookie_cnt")
        for (suffix, method) in [("", nil), ("_beg", MatchMethod.beginning), ("_end", .ending), ("_sub", .substring),
                                 ("_reg", .regex), ("_dir", .directory), ("_dom", .domain), ("_len", .length)] as [(String, MatchMethod?)] {
            e["path" + suffix] = noArgs(.path, method, "path" + suffix)
            e["base" + suffix] = noArgs(.base, method, "base" + suffix)
            e["url" + suffix] = noArgs(.url, method, "url" + suffix)
            e["hdr" + suffix] = header(method, "hdr" + suffix, side: .current)
        }
        e["query"] = noArgs(.query, nil, "query")
        e["status"] = noArgs(.status, nil, "status")
        e["res.ver"] = noArgs(.responseVersion, nil, "res.ver")
        e["resp_ver"] = e["res.ver"]
        for (prefix, side) in [("", MessageSide.current), ("req.", .request), ("res.", .response)] {
            e[prefix + "hdr_cnt"] = Entry(arguments: 0...1, build: { args in .headerCount(args.first.map { $0.lowercased() }, side: side) },
                                         method: nil, usage: "\(prefix)hdr_cnt([<name>])")
        }
        e["req.hdr"] = header(nil, "req.hdr", side: .request)
        e["req.fhdr"] = header(nil, "req.fhdr", full: true, side: .request)
        e["res.hdr"] = header(nil, "res.hdr", side: .response)
        e["res.fhdr"] = header(nil, "res.fhdr", full: true, side: .response)
        e["shdr"] = e["res.hdr"]
        e["hdr_ip"] = header(.ip, "hdr_ip", side: .current)
        e["hdr_val"] = Entry(arguments: 1...2, build: { args in .header(args[0].lowercased(), occurrence: args.count > 1 ? Int(args[1]) : nil, side: .current) },
                             method: .integer, usage: "hdr_val(<name>)")
        for (name, side) in [("cook", MessageSide.current), ("req.cook", .request), ("res.cook", .response), ("scook", .response)] {
            e[name] = Entry(arguments: 1...1, build: { args in
                guard !args[0].isEmpty else { throw RuleError("fetch '\(name)' needs a cookie name") }
                return .cookie(args[0], side: side)
            }, method: nil, usage: "\(name)(<name>)")
        }
        for name in ["url_param", "urlp"] {
            e[name] = Entry(arguments: 1...2, build: { args in
                var delimiter: UInt8?
                if args.count > 1 {
                    guard args[1].utf8.count == 1 else { throw RuleError("fetch '\(name)': delimiter must be one character") }
                    delimiter = args[1].utf8.first
                }
                return .urlParameter(args[0], delimiter: delimiter)
            }, method: nil, usage: "\(name)(<name>[,<delim>])")
        }
        e["nbsrv"] = Entry(arguments: 0...1, build: { args in
            .backendUsableServers(args.first.flatMap { $0.isEmpty ? nil : $0 })
        }, method: nil, usage: "nbsrv([<backend>])")
        e["srv_is_up"] = Entry(arguments: 1...1, build: { args in
            let parts = args[0].split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw RuleError("fetch 'srv_is_up' takes <backend>/<server>, not '\(args[0])'")
            }
            return .serverIsUp(backend: String(parts[0]), server: String(parts[1]))
        }, method: nil, usage: "srv_is_up(<backend>/<server>)")
        e["var"] = Entry(arguments: 1...2, build: { args in
            let (scope, name) = try VariableScope.parseName(args[0], what: "fetch 'var'")
            return .variable(scope, name, defaultValue: args.count > 1 ? args[1] : nil)
        }, method: nil, usage: "var(<scope>.<name>[,<default>])")
        // `str()` is the empty string, as HAProxy reads it.
        e["str"] = Entry(arguments: 0...1, build: { args in .constantString(args.first ?? "") }, method: nil, usage: "str(<text>)")
        e["res.payload"] = Entry(arguments: 2...2, build: { args in
            guard let o = Int(args[0]), o >= 0, let l = Int(args[1]), l >= 0 else {
                throw RuleError("fetch 'res.payload' takes an offset and a length, both integers >= 0 (length 0: to the end): res.payload(<offset>,<length>)")
            }
            return .responsePayload(offset: o, length: l)
        }, method: nil, usage: "res.payload(<offset>,<length>)")
        e["ipv4"] = Entry(arguments: 1...1, build: { args in
            guard let ip = IPAddress(parsing: args[0]), ip.isV4 else { throw RuleError("fetch 'ipv4' takes an IPv4 address, not '\(args[0])'") }
            return .constantIP(ip)
        }, method: nil, usage: "ipv4(<address>)")
        e["ipv6"] = Entry(arguments: 1...1, build: { args in
            guard let ip = IPAddress(parsing: args[0]), !ip.isV4 else { throw RuleError("fetch 'ipv6' takes an IPv6 address, not '\(args[0])'") }
            return .constantIP(ip)
        }, method: nil, usage: "ipv6(<address>)")
        e["bin"] = Entry(arguments: 1...1, build: { args in
            guard args[0].utf8.count % 2 == 0 else { throw RuleError("fetch 'bin' takes an even number of hex digits, not '\(args[0])'") }
            guard let bytes = Hexadecimal.bytes(args[0].utf8) else { throw RuleError("fetch 'bin' takes hex digits, not '\(args[0])'") }
            return .constantBinary(bytes)
        }, method: nil, usage: "bin(<hex>)")
        e["always_true"] = noArgs(.constantBool(true), nil, "always_true")
        e["always_false"] = noArgs(.constantBool(false), nil, "always_false")
        e["bool"] = Entry(arguments: 1...1, build: { args in
            switch args[0].lowercased() {
            case "true": return .constantBool(true)
            case "false": return .constantBool(false)
            default:
                guard let v = Int64(args[0]) else { throw RuleError("fetch 'bool' takes true, false, 0 or 1") }
                return .constantBool(v != 0)
            }
        }, method: nil, usage: "bool(<true|false|0|1>)")
        e["int"] = Entry(arguments: 1...1, build: { args in
            guard let v = Int64(args[0]) else { throw RuleError("fetch 'int' takes an integer, not '\(args[0])'") }
            return .constantInt(v)
        }, method: nil, usage: "int(<n>)")
        return e
    }()

    /// Every fetch keyword, for "did you mean".
    public static var names: [String] { Array(entries.keys).sorted() }

    /// Parses `name` or `name(args)` (no converters) into a fetch and its implied method.
    public static func parse(_ text: String) throws -> (Fetch, MatchMethod?) {
        let (name, args) = try splitCall(text, what: "fetch")
        guard let entry = entries[name] else {
            if HAProxyNames.isFetch(name) { throw RuleError("fetch '\(name)' is not supported yet") }
            var hint = ""
            if let near = Similarity.closest(to: name, in: entries.keys) { hint = "; did you mean '\(near)'?" }
            throw RuleError("unknown fetch method '\(name)'\(hint)")
        }
        let argList = args ?? []
        guard entry.arguments.contains(argList.count) else {
            throw RuleError("fetch '\(name)' takes \(describe(entry.arguments)) argument\(entry.arguments.upperBound == 1 ? "" : "s"): \(entry.usage)")
        }
        return (try entry.build(argList), entry.method)
    }

    static func describe(_ r: ClosedRange<Int>) -> String {
        r.lowerBound == r.upperBound ? "\(r.lowerBound)" : "\(r.lowerBound) to \(r.upperBound)"
    }

    /// Splits `name(a,b)` into its name and arguments (nil when there are no parentheses).
    static func splitCall(_ text: String, what: String) throws -> (String, [String]?) {
        guard let open = text.firstIndex(of: "(") else {
            if text.contains(")") { throw RuleError("\(what) '\(text)': unbalanced ')'") }
            return (text, nil)
        }
        guard text.last == ")" else {
            throw RuleError("\(what) '\(text)': missing closing ')'")
        }
        let name = String(text[..<open])
        let inner = text[text.index(after: open)..<text.index(before: text.endIndex)]
        if inner.contains("(") || inner.contains(")") {
            throw RuleError("\(what) '\(text)': unexpected parenthesis in arguments")
        }
        if inner.isEmpty { return (name, []) }
        return (name, inner.split(separator: ",", omittingEmptySubsequences: false).map(String.init))
    }
}
