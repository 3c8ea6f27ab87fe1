import ProxyConfig
import ProxyEngine
import ProxySystem
import CProxySys
import Glibc

/// Serving: the ordered start-up, then the control loop that turns signals into engine
/// commands. The control loop runs on the main thread; the data loops never see a signal.
enum ProxyServer {
    static func serve(_ configuration: Configuration, options: CommandLineOptions) -> Int32 {
        let daemon = options.daemon || configuration.global.daemon
        // Signals are blocked before any thread starts, so every thread inherits the mask
        // and only the control loop's signalfd sees them.
        let handled = [SIGTERM, SIGINT, SIGUSR1, SIGTTOU, SIGTTIN, SIGHUP, SIGPIPE]
        let signals: SignalFD
        do { signals = try SignalFD(signals: handled) } catch {
            ProxyMain.printError("proxy: \(error)\n")
            return 1
        }
        // 2. Listeners: handed over by the old processes first, bound fresh otherwise.
        let oldPIDs = options.softStopPIDs + options.terminatePIDs
        var inheritance = Handover.collect(from: oldPIDs)
        // HAProxy's `-x SOCKET`: the sockets of whichever process (ours or HAProxy) listens
        // there, for the bind lines the handover did not already cover.
        if let path = options.socketTransfer {
            let wanted = configuration.proxies.filter(\.isFrontend).flatMap(\.binds).flatMap(\.listenerKeys)
            do {
                let received = try ListenerExport.fetch(from: path)
                inheritance.received += received.map(\.fd)
                for (key, fd) in ListenerExport.match(received, wanted: wanted) where inheritance.listeners[key] == nil {
                    inheritance.listeners[key] = fd
                }
            } catch {
                ProxyMain.printError("proxy: warning: -x: \(error); binding the listeners afresh with SO_REUSEPORT\n")
            }
        }
        let reusePort = !(options.noReusePort || configuration.global.noReusePort)
        var listeners: [Listener] = []
        // A port held by a socket without SO_REUSEPORT: pause the old pids (SIGTTOU) and
        // retry every 10 ms for up to 2 s, as HAProxy does; resume them (SIGTTIN) on failure.
        var paused: [Int32] = []
        do {
            var attempt = 0
            while true {
                do {
                    listeners = try Listener.bindAll(configuration, reusePort: reusePort, inherited: inheritance.listeners)
                    break
                } catch let e as BindError where e.error.code == EADDRINUSE && !oldPIDs.isEmpty && attempt < 200 {
                    if attempt == 0 { for pid in oldPIDs where kill(pid, SIGTTOU) == 0 { paused.append(pid) } }
                    attempt += 1
                    usleep(10_000)
                }
            }
        } catch let e as BindError {
            for pid in paused { kill(pid, SIGTTIN) }
            abandon(&inheritance)
            ProxyMain.printError("\(e.location): error: cannot bind \(e.address): \(e.error.reason)\(hint(e.error.code))\n")
            return 1
        } catch {
            for pid in paused { kill(pid, SIGTTIN) }
            abandon(&inheritance)
            ProxyMain.printError("proxy: \(error)\n")
            return 1
        }
        if listeners.isEmpty {
            abandon(&inheritance)
            ProxyMain.printError("proxy: no frontend has a 'bind' line; nothing to serve\n")
            return 1
        }
        // The runtime API's sockets, bound under temporary names until this start commits.
        let runtimeAPI: RuntimeAPIServer
        do { runtimeAPI = try RuntimeAPIServer(configuration: configuration, oldProcesses: !oldPIDs.isEmpty) } catch {
            for pid in paused { kill(pid, SIGTTIN) }
            abandon(&inheritance)
            ProxyMain.printError("\(error)\n")
            return 1
        }
        var verdictPipe: Int32 = -1
        /// A failed start: the old processes go on as they were, resumed if paused.
        func fail(_ message: String) -> Int32 {
            runtimeAPI.rollback()
            for pid in paused { kill(pid, SIGTTIN) }
            abandon(&inheritance)
            ProxyMain.printError(message)
            if verdictPipe >= 0 { var v: UInt8 = 1; _ = Glibc.write(verdictPipe, &v, 1) }
            return 1
        }
        // 3. Daemon: the parent waits for the child's verdict and exits with it.
        if daemon {
            var fds: [Int32] = [0, 0]
            guard cproxy_pipe2(&fds, O_CLOEXEC) == 0 else { return fail("proxy: pipe: \(SystemError.last("pipe2").reason)\n") }
            let pid = fork()
            if pid < 0 { return fail("proxy: fork: \(SystemError.last("fork").reason)\n") }
            if pid > 0 {
                Glibc.close(fds[1])
                var verdict: UInt8 = 1
                let n = Glibc.read(fds[0], &verdict, 1)
                _exit(n == 1 ? Int32(verdict) : 1)
            }
            Glibc.close(fds[0])
            verdictPipe = fds[1]
            setsid()
        }
        // 4. Pidfile, with the serving process's pid.
        if let path = options.pidFile ?? configuration.global.pidfile {
            do {
                let fd = try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
                try fd.writeAll("\(getpid())\n")
                fd.close()
            } catch {
                return fail("proxy: cannot write pidfile '\(path)': \((error as? SystemError)?.reason ?? "\(error)")\n")
            }
        }
        // The runtime model, with the state the old processes carried.
        let model: RuntimeModel
        do { model = try RuntimeModel(configuration: configuration) } catch {
            return fail("proxy: cannot start: \(error)\n")
        }
        // Only a checked server takes its carried health: without `check` it is always up.
        for (_, b) in model.backends {
            for srv in b.servers where srv.definition.options.check {
                if let up = inheritance.serverStates["\(b.name)/\(srv.name)"] { srv.isUp.store(up, ordering: .relaxed) }
            }
        }
        // The stats sockets take their names; a link keeps the old ones until step 6.
        runtimeAPI.publish()
        // 5. chroot.
        if let dir = configuration.global.chroot {
            if chroot(dir) != 0 || chdir("/") != 0 {
                return fail("proxy: cannot chroot to '\(dir)': \(SystemError.last("chroot").reason)\n")
            }
        }
        // 6. Tell the old processes, now that this one is ready, and collect their answers.
        var acknowledged = true
        var signalled = Set<Int32>()
        for (pid, channel) in inheritance.channels {
            signalled.insert(pid)
            if options.terminatePIDs.contains(pid) && !options.softStopPIDs.contains(pid) {
                channel.close()
                tellOld(pid, SIGTERM)
            } else if !Handover.stop(channel) {
                ProxyMain.printError("proxy: old pid \(pid) did not confirm it stopped accepting; sending SIGUSR1\n")
                acknowledged = tellOld(pid, SIGUSR1) && acknowledged
            }
        }
        inheritance.channels = []
        for pid in options.softStopPIDs where !signalled.contains(pid) { _ = tellOld(pid, SIGUSR1) }
        for pid in options.terminatePIDs where !signalled.contains(pid) { _ = tellOld(pid, SIGTERM) }
        let used = Set(listeners.map(\.fd.rawValue))
        for fd in inheritance.received where !used.contains(fd) { Glibc.close(fd) }
        if !acknowledged { ProxyMain.printError("proxy: warning: not every old process acknowledged the stop\n") }
        // No way back now: the old stats sockets' links go, and addresses they held are taken.
        runtimeAPI.commit()
        runtimeAPI.bindHeld()
        // 7. Drop privileges.
        if let message = dropPrivileges(configuration.global) { return fail(message) }
        // 8. The data loops, then our own handover endpoint for the next reload.
        let engine: ProxyEngine
        do {
            engine = try ProxyEngine(model: model, listeners: listeners, threads: configuration.global.threads)
            try engine.start()
        } catch {
            return fail("proxy: cannot start: \(error)\n")
        }
        let startedAt = Int(time(nil))
        runtimeAPI.commands = RuntimeCommands(engine: engine, startedAt: startedAt, threads: configuration.global.threads,
                                              stopping: { engine.model.stopping.load(ordering: .relaxed) })
        let endpoint = Handover.Endpoint()
        if verdictPipe >= 0 {
            var ok: UInt8 = 0
            _ = Glibc.write(verdictPipe, &ok, 1)
            Glibc.close(verdictPipe)
            // Detach from the terminal's files.
            let null = open("/dev/null", O_RDWR)
            if null >= 0 { dup2(null, 0); dup2(null, 1); if !options.verbose { dup2(null, 2) }; Glibc.close(null) }
        } else if !options.quiet {
            let addresses = listeners.map { "\($0.frontendName)@\($0.key)" }.joined(separator: ", ")
            let taken = listeners.filter { inheritance.listeners.values.contains($0.fd.rawValue) }.count
            let note = taken > 0 ? " (\(taken) listener\(taken == 1 ? "" : "s") taken over)" : ""
            ProxyMain.printError("proxy \(ProxyMain.version) (pid \(getpid())): serving \(addresses)\(note)\n")
        }
        return controlLoop(engine: engine, signals: signals, configuration: configuration, endpoint: endpoint,
                           runtimeAPI: runtimeAPI)
    }

    /// A failed start: close the channels without saying `stop`; the old processes go on.
    static func abandon(_ inheritance: inout Handover.Inheritance) {
        for (_, c) in inheritance.channels { c.close() }
        inheritance.channels = []
        for fd in inheritance.received { Glibc.close(fd) }
        inheritance.received = []
    }

    /// setgid, then setuid, from `group`/`gid` and `user`/`uid` (only when root).
    static func dropPrivileges(_ g: GlobalSettings) -> String? {
        guard getuid() == 0 else { return nil }
        var gid = g.gid
        if let name = g.group {
            guard let entry = getgrnam(name) else { return "proxy: unknown group '\(name)'\n" }
            gid = entry.pointee.gr_gid
        }
        var uid = g.uid
        if let name = g.user {
            guard let entry = getpwnam(name) else { return "proxy: unknown user '\(name)'\n" }
            uid = entry.pointee.pw_uid
            if gid == nil { gid = entry.pointee.pw_gid }
        }
        if let gid {
            if setgroups(0, nil) != 0 || setgid(gid) != 0 { return "proxy: cannot set group \(gid): \(SystemError.last("setgid").reason)\n" }
        }
        if let uid, setuid(uid) != 0 { return "proxy: cannot set user \(uid): \(SystemError.last("setuid").reason)\n" }
        return nil
    }

    /// Signals an old pid; a successful kill is its acknowledgement. A pid that is gone
    /// is skipped and reported, and does not fail the reload.
    @discardableResult
    static func tellOld(_ pid: Int32, _ signal: Int32) -> Bool {
        do {
            if try !ProcessCalls.signal(pid, signal) {
                ProxyMain.printError("proxy: old pid \(pid) no longer exists; skipped\n")
            }
            return true
        } catch {
            ProxyMain.printError("proxy: cannot signal pid \(pid): \(error)\n")
            return false
        }
    }

    static func hint(_ code: Int32) -> String {
        switch code {
        case EADDRINUSE: return " (another process holds the port without SO_REUSEPORT; stop it or pass -sf/-st with its pid)"
        case EACCES: return " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        case EADDRNOTAVAIL: return " (the address is not configured on this host)"
        default: return ""
        }
    }

    /// Waits on signals and on the data loops; returns the exit status.
    static func controlLoop(engine: ProxyEngine, signals: SignalFD, configuration: Configuration,
                            endpoint: Handover.Endpoint?, runtimeAPI: RuntimeAPIServer) -> Int32 {
        guard let epoll = try? Epoll() else { return 1 }
        runtimeAPI.register(in: epoll)
        try? epoll.add(signals.fd, events: Epoll.readable, token: 1)
        try? epoll.add(engine.finished.fd, events: Epoll.readable, token: 2)
        if let e = endpoint { try? epoll.add(e.fd, events: Epoll.readable, token: 3) }
        /// Channels from new processes, waiting for their `stop`.
        var channels: [Int32: FileDescriptor] = [:]
        var events = [epoll_event](repeating: epoll_event(), count: 8)
        var softStopping = false
        var hardDeadline: UInt64?
        func beginSoftStop() {
            // Repeated SIGUSR1 (or stop) does nothing more.
            guard !softStopping else { return }
            softStopping = true
            engine.softStop()
            runtimeAPI.closeListeners(epoll: epoll)
            if let after = configuration.global.hardStopAfter {
                hardDeadline = Clock.monotonicNanoseconds() + UInt64(after) * 1_000_000
            }
        }
        while engine.runningLoops > 0 {
            var timeout: Int32 = 1000
            if let d = hardDeadline {
                let now = Clock.monotonicNanoseconds()
                timeout = d <= now ? 0 : Int32(min((d - now) / 1_000_000 + 1, 1000))
            }
            let n = events.withUnsafeMutableBufferPointer { epoll.wait($0.baseAddress!, capacity: 8, timeoutMilliseconds: timeout) }
            for i in 0..<n where events[i].data.u64 >= 3 {
                let token = events[i].data.u64
                if runtimeAPI.handle(token: token, events: events[i].events, epoll: epoll) { continue }
                if token == 3, let e = endpoint {
                    if let channel = e.serveOne(listeners: engine.listeners, model: engine.model) {
                        channels[channel.rawValue] = channel
                        try? epoll.add(channel, events: Epoll.readable, token: 1000 + UInt64(channel.rawValue))
                    }
                } else if let channel = channels[Int32(token - 1000)] {
                    var buffer = [UInt8](repeating: 0, count: 64)
                    let got = buffer.withUnsafeMutableBytes { (try? channel.read(into: $0)) ?? 0 }
                    if got > 0 && String(decoding: buffer[0..<got], as: UTF8.self).hasPrefix("stop") {
                        // The acknowledgement is sent once no loop accepts any more.
                        beginSoftStop()
                        _ = engine.waitUntilNotAccepting(timeoutMilliseconds: 2000)
                        try? channel.writeAll("stopped\n")
                    }
                    epoll.remove(channel)
                    channel.close()
                    channels[channel.rawValue] = nil
                }
            }
            for i in 0..<n where events[i].data.u64 == 1 {
                while let sig = signals.next() {
                    switch sig {
                    case SIGUSR1:
                        beginSoftStop()
                    case SIGTERM, SIGINT:
                        engine.hardStop()
                    case SIGTTOU:
                        engine.pauseAccepting()
                    case SIGTTIN:
                        engine.resumeAccepting()
                    default:
                        break
                    }
                }
            }
            engine.finished.drain()
            runtimeAPI.expire(epoll: epoll)
            if let d = hardDeadline, Clock.monotonicNanoseconds() >= d {
                hardDeadline = nil
                engine.hardStop()
            }
        }
        engine.join()
        runtimeAPI.closeListeners(epoll: epoll)
        endpoint?.close()
        return 0
    }
}

