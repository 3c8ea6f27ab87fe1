import Foundation
import Glibc
import Testing

/// Sends one command line to a UNIX stats socket and returns everything it answers.
func cli(_ path: String, _ line: String) -> String? {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    // "@name" is an abstract name (abns@ in the config).
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let name = path.hasPrefix("@") ? [0] + Array(path.utf8.dropFirst()) : Array(path.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (i, b) in name.prefix(107).enumerated() { raw[i] = b }
    }
    let length = path.hasPrefix("@") ? MemoryLayout<sa_family_t>.size + name.count : MemoryLayout<sockaddr_un>.size
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(length)) }
    }
    guard connected == 0 else { return nil }
    var timeout = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let bytes = Array((line + "\n").utf8)
    guard send(fd, bytes, bytes.count, 0) == bytes.count else { return nil }
    var answer: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = recv(fd, &chunk, chunk.count, 0)
        if n <= 0 { break }
        answer += chunk[0..<n]
    }
    return String(decoding: answer, as: UTF8.self)
}

/// `stats socket`: the runtime API's first commands, and HAProxy's `-x` in both directions.
@Suite(.serialized) struct StatsSocketAndDashX {
    func config(port: Int, socket: String, options: String = "mode 600 level admin expose-fd listeners") -> String {
        """
        global
            stats socket \(socket) \(options)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string "proxy"

        """
    }

    /// The same config for HAProxy (answering "haproxy"), written to h.cfg; nil without haproxy.
    func haproxyConfig(_ bed: TestBed, port: Int, socket: String) throws -> (binary: String, config: String)? {
        guard let haproxy = Harness.which("haproxy") else { return nil }
        let path = bed.directory + "/h.cfg"
        try config(port: port, socket: socket).replacingOccurrences(of: "string \"proxy\"", with: "string \"haproxy\"")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return (haproxy, path)
    }

    @Test func answersCommandsAndFollowsTheNewestProcess() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let old = try bed.proxy(config(port: port, socket: socket), waitFor: port)
        let info = cli(socket, "show info") ?? ""
        #expect(info.contains("Pid: \(old.processIdentifier)\n") && info.contains("Stopping: 0\n") && info.hasSuffix("\n\n"), "\(info)")
        let mode = (try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        let both = cli(socket, "help; show foo") ?? ""
        #expect(both.contains("show info") && both.contains("Unknown command: 'show foo'"), "\(both)")
        #expect(!bed.log().contains("not enforced"))
        // A reload: the path now reaches the new process, and the old one leaves it alone.
        let (new, _) = try bed.startProxy(config(port: port, socket: socket), name: "new.cfg",
                                          arguments: ["-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { !old.isRunning })
        #expect(TestBed.waitUntil { (cli(socket, "show info") ?? "").contains("Pid: \(new.processIdentifier)\n") })
        // A reload that fails on its own stats socket leaves the running one in place.
        let bad = config(port: port, socket: bed.directory + "/no/such/dir/api.sock")
        try bad.write(toFile: bed.directory + "/bad.cfg", atomically: true, encoding: .utf8)
        let r = try Harness.proxy(["-f", bed.directory + "/bad.cfg", "-sf", String(new.processIdentifier)])
        #expect(r.status != 0 && r.stderr.contains("bad.cfg:2: error: stats socket"), "\(r.stderr)")
        #expect(new.isRunning && (cli(socket, "show info") ?? "").contains("Pid: \(new.processIdentifier)\n"))
        // One that fails after its socket took the name (at chroot) gives the name back.
        let late = config(port: port, socket: socket).replacingOccurrences(of: "global\n", with: "global\n    chroot \(bed.directory)/missing\n")
        try late.write(toFile: bed.directory + "/late.cfg", atomically: true, encoding: .utf8)
        let r2 = try Harness.proxy(["-f", bed.directory + "/late.cfg", "-sf", String(new.processIdentifier)])
        #expect(r2.status != 0 && r2.stderr.contains("cannot chroot"), "\(r2.stderr)")
        #expect(new.isRunning && (cli(socket, "show info") ?? "").contains("Pid: \(new.processIdentifier)\n"))
        #expect(!bed.names().contains { $0.hasSuffix(".tmp") || $0.hasSuffix(".bak") })
        // The last process stopping removes its socket.
        kill(new.processIdentifier, SIGUSR1)
        #expect(TestBed.waitUntil { !new.isRunning })
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    /// With `chroot` (and root), names are handled through the directory opened before it:
    /// a reload leaves no temporary or backup names, and the last process removes its socket.
    @Test(.enabled(if: Harness.isRoot, "chroot needs root"))
    func reloadsWithAChrootAndAnAbstractName() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let abstract = "proxy-test-\(getpid())-\(port)"
        try FileManager.default.createDirectory(atPath: bed.directory + "/jail", withIntermediateDirectories: true)
        let cfg = config(port: port, socket: socket)
            .replacingOccurrences(of: "global\n", with: "global\n    chroot \(bed.directory)/jail\n    stats socket abns@\(abstract) level admin\n")
        let old = try bed.proxy(cfg, waitFor: port)
        #expect((cli("@" + abstract, "show info") ?? "").contains("Pid: \(old.processIdentifier)\n"))
        let (new, log) = try bed.startProxy(cfg, name: "new.cfg", arguments: ["-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { !old.isRunning })
        #expect(TestBed.waitUntil { (cli(socket, "show info") ?? "").contains("Pid: \(new.processIdentifier)\n") }, "\(bed.read(log))")
        #expect((cli("@" + abstract, "show info") ?? "").contains("Pid: \(new.processIdentifier)\n"), "\(bed.read(log))")
        #expect(!bed.names().contains { $0.hasSuffix(".tmp") || $0.hasSuffix(".bak") })
        kill(new.processIdentifier, SIGUSR1)
        #expect(TestBed.waitUntil { !new.isRunning })
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    /// HAProxy with `expose-fd listeners` hands its sockets to `proxy -x`.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func takesTheSameSocketsFromHAProxy() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let haproxySocket = bed.directory + "/haproxy.sock"
        guard let (haproxy, h) = try haproxyConfig(bed, port: port, socket: haproxySocket) else { return }
        let old = try bed.start(haproxy, ["-f", h], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(port), "haproxy: \(bed.read(bed.directory + "/haproxy.log"))")
        let inode = listeningInode(port)
        let (new, log) = try bed.startProxy(config(port: port, socket: bed.directory + "/api.sock"), name: "new.cfg",
                                            arguments: ["-x", haproxySocket, "-sf", String(old.processIdentifier)])
        bed.proxy = new
        #expect(TestBed.waitUntil { !old.isRunning }, "haproxy did not stop")
        #expect(bed.read(log).contains("taken over"), "\(bed.read(log))")
        #expect(listeningInode(port) == inode && inode != nil)
        let (code, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        #expect(code == 200 && body == "proxy")
    }

    /// `haproxy -x` takes the same sockets from our stats socket: the wire format is HAProxy's.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func handsTheSameSocketsToHAProxy() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        guard let (haproxy, h) = try haproxyConfig(bed, port: port, socket: bed.directory + "/haproxy.sock") else { return }
        let old = try bed.proxy(config(port: port, socket: socket), waitFor: port)
        let inode = listeningInode(port)
        let new = try bed.start(haproxy, ["-f", h, "-x", socket, "-sf", String(old.processIdentifier)],
                                log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitUntil { !old.isRunning }, "proxy did not stop")
        #expect(new.isRunning, "\(bed.read(bed.directory + "/haproxy.log"))")
        #expect(listeningInode(port) == inode && inode != nil)
        let (code, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        #expect(code == 200 && body == "haproxy")
    }

    /// Without `expose-fd listeners` nothing is handed out; `-x` says why and binds afresh.
    @Test func dashXWithoutExposeFDWarnsAndBindsAfresh() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        // No -sf: the handover endpoint is not asked, so only -x could bring the socket.
        _ = try bed.proxy(config(port: port, socket: socket, options: "level admin"), waitFor: port)
        let (new, log) = try bed.startProxy(config(port: port + 0, socket: bed.directory + "/api2.sock"), name: "new.cfg",
                                            arguments: ["-x", socket])
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") }, "\(bed.read(log))")
        #expect(bed.read(log).contains("-x: '\(socket)' sent no sockets; its 'stats socket' line needs 'expose-fd listeners'"))
        #expect(!bed.read(log).contains("taken over"))
        kill(new.processIdentifier, SIGTERM)
    }
}
