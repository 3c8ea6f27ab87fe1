import Foundation
import Glibc
import Testing

/// A steady load (Helpers/load.py) against one port, stopped and read at the end.
final class SteadyLoad {
    let process: Process
    let stopFile: String
    let output = Pipe()

    init(port: Int, directory: String, keepAlive: Int = 4, close: Int = 4) throws {
        stopFile = directory + "/load.stop"
        process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.which("python3") ?? "/usr/bin/python3")
        process.arguments = [Harness.root + "/Tests/EndToEndTests/Helpers/load.py", String(port), stopFile,
                             "--keepalive", String(keepAlive), "--close", String(close)]
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// Stops the clients and returns (requests answered 200, requests failed, first reasons).
    func finish() -> (ok: Int, failed: Int, errors: [String]) {
        FileManager.default.createFile(atPath: stopFile, contents: nil)
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return (0, -1, ["no report"]) }
        return (json["ok"] as? Int ?? 0, json["failed"] as? Int ?? -1, json["errors"] as? [String] ?? [])
    }
}

/// The reload fault matrix: under a steady load of keep-alive and new connections, a reload
/// that fails in one way after another must exit non-zero with the reason, and leave the old
/// process serving, the pidfile naming it and its stats socket answering, with not one
/// failed request. A good reload at the end takes over, still without a failure.
@Suite(.serialized) struct ReloadFaults {
    struct Case {
        let name: String
        /// Extra lines for the global section, and for the frontend.
        var global = ""
        var frontend = ""
        var defaults = ""
        var arguments: [String] = []
        /// The reload runs as nobody (for an unreadable config: root reads anything).
        var asNobody = false
        /// Text the reload's stderr must contain.
        let reason: String
    }

    func config(port: Int, backend: Int, socket: String, _ c: Case? = nil) -> String {
        """
        global
            stats socket \(socket) mode 600 level admin
            hard-stop-after 10s
        \(c?.global ?? "")
        \(TestBed.defaults("http"))
            timeout http-keep-alive 10s
        \(c?.defaults ?? "")
        frontend web
            bind 127.0.0.1:\(port)
        \(c?.frontend ?? "")
            default_backend app
        backend app
            server s1 127.0.0.1:\(backend)

        """
    }

    @Test(.enabled(if: Harness.which("setpriv") != nil, "needs setpriv (util-linux)"))
    func everyFailedReloadLeavesTheOldProcessServing() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "app")
        let port = TestBed.freePort()
        let socketPath = bed.directory + "/admin.sock"
        let pidFile = bed.directory + "/proxy.pid"
        let old = try bed.proxy(config(port: port, backend: b, socket: socketPath), waitFor: port, arguments: ["-p", pidFile])
        let oldPID = String(old.processIdentifier)
        #expect(TestBed.waitUntil { bed.read(pidFile) == oldPID + "\n" })
        let load = try SteadyLoad(port: port, directory: bed.directory)
        #expect(TestBed.waitUntil { TestBed.stats(b).count > 20 }, "the load did not start")

        // A port held by a socket without SO_REUSEPORT, foreign to the old process.
        let held = TestBed.freePort()
        let holder = try bed.start(Harness.which("python3")!, ["-c", "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',\(held)))\ns.listen(5)\ntime.sleep(1800)"])
        #expect(TestBed.waitForPort(held))
        // An impostor: another uid squats the handover name of a decoy old pid.
        let decoy = try bed.start("/bin/sleep", ["120"])
        let impostorPort = TestBed.freePort()
        try? FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: bed.directory)
        let impostor = try bed.start(Harness.which("setpriv")!, ["--reuid=65534", "--regid=65534", "--clear-groups",
            "/usr/bin/python3", Harness.root + "/Tests/EndToEndTests/Helpers/handover_peer.py",
            String(decoy.processIdentifier), String(impostorPort), bed.directory + "/impostor.ready"], log: bed.directory + "/impostor.log")
        #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: bed.directory + "/impostor.ready") }, "\(bed.read(bed.directory + "/impostor.log"))")

        let cases: [Case] = [
            Case(name: "unknown user", global: "    user nosuchuserxyz", reason: "cannot find user id for 'nosuchuserxyz'"),
            Case(name: "unknown group", global: "    group nosuchgroupxyz", reason: "cannot find group id for 'nosuchgroupxyz'"),
            Case(name: "missing chroot directory", global: "    chroot /nonexistent-proxy-chroot", reason: "cannot chroot to '/nonexistent-proxy-chroot'"),
            Case(name: "pidfile in a missing directory", arguments: ["-p", "/nonexistent-proxy-dir/p.pid"], reason: "cannot write pidfile '/nonexistent-proxy-dir/p.pid'"),
            Case(name: "port held by a foreign socket", frontend: "    bind 127.0.0.1:\(held)", reason: "cannot bind 127.0.0.1:\(held): Address already in use"),
            Case(name: "stats socket in a missing directory", global: "    stats socket /nonexistent-proxy-dir/s.sock", reason: "stats socket /nonexistent-proxy-dir/s.sock: cannot open the directory"),
            Case(name: "bad errorfile", defaults: "    errorfile 503 /nonexistent-proxy-dir/503.http", reason: "errorfile 503: cannot read '/nonexistent-proxy-dir/503.http'"),
            Case(name: "unreadable config", asNobody: true, reason: "cannot open configuration file: Permission denied"),
            Case(name: "address not on this host", frontend: "    bind 10.255.255.1:\(held)", reason: "cannot bind 10.255.255.1:\(held): Cannot assign requested address"),
            Case(name: "impostor handover endpoint", arguments: [String(decoy.processIdentifier)], reason: "belongs to pid"),
        ]
        for c in cases {
            let path = bed.directory + "/new.cfg"
            try config(port: port, backend: b, socket: socketPath, c).write(toFile: path, atomically: true, encoding: .utf8)
            var argv = ["-f", path, "-D", "-p", pidFile]
            if c.asNobody { try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: path) }
            argv += c.arguments.first == "-p" ? c.arguments : []
            argv += ["-sf", oldPID] + (c.arguments.first == "-p" ? [] : c.arguments)
            let r = c.asNobody
                ? try Harness.run(Harness.which("setpriv")!, ["--reuid=65534", "--regid=65534", "--clear-groups", Harness.proxyBinary] + argv)
                : try Harness.proxy(argv)
            #expect(r.status != 0, "\(c.name): the reload succeeded")
            #expect(r.stderr.contains(c.reason), "\(c.name): \(r.stderr)")
            #expect(old.isRunning, "\(c.name): the old process stopped")
            #expect(bed.read(pidFile) == oldPID + "\n", "\(c.name): the pidfile says \(bed.read(pidFile))")
            #expect(cli(socketPath, "show info")?.contains("Pid: \(oldPID)\n") == true, "\(c.name): the stats socket does not answer")
            #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200, "\(c.name)")
            #expect(!bed.names().contains { $0.hasSuffix(".tmp") }, "\(c.name): a temporary name was left")
        }
        #expect(decoy.isRunning && holder.isRunning, "a failed reload signalled a process it was not told to stop")
        _ = impostor

        // A good reload still takes over, as the daemon the pidfile names.
        let path = bed.directory + "/good.cfg"
        try config(port: port, backend: b, socket: socketPath).write(toFile: path, atomically: true, encoding: .utf8)
        let r = try Harness.proxy(["-f", path, "-D", "-p", pidFile, "-sf", oldPID])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(TestBed.waitUntil { !old.isRunning }, "the old process did not stop")
        let newPID = bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(cli(socketPath, "show info")?.contains("Pid: \(newPID)\n") == true)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        let (ok, failed, errors) = load.finish()
        #expect(failed == 0, "failed requests: \(errors)")
        #expect(ok > 100, "only \(ok) requests went through")
        FileHandle.standardError.write(Data("load: \(ok) ok, \(failed) failed\n".utf8))
        if let pid = Int32(newPID) { kill(pid, SIGTERM) }
    }
}
