import Foundation
import Glibc
import Testing

/// The runtime API's server commands: the same command sequence sent to HAProxy 2.6 and to
/// `proxy`, answers compared byte for byte; levels; interactive mode; and a command that
/// changes traffic (maintenance, weight 0, an address).
@Suite(.serialized) struct ServerCommands {
    func config(port: Int, socket: String, a: Int, b: Int, c: Int) -> String {
        """
        global
            stats socket \(socket) level admin
            stats socket \(socket).op level operator
            stats socket \(socket).user level user
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:\(a) weight 10
            server b 127.0.0.1:\(b)
        backend st
            balance source
            server c 127.0.0.1:\(c)

        """
    }

    static let sequence = [
        "get weight app/a", "get weight app/x", "get weight nope/a", "get weight app", "get weight",
        "set weight app/a 50%", "get weight app/a", "set weight app/a 300", "set weight app/a -5", "set weight app/a",
        "set weight app/a 0", "get weight app/a", "set weight app/a 200%", "get weight app/a",
        "set weight st/c 5", "set weight st/c 0", "set weight st/c 100%",
        "set server app/a state bogus", "set server app/a state", "set server app/a state drain", "set server app/a weight 20",
        "get weight app/a", "set server app/a health bogus", "set server app/a health down", "set server app/a health up",
        "set server app/b addr 127.0.0.9 port 81", "set server app/b addr 127.0.0.9", "set server app/b addr 127.0.0.10",
        "set server app/b addr 127.0.0.10 port 82", "set server app/b addr 127.0.0.10 port 82", "set server app/b addr bogus",
        "set server app/b addr 127.0.0.11 port bogus", "set server app", "set server app/a", "set server app/zz state ready",
        "disable server app/zz", "disable server app", "enable server", "disable server app/a", "enable server app/a",
        "set server #3/#1 state ready", "get weight #3/#1", "get weight #9/a", "get weight app/#2",
        "show servers state nope", "show backend", "show cli level", "show env NOPE_PROXY_TEST_X",
        "disable health app/a", "enable health app/a", "disable health app", "shutdown sessions server app/a",
        "shutdown sessions server app/zz", "set maxconn server app/a 10", "clear counters", "clear counters all",
    ]

    /// Every answer of the sequence, as HAProxy 2.6 gives it and as we do.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func sameAnswersAsHAProxy() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(5)
        let ours = bed.directory + "/p.sock", theirs = bed.directory + "/h.sock"
        try config(port: ports + 1, socket: theirs, a: ports + 2, b: ports + 3, c: ports + 4)
            .write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 1))
        try bed.proxy(config(port: ports, socket: ours, a: ports + 2, b: ports + 3, c: ports + 4), waitFor: ports)
        for command in Self.sequence {
            let expected = cli(theirs, command) ?? "<no answer>"
            let got = cli(ours, command) ?? "<no answer>"
            #expect(got == expected, "'\(command)': HAProxy \(expected.debugDescription), proxy \(got.debugDescription)")
            #expect(expected != "<no answer>", "HAProxy did not answer '\(command)'")
        }
        #expect(cli(ours, "get weight app/b") == "1 (initial 1)\n\n")
        // `show stat` filters: the same rows.
        func rows(_ text: String?) -> [String] { (text ?? "").split(separator: "\n").map { $0.split(separator: ",").prefix(2).joined(separator: ",") } }
        for command in ["show stat -1 4 -1", "show stat app 2 -1", "show stat 3 -1 2", "show stat no-maint", "show stat up",
                        "show stat nope 4 -1"] {
            #expect(rows(cli(ours, command)) == rows(cli(theirs, command)), "\(command)")
        }
        // `show info`: the same keys in the same order.
        func keys(_ text: String?) -> [String] { (text ?? "").split(separator: "\n").map { String($0.prefix { $0 != ":" }) } }
        #expect(keys(cli(ours, "show info")) == keys(cli(theirs, "show info")))
        #expect(cli(ours, "show info")?.contains("Version: 2.6.12-proxy-") == true)
        // Both list the same servers with the same names, addresses, states and weights.
        func columns(_ text: String) -> [String] {
            text.split(separator: "\n").dropFirst(2).map { line in
                let f = line.split(separator: " ")
                return [f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[18]].joined(separator: " ")
            }
        }
        let h = cli(theirs, "show servers state") ?? "", p = cli(ours, "show servers state") ?? ""
        #expect(p.hasPrefix(String(h.split(separator: "\n")[0...1].joined(separator: "\n"))))
        #expect(columns(p) == columns(h), "\(p)\n\(h)")
    }

    /// `set weight`, `set server` and `disable/enable server` need admin; `get weight` and
    /// `show servers state` any level; `show env` operator.
    @Test func levels() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(4)
        let socket = bed.directory + "/p.sock"
        try bed.proxy(config(port: ports, socket: socket, a: ports + 1, b: ports + 2, c: ports + 3), waitFor: ports)
        for (path, level) in [(socket + ".user", "user"), (socket + ".op", "operator")] {
            #expect(cli(path, "show cli level") == level + "\n\n")
            #expect(cli(path, "get weight app/a") == "10 (initial 10)\n\n")
            #expect(cli(path, "show servers state app")?.hasPrefix("1\n# be_id be_name") == true)
            for write in ["set weight app/a 5", "set server app/a state maint", "disable server app/a", "enable server app/a"] {
                #expect(cli(path, write) == "Permission denied\n\n", "\(level): \(write)")
            }
        }
        #expect(cli(socket + ".user", "show env HOME") == "Permission denied\n\n")
        #expect(cli(socket + ".op", "clear counters") == "\n" && cli(socket + ".op", "clear counters all") == "Permission denied\n\n")
        #expect(cli(socket + ".op", "shutdown sessions server app/a") == "Permission denied\n\n")
        #expect(cli(socket + ".op", "show env NOPE_PROXY_TEST_X") == "Variable not found\n\n")
        #expect(cli(socket, "set weight app/a 5") == "\n" && cli(socket, "get weight app/a") == "5 (initial 10)\n\n")
    }

    /// `prompt`: the connection stays open, each answer followed by `> `, until `quit`.
    @Test func interactiveMode() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(4)
        let socket = bed.directory + "/p.sock"
        try bed.proxy(config(port: ports, socket: socket, a: ports + 1, b: ports + 2, c: ports + 3), waitFor: ports)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, time
        s = socket.socket(socket.AF_UNIX); s.connect('\(socket)'); s.settimeout(3)
        out = b''
        for line in [b'prompt\\n', b'show cli level\\n', b'get weight app/a; get weight app/b\\r\\n', b'quit\\n']:
            s.sendall(line); time.sleep(0.1)
        while True:
            c = s.recv(4096)
            if not c: break
            out += c
        print(repr(out.decode()))
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                == "'\\n> admin\\n\\n> 10 (initial 10)\\n\\n1 (initial 1)\\n\\n> '", "\(r.stdout) \(r.stderr)")
    }

    /// The commands change traffic: maintenance takes a server out, `ready` brings it back,
    /// weight 0 drains it, and a new address is where the next connection goes.
    @Test func commandsSteerTraffic() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b"), moved = try bed.backend(name: "moved")
        let socket = bed.directory + "/p.sock"
        try bed.proxy(config(port: ports, socket: socket, a: a, b: b, c: ports + 1), waitFor: ports)
        func names(_ n: Int) -> Set<String> {
            Set((0..<n).compactMap { _ in (try? TestBed.curl(["http://127.0.0.1:\(ports)/"]))?.1.split(separator: " ").first.map(String.init) })
        }
        #expect(names(6) == ["a", "b"])
        #expect(cli(socket, "disable server app/a") == "\n")
        #expect(names(6) == ["b"])
        #expect(cli(socket, "set server app/a state ready; set weight app/b 0") == "\n\n")
        #expect(names(6) == ["a"])
        #expect(cli(socket, "set server app/a addr 127.0.0.1 port \(moved)")?.contains("port changed from '\(a)' to '\(moved)'") == true)
        #expect(names(6) == ["moved"])
        #expect(cli(socket, "show servers state app")?.contains("3 app 1 a 127.0.0.1 2 0 10 10 ") == true)
        // A request in flight on a server is cut by `shutdown sessions server`.
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, time
        s = socket.create_connection(('127.0.0.1', \(ports))); s.settimeout(10)
        s.sendall(b'GET /slow?ms=5000 HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')
        time.sleep(0.3)
        k = socket.socket(socket.AF_UNIX); k.connect('\(socket)'); k.sendall(b'shutdown sessions server app/a\\n'); k.recv(100)
        start = time.time()
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b''
        print('cut' if got == b'' and time.time() - start < 2 else 'not cut')
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "cut", "\(r.stdout) \(r.stderr)")
    }
}

/// The seed thread's wish: one site of several into maintenance at run time, with no reload.
@Suite(.serialized) struct ProcessVariablesAtRunTime {
    /// Two sites behind one frontend; site A's maintenance is a `proc.` variable.
    static func seedConfig(port: Int, socket: String, app: Int) -> String {
        """
        global
            stats socket \(socket)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            acl site_a_maint var(proc.site_a_maint) -m bool
            use_backend maintenance if site_a_maint { hdr(host) -i a.example.com }
            default_backend app
        backend maintenance
            http-request return status 503 content-type text/plain string "site A is under maintenance"
        backend app
            server s 127.0.0.1:\(app)

        """
    }

    @Test func oneSiteIntoMaintenanceWithoutAReload() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        try bed.proxy(Self.seedConfig(port: port, socket: socket, app: app), waitFor: port)
        func status(_ host: String) -> Int { (try? TestBed.curl(["-H", "Host: \(host)", "http://127.0.0.1:\(port)/"]))?.0 ?? 0 }
        #expect(status("a.example.com") == 200 && status("b.example.com") == 200)
        // The socket's default level is operator: enough, with no experimental mode.
        #expect(cli(socket, "show cli level") == "operator\n\n")
        #expect(cli(socket, "set var proc.site_a_maint bool(true)") == "\n")
        #expect(cli(socket, "get var proc.site_a_maint") == "proc.site_a_maint: type=bool value=<1>\n\n")
        #expect(status("a.example.com") == 503 && status("b.example.com") == 200)
        #expect(cli(socket, "set var proc.site_a_maint expr bool(0)") == "\n")
        #expect(status("a.example.com") == 200)
        #expect(cli(socket, "set var proc.site_a_maint int(1),add(1)") == "\n")
        #expect(cli(socket, "get var proc.site_a_maint") == "proc.site_a_maint: type=sint value=<2>\n\n")
        #expect(status("a.example.com") == 503)
        #expect(cli(socket, "unset var proc.site_a_maint") == "\n")
        #expect(cli(socket, "get var proc.site_a_maint") == "Variable not found.\n\n")
        #expect(status("a.example.com") == 200)
        // HAProxy's answers for the errors; a fetch that needs a request is refused.
        #expect(cli(socket, "set var txn.x int(1)") == "'set var': cannot set variable 'txn.x', only scope 'proc' is permitted here.\n\n")
        #expect(cli(socket, "set var proc.y") == "Missing either 'expr', 'fmt' or expression.\n\n")
        #expect(cli(socket, "get var") == "Missing process-wide variable identifier.\n\n")
        #expect(cli(socket, "set var proc.y path")?.contains("is not available here") == true)
        #expect(cli(socket, "set var proc.f fmt hello; get var proc.f") == "\nproc.f: type=str value=<hello>\n\n")
    }
}

/// `proxy cli`: the built-in client, with a command or reading lines.
@Suite(.serialized) struct BuiltInClient {
    @Test func commandsAndExitStatus() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/admin.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            stats socket 127.0.0.1:\(port + 1) level user
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:9 weight 10

        """, waitFor: port)
        // The seed's one-liner: words joined as HAProxy's CLI reads them.
        let set = try Harness.proxy(["cli", "-s", socket, "set", "var", "proc.site_a_maint", "bool(true)"])
        #expect(set.status == 0 && set.stdout == "\n", "\(set.stdout) \(set.stderr)")
        let get = try Harness.proxy(["cli", "get var proc.site_a_maint; get weight app/a"], environment: ["PROXY_SOCKET": socket])
        #expect(get.status == 0 && get.stdout == "proc.site_a_maint: type=bool value=<1>\n\n10 (initial 10)\n\n", "\(get.stdout)")
        let unknown = try Harness.proxy(["cli", "-s", socket, "bogus"])
        #expect(unknown.status == 1 && unknown.stdout.hasPrefix("Unknown command"))
        let denied = try Harness.proxy(["cli", "-s", "ipv4@127.0.0.1:\(port + 1)", "set weight app/a 1"])
        #expect(denied.status == 1 && denied.stdout == "Permission denied\n\n")
        let level = try Harness.proxy(["cli", "-s", "127.0.0.1:\(port + 1)", "show", "cli", "level"])
        #expect(level.status == 0 && level.stdout == "user\n\n")
        let missing = try Harness.proxy(["cli", "-s", bed.directory + "/nope.sock", "show info"])
        #expect(missing.status == 2 && missing.stderr.contains("cannot reach the runtime API"), "\(missing.stderr)")
        // Lines from standard input, one answer each.
        let lines = try Harness.run("/bin/sh", ["-c", "printf 'show cli level\\n\\nget weight app/a\\n' | '\(Harness.proxyBinary)' cli -s '\(socket)'"])
        #expect(lines.status == 0 && lines.stdout == "admin\n\n10 (initial 10)\n\n", "\(lines.stdout)")
    }
}

/// Runtime changes survive a reload: admin state, weight, address and `proc.` variables are
/// carried to the new process, unless its file changed that same item (then the file wins
/// and the start-up says so).
@Suite(.serialized) struct RuntimeChangesSurviveAReload {
    func config(port: Int, socket: String, a: Int, b: Int, weightB: Int = 10) -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:\(a) weight 10
            server b 127.0.0.1:\(b) weight \(weightB)

        """
    }

    @Test func carriedUnlessTheFileChangedThem() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b"), moved = try bed.backend(name: "moved")
        let socket = bed.directory + "/p.sock"
        let first = try bed.proxy(config(port: port, socket: socket, a: a, b: b), waitFor: port)
        #expect(cli(socket, "set server app/a state maint; set weight app/b 7; set var proc.site_maint bool(true)") == "\n\n\n")
        #expect(cli(socket, "set server app/b addr 127.0.0.1 port \(moved)")?.contains("port changed") == true)
        func frontendRequests() -> Int {
            let row = (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("web,FRONTEND,") } ?? ""
            let fields = row.split(separator: ",", omittingEmptySubsequences: false)
            return fields.count > 48 ? Int(fields[48]) ?? -1 : -1
        }
        for _ in 0..<3 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        let before = frontendRequests()
        #expect(before == 3)
        // A reload with the same file: every change is still in force.
        let (second, log) = try bed.startProxy(config(port: port, socket: socket, a: a, b: b), name: "same.cfg",
                                               arguments: ["-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { !first.isRunning })
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") }, "\(bed.read(log))")
        #expect(bed.read(log).contains("runtime changes carried over"), "\(bed.read(log))")
        #expect(cli(socket, "get weight app/b") == "7 (initial 10)\n\n")
        #expect(cli(socket, "get var proc.site_maint") == "proc.site_maint: type=bool value=<1>\n\n")
        #expect(cli(socket, "show servers state app")?.contains("3 app 1 a 127.0.0.1 2 1 ") == true)
        let (_, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        #expect(body.hasPrefix("moved "), "\(body)")
        _ = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        // The counters went on from the old process's totals: no reset at the reload.
        #expect(frontendRequests() == before + 2)
        // A reload whose file changed b's weight: the file wins for that item, and says so.
        let (third, log3) = try bed.startProxy(config(port: port, socket: socket, a: a, b: b, weightB: 20), name: "changed.cfg",
                                               arguments: ["-sf", String(second.processIdentifier)])
        #expect(TestBed.waitUntil { !second.isRunning })
        #expect(TestBed.waitUntil { bed.read(log3).contains("serving") })
        #expect(bed.read(log3).contains("server app/b: 'weight' changed in the configuration (10 -> 20); its runtime value 7 is dropped"),
                "\(bed.read(log3))")
        #expect(cli(socket, "get weight app/b") == "20 (initial 20)\n\n")
        #expect(cli(socket, "show servers state app")?.contains("3 app 1 a 127.0.0.1 2 1 ") == true)
        kill(third.processIdentifier, SIGTERM)
    }
}

/// `global set-var` gives a process variable its value at start; a runtime value survives a
/// reload unless the `set-var` line itself changed (then the file wins, and says so).
@Suite(.serialized) struct GlobalSetVar {
    func config(port: Int, socket: String, app: Int, line: String) -> String {
        """
        global
            stats socket \(socket) level admin
            \(line)
            set-var-fmt proc.greeting "hello %[env(USER_NAME)]"
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 503 content-type text/plain string "maintenance" if { var(proc.mode) -m str maint }
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """
    }

    @Test func startValueThenRuntimeThenFile() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let first = try bed.proxy(config(port: port, socket: socket, app: app, line: "set-var proc.mode str(normal)"), waitFor: port,
                                  environment: ["USER_NAME": "ops"])
        #expect(cli(socket, "get var proc.mode") == "proc.mode: type=str value=<normal>\n\n")
        #expect(cli(socket, "get var proc.greeting") == "proc.greeting: type=str value=<hello ops>\n\n")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        #expect(cli(socket, "set var proc.mode str(maint)") == "\n")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503)
        // Same file: the runtime value is kept.
        let (second, log2) = try bed.startProxy(config(port: port, socket: socket, app: app, line: "set-var proc.mode str(normal)"),
                                                name: "same.cfg", arguments: ["-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log2).contains("serving") })
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503)
        // The set-var line changed: the file wins.
        let (third, log3) = try bed.startProxy(config(port: port, socket: socket, app: app, line: "set-var proc.mode str(open)"),
                                               name: "changed.cfg", arguments: ["-sf", String(second.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log3).contains("serving") })
        #expect(bed.read(log3).contains("variable proc.mode: its 'set-var' line changed in the configuration; the runtime value is dropped"),
                "\(bed.read(log3))")
        #expect(cli(socket, "get var proc.mode") == "proc.mode: type=str value=<open>\n\n")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        kill(third.processIdentifier, SIGTERM)
        // A fetch that needs a request cannot give a start value.
        try "global\n    set-var proc.x path\n".write(toFile: bed.directory + "/bad.cfg", atomically: true, encoding: .utf8)
        let bad = try Harness.run(Harness.proxyBinary, ["-c", "-f", bed.directory + "/bad.cfg"])
        #expect(bad.status == 1 && bad.stderr.contains("bad.cfg:2: error:") && bad.stderr.contains("is not known at start"), "\(bad.stderr)")
    }
}

/// `proxy -c -V -x SOCKET`: before a reload, what it would keep of the running process's
/// runtime changes and what the file would override; and which rules read `proc.` variables.
@Suite(.serialized) struct ReloadPreviewTests {
    @Test func checkModeAsksTheRunningProcess() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let a = try bed.backend(name: "a")
        let socket = bed.directory + "/p.sock"
        let base = RuntimeChangesSurviveAReload()
        var config = base.config(port: port, socket: socket, a: a, b: a)
        config = config.replacingOccurrences(of: "    default_backend app", with: """
            acl site_maint var(proc.site_maint) -m bool
            use_backend app if site_maint
            default_backend app
        """)
        try bed.proxy(config, waitFor: port)
        #expect(cli(socket, "set server app/a state drain; set weight app/b 7; set var proc.site_maint bool(true)") == "\n\n\n")
        let changed = config.replacingOccurrences(of: "server b 127.0.0.1:\(a) weight 10", with: "server b 127.0.0.1:\(a) weight 30")
        try changed.write(toFile: bed.directory + "/next.cfg", atomically: true, encoding: .utf8)
        let r = try Harness.run(Harness.proxyBinary, ["-c", "-V", "-f", bed.directory + "/next.cfg", "-x", socket])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        for line in ["use_backend app reads proc.site_maint at run time",
                     "a reload with this file keeps 2 changes, the file overrides 1",
                     "  keeps: server app/a: state drain", "  keeps: variable proc.site_maint = 1",
                     "  file wins: server app/b: 'weight' changed in the configuration (10 -> 30); its runtime value 7 is dropped"] {
            #expect(r.stdout.contains(line), "missing '\(line)' in:\n\(r.stdout)")
        }
        // No process there: said, within the 100 ms, and the check still passes.
        let gone = try Harness.run(Harness.proxyBinary, ["-c", "-V", "-f", bed.directory + "/next.cfg", "-x", bed.directory + "/none.sock"])
        #expect(gone.status == 0 && gone.stdout.contains("cannot reach the running process at"), "\(gone.stdout)")
    }
}
