import Foundation
import Glibc
import Testing

/// CPU time (user + system) a process has used, in seconds, from /proc/PID/stat.
func cpuSeconds(_ pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
    guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
    return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Limits and resources: descriptors, accept errors, maxconn across threads.
@Suite(.serialized) struct Resources {
    /// At the descriptor limit the listener pauses instead of spinning (CPU stays near zero),
    /// and service resumes when clients leave.
    @Test(.enabled(if: Harness.which("prlimit") != nil, "needs prlimit (util-linux)"))
    func theDescriptorLimitPausesAcceptingWithoutSpinning() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let p = try bed.proxy("""
        defaults
            mode http
            timeout client 30s
            timeout http-keep-alive 30s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: port)
        let pid = p.processIdentifier
        #expect(try Harness.run(Harness.which("prlimit")!, ["--pid", String(pid), "--nofile=40:40"]).status == 0)
        // 60 idle clients: more than the 40 descriptors allow.
        let holder = try bed.start(Harness.which("python3")!, ["-c", """
        import os, socket, time
        held = [socket.create_connection(('127.0.0.1', \(port))) for _ in range(60)]
        open('\(bed.directory)/held', 'w').close()
        while not os.path.exists('\(bed.directory)/release'):
            time.sleep(0.05)
        for s in held: s.close()
        time.sleep(30)
        """])
        #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: bed.directory + "/held") })
        let before = cpuSeconds(pid) ?? 0
        let started = Date()
        // Watch for 2 seconds: a spinning loop would burn most of a core.
        _ = TestBed.waitUntil(timeout: 2) { false }
        let used = (cpuSeconds(pid) ?? 0) - before
        let share = used / Date().timeIntervalSince(started)
        #expect(share < 0.05, "CPU share at the limit: \(share)")
        #expect(bed.log().contains("reached process FD limit"), "\(bed.log())")
        FileManager.default.createFile(atPath: bed.directory + "/release", contents: nil)
        #expect(TestBed.waitUntil(timeout: 10) { (try? TestBed.curl(["-m", "2", "http://127.0.0.1:\(port)/"]).0) == 200 })
        kill(holder.processIdentifier, SIGKILL)
    }

    /// The limit is raised at start to what maxconn needs, and when it cannot be, the start
    /// fails with the figures (strict-limits, HAProxy 2.6's default) or warns (`no strict-limits`).
    @Test(.enabled(if: Harness.which("prlimit") != nil && getuid() == 0, "needs prlimit and root"))
    func theDescriptorLimitFollowsMaxconn() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let p = try bed.proxy("""
        global
            maxconn 5000
        defaults
            mode http
            timeout client 10s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200

        """, waitFor: port)
        let limits = bed.read("/proc/\(p.processIdentifier)/limits")
        let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") } ?? ""
        let soft = Int(line.split(separator: " ").dropFirst(3).first ?? "") ?? 0
        #expect(soft >= 10_000, "\(line)")
        // As nobody, under a hard limit of 100: raising it is impossible.
        let cfg = bed.directory + "/p.cfg"
        try "global\n    maxconn 1000\ndefaults\n    mode http\n    timeout client 1s\nfrontend f\n    bind 127.0.0.1:\(TestBed.freePort())\n    http-request return status 200\n".write(toFile: cfg, atomically: true, encoding: .utf8)
        try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bed.directory)
        try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: cfg)
        let args = ["--nofile=100:100", Harness.which("setpriv")!, "--reuid=65534", "--regid=65534", "--clear-groups", Harness.proxyBinary, "-f", cfg]
        let strict = try Harness.run(Harness.which("prlimit")!, args)
        #expect(strict.status == 1 && strict.stderr.contains("the file descriptor limit (100, hard 100) is too low for maxconn 1000, which needs 20"), "\(strict.stderr)")
        try "global\n    maxconn 1000\n    no strict-limits\n".appending(String(bed.read(cfg).dropFirst("global\n    maxconn 1000\n".count))).write(toFile: cfg, atomically: true, encoding: .utf8)
        let lenient = try Harness.run(Harness.which("timeout")!, ["1", Harness.which("prlimit")!] + args)
        #expect(lenient.stderr.contains("warning: the file descriptor limit (100, hard 100) is too low"), "\(lenient.stderr)")
    }

    /// Splice pipes are what the descriptor limit leaves after the connections: a limit that
    /// holds `maxconn` but not the default pipe share still starts, with fewer pipes (shown
    /// in `show info`, taken two per spliced connection); an explicit `maxpipes` that does not
    /// fit is refused like `maxconn`.
    @Test(.enabled(if: Harness.which("prlimit") != nil && getuid() == 0, "needs prlimit and root"))
    func splicePipesTakeWhatTheLimitLeaves() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let echo = try bed.backend(name: "echo", kind: "echo")
        let socketName = "proxy-pipes-\(port)"
        let config = """
        global
            maxconn 1000
            stats socket abns@\(socketName) level admin
        \(TestBed.defaults("tcp"))
        frontend f
            bind 127.0.0.1:\(port)
            default_backend echo
        backend echo
            server e 127.0.0.1:\(echo)

        """
        let cfg = bed.directory + "/p.cfg"
        try config.write(toFile: cfg, atomically: true, encoding: .utf8)
        try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bed.directory)
        try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: cfg)
        let asNobody = [Harness.which("setpriv")!, "--reuid=65534", "--regid=65534", "--clear-groups", Harness.proxyBinary]
        try bed.start(Harness.which("prlimit")!, ["--nofile=2200:2200"] + asNobody + ["-f", cfg], log: bed.proxyLog)
        #expect(TestBed.waitForPort(port), "\(bed.log())")
        let info = cli("@" + socketName, "show info") ?? ""
        let maxpipes = info.split(separator: "\n").first { $0.hasPrefix("Maxpipes: ") }.flatMap { Int($0.dropFirst(10)) } ?? -1
        #expect(info.contains("Ulimit-n: 2200\n") && maxpipes > 0 && maxpipes < 500, "\(info)")
        // One connection open through the proxy holds two pipes; closed, it gives them back.
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(connected == 0)
        _ = "ping\n".withCString { send(client, $0, 5, 0) }
        var reply = [UInt8](repeating: 0, count: 16)
        #expect(recv(client, &reply, 16, 0) == 5)
        #expect(TestBed.waitUntil { (cli("@" + socketName, "show info") ?? "").contains("PipesUsed: 2\n") })
        close(client)
        #expect(TestBed.waitUntil { (cli("@" + socketName, "show info") ?? "").contains("PipesUsed: 0\n") })
        // An explicit maxpipes the limit cannot hold is refused with the figures.
        try config.replacingOccurrences(of: "maxconn 1000\n", with: "maxconn 1000\n    maxpipes 500\n").write(toFile: cfg, atomically: true, encoding: .utf8)
        let refused = try Harness.run(Harness.which("prlimit")!, ["--nofile=2200:2200"] + asNobody + ["-c", "-f", cfg])
        #expect(refused.status == 0, "-c does not apply limits: \(refused.stderr)")
        let started = try Harness.run(Harness.which("timeout")!, ["5", Harness.which("prlimit")!, "--nofile=2200:2200"] + asNobody + ["-f", cfg])
        #expect(started.status == 1 && started.stderr.contains("maxconn 1000 and maxpipes 500, which need 30"), "\(started.stderr)")
    }

    /// `nosplice` and `-dS`: no pipes at all, and a TCP connection is copied through buffers
    /// (it still works, and holds no pipe).
    @Test(arguments: ["global", "command line"])
    func noSpliceHoldsNoPipe(_ how: String) throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let echo = try bed.backend(name: "echo", kind: "echo")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            \(how == "global" ? "nosplice" : "")
        \(TestBed.defaults("tcp"))
        frontend f
            bind 127.0.0.1:\(port)
            default_backend echo
        backend echo
            server e 127.0.0.1:\(echo)

        """, waitFor: port, arguments: how == "global" ? [] : ["-dS"])
        #expect((cli(socket, "show info") ?? "").contains("Maxpipes: 0\n"), "\(cli(socket, "show info") ?? "")")
        #expect(String(decoding: TestBed.raw(port, Array("ping\n".utf8), halfClose: true), as: UTF8.self) == "ping\n")
        #expect((cli(socket, "show info") ?? "").contains("PipesUsed: 0\n"))
    }

    /// `max-spread-checks`: servers checked every 20 s all have their first check within a
    /// second when the spread is capped at 300 ms (uncapped, the fifth waits 16 s).
    @Test(arguments: [1, 2])
    func maxSpreadChecksBoundsTheFirstChecks(threads: Int) throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            nbthread \(threads)
            max-spread-checks 300ms
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:\(app) check inter 20s
            server b 127.0.0.1:\(app) check inter 20s
            server c 127.0.0.1:\(app) check inter 20s
            server d 127.0.0.1:\(app) check inter 20s
            server e 127.0.0.1:\(app) check inter 20s

        """, waitFor: port)
        #expect(TestBed.waitUntil(timeout: 2) { ["a", "b", "c", "d", "e"].allSatisfy { statRow(socket, "app", $0)["check_status"] == "L4OK" } },
                "\(["a", "b", "c", "d", "e"].map { statRow(socket, "app", $0)["check_status"] ?? "?" })")
    }

    /// `set-dumpable`: started as root with `user nobody`, the process stays dumpable (its
    /// /proc files are the new user's, where a non-dumpable process's stay root's), and its
    /// core size limit is raised to the hard one.
    @Test(.enabled(if: getuid() == 0, "needs root to change user"))
    func setDumpableKeepsCoreDumpsAfterAChangeOfUser() throws {
        for dumpable in [true, false] {
            let bed = try TestBed()
            let port = TestBed.freePort()
            let proxy = try bed.proxy("""
            global
                user nobody
                \(dumpable ? "set-dumpable" : "")
            \(TestBed.defaults("http"))
            frontend web
                bind 127.0.0.1:\(port)
                http-request return status 200 content-type text/plain string ok

            """, waitFor: port)
            let owner = (try? FileManager.default.attributesOfItem(atPath: "/proc/\(proxy.processIdentifier)/status")[.ownerAccountID] as? Int) ?? -1
            #expect(owner == (dumpable ? 65534 : 0), "dumpable \(dumpable): /proc status owned by \(owner)")
            if dumpable {
                let limits = (try? String(contentsOfFile: "/proc/\(proxy.processIdentifier)/limits", encoding: .utf8)) ?? ""
                let core = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }.map { $0.split(separator: " ", omittingEmptySubsequences: true) } ?? []
                #expect(core.count >= 6 && core[4] == core[5], "\(core)")
            }
            bed.stop()
        }
    }

    /// With four threads, a server's maxconn is never exceeded, however the requests arrive.
    @Test func serverMaxconnHoldsWithFourThreads() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        try bed.proxy("""
        global
            nbthread 4
        defaults
            mode http
            timeout connect 2s
            timeout client 30s
            timeout server 30s
            timeout queue 30s
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s1 127.0.0.1:\(b) maxconn 2

        """, waitFor: port)
        let statuses = try parallelStatuses(Array(repeating: "http://127.0.0.1:\(port)/slow?ms=150", count: 40), timeout: 30)
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        let peak = TestBed.peak(b)
        #expect(peak == 2, "the server had \(peak) requests at once; its maxconn is 2")
    }
}
