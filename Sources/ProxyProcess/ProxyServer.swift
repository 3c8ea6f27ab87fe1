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
        // 1. Listeners.
        let reusePort = !(options.noReusePort || configuration.global.noReusePort)
        let listeners: [Listener]
        do {
            listeners = try Listener.bindAll(configuration, reusePort: reusePort)
        } catch let e as BindError {
            ProxyMain.printError("\(e.location): error: cannot bind \(e.address): \(e.error.reason)\(hint(e.error.code))\n")
            return 1
        } catch {
            ProxyMain.printError("proxy: \(error)\n")
            return 1
        }
        if listeners.isEmpty {
            ProxyMain.printError("proxy: no frontend has a 'bind' line; nothing to serve\n")
            return 1
        }
        // 2. Daemon: the parent waits for the child's verdict and exits with it.
        var verdictPipe: Int32 = -1
        if daemon {
            var fds: [Int32] = [0, 0]
            guard cproxy_pipe2(&fds, O_CLOEXEC) == 0 else { return 1 }
            let pid = fork()
            if pid < 0 { ProxyMain.printError("proxy: fork: \(SystemError.last("fork").reason)\n"); return 1 }
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
        func fail(_ message: String) -> Int32 {
            ProxyMain.printError(message)
            if verdictPipe >= 0 { var v: UInt8 = 1; _ = Glibc.write(verdictPipe, &v, 1) }
            return 1
        }
        // 3. Pidfile.
        if let path = options.pidFile ?? configuration.global.pidfile {
            let text = "\(getpid())\n"
            do {
                let fd = try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
                try fd.writeAll(text)
                fd.close()
            } catch let e as SystemError {
                return fail("proxy: cannot write pidfile '\(path)': \(e.reason)\n")
            } catch { return 1 }
        }
        // 4. The data loops.
        let engine: ProxyEngine
        do {
            let model = try RuntimeModel(configuration: configuration)
            engine = try ProxyEngine(model: model, listeners: listeners, threads: configuration.global.threads)
            try engine.start()
        } catch {
            return fail("proxy: cannot start: \(error)\n")
        }
        // 5. Tell old processes to go, now that this one serves.
        for pid in options.softStopPIDs { tellOld(pid, SIGUSR1) }
        for pid in options.terminatePIDs { tellOld(pid, SIGTERM) }
        if verdictPipe >= 0 {
            var ok: UInt8 = 0
            _ = Glibc.write(verdictPipe, &ok, 1)
            Glibc.close(verdictPipe)
            // Detach from the terminal's files.
            let null = open("/dev/null", O_RDWR)
            if null >= 0 { dup2(null, 0); dup2(null, 1); if !options.verbose { dup2(null, 2) }; Glibc.close(null) }
        } else if !options.quiet {
            let addresses = listeners.map { "\($0.frontendName)@\($0.key)" }.joined(separator: ", ")
            ProxyMain.printError("proxy \(ProxyMain.version) (pid \(getpid())): serving \(addresses)\n")
        }
        return controlLoop(engine: engine, signals: signals, configuration: configuration)
    }

    static func tellOld(_ pid: Int32, _ signal: Int32) {
        do {
            if try !ProcessCalls.signal(pid, signal) {
                ProxMainNote.note("proxy: old pid \(pid) no longer exists; skipped\n")
            }
        } catch {
            ProxyMain.printError("proxy: cannot signal pid \(pid): \(error)\n")
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
    static func controlLoop(engine: ProxyEngine, signals: SignalFD, configuration: Configuration) -> Int32 {
        guard let epoll = try? Epoll() else { return 1 }
        try? epoll.add(signals.fd, events: Epoll.readable, token: 1)
        try? epoll.add(engine.finished.fd, events: Epoll.readable, token: 2)
        var events = [epoll_event](repeating: epoll_event(), count: 8)
        var softStopping = false
        var hardDeadline: UInt64?
        while engine.runningLoops > 0 {
            var timeout: Int32 = 1000
            if let d = hardDeadline {
                let now = Clock.monotonicNanoseconds()
                timeout = d <= now ? 0 : Int32(min((d - now) / 1_000_000 + 1, 1000))
            }
            let n = events.withUnsafeMutableBufferPointer { epoll.wait($0.baseAddress!, capacity: 8, timeoutMilliseconds: timeout) }
            for i in 0..<n where events[i].data.u64 == 1 {
                while let sig = signals.next() {
                    switch sig {
                    case SIGUSR1:
                        // Repeated SIGUSR1 does nothing more.
                        if !softStopping {
                            softStopping = true
                            engine.softStop()
                            if let after = configuration.global.hardStopAfter {
                                hardDeadline = Clock.monotonicNanoseconds() + UInt64(after) * 1_000_000
                            }
                        }
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
            if let d = hardDeadline, Clock.monotonicNanoseconds() >= d {
                hardDeadline = nil
                engine.hardStop()
            }
        }
        engine.join()
        return 0
    }
}

/// Notes printed on stderr.
enum ProxMainNote {
    static func note(_ s: String) { ProxyMain.printError(s) }
}
