import Foundation
import Testing

/// A config with one HTTP frontend on `port` whose default backend is `app`.
func httpConfig(port: Int, servers: [(String, Int)], frontend: String = "", backend: String = "", global: String = "",
                defaults: String = "", extra: String = "") -> String {
    """
    global
        maxconn 1000
    \(global)
    \(TestBed.defaults("http"))
    \(defaults)
    frontend web
        bind 127.0.0.1:\(port)
    \(frontend)
        default_backend app
    backend app
    \(backend)
    \(servers.map { "    server \($0.0) 127.0.0.1:\($0.1)" }.joined(separator: "\n"))
    \(extra)
    """
}

@Suite(.serialized) struct HTTPForwarding {
    @Test func forwardsAndKeepsAlive() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: "    option forwardfor"), waitFor: port)
        let (code, body, headers) = try TestBed.curl(["-H", "X-Test: yes", "http://127.0.0.1:\(port)/hello?x=1"])
        #expect(code == 200 && body == "one GET /hello?x=1 body=0")
        #expect(headers.contains("X-Seen-X-Forwarded-For: 127.0.0.1") && headers.contains("X-Seen-X-Test: yes"))
        // Two requests on one client connection, and hop-by-hop headers stripped.
        let r = try Harness.run(Harness.which("curl")!, ["-sv", "http://127.0.0.1:\(port)/a", "http://127.0.0.1:\(port)/b"])
        #expect(r.stderr.contains("Re-using existing connection"))
        #expect(r.stdout == "one GET /a body=0\none GET /b body=0\n")
        let close = try TestBed.curl(["-H", "Connection: close", "http://127.0.0.1:\(port)/c"])
        #expect(close.2.lowercased().contains("connection: close"))
        #expect(!close.2.contains("X-Seen-Connection"))
        // The client's close is not passed on, so the server connection can go to the pool.
        let seen = TestBed.stats(b).last["headers"] as? [[String]] ?? []
        #expect(!seen.contains { $0.first?.lowercased() == "connection" }, "\(seen)")
    }

    /// The hostile-request list: each gets its 4xx, and the backend never sees it.
    @Test func hostileRequestsNeverReachTheBackend() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)]), waitFor: port)
        let cases: [(String, String)] = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", "400"),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: \u{01}\r\n\r\n", "400"),
            ("GET /\u{01} HTTP/1.1\r\nHost: a\r\n\r\n", "400"),
            ("GET / HTTP/1.1\nHost: a\n\n", "400"),
            ("GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X-Big: " + String(repeating: "b", count: 200) + "\r\n", count: 100) + "\r\n", "431"),
            ("GET /" + String(repeating: "u", count: 20000) + " HTTP/1.1\r\nHost: a\r\n\r\n", "414"),
        ]
        for (request, status) in cases {
            let reply = TestBed.raw(port, request)
            #expect(reply.hasPrefix("HTTP/1.1 \(status) "), "\(request.prefix(60).debugDescription) -> \(reply.prefix(40).debugDescription)")
        }
        #expect(TestBed.stats(b).count == 0)
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)]), waitFor: port)
        let reply = TestBed.raw(port, "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /slow?ms=200 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let order = reply.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)) }.filter { $0.hasPrefix("one GET") }
        #expect(order == ["one GET /1 body=0", "one GET /slow?ms=200 body=0", "one GET /3 body=0"])
    }

    @Test func bodiesAndFraming() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)]), waitFor: port)
        let url = "http://127.0.0.1:\(port)"
        let payload = bed.directory + "/payload"
        try Data(repeating: 0x61, count: 300_000).write(to: URL(fileURLWithPath: payload))
        #expect(try TestBed.curl(["--data-binary", "@" + payload, url + "/post"]).1 == "one POST /post body=300000")
        #expect(try TestBed.curl(["-H", "Transfer-Encoding: chunked", "--data-binary", "@" + payload, url + "/chunk"]).1 == "one POST /chunk body=300000")
        #expect(try TestBed.curl(["-H", "Expect: 100-continue", "--data-binary", "@" + payload, url + "/expect"]).1 == "one POST /expect body=300000")
        #expect(try TestBed.curl([url + "/chunked"]).1 == "hello chunks")
        #expect(try TestBed.curl([url + "/close"]).1 == "one until close")
        #expect(try TestBed.curl([url + "/big?bytes=5000000"]).1.count == 5_000_000)
        #expect(try TestBed.curl(["-I", url + "/head"]).0 == 200)
        #expect(try TestBed.curl([url + "/status/204"]).0 == 204)
        #expect(try TestBed.curl([url + "/status/304"]).0 == 304)
        // Keep-alive survives each of them.
        let r = try Harness.run(Harness.which("curl")!, ["-sv", url + "/chunked", url + "/status/204", url + "/big?bytes=100000", "-o", "/dev/null"])
        #expect(r.stderr.components(separatedBy: "Re-using existing connection").count == 3)
    }

    @Test func upgradeBecomesATunnel() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], defaults: "    timeout tunnel 5s"), waitFor: port)
        let reply = TestBed.raw(port, Array("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping-pong".utf8), halfClose: true)
        let text = String(decoding: reply, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 101 "))
        #expect(text.hasSuffix("ping-pong"))
    }

    @Test func requestAndResponseRules() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\ncustom maintenance page\n".write(toFile: bed.directory + "/503.http", atomically: true, encoding: .utf8)
        let frontend = """
            acl blocked path_beg /admin
            http-request deny if blocked
            http-request return status 200 content-type text/plain string "pong\\n" if { path /ping }
            http-request redirect location /new code 301 if { path /old }
            http-request redirect scheme https if { path /secure }
            http-request set-header X-Test set-by-proxy
            http-request del-header Cookie
            http-request replace-path ^/v1/(.*) /v2/\\1
            http-response set-header X-Frame-Options DENY
            use_backend empty if { path_beg /maint }
        """
        let extra = "backend empty\n    errorfile 503 \(bed.directory)/503.http\n"
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend, extra: extra), waitFor: port)
        let url = "http://127.0.0.1:\(port)"
        #expect(try TestBed.curl([url + "/admin/x"]).0 == 403)
        #expect(try TestBed.curl([url + "/ping"]).1 == "pong")
        let old = try TestBed.curl([url + "/old"])
        #expect(old.0 == 301 && old.2.contains("location: /new"))
        #expect(try TestBed.curl(["-H", "Host: www.example.com", url + "/secure?q=1"]).2.contains("location: https://www.example.com/secure?q=1"))
        let set = try TestBed.curl(["-H", "Cookie: a=b", "-H", "X-Test: client", url + "/v1/item"])
        #expect(set.1 == "one GET /v2/item body=0")
        #expect(set.2.contains("X-Seen-X-Test: set-by-proxy") && !set.2.contains("X-Seen-Cookie"))
        #expect(set.2.contains("X-Frame-Options: DENY"))
        let maint = try TestBed.curl([url + "/maint"])
        #expect(maint.0 == 503 && maint.1 == "custom maintenance page")
        #expect(TestBed.stats(b).count == 1)
    }

    @Test func timeoutsAndFailures() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let dead = TestBed.freePort()
        let port = TestBed.freePort()
        let config = """
        defaults
            mode http
            timeout connect 500ms
            timeout client 5s
            timeout server 300ms
            timeout http-request 300ms
            retries 1
        frontend web
            bind 127.0.0.1:\(port)
            use_backend dead if { path_beg /dead }
            default_backend app
        backend app
            server s1 127.0.0.1:\(b)
        backend dead
            server s1 127.0.0.1:\(dead)
        """
        try bed.proxy(config, waitFor: port)
        let url = "http://127.0.0.1:\(port)"
        #expect(try TestBed.curl([url + "/slow?ms=1500"]).0 == 504)
        #expect(try TestBed.curl([url + "/dead"]).0 == 503)
        // A request head that never ends: 408 after timeout http-request.
        let slowloris = TestBed.raw(port, "GET / HTTP/1.1\r\nHost: a\r\n", timeout: 3)
        #expect(slowloris.hasPrefix("HTTP/1.1 408 "))
        #expect(try TestBed.curl([url + "/fine"]).1 == "one GET /fine body=0")
    }

    @Test func legacyRewritesOfTheSeedConfig() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "msite")
        let port = TestBed.freePort()
        let backend = """
            reqirep ^(GET\\ /)(\\ .*) \\1webmail.html\\2
            rspirep ^(Location:\\ )(http:[/]*)(.*) \\1https://\\3
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], backend: backend), waitFor: port)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).1 == "msite GET /webmail.html body=0")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/other"]).1 == "msite GET /other body=0")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/location"]).2.contains("Location: https://example.com/a"))
    }

    @Test func httplogLines() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: "    log stdout format raw local0\n    option httplog"), waitFor: port)
        _ = try TestBed.curl(["http://127.0.0.1:\(port)/logged"])
        TestBed.waitUntil { bed.log().contains("GET /logged HTTP/1.1") }
        let line = bed.log().split(separator: "\n").first { $0.contains("/logged") }.map(String.init) ?? ""
        #expect(line.contains(" web app/s1 ") && line.contains(" 200 ") && line.hasPrefix("127.0.0.1:"))
    }

    /// `option prefer-last-server`: a keep-alive client's requests stay on one server while it
    /// takes traffic; without it, round robin alternates them.
    /// (Not with a hash balance: `balance uri` sends each request where its URI goes.)
    @Test(arguments: [(true, "", 1), (false, "", 1), (true, "\n    balance uri", 1), (true, "", 2), (false, "", 2)])
    func preferLastServerKeepsAKeepAliveClient(_ prefer: Bool, _ balance: String, _ threads: Int) throws {
        let bed = try TestBed()
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("a", a), ("b", b)], backend: (prefer ? "    option prefer-last-server" : "") + balance,
                                 global: "    nbthread \(threads)"), waitFor: port)
        let r = try Harness.run(Harness.which("curl") ?? "/usr/bin/curl", ["-s"] + (0..<8).map { "http://127.0.0.1:\(port)/k\($0)" })
        let servers = r.stdout.split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
        #expect(servers.count == 8, "\(r.stdout)")
        #expect(Set(servers).count == (prefer && balance.isEmpty ? 1 : 2), "\(servers)")
    }

    /// `option dontlog-normal`: a 200 and a 404 go unlogged; a 5xx and a request that needed a
    /// retry are logged, as HAProxy decides.
    @Test func dontlogNormalLogsOnlyWhatWentWrong() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort(), retrying = TestBed.freePort()
        try bed.proxy("""
        global
            log stdout format raw local0
        \(TestBed.defaults("http"))
            log global
            option httplog
            option dontlog-normal
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string here if { path /local }
            default_backend app
        frontend retrying
            bind 127.0.0.1:\(retrying)
            default_backend refusing-first
        backend app
            server s1 127.0.0.1:\(b)
        backend refusing-first
            balance first
            retries 1
            option redispatch
            server dead 127.0.0.1:\(TestBed.freePort())
            server s1 127.0.0.1:\(b)

        """, waitFor: port)
        for path in ["/fine", "/status/404", "/status/503", "/local"] { _ = try TestBed.curl(["http://127.0.0.1:\(port)\(path)"]) }
        #expect(try TestBed.curl(["http://127.0.0.1:\(retrying)/retried"]).0 == 200)
        #expect(TestBed.waitUntil { bed.log().contains("GET /status/503 ") && bed.log().contains("GET /retried ") }, "\(bed.log())")
        let log = bed.log()
        // An answer of our own (LR) is normal too, as HAProxy counts it.
        #expect(!log.contains("GET /fine ") && !log.contains("GET /status/404 ") && !log.contains("GET /local "), "\(log)")
    }
}

@Suite(.serialized) struct Balancing {
    func distribution(_ algorithm: String, servers: [(String, String)], requests: Int = 12, threads: Int = 1,
                      path: (Int) -> String = { "/r\($0)" }) throws -> [String] {
        let bed = try TestBed()
        var lines: [String] = []
        for (name, options) in servers {
            let p = try bed.backend(name: name)
            lines.append("    server \(name) 127.0.0.1:\(p) \(options)")
        }
        let port = TestBed.freePort()
        let config = """
        global
            nbthread \(threads)
        defaults
            mode http
            timeout connect 2s
            timeout client 5s
            timeout server 5s
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            balance \(algorithm)
        \(lines.joined(separator: "\n"))
        """
        try bed.proxy(config, waitFor: port)
        var seen: [String] = []
        for i in 0..<requests {
            let (_, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)\(path(i))"])
            seen.append(String(body.prefix { $0 != " " }))
        }
        return seen
    }

    @Test(arguments: [1, 2])
    func roundRobinAlternatesAndHonoursWeights(threads: Int) throws {
        #expect(try distribution("roundrobin", servers: [("a", ""), ("b", "")], requests: 6, threads: threads) == ["a", "b", "a", "b", "a", "b"])
        let weighted = try distribution("roundrobin", servers: [("a", "weight 3"), ("b", "weight 1")], requests: 8, threads: threads)
        #expect(weighted.filter { $0 == "a" }.count == 6)
        let skipped = try distribution("roundrobin", servers: [("a", ""), ("z", "weight 0"), ("d", "disabled")], requests: 4, threads: threads)
        #expect(skipped == ["a", "a", "a", "a"])
    }

    @Test(arguments: [1, 2])
    func otherAlgorithms(threads: Int) throws {
        #expect(Set(try distribution("first", servers: [("a", ""), ("b", "")], requests: 4, threads: threads)) == ["a"])
        #expect(Set(try distribution("source", servers: [("a", ""), ("b", ""), ("c", "")], requests: 6, threads: threads)).count == 1)
        let uri = try distribution("uri", servers: [("a", ""), ("b", ""), ("c", "")], requests: 6, threads: threads) { "/same-\($0 % 2)" }
        #expect(uri[0] == uri[2] && uri[2] == uri[4] && uri[1] == uri[3])
        #expect(Set(try distribution("static-rr", servers: [("a", ""), ("b", "")], requests: 4, threads: threads)) == ["a", "b"])
        #expect(Set(try distribution("leastconn", servers: [("a", ""), ("b", "")], requests: 4, threads: threads)).isSubset(of: ["a", "b"]))
        #expect(Set(try distribution("random", servers: [("a", ""), ("b", "")], requests: 20, threads: threads)).count == 2)
        #expect(Set(try distribution("roundrobin", servers: [("a", "backup"), ("b", "")], requests: 4, threads: threads)) == ["b"])
    }
}

/// A TCP-mode `listen echo` on `port` in front of the echo backend.
func tcpEchoConfig(port: Int, echo: Int, defaults: String = "", listen: String = "") -> String {
    """
    defaults
        mode tcp
    \(defaults)
        timeout connect 2s
        timeout client 10s
        timeout server 10s
    listen echo
        bind 127.0.0.1:\(port)
    \(listen)
        server e 127.0.0.1:\(echo)
    """
}

@Suite(.serialized) struct TCPMode {
    @Test func fourMebibytesEchoByteForByte() throws {
        let bed = try TestBed()
        let echo = try bed.backend(name: "echo", kind: "echo")
        let port = TestBed.freePort()
        try bed.proxy(tcpEchoConfig(port: port, echo: echo, listen: "    tcp-request connection reject if { src 192.0.2.0/24 }"), waitFor: port)
        var payload = [UInt8](repeating: 0, count: 4 << 20)
        var x: UInt32 = 2463534242
        for i in 0..<payload.count { x ^= x << 13; x ^= x >> 17; x ^= x << 5; payload[i] = UInt8(truncatingIfNeeded: x) }
        let reply = TestBed.raw(port, payload, timeout: 10, halfClose: true)
        // Compared outside the expectation: a failure must not make the test library diff
        // two 4 MiB arrays (it takes hours).
        let same = reply == payload
        #expect(reply.count == payload.count)
        #expect(same)
    }
}

/// Runs several curl requests at once; returns their status codes in order.
/// Runs one curl per URL, all at once, and returns their statuses in URL order.
func parallelStatuses(_ urls: [String], timeout: Int = 10) throws -> [Int] {
    let curl = Harness.which("curl") ?? "/usr/bin/curl"
    var running: [(Process, Pipe)] = []
    for u in urls {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: curl)
        p.arguments = ["-s", "-o", "/dev/null", "-m", String(timeout), "-w", "%{http_code}", u]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        running.append((p, out))
    }
    return running.map { p, out in
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Int(String(decoding: data, as: UTF8.self)) ?? 0
    }
}

@Suite(.serialized) struct Queueing {
    func config(port: Int, backend: Int, threads: Int, queueTimeout: String, maxqueue: Int) -> String {
        """
        global
            nbthread \(threads)
        \(TestBed.defaults("http"))
            timeout queue \(queueTimeout)
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s1 127.0.0.1:\(backend) maxconn 1 maxqueue \(maxqueue)
        """
    }

    @Test(arguments: [1, 2])
    func fullServerQueuesThenTimesOut(threads: Int) throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "slow")
        let port = TestBed.freePort()
        try bed.proxy(config(port: port, backend: b, threads: threads, queueTimeout: "400ms", maxqueue: 5), waitFor: port)
        let statuses = try parallelStatuses(Array(repeating: "http://127.0.0.1:\(port)/slow?ms=1500", count: 3))
        #expect(statuses.sorted() == [200, 503, 503], "\(statuses)")
    }

    @Test(arguments: [1, 2])
    func queueDrainsInTurn(threads: Int) throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "slow")
        let port = TestBed.freePort()
        try bed.proxy(config(port: port, backend: b, threads: threads, queueTimeout: "5s", maxqueue: 0), waitFor: port)
        let statuses = try parallelStatuses(Array(repeating: "http://127.0.0.1:\(port)/slow?ms=200", count: 4))
        #expect(statuses == [200, 200, 200, 200])
    }

    @Test(arguments: [1, 2])
    func queueLimitRefusesAtOnce(threads: Int) throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "slow")
        let port = TestBed.freePort()
        try bed.proxy(config(port: port, backend: b, threads: threads, queueTimeout: "5s", maxqueue: 1), waitFor: port)
        let statuses = try parallelStatuses(Array(repeating: "http://127.0.0.1:\(port)/slow?ms=700", count: 3))
        #expect(statuses.sorted() == [200, 200, 503], "\(statuses)")
    }
}

/// Global maxconn: at the limit the proxy stops accepting, and resumes when a connection
/// ends, whichever loop it ended on (with two threads the second connection lives on the
/// loop the acceptor handed it to).
@Suite(.serialized) struct AcceptLimit {
    @Test(arguments: [1, 2])
    func globalMaxconnPausesAndResumesAccepting(threads: Int) throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        try bed.proxy("""
        global
            maxconn 2
            nbthread \(threads)
        defaults
            mode http
            timeout client 10s
            timeout http-keep-alive 10s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: port)
        // a and b are handed to the two loops in turn (whichever way the probe left the
        // turn), so one of the two closes below ends on the loop that does not accept.
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket
        def ask(s):
            s.sendall(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')
            return s.recv(4096)[:12].decode()
        def third(closing):
            c = socket.create_connection(('127.0.0.1', \(port))); c.settimeout(0.7)
            try:
                return ask(c), 'n/a', c
            except socket.timeout:
                closing.close()
                c.settimeout(5)
                return 'waiting', c.recv(4096)[:12].decode(), c
        a = socket.create_connection(('127.0.0.1', \(port))); ra = ask(a)
        b = socket.create_connection(('127.0.0.1', \(port))); rb = ask(b)
        e1, l1, c = third(a)
        e2, l2, d = third(b)
        print(ra, rb, e1, l1, e2, l2, sep='|')
        """])
        let ok = "HTTP/1.1 200"
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == [ok, ok, "waiting", ok, "waiting", ok].joined(separator: "|"),
                "\(r.stdout) \(r.stderr)")
    }
}

@Suite(.serialized) struct TCPLogs {
    @Test func tcplogLineAfterTheConnection() throws {
        let bed = try TestBed()
        let echo = try bed.backend(name: "echo", kind: "echo")
        let port = TestBed.freePort()
        try bed.proxy(tcpEchoConfig(port: port, echo: echo, defaults: "    log stdout format raw local0\n    option tcplog"), waitFor: port)
        let reply = TestBed.raw(port, Array("hello tcp".utf8), halfClose: true)
        #expect(String(decoding: reply, as: UTF8.self) == "hello tcp")
        #expect(TestBed.waitUntil { bed.log().contains(" 9 -- ") })
        let line = bed.log().split(separator: "\n").last { $0.contains(" echo echo/e ") }.map(String.init) ?? ""
        #expect(line.hasPrefix("127.0.0.1:") && line.contains(" 9 -- "), "\(line)")
    }

    @Test func logasapLogsAtTheResponseHead() throws {
        let bed = try TestBed()
        let b = try bed.backend(name: "one")
        let port = TestBed.freePort()
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: "    log stdout format raw local0\n    option httplog\n    option logasap"), waitFor: port)
        _ = try TestBed.curl(["http://127.0.0.1:\(port)/early"])
        #expect(TestBed.waitUntil { bed.log().contains("GET /early HTTP/1.1") })
        let line = bed.log().split(separator: "\n").first { $0.contains("/early") }.map(String.init) ?? ""
        #expect(line.contains(" 200 +"), "\(line)")
    }
}
