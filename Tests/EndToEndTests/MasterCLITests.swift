import Foundation
import Glibc
import Testing

/// The master CLI beyond `reload` and `show proc`: `@1` and `@!PID` routing (old workers
/// included, so what an old worker still holds can be seen), the bare prefix and `prompt`,
/// `-S` options (mode, level), the reload answer's start-up log, `master-worker` in the
/// file with `exit-on-failure`, and `-D` with `-W`.
@Suite(.serialized) struct MasterCLITests {
    let worker = MasterWorkerTests()

    func oldWorkers(_ socket: String) -> [Int32] {
        let text = cli(socket, "show proc") ?? ""
        return (text.components(separatedBy: "# old workers\n").last ?? "").split(separator: "\n").compactMap { Int32($0.split(separator: " ").first ?? "") }
    }

    @Test func routingToTheWorkerAndToAnOldOne() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (master, socket) = try worker.startMaster(bed, port: port, app: app)
        defer { kill(master.processIdentifier, SIGTERM) }
        let serving = worker.workers(socket)
        try #require(serving.count == 1)
        // @1: the serving worker's runtime API, with no `stats socket` in the file.
        let info = cli(socket, "@1 show info") ?? ""
        #expect(info.contains("Pid: \(serving[0])\n"), "\(info)")
        // Several commands, a bare prefix, and back to the master on one line.
        let mixed = cli(socket, "@1 set weight app/s 50; @1; get weight app/s; @master; show proc") ?? ""
        #expect(mixed.contains("50 (initial 1)") && mixed.contains("# workers"), "\(mixed)")
        #expect(cli(socket, "@7 show info") == "Can't find the target PID matching the prefix '@7'\n\n")
        #expect(cli(socket, "@!1 show info") == "Can't find the target PID matching the prefix '@!1'\n\n")
        #expect(cli(socket, "show stat")?.hasPrefix("Unknown command: 'show stat'") == true)
        // A request held open keeps the first worker alive after a reload: its own counters
        // are reachable by @!PID (HAProxy shows an old worker's CSV header only, #1307).
        let slow = try TestBed.slowRequest(port, ms: 4000)
        defer { slow.terminate() }
        #expect(TestBed.waitUntil { (cli(socket, "@1 show info") ?? "").contains("CurrConns: 1\n") })
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(oldWorkers(socket) == serving)
        let old = cli(socket, "@!\(serving[0]) show info") ?? ""
        #expect(old.contains("Pid: \(serving[0])\n") && old.contains("Stopping: 1\n") && old.contains("CurrConns: 1\n"), "\(old)")
        let stat = (cli(socket, "@!\(serving[0]) show stat") ?? "").split(separator: "\n")
        #expect(stat.contains { $0.hasPrefix("app,s,0,0,1,") }, "the old worker's server row shows its connection: \(stat)")
        // The new worker's counters are its own.
        #expect((cli(socket, "@1 show info") ?? "").contains("CurrConns: 0\n"))
    }

    @Test func promptAndPayloads() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (master, socket) = try worker.startMaster(bed, port: port, app: app)
        defer { kill(master.processIdentifier, SIGTERM) }
        // socat keeps the session open: the prompt follows the target.
        let r = try Harness.run("/bin/sh", ["-c", "printf 'prompt\\nshow proc\\n@1\\nshow info\\n@master\\nquit\\n' | socat -t 2 - UNIX-CONNECT:\(socket)"])
        #expect(r.stdout.hasPrefix("master> #<PID>"), "\(r.stdout)")
        #expect(r.stdout.contains("master> @1> Name: proxy"), "\(r.stdout)")
        #expect(r.stdout.contains("@1> master> "), "\(r.stdout)")
    }

    /// A payload after `<<` goes to the worker with its command, up to the empty line.
    @Test func payloadsAreRouted() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let map = bed.directory + "/hosts.map"
        try "a.example app\n".write(toFile: map, atomically: true, encoding: .utf8)
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/master.sock"
        try """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request set-var(txn.site) req.hdr(host),map(\(map),none)
            http-request return status 200

        """.write(toFile: cfg, atomically: true, encoding: .utf8)
        let master = try bed.start(Harness.proxyBinary, ["-W", "-f", cfg, "-S", socket], log: bed.directory + "/master.log")
        defer { kill(master.processIdentifier, SIGTERM) }
        #expect(TestBed.waitUntil { self.worker.workers(socket).count == 1 }, "\(bed.read(bed.directory + "/master.log"))")
        let r = try Harness.run("/bin/sh", ["-c", "printf '@1 add map \(map) <<\\nb.example app\\nc.example app\\n\\n' | socat -t 2 - UNIX-CONNECT:\(socket)"])
        #expect(r.status == 0, "\(r.stderr)")
        let shown = cli(socket, "@1 show map \(map)") ?? ""
        #expect(shown.contains(" b.example app\n") && shown.contains(" c.example app\n"), "\(r.stdout) \(shown)")
    }

    @Test func socketOptionsLevelsAndTheStartUpLog() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/user.sock"
        try worker.config(port, app).write(toFile: cfg, atomically: true, encoding: .utf8)
        let bad = try Harness.run(Harness.proxyBinary, ["-W", "-f", cfg, "-S", socket + ",level,root"])
        #expect(bad.status == 1 && bad.stderr.contains("level is user, operator or admin, not 'root'"), "\(bad.stderr)")
        let master = try bed.start(Harness.proxyBinary, ["-W", "-f", cfg, "-S", socket + ",mode,640,level,user"], log: bed.directory + "/master.log")
        defer { kill(master.processIdentifier, SIGTERM) }
        #expect(TestBed.waitForPort(port))
        #expect(TestBed.waitUntil { self.worker.workers(socket).count == 1 })
        let mode = (try? FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o640)
        #expect(cli(socket, "reload") == "Permission denied\n\n")
        #expect(cli(socket, "@1 disable server app/s") == "Permission denied\n\n")
        #expect((cli(socket, "@1 show info") ?? "").contains("Name: proxy"))
        // The reload answer carries what the new worker said: file, line and why.
        let admin = bed.directory + "/admin.sock"
        kill(master.processIdentifier, SIGTERM)
        master.waitUntilExit()
        let second = try bed.start(Harness.proxyBinary, ["-W", "-f", cfg, "-S", admin], log: bed.directory + "/master2.log")
        defer { kill(second.processIdentifier, SIGTERM) }
        #expect(TestBed.waitUntil { self.worker.workers(admin).count == 1 })
        try (worker.config(port, app) + "    frobnicate\n").write(toFile: cfg, atomically: true, encoding: .utf8)
        let answer = cli(admin, "reload") ?? ""
        #expect(answer.hasPrefix("Success=0\n--\n") && answer.contains("m.cfg:12: error:") && answer.contains("frobnicate"), "\(answer)")
        #expect(cli(admin, "prompt; show proc")?.contains("master[ReloadFailed]> ") == true)
        // `proxy cli ... reload` (the unit's ExecReload=) fails with the reload, so
        // `systemctl reload` does too.
        let failing = try Harness.run(Harness.proxyBinary, ["cli", "-s", admin, "reload"])
        #expect(failing.status == 1 && failing.stdout.contains("Success=0"), "\(failing.stdout)")
        try worker.config(port, app).write(toFile: cfg, atomically: true, encoding: .utf8)
        let passing = try Harness.run(Harness.proxyBinary, ["cli", "-s", admin, "reload"])
        #expect(passing.status == 0 && passing.stdout.hasPrefix("Success=1"), "\(passing.stdout)")
    }

    /// `master-worker` in the file is -W; `exit-on-failure` ends everything when a worker
    /// dies, as HAProxy does (the default replaces it).
    @Test func masterWorkerKeywordAndExitOnFailure() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/master.sock"
        try ("global\n    master-worker exit-on-failure\n" + worker.config(port, app)).write(toFile: cfg, atomically: true, encoding: .utf8)
        let check = try Harness.run(Harness.proxyBinary, ["-c", "-f", cfg])
        #expect(check.status == 0, "\(check.stderr)")
        let master = try bed.start(Harness.proxyBinary, ["-f", cfg, "-S", socket], log: bed.directory + "/master.log")
        #expect(TestBed.waitUntil { self.worker.workers(socket).count == 1 }, "\(bed.read(bed.directory + "/master.log"))")
        let w = worker.workers(socket)[0]
        kill(w, SIGKILL)
        #expect(TestBed.waitUntil { !master.isRunning })
        #expect(master.terminationStatus != 0)
        #expect(bed.read(bed.directory + "/master.log").contains("exit-on-failure: stopping everything"))
        try ("global\n    master-worker exit-on-failur\n" + worker.config(port, app)).write(toFile: bed.directory + "/w.cfg", atomically: true, encoding: .utf8)
        let typo = try Harness.run(Harness.proxyBinary, ["-c", "-f", bed.directory + "/w.cfg"])
        #expect(typo.status != 0 && typo.stderr.contains("w.cfg:2:") && typo.stderr.contains("exit-on-failure"), "\(typo.stderr)")
    }

    /// `-D` with `-W`: the command returns once the first worker serves, the pidfile holds
    /// the master, and signals to it reload.
    @Test func daemonMaster() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let cfg = bed.directory + "/m.cfg", socket = bed.directory + "/master.sock", pidfile = bed.directory + "/proxy.pid"
        try worker.config(port, app).write(toFile: cfg, atomically: true, encoding: .utf8)
        let started = try Harness.run(Harness.proxyBinary, ["-W", "-D", "-f", cfg, "-p", pidfile, "-S", socket])
        #expect(started.status == 0, "\(started.stderr)")
        let pid = Int32(bed.read(pidfile).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        defer { if pid > 0 { kill(pid, SIGTERM) } }
        #expect(pid > 0 && kill(pid, 0) == 0)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200, "serving when -D returned")
        #expect((cli(socket, "show proc") ?? "").contains("\(pid)  "))
        let before = worker.workers(socket)
        kill(pid, SIGUSR2)
        #expect(TestBed.waitUntil { let w = self.worker.workers(socket); return w.count == 1 && w != before })
        // A bad file: -D -W says so and exits 1, nothing left running.
        try (worker.config(TestBed.freePort(), app) + "    frobnicate\n").write(toFile: bed.directory + "/bad.cfg", atomically: true, encoding: .utf8)
        let failed = try Harness.run(Harness.proxyBinary, ["-W", "-D", "-f", bed.directory + "/bad.cfg"])
        #expect(failed.status == 1 && failed.stderr.contains("frobnicate"), "\(failed.stderr)")
    }
}
