import Foundation
import Testing

/// Maps and ACL files at run time: the commands answer as HAProxy 2.6 does (checked beside
/// it), a change steers the very next request (`use_backend %[...,map(...)]`, `deny if
/// { src -f FILE }`), writes need admin, and the entries changed at run time survive a
/// reload unless the file itself changed.
@Suite(.serialized) struct PatternCommandTests {
    func files(_ dir: String) throws {
        try "10.0.0.0/8\n192.168.1.1\n".write(toFile: dir + "/block.lst", atomically: true, encoding: .utf8)
        try "a.example.com app_a\nb.example.com app_b\n".write(toFile: dir + "/hosts.map", atomically: true, encoding: .utf8)
    }

    func config(_ dir: String, port: Int, app: Int, socket: String, level: String = "admin") -> String {
        """
        global
            stats socket \(socket) level \(level)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            acl blocked src -f \(dir)/block.lst
            http-request deny if blocked
            use_backend %[req.hdr(host),lower,map(\(dir)/hosts.map,app_default)]
        backend app_a
            http-request return status 200 content-type text/plain string "a"
        backend app_b
            http-request return status 200 content-type text/plain string "b"
        backend app_default
            http-request return status 200 content-type text/plain string "d" if { path / }
            server s 127.0.0.1:\(app)

        """
    }

    func host(_ port: Int, _ name: String) throws -> String {
        let (code, body, _) = try TestBed.curl(["-H", "Host: \(name)", "http://127.0.0.1:\(port)/"])
        return code == 200 ? String(body.prefix(1)) : "\(code)"
    }

    @Test func changesSteerTheNextRequest() throws {
        let bed = try TestBed()
        try files(bed.directory)
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let map = bed.directory + "/hosts.map", list = bed.directory + "/block.lst"
        let first = try bed.proxy(config(bed.directory, port: port, app: app, socket: socket), waitFor: port)
        #expect(try host(port, "A.example.com") == "a")
        #expect(try host(port, "c.example.com") == "d")  // no entry: the map's default, app_default
        #expect(cli(socket, "add map \(map) c.example.com app_b") == "\n")
        #expect(try host(port, "c.example.com") == "b")
        #expect(cli(socket, "set map \(map) c.example.com app_a") == "\n")
        #expect(try host(port, "c.example.com") == "a")
        #expect(cli(socket, "del map \(map) a.example.com") == "\n")
        #expect(try host(port, "a.example.com") == "d")
        #expect(cli(socket, "get map \(map) c.example.com") == "type=str, case=sensitive, found=yes, idx=tree, key=\"c.example.com\", value=\"app_a\", type=\"str\"\n\n")
        // The ACL file: this client is not blocked until its address is added.
        #expect(try host(port, "b.example.com") == "b")
        #expect(cli(socket, "add acl \(list) 127.0.0.0/8") == "\n")
        #expect(try host(port, "b.example.com") == "403")
        #expect(cli(socket, "del acl \(list) 127.0.0.0/8") == "\n")
        #expect(try host(port, "b.example.com") == "b")
        // A new version built aside, then made current at once.
        #expect(cli(socket, "prepare acl \(list)") == "New version created: 1\n\n")
        #expect(cli(socket, "add acl @1 \(list) 127.0.0.1") == "\n")
        #expect(try host(port, "b.example.com") == "b")
        #expect(cli(socket, "commit acl @1 \(list)") == "\n")
        #expect(try host(port, "b.example.com") == "403")
        #expect(cli(socket, "show acl \(list)")?.hasSuffix(" 127.0.0.1\n\n") == true)
        #expect(cli(socket, "clear acl \(list)") == "\n")
        // A payload: several entries at once.
        let payload = try Harness.run("/bin/sh", ["-c", "printf 'add map \(map) <<\\nx.example.com app_b\\ny.example.com app_a\\n\\n' | socat - UNIX-CONNECT:\(socket)"])
        #expect(payload.stdout == "\n", "\(payload.stdout)")
        #expect(try host(port, "x.example.com") == "b" && host(port, "y.example.com") == "a")
        // A reload with the same files keeps every change; the map's new entries still steer.
        let (second, log) = try bed.startProxy(config(bed.directory, port: port, app: app, socket: socket), name: "same.cfg",
                                               arguments: ["-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") && !first.isRunning }, "\(bed.read(log))")
        #expect(try host(port, "x.example.com") == "b" && host(port, "a.example.com") == "d")
        #expect(cli(socket, "show acl \(list)") == "\n")
        // A reload after the map file changed: the file wins, and says so.
        try "a.example.com app_b\n".write(toFile: map, atomically: true, encoding: .utf8)
        let (third, log3) = try bed.startProxy(config(bed.directory, port: port, app: app, socket: socket), name: "changed.cfg",
                                               arguments: ["-sf", String(second.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log3).contains("serving") && !second.isRunning }, "\(bed.read(log3))")
        #expect(bed.read(log3).contains("map \(map): the file changed; its runtime entries are dropped"), "\(bed.read(log3))")
        #expect(try host(port, "a.example.com") == "b" && host(port, "x.example.com") == "d")
        kill(third.processIdentifier, SIGTERM)
    }

    @Test func writesNeedAdmin() throws {
        let bed = try TestBed()
        try files(bed.directory)
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let map = bed.directory + "/hosts.map"
        try bed.proxy(config(bed.directory, port: port, app: app, socket: socket, level: "operator"), waitFor: port)
        #expect(cli(socket, "get map \(map) a.example.com")?.contains("found=yes") == true)
        #expect(cli(socket, "show map")?.hasPrefix("# id (file) description\n") == true)
        for write in ["add map \(map) k v", "set map \(map) a.example.com app_b", "del map \(map) a.example.com", "clear map \(map)",
                      "prepare map \(map)", "add acl \(bed.directory)/block.lst 1.2.3.4"] {
            #expect(cli(socket, write) == "Permission denied\n\n", "\(write)")
        }
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func sameAnswersAsHAProxy() throws {
        let bed = try TestBed()
        try files(bed.directory)
        let ports = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let ours = bed.directory + "/p.sock", theirs = bed.directory + "/h.sock"
        try config(bed.directory, port: ports + 1, app: app, socket: theirs).write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 1))
        try bed.proxy(config(bed.directory, port: ports, app: app, socket: ours), waitFor: ports)
        let map = bed.directory + "/hosts.map", list = bed.directory + "/block.lst"
        for command in ["get map \(map) a.example.com", "get map \(map) zzz", "get acl \(list) 10.1.2.3", "get acl \(list) 11.1.2.3",
                        "add map \(map) c.example.com app_a", "set map \(map) c.example.com app_b", "set map \(map) nope app_b",
                        "get map \(map) c.example.com", "del map \(map) c.example.com", "del map \(map) c.example.com",
                        "show map \(bed.directory)/nope.map", "show acl \(bed.directory)/nope.lst", "add map",
                        "add acl \(list) 172.16.0.0/12", "prepare acl \(list)", "prepare map \(map)", "add acl @1 \(list) 1.2.3.4",
                        "commit acl @1 \(list)", "get acl \(list) 1.2.3.4", "get acl \(list) 10.0.0.1", "clear map \(map)",
                        "get map \(map) a.example.com"] {
            #expect(cli(ours, command) == cli(theirs, command), "\(command)")
        }
    }
}
