import ProxyRules

/// A duration in milliseconds, as HAProxy stores timeouts.
public typealias Milliseconds = Int

/// A whole loaded configuration: global settings, proxies, and what folding decided.
public struct Configuration: Sendable {
    public var global = GlobalSettings()
    /// Frontends, backends and listens, in file order (defaults sections are not proxies).
    public var proxies: [ProxyDefinition] = []
    /// The files loaded, in order.
    public var files: [String] = []
    /// The environment after every `setenv`/`presetenv`/`unsetenv`/`resetenv`.
    public var environment = Environment()
    /// One line per rule whose condition folded at load, for `-V`.
    public var foldedRules: [FoldedRule] = []
    /// Keywords that parse but have no effect yet.
    public var unenforcedKeywords: [UnenforcedKeyword] = []
    /// The ACL pattern files and map files, as loaded (the runtime API changes them).
    public var patternReferences: PatternReferences?
    /// The `resolvers` sections, in file order.
    public var resolvers: [ResolversDefinition] = []

    public init() {}

    public var frontends: [ProxyDefinition] { proxies.filter(\.isFrontend) }
    public var backends: [ProxyDefinition] { proxies.filter(\.isBackend) }

    /// Index of backend-capable proxies by name, rebuilt by `reindex()`.
    private var backendIndex: [String: Int] = [:]

    /// Rebuilds the name index after `proxies` changed.
    public mutating func reindex() {
        backendIndex = [:]
        for (i, p) in proxies.enumerated() where p.isBackend && backendIndex[p.name] == nil { backendIndex[p.name] = i }
    }

    /// The proxy with this name that can act as a backend.
    public func backend(named name: String) -> ProxyDefinition? {
        backendIndex[name].map { proxies[$0] }
    }

    /// Whether a backend-capable proxy has this name.
    public func hasBackend(named name: String) -> Bool { backendIndex[name] != nil }
}

/// Every keyword that parses but has no effect yet. Each use gets `FILE:LINE: warning:
/// 'KEYWORD' is accepted but not enforced yet` from `-c` and at start-up; those that would
/// change bytes on the wire or security make `proxy -f` refuse to start. A unit test lists
/// them, so this list only shrinks on purpose.
public enum NotEnforced: String, CaseIterable, Sendable {
    case serverStateFile = "server-state-file"
    case closeSpreadTime = "close-spread-time"
    case statsSocketName = "stats socket name"
    case hashType = "hash-type"
    case spliceInHTTPMode = "option splice-auto, splice-request and splice-response in http mode"
    case bindName = "bind name"
    case bindID = "bind id"
    case bindNice = "bind nice"
    case bindProcess = "bind process"
    case bindThread = "bind thread"
    // These change bytes on the wire or security: `proxy -f` refuses them.
    case namespace = "namespace"

    /// Whether ignoring it would change what goes on the wire, or security.
    public var changesWire: Bool {
        switch self {
        case .namespace: return true
        default: return false
        }
    }
}

/// One use of a keyword accepted but not enforced yet.
public struct UnenforcedKeyword: Sendable {
    public var location: SourceLocation
    public var keyword: NotEnforced
    public var changesWire: Bool { keyword.changesWire }
}

/// A rule whose condition was decided at load.
public struct FoldedRule: Sendable, CustomStringConvertible {
    public var location: SourceLocation
    /// The rule, e.g. `use_backend maintenance`.
    public var rule: String
    public var applies: Bool
    public var reasons: [String]

    public var description: String {
        "\(location): \(rule): \(applies ? "always" : "never")" + (reasons.isEmpty ? "" : " (\(reasons.joined(separator: "; ")))")
    }
}

/// The `global` section.
public struct GlobalSettings: Sendable {
    /// `node`: this instance's name (`show info`, `http-check send-state`); the host name when unset.
    public var node: String?
    /// `external-check`: HAProxy's safety switch; `option external-check` needs it.
    public var externalCheck = false
    /// `ssl-default-bind-ciphers|ciphersuites|curves|options`.
    public var defaultBindTLS = TLSSettings()
    /// `ssl-default-server-ciphers|ciphersuites|curves|options`.
    public var defaultServerTLS = TLSSettings()
    /// `ssl-server-verify none|required`: the default of `server ... verify` (required).
    public var serverVerify = true
    /// `crt-base` and `ca-base`: where relative certificate and CA paths start.
    public var certificateBase: String?
    public var authorityBase: String?
    /// `set-var proc.NAME EXPR` and `set-var-fmt proc.NAME FORMAT`: process variables' values
    /// at start, each with its line as written (a reload compares them).
    public var initialVariables: [InitialVariable] = []
    /// Under -W: `mworker-max-reloads` (50) and `mworker-max-old-workers` (8, ours).
    public var masterMaxReloads = 50
    public var masterMaxOldWorkers = 8
    /// `master-worker` in global: as -W. `exit-on-failure` (ours) makes a worker's
    /// unexpected death end everything, as HAProxy does by default; `no-exit-on-failure`
    /// (HAProxy's) is our default.
    public var masterWorker = false
    public var masterExitOnFailure = false
    /// Where an `mworker-*` line was: it only acts under -W, and says so otherwise.
    public var masterSettingsLocation: SourceLocation?
    public var daemon = false
    public var maxconn: Int?
    public var pidfile: String?
    public var threads = 1
    public var logs: [LogTarget] = []
    public var statsSockets: [StatsSocket] = []
    public var statsTimeout: Milliseconds?
    /// `stats maxconn`: CLI connections served at once (HAProxy's default is 10).
    public var statsMaxConnections = 10
    public var hardStopAfter: Milliseconds?
    /// `spread-checks N`: each check interval moves by up to ±N% (0..50), at random.
    public var spreadChecks = 0
    public var grace: Milliseconds?
    public var closeSpreadTime: Milliseconds?
    /// `user`/`group` as written, and the ids they resolve to (at load, as HAProxy does).
    public var user: String?
    public var group: String?
    public var uid: UInt32?
    public var gid: UInt32?
    public var chroot: String?
    public var ulimitN: Int?
    public var bufferSize = 16384
    /// `tune.ssl.cachesize`: TLS sessions kept for resumption by ID (HAProxy's 20000).
    public var tlsCacheSize = 20000
    /// `tune.ssl.lifetime`: how long a TLS session resumes, and how often the ticket keys
    /// rotate (seconds; HAProxy's 300).
    public var tlsLifetime = 300
    public var maxRewrite = 1024
    public var serverStateFile: String?
    /// A limit that cannot be set fails the start (HAProxy 2.6's default); `no strict-limits` warns instead.
    public var strictLimits = true
    /// `zero-warning` (or `-dW`): any warning refuses the start, and fails `-c`.
    public var zeroWarning = false
    /// `fd-hard-limit`: the most descriptors to ask for, whatever `maxconn` would need.
    public var fdHardLimit: Int?
    /// `maxpipes`: how many kernel pipes TCP splicing may hold at once; set at start-up from
    /// what the descriptor limit leaves when not configured. Past it, bytes are copied.
    public var maxpipes: Int?
    /// The descriptors the process counts on (`Maxsock`), settled at start-up.
    public var maxsock: Int?
    public var noReusePort = false
    /// `nosplice` (or `-dS`): TCP mode copies bytes, never splices.
    public var noSplice = false
    /// `max-spread-checks`: the first checks of every server start within this long.
    public var maxSpreadChecks: Milliseconds?
    /// `no-memory-trimming`: freed memory is never handed back with malloc_trim.
    public var noMemoryTrimming = false
    /// `set-dumpable`: the process may dump core after it changed user.
    public var setDumpable = false
    public init() {}
}

/// A runtime API access level: each command needs one, and a socket grants one.
public enum AccessLevel: Int, Sendable, Comparable, CaseIterable {
    case user, `operator`, admin
    public init?(name: String) {
        switch name {
        case "user": self = .user
        case "operator": self = .operator
        case "admin": self = .admin
        default: return nil
        }
    }
    public var name: String { self == .user ? "user" : self == .operator ? "operator" : "admin" }
    public static func < (a: AccessLevel, b: AccessLevel) -> Bool { a.rawValue < b.rawValue }
}

/// `stats socket <path|addr> [mode M] [uid U] [gid G] [user U] [group G] [level L] [expose-fd listeners]`.
public struct StatsSocket: Sendable {
    public var address: ListenAddress
    public var mode: UInt32?
    public var level = AccessLevel.operator
    public var exposeListeners = false
    /// Owner of a UNIX socket's file (`uid`/`user`, `gid`/`group`), resolved at load.
    public var uid: UInt32?
    public var gid: UInt32?
    public var location: SourceLocation
}

/// A `log` line: `global`, or a target with its format and facility.
public enum LogTarget: Sendable, Equatable {
    case global
    case target(LogDestination)
}

/// A syslog severity, most severe first (RFC 5424 numbering).
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case emergency = 0, alert, critical, error, warning, notice, info, debug

    public static let names = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
    public init?(name: String) {
        guard let i = Self.names.firstIndex(of: name) else { return nil }
        self.init(rawValue: i)
    }
    public var name: String { Self.names[rawValue] }
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// `sample <ranges>:<size>`: of every `size` lines, only those at the listed 1-based
/// positions are sent.
public struct LogSampling: Sendable, Hashable {
    public var ranges: [ClosedRange<Int>]
    public var size: Int
}

public struct LogDestination: Sendable, Hashable {
    public enum Address: Sendable, Hashable {
        case stdout, stderr
        /// A syslog server over UDP; the host is resolved at load.
        case udp(host: String, address: IPAddress?, port: Int)
        case unix(String)
        case fd(Int32)
    }
    public enum Format: String, Sendable, CaseIterable {
        case local, rfc3164, rfc5424, priority, short, timed, iso, raw
    }
    public var address: Address
    public var format: Format = .local
    public var facility: String
    /// Lines less severe than this are not sent.
    public var maxLevel: LogLevel = .debug
    /// Lines more severe than this are sent at this level.
    public var minLevel: LogLevel = .emergency
    public var length: Int?
    public var sample: LogSampling?

    public init(address: Address, format: Format = .local, facility: String, maxLevel: LogLevel = .debug, minLevel: LogLevel = .emergency,
                length: Int? = nil, sample: LogSampling? = nil) {
        self.address = address
        self.format = format
        self.facility = facility
        self.maxLevel = maxLevel
        self.minLevel = minLevel
        self.length = length
        self.sample = sample
    }
}

/// What a proxy section is.
public enum ProxyKind: String, Sendable {
    case frontend, backend, listen, defaults
}

/// HTTP or TCP.
public enum ProxyMode: String, Sendable {
    case tcp, http
}

/// How client and server connections live across HTTP transactions.
public enum HTTPConnectionMode: String, Sendable {
    case keepAlive = "http-keep-alive"
    case serverClose = "http-server-close"
    case close = "httpclose"
}

/// The `timeout` values of a proxy, in milliseconds; nil when unset.
public struct Timeouts: Sendable, Equatable {
    public var client: Milliseconds?
    public var server: Milliseconds?
    public var connect: Milliseconds?
    public var httpRequest: Milliseconds?
    public var httpKeepAlive: Milliseconds?
    public var queue: Milliseconds?
    public var tunnel: Milliseconds?
    public var check: Milliseconds?
    public var clientFin: Milliseconds?
    public var serverFin: Milliseconds?
    public var tarpit: Milliseconds?
    public init() {}
}

/// A load-balancing algorithm.
public enum BalanceAlgorithm: Sendable, Equatable {
    case roundRobin, staticRoundRobin, leastConnections, first, source
    /// `balance uri`: the target up to `?` (the query too with `whole`), the path alone with
    /// `path-only` (without an absolute-form target's scheme and authority).
    case uri(length: Int?, depth: Int?, whole: Bool, pathOnly: Bool)
    case random(draws: Int)
}

/// `option forwardfor [except NET] [header NAME] [if-none]`.
public struct ForwardFor: Sendable, Equatable {
    public var except: IPNetwork?
    public var header = "X-Forwarded-For"
    public var ifNone = false
}

/// Boolean `option` values of a proxy.
public struct ProxyOptions: Sendable, Equatable {
    public var httpLog = false
    public var tcpLog = false
    public var dontLogNull = false
    /// `option dontlog-normal`: only transactions with an error, a retry or a 5xx are logged.
    public var dontLogNormal = false
    /// `option prefer-last-server`: a keep-alive client's next request goes to the server
    /// of its last one while that server takes traffic.
    public var preferLastServer = false
    public var logASAP = false
    public var redispatch = false
    /// `option log-health-checks`: every change of a server's check result is logged.
    public var logHealthChecks = false
    /// `option redispatch <interval>`: redispatch on every Nth retry (N > 0), or on the Nth
    /// retry from the end (N < 0; -1, the default, is the last one).
    public var redispatchInterval = -1

    /// Whether any of the first `attempts` retries of `retries` went elsewhere.
    public func redispatchedWithin(_ attempts: Int, of retries: Int) -> Bool {
        attempts > 0 && (1...attempts).contains { redispatches(attempt: $0, of: retries) }
    }

    /// Whether retry number `attempt` (1 for the first retry) of `retries` goes elsewhere.
    public func redispatches(attempt: Int, of retries: Int) -> Bool {
        guard redispatch, attempt >= 1, redispatchInterval != 0 else { return false }
        if redispatchInterval > 0 { return attempt % redispatchInterval == 0 }
        return attempt == retries + 1 + redispatchInterval
    }
    public var allBackups = false
    public var abortOnClose = false
    public var clientKeepAlive = false
    public var serverKeepAlive = false
    /// `option tcp-smart-accept`: accepted connections delay their ACKs, so that a request is
    /// acknowledged by its response (nil: HAProxy's automatic choice, on in HTTP mode and on
    /// `ssl` binds).
    public var smartAccept: Bool?
    /// `option tcp-smart-connect`: a server connection's handshake ends with the request
    /// rather than with an ACK of its own.
    public var smartConnect = false
    public var httpConnectionMode: HTTPConnectionMode = .keepAlive
    public var forwardFor: ForwardFor?
    public init() {}
}

/// Which line a frontend logs per transaction or connection.
public enum AccessLogFormat: Sendable, Equatable {
    case tcp, http, httpCLF
    case custom(String)

    /// The log-format string.
    public var text: String {
        switch self {
        case .tcp: return LogFormatText.tcpLog
        case .http: return LogFormatText.httpLog
        case .httpCLF: return LogFormatText.httpLogCLF
        case .custom(let s): return s
        }
    }

    /// The keyword that set it, for messages.
    public var keyword: String {
        switch self {
        case .tcp: return "option tcplog"
        case .http: return "option httplog"
        case .httpCLF: return "option httplog clf"
        case .custom: return "log-format"
        }
    }
}

/// `cookie NAME insert|rewrite|prefix ...`.
public struct CookieSettings: Sendable, Equatable {
    public enum Mode: String, Sendable { case passive, insert, rewrite, prefix }
    public var name: String
    public var mode: Mode = .passive
    public var indirect = false
    public var noCache = false
    public var postOnly = false
    public var preserve = false
    public var httpOnly = false
    public var secure = false
    public var domains: [String] = []
    public var maxIdle: Milliseconds?
    public var maxLife: Milliseconds?
}

/// HTTP health check: `option httpchk` plus `http-check send` and `expect`.
public struct HTTPCheck: Sendable, Equatable {
    public var method = "OPTIONS"
    public var uri = "/"
    public var version = "HTTP/1.0"
    public var headers: [HeaderField] = []
    public var body: String?
    public var expectations: [Expectation] = []
    /// `http-check disable-on-404`: a running server that answers 404 takes no new traffic
    /// (`NOLB`) but keeps its persistent clients.
    public var disableOn404 = false
    /// `http-check send-state`: each check tells the server how we see it (`X-Haproxy-Server-State`).
    public var sendState = false

    /// A `http-check comment` line waiting for the rule it describes (the next one).
    public var pendingComment: String?
    /// `http-check connect`: the check's connection goes elsewhere (another port or address,
    /// TLS, a PROXY header).
    public var connect: TCPCheck.Connect?
    /// `http-check send uri-lf`, `body-lf`: log-format texts rendered at each check, in place
    /// of `uri` and `body`. Header values (`hdr`) are always log-format texts, as in HAProxy.
    public var uriFormat: String?
    public var bodyFormat: String?
    /// `http-check set-var`, `set-var-fmt`, `unset-var`, each with where it stands among the
    /// other rules: before the request is sent, or after the expectations before it passed.
    public var variableActions: [VariableAction] = []
    /// Whether a `http-check send` line was read yet (actions before it shape the request).
    public var sendSeen = false

    public struct VariableAction: Sendable, Equatable {
        public var action: CheckVariableAction
        /// How many expectations come before it.
        public var afterExpectations: Int
        /// Whether it runs before the request is built (it stands before `http-check send`,
        /// or before the first expectation when there is no send line).
        public var beforeSend: Bool
    }

    public struct Expectation: Sendable, Equatable {
        public enum Kind: String, Sendable {
            case status, rstatus, string, rstring
            /// `string-lf`: the body holds a log-format text rendered at each check.
            case stringFormat = "string-lf"
            /// `hdr`, `fhdr`: a response header (`headerMatch`), its value split on commas or whole.
            case header = "hdr", fullHeader = "fhdr"
        }
        public var kind: Kind
        public var negated: Bool
        public var pattern: String
        /// `hdr`/`fhdr`: which header, and what its value must be.
        public var headerMatch: HeaderMatch?
        /// `comment` (or a `http-check comment` line before it): added to the check's info.
        public var comment: String?
        /// `ok-status`, `error-status`, `tout-status`, `on-success`, `on-error`: as for tcp-check.
        public var okStatus: String?
        public var errorStatus: String?
        public var timeoutStatus: String?
        public var onSuccess: String?
        public var onError: String?
        /// `status-code <expr>`: the check's code when this expect decides the result.
        public var statusCode: SampleExpression?
    }
}

/// `http-check expect hdr|fhdr name [-m METHOD] NAME [value [-m METHOD] VALUE]`: names are
/// matched without case, values with it; `name-lf`/`value-lf` are log-format texts.
public struct HeaderMatch: Sendable, Equatable {
    public enum Method: String, Sendable { case str, beg, end, sub, reg }
    public var name: String
    public var nameMethod = Method.str
    public var nameIsFormat = false
    public var value: String?
    public var valueMethod = Method.str
    public var valueIsFormat = false
    public init(name: String) { self.name = name }
}

/// `tcp-check|http-check set-var(NAME) EXPR`, `set-var-fmt(NAME) FMT`, `unset-var(NAME)`.
public struct CheckVariableAction: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case expression(SampleExpression)
        case format(String)
    }
    public var scope: VariableScope
    public var name: String
    /// Nil: `unset-var`.
    public var value: Value?
    /// `set-var(NAME,COND...)`.
    public var conditions: VariableConditions
    public init(scope: VariableScope, name: String, value: Value?, conditions: VariableConditions = []) {
        self.scope = scope
        self.name = name
        self.value = value
        self.conditions = conditions
    }
}

/// `option tcp-check` with its `tcp-check` rules, and the protocol checks built on them
/// (`option redis-check`, `option smtpchk`, `option pgsql-check`): a sequence a check runs
/// on one connection, step by step; any step that fails fails the check.
public struct TCPCheck: Sendable, Equatable {
    /// What set it, for messages and the check's reason (`tcp-check`, `redis-check`...).
    public var origin = "tcp-check"
    public var steps: [Step] = []

    public enum Step: Sendable, Equatable {
        /// The connection (only as the first step): another port or address, TLS, a PROXY header.
        case connect(Connect)
        case send([UInt8])
        /// `send-lf`, `send-binary-lf`: a log-format text rendered at each check (for binary,
        /// hexadecimal digits turned into bytes).
        case sendFormat(String, binary: Bool)
        case expect(Expectation)
        /// A comment for the rule after it: a `tcp-check comment` line (`line`: a rule of its
        /// own, counted in step numbers, and carried over the following rules of one kind, as
        /// HAProxy does) or a rule's own `comment` option.
        case comment(String, line: Bool)
        /// `set-var`, `set-var-fmt`, `unset-var`.
        case variable(CheckVariableAction)
    }

    public struct Connect: Sendable, Equatable {
        public var port: Int?
        /// `port <expr>`: the port, worked out at each check (`var(check.port)`).
        public var portExpression: SampleExpression?
        public var address: IPAddress?
        public var ssl = false
        public var sni: String?
        /// `alpn`: the protocols the check's TLS handshake offers (nil: the server's `check-alpn`).
        public var alpn: [String]?
        public var sendProxy = false
        /// `default`: the server's own check settings (its `check-ssl`, say) apply.
        public var serverDefaults = false
        public init() {}
    }

    public struct Expectation: Sendable, Equatable {
        public enum Kind: String, Sendable {
            case string, rstring, binary, rbinary
            /// `string-lf`, `binary-lf`: the pattern is a log-format text rendered at each check.
            case stringFormat = "string-lf", binaryFormat = "binary-lf"
            /// `option mysql-check`'s own: one MySQL packet, the server's greeting, then the
            /// answer to our login (an error packet fails the check with its message).
            case mysqlGreeting = "mysql greeting", mysqlReply = "mysql reply"
            /// `option ldap-check`'s own: an LDAPv3 bind response, its result success.
            case ldapBindResponse = "ldap bind response"
        }
        public var kind: Kind
        public var negated: Bool
        /// The bytes to find (`string`, `binary`), or the regex (`rstring`, `rbinary`: on the
        /// bytes as text, a binary one on their hexadecimal form as HAProxy matches it).
        public var pattern: [UInt8]
        public var text: String
        /// `comment`: what the check's reason says when this step fails.
        public var comment: String?
        /// `min-recv N`: judge only once N bytes are in (or the server closed).
        public var minRecv: Int?
        /// `ok-status`, `error-status`, `tout-status`: the check's status when the step passes
        /// (as the last expect), fails, or times out (`L7OK`, `L7RSP`, `L7TOUT`...).
        public var okStatus: String?
        public var errorStatus: String?
        public var timeoutStatus: String?
        /// `on-success`, `on-error`: the check's info then.
        public var onSuccess: String?
        public var onError: String?
        /// `status-code <expr>`: the check's code when this expect decides the result.
        public var statusCode: SampleExpression?
    }

    /// HAProxy's check statuses an expect may set, with the reason each is reported with.
    public static let okStatuses = ["L7OK": "Layer7 check passed", "L7OKC": "Layer7 check conditionally passed",
                                    "L6OK": "Layer6 check passed", "L4OK": "Layer4 check passed"]
    public static let errorStatuses = ["L7RSP": "Layer7 invalid response", "L7STS": "Layer7 wrong status",
                                       "L6RSP": "Layer6 invalid response", "L4CON": "Layer4 connection problem"]
    public static let timeoutStatuses = ["L7TOUT": "Layer7 timeout", "L6TOUT": "Layer6 timeout", "L4TOUT": "Layer4 timeout"]

    public init() {}
}

/// A header name with a value template.
public struct HeaderField: Sendable, Equatable {
    public var name: String
    public var value: String
}

/// `observe`: which outcomes of a server's traffic count as health.
public enum ObservedLayer: Sendable, Equatable {
    /// Connections: one that fails is an error, one that opens resets the count.
    case layer4
    /// Connections that fail, and HTTP responses: a status other than 100-499, 501 and 505,
    /// or a response that never came whole, is an error; a good one resets the count.
    case layer7
}

/// `on-error`: what `error-limit` consecutive errors in a server's traffic do.
public enum OnErrorAction: String, Sendable, Equatable {
    /// The next check runs after `fastinter`.
    case fastInter = "fastinter"
    /// A failed check is counted (and `fastinter` follows).
    case failCheck = "fail-check"
    /// A failed check leaves the server one more failure from DOWN.
    case suddenDeath = "sudden-death"
    /// The server goes DOWN now.
    case markDown = "mark-down"
}

/// Per-server options (also the `default-server` line).
public struct ServerOptions: Sendable, Equatable {
    public var check = false
    /// `tcp-ut`: TCP_USER_TIMEOUT on connections to the server.
    public var userTimeout: Milliseconds?
    /// `max-reuse`: how many more requests one connection may carry after its first (-1: no
    /// limit, 0: never reused).
    public var maxReuse = -1
    public var inter: Milliseconds = 2000
    public var fastInter: Milliseconds?
    public var downInter: Milliseconds?
    public var rise = 2
    public var fall = 3
    public var checkPort: Int?
    /// `addr`: where checks go instead of the server's address, resolved at load.
    public var checkAddress: IPAddress?
    public var weight = 1
    public var maxconn = 0
    public var maxqueue = 0
    public var backup = false
    public var disabled = false
    public var cookie: String?
    /// `send-proxy` (v1), `send-proxy-v2`, `send-proxy-v2-ssl[-cn]` (v2): a PROXY header
    /// opens every connection to the server.
    public var sendProxy: ProxyProtocolVersion?
    /// `send-proxy-v2-ssl[-cn]`, `proxy-v2-options ssl,cert-cn,ssl-cipher`: the PP2_TYPE_SSL
    /// TLV (how the client reached us), with the client certificate's CN and the cipher.
    public var proxyV2SSL = ProxyV2SSL()
    /// `check-send-proxy`: health checks send a PROXY header too (`LOCAL`/`UNKNOWN`).
    public var checkSendProxy = false
    /// `on-marked-down shutdown-sessions`: its connections close when it goes DOWN.
    public var shutdownSessionsWhenDown = false
    /// `on-marked-up shutdown-backup-sessions`: the backups' connections close when it comes UP.
    public var shutdownBackupSessionsWhenUp = false
    /// `observe layer4|layer7`: traffic's outcomes count as health (with `error-limit` and
    /// `on-error`); nil: they do not.
    public var observe: ObservedLayer?
    /// `error-limit N`: how many errors in a row set off `on-error` (10).
    public var errorLimit = 10
    /// `error-limit` or `on-error` was written (on this line or a `default-server`).
    public var errorReactionSet = false
    /// `on-error`: what `error-limit` errors in a row do (`fail-check` by default).
    public var onError = OnErrorAction.failCheck
    public var slowStart: Milliseconds?
    /// `ssl`: connections to the server are TLS (origination).
    public var ssl = false
    /// How the server's certificate is checked, and what we present (`verify`, `ca-file`...).
    public var serverTLS = ServerTLSOptions()
    /// `check-ssl` / `no-check-ssl`; nil: checks use TLS when `ssl` is set and neither
    /// `port` nor `addr` sends them elsewhere (HAProxy's rule).
    public var checkSSL: Bool?
    /// `track [BACKEND/]SERVER`: this server's health and maintenance follow that one's.
    public var track: String?
    /// `agent-check`: an agent on `agent-port` (and `agent-addr`) tells the server's state,
    /// every `agent-inter`, after `agent-send`.
    public var agentCheck = false
    public var agentPort: Int?
    public var agentAddress: IPAddress?
    public var agentInter: Milliseconds?
    public var agentSend: String?
    /// `resolvers NAME`: the section whose name servers re-resolve the server's name at run time.
    public var resolvers: String?
    /// `resolve-prefer ipv4|ipv6` (HAProxy's default: ipv6).
    public var resolvePreferIPv4 = false
    /// `resolve-net`: addresses in these networks are chosen first.
    public var resolveNets: [IPNetwork] = []
    /// `init-addr`: how the address is found at start, in order (nil: `last,libc`).
    public var initAddr: [InitAddrMethod]?
    /// `resolve-opts allow-dup-ip`: two servers of a backend may take the same address.
    public var allowDuplicateIP = false
    /// `resolve-opts ignore-weight`: an SRV record's weight is not applied.
    public var ignoreSRVWeight = false
    public init() {}

    /// Whether health checks run over TLS.
    public var checksUseTLS: Bool { checkSSL ?? (ssl && checkPort == nil && checkAddress == nil) }
}

/// One way `init-addr` finds a server's address at start.
public enum InitAddrMethod: Sendable, Equatable {
    /// The address the previous process had (carried over the reload).
    case last
    /// The system's resolver, at load.
    case libc
    /// No address: the server waits in `MAINT (resolution)` for its resolvers.
    case none
    case ip(IPAddress)
}

/// A `server` line's TLS options (origination), over the global `ssl-default-server-*`.
public struct ServerTLSOptions: Sendable, Equatable {
    /// `verify required|none`; nil: `ssl-server-verify` (required by default, as HAProxy 2.6).
    public var verify: Bool?
    /// `verifyhost`: the name the certificate must hold when no SNI is sent.
    public var verifyHost: String?
    public var caFile: String?
    public var crlFile: String?
    /// `crt`: our client certificate (chain and key in one PEM file).
    public var certificate: String?
    /// `sni EXPR`: the server name sent, evaluated per connection.
    public var sni: SampleExpression?
    /// `check-sni`: the name sent by TLS health checks.
    public var checkSNI: String?
    /// `check-alpn`: what TLS health checks offer (else `alpn`).
    public var checkALPN: [String]?
    /// `no-ssl-reuse`: every connection makes a full handshake.
    public var reuse = true
    /// `ciphers`, `ssl-min-ver`, `no-tls-tickets`, `alpn`...
    public var settings = TLSSettings()
    public init() {}
}

/// A `server` line.
public struct ServerDefinition: Sendable {
    public var name: String
    public var address: ServerAddress
    public var options: ServerOptions
    public var location: SourceLocation
}

/// Where a server is: an IP or host with an optional port (nil: the client's port), or a path.
public struct ServerAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Host: Sendable, Equatable {
        case ip(IPAddress)
        case name(String)
        case unix(String)
    }
    public var host: Host
    public var port: Int?
    /// `+N`/`-N`: an offset added to the client's destination port.
    public var portOffset: Int?
    /// A `.name`'s address, resolved once, at load (nil: unresolved, with `-dr`).
    public var resolved: IPAddress?

    public init(host: Host, port: Int?, portOffset: Int? = nil, resolved: IPAddress? = nil) {
        self.host = host
        self.port = port
        self.portOffset = portOffset
        self.resolved = resolved
    }

    public var description: String {
        switch host {
        case .ip(let a): return (a.isV4 ? a.description : "[\(a)]") + (port.map { ":\($0)" } ?? "")
        case .name(let n): return n + (port.map { ":\($0)" } ?? "")
        case .unix(let p): return p
        }
    }
}

/// One address a `bind` line listens on.
public enum ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// An IP listener; `address` nil is the wildcard of `family`.
    case inet(family: AddressFamily, address: IPAddress?, port: Int)
    case unix(path: String)
    case abstract(name: String)
    /// A descriptor inherited from the parent (`fd@N`).
    case inheritedFD(Int32)

    public var description: String {
        switch self {
        case .inet(let f, let a, let p):
            if let a { return a.isV4 ? "\(a):\(p)" : "[\(a)]:\(p)" }
            return f == .ipv6 ? "[::]:\(p)" : "*:\(p)"
        case .unix(let path): return path
        case .abstract(let name): return "abns@\(name)"
        case .inheritedFD(let fd): return "fd@\(fd)"
        }
    }
}

public enum AddressFamily: String, Sendable, Hashable { case ipv4, ipv6 }

/// Options on a `bind` line.
public struct BindOptions: Sendable, Equatable, Hashable {
    public var name: String?
    public var maxconn: Int?
    public var backlog: Int?
    public var acceptProxy = false
    public var ssl = false
    public var certificates: [String] = []
    /// `crt-list FILE`: certificates with per-line options and SNI filters.
    public var certificateLists: [String] = []
    /// `verify none|optional|required`: client certificates (0, 1, 2), checked against
    /// `ca-file` and `crl-file`.
    public var clientVerify = 0
    public var caFile: String?
    public var crlFile: String?
    /// `tls-ticket-keys FILE`: this line's ticket keys, from the file (else the process's own,
    /// rotated and carried across reloads).
    public var ticketKeysFile: String?
    /// The TLS settings of this line (`ciphers`, `ssl-min-ver`, `alpn`...), merged over the
    /// global `ssl-default-bind-*` at load.
    public var tls = TLSSettings()
    public var v4v6 = false
    public var v6only = false
    public var interface: String?
    public var namespace: String?
    public var transparent = false
    public var deferAccept = false
    public var tcpFastOpen = false
    /// `mss`: TCP_MAXSEG on the listening socket.
    public var maximumSegmentSize: Int?
    /// `tcp-ut`: TCP_USER_TIMEOUT, in milliseconds.
    public var userTimeout: Milliseconds?
    public var mode: UInt32?
    /// Owner of a UNIX socket's file (`user`/`uid`, `group`/`gid`), resolved at load.
    public var uid: UInt32?
    public var gid: UInt32?
    public init() {}
}

/// The identity of a listening socket, matched across reloads: family, normalised address,
/// port, and the options that change the socket itself.
public struct ListenerKey: Sendable, Hashable, CustomStringConvertible {
    public var address: ListenAddress
    public var v4v6: Bool
    public var v6only: Bool
    public var interface: String?
    public var namespace: String?
    public var transparent: Bool

    public init(address: ListenAddress, v4v6: Bool = false, v6only: Bool = false, interface: String? = nil,
                namespace: String? = nil, transparent: Bool = false) {
        self.address = address
        self.v4v6 = v4v6
        self.v6only = v6only
        self.interface = interface
        self.namespace = namespace
        self.transparent = transparent
    }

    public var description: String { address.description }
}

/// A `bind` line: its addresses (a port range is one address per port) and options.
public struct BindLine: Sendable {
    public var addresses: [ListenAddress]
    public var options: BindOptions
    public var location: SourceLocation

    /// One key per listening socket.
    public var listenerKeys: [ListenerKey] {
        addresses.map {
            ListenerKey(address: $0, v4v6: options.v4v6, v6only: options.v6only, interface: options.interface,
                        namespace: options.namespace, transparent: options.transparent)
        }
    }
}

/// When a rule applies, once folding has run.
public enum RuleGuard: Sendable {
    case always
    case never
    case when(Condition)
}

/// `use_backend NAME [if|unless COND]`.
public struct UseBackendRule: Sendable {
    public var backend: String
    public var condition: Condition?
    public var guardState: RuleGuard = .always
    public var location: SourceLocation
}

/// A response the proxy makes itself (`http-request return`, `deny`, `tarpit`).
public struct LocalResponse: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        case none
        /// `string`: sent as written.
        case text(String)
        /// `lf-string`: a log-format rendered per request.
        case format(String)
        /// `file`: read at load, sent as is.
        case file(path: String, bytes: [UInt8])
        /// `lf-file`: read at load, rendered per request as a log-format.
        case formatFile(path: String, text: String)
        /// A raw HTTP response read at load (`errorfile`).
        case rawResponse(path: String, bytes: [UInt8])
        case defaultErrorFile
    }
    public var status: Int
    public var contentType: String?
    public var body: Body = .none
    public var headers: [HeaderField] = []
}

/// How `del-header NAME -m METHOD` matches header names.
public enum HeaderNameMatch: Sendable {
    case exact(String), prefix(String), suffix(String), substring(String)
    /// A regex on the lower-case name (HAProxy's names are lower case; the regex is not).
    case regex(PosixRegex)

    /// Whether `name` (any case) matches.
    public func matches(_ name: [UInt8]) -> Bool {
        let lower = String(decoding: name.map { $0 >= 0x41 && $0 <= 0x5a ? $0 | 0x20 : $0 }, as: UTF8.self)
        switch self {
        case .exact(let n): return lower == n
        case .prefix(let n): return lower.hasPrefix(n)
        case .suffix(let n): return lower.hasSuffix(n)
        case .substring(let n): return lower.contains(n)
        case .regex(let r): return r.matches(lower)
        }
    }
}

/// `http-request redirect ...`.
public struct Redirect: Sendable, Equatable {
    public enum Kind: String, Sendable { case location, prefix, scheme }
    public var kind: Kind
    public var target: String
    public var code = 302
    public var dropQuery = false
    public var appendSlash = false
    public var setCookie: String?
    public var clearCookie: String?
}

/// A regex with its replacement template (`\1`...).
public struct RegexReplacement: Sendable {
    public var regex: PosixRegex
    public var template: String
}

/// The actions of `http-request`.
public enum HTTPRequestAction: Sendable {
    case allow
    case deny(LocalResponse)
    case tarpit(LocalResponse)
    case returnResponse(LocalResponse)
    case redirect(Redirect)
    case setHeader(HeaderField)
    case addHeader(HeaderField)
    case deleteHeader(HeaderNameMatch)
    case replaceHeader(name: String, RegexReplacement)
    case replaceValue(name: String, RegexReplacement)
    case setPath(String)
    case replacePath(RegexReplacement)
    case setURI(String)
    case replaceURI(RegexReplacement)
    case setVariable(VariableScope, String, SampleExpression, VariableConditions)
    case setVariableFormat(VariableScope, String, String, VariableConditions)
    case unsetVariable(VariableScope, String)
    /// `use-service NAME`: the proxy answers the request itself (final).
    case useService(LocalServiceName)
}

/// What `http-request use-service` can name.
public enum LocalServiceName: String, Sendable {
    case prometheusExporter = "prometheus-exporter"
}

/// The actions of `http-response`.
public enum HTTPResponseAction: Sendable {
    /// `allow`: no more `http-response` rules of this section.
    case allow
    /// `deny` (502 by default) and `return`: the server's response is dropped for this one;
    /// no more rules run.
    case deny(LocalResponse)
    case returnResponse(LocalResponse)
    case setHeader(HeaderField)
    case addHeader(HeaderField)
    case deleteHeader(HeaderNameMatch)
    case replaceHeader(name: String, RegexReplacement)
    case replaceValue(name: String, RegexReplacement)
    case setStatus(Int, reason: String?)
    case setVariable(VariableScope, String, SampleExpression, VariableConditions)
    case setVariableFormat(VariableScope, String, String, VariableConditions)
    case unsetVariable(VariableScope, String)
}

/// A rule with its action, condition and place.
public struct Rule<Action: Sendable>: Sendable {
    public var action: Action
    public var condition: Condition?
    public var guardState: RuleGuard = .always
    public var location: SourceLocation
    /// The rule's keyword and action as written, for `-V`.
    public var summary: String
}

/// The PROXY protocol version a server is sent.
/// What the PROXY v2 header's SSL TLV carries besides its flags and the version.
public struct ProxyV2SSL: Sendable, Equatable {
    public var enabled = false
    public var commonName = false
    public var cipher = false
    public init() {}
}

public enum ProxyProtocolVersion: Int, Sendable {
    case v1 = 1
    case v2 = 2
}

/// `tcp-request connection|content accept|reject`, and `tcp-request connection expect-proxy
/// layer4` (not final: the rules after it still decide).
public struct TCPRequestAction: Sendable, Equatable {
    public enum Layer: String, Sendable { case connection, content }
    public enum Verdict: String, Sendable { case accept, reject, expectProxy = "expect-proxy" }
    /// What a `tcp-request content` rule does without deciding: evaluation goes on after it.
    public enum Operation: Sendable, Equatable {
        case setVariable(VariableScope, String, SampleExpression, VariableConditions)
        case setVariableFormat(VariableScope, String, String, VariableConditions)
        case unsetVariable(VariableScope, String)
        /// `capture <sample> len <n>`: into the frontend's next request capture slot.
        case capture(SampleExpression, length: Int, slot: Int)
    }
    public var layer: Layer

    /// Whether the rule reads the client's first bytes (`req.ssl_sni`...), in its condition
    /// or its operation: a TCP frontend then waits for them (`tcp-request inspect-delay`).
    public func readsClientHello(_ condition: Condition?) -> Bool {
        if let c = condition, c.acls.contains(where: { $0.terms.contains { $0.expression.fetch.readsClientHello } }) { return true }
        switch operation {
        case .setVariable(_, _, let e, _)?, .capture(let e, _, _)?: return e.fetch.readsClientHello
        case .setVariableFormat(_, _, let f, _)?:
            let nodes = (try? LogFormatText.parse(f, separators: false)) ?? []
            return nodes.contains { if case .sample(let e, _) = $0 { return e.fetch.readsClientHello }; return false }
        default: return false
        }
    }
    /// nil for a rule that performs `operation` and lets evaluation go on.
    public var verdict: Verdict?
    public var operation: Operation?

    public init(layer: Layer, verdict: Verdict?, operation: Operation? = nil) {
        self.layer = layer
        self.verdict = verdict
        self.operation = operation
    }
}

/// A 1.x `req*`/`rsp*` rule, applied line by line to the message head as 1.x did.
public struct LegacyRewrite: Sendable {
    public enum Direction: Sendable { case request, response }
    public enum Operation: Sendable {
        case replace(PosixRegex, template: String)
        case delete(PosixRegex)
        case add(String)
        case deny(PosixRegex)
        case allow(PosixRegex)
    }
    public var direction: Direction
    public var operation: Operation
}

/// A `global set-var` or `set-var-fmt` line.
public struct InitialVariable: Sendable {
    public var name: String
    public var expression: SampleExpression?
    public var format: String?
    /// The line as written, from `set-var` on.
    public var text: String
}

/// `errorfile CODE FILE`, read at load.
public struct ErrorPage: Sendable, Equatable {
    public var status: Int
    public var path: String
    public var bytes: [UInt8]
}

/// `stats enable|uri|realm|auth|refresh|admin|hide-version|show-legends|show-node|show-desc|scope`:
/// the stats page a proxy serves.
public struct StatsSettings: Sendable {
    public var enabled = false
    /// The prefix of the targets the page answers; HAProxy's default.
    public var uri = "/haproxy?stats"
    public var realm: String?
    public var credentials: [(user: String, password: String)] = []
    public var refresh: Milliseconds?
    public var admin: Condition?
    public var hideVersion = false
    public var showLegends = false
    /// `stats show-node [NAME]`: nil when not asked for; empty means the host name.
    public var showNode: String?
    public var showDescription: String?
    /// `stats scope`: the proxies shown (empty: all).
    public var scopes: [String] = []
}

/// `http-reuse never|safe|aggressive|always`.
public enum HTTPReuse: String, Sendable { case never, safe, aggressive, always }

/// `clitcpka-cnt|idle|intvl`, `srvtcpka-cnt|idle|intvl`: TCP keep-alive's probes where the
/// option turns it on (nil: the system's `tcp_keepalive_*`).
public struct KeepAliveProbes: Sendable, Equatable {
    /// TCP_KEEPCNT: probes unanswered before the connection is dropped.
    public var count: Int?
    /// TCP_KEEPIDLE, in seconds: idleness before the first probe.
    public var idle: Int?
    /// TCP_KEEPINTVL, in seconds: between probes.
    public var interval: Int?
    /// The first line that set one, for a warning where the option is off.
    public var location: SourceLocation?
    public var isEmpty: Bool { count == nil && idle == nil && interval == nil }
    public init() {}
}

/// Everything a proxy section sets that `defaults` can set too.
public struct ProxySettings: Sendable {
    public var mode: ProxyMode = .tcp
    /// `clitcpka-*` and `srvtcpka-*`.
    public var clientProbes = KeepAliveProbes()
    public var serverProbes = KeepAliveProbes()
    public var maxconn: Int?
    /// `tcp-request inspect-delay`: how long a TCP frontend waits for the client's first
    /// bytes when a rule or a route reads them (`req.ssl_sni`, `req.ssl_hello_type`).
    public var inspectDelay: Milliseconds?
    public var inspectDelayLocation: SourceLocation?
    public var backlog: Int?
    public var timeouts = Timeouts()
    public var balance: BalanceAlgorithm = .roundRobin
    public var hashType: String?
    public var retries = 3
    public var logs: [LogTarget] = []
    /// The access-log line: `option tcplog`, `option httplog [clf]` or `log-format`; nil
    /// logs HAProxy's one-line "Connect from" notice.
    public var accessLog: AccessLogFormat?
    public var accessLogLocation: SourceLocation?
    public var options = ProxyOptions()
    public var errorPages: [Int: ErrorPage] = [:]
    public var defaultBackend: String?
    public var defaultBackendLocation: SourceLocation?
    public var defaultServer = ServerOptions()
    public var cookie: CookieSettings?
    public var httpCheck: HTTPCheck?
    /// `option tcp-check` (and the protocol checks); its rules come from `tcp-check` lines.
    public var tcpCheck: TCPCheck?
    public var tcpCheckRules: [TCPCheck.Step] = []
    /// `option external-check`: checks run `external-check command` and read its exit status.
    public var externalCheck = false
    /// `external-check command <path>` and `external-check path <PATH>` (empty by default).
    public var externalCheckCommand: String?
    public var externalCheckPath = ""
    public var externalCheckLocation: SourceLocation?
    public var httpReuse: HTTPReuse = .safe
    /// `http-send-name-header <name>`: the request tells the server its own name in this
    /// header (the client's copies removed), set again on a retry to another server.
    public var sendNameHeader: String?
    public var monitorURI: String?
    public var stats = StatsSettings()
    public init() {}
}

/// A frontend, backend or listen section.
public struct ProxyDefinition: Sendable {
    public var name: String
    public var kind: ProxyKind
    public var location: SourceLocation
    public var settings: ProxySettings
    public var binds: [BindLine] = []
    public var servers: [ServerDefinition] = []
    public var acls: [String: ACL] = [:]
    public var useBackendRules: [UseBackendRule] = []
    public var httpRequestRules: [Rule<HTTPRequestAction>] = []
    /// Proxy-level `redirect` lines: appended after the `http-request` rules at load.
    public var redirectRules: [Rule<HTTPRequestAction>] = []
    public var httpResponseRules: [Rule<HTTPResponseAction>] = []
    public var tcpRequestRules: [Rule<TCPRequestAction>] = []
    /// Request capture slots (`tcp-request content capture`), in declaration order: their
    /// lengths. `%hr` prints them, `capture.req.hdr(N)` reads them.
    public var requestCaptures: [Int] = []
    public var legacyRewrites: [Rule<LegacyRewrite>] = []

    public var isFrontend: Bool { kind == .frontend || kind == .listen }
    /// Whether a `tcp-request content` rule or a `use_backend` condition reads the client's
    /// first bytes (`req.ssl_sni`, `req.ssl_hello_type`, `req.ssl_ver`).
    public var readsClientHello: Bool {
        tcpRequestRules.contains { $0.action.layer == .content && $0.action.readsClientHello($0.condition) }
            || useBackendRules.contains { r in
                r.condition?.acls.contains { $0.terms.contains { $0.expression.fetch.readsClientHello } } ?? false
            }
    }
    public var isBackend: Bool { kind == .backend || kind == .listen }
    public var mode: ProxyMode { settings.mode }
}
