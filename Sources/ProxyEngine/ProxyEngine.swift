import ProxyConfig
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// The data plane: `nbthread` event loops, each on its own thread, sharing the listeners.
/// It takes commands (stop accepting, soft stop, hard stop) and knows nothing of processes.
public final class ProxyEngine: @unchecked Sendable {
    public let model: RuntimeModel
    public let listeners: [Listener]
    /// The certificates the listeners serve, replaceable at run time (`set ssl cert`).
    public let certificates: CertificateStore
    let loops: [EventLoop]
    var contexts: [LoopContext] = []
    private var threads: [pthread_t] = []
    /// Rung by each loop as it exits.
    public let finished: EventFD
    /// Rung once every loop has stopped accepting (after `softStop`).
    public let stoppedAccepting: EventFD
    private let running = Atomic<Int>(0)
    /// Questions to every loop (`show sess`), answered on the control thread.
    public let queries: LoopQueries
    /// Loops that have stopped accepting (after `softStop`).
    private let notAccepting = Atomic<Int>(0)

    /// True once every loop has stopped accepting.
    public var acceptingStopped: Bool { notAccepting.load(ordering: .acquiring) >= loops.count }

    public init(model: RuntimeModel, listeners: [Listener], threads: Int) throws {
        self.model = model
        self.listeners = listeners
        certificates = CertificateStore(listeners: listeners)
        var loops: [EventLoop] = []
        for i in 0..<max(1, threads) {
            let loop = try EventLoop(index: i, bufferSize: model.configuration.global.bufferSize)
            loop.buffers.trimsMemory = !model.configuration.global.noMemoryTrimming
            loops.append(loop)
        }
        self.loops = loops
        finished = try EventFD()
        queries = try LoopQueries()
        stoppedAccepting = try EventFD()
        let frontends = Dictionary(model.frontends.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        // The first loop accepts, and hands connections to every loop in turn.
        for loop in loops { contexts.append(LoopContext(loop: loop, model: model)) }
        let accepting = contexts[0]
        for context in contexts.dropFirst() { context.acceptingContext = accepting }
        for l in listeners {
            guard let f = frontends[l.frontendName] else { continue }
            // An inherited socket may come from a frontend the old process had disabled (shut
            // for reading): listening again revives it, and changes nothing on a live one.
            if l.isTCP && !f.disabled.load(ordering: .relaxed) {
                try? Socket.listen(l.fd, backlog: Int32(clamping: l.options.backlog ?? f.backlog))
            } else if l.isTCP, (try? Socket.option(l.fd, level: SOL_SOCKET, name: SO_ACCEPTCONN)) == 1 {
                // Carried over as disabled: a listener bound fresh refuses like the others. Only
                // a listening socket is shut: shutting a shut one again leaves it unable to
                // listen (the kernel marks it disconnecting).
                _ = Glibc.shutdown(l.fd.rawValue, Int32(SHUT_RD))
            }
            let a = Acceptor(listener: l, frontend: f, context: accepting)
            if contexts.count > 1 { a.handOffTo = contexts }
            try a.start()
            accepting.acceptors.append(a)
        }
        // Health checks and agent checks: each on one loop in turn, the first ones spread over
        // their interval.
        spread(where: { $0.check }) { s, b, context, position, count in
            let check = HealthCheck(server: s, backend: b, context: context)
            context.checks.append(check)
            // `observe`: the errors any loop counts act on the check's own loop.
            if s.observedLayer != nil {
                let loop = context.loop
                nonisolated(unsafe) let target = check
                s.onObservedErrors = { info in loop.post { target.observedErrors(info) } }
            }
            check.start(offset: spreadSpan(s.definition.options.inter) * position / count)
        }
        spread(where: { $0.agentCheck }) { s, b, context, position, count in
            let agent = AgentCheck(server: s, backend: b, context: context)
            context.agents.append(agent)
            agent.start(offset: spreadSpan(s.definition.options.agentInter ?? s.definition.options.inter) * position / count)
        }
        // Run-time resolution: each `resolvers` section its servers use, on one loop.
        for (i, definition) in model.configuration.resolvers.enumerated() {
            var followers: [(Server, Backend)] = []
            for (_, b) in model.backends.sorted(by: { $0.key < $1.key }) {
                for s in b.servers where s.definition.options.resolvers == definition.name { followers.append((s, b)) }
            }
            guard !followers.isEmpty else { continue }
            let context = contexts[i % contexts.count]
            let r = Resolvers(definition: definition, servers: followers, context: context)
            context.resolvers.append(r)
            r.start()
        }
    }

    /// How long the first checks of servers checked every `inter` are spread over: that
    /// interval, or `max-spread-checks` when it is shorter.
    private func spreadSpan(_ inter: Int) -> Int64 {
        // 0, as in HAProxy: no cap.
        let cap = model.configuration.global.maxSpreadChecks.flatMap { $0 > 0 ? $0 : nil } ?? inter
        return Int64(min(inter, cap))
    }

    /// Hands each server whose options `include` selects (backends by name) to a loop in turn:
    /// `make` gets the server, its backend, the loop, its position and how many there are.
    private func spread(where include: (ServerOptions) -> Bool, _ make: (Server, Backend, LoopContext, Int64, Int64) -> Void) {
        var all: [(Server, Backend)] = []
        for (_, b) in model.backends.sorted(by: { $0.key < $1.key }) {
            for s in b.servers where include(s.definition.options) { all.append((s, b)) }
        }
        for (i, (s, b)) in all.enumerated() {
            make(s, b, contexts[i % contexts.count], Int64(i), Int64(max(1, all.count)))
        }
    }

    /// Starts one thread per loop.
    public func start() throws {
        model.shutdownSessionsOf = { [unowned self] server in self.shutdownSessions(server: server) }
        for (i, loop) in loops.enumerated() {
            running.add(1, ordering: .relaxed)
            let context = contexts[i]
            threads.append(try Threads.start { [self] in
                _ = context
                loop.run()
                running.subtract(1, ordering: .relaxed)
                finished.signal()
            })
        }
    }

    /// Loops still running.
    public var runningLoops: Int { running.load(ordering: .relaxed) }

    /// Soft stop: stop accepting, answer in-flight requests with `Connection: close`, let
    /// idle keep-alive connections end at their next request or their keep-alive timeout,
    /// and end each loop once its last connection is gone.
    public func softStop() {
        model.stopping.store(true, ordering: .relaxed)
        // The accepting loop stops first, then tells the others: a connection it handed over
        // before stopping is ahead of that word in their mailboxes, so none is left behind.
        loops[0].post { [self] in
            softStopLoop(0)
            for i in loops.indices.dropFirst() { loops[i].post { [self] in softStopLoop(i) } }
        }
    }

    private func softStopLoop(_ i: Int) {
        let loop = loops[i], context = contexts[i]
        for a in context.acceptors { a.stop() }
        if notAccepting.add(1, ordering: .acquiringAndReleasing).newValue == loops.count { stoppedAccepting.signal() }
        for c in context.checks { c.stop() }
        for r in context.resolvers { r.stop() }
        for a in context.agents { a.stop() }
        context.pool.closeAll()
        context.onSessionClosed = { if context.sessions == 0 { loop.stop() } }
        if context.sessions == 0 { loop.stop() }
    }

    /// Stops accepting on every loop, without stopping (pause; SIGTTOU).
    public func pauseAccepting() {
        for (i, loop) in loops.enumerated() {
            let context = contexts[i]
            loop.post {
                context.adminPaused = true
                for a in context.acceptors where !a.paused { a.pause() }
            }
        }
    }

    /// `disable frontend` / `enable frontend`: a disabled frontend's TCP listeners refuse
    /// connections (shut for reading, as HAProxy pauses them) and are not polled; enabling
    /// listens again. False when it already was in that state, nil while soft-stopping.
    public func setFrontend(_ frontend: Frontend, enabled: Bool) -> Bool? {
        // A process that is stopping shares its sockets with its successor: not its call.
        guard !model.stopping.load(ordering: .relaxed) else { return nil }
        guard frontend.disabled.compareExchange(expected: enabled, desired: !enabled, ordering: .acquiringAndReleasing).exchanged else {
            return false
        }
        let mine = listeners.filter { $0.frontendName == frontend.name }
        if !enabled {
            for l in mine where l.isTCP { _ = Glibc.shutdown(l.fd.rawValue, Int32(SHUT_RD)) }
        } else {
            for l in mine where l.isTCP { try? Socket.listen(l.fd, backlog: Int32(clamping: l.options.backlog ?? frontend.backlog)) }
        }
        let context = contexts[0]
        contexts[0].loop.post {
            for a in context.acceptors where a.frontend === frontend {
                if enabled {
                    context.pausedAcceptors.removeAll { $0 === a }
                    a.resumeAccepting()
                } else {
                    a.pause()
                }
            }
        }
        return true
    }

    /// A limit was raised (`set maxconn`): acceptors paused at the old one go on.
    public func limitsChanged() {
        let context = contexts[0]
        contexts[0].loop.post { context.resumePausedAcceptors() }
    }

    /// Resumes accepting after `pauseAccepting` (SIGTTIN).
    public func resumeAccepting() {
        for (i, loop) in loops.enumerated() {
            let context = contexts[i]
            loop.post {
                context.adminPaused = false
                let list = context.pausedAcceptors
                context.pausedAcceptors.removeAll()
                for a in list { a.resumeAccepting() }
            }
        }
    }

    /// Evaluates an expression that needs no request (constants, the environment, process
    /// state, `proc.` variables, with converters): the runtime API's `set var`.
    public func evaluateProcessExpression(_ e: SampleExpression) -> SampleValue? {
        var value: SampleValue?
        _ = ProcessSamples.visit(e.fetch, model: model, backend: nil) { raw in
            guard let (v, fold) = e.convert(raw) else { return false }
            value = SampleValue(v, fold: fold)
            return true
        }
        return value
    }

    /// Closes every connection using `server` now, on each loop (`shutdown sessions server`):
    /// logged with the `K` termination flag, as HAProxy does.
    public func shutdownSessions(server: Server) {
        for (i, loop) in loops.enumerated() {
            let context = contexts[i]
            loop.post {
                for (_, s) in context.openSessions {
                    if let h = s as? HTTPTransaction, h.slotServer === server || h.server?.server === server {
                        h.terminationState = "KD"
                        if h.responseStarted { h.logTransaction() }
                        h.close()
                    } else if let t = s as? TCPStream, t.triedServer === server {
                        t.close()
                    }
                }
            }
        }
    }

    /// Hard stop: close every connection now and end the loops.
    public func hardStop() {
        model.stopping.store(true, ordering: .relaxed)
        for (i, loop) in loops.enumerated() {
            let context = contexts[i]
            loop.post {
                for a in context.acceptors { a.stop() }
                for c in context.checks { c.stop() }
                for r in context.resolvers { r.stop() }
                for a in context.agents { a.stop() }
                for (_, s) in context.openSessions {
                    if let h = s as? HTTPTransaction { h.close() } else if let t = s as? TCPStream { t.close() }
                    else if let p = s as? ProxyProtocolReceiver { p.close() }
                    else if let c = s as? ContentInspector { c.close() }
                }
                context.pool.closeAll()
                loop.stop()
            }
        }
    }

    public func join() {
        for t in threads { Threads.join(t) }
        threads.removeAll()
    }
}
