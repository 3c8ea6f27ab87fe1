import Foundation
import Glibc
import Testing

/// systemd's socket activation, driven by Debian's `systemd-socket-activate` (which sets
/// LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES as a `.socket` unit does): `bind fd@NAME` and
/// `bind fd@3` take the passed listener, a master passes it to its workers, and reloads and
/// replacements keep serving from that very socket.
@Suite(.serialized) struct SocketActivationTests {
    static let activate = Harness.which("systemd-socket-activate")

    func config(_ bind: String, _ text: String) -> String {
        """
        \(TestBed.defaults("http"))
        frontend web
            bind \(bind)
            http-request return status 200 content-type text/plain string "\(text)"

        """
    }

    func body(_ port: Int) -> String { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.1 ?? "" }

    @Test(.enabled(if: activate != nil, "needs systemd-socket-activate"))
    func aMasterPassesTheNamedSocketToEveryWorker() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let cfg = bed.directory + "/sa.cfg", socket = bed.directory + "/master.sock"
        try config("fd@web", "first").write(toFile: cfg, atomically: true, encoding: .utf8)
        // ExecStartPre= runs without the sockets: the name cannot be checked, and -c says so.
        let check = try Harness.run(Harness.proxyBinary, ["-c", "-f", cfg])
        #expect(check.status == 0 && check.stderr.contains("LISTEN_FDNAMES is not set"), "\(check.stderr)")
        let unit = try bed.start(Self.activate!, ["-l", "127.0.0.1:\(port)", "--fdname=web", Harness.proxyBinary, "-Ws", "-f", cfg, "-S", socket],
                                 log: bed.directory + "/unit.log")
        defer { unit.terminate() }
        // systemd-socket-activate starts the service at the first connection, as systemd does.
        #expect(TestBed.waitUntil { self.body(port) == "first" }, "\(bed.read(bed.directory + "/unit.log"))")
        // The worker may answer before its "serving" line reaches the log: wait for the line.
        #expect(TestBed.waitUntil { bed.read(bed.directory + "/unit.log").contains("serving web@fd@3") }, "\(bed.read(bed.directory + "/unit.log"))")
        try config("fd@web", "second").write(toFile: cfg, atomically: true, encoding: .utf8)
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(body(port) == "second")
        // A worker killed: its replacement takes the socket the master kept; a request made
        // meanwhile waits in the backlog instead of being refused.
        let serving = MasterWorkerTests().workers(socket)
        try #require(serving.count == 1)
        kill(serving[0], SIGKILL)
        #expect((try? TestBed.curl(["http://127.0.0.1:\(port)/"], timeout: 8))?.1 == "second")
        #expect(TestBed.waitUntil { let w = MasterWorkerTests().workers(socket); return w.count == 1 && w != serving })
        try config("fd@web", "third").write(toFile: cfg, atomically: true, encoding: .utf8)
        #expect(cli(socket, "reload")?.hasPrefix("Success=1") == true)
        #expect(body(port) == "third")
    }

    @Test(.enabled(if: activate != nil, "needs systemd-socket-activate"))
    func withoutAMasterAReloadTakesTheSocketOverTheHandover() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let cfg = bed.directory + "/sa.cfg"
        try config("fd@3", "one").write(toFile: cfg, atomically: true, encoding: .utf8)
        let unit = try bed.start(Self.activate!, ["-l", "127.0.0.1:\(port)", Harness.proxyBinary, "-f", cfg], log: bed.directory + "/unit.log")
        defer { unit.terminate() }
        #expect(TestBed.waitUntil { self.body(port) == "one" }, "\(bed.read(bed.directory + "/unit.log"))")
        // The reload runs from a shell, without LISTEN_*: fd 3 is not its own, yet `bind fd@3`
        // is served by the socket the old process declared as fd@3.
        try config("fd@3", "two").write(toFile: cfg, atomically: true, encoding: .utf8)
        let reload = try Harness.run(Harness.proxyBinary, ["-f", cfg, "-D", "-p", bed.directory + "/p.pid", "-sf", String(unit.processIdentifier)],
                                     removing: ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"])
        #expect(reload.status == 0, "\(reload.stderr)")
        let pid = Int32(bed.read(bed.directory + "/p.pid").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        defer { if pid > 0 { kill(pid, SIGTERM) } }
        #expect(body(port) == "two")
        #expect(TestBed.waitUntil { !unit.isRunning }, "the old process finished")
        #expect(body(port) == "two")
        // Started with no socket at fd 3: a clear refusal, not some other descriptor.
        let alone = try Harness.run(Harness.proxyBinary, ["-c", "-f", cfg])
        #expect(alone.status == 0)
        let refused = try Harness.run(Harness.proxyBinary, ["-f", cfg, "-D"])
        #expect(refused.status == 1 && refused.stderr.contains("sa.cfg:7: error: cannot bind fd@3") && refused.stderr.contains("socket activation"), "\(refused.stderr)")
    }
}
