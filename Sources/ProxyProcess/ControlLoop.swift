import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// The main thread once serving: its own epoll over the signalfd, the engine's doorbells,
/// the handover endpoint and the stats sockets. It turns signals and successors' requests
/// into engine commands, never blocks for long, and returns the exit status when the last
/// data loop has ended. The data loops never see a signal.
struct ControlLoop {
    let engine: ProxyEngine
    let signals: SignalFD
    let epoll: Epoll
    let configuration: Configuration
    let endpoint: HandoverEndpoint?
    let runtimeAPI: RuntimeAPIServer
    /// Channels to the old processes this one replaced: each sends its final counter deltas
    /// when it exits, then closes.
    var predecessors: [(fd: FileDescriptor, reader: Handover.FrameReader)] = []
    /// Under -W: the master's order channel (a SOCK_SEQPACKET pair): `U` soft stop, `T` stop,
    /// `S` a routed CLI connection; end of file: the master is gone.
    var masterPipe: FileDescriptor?

    enum Token {
        static let signals: UInt64 = 1
        static let finished: UInt64 = 2
        static let stoppedAccepting: UInt64 = 3
        static let handover: UInt64 = 4
        static let queries: UInt64 = 5
        static let master: UInt64 = 6
        static let children: UInt64 = 7
        /// A predecessor's channel: this plus its descriptor (inside the channel range, so
        /// matched first).
        static let predecessor: UInt64 = 1 << 36
        /// A successor's channel: this plus its descriptor.
        static let channel: UInt64 = 1 << 32
    }

    func run() -> Int32 {
        runtimeAPI.register(in: epoll)
        try? epoll.add(signals.fd, events: Epoll.readable, token: Token.signals)
        try? epoll.add(engine.finished.fd, events: Epoll.readable, token: Token.finished)
        try? epoll.add(engine.stoppedAccepting.fd, events: Epoll.readable, token: Token.stoppedAccepting)
        try? epoll.add(engine.queries.doorbell.fd, events: Epoll.readable, token: Token.queries)
        if let bell = ChildProcesses.doorbell { try? epoll.add(bell.fd, events: Epoll.readable, token: Token.children) }
        var masterOrders = masterPipe
        if let m = masterOrders {
            try? Socket.setNonBlocking(m)
            try? epoll.add(m, events: Epoll.readable | Epoll.readHangup, token: Token.master)
        }
        if let e = endpoint { try? epoll.add(e.fd, events: Epoll.readable, token: Token.handover) }
        var readers: [Int32: Handover.FrameReader] = [:]
        for p in predecessors {
            readers[p.fd.rawValue] = p.reader
            try? epoll.add(p.fd, events: Epoll.readable | Epoll.readHangup, token: Token.predecessor + UInt64(p.fd.rawValue))
        }
        /// Reads a predecessor's channel: its deltas are added; at `end` or EOF it is closed.
        func readPredecessor(_ raw: Int32) {
            guard var reader = readers[raw] else { return }
            let fd = FileDescriptor(rawValue: raw)
            var ended = false
            while true {
                guard let r = try? UnixSocket.receive(fd) else { break }
                for extra in r.1 { FileDescriptor(rawValue: extra).close() }
                if r.0.isEmpty { ended = true; break }
                reader.feed(r.0, fds: [])
            }
            while let text = try? reader.next() {
                let lines = text.split(separator: "\n").map(String.init)
                RuntimeState.applyDeltas(lines, to: engine.model)
                if lines.last == "end" { ended = true }
            }
            readers[raw] = reader
            if ended {
                epoll.remove(fd)
                fd.close()
                readers[raw] = nil
            }
        }
        var events = [EpollEvent](repeating: EpollEvent(), count: 16)
        var softStopping = false
        var hardDeadline: UInt64?
        /// `grace`: a SIGUSR1 waits this long, still accepting, before the soft stop begins.
        var graceDeadline: UInt64?
        func beginSoftStop(afterGrace: Bool = false, bound: Int? = nil) {
            // Repeated SIGUSR1 (or stop) does nothing more.
            guard !softStopping else { return }
            if afterGrace, graceDeadline == nil, let grace = configuration.global.grace, grace > 0 {
                engine.model.stopping.store(true, ordering: .relaxed)
                graceDeadline = Clock.monotonicNanoseconds() + UInt64(grace) * 1_000_000
                return
            }
            graceDeadline = nil
            softStopping = true
            engine.softStop()
            runtimeAPI.closeListeners(epoll: epoll)
            if let after = configuration.global.hardStopAfter ?? bound {
                hardDeadline = Clock.monotonicNanoseconds() + UInt64(after) * 1_000_000
            }
        }
        /// PID 1 (a container's init): SIGTERM is what runtimes send to stop, so it drains,
        /// bounded by hard-stop-after (30 s when unset); every other signal is ours to handle.
        let isInit = ProcessCalls.pid == 1
        // Frames that came with `stopped`, already read.
        for p in predecessors { readPredecessor(p.fd.rawValue) }
        let sockets = { engine.listeners.map { (fd: $0.fd.rawValue, hint: "listener " + Handover.encode($0.key)) } + runtimeAPI.handoverSockets }
        let states = { () -> [String] in
            var lines: [String] = []
            for (_, b) in engine.model.backends {
                for s in b.servers { lines.append("server \(b.name) \(s.name) \(s.isUp.load(ordering: .relaxed) ? "up" : "down")") }
            }
            return lines + RuntimeState.lines(engine.model) + TLSResumption.stateLines()
        }
        while engine.runningLoops > 0 {
            var timeout: Int32 = 1000
            for d in [hardDeadline, graceDeadline].compactMap({ $0 }) {
                let now = Clock.monotonicNanoseconds()
                timeout = min(timeout, d <= now ? 0 : Int32(min((d - now) / 1_000_000 + 1, 1000)))
            }
            let n = events.withUnsafeMutableBufferPointer { epoll.wait($0.baseAddress!, capacity: 16, timeoutMilliseconds: timeout) }
            for i in 0..<n {
                let token = events[i].data.u64
                switch token {
                case Token.signals:
                    while let sig = signals.next() {
                        switch sig {
                        case SIGUSR1: beginSoftStop(afterGrace: true)
                        case SIGTERM where isInit: beginSoftStop(bound: 30_000)
                        case SIGTERM, SIGINT: engine.hardStop()
                        case SIGCHLD: ChildProcesses.reap()
                        case SIGTTOU: engine.pauseAccepting()
                        case SIGTTIN: engine.resumeAccepting()
                        default: break
                        }
                    }
                case Token.finished:
                    engine.finished.drain()
                case Token.queries:
                    engine.queries.runAnswered()
                case Token.children:
                    ChildProcesses.runRequests()
                case Token.master:
                    // Orders, one per message: `U` soft stop, `T` stop, `S` + level with a
                    // CLI connection the master routes here; end of file: the master is gone.
                    guard let m = masterOrders else { break }
                    while true {
                        let message: ([UInt8], [Int32])
                        do { message = try UnixSocket.receive(m, capacity: 64) } catch let e as SystemError where e.code == EAGAIN {
                            break
                        } catch { message = ([], []) }
                        let (bytes, fds) = message
                        if bytes.first == UInt8(ascii: "S"), bytes.count == 2, fds.count == 1, let level = AccessLevel(rawValue: Int(bytes[1])) {
                            runtimeAPI.adopt(FileDescriptor(rawValue: fds[0]), level: level, epoll: epoll)
                            continue
                        }
                        for fd in fds { FileDescriptor(rawValue: fd).close() }
                        if bytes == [UInt8(ascii: "U")] {
                            beginSoftStop(afterGrace: true)
                            continue
                        }
                        // `T`, or the master gone: stop now.
                        epoll.remove(m)
                        m.close()
                        masterOrders = nil
                        engine.hardStop()
                        break
                    }
                case Token.stoppedAccepting:
                    engine.stoppedAccepting.drain()
                    endpoint?.acknowledgeStops()
                case Token.handover:
                    for channel in endpoint?.acceptAll() ?? [] {
                        try? epoll.add(channel, events: Epoll.readable | Epoll.readHangup, token: Token.channel + UInt64(channel.rawValue))
                    }
                case Token.predecessor..<Token.predecessor + (1 << 32):
                    readPredecessor(Int32(truncatingIfNeeded: token - Token.predecessor))
                case Token.channel..<RuntimeAPIServer.listenerToken:
                    guard let endpoint else { break }
                    let fd = FileDescriptor(rawValue: Int32(truncatingIfNeeded: token - Token.channel))
                    switch endpoint.readable(fd, sockets: sockets, serverStates: states) {
                    case .stop:
                        // The acknowledgement goes out once no loop accepts any more.
                        beginSoftStop()
                        if engine.acceptingStopped { endpoint.acknowledgeStops() }
                    case .closed:
                        epoll.remove(fd)
                    case .none, .answered:
                        break
                    }
                default:
                    _ = runtimeAPI.handle(token: token, events: events[i].events, epoll: epoll)
                }
            }
            let now = Clock.monotonicNanoseconds()
            for fd in endpoint?.expire(now: now) ?? [] { epoll.remove(fd) }
            runtimeAPI.expire(epoll: epoll)
            engine.queries.runAnswered()
            // Indexes replaced by map and ACL changes, once no loop can hold them.
            Quiescence.shared.reclaim()
            if let d = graceDeadline, now >= d { beginSoftStop() }
            if let d = hardDeadline, now >= d {
                hardDeadline = nil
                engine.hardStop()
            }
        }
        engine.join()
        runtimeAPI.closeListeners(epoll: epoll)
        // A successor that asked just before the last loop ended still hears `stopped`.
        endpoint?.acknowledgeStops()
        // Counters stay exact across reloads: what the older processes still count comes in
        // as they exit, so wait for them (bounded by hard-stop-after when set), then hand
        // everything counted since the successor's snapshot to the newest successor. No new
        // successor is taken meanwhile (it is refused at once and signals this process
        // instead), and the wait watches only the predecessors and the signals.
        endpoint?.closeListener()
        let waitUntil = configuration.global.hardStopAfter.map { Clock.monotonicNanoseconds() + UInt64($0) * 1_000_000 }
        let waiting = try? Epoll()
        if let waiting {
            try? waiting.add(signals.fd, events: Epoll.readable, token: Token.signals)
            for raw in readers.keys {
                try? waiting.add(FileDescriptor(rawValue: raw), events: Epoll.readable | Epoll.readHangup, token: Token.predecessor + UInt64(raw))
            }
        }
        while !readers.isEmpty, let waiting {
            if let w = waitUntil, Clock.monotonicNanoseconds() >= w { break }
            let n = events.withUnsafeMutableBufferPointer { waiting.wait($0.baseAddress!, capacity: 16, timeoutMilliseconds: 1000) }
            for i in 0..<n {
                let token = events[i].data.u64
                if token >= Token.predecessor && token < Token.predecessor + (1 << 32) {
                    readPredecessor(Int32(truncatingIfNeeded: token - Token.predecessor))
                } else if token == Token.signals {
                    // SIGTERM or SIGINT while waiting: stop waiting.
                    while let sig = signals.next() { if sig == SIGTERM || sig == SIGINT { readers.removeAll() } }
                }
            }
        }
        endpoint?.sendFinalDeltas { RuntimeState.deltaLines(since: $0, engine.model) }
        endpoint?.close()
        waiting?.fd.close()
        return 0
    }
}
