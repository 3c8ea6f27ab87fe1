import Foundation
import Testing

/// `-W` / `-Ws`: a master supervising one worker. Reloads by SIGUSR2 and by the master CLI
/// under load lose no request and say `Success=1`; a bad configuration says `Success=0`
/// and the worker serves on; the environment file is read at every reload, and a line
/// removed from it reverts; a worker that dies is replaced; a burst of reloads is merged;
/// `-Ws` speaks sd_notify; SIGTERM ends everything.
@Suite(.serialized) struct MasterWorkerTests {
    func config(_ port: Int, _ app: Int) -> String {
        """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 503 if { env_int(MAINT) gt 0 }
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """
    }

    /// Starts a master; returns it and the master CLI's path.
    func startMaster(_ bed: TestBed, port: Int, app: Int, extra: [String] = [], environment: [String: String] = [:]) throws -> (Process, String) {
        let cfg = bed.directory + "/m.cfg", master = bed.directory + "/master.sock"
        try config(port, app).write(toFile: cfg, atomically: true, encoding: .utf8)
        if !FileManager.default.fileExists(atPath: bed.directory + "/env") {
            try "MAINT=0\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        }
        let p = try bed.start(Harness.proxyBinary, ["-W", "-f", cfg, "-e", bed.directory + "/env", "-S", master] + extra,
                              log: bed.directory + "/master.log", environment: environment)
        #expect(TestBed.waitForPort(port), "\(bed.read(bed.directory + "/master.log"))")
        // The port answers as soon as the worker serves; the master reads its verdict just after.
        #expect(TestBed.waitUntil { self.workers(master).count == 1 }, "\(bed.read(bed.directory + "/master.log"))")
        return (p, master)
    }

    func workers(_ master: String) -> [Int32] {
        let text = cli(master, "show proc") ?? ""
        guard let start = text.range(of: "# workers\n"), let end = text.range(of: "# old workers") else { return [] }
        return text[start.upperBound..<end.lowerBound].split(separator: "\n").compactMap { Int32($0.split(separator: " ").first ?? "") }
    }

    func status(_ port: Int) -> Int { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.0 ?? 0 }

    @Test func reloadsUnderLoadAndTheirVerdicts() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (master, socket) = try startMaster(bed, port: port, app: app)
        defer { kill(master.processIdentifier, SIGTERM) }
        let proc = cli(socket, "show proc") ?? ""
        #expect(proc.hasPrefix("#<PID>          <type>          <reloads>       <uptime>        <version>      \n"), "\(proc)")
        #expect(proc.contains(" master          0 [failed: 0]   "), "\(proc)")
        #expect(proc.contains("\(master.processIdentifier)") && proc.contains("master") && workers(socket).count == 1, "\(proc)")
        let load = try SteadyLoad(port: port, directory: bed.directory)
        #expect(TestBed.waitUntil { self.status(port) == 200 })
        // 100 reloads by signal and 100 by the CLI, under load (the issue's count).
        for i in 0..<100 {
            let before = workers(socket)
            kill(master.processIdentifier, SIGUSR2)
            #expect(TestBed.waitUntil { let w = self.workers(socket); return w.count == 1 && w != before }, "SIGUSR2 reload \(i)")
        }
        for i in 0..<100 {
            let answer = cli(socket, "reload") ?? ""
            #expect(answer.hasPrefix("Success=1\n--\n"), "CLI reload \(i): \(answer)")
        }
        let result = load.finish()
        #expect(result.failed == 0 && result.ok > 0, "\(result)")
        // A bad configuration: Success=0, and the worker serves on.
        let serving = workers(socket)
        try (config(port, app) + "    frobnicate\n").write(toFile: bed.directory + "/m.cfg", atomically: true, encoding: .utf8)
        let bad = cli(socket, "reload") ?? ""
        #expect(bad.hasPrefix("Success=0\n--\n"), "\(bad)")
        #expect(workers(socket) == serving && status(port) == 200)
        #expect(cli(socket, "show proc")?.contains("[failed: 1]") == true)
        #expect(bed.read(bed.directory + "/master.log").contains("keyword 'frobnicate'"))
    }

    /// The seed's switch under systemd: the env file flips HAPROXY_MAINT at a reload, and
    /// traffic moves to the maintenance backend and back under load, without one failed
    /// request; a line removed from the file reverts to the inherited value.
    @Test func envFileAtEveryReloadAndRevert() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/master.sock"
        try """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            acl maintenance_mode env_int(HAPROXY_MAINT) gt 0
            use_backend maintenance if maintenance_mode
            default_backend app
        backend app
            server s 127.0.0.1:\(app)
        backend maintenance
            http-request return status 200 content-type text/plain string "maintenance"

        """.write(toFile: cfg, atomically: true, encoding: .utf8)
        try "HAPROXY_MAINT=0\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        let master = try bed.start(Harness.proxyBinary, ["-Ws", "-f", cfg, "-e", bed.directory + "/env", "-S", socket],
                                   log: bed.directory + "/master.log", environment: ["HAPROXY_MAINT": "0"])
        defer { kill(master.processIdentifier, SIGTERM) }
        #expect(TestBed.waitUntil { self.workers(socket).count == 1 }, "\(bed.read(bed.directory + "/master.log"))")
        func body() -> String { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.1 ?? "" }
        #expect(body() != "maintenance")
        let load = try SteadyLoad(port: port, directory: bed.directory)
        /// Connections the serving worker has taken, from its runtime API through the master.
        func taken() -> Int {
            let info = cli(socket, "@1 show info") ?? ""
            guard let line = info.split(separator: "\n").first(where: { $0.hasPrefix("CumConns: ") }) else { return 0 }
            return Int(line.dropFirst(10)) ?? 0
        }
        #expect(TestBed.waitUntil { taken() >= 20 }, "the load reaches the worker")
        try "HAPROXY_MAINT=1\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(body() == "maintenance", "the file's HAPROXY_MAINT=1 applies at the reload")
        // The line removed: the inherited HAPROXY_MAINT=0 is back (the master never applied the file).
        try "# nothing\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(body() != "maintenance")
        #expect(TestBed.waitUntil { taken() >= 20 }, "the load reaches the last worker")
        let result = load.finish()
        #expect(result.failed == 0 && result.ok > 0, "\(result)")
    }

    @Test func aDeadWorkerIsReplacedAndBurstsMerge() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (master, socket) = try startMaster(bed, port: port, app: app)
        let first = workers(socket)
        try #require(first.count == 1)
        kill(first[0], SIGKILL)
        // The master kept the listeners: a connection made while no worker runs waits in the
        // backlog and is served by the replacement, instead of being refused.
        usleep(100_000)
        #expect((try? TestBed.curl(["http://127.0.0.1:\(port)/"], timeout: 8))?.0 == 200, "refused while the worker was replaced")
        #expect(TestBed.waitUntil(timeout: 10) { let w = self.workers(socket); return w.count == 1 && w != first })
        #expect(TestBed.waitUntil { self.status(port) == 200 })
        #expect(bed.read(bed.directory + "/master.log").contains("exited unexpectedly"))
        // 50 reload signals at once: at most two reloads more.
        let before = Int(cli(socket, "show proc")?.split(separator: "\n")[1].split(separator: " ", omittingEmptySubsequences: true)[2] ?? "") ?? -1
        // The file changes in the middle of the burst: the reload after it reads the change.
        for i in 0..<50 {
            if i == 25 {
                try config(port, app).replacingOccurrences(of: "default_backend app", with: "http-response set-header X-Generation last\n    default_backend app")
                    .write(toFile: bed.directory + "/m.cfg", atomically: true, encoding: .utf8)
            }
            kill(master.processIdentifier, SIGUSR2)
            usleep(2_000)
        }
        usleep(1_500_000)
        let after = Int(cli(socket, "show proc")?.split(separator: "\n")[1].split(separator: " ", omittingEmptySubsequences: true)[2] ?? "") ?? -1
        #expect(after > before && after - before <= 2, "\(before) -> \(after)")
        #expect(TestBed.waitUntil { ((try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.2 ?? "").lowercased().contains("x-generation: last") },
                "the last configuration serves")
        // SIGTERM: the workers stop, then the master, with 0.
        let last = workers(socket)
        kill(master.processIdentifier, SIGTERM)
        master.waitUntilExit()
        #expect(master.terminationStatus == 0)
        #expect(last.allSatisfy { kill($0, 0) != 0 })
    }

    @Test func systemdNotify() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let path = bed.directory + "/notify.sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0)
        var messages: [String] = []
        func collect(until: (String) -> Bool) -> Bool {
            TestBed.waitUntil {
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n > 0 { messages.append(String(decoding: buffer[0..<n], as: UTF8.self)) }
                return messages.contains(where: until)
            }
        }
        let (master, socket) = try startMaster(bed, port: port, app: app, extra: ["-Ws"], environment: ["NOTIFY_SOCKET": path])
        let pid = master.processIdentifier
        #expect(collect { $0.contains("READY=1") }, "\(messages)")
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(collect { $0.contains("STATUS=Ready, generation 1") }, "\(messages)")
        try (config(port, app) + "    frobnicate\n").write(toFile: bed.directory + "/m.cfg", atomically: true, encoding: .utf8)
        #expect(cli(socket, "reload")?.hasPrefix("Success=0") == true)
        #expect(collect { $0.contains("STATUS=Reload 2 failed") }, "\(messages)")
        kill(pid, SIGTERM)
        #expect(collect { $0.contains("STOPPING=1") }, "\(messages)")
        // The exact sequence: start, a good reload, a bad one (READY=1 again, with why), stop.
        let shapes = messages.map { m -> String in
            m.split(separator: "\n").map { line -> String in
                if line.hasPrefix("MONOTONIC_USEC=") { return "MONOTONIC_USEC=N" }
                if line.hasPrefix("STATUS=Reload 2 failed: ") && line.contains("frobnicate") { return "STATUS=Reload 2 failed: WHY" }
                return String(line)
            }.joined(separator: "|")
        }
        #expect(shapes == [
            "READY=1|MAINPID=\(pid)|STATUS=Ready, generation 0",
            "RELOADING=1|MONOTONIC_USEC=N|STATUS=Reloading",
            "READY=1|MAINPID=\(pid)|STATUS=Ready, generation 1",
            "RELOADING=1|MONOTONIC_USEC=N|STATUS=Reloading",
            "READY=1|STATUS=Reload 2 failed: WHY",
            "STOPPING=1",
        ], "\(messages)")
    }

    /// Long-lived connections on every old worker and quick reloads: never more old workers
    /// than `mworker-max-old-workers`, the oldest stopped first, and `show proc` lists them.
    @Test func oldWorkersAreBounded() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/master.sock"
        try ("global\n    mworker-max-old-workers 2\n" + config(port, app)).write(toFile: cfg, atomically: true, encoding: .utf8)
        // Without -W the line would do nothing: the check says so.
        let check = try Harness.run(Harness.proxyBinary, ["-c", "-f", cfg])
        #expect(check.status == 0 && check.stderr.contains("m.cfg:2: warning: 'mworker-max-reloads' and 'mworker-max-old-workers' act only in master-worker mode"), "\(check.stderr)")
        let master = try bed.start(Harness.proxyBinary, ["-W", "-f", cfg, "-S", socket], log: bed.directory + "/master.log")
        defer { kill(master.processIdentifier, SIGTERM) }
        #expect(TestBed.waitForPort(port))
        var clients: [Process] = []
        defer { for c in clients { c.terminate() } }
        for i in 0..<20 {
            clients.append(try TestBed.slowRequest(port, ms: 30_000))
            #expect(TestBed.waitUntil { (cli(socket, "@1 show info") ?? "").contains("CurrConns: 1\n") }, "reload \(i)")
            #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true, "reload \(i)")
            let text = cli(socket, "show proc") ?? ""
            let olds = text.components(separatedBy: "# old workers\n").last?.split(separator: "\n").count ?? -1
            #expect(olds <= 2, "\(text)")
        }
        let text = cli(socket, "show proc") ?? ""
        #expect(text.components(separatedBy: "# old workers\n").last?.split(separator: "\n").count == 2, "\(text)")
        #expect(bed.read(bed.directory + "/master.log").contains("more than 2 old workers (mworker-max-old-workers); stopping the oldest"))
    }
}
