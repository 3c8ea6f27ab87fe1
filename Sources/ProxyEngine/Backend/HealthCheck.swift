import CProxyTLS
import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// Checks one server on one loop: a TCP connect, or an HTTP request when the backend has
/// `option httpchk`; UP after `rise` successes, DOWN after `fall` failures. It never blocks:
/// the check is a non-blocking socket on the loop, with the loop's timer.
final class HealthCheck: LoopObject {
    let server: Server
    let backend: Backend
    unowned(unsafe) let context: LoopContext
    /// Where checks go: the server's address now (the runtime API may change it), or `addr`,
    /// with `port` when set.
    var address: SocketAddress {
        var a = server.address
        if let ip = connection?.address ?? options.checkAddress { a = Backend.socketAddress(ip, port: a.port) }
        if let port = dynamicPort ?? connection?.port ?? options.checkPort { a.setPort(UInt16(port)) }
        return a
    }
    /// The `connect` in use: the first (nil: the server's own settings), or a later
    /// `tcp-check connect` step's, with its step's number for messages (nil: the first).
    var connection: ConnectRule?
    var connectionStep: Int?
    /// `tcp-check connect port <expr>`: the port this run worked out (nil: none).
    var dynamicPort: Int?
    /// The first step after the connection is an expect: the server speaks first.
    lazy var serverSpeaksFirst: Bool = {
        guard let steps = tcpSteps, let first = steps.first(where: { if case .variable = $0 { return false }; return true }),
              case .expect = first else { return false }
        return true
    }()
    /// `set-var` lines before a `tcp-check connect` (they may give its port): run first.
    let preConnectActions: [CheckVariableAction]
    /// This run's `check.` and `sess.` variables.
    var variables = CheckVariables()
    /// The log-format texts of the check's rules, compiled once.
    var formats: [String: LogFormat] = [:]
    /// When this run began, for the date variables of its log-format texts.
    var startedWall: (seconds: Int, microseconds: Int) = (0, 0)
    /// A `send-lf` step's bytes, rendered when the step begins.
    var pendingSend: [UInt8]?
    /// `http-check` with log-format parts (`uri-lf`, `body-lf`, a `%` header) or `set-var`
    /// lines before the request: the request is built at each run. Nil: it is `baseRequest`.
    let dynamicHTTP: HTTPCheck?
    /// The PROXY header a check sends first, if any.
    let proxyHeader: [UInt8]
    /// The server's check settings send a PROXY header (`check-send-proxy`, or `send-proxy`
    /// checked on its own address): a later `connect default` sends one too.
    let serverSendsProxyToChecks: Bool
    /// `http-check set-var` lines after the request is sent, run between the expectations.
    let httpActions: [HTTPCheck.VariableAction]
    /// Each `http-check expect`'s regexes, compiled once: the pattern's (`rstatus`,
    /// `rstring`, a header name matched `-m reg`), and a header value's.
    let expectationRegexes: [(pattern: PosixRegex?, value: PosixRegex?)]
    /// `option tcp-check` (or a protocol check): the steps after the connection, and the
    /// first rule's `connect` options. Nil: a connect or HTTP check.
    let tcpSteps: [TCPCheck.Step]?
    let tcpConnect: ConnectRule?
    /// The later `tcp-check connect` rules, by their index among `tcpSteps`.
    let laterConnects: [Int: ConnectRule]
    /// The comments of the steps (by index among `tcpSteps`) and of the first `connect`:
    /// what a failure or a timeout at that step reports, as HAProxy appends it.
    var stepComments: [Int: String] = [:]
    var firstConnectComment: String?
    /// HAProxy's number of each step (comment lines count) and of the first `connect`.
    var stepNumbers: [Int] = []
    var firstConnectNumber = 1
    /// What the check is called in its reasons (`tcp-check`, `redis-check`...).
    let tcpOrigin: String
    /// What a tcp-check's answers are judged at: `Layer6` for `ssl-hello-chk`, else `Layer7`.
    var answerLayer: String { tcpOrigin == "ssl-hello-chk" ? "Layer6" : "Layer7" }
    /// The step running now (0-based among `tcpSteps`), and whether the server closed.
    var stepIndex = 0
    var stepSent = 0
    var peerClosed = false
    /// `tcpSteps` as a run reads them (each expect with its regex, compiled once), and the last that is not a `set-var` (the one whose
    /// result a passing run reports).
    let stepTable: [RunStep]
    let finalStep: RunStep?
    /// `option tcp-check` (HAProxy words its results "(tcp-check)").
    let genericTCPCheck: Bool

    /// A tcp-check step as a run reads it: its kind, a send's bytes, an expect's rule. Held by
    /// reference, so that reading a step at each run copies nothing (switching on the step
    /// itself copies every field of an expectation, and counts references to each).
    final class RunStep {
        enum Kind { case connect, send, sendFormat, expect, comment, variable }
        let kind: Kind
        let bytes: [UInt8]
        let expect: ExpectRule?

        init(_ step: TCPCheck.Step) {
            var bytes: [UInt8] = []
            var expect: ExpectRule?
            switch step {
            case .connect: kind = .connect
            case .send(let b): kind = .send; bytes = b
            case .sendFormat: kind = .sendFormat
            case .expect(let e): kind = .expect; expect = ExpectRule(e)
            case .comment: kind = .comment
            case .variable: kind = .variable
            }
            self.bytes = bytes
            self.expect = expect
        }
    }

    /// An expect step's rule and its regex (`rstring`, `rbinary`), compiled once.
    final class ExpectRule {
        let e: TCPCheck.Expectation
        let regex: PosixRegex?
        /// A pattern that must be there is judged on each arrival: once found, no more is
        /// read (the server's FIN is not waited for).
        let judgedEarly: Bool

        init(_ e: TCPCheck.Expectation) {
            self.e = e
            regex = e.kind == .rstring || e.kind == .rbinary ? try? PosixRegex(e.text) : nil
            judgedEarly = !e.negated && e.kind != .mysqlGreeting && e.kind != .mysqlReply && e.kind != .ldapBindResponse
        }
    }
    /// What a check sends: the PROXY header (`check-send-proxy`, or a `send-proxy` server
    /// checked on its own address and port), then the HTTP request (`option httpchk`).
    var request: [UInt8]?
    /// `http-check send-state`: where in `baseRequest` the state header goes (after the
    /// request line), rebuilt at each check.
    let stateHeaderAt: Int?
    let baseRequest: [UInt8]?
    /// An HTTP check (a response is read and judged); otherwise connecting (and sending the
    /// PROXY header) is the whole check.
    let layer7: Bool
    let expectations: [HTTPCheck.Expectation]
    /// `http-check disable-on-404`.
    let disableOn404: Bool
    let options: ServerOptions
    /// HAProxy's check timeouts: without `timeout check`, `inter` bounds the whole check; with
    /// it, min(`timeout connect`, `inter`) bounds the connect and `timeout check` the answer.
    let connectTimeout: Int64
    let readTimeout: Int64?
    var fd: FileDescriptor?
    /// The last run's socket, disconnected and still registered with the loop: the next
    /// run connects it again rather than creating, registering and freeing a socket each
    /// time (most of a check's cost is the kernel's).
    var parked: ParkedSocket?
    /// A disconnected socket, the address family it was made for, and whether it delays the
    /// ACK that ends its handshakes (TCP_DEFER_ACCEPT, which a disconnect keeps).
    struct ParkedSocket { let fd: FileDescriptor, family: Int32, delaysACK: Bool }
    /// The address family `fd` was made for, and whether it delays its handshake's ACK.
    var fdFamily: Int32 = 0
    var fdDelaysACK = false
    /// The check's TLS session (`check-ssl`, or `ssl` checked on the server's own address).
    var tls: UnsafeMutableRawPointer?
    var handshakeDone = false
    var successes = 0
    var failures = 0
    var startedMs: Int64 = 0
    /// When the next run is due, and how late this run started (the loop's timers fire on a
    /// grid, up to 31 ms late): the next run is due that much sooner, so that lateness does
    /// not add up from run to run and a server is checked every `inter` after its last
    /// check ended, as HAProxy schedules it.
    var dueMs: Int64 = 0
    var startLateness: Int64 = 0
    var response: [UInt8] = []
    var sent = 0
    var connected = false
    var inProgress = false
    var stopped = false
    /// `option external-check`: the command, its running child (0: none) and which run it is.
    let externalCommand: ExternalCheckCommand?
    var childPid: Int32 = 0
    var externalRun = 0

    init(server: Server, backend: Backend, context: LoopContext) {
        self.server = server
        self.backend = backend
        self.context = context
        options = server.definition.options
        var request: [UInt8]?
        var stateAt: Int?
        var texts: [String] = []
        if let h = backend.settings.httpCheck {
            let dynamic = h.uriFormat != nil || h.bodyFormat != nil || h.headers.contains { $0.value.contains("%") }
                || h.variableActions.contains { $0.beforeSend }
            dynamicHTTP = dynamic ? h : nil
            if !dynamic {
                request = Self.httpRequest(h, uri: Array(h.uri.utf8), headers: h.headers.map { ($0.name, Array($0.value.utf8)) }, body: h.body.map { Array($0.utf8) })
                if h.sendState { stateAt = "\(h.method) \(h.uri) \(h.version)\r\n".utf8.count }
            }
            texts += [h.uriFormat, h.bodyFormat].compactMap { $0 } + h.headers.map(\.value)
            for e in h.expectations {
                texts += [e.onSuccess, e.onError, e.kind == .stringFormat ? e.pattern : nil].compactMap { $0 }
                if let m = e.headerMatch {
                    if m.nameIsFormat { texts.append(m.name) }
                    if m.valueIsFormat, let v = m.value { texts.append(v) }
                }
            }
            for a in h.variableActions { if case .format(let f)? = a.action.value { texts.append(f) } }
            expectations = h.expectations
            disableOn404 = h.disableOn404
            layer7 = true
            httpActions = h.variableActions.filter { !$0.beforeSend }
            expectationRegexes = h.expectations.map { e in
                let m = e.headerMatch
                let pattern = e.kind == .rstatus || e.kind == .rstring ? try? PosixRegex(e.pattern)
                    : m?.nameMethod == .reg ? try? PosixRegex(m!.name) : nil
                return (pattern, m?.valueMethod == .reg ? m!.value.flatMap { try? PosixRegex($0) } : nil)
            }
        } else {
            httpActions = []
            expectationRegexes = []
            request = nil
            expectations = []
            disableOn404 = false
            layer7 = false
            dynamicHTTP = nil
        }
        if let t = backend.settings.tcpCheck {
            // As HAProxy numbers and comments the rules: every rule has a number, comment
            // lines included; a `tcp-check comment` line names the following rules of one kind
            // (a `connect` or a `set-var` ends it), a rule's own `comment` that rule only.
            var steps: [TCPCheck.Step] = []
            var numbers: [Int] = []
            var comments: [Int: String] = [:]
            var rule = 0
            var lineComment: String?, lineCommentKind: Int?, ownComment: String?
            for step in t.origin == "tcp-check" ? backend.settings.tcpCheckRules : t.steps {
                rule += 1
                if case .comment(let c, let line) = step {
                    if line { lineComment = c; lineCommentKind = nil } else { ownComment = c; rule -= 1 }
                    continue
                }
                let kind: Int
                switch step {
                case .send, .sendFormat: kind = 0
                case .expect: kind = 1
                case .connect: kind = 2
                default: kind = 3
                }
                if let k = lineCommentKind, k != kind { lineComment = nil }
                lineCommentKind = kind
                if let c = ownComment ?? (kind == 3 ? nil : lineComment) { comments[steps.count] = c }
                ownComment = nil
                if kind >= 2 { lineComment = nil }
                numbers.append(rule)
                steps.append(step)
            }
            var connect: TCPCheck.Connect?
            var before: [CheckVariableAction] = []
            // `set-var` lines may come before the `connect` (its port may read them).
            if let at = steps.firstIndex(where: { if case .variable = $0 { return false }; return true }), case .connect(let c) = steps[at] {
                connect = c
                for case .variable(let a) in steps[..<at] { before.append(a) }
                steps.removeSubrange(...at)
                firstConnectComment = comments[at]
                firstConnectNumber = numbers[at]
                comments = Dictionary(uniqueKeysWithValues: comments.filter { $0.key > at }.map { ($0.key - at - 1, $0.value) })
                numbers.removeSubrange(...at)
            }
            stepComments = comments
            stepNumbers = numbers
            preConnectActions = before
            for step in t.origin == "tcp-check" ? backend.settings.tcpCheckRules : t.steps {
                switch step {
                case .sendFormat(let f, _): texts.append(f)
                case .expect(let e):
                    texts += [e.onSuccess, e.onError, e.kind == .stringFormat || e.kind == .binaryFormat ? e.text : nil].compactMap { $0 }
                case .variable(let a): if case .format(let f)? = a.value { texts.append(f) }
                default: break
                }
            }
            tcpSteps = steps
            tcpConnect = connect.map(ConnectRule.init)
            var later: [Int: ConnectRule] = [:]
            for (i, step) in steps.enumerated() { if case .connect(let c) = step { later[i] = ConnectRule(c) } }
            laterConnects = later
            tcpOrigin = t.origin
        } else {
            tcpSteps = nil
            preConnectActions = []
            // `http-check connect` opens the check's connection as a tcp-check's would.
            tcpConnect = backend.settings.httpCheck?.connect.map(ConnectRule.init)
            laterConnects = [:]
            tcpOrigin = ""
        }
        stepTable = (tcpSteps ?? []).map(RunStep.init)
        finalStep = stepTable.last { $0.kind != .variable }
        genericTCPCheck = tcpOrigin == "tcp-check"
        // The server's `check-send-proxy` (or `send-proxy` when its checks go to its own
        // address and port) applies to its own connection only.
        serverSendsProxyToChecks = options.checkSendProxy || (options.sendProxy != nil && options.checkPort == nil && options.checkAddress == nil)
        if Self.sendsProxyHeader(tcpConnect, server: serverSendsProxyToChecks) {
            let header = Self.proxyHeader(options)
            request = header + (request ?? [])
            stateAt = stateAt.map { $0 + header.count }
            proxyHeader = header
        } else {
            proxyHeader = []
        }
        if dynamicHTTP != nil && request == nil { request = [] }
        self.request = request
        baseRequest = request
        stateHeaderAt = stateAt
        externalCommand = ExternalCheckCommand(backend: backend, configuration: context.model.configuration)
        let inter = server.definition.options.inter
        if let check = backend.settings.timeouts.check {
            connectTimeout = Int64(min(backend.settings.timeouts.connect ?? inter, inter))
            readTimeout = Int64(check)
        } else {
            connectTimeout = Int64(inter)
            readTimeout = nil
        }
        super.init()
        for t in texts where t.contains("%") && formats[t] == nil { formats[t] = LogFormat(t) }
    }

    /// An HTTP check's request: the request line, the headers (one whose value is empty is
    /// left out, as HAProxy does), `content-length` and the body when there is one.
    static func httpRequest(_ h: HTTPCheck, uri: [UInt8], headers: [(String, [UInt8])], body: [UInt8]?, stateHeader: String? = nil) -> [UInt8] {
        var out = Array(h.method.utf8) + [0x20] + (uri.isEmpty ? [0x2f] : uri) + [0x20] + Array(h.version.utf8) + [13, 10]
        if let stateHeader { out += Array(stateHeader.utf8) }
        for (name, value) in headers where !value.isEmpty { out += Array(name.utf8) + [0x3a, 0x20] + value + [13, 10] }
        if let body { out += Array("content-length: \(body.count)\r\n\r\n".utf8) + body } else { out += [13, 10] }
        return out
    }

    /// A dynamic HTTP check's request for this run: `set-var` lines before the send first,
    /// then the log-format parts rendered.
    func buildDynamicRequest(_ h: HTTPCheck) -> [UInt8] {
        for a in h.variableActions where a.beforeSend { run(a.action) }
        let uri = h.uriFormat.map { render($0) } ?? Array(h.uri.utf8)
        let headers = h.headers.map { ($0.name, $0.value.contains("%") ? render($0.value) : Array($0.value.utf8)) }
        let body = h.bodyFormat.map { render($0) } ?? h.body.map { Array($0.utf8) }
        return proxyHeader + Self.httpRequest(h, uri: uri, headers: headers, body: body, stateHeader: h.sendState ? stateHeader() : nil)
    }

    static func host(of a: SocketAddress) -> ServerAddress.Host {
        if let v4 = a.ipv4 { return .ip(IPAddress(v4: v4)) }
        return .ip(IPAddress(bytes16: a.addressBytes))
    }

    /// Schedules the first check `offset` ms from now, to spread checks over `inter`.
    func start(offset: Int64) {
        dueMs = context.loop.now + offset
        context.loop.setDeadline(self, dueMs)
    }

    func stop() {
        stopped = true
        finishAttempt()
        discardParked()
        context.loop.clearDeadline(self)
    }

    var isUp: Bool { server.isUp.load(ordering: .relaxed) }

    /// The next interval: `fastinter` while changing state, `downinter` while down.
    var nextInterval: Int64 {
        let base: Int64
        if isUp && failures > 0 { base = Int64(options.fastInter ?? options.inter) }
        else if !isUp && successes > 0 { base = Int64(options.fastInter ?? options.inter) }
        else if !isUp { base = Int64(options.downInter ?? options.inter) }
        else { base = Int64(options.inter) }
        // `spread-checks N`: up to ±N% at random, so that servers drift apart.
        let spread = context.model.configuration.global.spreadChecks
        guard spread > 0, base > 1 else { return base }
        let span = base * Int64(spread) / 100
        return max(1, base + Int64.random(in: -span...span))
    }

    override func timerFired() {
        if stopped || context.model.stopping.load(ordering: .relaxed) { stop(); return }
        // In maintenance a server is not checked (HAProxy's `disable server`); the check
        // resumes at the next interval once it is ready or draining again.
        if (server.isDisabled || !server.checksEnabled.load(ordering: .relaxed)) && !inProgress {
            dueMs = context.loop.now + Int64(options.inter)
            context.loop.setDeadline(self, dueMs)
            return
        }
        if inProgress && externalCommand != nil {
            killExternal()
            complete(false, reason: "External check timeout", code: 0)
            return
        }
        if inProgress {
            var reason = !connected ? "Layer4 timeout" : tls != nil && !handshakeDone ? "Layer6 timeout" : "\(answerLayer) timeout"
            // `tout-status` of the expect that was waiting.
            if connected, tls == nil || handshakeDone, let steps = tcpSteps, stepIndex < steps.count, case .expect(let e) = steps[stepIndex],
               let words = e.timeoutStatus.flatMap({ TCPCheck.timeoutStatuses[$0] }) {
                reason = words
            }
            if connected, tls == nil || handshakeDone, layer7, let words = expectations.first?.timeoutStatus.flatMap({ TCPCheck.timeoutStatuses[$0] }) {
                reason = words
            }
            // `option tcp-check` says where: at the connection, or at the step that waited.
            if !connected || (tls != nil && !handshakeDone) {
                if !connectStepInfo.isEmpty { reason += ", info: \"\(connectStepInfo)\"" }
            } else if let steps = tcpSteps, stepIndex < steps.count, tcpOrigin == "tcp-check" {
                reason += ", info: \" at step \(stepNumber) of \(tcpOrigin)\(Self.describe(steps[stepIndex], comment: stepComments[stepIndex]))\""
            }
            complete(false, reason: reason, code: nil)
            return
        }
        begin()
    }

    /// `X-Haproxy-Server-State`, as HAProxy words it: the state as the stats show it, the
    /// server's address, name, our node, weights and sessions.
    func stateHeader() -> String {
        let o = options
        var state: String
        if server.adminState == .maintenance { state = "MAINT" }
        else if !isUp { state = successes > 0 ? "DOWN \(successes)/\(o.rise)" : "DOWN" }
        else if server.isNoLoadBalancing { state = "NOLB" }
        else if failures > 0 { state = "UP \(max(1, o.fall - failures))/\(o.fall)" }
        else if server.lastCheck.withLock({ $0.status.isEmpty }) { state = "UP 1/\(o.fall)" }
        else { state = "UP" }
        let a = server.address
        let unix = a.family == AF_UNIX
        let total = backend.servers.reduce(0) { $0 + ($1.isUsable ? $1.weight : 0) }
        let sessions = backend.servers.reduce(0) { $0 + $1.active.load(ordering: .relaxed) }
        let node = context.model.configuration.global.node ?? ProcessCalls.hostname
        return "x-haproxy-server-state: \(state); address=\(unix ? "unix" : AddressText.ip(a)); port=\(unix ? "unix" : "\(a.port)"); name=\(backend.name)/\(server.name); node=\(node); weight=\(server.weight)/\(total); scur=\(server.active.load(ordering: .relaxed))/\(sessions); qcur=0\r\n"
    }

    func begin() {
        // Nothing of the last run is left: its variables, its answer, a later connect's
        // settings; then the rules before the connection run and the request is built.
        variables.reset()
        response.removeAll(keepingCapacity: true)
        connection = tcpConnect
        connectionStep = nil
        dynamicPort = nil
        // The date variables of the rules' log-format texts read it.
        if !formats.isEmpty { startedWall = Clock.wallClock() }
        pendingSend = nil
        if let h = dynamicHTTP {
            request = buildDynamicRequest(h)
        } else if let at = stateHeaderAt, let base = baseRequest {
            request = Array(base[..<at]) + Array(stateHeader().utf8) + Array(base[at...])
        } else {
            request = baseRequest
        }
        // `http-check set-var` lines after the send and before the first expect: they run
        // once the request is built (nothing is received yet), as HAProxy runs them.
        for a in httpActions where a.afterExpectations == 0 { run(a.action) }
        for a in preConnectActions { run(a) }
        dynamicPort = tcpConnect.flatMap(port(of:))
        inProgress = true
        connected = false
        sent = 0
        stepIndex = 0
        stepSent = 0
        peerClosed = false
        startedMs = context.loop.now
        startLateness = min(max(0, startedMs - dueMs), EventLoop.timerStep)
        if let e = externalCommand { runExternal(e); return }
        openConnection()
    }

    /// Opens the check's connection (`connection`'s address, port, TLS and ALPN): progress
    /// goes on once it is connected.
    func openConnection() {
        do {
            let address = self.address
            let s: FileDescriptor
            let reused = parked?.family == address.family
            var delaysACK = false
            if let p = parked, reused {
                s = p.fd
                delaysACK = p.delaysACK
                parked = nil
            } else {
                discardParked()
                s = try Socket.make(family: address.family)
            }
            fd = s
            fdFamily = address.family
            // As HAProxy does: the ACK of the server's SYN-ACK waits to ride on the check's
            // first bytes (one packet less each way), and a check that sends nothing never
            // completes the server's accept (it ends with a reset). Not when the server
            // speaks first (SMTP, a tcp-check that starts with an expect): its accept, and so
            // its banner, would wait for the delayed ACK. HAProxy sets TCP_QUICKACK off before
            // each connect; TCP_DEFER_ACCEPT on a connecting socket takes the kernel's same
            // path ("save one ACK") and, unlike it, survives the disconnect between runs, so
            // it is set once per socket rather than once per check.
            let wantsDelayedACK = address.family != AF_UNIX && !(connectionStep == nil ? serverSpeaksFirst : nextStepIsExpect)
            if wantsDelayedACK != delaysACK,
               (try? Socket.setOption(s, level: Int32(IPPROTO_TCP), name: TCP_DEFER_ACCEPT, value: wantsDelayedACK ? 1 : 0)) != nil {
                delaysACK = wantsDelayedACK
            }
            fdDelaysACK = delaysACK
            handshakeDone = false
            // The server's own connection (no `connect` rule, or `connect default`) takes its
            // check TLS settings; any other `connect` is TLS with its own `ssl` only. A
            // `connect` of its own offers its own SNI and ALPN only; the server's connection
            // the server's `check-sni`/`check-alpn`.
            let own = connection.map { !$0.serverDefaults } ?? false
            if let t = server.tls, connection?.ssl == true || (!own && t.forChecks) {
                tls = (connection?.sni ?? (own ? nil : t.checkServerName)).withOptionalCString { name in
                    t.verifyHost.withOptionalCString { host in cproxy_tls_connect(t.context, s.rawValue, name, host, nil) }
                }
                if tls == nil { throw SystemError("SSL_new", code: ENOMEM) }
                let alpn = connection?.alpn ?? (own ? [] : t.checkALPN)
                if !alpn.isEmpty { alpn.withUnsafeBufferPointer { cproxy_tls_set_alpn(tls, $0.baseAddress, $0.count) } }
            }
            switch try Socket.connect(s, address) {
            case .done: connected = true
            case .wouldBlock: break
            }
            if !reused { try context.loop.register(s, events: Epoll.readable | Epoll.writable | Epoll.readHangup | Epoll.edgeTriggered, object: self) }
            context.loop.setDeadline(self, (connectionStep == nil ? startedMs : context.loop.now) + connectTimeout)
            if connected { connectedNow() }
            if connected { progress(events: Epoll.writable) }
        } catch let e as SystemError {
            complete(false, reason: "Layer4 connection problem, info: \"\(e.reason)\(connectStepInfo)\"", code: nil)
        } catch {
            complete(false, reason: Self.withInfo("Layer4 connection problem", connectStepInfo), code: nil)
        }
    }

    /// `connect port <expr>`: the port it works out now (nil: none, or not a port).
    func port(of c: ConnectRule) -> Int? {
        guard let e = c.portExpression, let p = integer(e), (1...65535).contains(p) else { return nil }
        return Int(p)
    }

    /// Whether a connection opened by `c` (nil: the server's own) starts with a PROXY header:
    /// its own `send-proxy`, or the server's check settings on the server's own connection
    /// (no rule, or `connect default` to the server's address and port), as HAProxy decides.
    static func sendsProxyHeader(_ c: ConnectRule?, server: Bool) -> Bool {
        if c?.sendProxy == true { return true }
        guard server, c == nil || c!.serverDefaults else { return false }
        return c?.port == nil && c?.portExpression == nil && c?.address == nil
    }

    /// The header a check sends says nothing of a client: `PROXY UNKNOWN` or v2 `LOCAL`, as
    /// HAProxy's checks send.
    static func proxyHeader(_ o: ServerOptions) -> [UInt8] {
        ProxyProtocol.encode(o.sendProxy ?? .v1, source: nil, destination: nil, ssl: o.proxyV2SSL)
    }

    /// Where a `tcp-check` was when its connection failed, as HAProxy says it.
    var connectStepInfo: String {
        guard tcpSteps != nil, tcpOrigin == "tcp-check" else { return "" }
        guard let c = connection else { return " at initial connection step of tcp-check" }
        let number = connectionStep ?? firstConnectNumber
        let comment = connectionStep == nil ? firstConnectComment : stepComments[stepIndex - 1]
        return " at step \(number) of tcp-check (connect\(c.port.map { " port \($0)" } ?? ""))" + (comment.map { " comment: '\($0)'" } ?? "")
    }

    /// The step after the current one is an expect (a later `connect`: the server speaks first).
    var nextStepIsExpect: Bool {
        guard let steps = tcpSteps, let next = steps[stepIndex...].first(where: { if case .variable = $0 { return false }; return true }),
              case .expect = next else { return false }
        return true
    }

    /// A later `tcp-check connect`: the connection so far ends (with a reset), the next one
    /// opens with this step's settings; the steps go on once it is connected.
    func reconnect(_ c: ConnectRule) {
        let number = stepNumber
        closeConnection()
        connection = c
        connectionStep = number
        dynamicPort = port(of: c)
        connected = false
        peerClosed = false
        sent = 0
        stepSent = 0
        response.removeAll(keepingCapacity: true)
        request = Self.sendsProxyHeader(c, server: serverSendsProxyToChecks) ? Self.proxyHeader(options) : nil
        stepIndex += 1
        openConnection()
    }

    /// Connected: with `timeout check`, the answer now has that long.
    func connectedNow() {
        if let read = readTimeout { context.loop.setDeadline(self, context.loop.now + read) }
    }

    override func handle(events: UInt32) {
        guard inProgress else { return }
        progress(events: events)
    }

    /// The events after which a read may find something: bytes, the server's end, an error.
    static let readableEvents = Epoll.readable | Epoll.readHangup | Epoll.hangup | Epoll.error

    func progress(events: UInt32) {
        guard let s = fd else { return }
        if !connected {
            if events & (Epoll.error | Epoll.hangup) != 0 {
                let code = Socket.pendingError(s)
                complete(false, reason: "Layer4 connection problem, info: \"\(SystemError("connect", code: code).reason)\(connectStepInfo)\"", code: nil)
                return
            }
            guard events & Epoll.writable != 0 else { return }
            connected = true
            connectedNow()
        }
        if let session = tls, !handshakeDone {
            let r = cproxy_tls_handshake(session)
            if r == Int(CPROXY_TLS_WANT_READ) || r == Int(CPROXY_TLS_WANT_WRITE) { return }
            guard r == 1 else {
                let why = cproxy_tls_verify_error(session).map { " (\(String(cString: $0)))" } ?? ""
                complete(false, reason: "Layer6 invalid response, info: \"SSL handshake failure\(why)\(connectStepInfo)\"", code: nil)
                return
            }
            handshakeDone = true
        }
        if tcpSteps != nil {
            // The PROXY header first (`send-proxy`), then the steps.
            if let request {
                switch sendAll(s, request, from: &sent) {
                case .done: break
                case .wouldBlock: return
                case .failed: complete(false, reason: "Layer4 connection problem", code: nil); return
                }
            }
            runSteps(s, readable: events & Self.readableEvents != 0)
            return
        }
        guard let request else {
            if tls != nil { complete(true, reason: "Layer6 check passed", code: nil); return }
            complete(true, reason: "Layer4 check passed", code: nil)
            return
        }
        let sentBefore = sent
        switch sendAll(s, request, from: &sent) {
        case .done: break
        case .wouldBlock: return
        case .failed: complete(false, reason: "Layer7 connection problem", code: nil); return
        }
        if !layer7 {
            complete(true, reason: "Layer4 check passed", code: nil)
            return
        }
        // Just sent: the answer waits for the next readiness, as in `runSteps`.
        if sent > sentBefore && tls == nil && events & Self.readableEvents == 0 { return }
        let chunk = context.readScratch
        while true {
            switch receive(s, chunk.baseAddress!, chunk.count) {
            case .done(let n)? where n > 0:
                response.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                if response.count > 65536 { evaluate(); return }
            case .done?:
                evaluate()
                return
            case .wouldBlock?:
                // Enough to judge status-only expectations once the head is here, and any
                // other once the body its Content-Length announces is in (the server may
                // keep the connection open, as HAProxy does not wait for it to close).
                if expectations.allSatisfy({ $0.kind == .status || $0.kind == .rstatus }), response.contains(10) { evaluate() }
                else if Self.responseComplete(response) { evaluate() }
                return
            case nil:
                evaluate()
                return
            }
        }
    }

    /// Whether `bytes` hold a whole HTTP response: the head, and the body its Content-Length
    /// announces (a response without one ends with the connection).
    static func responseComplete(_ bytes: [UInt8]) -> Bool {
        guard let headEnd = HTTPTransaction.headEnd(bytes) else { return false }
        let head = String(decoding: bytes[..<headEnd], as: UTF8.self).lowercased()
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            guard let n = Int(line.dropFirst("content-length:".count).trimmingPrefix(while: { $0 == " " || $0 == "\t" })) else { return false }
            return bytes.count >= headEnd + n
        }
        return false
    }

    /// `tcp-check` steps, from `stepIndex`, as far as the socket allows now: a send goes out
    /// whole (and starts a fresh answer), an expect reads until its pattern is there or the
    /// server closes (HAProxy's rule: a mismatch waits for more, unless the server is done).
    func runSteps(_ s: FileDescriptor, readable: Bool) {
        guard let steps = tcpSteps else { return }
        let table = stepTable
        // Bytes just sent cannot be answered yet: the expect after them waits for the
        // socket's next readiness (edge-triggered, so an answer that comes meanwhile is
        // reported) rather than reading at once, which would mostly find nothing. Not when
        // this wake-up reported bytes to read (a server may answer a request it has only
        // part of), nor over TLS, whose library may hold bytes the kernel no longer reports.
        let mayWait = !readable && tls == nil
        var answerCannotBeThere = false
        while stepIndex < table.count {
            // Read through the table, by reference: switching on the step itself would copy
            // it, and with it every field of an expectation, at every run.
            let step = table[stepIndex]
            switch step.kind {
            case .send:
                guard sendStep(s, step.bytes) else { return }
                answerCannotBeThere = mayWait
                stepIndex += 1
            case .sendFormat:
                guard case .sendFormat(let text, let binary) = steps[stepIndex] else { return }
                if pendingSend == nil {
                    var bytes = render(text)
                    if binary {
                        guard let b = Hexadecimal.bytes(bytes) else {
                            complete(false, reason: "Layer7 invalid response, info: \"tcp-check send : failed to build log-format string at step \(stepNumber)\"", code: nil)
                            return
                        }
                        bytes = b
                    }
                    pendingSend = bytes
                }
                // Nothing to send (the text rendered empty): the step is done, as in HAProxy.
                if let bytes = pendingSend, !bytes.isEmpty {
                    guard sendStep(s, bytes) else { return }
                    answerCannotBeThere = mayWait
                } else {
                    response.removeAll(keepingCapacity: true)
                }
                pendingSend = nil
                stepIndex += 1
            case .variable:
                if case .variable(let action) = steps[stepIndex] { run(action) }
                stepIndex += 1
            case .expect:
                if answerCannotBeThere && !peerClosed { return }
                let x = step.expect!
                let chunk = context.readScratch
                var minimum = x.e.minRecv ?? 0
                var found = false
                // `string-lf`, `binary-lf`: the pattern of this run.
                var pattern = x.e.pattern
                // The rule's comment: its own, or a `tcp-check comment` line's before it.
                var comment: String { (x.e.comment ?? stepComments[stepIndex]).map { " comment: " + $0 } ?? "" }
                if x.e.kind == .stringFormat || x.e.kind == .binaryFormat {
                    pattern = render(x.e.text)
                    if pattern.isEmpty {
                        complete(false, reason: "Layer7 invalid response, info: \"log-format string evaluated to an empty string\(comment)\"", code: nil)
                        return
                    }
                    if x.e.kind == .binaryFormat {
                        guard let b = Hexadecimal.bytes(pattern) else {
                            complete(false, reason: "Layer7 invalid response, info: \"Failed to parse hexastring resulting of eval of a log-format string\(comment)\"", code: nil)
                            return
                        }
                        pattern = b
                    }
                    // As HAProxy: judged once at least that much is in.
                    minimum = max(minimum, pattern.count)
                }
                reading: while !peerClosed && response.count < 65536 {
                    switch receive(s, chunk.baseAddress!, chunk.count) {
                    case .done(let n)? where n > 0:
                        response.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                        if x.judgedEarly && response.count >= minimum && Self.matches(x.e, response, pattern: pattern, regex: x.regex) { found = true; break reading }
                    case .wouldBlock?: break reading
                    default: peerClosed = true
                    }
                }
                let finalData = peerClosed || response.count >= 65536
                if x.e.kind == .ldapBindResponse {
                    ldapBindResponse(finalData: finalData)
                    return
                }
                if x.e.kind == .mysqlGreeting || x.e.kind == .mysqlReply {
                    guard mysqlPacket(x.e.kind, finalData: finalData) else { return }
                    stepIndex += 1
                    continue
                }
                // `min-recv`: not judged before that much is in, unless the server is done.
                if response.count < minimum && !finalData { return }
                if !found { found = Self.matches(x.e, response, pattern: pattern, regex: x.regex) }
                // A mismatch waits for more, unless the server is done or `min-recv` is set
                // (then that much is conclusive), as HAProxy judges.
                if !found && !finalData && x.e.minRecv == nil { return }
                if found == x.e.negated {
                    // HAProxy's info: the `on-error` text, or for `option tcp-check` what did
                    // not match where; then the rule's comment.
                    let what = (x.e.negated ? "matched unwanted content" : "did not match content") + Self.patternDescription(x.e)
                    var info = x.e.onError.map { String(decoding: render($0), as: UTF8.self) }
                        ?? (tcpOrigin == "tcp-check" ? "TCPCHK \(what) at step \(stepNumber)" : "")
                    info += comment
                    let status = x.e.errorStatus ?? (found || !response.isEmpty || answerLayer == "Layer6" ? "L\(answerLayer.last!)RSP" : "L4CON")
                    let words = TCPCheck.errorStatuses[status] ?? "\(answerLayer) invalid response"
                    complete(false, reason: Self.withInfo(words, info), code: resultCode(status, x.e.statusCode))
                    return
                }
                stepIndex += 1
            case .connect:
                guard case .connect(let c) = steps[stepIndex] else { return }
                reconnect(laterConnects[stepIndex] ?? ConnectRule(c))
                return
            case .comment:
                stepIndex += 1
            }
        }
        // The result is the last rule's (`set-var` lines aside), as in HAProxy: an expect's
        // `ok-status` and `on-success`; a send's L7OK; a lone `connect`'s L4OK. `option
        // tcp-check` says "(tcp-check)" where no text is given.
        let generic = genericTCPCheck
        switch finalStep?.kind {
        case .expect?:
            let x = finalStep!.expect!
            let status = x.e.okStatus ?? "L7OK"
            let info = x.e.onSuccess.map { String(decoding: render($0), as: UTF8.self) } ?? (generic ? "(tcp-check)" : "")
            let reason = passReason(TCPCheck.okStatuses[status] ?? "Layer7 check passed", info)
            let code = resultCode(status, x.e.statusCode)
            // `L7OKC`: a running server stops taking new traffic (`NOLB`), as HAProxy does.
            if status == "L7OKC" && isUp && server.setNoLoadBalancing(true) { stopping(duration: context.loop.now - startedMs, reason: reason, code: code) }
            complete(true, reason: reason, code: code)
        case nil:
            complete(true, reason: passReason(tls != nil ? "Layer6 check passed" : "Layer4 check passed", generic && tcpConnect != nil ? "(tcp-check)" : ""), code: nil)
        case .connect?:
            complete(true, reason: passReason(tls != nil ? "Layer6 check passed" : "Layer4 check passed", generic ? "(tcp-check)" : ""), code: nil)
        default:
            complete(true, reason: passReason("Layer7 check passed", generic ? "(tcp-check)" : ""), code: 0)
        }
    }

    /// The last passing result's words, info and reason: a server's checks mostly repeat
    /// themselves, so the reason is built once.
    private var lastPass: PassReason?
    /// A passing result's words and info, and the reason they make.
    private struct PassReason { let words: String, info: String, reason: String }

    /// `withInfo` for a passing result, reused while it repeats.
    func passReason(_ words: String, _ info: String) -> String {
        if let l = lastPass, l.words == words, l.info == info { return l.reason }
        let reason = Self.withInfo(words, info)
        lastPass = PassReason(words: words, info: info, reason: reason)
        return reason
    }

    /// The words of a result with its info, when there is one.
    static func withInfo(_ words: String, _ info: String) -> String {
        info.isEmpty ? words : "\(words), info: \"\(info)\""
    }

    /// The code a tcp-check result reports: HAProxy shows one for its layer-7 results (L7OK,
    /// L7OKC, L7STS), 0 unless `status-code` works one out.
    func resultCode(_ status: String, _ expression: SampleExpression?) -> Int? {
        guard status == "L7OK" || status == "L7OKC" || status == "L7STS" else { return nil }
        return expression.flatMap { integer($0) }.map { Int(truncatingIfNeeded: $0) } ?? 0
    }

    /// Sends a step's bytes, as far as the socket takes them; true once all are out (the
    /// next step then starts with a fresh answer).
    func sendStep(_ s: FileDescriptor, _ bytes: [UInt8]) -> Bool {
        switch sendAll(s, bytes, from: &stepSent) {
        case .done: break
        case .wouldBlock: return false
        case .failed:
            complete(false, reason: "Layer7 connection problem, info: \" at step \(stepNumber) of \(tcpOrigin)\(Self.describe(.send([]), comment: stepComments[stepIndex]))\"", code: nil)
            return false
        }
        stepSent = 0
        response.removeAll(keepingCapacity: true)
        return true
    }

    /// How HAProxy names an expect's pattern in its failure: the text of a `string`, the kind
    /// of the others.
    static func patternDescription(_ e: TCPCheck.Expectation) -> String {
        switch e.kind {
        case .string: return " '\(e.text)'"
        case .binary: return " (binary)"
        case .rstring: return " (regex)"
        case .rbinary: return " (binary regex)"
        case .stringFormat: return " (log-format string)"
        case .binaryFormat: return " (log-format binary)"
        case .mysqlGreeting, .mysqlReply, .ldapBindResponse: return ""
        }
    }

    /// The step's number as HAProxy reports it: every rule from 1, comment lines and the
    /// first `connect` included.
    var stepNumber: Int { stepIndex < stepNumbers.count ? stepNumbers[stepIndex] : (stepNumbers.last ?? 0) + 1 }

    /// Whether an expect's pattern (`pattern`: its bytes in this run) is in what the server sent.
    static func matches(_ e: TCPCheck.Expectation, _ data: [UInt8], pattern: [UInt8], regex: PosixRegex?) -> Bool {
        switch e.kind {
        case .string, .binary, .stringFormat, .binaryFormat:
            return ByteSearch.contains(data, pattern)
        case .rstring:
            return regex?.matches(String(decoding: data, as: UTF8.self)) ?? false
        case .rbinary:
            let hex = data.map { String($0, radix: 16, uppercase: true).leftPaddedWithZeros(2) }.joined()
            return regex?.matches(hex) ?? false
        case .mysqlGreeting, .mysqlReply, .ldapBindResponse:
            return false
        }
    }

    /// `option mysql-check`: takes one whole MySQL packet off the answer; true when it passes.
    /// An error packet fails the check with its code and message (`L7STS`); a greeting that
    /// is not protocol 9 or 10, or an answer cut short, is an invalid response. False with the
    /// check still running: the packet is not whole yet.
    func mysqlPacket(_ kind: TCPCheck.Expectation.Kind, finalData: Bool) -> Bool {
        let length = response.count >= 4 ? Int(response[0]) | Int(response[1]) << 8 | Int(response[2]) << 16 : Int.max
        guard length != Int.max, response.count - 4 >= length else {
            if finalData {
                complete(false, reason: "Layer7 invalid response", code: nil)
            }
            return false
        }
        let packet = Array(response[4..<(4 + length)])
        response.removeFirst(4 + length)
        if packet.first == 0xff {
            // The code, then (4.1 servers) '#' and the SQL state, then the message, all of which
            // HAProxy's reason quotes.
            let code = packet.count >= 3 ? Int(packet[1]) | Int(packet[2]) << 8 : 0
            let message = String(decoding: packet.dropFirst(min(3, packet.count)), as: UTF8.self)
            complete(false, reason: "Layer7 wrong status, info: \"\(message)\"", code: code)
            return false
        }
        if kind == .mysqlGreeting, packet.first != 10 && packet.first != 9 {
            complete(false, reason: "Layer7 invalid response", code: nil)
            return false
        }
        return true
    }

    /// `option ldap-check`: judges the answer to the bind once 14 bytes are in (or the
    /// server is done): an LDAPMessage (BER) with message ID 1 and a bind response whose
    /// result code is 0 passes; another code is `L7STS` with it; anything else is no LDAPv3.
    func ldapBindResponse(finalData: Bool) {
        let b = response
        guard b.count >= 14 || finalData else { return }
        /// The length at `at` (short or long form): where its content starts.
        func contentStart(_ at: Int) -> Int? {
            guard at < b.count else { return nil }
            let first = Int(b[at])
            return first & 0x80 == 0 ? at + 1 : at + 1 + (first & 0x7f)
        }
        guard b.count >= 2, b[0] == 0x30, let message = contentStart(1), message + 4 <= b.count,
              b[message] == 0x02, b[message + 1] == 0x01, b[message + 2] == 0x01, b[message + 3] == 0x61,
              let result = contentStart(message + 4), result + 3 <= b.count, b[result] == 0x0a, b[result + 1] == 0x01 else {
            complete(false, reason: "Layer7 invalid response, info: \"Not LDAPv3 protocol\"", code: nil)
            return
        }
        let code = Int(b[result + 2])
        if code != 0 {
            complete(false, reason: "Layer7 wrong status, info: \"See RFC: http://tools.ietf.org/html/rfc4511#section-4.1.9\"", code: code)
            return
        }
        complete(true, reason: "Layer7 check passed", code: 0)
    }

    /// A step as HAProxy names it where a check timed out, with its comment (an expect
    /// carries its own).
    static func describe(_ step: TCPCheck.Step, comment: String? = nil) -> String {
        let note = comment.map { " comment: '\($0)'" } ?? ""
        switch step {
        case .send, .sendFormat: return " (send)" + note
        case .expect(let e):
            let what: String
            switch e.kind {
            case .string: what = "expect string '\(e.text)'"
            case .binary: what = "expect binary '\(e.text)'"
            case .rstring: what = "expect regex"
            case .rbinary: what = "expect binary regex"
            case .stringFormat: what = "expect log-format string"
            case .binaryFormat: what = "expect log-format binary"
            case .mysqlGreeting, .mysqlReply, .ldapBindResponse: what = "expect custom function"
            }
            return " (\(what))" + ((e.comment ?? comment).map { " comment: '\($0)'" } ?? "")
        case .connect: return " (connect)" + note
        case .comment, .variable: return ""
        }
    }

    enum SendOutcome { case done, wouldBlock, failed }

    /// Writes `bytes` from `offset` on, as far as the socket takes them now.
    func sendAll(_ s: FileDescriptor, _ bytes: [UInt8], from offset: inout Int) -> SendOutcome {
        while offset < bytes.count {
            let r = bytes[offset...].withUnsafeBytes { send(s, $0.baseAddress!, $0.count) }
            guard case .done(let n)? = r, n > 0 else {
                if case .wouldBlock? = r { return .wouldBlock }
                return .failed
            }
            offset += n
        }
        return .done
    }

    /// Writes on the check's socket, through its TLS session when it has one; nil on failure.
    func send(_ s: FileDescriptor, _ p: UnsafeRawPointer, _ count: Int) -> IOResult<Int>? {
        guard let session = tls else { return try? Socket.write(s, from: p, count: count) }
        return Self.tlsResult(cproxy_tls_write(session, p, count))
    }

    /// Reads from the check's socket (decrypted when TLS): `.done(0)` at its end, nil on failure.
    func receive(_ s: FileDescriptor, _ p: UnsafeMutableRawPointer, _ count: Int) -> IOResult<Int>? {
        guard let session = tls else { return try? Socket.read(s, into: p, count: count) }
        return Self.tlsResult(cproxy_tls_read(session, p, count))
    }

    static func tlsResult(_ r: Int) -> IOResult<Int>? {
        if r >= 0 { return .done(r) }
        switch r {
        case Int(CPROXY_TLS_WANT_READ), Int(CPROXY_TLS_WANT_WRITE): return .wouldBlock
        case Int(CPROXY_TLS_CLOSED): return .done(0)
        default: return nil
        }
    }

    func finishAttempt() {
        killExternal()
        closeConnection()
        inProgress = false
    }

    /// Ends the check's connection, if one is open.
    func closeConnection() {
        if let session = tls {
            cproxy_tls_shutdown(session)
            cproxy_tls_free(session)
            tls = nil
        }
        if let s = fd {
            fd = nil
            // As HAProxy does: a check's connection ends with a reset, so that no check
            // leaves a socket in TIME_WAIT (a thousand servers checked every second would
            // keep sixty thousand). A TCP connection that was made is reset by
            // disconnecting its socket, which the next run connects again.
            if connected, !stopped, fdFamily != AF_UNIX, parked == nil, Socket.disconnect(s) {
                parked = ParkedSocket(fd: s, family: fdFamily, delaysACK: fdDelaysACK)
                return
            }
            context.loop.forget(s)
            Socket.setResetOnClose(s)
            s.close()
        }
    }

    /// Closes the socket kept from the last run, if any.
    func discardParked() {
        guard let p = parked else { return }
        parked = nil
        context.loop.forget(p.fd)
        p.fd.close()
    }

    /// Counts the result, changes state after `rise`/`fall`, logs the transition.
    func complete(_ ok: Bool, reason: String, code: Int?) {
        let duration = context.loop.now - startedMs
        finishAttempt()
        if ok {
            successes += 1
            failures = 0
            if server.isNoLoadBalancing && !reason.hasPrefix("Layer7 check conditionally") && server.setNoLoadBalancing(false) && isUp {
                transition(up: true, reason: reason, code: code, duration: duration)
            }
            // An agent that said `down` keeps the server down whatever its health check finds.
            if !isUp && successes >= options.rise && !server.agentDown.load(ordering: .relaxed) {
                transition(up: true, reason: reason, code: code, duration: duration)
            }
        } else {
            failures += 1
            successes = 0
            if isUp && failures >= options.fall { transition(up: false, reason: reason, code: code, duration: duration) }
        }
        if !stopped {
            dueMs = context.loop.now + max(1, nextInterval - startLateness)
            context.loop.setDeadline(self, dueMs)
        }
        let o = options
        let (status, description, info) = summary(ok, reason)
        let previous = server.lastCheck.withLock { r in
            let previous = r.status
            r.status = status
            r.code = code
            r.durationMs = duration
            r.description = description
            r.info = info
            if !ok { r.failures += 1 }
            r.health = isUp ? o.rise + o.fall - 1 - failures : successes
            return previous
        }
        // `option log-health-checks`: each change of the result, as HAProxy words it.
        if backend.settings.options.logHealthChecks, previous != status {
            var line = "Health check for server \(backend.name)/\(server.name) \(ok ? "succeeded" : "failed"), reason: \(Self.withCode(reason, code))"
            let status = isUp ? "\(max(0, o.fall - failures))/\(o.fall) UP" : "\(successes)/\(o.rise) DOWN"
            line += ", check duration: \(duration)ms, status: \(status)."
            context.model.logger.alert(line, level: ok ? .notice : .warning, to: context.model.logger.destinations(for: backend.settings.logs))
        }
    }

    /// The last result's short status and description (the reason up to its first comma),
    /// worked out once per distinct result: a server's checks mostly repeat themselves.
    private var lastSummary: Summary?
    /// A result's reason and what `summary` made of it (a struct: copying a tuple of strings
    /// goes through the runtime's generic copy, five times slower).
    private struct Summary { let ok: Bool, reason: String, status: String, description: String, info: String }

    func summary(_ ok: Bool, _ reason: String) -> (status: String, description: String, info: String) {
        if let l = lastSummary, l.ok == ok, l.reason == reason { return (l.status, l.description, l.info) }
        let utf8 = reason.utf8
        let description = String(Substring(utf8[..<(utf8.firstIndex(of: UInt8(ascii: ",")) ?? utf8.endIndex)]))
        let status = Self.shortStatus(ok, reason)
        // `last_chk`: the text of `info: "..."`, as HAProxy shows it.
        var info = ""
        let bytes = Array(reason.utf8), marker = Array(", info: \"".utf8)
        if bytes.last == UInt8(ascii: "\""), bytes.count > marker.count,
           let at = (0...(bytes.count - marker.count)).first(where: { bytes[$0..<($0 + marker.count)].elementsEqual(marker) }),
           at + marker.count < bytes.count {
            info = String(decoding: bytes[(at + marker.count)..<(bytes.count - 1)], as: UTF8.self)
        }
        lastSummary = Summary(ok: ok, reason: reason, status: status, description: description, info: info)
        return (status, description, info)
    }

    /// A reason with its code where HAProxy puts it: after the words, before `, info:`.
    static func withCode(_ reason: String, _ code: Int?) -> String {
        guard let code else { return reason }
        var i = reason.startIndex
        while i < reason.endIndex {
            if reason[i...].hasPrefix(", info: ") { return reason[..<i] + ", code: \(code)" + reason[i...] }
            i = reason.index(after: i)
        }
        return reason + ", code: \(code)"
    }

    /// HAProxy's short check status for a result (`show stat`'s `check_status`).
    static func shortStatus(_ ok: Bool, _ reason: String) -> String {
        if reason.hasPrefix("External") { return ok ? "PROCOK" : reason.hasPrefix("External check timeout") ? "PROCTOUT" : "PROCERR" }
        if ok { return reason.hasPrefix("Layer7 check conditionally") ? "L7OKC" : reason.hasPrefix("Layer7") ? "L7OK" : reason.hasPrefix("Layer6") ? "L6OK" : "L4OK" }
        if reason.hasPrefix("Layer6 timeout") { return "L6TOUT" }
        if reason.hasPrefix("Layer6") { return "L6RSP" }
        if reason.hasPrefix("Layer4 timeout") { return "L4TOUT" }
        if reason.hasPrefix("Layer4") { return "L4CON" }
        if reason.hasPrefix("Layer7 timeout") { return "L7TOUT" }
        if reason.hasPrefix("Layer7 wrong status") || reason.hasPrefix("Layer7 response does not match") { return "L7STS" }
        return "L7RSP"
    }

    /// `NOLB` begins: logged as HAProxy logs a server that is stopping.
    func stopping(duration: Int64, reason: String = "Layer7 check conditionally passed", code: Int? = 404) {
        let (active, backups) = backend.usableCounts()
        let line = "Server \(backend.name)/\(server.name) is stopping, reason: \(Self.withCode(reason, code)), check duration: \(duration)ms. \(active) active and \(backups) backup servers online. 0 sessions requeued, 0 total in queue."
        context.model.logger.alert(line, level: .notice, to: context.model.logger.destinations(for: backend.settings.logs))
    }

    /// `error-limit` errors in a row in the server's traffic (`observe`): `on-error`, as
    /// HAProxy does it (`HANA`, "Health analyze"), then the next check after `fastinter`.
    func observedErrors(_ info: String) {
        guard !stopped else { return }
        let o = options
        if o.onError != .fastInter {
            if o.onError == .suddenDeath { failures = max(failures, o.fall - 2) }
            if o.onError == .markDown { failures = max(failures, o.fall - 1) }
            failures += 1
            successes = 0
            let up = isUp && failures < o.fall
            server.lastCheck.withLock { r in
                r.status = "HANA"
                r.code = nil
                r.description = "Health analyze"
                r.info = info
                r.failures += 1
                r.health = up ? o.rise + o.fall - 1 - failures : 0
            }
            lastSummary = nil
            if isUp && failures >= o.fall { transition(up: false, reason: "Health analyze, info: \"\(info)\"", code: nil, duration: nil) }
        }
        let soon = context.loop.now + Int64(o.fastInter ?? o.inter)
        if !inProgress && soon < deadline { context.loop.setDeadline(self, soon) }
    }

    func transition(up: Bool, reason: String, code: Int?, duration: Int64?) {
        if !up { server.setNoLoadBalancing(false) }
        server.setUp(up)
        if !up { server.lastCheck.withLock { $0.downTransitions += 1 } }
        server.upSince.store(up ? max(1, context.loop.now) : 0, ordering: .relaxed)
        let (active, backups) = backend.usableCounts()
        var line = "Server \(backend.name)/\(server.name) is \(up ? "UP" : "DOWN"), reason: \(Self.withCode(reason, code))"
        if let duration { line += ", check duration: \(duration)ms" }
        line += ". \(active) active and \(backups) backup servers \(up ? "online" : "left")."
        if !up { line += " \(server.active.load(ordering: .relaxed)) sessions active, 0 requeued, 0 remaining in queue." }
        context.model.logger.alert(line, level: up ? .notice : .alert, to: context.model.logger.destinations(for: backend.settings.logs))
        // `on-marked-down shutdown-sessions`, `on-marked-up shutdown-backup-sessions`.
        if !up && options.shutdownSessionsWhenDown { context.model.shutdownSessionsOf?(server) }
        if up && options.shutdownBackupSessionsWhenUp && !server.isBackup {
            for b in backend.servers where b.isBackup { context.model.shutdownSessionsOf?(b) }
        }
        if !up && active == 0 && backups == 0 {
            // HAProxy names a listen section a proxy here.
            let alert = "\(backend.definition.kind == .listen ? "proxy" : "backend") \(backend.name) has no server available!"
            context.model.logger.alert(alert, level: .emergency, to: context.model.logger.destinations(for: backend.settings.logs))
        }
        // A slot may now be usable elsewhere: wake queued requests.
        if up { backend.slotFreed() }
    }
}


/// A `connect` rule's settings, held by reference: a check reads them at every run without
/// copying the rule (its strings, ALPN list and port expression). ALPN is in wire form.
final class ConnectRule {
    let port: Int?
    let portExpression: SampleExpression?
    let address: IPAddress?
    let ssl: Bool
    let sni: String?
    let alpn: [UInt8]?
    let sendProxy: Bool
    let serverDefaults: Bool

    init(_ c: TCPCheck.Connect) {
        port = c.port
        portExpression = c.portExpression
        address = c.address
        ssl = c.ssl
        sni = c.sni
        alpn = c.alpn.map { ServerTLS.wire($0) }
        sendProxy = c.sendProxy
        serverDefaults = c.serverDefaults
    }
}
