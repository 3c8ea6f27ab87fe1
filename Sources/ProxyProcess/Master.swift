import ProxyConfig
import ProxyControl
import ProxySystem
import Glibc

/// `-W` / `-Ws`: the master. It records the path of its own binary, checks the configuration,
/// and starts one worker: that binary, with the same configuration and environment file, in
/// the foreground, reporting its verdict on a pipe. A reload (SIGUSR2, SIGHUP, or `reload`
/// on the master CLI) starts a new worker from the recorded path (so an upgraded package
/// takes effect), which reads the configuration and the environment file afresh, takes the
/// listeners and the runtime state from the current worker over the handover, and reports;
/// only a worker that serves replaces the current one, and the master never re-executes
/// itself, so a bad configuration or binary leaves everything as it was. Reloads asked for
/// during one are merged into one more after it. A worker that dies unexpectedly is
/// replaced after 1 s, doubling to 60 s, and takes the listeners the master kept a copy of,
/// so none is closed meanwhile (connections wait in the backlog). The master runs no data
/// loop.
final class Master {
    struct Worker {
        let pid: Int32
        let startedAt: Int
        /// Reloads the master had done when this worker started.
        let generation: Int
        /// The master's end of the worker's order channel (a SOCK_SEQPACKET pair): the master
        /// stops a worker by writing to it (no signal, so no capability is needed when the
        /// worker runs as another user) and passes it routed CLI connections.
        let orders: FileDescriptor
        /// The read end of the worker's standard error, copied to the master's.
        let output: FileDescriptor?
    }

    /// Tells a worker to soft-stop (`U`) or stop (`T`).
    func order(_ w: Worker, _ letter: Character) {
        var byte = letter.asciiValue!
        _ = withUnsafeBytes(of: &byte) { try? w.orders.writeAll($0) }
    }

    let options: CommandLineOptions
    /// The worker's arguments: ours without the master's own options.
    let workerArguments: [String]
    let executable: String
    let startedAt = Clock.wallClock().seconds

    var current: Worker?
    var old: [Worker] = []
    var reloads = 0
    var failedReloads = 0
    var lastReloadOK = true
    var lastMessage = ""
    /// The worker being started, and its verdict pipe.
    var starting: (worker: Worker, verdict: FileDescriptor, isReload: Bool)?
    var reloadPending = false
    /// Reloads started so far (a CLI `reload` is answered by the first one started after it).
    var reloadStarts = 0
    /// When the last reload started: the next starts no sooner than `reloadSpacing` after it,
    /// so a burst of requests (consul-template, 20 `systemctl reload`) costs two reloads.
    var lastReloadStartedAt: UInt64 = 0
    static let reloadSpacing: UInt64 = 150_000_000
    var respawnAt: UInt64?
    var backoffSeconds: UInt64 = 1
    var stopping = false
    let notify: SystemdNotify?
    var cli: MasterCLI?
    /// What the worker being started wrote to its standard error: the `reload` answer's log.
    var startupLog: [UInt8] = []
    /// Output pipes by descriptor, to the worker's pid.
    var outputs: [Int32: Int32] = [:]
    /// -D: the started parent waits on this for the first worker's verdict.
    var daemonVerdict: FileDescriptor?
    /// PID 1: a SIGTERM drain hard-stops what is left at this time.
    var drainDeadline: UInt64?
    /// The listening sockets, as the serving worker holds them: a copy kept here so that a
    /// worker's death closes none of them; its replacement takes them.
    var held: [Int32] = []

    enum Token {
        static let signals: UInt64 = 1
        static let verdict: UInt64 = 2
        static let cli: UInt64 = 3
        /// A worker's standard error: this plus the descriptor.
        static let output: UInt64 = 1 << 34
    }

    /// `mworker-max-reloads` and `mworker-max-old-workers`, from the configuration at start.
    let maxReloads: Int
    let maxOldWorkers: Int
    /// `master-worker exit-on-failure`: a worker's unexpected death ends everything, with its
    /// status (HAProxy's behaviour), instead of a replacement.
    let exitOnFailure: Bool
    var exitStatus: Int32 = 0
    let cliSettings: MasterCLI.Settings?
    let daemon: Bool
    /// Socket-activated listeners (systemd), at 3, 4, ...: passed at the same numbers to a
    /// first worker and to a replacement; a reload's worker takes them over the handover.
    let activated: [Int32]
    /// -p, or `pidfile`: the master's pid.
    let pidFile: String?
    /// `hard-stop-after`, which bounds a PID 1 drain.
    let hardStopAfter: Int?

    init(options: CommandLineOptions, arguments: [String], executable: String, maxReloads: Int = 50, maxOldWorkers: Int = 8,
         exitOnFailure: Bool = false, cli: MasterCLI.Settings? = nil, daemon: Bool = false, activated: [Int32] = [], hardStopAfter: Int? = nil, pidFile: String? = nil) {
        self.options = options
        self.pidFile = pidFile
        self.activated = activated
        self.hardStopAfter = hardStopAfter
        self.exitOnFailure = exitOnFailure
        self.cliSettings = cli
        self.daemon = daemon
        self.maxReloads = maxReloads
        self.maxOldWorkers = maxOldWorkers
        self.executable = executable
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            switch a {
            case "-W", "-Ws", "-D", "-db", "-d": break
            case "-S", "-p": i += 1
            case "-sf", "-st":
                while i + 1 < arguments.count, !arguments[i + 1].hasPrefix("-") { i += 1 }
            default: out.append(a)
            }
            i += 1
        }
        workerArguments = out
        notify = options.systemdNotify ? SystemdNotify() : nil
    }

    func log(_ text: String) { ProxyMain.printError("proxy master (pid \(ProcessCalls.pid)): \(text)\n") }

    // MARK: run

    func run() -> Int32 {
        if daemon {
            // -D: the parent stays until the first worker's verdict and exits with it; the
            // master goes on in a new session.
            do { daemonVerdict = try ProcessCalls.daemonize() } catch {
                ProxyMain.printError("proxy: cannot start the daemon: \(error)\n")
                return 1
            }
        }
        let signals: SignalFD
        let epoll: Epoll
        do {
            signals = try SignalFD(signals: [SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP, SIGCHLD, SIGPIPE, SIGTTOU, SIGTTIN])
            epoll = try Epoll()
            try epoll.add(signals.fd, events: Epoll.readable, token: Token.signals)
        } catch {
            ProxyMain.printError("proxy: cannot start the master: \(error)\n")
            return 1
        }
        if let settings = cliSettings {
            do {
                cli = try MasterCLI(settings, master: self)
                try epoll.add(cli!.listener, events: Epoll.readable, token: Token.cli)
            } catch {
                ProxyMain.printError("proxy: cannot open the master CLI socket '\(settings.path)': \(error)\n")
                return 1
            }
        }
        if let path = pidFile {
            do { try PidFile.prepare(path, pid: ProcessCalls.pid).change.publish() } catch {
                ProxyMain.printError("proxy: cannot write pidfile '\(path)': \(error)\n")
                cli?.close()
                return 1
            }
        }
        guard startWorker(replacing: nil, epoll: epoll) else {
            cli?.close()
            return 1
        }
        var events = [EpollEvent](repeating: EpollEvent(), count: 16)
        while true {
            if stopping && current == nil && old.isEmpty && starting == nil { break }
            var timeout: Int32 = 1000
            let now = Clock.monotonicNanoseconds()
            let pendingAt = reloadPending ? lastReloadStartedAt + Self.reloadSpacing : nil
            for d in [respawnAt, drainDeadline, pendingAt].compactMap({ $0 }) {
                timeout = min(timeout, Int32(min(1000, d > now ? (d - now) / 1_000_000 + 1 : 0)))
            }
            let n = events.withUnsafeMutableBufferPointer { epoll.wait($0.baseAddress!, capacity: 16, timeoutMilliseconds: timeout) }
            for i in 0..<n {
                let token = events[i].data.u64
                switch token {
                case Token.signals:
                    while let sig = signals.next() { handle(signal: sig, epoll: epoll) }
                case Token.verdict:
                    readVerdict(epoll: epoll)
                case Token.cli:
                    cli?.accept(epoll: epoll)
                case Token.output..<(Token.output + (1 << 32)):
                    readOutput(Int32(truncatingIfNeeded: token - Token.output), epoll: epoll)
                default:
                    _ = cli?.handle(token: token, events: events[i].events, epoll: epoll)
                }
            }
            cli?.expire(epoll: epoll)
            startPendingReload(epoll: epoll)
            if let r = respawnAt, Clock.monotonicNanoseconds() >= r, !stopping, starting == nil {
                respawnAt = nil
                _ = startWorker(replacing: nil, epoll: epoll)
            }
            if let d = drainDeadline, Clock.monotonicNanoseconds() >= d {
                drainDeadline = nil
                log("the drain's bound is reached; stopping the workers left")
                for w in [current, starting?.worker].compactMap({ $0 }) + old { order(w, "T") }
            }
        }
        notify?.send("STOPPING=1")
        for fd in held { FileDescriptor(rawValue: fd).close() }
        cli?.close()
        return exitStatus
    }

    // MARK: workers

    /// Spawns a worker; `replacing` names the one it takes over from (a reload).
    @discardableResult
    func startWorker(replacing: Worker?, epoll: Epoll) -> Bool {
        var opened: [FileDescriptor] = []
        func fail(_ error: Error) -> Bool {
            for fd in opened { fd.close() }
            log("cannot start a worker: \(error)")
            return false
        }
        let verdict: (read: FileDescriptor, write: FileDescriptor)
        let orders: (FileDescriptor, FileDescriptor)
        let output: (read: FileDescriptor, write: FileDescriptor)
        do {
            verdict = try Pipe.make(nonBlocking: true)
            opened += [verdict.read, verdict.write]
            orders = try UnixSocket.pair()
            opened += [orders.0, orders.1]
            output = try Pipe.make(nonBlocking: true)
            opened += [output.read, output.write]
        } catch {
            return fail(error)
        }
        // Descriptors 3, 4, ... : socket-activated listeners keep their numbers; then the
        // verdict, the orders, and (a replacement for a dead worker) the listeners kept here.
        let base = Int32(3 + activated.count)
        var args = [executable] + workerArguments + ["--worker-verdict-fd", String(base), "--master-pipe-fd", String(base + 1)]
        if ProcessCalls.pid == 1 { args.append("--logs-to-stdout") }
        var descriptors: [(from: Int32, to: Int32)] = replacing == nil ? activated.map { ($0, $0) } : []
        descriptors += [(verdict.write.rawValue, base), (orders.1.rawValue, base + 1), (output.write.rawValue, 2)]
        if daemon, let null = try? FileDescriptor.open("/dev/null", flags: O_RDWR) {
            // A daemon's workers hold no terminal: their standard error comes here anyway.
            opened.append(null)
            descriptors += [(null.rawValue, 0), (null.rawValue, 1)]
        }
        if let r = replacing {
            args += ["-sf", String(r.pid)]
        } else {
            let targets = held.indices.map { base + 2 + Int32($0) }
            descriptors += zip(held, targets).map { ($0, $1) }
            let inherited = activated + targets
            if !inherited.isEmpty { args += ["--inherit-fds", inherited.map(String.init).joined(separator: ",")] }
        }
        let pid: Int32
        do { pid = try ProcessCalls.spawn(executable, args, descriptors: descriptors) } catch {
            log("cannot start a worker from \(executable): \(error)")
            return fail(error)
        }
        for fd in opened where fd != verdict.read && fd != orders.0 && fd != output.read { fd.close() }
        let worker = Worker(pid: pid, startedAt: Clock.wallClock().seconds, generation: reloads, orders: orders.0, output: output.read)
        startupLog = []
        outputs[output.read.rawValue] = pid
        try? epoll.add(output.read, events: Epoll.readable | Epoll.readHangup, token: Token.output + UInt64(output.read.rawValue))
        starting = (worker, verdict.read, replacing != nil)
        try? epoll.add(verdict.read, events: Epoll.readable, token: Token.verdict)
        if replacing != nil {
            notify?.send("RELOADING=1\nMONOTONIC_USEC=\(Clock.monotonicNanoseconds() / 1000)\nSTATUS=Reloading")
        }
        return true
    }

    /// Copies what a worker wrote on its standard error to the master's, and keeps what the
    /// worker being started writes for the `reload` answer.
    func readOutput(_ raw: Int32, epoll: Epoll) {
        let fd = FileDescriptor(rawValue: raw)
        var chunk = [UInt8](repeating: 0, count: 8192)
        while true {
            let r = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0.baseAddress!, count: $0.count) }
            switch r {
            case .done(let n)? where n > 0:
                if let s = starting, outputs[raw] == s.worker.pid, startupLog.count < 64 * 1024 {
                    startupLog += chunk[0..<min(n, 64 * 1024 - startupLog.count)]
                }
                _ = chunk[0..<n].withUnsafeBytes { try? FileDescriptor.standardError.writeAll($0) }
            case .wouldBlock?:
                return
            default:
                epoll.remove(fd)
                fd.close()
                outputs[raw] = nil
                return
            }
        }
    }

    /// The worker being started said how it went (a byte: 0 serving), or died first.
    func readVerdict(epoll: Epoll) {
        guard let s = starting else { return }
        var byte: UInt8 = 1
        var n = -1
        do { n = try withUnsafeMutableBytes(of: &byte) { try s.verdict.read(into: $0) } } catch let e as SystemError where e.code == EAGAIN {
            return
        } catch {}
        epoll.remove(s.verdict)
        s.verdict.close()
        // What it wrote before its verdict is in its pipe already: read it for the answer.
        if let out = s.worker.output, outputs[out.rawValue] != nil { readOutput(out.rawValue, epoll: epoll) }
        starting = nil
        let ok = n == 1 && byte == 0
        finish(s.worker, ok: ok, isReload: s.isReload, epoll: epoll)
    }

    func finish(_ started: Worker, ok: Bool, isReload: Bool, epoll: Epoll) {
        if isReload { reloads += 1 }
        // A worker's reloads count from the generation it serves in.
        let worker = Worker(pid: started.pid, startedAt: started.startedAt, generation: reloads, orders: started.orders, output: started.output)
        let log = String(decoding: startupLog, as: UTF8.self)
        if ok {
            if let c = current { old.append(c) }
            current = worker
            backoffSeconds = 1
            holdListeners(of: worker)
            boundOldWorkers()
            lastReloadOK = true
            lastMessage = "worker \(worker.pid) serving, generation \(reloads)"
            self.log(isReload ? "reload \(reloads): \(lastMessage)" : lastMessage)
            if isReload || notify != nil {
                notify?.send("READY=1\nMAINPID=\(ProcessCalls.pid)\nSTATUS=Ready, generation \(reloads)")
            }
            if let d = daemonVerdict {
                var zero: UInt8 = 0
                _ = withUnsafeBytes(of: &zero) { try? d.writeAll($0) }
                d.close()
                daemonVerdict = nil
                try? ProcessCalls.detachStandardStreams(keepError: false)
            }
        } else {
            if isReload { failedReloads += 1 }
            lastReloadOK = false
            lastMessage = "worker \(worker.pid) did not start; \(current.map { "worker \($0.pid) serves on" } ?? "no worker serves")"
            self.log(isReload ? "reload \(reloads) failed: \(lastMessage)" : lastMessage)
            // The first error line says why, for systemctl status.
            let reason = log.split(separator: "\n").first { $0.contains("error") || $0.contains("cannot") }.map { ": " + $0 } ?? ""
            notify?.send("READY=1\nSTATUS=Reload \(reloads) failed\(reason)")
            order(worker, "T")
            if current == nil && !isReload && !stopping {
                // The first worker failed: nothing serves, so the master has nothing to do.
                stopping = true
                exitStatus = 1
            }
        }
        cli?.reloadFinished(ok: ok, message: log + (log.isEmpty || log.hasSuffix("\n") ? "" : "\n") + lastMessage, upTo: reloadStarts, epoll: epoll)
        startupLog = []
        // A reload asked for meanwhile starts from the run loop, once spaced.
    }

    /// Old workers past `mworker-max-reloads`, or beyond `mworker-max-old-workers` (the
    /// oldest first), are stopped at once, and the log says so.
    func boundOldWorkers() {
        var stopped = Set<Int32>()
        for w in old where reloads - w.generation >= maxReloads {
            log("old worker \(w.pid) has lived through \(reloads - w.generation) reloads (mworker-max-reloads \(maxReloads)); stopping it")
            order(w, "T")
            stopped.insert(w.pid)
        }
        let alive = old.filter { !stopped.contains($0.pid) }
        for w in alive.prefix(max(0, alive.count - maxOldWorkers)) {
            log("more than \(maxOldWorkers) old workers (mworker-max-old-workers); stopping the oldest, \(w.pid)")
            order(w, "T")
            stopped.insert(w.pid)
        }
        // A worker told to stop at once no longer counts (it is reaped when it exits).
        old.removeAll { stopped.contains($0.pid) }
    }

    /// Takes a copy of the serving worker's listening sockets over the handover (asking for
    /// them and never saying `stop`).
    func holdListeners(of worker: Worker) {
        for fd in held { FileDescriptor(rawValue: fd).close() }
        held = []
        guard var client = try? HandoverClient.collect(from: [worker.pid], timeoutMilliseconds: 2000) else {
            log("could not keep a copy of worker \(worker.pid)'s listeners; if it dies, its replacement binds them again")
            return
        }
        held = client.keepSocketsOnly()
    }

    func reload(epoll: Epoll) {
        guard !stopping else { return }
        if starting != nil || Clock.monotonicNanoseconds() < lastReloadStartedAt + Self.reloadSpacing {
            // Merged: one more reload after this one, however many were asked for.
            reloadPending = true
            return
        }
        startReload(epoll: epoll)
    }

    func startReload(epoll: Epoll) {
        reloadPending = false
        reloadStarts += 1
        lastReloadStartedAt = Clock.monotonicNanoseconds()
        if !startWorker(replacing: current, epoll: epoll) {
            // Nothing started (no descriptor left, say): a failed reload, said as such.
            failedReloads += 1
            lastReloadOK = false
            lastMessage = "the new worker could not be started; \(current.map { "worker \($0.pid) serves on" } ?? "no worker serves")"
            cli?.reloadFinished(ok: false, message: lastMessage, upTo: reloadStarts, epoll: epoll)
        }
    }

    /// Starts the merged reload once the last one is over and spaced.
    func startPendingReload(epoll: Epoll) {
        guard reloadPending, !stopping, starting == nil, Clock.monotonicNanoseconds() >= lastReloadStartedAt + Self.reloadSpacing else { return }
        startReload(epoll: epoll)
    }

    /// `reload` on the master CLI.
    func requestReload(epoll: Epoll) { reload(epoll: epoll) }

    /// A worker `@!PID` can reach: the serving one or an old one.
    func workerForRouting(_ pid: Int32) -> Worker? {
        ([current].compactMap { $0 } + old).first { $0.pid == pid }
    }

    func handle(signal: Int32, epoll: Epoll) {
        switch signal {
        case SIGUSR2, SIGHUP:
            reload(epoll: epoll)
        case SIGCHLD:
            while let (pid, status) = ProcessCalls.reapOne() { exited(pid, status: status, epoll: epoll) }
        case SIGTERM where ProcessCalls.pid == 1:
            // A container runtime's stop: drain, bounded by hard-stop-after (30 s unset).
            guard drainDeadline == nil else { break }
            stopping = true
            let bound = UInt64(hardStopAfter ?? 30_000)
            drainDeadline = Clock.monotonicNanoseconds() + bound * 1_000_000
            log("SIGTERM as PID 1: draining for at most \(bound / 1000) s")
            for w in [current, starting?.worker].compactMap({ $0 }) + old { order(w, "U") }
        case SIGTERM, SIGINT, SIGUSR1:
            stopping = true
            for w in [current, starting?.worker].compactMap({ $0 }) + old { order(w, signal == SIGUSR1 ? "U" : "T") }
        case SIGTTOU, SIGTTIN:
            if let c = current { _ = try? ProcessCalls.signal(c.pid, signal) }
        default:
            break
        }
    }

    func exited(_ pid: Int32, status: Int32, epoll: Epoll) {
        for w in [current, starting?.worker].compactMap({ $0 }) + old where w.pid == pid { w.orders.close() }
        if let s = starting, s.worker.pid == pid {
            // Died before its verdict: the pipe's end of file says so too; read it now.
            readVerdict(epoll: epoll)
            return
        }
        old.removeAll { $0.pid == pid }
        if let c = current, c.pid == pid {
            current = nil
            // The worker being started took over from it (a reload) and told it to stop: it
            // may exit before that worker's verdict is read. Not a death to recover from.
            if let s = starting, s.isReload { return }
            if !stopping && exitOnFailure {
                log("worker \(pid) exited unexpectedly (status \(status)); master-worker exit-on-failure: stopping everything")
                stopping = true
                exitStatus = status == 0 ? 1 : status
                for w in old { order(w, "T") }
            } else if !stopping {
                log("worker \(pid) exited unexpectedly (status \(status)); a new one starts in \(backoffSeconds) s")
                respawnAt = Clock.monotonicNanoseconds() + backoffSeconds * 1_000_000_000
                backoffSeconds = min(60, backoffSeconds * 2)
            }
        }
    }

    /// HAProxy's `show proc` layout.
    func showProc() -> String {
        let now = Clock.wallClock().seconds
        func uptime(_ since: Int) -> String {
            let s = max(0, now - since)
            return "\(s / 86_400)d\(String(s / 3600 % 24).leftPadded(2))h\(String(s / 60 % 60).leftPadded(2))m\(String(s % 60).leftPadded(2))s"
        }
        func row(_ pid: Int32, _ type: String, _ reloads: String, _ since: Int) -> String {
            "\(String(pid).padding(to: 16))\(type.padding(to: 16))\(reloads.padding(to: 16))\(uptime(since).padding(to: 16))\(ProductVersion.compatible)\n"
        }
        var text = "#\("<PID>".padding(to: 15))\("<type>".padding(to: 16))\("<reloads>".padding(to: 16))\("<uptime>".padding(to: 16))\("<version>".padding(to: 15))\n"
        text += row(ProcessCalls.pid, "master", "\(reloads) [failed: \(failedReloads)]", startedAt)
        text += "# workers\n"
        if let c = current { text += row(c.pid, "worker", "\(reloads - c.generation)", c.startedAt) }
        text += "# old workers\n"
        for w in old { text += row(w.pid, "worker", "\(reloads - w.generation)", w.startedAt) }
        return text + "\n"
    }
}

/// sd_notify(3) without libsystemd: datagrams to `$NOTIFY_SOCKET`.
struct SystemdNotify {
    let path: String

    init?() {
        guard let p = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), !p.isEmpty else { return nil }
        path = p
    }

    func send(_ text: String) {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let abstract = path.hasPrefix("@")
        guard let address = try? SocketAddress(checkedUnixPath: abstract ? String(path.dropFirst()) : path, abstract: abstract) else { return }
        let bytes = Array(text.utf8)
        _ = address.withSockAddr { sa, len in bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, len) } }
    }
}
