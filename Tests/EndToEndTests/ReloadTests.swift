import Foundation
import Testing

/// The inode of the socket listening on 127.0.0.1:`port`, from /proc/net/tcp.
func listeningInode(_ port: Int) -> String? {
    // Read to the end: /proc files report no size, and one read returns a page at most.
    guard let handle = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return nil }
    let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    handle.closeFile()
    let wanted = String(format: ":%04X", port)
    for line in text.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        if f.count > 9, f[1].hasSuffix(wanted), f[3] == "0A" { return String(f[9]) }
    }
    return nil
}

/// Established TCP connections whose remote end is 127.0.0.1:`port`, from /proc/net/tcp.
func establishedConnections(toPort port: Int) -> Int {
    guard let handle = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return 0 }
    let text = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)
    handle.closeFile()
    let wanted = String(format: ":%04X", port)
    return text.split(separator: "\n").dropFirst().filter { line in
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        return f.count > 3 && f[2].hasSuffix(wanted) && f[3] == "01"
    }.count
}

extension TestBed {
    /// Starts another `proxy` on `config` (written to `name`) with extra arguments.
    func startProxy(_ config: String, name: String, arguments: [String] = [], environment: [String: String] = [:]) throws -> (Process, String) {
        let path = directory + "/" + name
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let log = directory + "/" + name + ".log"
        let p = try start(Harness.proxyBinary, ["-f", path] + arguments, log: log, environment: environment)
        return (p, log)
    }

    func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
}

@Suite(.serialized) struct Reload {
    func config(port: Int, backend: Int, extra: String = "") -> String {
        """
        global
            hard-stop-after 10s
        \(TestBed.defaults("http"))
            timeout http-keep-alive 2s
        frontend web
            bind 127.0.0.1:\(port)
            acl maintenance_mode env_int(HAPROXY_MAINT) gt 0
            use_backend maintenance if maintenance_mode
            default_backend app
        backend app
            server s1 127.0.0.1:\(backend)
        backend maintenance
            http-request return status 503 content-type text/plain string "maintenance"
        \(extra)
        """
    }

    @Test func handsOverTheSameSocketAndTheEnvironmentSwitches() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let old = try bed.proxy(config(port: port, backend: b), waitFor: port, environment: ["HAPROXY_MAINT": "0"])
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        let inodeBefore = listeningInode(port)
        let (new, log) = try bed.startProxy(config(port: port, backend: b), name: "new.cfg",
                                            arguments: ["-sf", String(old.processIdentifier)], environment: ["HAPROXY_MAINT": "1"])
        #expect(TestBed.waitUntil { !old.isRunning }, "the old process did not exit")
        #expect(new.isRunning)
        #expect(bed.read(log).contains("taken over"))
        #expect(listeningInode(port) == inodeBefore && inodeBefore != nil)
        let (code, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        #expect(code == 503 && body == "maintenance")
        kill(new.processIdentifier, SIGTERM)
    }

    @Test func aBadConfigNeverTouchesTheRunningProcess() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let old = try bed.proxy(config(port: port, backend: b), waitFor: port)
        let bad = bed.directory + "/bad.cfg"
        try "frontend web\n    bind 127.0.0.1:\(port)\n    balnce roundrobin\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let r = try Harness.proxy(["-f", bad, "-sf", String(old.processIdentifier)])
        #expect(r.status == 1)
        #expect(r.stderr.contains("bad.cfg:3: error:"))
        #expect(old.isRunning)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
    }

    @Test func goneOldPidsAreSkipped() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let (new, log) = try bed.startProxy(config(port: port, backend: b), name: "new.cfg", arguments: ["-sf", String(gone.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitForPort(port))
        #expect(TestBed.waitUntil { bed.read(log).contains("no longer exists; skipped") })
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
    }

    @Test func aSlowRequestInFlightFinishesAndTheOldProcessExitsAfterIt() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let old = try bed.proxy(config(port: port, backend: b), waitFor: port)
        final class Result: @unchecked Sendable { var value: (Int, String, String) = (0, "", "") }
        let result = Result()
        let done = DispatchSemaphore(value: 0)
        Thread {
            result.value = (try? TestBed.curl(["http://127.0.0.1:\(port)/slow?ms=2000"])) ?? (0, "", "")
            done.signal()
        }.start()
        // The slow request has reached the backend through the old process.
        #expect(TestBed.waitUntil { (TestBed.stats(b).last["target"] as? String) == "/slow?ms=2000" })
        let (new, newLog) = try bed.startProxy(config(port: port, backend: b), name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(newLog).contains("taken over") })
        #expect(old.isRunning, "the old process must wait for its in-flight request")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/after"]).1 == "app GET /after body=0")
        done.wait()
        #expect(result.value.0 == 200 && result.value.1 == "app GET /slow?ms=2000 body=0")
        #expect(TestBed.waitUntil(timeout: 3) { !old.isRunning })
        kill(new.processIdentifier, SIGTERM)
    }

    @Test func dashSTEndsTheOldProcessAtOnce() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let old = try bed.proxy(config(port: port, backend: b), waitFor: port)
        let started = Date()
        let (new, _) = try bed.startProxy(config(port: port, backend: b), name: "new.cfg", arguments: ["-st", String(old.processIdentifier)])
        #expect(TestBed.waitUntil(timeout: 3) { !old.isRunning })
        #expect(Date().timeIntervalSince(started) < 3)
        #expect(TestBed.waitForPort(port))
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        kill(new.processIdentifier, SIGTERM)
    }

    @Test func anUnusedReceivedListenerIsClosed() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort(), extraPort = TestBed.freePort()
        let old = try bed.proxy(config(port: port, backend: b, extra: "frontend extra\n    bind 127.0.0.1:\(extraPort)\n    default_backend app\n"), waitFor: extraPort)
        let (new, _) = try bed.startProxy(config(port: port, backend: b), name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        #expect(TestBed.waitUntil { !old.isRunning })
        #expect(listeningInode(extraPort) == nil, "nobody should listen on the dropped bind any more")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        kill(new.processIdentifier, SIGTERM)
    }

    @Test func pauseAndResumeWithSIGTTOUAndSIGTTIN() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let p = try bed.proxy(config(port: port, backend: b), waitFor: port)
        kill(p.processIdentifier, SIGTTOU)
        // Paused: connections wait in the accept queue and get no answer.
        #expect(TestBed.waitUntil(timeout: 5) { ((try? TestBed.curl(["-m", "1", "http://127.0.0.1:\(port)/"]))?.0 ?? -1) == 0 })
        kill(p.processIdentifier, SIGTTIN)
        #expect(TestBed.waitUntil(timeout: 5) { ((try? TestBed.curl(["-m", "2", "http://127.0.0.1:\(port)/"]))?.0 ?? -1) == 200 })
    }

    @Test func hardStopAfterEndsADrainingTunnel() throws {
        let bed = try TestBed()
        let echo = try bed.backend(name: "echo", kind: "echo")
        let port = TestBed.freePort()
        let cfg = """
        global
            hard-stop-after 1s
        defaults
            mode tcp
            timeout connect 2s
            timeout client 30s
            timeout server 30s
        listen tunnel
            bind 127.0.0.1:\(port)
            server e 127.0.0.1:\(echo)
        """
        let p = try bed.proxy(cfg, waitFor: port)
        // An idle tunnel: a client that connects and waits.
        let python = Harness.which("python3")!
        let client = try bed.start(python, ["-c", "import socket,time; s=socket.create_connection(('127.0.0.1', \(port))); time.sleep(30)"])
        // The tunnel is up once the proxy has connected to the echo server for that client (the
        // port probe's short connection must not count: wait until it has gone and the client's
        // stays).
        #expect(TestBed.waitUntil { establishedConnections(toPort: echo) >= 1 && establishedConnections(toPort: port) >= 1 })
        usleep(300_000)
        #expect(establishedConnections(toPort: echo) >= 1)
        let started = Date()
        kill(p.processIdentifier, SIGUSR1)
        #expect(TestBed.waitUntil(timeout: 5) { !p.isRunning })
        let took = Date().timeIntervalSince(started)
        #expect(took >= 0.8 && took < 3, "took \(took)s")
        kill(client.processIdentifier, SIGKILL)
    }

    /// A newer peer's snapshot: lines and fields this version does not know are skipped, and
    /// what it does know (the listener, a server's health) is taken.
    @Test func unknownSnapshotLinesAreSkippedAndHealthIsCarried() throws {
        let bed = try TestBed()
        let one = try bed.backend(name: "one")
        let two = try bed.backend(name: "two")
        let port = TestBed.freePort()
        let python = Harness.which("python3")!
        let peer = Harness.root + "/Tests/EndToEndTests/Helpers/handover_peer.py"
        // Its own pid names the endpoint: a shell that execs python keeps its pid.
        let old = try bed.start("/bin/sh", ["-c", "exec \(python) \(peer) $$ \(port) \(bed.directory)/ready --state 'snapshot-format 7 from-the-future' --state 'server app s1 down weight=5' --state 'variable proc.x 42' --hint 'listener inet,ipv4,127.0.0.1,\(port) v4v6=0,v6only=0,transparent=0,if=,ns= extra=1'"],
                                log: bed.directory + "/old.log")
        #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: bed.directory + "/ready") }, "\(bed.read(bed.directory + "/old.log"))")
        let inode = listeningInode(port)
        let cfg = config(port: port, backend: one).replacingOccurrences(of: "    server s1 127.0.0.1:\(one)\n",
            with: "    server s1 127.0.0.1:\(one) check inter 10s\n    server s2 127.0.0.1:\(two) check inter 10s\n")
        let (new, log) = try bed.startProxy(cfg, name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { bed.read(log).contains("taken over") }, "\(bed.read(log))")
        #expect(listeningInode(port) == inode && inode != nil)
        #expect(!bed.read(log).contains("did not confirm"))
        // s1 arrives down and needs `rise` checks, `inter` apart, to come back: s2 serves.
        for _ in 0..<4 {
            let (code, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
            #expect(code == 200 && body.hasPrefix("two "), "\(body)")
        }
    }

    /// Daemons replacing daemons (`-D -p pidfile -sf $(cat pidfile)`, an init script's
    /// reload): each one takes the very socket over from the one the pidfile names, whose
    /// handover endpoint is named after the daemon's pid, not the parent's that forked it.
    @Test func daemonsHandOverToDaemons() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let cfg = bed.directory + "/d.cfg"
        let pidFile = bed.directory + "/d.pid"
        try config(port: port, backend: b).write(toFile: cfg, atomically: true, encoding: .utf8)
        #expect(try Harness.proxy(["-f", cfg, "-D", "-p", pidFile]).status == 0)
        #expect(TestBed.waitForPort(port))
        let inode = listeningInode(port)
        var pids: [String] = []
        for _ in 0..<3 {
            let old = bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
            pids.append(old)
            let r = try Harness.proxy(["-f", cfg, "-D", "-p", pidFile, "-sf", old])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(!r.stderr.contains("warning"), "\(r.stderr)")
            #expect(listeningInode(port) == inode && inode != nil, "the listener was bound afresh, not taken over")
            #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        }
        #expect(TestBed.waitUntil { pids.allSatisfy { kill(Int32($0) ?? 0, 0) != 0 } }, "an old daemon is still there")
        if let last = Int32(bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)) { kill(last, SIGTERM) }
    }

    /// More listeners than one message carries (253): all 300 are taken over, the same sockets.
    @Test func handsOverMoreListenersThanOneMessageCarries() throws {
        let bed = try TestBed()
        let first = TestBed.freePortRange(300)
        let last = first + 299
        let cfg = """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(first)-\(last)
            http-request return status 200 content-type text/plain string "ok"

        """
        let old = try bed.proxy(cfg, waitFor: last)
        let before = [first, first + 253, last].map { listeningInode($0) }
        let (new, log) = try bed.startProxy(cfg, name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { bed.read(log).contains("300 listeners taken over") }, "\(bed.read(log))")
        #expect(TestBed.waitUntil { !old.isRunning })
        #expect([first, first + 253, last].map { listeningInode($0) } == before && !before.contains(nil))
        #expect(try TestBed.curl(["http://127.0.0.1:\(last)/"]).0 == 200)
    }

    /// Started as root with `user nobody`: the pidfile and the stats socket, in a directory
    /// only root may write, still get their names at the point of no return (a helper that
    /// kept root does the renames), and the next reload takes over from the unprivileged process.
    @Test(.enabled(if: getuid() == 0, "needs root to drop privileges"))
    func dropsPrivilegesAndStillPublishesItsNames() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/admin.sock"
        let pidFile = bed.directory + "/proxy.pid"
        let cfg = """
        global
            user nobody
            stats socket \(socket) mode 666 level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string "ok"

        """
        let old = try bed.proxy(cfg, waitFor: port, arguments: ["-p", pidFile])
        let oldPID = String(old.processIdentifier)
        #expect(TestBed.waitUntil { bed.read(pidFile) == oldPID + "\n" })
        #expect(bed.read("/proc/\(oldPID)/status").contains("Uid:\t65534\t65534\t65534\t65534"))
        #expect(cli(socket, "show info")?.contains("Pid: \(oldPID)\n") == true)
        let inode = listeningInode(port)
        let r = try Harness.proxy(["-f", bed.directory + "/proxy.cfg", "-D", "-p", pidFile, "-sf", oldPID])
        #expect(r.status == 0, "\(r.stderr)")
        let newPID = bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(newPID != oldPID && !newPID.isEmpty)
        #expect(cli(socket, "show info")?.contains("Pid: \(newPID)\n") == true)
        #expect(listeningInode(port) == inode)
        #expect(TestBed.waitUntil { !old.isRunning })
        #expect(!bed.names().contains { $0.hasSuffix(".tmp") })
        if let pid = Int32(newPID) { kill(pid, SIGTERM) }
    }

    /// HAProxy has no handover endpoint: the new process binds beside it with SO_REUSEPORT
    /// and signals it.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func takesOverFromAProcessWithoutHandover() throws {
        let haproxy = Harness.which("haproxy")!
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let common = """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s1 127.0.0.1:\(b)

        """
        try common.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        let old = try bed.start(haproxy, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(port), "haproxy: \(bed.read(bed.directory + "/haproxy.log"))")
        let (new, log) = try bed.startProxy(common, name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { !old.isRunning }, "haproxy did not get SIGUSR1")
        #expect(!bed.read(log).contains("taken over"))
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
    }
}

@Suite(.serialized) struct BindRetry {
    /// A port held without SO_REUSEPORT by a process with no handover: the new process
    /// pauses it (SIGTTOU), retries for about 2 s, resumes it (SIGTTIN) and fails cleanly.
    @Test func portHeldWithoutReuseportFailsAfterRetrying() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let python = Harness.which("python3")!
        let holder = try bed.start(python, ["-c", """
        import signal, socket, time
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTTOU, signal.SIGTTIN])
        signal.signal(signal.SIGTTOU, lambda *a: open('\(bed.directory)/ttou', 'w').close())
        signal.signal(signal.SIGTTIN, lambda *a: open('\(bed.directory)/ttin', 'w').close())
        s = socket.socket(); s.bind(('127.0.0.1', \(port))); s.listen(5)
        time.sleep(60)
        """])
        #expect(TestBed.waitForPort(port))
        let cfg = bed.directory + "/p.cfg"
        try "defaults\n    mode http\n    timeout client 1s\n    timeout connect 1s\n    timeout server 1s\nlisten l\n    bind 127.0.0.1:\(port)\n    http-request return status 200\n".write(toFile: cfg, atomically: true, encoding: .utf8)
        let started = Date()
        let r = try Harness.proxy(["-f", cfg, "-sf", String(holder.processIdentifier)])
        let took = Date().timeIntervalSince(started)
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot bind 127.0.0.1:\(port): Address already in use"))
        #expect(took > 1.5 && took < 5, "took \(took)s")
        #expect(TestBed.waitUntil(timeout: 2) { FileManager.default.fileExists(atPath: bed.directory + "/ttou") })
        #expect(TestBed.waitUntil(timeout: 2) { FileManager.default.fileExists(atPath: bed.directory + "/ttin") })
        #expect(holder.isRunning)
    }
}
