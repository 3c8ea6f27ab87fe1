import ProxyConfig
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// Accepts connections on one listening socket. The first loop accepts for every loop and
/// hands each connection to the next loop in turn through its mailbox, as HAProxy's
/// accepting thread does. Measured against every loop polling the socket with
/// EPOLLEXCLUSIVE (nbthread 2, `Connection: close`, 5 alternating rounds): 13.3k against
/// 12.0k req/s, at 59.5 against 63.2 us of CPU per request.
///
/// Admission: before each accept, a slot is reserved (compare-and-swap) under the global
/// `maxconn`, the frontend's and this listener's (`bind ... maxconn`), so no limit is ever
/// exceeded whatever loop the connection ends up on; the slot is released when the
/// connection ends. Accept errors each have a policy, as HAProxy's: out of descriptors or
/// memory pauses the listener until a connection closes or 100 ms pass, logged once.
final class Acceptor: LoopObject {
    let listener: Listener
    let frontend: Frontend
    unowned(unsafe) let context: LoopContext
    var paused = false
    var stopped = false
    /// The loops this acceptor hands connections to, in turn (empty: it keeps them).
    var handOffTo: [LoopContext] = []
    var nextTarget = 0
    /// Connections accepted here and still open (`bind ... maxconn`).
    let active = Atomic<Int>(0)
    let limit: Int
    /// `bind ... ssl`: its certificates, whose current context each connection reads (kept
    /// here, not copied out of the listener's options each time).
    let tls: TLSBinding?
    /// `accept-proxy`.
    let acceptsProxy: Bool
    /// When the last "out of descriptors" line was logged, to log once per episode.
    var lastResourceAlarmMs: Int64 = .min / 2

    init(listener: Listener, frontend: Frontend, context: LoopContext) {
        self.listener = listener
        self.frontend = frontend
        self.context = context
        limit = listener.options.maxconn ?? .max
        tls = listener.tls
        acceptsProxy = listener.options.acceptProxy
    }

    static let events = Epoll.readable

    func start() throws {
        // A frontend disabled before a reload stays so: its socket refuses, nothing polls it.
        if frontend.disabled.load(ordering: .relaxed) { paused = true; return }
        try context.loop.register(listener.fd, events: Self.events, object: self)
    }

    /// Stops accepting on this loop (soft stop). The socket itself stays open: it may have
    /// been handed to a new process.
    func stop() {
        guard !stopped else { return }
        stopped = true
        context.loop.clearDeadline(self)
        if !paused { context.loop.unregister(listener.fd) }
    }

    /// Takes `count` slots of `counter` without passing `limit`, or none.
    @inline(__always)
    static func reserve(_ counter: borrowing Atomic<Int>, below limit: Int, count: Int = 1) -> Bool {
        var current = counter.load(ordering: .relaxed)
        while current + count <= limit {
            let (exchanged, original) = counter.compareExchange(expected: current, desired: current + count, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Reserves a connection slot at every level, or none at all.
    func reserveSlot() -> Bool {
        let model = context.model
        guard Self.reserve(model.activeConnections, below: model.connectionLimit.load(ordering: .relaxed)) else { return false }
        guard Self.reserve(frontend.active, below: frontend.maxconn.load(ordering: .relaxed)) else {
            model.activeConnections.subtract(1, ordering: .relaxed)
            return false
        }
        guard Self.reserve(active, below: limit) else {
            model.activeConnections.subtract(1, ordering: .relaxed)
            frontend.active.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Gives a slot back (a connection ended, or an accept brought nothing).
    func releaseSlot() {
        context.model.activeConnections.subtract(1, ordering: .relaxed)
        frontend.active.subtract(1, ordering: .relaxed)
        active.subtract(1, ordering: .relaxed)
    }

    override func handle(events: UInt32) {
        guard !stopped, !paused else { return }
        for _ in 0..<32 {
            guard reserveSlot() else {
                pause()
                return
            }
            let accepted: IOResult<(FileDescriptor, SocketAddress)>
            do {
                accepted = try Socket.accept(listener.fd)
            } catch let e as SystemError {
                releaseSlot()
                acceptFailed(e.code)
                return
            } catch {
                releaseSlot()
                return
            }
            guard case .done(let (fd, address)) = accepted else {
                releaseSlot()
                return
            }
            if !handOffTo.isEmpty {
                let target = handOffTo[nextTarget % handOffTo.count]
                nextTarget &+= 1
                if target !== context {
                    nonisolated(unsafe) let a = self
                    target.loop.post { target.accepted(fd: fd, client: address, acceptor: a) }
                    continue
                }
            }
            context.accepted(fd: fd, client: address, acceptor: self)
        }
    }

    /// An accept error's policy, as HAProxy's `sock_accept_conn`: out of descriptors or
    /// memory pauses the listener for 100 ms (or until a connection closes), logged once
    /// per episode; an aborted connection is skipped; anything else pauses too, so that a
    /// level-triggered listener can never spin.
    func acceptFailed(_ code: Int32) {
        switch code {
        case ECONNABORTED, EINTR, EPROTO:
            context.loop.runAgain(self)
            return
        case EMFILE, ENFILE, ENOBUFS, ENOMEM:
            let now = context.loop.now
            if now - lastResourceAlarmMs > 10_000 {
                lastResourceAlarmMs = now
                let what = code == EMFILE ? "process FD limit (ulimit-n)" : code == ENFILE ? "system FD limit" : "system memory limit"
                context.model.logger.alert("Proxy \(frontend.name) reached \(what) while accepting on \(listener.key); pausing the listener for 100 ms or until a connection closes", level: .emergency, to: frontend.logDestinations)
            }
        default:
            break
        }
        pause()
        context.loop.setDeadline(self, context.loop.now + 100)
    }

    /// Resumed after 100 ms of an accept-error pause.
    override func timerFired() {
        guard paused, !stopped, !context.adminPaused else { return }
        context.pausedAcceptors.removeAll { $0 === self }
        resumeAccepting()
    }

    /// After `runAgain` (an aborted connection): accept the next one.
    override func resume() {
        handle(events: Epoll.readable)
    }

    /// A limit reached, or an accept error: stop polling until a connection closes.
    func pause() {
        guard !paused, !stopped else { return }
        paused = true
        context.loop.unregister(listener.fd)
        context.pausedAcceptors.append(self)
        context.acceptorsPaused.store(true, ordering: .relaxed)
    }

    func resumeAccepting() {
        guard paused, !stopped, !frontend.disabled.load(ordering: .relaxed) else { return }
        paused = false
        context.loop.clearDeadline(self)
        try? context.loop.register(listener.fd, events: Self.events, object: self)
        // Level-triggered: anything waiting in the queue wakes the loop again at once.
    }
}

extension Array where Element == Rule<TCPRequestAction> {
    /// The first `accept` or `reject` whose condition holds decides (true: reject); an
    /// `expect-proxy layer4` that holds before it asks for a PROXY header. Operations
    /// (`set-var`, `capture`) go to `perform`, which may change what later rules read.
    func evaluate<C: SampleContext>(_ samples: inout C, perform: (TCPRequestAction.Operation, inout C) -> Void) -> (reject: Bool, expectProxy: Bool) {
        var expectProxy = false
        for rule in self where rule.guardState.allows(samples) {
            if let op = rule.action.operation { perform(op, &samples); continue }
            switch rule.action.verdict {
            case .expectProxy?: expectProxy = true
            case .accept?: return (false, expectProxy)
            case .reject?: return (true, expectProxy)
            case nil: break
            }
        }
        return (false, expectProxy)
    }

    func evaluate<C: SampleContext>(_ samples: C) -> (reject: Bool, expectProxy: Bool) {
        var s = samples
        return evaluate(&s) { _, _ in }
    }
}

extension Array where Element == Rule<TCPRequestAction> {
    /// The `set-var-fmt` formats of these rules, compiled once, by their text.
    var compiledFormats: [String: LogFormat] {
        var formats: [String: LogFormat] = [:]
        for r in self { if case .setVariableFormat(_, _, let f, _)? = r.action.operation { formats[f] = LogFormat(f) } }
        return formats
    }
}

extension TCPRequestAction.Operation {
    /// The sample an expression gives, owned (converters applied).
    static func value<C: SampleContext>(_ e: SampleExpression, _ samples: C) -> SampleValue? {
        var value: SampleValue?
        _ = samples.visitSamples(of: e.fetch) { raw in
            guard let (v, fold) = e.convert(raw) else { return false }
            value = SampleValue(v, fold: fold)
            return true
        }
        return value
    }

    /// A capture's text, cut to its length (as HAProxy cuts it).
    static func captured<C: SampleContext>(_ e: SampleExpression, length: Int, _ samples: C) -> [UInt8]? {
        guard let v = value(e, samples) else { return nil }
        return Array(v.text.prefix(length))
    }
}
