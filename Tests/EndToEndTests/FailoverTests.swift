import Foundation
import Testing

/// `etc/webmail.cfg`, the seed's second system, with real backends on free ports.
@Suite(.serialized) struct WebmailFailover {
    @Test(arguments: [1, 2])
    func failsOverToTheMaintenanceSiteAndBack(threads: Int) throws {
        let bed = try TestBed()
        let w1 = try bed.backend(name: "webmail1"), w2 = try bed.backend(name: "webmail2"), ms = try bed.backend(name: "msite")
        let port = TestBed.freePort()
        var config = try String(contentsOfFile: Harness.root + "/etc/webmail.cfg", encoding: .utf8)
        for (from, to) in [("8100", port), ("8101", w1), ("8102", w2), ("8103", ms)] {
            config = config.replacingOccurrences(of: "127.0.0.1:\(from)", with: "127.0.0.1:\(to)")
        }
        config = config.replacingOccurrences(of: "inter 10000", with: "inter 200")
        config = "global\n    nbthread \(threads)\n" + config
        try bed.proxy(config, waitFor: port)
        let url = "http://127.0.0.1:\(port)/"
        // Round robin between the two webmail servers.
        let first = try TestBed.curl([url]).1, second = try TestBed.curl([url]).1
        #expect(Set([first, second]) == ["webmail1 GET / body=0", "webmail2 GET / body=0"])
        // rspirep turns http:// into https:// in Location.
        #expect(try TestBed.curl([url + "location"]).2.contains("Location: https://example.com/a"))
        // Both fail their checks: within fall x inter, traffic goes to msite, rewritten.
        FileManager.default.createFile(atPath: bed.directory + "/webmail1.down", contents: nil)
        FileManager.default.createFile(atPath: bed.directory + "/webmail2.down", contents: nil)
        #expect(TestBed.waitUntil(timeout: 3) { (try? TestBed.curl([url]))?.1 == "msite GET /webmail.html body=0" })
        #expect(bed.log().contains("Server http_backend_webmail/webmail1 is DOWN, reason: Layer7 wrong status, code: 500"))
        // Between detection and recovery, no request gets a 5xx.
        for _ in 0..<10 {
            let (code, _, _) = try TestBed.curl([url])
            #expect(code == 200)
        }
        // They recover: within rise x inter, traffic is back on webmail.
        try FileManager.default.removeItem(atPath: bed.directory + "/webmail1.down")
        try FileManager.default.removeItem(atPath: bed.directory + "/webmail2.down")
        #expect(TestBed.waitUntil(timeout: 3) { ((try? TestBed.curl([url]))?.1 ?? "").hasPrefix("webmail") })
        #expect(bed.log().contains("is UP, reason: Layer7 check passed, code: 200"))
    }
}

/// `on-marked-down shutdown-sessions` cuts a failing server's open connections at once;
/// `option log-health-checks` logs each change of a check's result; `spread-checks` loads.
@Suite(.serialized) struct CheckReactions {
    /// `track`: a server follows the health and the maintenance of another, through a chain.
    @Test func trackingServersFollow() throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(front)
            default_backend b
        backend a
            option httpchk GET /haproxy.check
            server s 127.0.0.1:\(web) check inter 150 rise 1 fall 1
        backend b
            server t 127.0.0.1:\(web) track a/s
            server u 127.0.0.1:\(web) track t

        """, waitFor: front)
        func status(_ b: String, _ s: String) -> [Substring] {
            (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("\(b),\(s),") }?.split(separator: ",", omittingEmptySubsequences: false) ?? []
        }
        #expect(TestBed.waitUntil { status("a", "s")[17] == "UP" && status("b", "t")[17] == "UP" && status("b", "u")[17] == "UP" })
        #expect(status("b", "t")[31] == "a/s" && status("b", "u")[31] == "b/t", "\(status("b", "u"))")
        FileManager.default.createFile(atPath: bed.directory + "/web.down", contents: nil)
        #expect(TestBed.waitUntil { status("b", "t")[17] == "DOWN" && status("b", "u")[17] == "DOWN" }, "\(status("b", "t"))")
        #expect(try TestBed.curl(["http://127.0.0.1:\(front)/"]).0 == 503)
        try FileManager.default.removeItem(atPath: bed.directory + "/web.down")
        #expect(TestBed.waitUntil { status("b", "u")[17] == "UP" })
        _ = cli(socket, "set server a/s state maint")
        #expect(status("b", "t")[17] == "MAINT (via a/s)" && status("b", "u")[17] == "MAINT (via b/t)", "\(status("b", "t")) \(status("b", "u"))")
        _ = cli(socket, "set server a/s state ready")
        #expect(status("b", "u")[17] == "UP")
        #expect(try TestBed.curl(["http://127.0.0.1:\(front)/"]).0 == 200)
    }

    /// `agent-check`: the agent's line sets the weight, the administrative state and the
    /// health, and `show stat` and the log say so as HAProxy does; an agent that cannot be
    /// reached changes nothing.
    @Test func agentCheckDrivesTheServer() throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web")
        let agentPort = TestBed.freePort(), nobody = TestBed.freePort(), front = TestBed.freePort()
        let state = bed.directory + "/agent.state"
        try "up 50%\n".write(toFile: state, atomically: true, encoding: .utf8)
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3", [Harness.root + "/Tests/EndToEndTests/Helpers/agent.py", String(agentPort), state])
        #expect(TestBed.waitForPort(agentPort))
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            server a 127.0.0.1:\(web) check inter 150 weight 10 agent-check agent-port \(agentPort) agent-inter 150 agent-send "hello\\n"
            server b 127.0.0.1:\(web) check inter 150 weight 10 agent-check agent-port \(nobody) agent-inter 150

        """, waitFor: front)
        func row(_ s: String) -> [String: String] { statRow(socket, "app", s) }
        #expect(TestBed.waitUntil { row("a")["weight"] == "5" && row("a")["agent_status"] == "L7OK" }, "\(row("a"))")
        #expect(row("a")["agent_desc"] == "Layer7 check passed" && row("a")["agent_code"] == "0")
        #expect(bed.read(state + ".seen").hasPrefix("hello\n"), "agent-send: \(bed.read(state + ".seen").debugDescription)")
        try "drain 30%\n".write(toFile: state, atomically: true, encoding: .utf8)
        #expect(TestBed.waitUntil { row("a")["status"] == "DRAIN (agent)" && row("a")["weight"] == "3" }, "\(row("a"))")
        #expect(row("a")["agent_status"] == "CHECKED" && row("a")["agent_desc"] == "No status change")
        try "ready down #maintenance window\n".write(toFile: state, atomically: true, encoding: .utf8)
        #expect(TestBed.waitUntil { row("a")["status"] == "DOWN (agent)" }, "\(row("a"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server app/a is DOWN, reason: Layer7 wrong status, code: 0, info: \"via agent : down (maintenance window)\"") }, "\(bed.log())")
        // The health check passes meanwhile; the agent still holds it down.
        Thread.sleep(forTimeInterval: 0.4)
        #expect(row("a")["status"] == "DOWN (agent)" && row("a")["check_status"] == "L4OK", "\(row("a"))")
        try "up\n".write(toFile: state, atomically: true, encoding: .utf8)
        #expect(TestBed.waitUntil { row("a")["status"] == "UP" }, "\(row("a"))")
        #expect(bed.log().contains("Server app/a is UP, reason: Layer7 check passed, code: 0, info: \"via agent : up\""), "\(bed.log())")
        // No agent on b's port: its agent status says so, and b serves on.
        #expect(row("b")["status"] == "UP" && row("b")["agent_status"] == "L4CON", "\(row("b"))")
    }

    /// `observe`: errors in a row in real traffic act on the server as HAProxy words it
    /// ("Health analyze"): layer 7 counts bad statuses, layer 4 failed connections; a good
    /// response starts the count again, and the checks bring the server back.
    @Test func observedTrafficErrorsActOnTheServer() throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web")
        let front = TestBed.freePort()
        let nobody = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        // The two servers' first checks would be spread over their 20 s interval (the second
        // one 10 s in, as HAProxy spreads them): `max-spread-checks` starts both at once.
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            max-spread-checks 100ms
        \(TestBed.defaults("http"))
            retries 0
        frontend f
            bind 127.0.0.1:\(front)
            use_backend dead if { path_beg /dead }
            default_backend app
        backend app
            option httpchk GET /haproxy.check
            server a 127.0.0.1:\(web) check inter 20s fastinter 200 rise 1 fall 2 observe layer7 error-limit 3 on-error mark-down
        backend dead
            server d 127.0.0.1:\(nobody) check port \(web) inter 20s fall 3 observe layer4 error-limit 2 on-error sudden-death

        """, waitFor: front)
        func row(_ b: String, _ s: String) -> [String: String] { statRow(socket, b, s) }
        #expect(TestBed.waitUntil { row("app", "a")["check_status"] == "L7OK" && row("dead", "d")["check_status"] == "L4OK" }, "\(row("dead", "d"))")
        // Two bad statuses, a good one (the count starts again), then three bad: DOWN.
        for path in ["/status/503", "/status/500", "/", "/status/502", "/status/504"] {
            _ = try TestBed.curl(["http://127.0.0.1:\(front)\(path)"])
        }
        #expect(row("app", "a")["status"] == "UP", "\(row("app", "a"))")
        _ = try TestBed.curl(["http://127.0.0.1:\(front)/status/503"])
        #expect(TestBed.waitUntil { bed.log().contains("Server app/a is DOWN, reason: Health analyze, info: \"Detected 3 consecutive errors, last one was: Wrong http response\". 0 active and 0 backup servers left.") }, "\(bed.log())")
        // `on-error` forces `fastinter`: the passing check brings it back long before `inter`.
        #expect(TestBed.waitUntil(timeout: 5) { bed.log().contains("Server app/a is UP") && row("app", "a")["status"] == "UP" }, "\(bed.log())")
        // Layer 4, sudden-death: two failed connections leave d one failure from DOWN...
        for _ in 0..<2 { #expect(try TestBed.curl(["http://127.0.0.1:\(front)/dead"]).0 == 503) }
        #expect(TestBed.waitUntil { row("dead", "d")["check_status"] == "HANA" }, "\(row("dead", "d"))")
        #expect(row("dead", "d")["status"] == "UP 1/3", "\(row("dead", "d"))")
        // ...and two more take it down.
        for _ in 0..<2 { _ = try TestBed.curl(["http://127.0.0.1:\(front)/dead"]) }
        #expect(TestBed.waitUntil { bed.log().contains("Server dead/d is DOWN, reason: Health analyze, info: \"Detected 2 consecutive errors, last one was: L4 unsuccessful connection\"") }, "\(bed.log())")
    }

    /// The 2.2+ `http-check` sequence: `connect` to another port, `comment`, and the expect
    /// options; each result worded as HAProxy 2.6 words it on the same file (compared side
    /// by side): the status line's phrase as the info of a wrong status, "HTTP content check
    /// did not match" for a body, `on-error`/`comment` appended, `ok-status L7OKC` making the
    /// server NOLB. A body check is judged once its Content-Length is in.
    @Test func httpCheckSequences() throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web")
        let front = TestBed.freePort(), nobody = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(front)
            default_backend g
        backend a
            option httpchk
            http-check send meth GET uri /status/503
            http-check expect status 200
            server s 127.0.0.1:\(web) check inter 200 rise 1 fall 1
        backend b
            option httpchk
            http-check send meth GET uri / ver HTTP/1.1 hdr Host check
            http-check expect string nothere
            server s 127.0.0.1:\(web) check inter 200 rise 1 fall 1
        backend c
            option httpchk
            http-check send meth GET uri /status/503
            http-check comment "status phase"
            http-check expect status 200 on-error "svc down" error-status L7RSP
            server s 127.0.0.1:\(web) check inter 200 rise 1 fall 1
        backend d
            option httpchk
            http-check connect port \(web)
            http-check send meth GET uri /
            http-check expect status 200 ok-status L7OKC on-success "fine"
            server s 127.0.0.1:\(nobody) check inter 200 rise 1 fall 1
        backend g
            option httpchk GET /
            server s 127.0.0.1:\(web) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func row(_ b: String) -> [String: String] { statRow(socket, b, "s") }
        func result(_ b: String) -> [String?] { let r = row(b); return [r["status"], r["check_status"], r["check_code"], r["last_chk"]] }
        #expect(TestBed.waitUntil { result("a") == ["DOWN", "L7STS", "503", "X"] }, "\(result("a"))")
        #expect(TestBed.waitUntil { result("b") == ["DOWN", "L7RSP", "", "HTTP content check did not match"] }, "\(result("b"))")
        #expect(TestBed.waitUntil { result("c") == ["DOWN", "L7RSP", "", "svc down comment: status phase"] }, "\(result("c"))")
        #expect(TestBed.waitUntil { result("d") == ["NOLB", "L7OKC", "200", "fine"] }, "\(result("d"))")
        #expect(TestBed.waitUntil { result("g") == ["UP", "L7OK", "200", ""] }, "\(result("g"))")
        let log = bed.log()
        #expect(log.contains("Server a/s is DOWN, reason: Layer7 wrong status, code: 503, info: \"X\", check duration: "), "\(log)")
        #expect(log.contains("Server c/s is DOWN, reason: Layer7 invalid response, info: \"svc down comment: status phase\", check duration: "), "\(log)")
        #expect(log.contains("Server d/s is stopping, reason: Layer7 check conditionally passed, code: 200, info: \"fine\", check duration: "), "\(log)")
    }

    /// `external-check`: the command gets HAProxy's arguments and exactly its variables; its
    /// exit status decides (PROCOK, PROCERR with the code); one that hangs is killed after
    /// `inter` (PROCTOUT); every child is reaped, none left a zombie.
    @Test func externalChecksRunTheCommand() throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let script = bed.directory + "/check.sh"
        try """
        #!/bin/sh
        { echo "ARGS: $*"; env | sort; } > \(bed.directory)/seen.$HAPROXY_SERVER_NAME.tmp
        mv \(bed.directory)/seen.$HAPROXY_SERVER_NAME.tmp \(bed.directory)/seen.$HAPROXY_SERVER_NAME
        [ -f \(bed.directory)/$HAPROXY_SERVER_NAME.fail ] && exit 3
        [ -f \(bed.directory)/$HAPROXY_SERVER_NAME.hang ] && exec sleep 30
        exit 0

        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let proxy = try bed.proxy("""
        global
            external-check
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        listen app
            bind 127.0.0.1:\(front)
            option external-check
            external-check command \(script)
            external-check path "/usr/bin:/bin"
            server a 127.0.0.1:\(web) check inter 300 rise 1 fall 1
            server b 127.0.0.1:\(web) check inter 300 rise 1 fall 1 maxconn 7

        """, waitFor: front)
        func row(_ s: String) -> [String: String] { statRow(socket, "app", s) }
        #expect(TestBed.waitUntil { row("a")["check_status"] == "PROCOK" && row("b")["check_status"] == "PROCOK" }, "\(row("a"))")
        #expect(row("a")["check_code"] == "0" && row("a")["check_desc"] == "External check passed", "\(row("a"))")
        // What HAProxy 2.6 passes, compared by running it on the same file: these arguments
        // and exactly these variables (the shell adds PWD).
        #expect(TestBed.waitUntil { bed.read(bed.directory + "/seen.b").contains("PATH=") })
        let seen = bed.read(bed.directory + "/seen.b").split(separator: "\n").map(String.init)
        #expect(seen == ["ARGS: 127.0.0.1 \(front) 127.0.0.1 \(web)", "HAPROXY_PROXY_ADDR=127.0.0.1", "HAPROXY_PROXY_ID=2",
                         "HAPROXY_PROXY_NAME=app", "HAPROXY_PROXY_PORT=\(front)", "HAPROXY_SERVER_ADDR=127.0.0.1",
                         "HAPROXY_SERVER_CURCONN=0", "HAPROXY_SERVER_ID=2", "HAPROXY_SERVER_MAXCONN=7", "HAPROXY_SERVER_NAME=b",
                         "HAPROXY_SERVER_PORT=\(web)", "HAPROXY_SERVER_PROTO=h1", "HAPROXY_SERVER_SSL=0", "PATH=/usr/bin:/bin",
                         "PWD=\(bed.directory)"], "\(seen)")
        _ = FileManager.default.createFile(atPath: bed.directory + "/b.fail", contents: nil)
        #expect(TestBed.waitUntil { bed.log().contains("Server app/b is DOWN, reason: External check error, code: 3, check duration: ") }, "\(bed.log())")
        #expect(row("b")["check_status"] == "PROCERR" && row("b")["check_code"] == "3", "\(row("b"))")
        _ = FileManager.default.createFile(atPath: bed.directory + "/a.hang", contents: nil)
        #expect(TestBed.waitUntil { bed.log().contains("Server app/a is DOWN, reason: External check timeout, code: 0, check duration: ") }, "\(bed.log())")
        #expect(bed.log().contains("proxy app has no server available!"), "\(bed.log())")
        #expect(row("a")["check_status"] == "PROCTOUT", "\(row("a"))")
        // The hung command was killed, and nothing the checks started is left unreaped.
        try FileManager.default.removeItem(atPath: bed.directory + "/a.hang")
        try FileManager.default.removeItem(atPath: bed.directory + "/b.fail")
        #expect(TestBed.waitUntil { row("a")["status"] == "UP" && row("b")["status"] == "UP" }, "\(row("a"))")
        let pid = proxy.processIdentifier
        #expect(TestBed.waitUntil { Self.children(of: pid).allSatisfy { !$0.zombie && !$0.command.contains("sleep") } }, "\(Self.children(of: pid))")
    }

    /// The children of `pid` now: whether each is a zombie, and its command line.
    static func children(of pid: Int32) -> [(zombie: Bool, command: String)] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { e -> (Bool, String)? in
            guard Int32(e) != nil, let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return nil }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == pid else { return nil }
            let command = (try? String(contentsOfFile: "/proc/\(e)/cmdline", encoding: .utf8))?.replacingOccurrences(of: "\0", with: " ") ?? ""
            return (fields[0] == "Z", command)
        }
    }

    /// `http-check send-state`: each check carries the header HAProxy sends, word for word.
    @Test func sendStateTellsTheServerHowItIsSeen() throws {
        let bed = try TestBed()
        let a = try bed.backend(name: "a")
        let front = TestBed.freePort()
        try bed.proxy("""
        global
            node lb-test
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            option httpchk GET /probe
            http-check send-state
            server a 127.0.0.1:\(a) check inter 150 weight 5

        """, waitFor: front)
        let expected = "UP; address=127.0.0.1; port=\(a); name=app/a; node=lb-test; weight=5/5; scur=0/0; qcur=0"
        #expect(TestBed.waitUntil {
            ((TestBed.stats(a).last["headers"] as? [[String]]) ?? []).contains(["x-haproxy-server-state", expected])
        }, "\(TestBed.stats(a).last)")
    }

    /// `http-check disable-on-404`: a server whose check answers 404 goes to NOLB: no new
    /// clients, its persistent ones still served; a 2xx puts it back; a stopped server that
    /// answers 404 stays stopped.
    @Test func disableOn404DrainsAServer() throws {
        let bed = try TestBed()
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            option httpchk GET /haproxy.check
            http-check disable-on-404
            cookie SRV insert indirect nocache
            server a 127.0.0.1:\(a) check inter 150 rise 1 fall 1 cookie a
            server b 127.0.0.1:\(b) check inter 150 rise 1 fall 1 cookie b

        """, waitFor: front)
        func status(_ s: String) -> String {
            (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("app,\(s),") }.map(String.init) ?? ""
        }
        #expect(TestBed.waitUntil { status("a").contains(",UP,") && status("b").contains(",UP,") })
        FileManager.default.createFile(atPath: bed.directory + "/a.drain", contents: nil)
        #expect(TestBed.waitUntil { status("a").contains(",NOLB,") }, "\(status("a"))")
        #expect(status("a").contains(",L7OKC,404,"), "\(status("a"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server app/a is stopping, reason: Layer7 check conditionally passed, code: 404") }, "\(bed.log())")
        // New clients all go to b; a client whose cookie names a is still served by a.
        for _ in 0..<4 { #expect(try TestBed.curl(["http://127.0.0.1:\(front)/"]).1.hasPrefix("b "), "a took a new client") }
        #expect(try TestBed.curl(["-H", "Cookie: SRV=a", "http://127.0.0.1:\(front)/"]).1.hasPrefix("a "))
        try FileManager.default.removeItem(atPath: bed.directory + "/a.drain")
        #expect(TestBed.waitUntil { status("a").contains(",UP,") }, "\(status("a"))")
        // Stopped, then 404: it stays DOWN.
        FileManager.default.createFile(atPath: bed.directory + "/b.down", contents: nil)
        #expect(TestBed.waitUntil { status("b").contains(",DOWN,") })
        FileManager.default.createFile(atPath: bed.directory + "/b.drain", contents: nil)
        try FileManager.default.removeItem(atPath: bed.directory + "/b.down")
        Thread.sleep(forTimeInterval: 0.6)
        #expect(status("b").contains(",DOWN,"), "\(status("b"))")
    }

    @Test func markedDownShutsSessionsAndEveryChangeIsLogged() throws {
        let bed = try TestBed()
        let w1 = try bed.backend(name: "webmail1")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [], backend: """
            option httpchk GET /haproxy.check
            option log-health-checks
            log stdout format raw local0
            server webmail1 127.0.0.1:\(w1) check inter 100 fall 2 rise 1 on-marked-down shutdown-sessions
        """, global: "spread-checks 5"), waitFor: port)
        // A request that takes 5 s, in flight when the server fails its checks.
        let started = Date()
        let slow = try TestBed.slowRequest(port, ms: 5000)
        #expect(TestBed.waitUntil(timeout: 3) { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.0 == 200 })
        FileManager.default.createFile(atPath: bed.directory + "/webmail1.down", contents: nil)
        #expect(TestBed.waitUntil(timeout: 5) { !slow.isRunning }, "the slow request was cut when the server went DOWN")
        #expect(Date().timeIntervalSince(started) < 4.5)
        let log = bed.log()
        #expect(log.contains("Health check for server app/webmail1 failed, reason: Layer7 wrong status, code: 500, info: \"Internal Server Error\", check duration: "), "\(log)")
        #expect(log.contains(", status: 1/2 UP.") && log.contains("Server app/webmail1 is DOWN"), "\(log)")
        try FileManager.default.removeItem(atPath: bed.directory + "/webmail1.down")
        #expect(TestBed.waitUntil(timeout: 3) { bed.log().contains("Health check for server app/webmail1 succeeded, reason: Layer7 check passed, code: 200") })
    }
}

@Suite(.serialized) struct CookiePersistence {
    func start(_ cookieLine: String) throws -> (TestBed, Int, Int, Int) {
        let bed = try TestBed()
        let w1 = try bed.backend(name: "webmail1"), w2 = try bed.backend(name: "webmail2")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [], backend: """
            balance roundrobin
            \(cookieLine)
            server webmail1 127.0.0.1:\(w1) cookie wm01
            server webmail2 127.0.0.1:\(w2) cookie wm02
        """), waitFor: port)
        return (bed, port, w1, w2)
    }

    @Test func insertIndirectNocachePinsAndHidesTheCookie() throws {
        let (bed, port, _, w2) = try start("cookie SERVERID insert indirect nocache")
        defer { bed.stop() }
        let url = "http://127.0.0.1:\(port)/mail"
        let (_, body, headers) = try TestBed.curl([url])
        #expect(headers.lowercased().contains("set-cookie: serverid=wm0"))
        #expect(headers.lowercased().contains("cache-control: private"))
        #expect(body.hasPrefix("webmail"))
        for _ in 0..<4 {
            let (_, b, h) = try TestBed.curl(["-H", "Cookie: SERVERID=wm02; lang=en", url])
            #expect(b == "webmail2 GET /mail body=0")
            #expect(!h.lowercased().contains("set-cookie"), "no new cookie when it is already right")
            #expect(h.contains("X-Seen-Cookie: lang=en"))
        }
        let seen = TestBed.stats(w2).last["headers"] as? [[String]] ?? []
        #expect(!seen.contains { $0.count == 2 && $0[1].contains("SERVERID") }, "the backend must never see SERVERID")
    }

    @Test func passiveModeReadsTheServersCookie() throws {
        let (bed, port, _, _) = try start("cookie SERVERID indirect")
        defer { bed.stop() }
        for _ in 0..<3 {
            #expect(try TestBed.curl(["-H", "Cookie: SERVERID=wm01", "http://127.0.0.1:\(port)/p"]).1 == "webmail1 GET /p body=0")
        }
    }
}

@Suite(.serialized) struct Redispatch {
    /// One server refuses connections: retries plus redispatch send every request elsewhere.
    @Test(arguments: [1, 2])
    func aRefusingServerCostsNoFailedRequest(threads: Int) throws {
        let bed = try TestBed()
        defer { bed.stop() }
        let live = try bed.backend(name: "live")
        let dead = TestBed.freePort()
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("dead", dead), ("live", live)],
                                 backend: "    retries 2\n    option redispatch", global: "    nbthread \(threads)"), waitFor: port)
        for i in 0..<6 {
            #expect(try TestBed.curl(["http://127.0.0.1:\(port)/r\(i)"]).1 == "live GET /r\(i) body=0")
        }
    }

    /// `http-send-name-header`: the server reads its own name, the client's copy of the
    /// header gone; a request first sent to the refusing server and redispatched carries the
    /// name of the one that answers, whatever the lengths of the two names.
    @Test func theServerNameHeaderFollowsARedispatch() throws {
        let bed = try TestBed()
        defer { bed.stop() }
        let live = try bed.backend(name: "live")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("a-refusing-server", TestBed.freePort()), ("live", live)],
                                 backend: "    retries 1\n    option redispatch\n    http-send-name-header X-Test"), waitFor: port)
        for i in 0..<4 {
            let (status, body, headers) = try TestBed.curl(["-H", "X-Test: spoofed", "-H", "x-test: again", "http://127.0.0.1:\(port)/n\(i)"])
            #expect(status == 200 && body == "live GET /n\(i) body=0", "\(status) \(body)")
            let seen = headers.split(separator: "\r\n").filter { $0.lowercased().hasPrefix("x-seen-x-test:") }
            #expect(seen == ["X-Seen-X-Test: live"], "\(headers)")
        }
    }
}

@Suite(.serialized) struct SlowStart {
    /// A server back UP gets a small share at first, then its full weight.
    @Test(arguments: [1, 2])
    func aReturningServerRampsUp(threads: Int) throws {
        let bed = try TestBed()
        defer { bed.stop() }
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [], backend: """
            option httpchk GET /haproxy.check
            server a 127.0.0.1:\(a) check inter 100 rise 1 fall 1
            server b 127.0.0.1:\(b) check inter 100 rise 1 fall 1 slowstart 3s
        """, global: "    nbthread \(threads)"), waitFor: port)
        FileManager.default.createFile(atPath: bed.directory + "/b.down", contents: nil)
        #expect(TestBed.waitUntil(timeout: 3) { bed.log().contains("Server app/b is DOWN") })
        try FileManager.default.removeItem(atPath: bed.directory + "/b.down")
        #expect(TestBed.waitUntil(timeout: 3) { bed.log().contains("Server app/b is UP") })
        var early = 0
        for i in 0..<20 where try TestBed.curl(["http://127.0.0.1:\(port)/e\(i)"]).1.hasPrefix("b ") { early += 1 }
        #expect(early < 8, "b took \(early) of 20 right after coming back")
        // Once the 3 s ramp is over, b takes its full half again: polled, 20 requests a round.
        var late = 0
        let rampedUp = TestBed.waitUntil(timeout: 8) {
            late = 0
            for i in 0..<20 where (try? TestBed.curl(["http://127.0.0.1:\(port)/l\(i)"]).1.hasPrefix("b ")) == true { late += 1 }
            return late >= 9 && late <= 11
        }
        #expect(rampedUp, "b took \(late) of 20 after slowstart")
    }
}

@Suite(.serialized) struct CookieOptions {
    func start(_ cookieLine: String) throws -> (TestBed, Int) {
        let bed = try TestBed()
        let w1 = try bed.backend(name: "webmail1")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [], backend: """
            \(cookieLine)
            server webmail1 127.0.0.1:\(w1) cookie wm01
        """), waitFor: port)
        return (bed, port)
    }

    @Test func postonlyInsertsOnlyAfterAPost() throws {
        let (bed, port) = try start("cookie SERVERID insert postonly")
        defer { bed.stop() }
        #expect(!(try TestBed.curl(["http://127.0.0.1:\(port)/g"]).2.lowercased().contains("set-cookie")))
        #expect(try TestBed.curl(["-d", "x=1", "http://127.0.0.1:\(port)/p"]).2.lowercased().contains("set-cookie: serverid=wm01"))
    }

    @Test func preserveKeepsTheServersOwnCookie() throws {
        let (bed, port) = try start("cookie SERVERID insert preserve")
        defer { bed.stop() }
        let h = try TestBed.curl(["http://127.0.0.1:\(port)/setcookie"]).2.lowercased()
        #expect(h.contains("set-cookie: serverid=fromserver") && !h.contains("serverid=wm01"))
    }

    @Test func maxidleIgnoresAStaleCookieAndRefreshesAFreshOne() throws {
        let (bed, port) = try start("cookie SERVERID insert indirect maxidle 30s")
        defer { bed.stop() }
        let now = Int(Date().timeIntervalSince1970)
        let fresh = try TestBed.curl(["-H", "Cookie: SERVERID=wm01|\(now - 5)|\(now - 5)", "http://127.0.0.1:\(port)/f"]).2
        #expect(fresh.lowercased().contains("set-cookie: serverid=wm01|"), "a dated cookie is refreshed")
        #expect(fresh.contains("|\(now - 5); path=/"), "first-seen date is kept: \(fresh)")
        let stale = try TestBed.curl(["-H", "Cookie: SERVERID=wm01|\(now - 3600)|\(now - 3600)", "http://127.0.0.1:\(port)/s"]).2
        #expect(!stale.contains("|\(now - 3600); path=/"), "a stale cookie starts afresh: \(stale)")
    }
}

/// A server's `show stat` row as column → value (empty when the row or the socket is missing).
func statRow(_ socket: String, _ backend: String, _ server: String) -> [String: String] {
    let lines = (cli(socket, "show stat") ?? "").split(separator: "\n")
    guard let header = lines.first?.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false),
          let line = lines.first(where: { $0.hasPrefix("\(backend),\(server),") }) else { return [:] }
    return Dictionary(zip(header.map(String.init), csvFields(line)), uniquingKeysWith: { a, _ in a })
}

/// The fields of one CSV line, as HAProxy writes them: a field with a comma or a quote is
/// in double quotes, its own quotes doubled.
func csvFields(_ line: Substring) -> [String] {
    var fields: [String] = [], field = "", quoted = false
    var chars = line.makeIterator()
    var pending: Character? = nil
    while let c = pending ?? chars.next() {
        pending = nil
        if quoted {
            if c == "\"" {
                if let n = chars.next() { if n == "\"" { field.append("\"") } else { quoted = false; pending = n } } else { quoted = false }
            } else { field.append(c) }
        } else if c == "\"" && field.isEmpty {
            quoted = true
        } else if c == "," {
            fields.append(field); field = ""
        } else {
            field.append(c)
        }
    }
    fields.append(field)
    return fields
}
