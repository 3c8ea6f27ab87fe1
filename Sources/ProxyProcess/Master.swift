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
        /// The write end of the worker's order pipe: the master stops a worker by writing to
        /// it (no signal, so no capability is needed when the worker runs as another user).
        let orders: FileDescriptor
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
    var respawnAt: UInt64?
    var backoffSeconds: UInt64 = 1
    var stopping = false
    /// Master CLI sessions waiting for the verdict of the reload they asked for.
    var waitingForReload: [FileDescriptor] = []
    let notify: SystemdNotify?
    var cli: FileDescriptor?
    /// The listening sockets, as the serving worker holds them: a copy kept here so that a
    /// worker's death closes none of them; its replacement takes them.
    var held: [Int32] = []

    enum Token {
        static let signals: UInt64 = 1
        static let verdict: UInt64 = 2
        static let cli: UInt64 = 3
        static let session: UInt64 = 1 << 32
    }

    /// `mworker-max-reloads` and `mworker-max-old-workers`, from the configuration at start.
    let maxReloads: Int
    let maxOldWorkers: Int

    init(options: CommandLineOptions, arguments: [String], executable: String, maxReloads: Int = 50, maxOldWorkers: Int = 8) {
        self.options = options
        self.maxReloads = maxReloads
        self.maxOldWorkers = maxOldWorkers
        self.executable = executable
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            switch a {
            case "-W", "-Ws", "-D": break
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
        if let path = options.masterSocket {
            do {
                cli = try Self.listen(path)
                try epoll.add(cli!, events: Epoll.readable, token: Token.cli)
            } catch {
                ProxyMain.printError("proxy: cannot open the master CLI socket '\(path)': \(error)\n")
                return 1
            }
        }
        if let path = options.pidFile {
            do { try PidFile.prepare(path, pid: ProcessCalls.pid).change.publish() } catch {
                ProxyMain.printError("proxy: cannot write pidfile '\(path)': \(error)\n")
                return 1
            }
        }
        guard startWorker(replacing: nil, epoll: epoll) else { return 1 }
        var events = [EpollEvent](repeating: EpollEvent(), count: 16)
        while true {
            if stopping && current == nil && old.isEmpty && starting == nil { break }
            var timeout: Int32 = 1000
            if let r = respawnAt { timeout = Int32(min(1000, r > Clock.monotonicNanoseconds() ? (r - Clock.monotonicNanoseconds()) / 1_000_000 + 1 : 0)) }
            let n = events.withUnsafeMutableBufferPointer { epoll.wait($0.baseAddress!, capacity: 16, timeoutMilliseconds: timeout) }
            for i in 0..<n {
                let token = events[i].data.u64
                switch token {
                case Token.signals:
                    while let sig = signals.next() { handle(signal: sig, epoll: epoll) }
                case Token.verdict:
                    readVerdict(epoll: epoll)
                case Token.cli:
                    acceptCLI(epoll: epoll)
                default:
                    if token >= Token.session { serveCLI(FileDescriptor(rawValue: Int32(truncatingIfNeeded: token - Token.session)), epoll: epoll) }
                }
            }
            if let r = respawnAt, Clock.monotonicNanoseconds() >= r, !stopping, starting == nil {
                respawnAt = nil
                _ = startWorker(replacing: nil, epoll: epoll)
            }
        }
        notify?.send("STOPPING=1")
        for fd in held { FileDescriptor(rawValue: fd).close() }
        if let cli { cli.close() }
        if let path = options.masterSocket { unlink(path) }
        return 0
    }

    // MARK: workers

    /// Spawns a worker; `replacing` names the one it takes over from (a reload).
    @discardableResult
    func startWorker(replacing: Worker?, epoll: Epoll) -> Bool {
        let pipe: (read: FileDescriptor, write: FileDescriptor)
        do { pipe = try Pipe.make(nonBlocking: true) } catch {
            log("cannot start a worker: \(error)")
            return false
        }
        let orders: (read: FileDescriptor, write: FileDescriptor)
        do { orders = try Pipe.make() } catch {
            pipe.read.close()
            pipe.write.close()
            log("cannot start a worker: \(error)")
            return false
        }
        var args = [executable] + workerArguments + ["--worker-verdict-fd", "3", "--master-pipe-fd", "4"]
        var descriptors: [(from: Int32, to: Int32)] = [(pipe.write.rawValue, 3), (orders.read.rawValue, 4)]
        if let r = replacing {
            args += ["-sf", String(r.pid)]
        } else if !held.isEmpty {
            // A replacement: the listeners the master kept, from descriptor 5 on.
            let targets = held.indices.map { Int32(5 + $0) }
            descriptors += zip(held, targets).map { ($0, $1) }
            args += ["--inherit-fds", targets.map(String.init).joined(separator: ",")]
        }
        let pid: Int32
        do { pid = try ProcessCalls.spawn(executable, args, descriptors: descriptors) } catch {
            pipe.read.close()
            pipe.write.close()
            orders.read.close()
            orders.write.close()
            log("cannot start a worker from \(executable): \(error)")
            return false
        }
        pipe.write.close()
        orders.read.close()
        let worker = Worker(pid: pid, startedAt: Clock.wallClock().seconds, generation: reloads, orders: orders.write)
        starting = (worker, pipe.read, replacing != nil)
        try? epoll.add(pipe.read, events: Epoll.readable, token: Token.verdict)
        if replacing != nil {
            notify?.send("RELOADING=1\nMONOTONIC_USEC=\(Clock.monotonicNanoseconds() / 1000)")
        }
        return true
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
        starting = nil
        let ok = n == 1 && byte == 0
        finish(s.worker, ok: ok, isReload: s.isReload, epoll: epoll)
    }

    func finish(_ started: Worker, ok: Bool, isReload: Bool, epoll: Epoll) {
        if isReload { reloads += 1 }
        // A worker's reloads count from the generation it serves in.
        let worker = Worker(pid: started.pid, startedAt: started.startedAt, generation: reloads, orders: started.orders)
        if ok {
            if let c = current { old.append(c) }
            current = worker
            backoffSeconds = 1
            holdListeners(of: worker)
            boundOldWorkers()
            lastReloadOK = true
            lastMessage = "worker \(worker.pid) serving, generation \(reloads)"
            log(isReload ? "reload \(reloads): \(lastMessage)" : lastMessage)
            if isReload || notify != nil {
                notify?.send("READY=1\nMAINPID=\(ProcessCalls.pid)\nSTATUS=Ready, generation \(reloads)")
            }
        } else {
            if isReload { failedReloads += 1 }
            lastReloadOK = false
            lastMessage = "worker \(worker.pid) did not start (see its messages above); \(current.map { "worker \($0.pid) serves on" } ?? "no worker serves")"
            log(isReload ? "reload \(reloads) failed: \(lastMessage)" : lastMessage)
            notify?.send("READY=1\nSTATUS=Reload \(reloads) failed")
            order(worker, "T")
            if current == nil && !isReload && !stopping {
                // The first worker failed: nothing serves, so the master has nothing to do.
                stopping = true
            }
        }
        answerReloads(ok: ok)
        if reloadPending && !stopping {
            reloadPending = false
            reload(epoll: epoll)
        }
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
        if starting != nil {
            // Merged: one more reload after this one, however many were asked for.
            reloadPending = true
            return
        }
        startWorker(replacing: current, epoll: epoll)
    }

    func handle(signal: Int32, epoll: Epoll) {
        switch signal {
        case SIGUSR2, SIGHUP:
            reload(epoll: epoll)
        case SIGCHLD:
            while let (pid, status) = ProcessCalls.reapOne() { exited(pid, status: status, epoll: epoll) }
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
            if !stopping {
                log("worker \(pid) exited unexpectedly (status \(status)); a new one starts in \(backoffSeconds) s")
                respawnAt = Clock.monotonicNanoseconds() + backoffSeconds * 1_000_000_000
                backoffSeconds = min(60, backoffSeconds * 2)
            }
        }
    }

    // MARK: the master CLI

    static func listen(_ path: String) throws -> FileDescriptor {
        unlink(path)
        let fd = try Socket.make(family: AF_UNIX)
        do {
            try Socket.bind(fd, try SocketAddress(checkedUnixPath: path))
            chmod(path, 0o600)
            try Socket.listen(fd, backlog: 16)
            try Socket.setNonBlocking(fd)
        } catch {
            fd.close()
            throw error
        }
        return fd
    }

    func acceptCLI(epoll: Epoll) {
        guard let cli else { return }
        while let r = try? Socket.accept(cli), case .done(let (fd, _)) = r {
            try? epoll.add(fd, events: Epoll.readable | Epoll.readHangup, token: Token.session + UInt64(fd.rawValue))
        }
    }

    /// One command line per connection, as the runtime API's non-interactive mode.
    func serveCLI(_ fd: FileDescriptor, epoll: Epoll) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let r = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0.baseAddress!, count: $0.count) }
        guard case .done(let n)? = r, n > 0 else {
            epoll.remove(fd)
            fd.close()
            waitingForReload.removeAll { $0 == fd }
            return
        }
        let line = String(decoding: chunk[0..<n], as: UTF8.self).trimmingBlanks()
        epoll.remove(fd)
        switch line {
        case "reload":
            // Answered once the new worker has said how it went (HAProxy 2.7's form).
            waitingForReload.append(fd)
            reload(epoll: epoll)
        case "show proc":
            write(showProc(), to: fd)
        case "help", "":
            write("The following commands are valid at this level:\n  help           : list the commands\n  reload         : reload the workers, then say Success=1 or Success=0\n  show proc      : the master and its workers\n\n", to: fd)
        default:
            write("Unknown command: '\(line)'. Use 'help'.\n\n", to: fd)
        }
    }

    func answerReloads(ok: Bool) {
        for fd in waitingForReload { write("Success=\(ok ? 1 : 0)\n--\n\(lastMessage)\n\n", to: fd) }
        waitingForReload = []
    }

    func write(_ text: String, to fd: FileDescriptor) {
        try? Socket.setBlocking(fd, true)
        try? Socket.setTimeouts(fd, milliseconds: 1000)
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { try? fd.writeAll($0) }
        fd.close()
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
