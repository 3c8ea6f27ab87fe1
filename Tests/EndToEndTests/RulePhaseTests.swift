import Foundation
import Testing

/// What rules may read in each phase (DECISIONS' table), variables, and the rewrites that
/// must never send a malformed head: all with real backends.
@Suite(.serialized) struct RulePhases {
    /// Each class of fetch in a response rule: refused, warned about, or read correctly.
    @Test func responseRulesReadWhatTheyMay() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let bad = bed.directory + "/bad.cfg"
        try httpConfig(port: port, servers: [("s1", b)], frontend: "    http-response set-header X-Path %[path]").write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try Harness.proxy(["-c", "-f", bad])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("bad.cfg:12: error: frontend 'web': http-response set-header: in '%[path]': 'path' cannot work here: it needs the request, which is gone once it is sent to the server; capture it while the request is there: 'http-request set-var(txn.path) path', then read 'var(txn.path)'"), "\(refused.stderr)")
        let frontend = """
            http-request set-var(txn.path) path
            http-request set-var(req.early) str(gone)
            http-response set-header X-Path %[var(txn.path)]
            http-response set-header X-Method %[method]
            http-response set-header X-Src %[src]
            http-response set-header X-Served-By %[hdr(x-backend)]
            http-response set-header X-Api yes if { path_beg /api }
            http-response set-header X-Not-Api yes unless { path_beg /api }
            http-response set-header X-Error yes if { status 500 }
            http-response set-var(txn.seen) res.hdr(x-backend)
        """
        let cfg = bed.directory + "/good.cfg"
        try httpConfig(port: port, servers: [("s1", b)], frontend: frontend).write(toFile: cfg, atomically: true, encoding: .utf8)
        let check = try Harness.proxy(["-c", "-f", cfg])
        #expect(check.status == 0)
        #expect(check.stderr.contains("will never match in 'http-response set-header': 'path_beg' needs the request"), "\(check.stderr)")
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend), waitFor: port)
        let (code, _, mixedCase) = try TestBed.curl(["http://127.0.0.1:\(port)/api/items?x=1"])
        let headers = mixedCase.lowercased()
        #expect(code == 200)
        #expect(headers.contains("x-path: /api/items\r\n") && headers.contains("x-method: get\r\n") && headers.contains("x-src: 127.0.0.1\r\n"), "\(headers)")
        // hdr() in a response rule reads the response's header; the request ACL never matches.
        #expect(headers.contains("x-served-by: one\r\n") && !headers.contains("x-api:") && headers.contains("x-not-api: yes"), "\(headers)")
        let failed = try TestBed.curl(["http://127.0.0.1:\(port)/status/500"])
        #expect(failed.0 == 500 && failed.2.lowercased().contains("x-error: yes") && failed.2.lowercased().contains("x-path: /status/500"))
    }

    /// `http-response deny` (502 by default, or its `deny_status`), `return` (a response of
    /// our own in the server's place) and `allow` (no more rules of that section), as HAProxy
    /// 2.6 runs them; the server's connection is dropped and the next request is served.
    @Test func responseDenyReturnAndAllow() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: """
            log stdout format raw local0
            option httplog
            http-response allow if { status 201 }
            http-response deny if { status 404 }
            http-response deny deny_status 503 if { status 500 }
            http-response deny deny_status 403 if { res.hdr(x-seen-x-test) -m found }
            http-response return status 299 content-type text/plain string replaced hdr X-From proxy if { status 202 }
            http-response set-header X-After yes
        """), waitFor: port)
        let denied = try TestBed.curl(["http://127.0.0.1:\(port)/status/404"])
        #expect(denied.0 == 502 && !denied.1.contains("one 404"), "\(denied)")
        let custom = try TestBed.curl(["http://127.0.0.1:\(port)/status/500"])
        #expect(custom.0 == 503, "\(custom)")
        let returned = try TestBed.curl(["http://127.0.0.1:\(port)/status/202"])
        #expect(returned.0 == 299 && returned.1 == "replaced" && returned.2.lowercased().contains("x-from: proxy") && !returned.2.lowercased().contains("x-after"), "\(returned)")
        // The next response on the same client connection is parsed from its own start (a
        // denied response used to leave the parser where it stopped), and a HEAD gets no body.
        let r = try Harness.run(Harness.which("curl") ?? "/usr/bin/curl", ["-s", "-w", "%{http_code} "]
            + ["/status/404", "/status/204", "/ok"].flatMap { ["-o", "/dev/null", "http://127.0.0.1:\(port)\($0)"] })
        #expect(r.stdout == "502 204 200 ", "\(r.stdout) \(r.stderr)")
        // A denied response with a long head, then a short one on the same connection.
        let long = String(repeating: "x", count: 600)
        let pair = String(decoding: TestBed.raw(port, Array("GET /echo HTTP/1.1\r\nHost: x\r\nX-Test: \(long)\r\n\r\nGET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)), as: UTF8.self)
        #expect(pair.hasPrefix("HTTP/1.1 403 ") && pair.contains("HTTP/1.1 204 "), "\(pair)")
        let head = String(decoding: TestBed.raw(port, Array("HEAD /status/202 HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)), as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 299 ") && !head.contains("replaced") && head.contains("HTTP/1.1 200 OK"), "\(head)")
        let allowed = try TestBed.curl(["http://127.0.0.1:\(port)/status/201"])
        #expect(allowed.0 == 201 && !allowed.2.lowercased().contains("x-after"), "\(allowed)")
        let plain = try TestBed.curl(["http://127.0.0.1:\(port)/ok"])
        #expect(plain.0 == 200 && plain.2.lowercased().contains("x-after: yes") && plain.1.hasPrefix("one GET /ok"), "\(plain)")
        // The denied response is logged with its status and HAProxy's termination state.
        #expect(TestBed.waitUntil { bed.log().contains(" 502 ") && bed.log().contains(" PH-- ") }, "\(bed.log())")
    }

    /// `base` (Host and path), its ACL forms, and a map in a `return` response's log-format
    /// body: the formats are compiled with the rules, so a map file is read at load and a
    /// response renders it (it used to come out as the text written).
    @Test func baseAndMapsInLocalResponses() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let map = bed.directory + "/prefixes.map"
        try "example.com/ab yes\n".write(toFile: map, atomically: true, encoding: .utf8)
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain lf-string "%[base]|%[base,length]|%[base,map_beg(\(map),none)]" hdr X-Base %[base] if { base_beg example.com/a }
            http-request return status 404 content-type text/plain lf-string "other %[base]"

        """, waitFor: port)
        let hit = try TestBed.curl(["-H", "Host: example.com", "http://127.0.0.1:\(port)/abc?x=1"])
        #expect(hit.0 == 200 && hit.1 == "example.com/abc|15|yes" && hit.2.lowercased().contains("x-base: example.com/abc"), "\(hit)")
        let other = try TestBed.curl(["-H", "Host: example.com", "http://127.0.0.1:\(port)/zz"])
        #expect(other.0 == 404 && other.1 == "other example.com/zz", "\(other)")
        #expect(String(decoding: TestBed.raw(port, Array("GET /nohost HTTP/1.0\r\n\r\n".utf8)), as: UTF8.self).hasSuffix("other /nohost"))
    }

    /// `fe_name`, `be_name` and `srv_name`, where HAProxy 2.6 gives them (compared side by
    /// side): `be_name` in a frontend's request rules is refused, as there.
    @Test func proxyAndServerNames() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request set-header X-Test fe=%[fe_name]
            http-response set-header X-Resp fe=%[fe_name],be=%[be_name],srv=%[srv_name]
            default_backend app
        backend app
            server s1 127.0.0.1:\(b)

        """, waitFor: port)
        let (status, _, headers) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        #expect(status == 200 && headers.contains("X-Seen-X-Test: fe=web") && headers.lowercased().contains("x-resp: fe=web,be=app,srv=s1"), "\(headers)")
        let bad = bed.directory + "/bad.cfg"
        try httpConfig(port: port, servers: [("s1", b)], frontend: "    http-request set-header X-Be %[be_name]").write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try Harness.proxy(["-c", "-f", bad])
        #expect(refused.status == 1 && refused.stderr.contains("'be_name' cannot work here: no backend is chosen yet"), "\(refused.stderr)")
    }

    /// The process fetches `date([offset],[unit])`, `date_us`, `hostname` and `proc`, as
    /// HAProxy 2.6 gives them (the offset in the unit asked for, added last).
    @Test func processFetches() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain lf-string "%[date] %[date(3600)] %[date(0,ms)] %[date(-10,us)] %[date_us] %[hostname] %[proc]"

        """, waitFor: port)
        let before = Int(Date().timeIntervalSince1970)
        let (status, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        let f = body.split(separator: " ").map(String.init)
        #expect(status == 200 && f.count == 7, "\(body)")
        guard f.count == 7, let s = Int(f[0]), let later = Int(f[1]), let ms = Int(f[2]), let us = Int(f[3]), let part = Int(f[4]) else { return }
        #expect(s >= before && s <= before + 2 && later == s + 3600, "\(body)")
        #expect(ms / 1000 >= s && ms / 1000 <= s + 1 && us / 1_000_000 >= s - 1 && us / 1_000_000 <= s + 1 && (0..<1_000_000).contains(part), "\(body)")
        #expect(f[5] == ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) || f[5] == ProcessInfo.processInfo.hostName, "\(body)")
        #expect(f[6] == "1")
    }

    /// `txn.` variables carry each request's own value to its response: pipelined requests
    /// and requests with bodies, on one connection, never mix them up.
    /// `set-var(NAME,COND...)`, HAProxy 2.6's conditions, and a `proc.` variable set by a
    /// `tcp-request content` rule: the answer is what HAProxy 2.6.12 gives on the same file
    /// (compared side by side).
    @Test func setVarConditions() throws {
        let bed = try TestBed()
        let front = TestBed.freePort()
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(front)
            tcp-request content set-var(proc.t) str(tcp)
            http-request set-var(txn.a) str(first)
            http-request set-var(txn.a,ifnotexists) str(second)
            http-request set-var(txn.b,ifexists) str(never)
            http-request set-var(txn.c) req.hdr(x-c)
            http-request set-var(txn.c,ifnotempty) str(filled)
            http-request set-var(txn.n) int(5)
            http-request set-var(txn.n,ifgt) int(3)
            http-request set-var(txn.m) int(5)
            http-request set-var(txn.m,iflt) int(3)
            http-request set-var(txn.e,ifempty) str(x)
            http-request set-var(txn.z,ifempty) str()
            http-request set-var-fmt(txn.f,ifnotset) "fmt"
            http-request set-var(proc.p,ifexists) str(proc)
            http-request return status 200 content-type text/plain lf-string "a=%[var(txn.a)] b=%[var(txn.b)] c=%[var(txn.c)] n=%[var(txn.n)] m=%[var(txn.m)] e=%[var(txn.e)] f=%[var(txn.f)] p=%[var(proc.p)] t=%[var(proc.t)] z=[%[var(txn.z,unset)]]"

        """, waitFor: front)
        let (code, body, _) = try TestBed.curl(["-H", "x-c: ", "http://127.0.0.1:\(front)/"])
        #expect(code == 200 && body == "a=first b= c=filled n=3 m=5 e= f=fmt p=proc t=tcp z=[]", "\(body)")
    }

    @Test func transactionVariablesFollowTheirOwnRequest() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let frontend = """
            http-request set-var(txn.path) path
            http-request set-var(sess.first) path unless { var(sess.first) -m found }
            http-response set-header X-Path %[var(txn.path)]
            http-response set-header X-First %[var(sess.first)]
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend), waitFor: port)
        let body = String(repeating: "b", count: 3000)
        let reply = TestBed.raw(port, "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)GET /two?q HTTP/1.1\r\nHost: a\r\n\r\nGET /slow?ms=100 HTTP/1.1\r\nHost: a\r\n\r\nGET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        let lines = reply.lowercased().split(separator: "\r\n")
        let paths = lines.filter { $0.hasPrefix("x-path: ") }.map { String($0.dropFirst(8)) }
        #expect(paths == ["/one", "/two", "/slow", "/four"], "\(reply)")
        let firsts = lines.filter { $0.hasPrefix("x-first: ") }
        #expect(firsts.count == 4 && firsts.allSatisfy { $0 == "x-first: /one" })
    }

    /// A rewrite that makes the head larger than the buffer gets a 500, logged, and the
    /// server sees nothing of it.
    @Test func anOversizedRewriteIsA500AndNeverReachesTheServer() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let frontend = """
            option httplog
            log stderr local0
            http-request set-header X-Copy-A %[req.hdr(x-long)]
            http-request set-header X-Copy-B %[req.hdr(x-long)]
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend, global: "    tune.bufsize 4096"), waitFor: port)
        let long = String(repeating: "x", count: 1500)
        #expect(try TestBed.curl(["-H", "X-Long: short", "http://127.0.0.1:\(port)/fits"]).0 == 200)
        let (code, _, _) = try TestBed.curl(["-H", "X-Long: \(long)", "http://127.0.0.1:\(port)/too-big"])
        #expect(code == 500)
        #expect(TestBed.stats(b).count == 1, "the backend saw the oversized request")
        #expect(TestBed.waitUntil { bed.log().contains(" 500 ") && bed.log().contains("PR--") }, "\(bed.log())")
    }

    /// The same for a response: a response rule that overflows the head gives a 500.
    @Test func anOversizedResponseRewriteIsA500() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let frontend = """
            http-request set-var(txn.long) req.hdr(x-long)
            http-response set-header X-Copy-A %[var(txn.long)]
            http-response set-header X-Copy-B %[var(txn.long)]
            http-response set-header X-Copy-C %[var(txn.long)]
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend, global: "    tune.bufsize 4096"), waitFor: port)
        let long = String(repeating: "y", count: 1500)
        let (code, body, _) = try TestBed.curl(["-H", "X-Long: \(long)", "http://127.0.0.1:\(port)/"])
        #expect(code == 500 && !body.contains("one GET"))
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
    }

    /// `del-header NAME -m beg` deletes every header that starts with NAME: a client's
    /// spoofed X-Forwarded-For never reaches the server.
    @Test func delHeaderMatchMethods() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let frontend = """
            http-request del-header X-Forwarded -m beg
            http-request del-header -test -m end
            http-response del-header x-seen-c -m sub
            http-response del-header ^x-seen-h -m reg
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend), waitFor: port)
        let (code, _, headers) = try TestBed.curl(["-H", "X-Forwarded-For: 6.6.6.6", "-H", "X-Test: spoof", "-H", "Cookie: a=b", "http://127.0.0.1:\(port)/"])
        #expect(code == 200)
        let seen = TestBed.stats(b).last["headers"] as? [[String]] ?? []
        #expect(!seen.contains { $0.first?.lowercased().hasPrefix("x-forwarded") == true || $0.first?.lowercased() == "x-test" }, "\(seen)")
        #expect(!headers.lowercased().contains("x-seen-cookie") && !headers.lowercased().contains("x-seen-host"), "\(headers)")
    }

    /// `http-request tarpit` holds the request for `timeout tarpit`, then answers 500 (or
    /// `deny_status`) and closes; no server is contacted; the log says PT.
    @Test func tarpitHoldsThenAnswers() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let frontend = """
            option httplog
            log stderr local0
            timeout tarpit 700ms
            http-request tarpit deny_status 403 if { path /trap }
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend), waitFor: port)
        let started = Date()
        let (code, _, headers) = try TestBed.curl(["http://127.0.0.1:\(port)/trap"])
        let took = Date().timeIntervalSince(started)
        #expect(code == 403 && took >= 0.65 && took < 3, "\(code) after \(took) s")
        #expect(headers.lowercased().contains("connection: close"))
        #expect(TestBed.stats(b).count == 0)
        #expect(TestBed.waitUntil { bed.log().contains("PT--") }, "\(bed.log())")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/free"]).0 == 200)
    }

    /// `monitor-uri`: a path matches with its query, an absolute-form request too; an
    /// absolute monitor-uri matches only the same absolute target.
    @Test func monitorURIAsHAProxyComparesIt() throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), port2 = TestBed.freePort()
        let b = try bed.backend(name: "one")
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: "    monitor-uri /health",
                                 extra: "frontend abs\n    bind 127.0.0.1:\(port2)\n    monitor-uri http://host/health\n    default_backend app\n"), waitFor: port)
        func served(_ p: Int, _ request: String) -> Bool { TestBed.raw(p, request).contains("Service ready.") }
        #expect(served(port, "GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(served(port, "GET http://other/health HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"))
        #expect(!served(port, "GET /health?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(!served(port, "GET /HEALTH HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
        #expect(served(port2, "GET http://host/health HTTP/1.1\r\nHost: host\r\nConnection: close\r\n\r\n"))
        #expect(!served(port2, "GET /health HTTP/1.1\r\nHost: host\r\nConnection: close\r\n\r\n"))
    }
}
