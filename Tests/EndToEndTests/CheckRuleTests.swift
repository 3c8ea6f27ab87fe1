import Foundation
import Glibc
import Testing

/// Health-check rules with variables and log-format texts (`set-var`, `send-lf`,
/// `send-binary-lf`, `expect string-lf|binary-lf`, `connect port <expr>`, `on-success` and
/// `on-error` formats, `http-check send uri-lf|hdr`, `expect hdr|fhdr`), against a real Redis
/// and real HTTP servers. Every expected result is what HAProxy 2.6 shows for the same file
/// and servers (compared side by side with `show stat` and the logs).
@Suite(.serialized) struct CheckRuleTests {
    static let redis = Harness.which("redis-server")

    static func result(_ socket: String, _ backend: String, _ server: String) -> [String] {
        let r = statRow(socket, backend, server)
        return ["status", "check_status", "check_code", "last_chk"].map { r[$0] ?? "?" }
    }

    /// With one thread and with two (DECISIONS: health runs under both).
    @Test(.enabled(if: redis != nil, "needs redis-server"), arguments: [1, 2])
    func tcpCheckVariablesAndFormats(threads: Int) throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), front = TestBed.freePort()
        try bed.start(Self.redis!, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", bed.directory])
        #expect(TestBed.waitForPort(port), "redis on \(port)")
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            nbthread \(threads)
        \(TestBed.defaults("tcp"))
            timeout check 500
        frontend f
            bind 127.0.0.1:\(front)
            default_backend lf
        backend lf
            option tcp-check
            tcp-check set-var(check.cmd) str(PING)
            tcp-check set-var(check.port) int(\(port))
            tcp-check connect port var(check.port)
            tcp-check send-lf "%[var(check.cmd)]\\r\\n"
            tcp-check expect string-lf "+PONG"
            tcp-check send-binary-lf "50494e47%[str(0d0a)]"
            tcp-check expect binary-lf "2b504f4e47" on-success "pong from %s at %[var(check.port)]"
            server a 127.0.0.1:1 check inter 200 rise 1 fall 1
        backend timeout
            option tcp-check
            tcp-check send-lf "PING\\r\\n"
            tcp-check expect string-lf "%[str(NOPE)]"
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend plain
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend numbered
            option tcp-check
            tcp-check comment "ping phase"
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check comment "on expects"
            tcp-check expect min-recv 1 string X
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend sendonly
            option tcp-check
            tcp-check send PING\\r\\n
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend connectonly
            option tcp-check
            tcp-check connect
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend unwanted
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect ! string +PONG comment "no pong wanted"
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend payload
            option tcp-check
            tcp-check send FOO\\r\\n
            tcp-check expect min-recv 4 string +PONG error-status L7STS on-error "%[res.payload(0,0),cut_crlf]" status-code int(42)
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func result(_ b: String) -> [String] { Self.result(socket, b, "a") }
        // The port, the command and the pattern all come from variables and formats.
        #expect(TestBed.waitUntil { result("lf") == ["UP", "L7OK", "0", "pong from a at \(port)"] }, "\(result("lf"))")
        #expect(TestBed.waitUntil { result("timeout") == ["DOWN", "L7TOUT", "", " at step 2 of tcp-check (expect log-format string)"] }, "\(result("timeout"))")
        #expect(TestBed.waitUntil { result("plain") == ["UP", "L7OK", "0", "(tcp-check)"] }, "\(result("plain"))")
        // Comment lines count as steps, and a comment names the rules of one kind after it.
        #expect(TestBed.waitUntil { bed.log().contains("Server numbered/a is DOWN, reason: Layer7 invalid response, info: \"TCPCHK did not match content 'X' at step 5 comment: on expects\"") },
                "\(bed.log())")
        #expect(TestBed.waitUntil { result("sendonly") == ["UP", "L7OK", "0", "(tcp-check)"] }, "\(result("sendonly"))")
        #expect(TestBed.waitUntil { result("connectonly") == ["UP", "L4OK", "", "(tcp-check)"] }, "\(result("connectonly"))")
        #expect(TestBed.waitUntil { result("unwanted") == ["DOWN", "L7RSP", "", "TCPCHK matched unwanted content '+PONG' at step 2 comment: no pong wanted"] },
                "\(result("unwanted"))")
        // The server's own error line, quoted through res.payload and cut_crlf.
        #expect(TestBed.waitUntil { result("payload") == ["DOWN", "L7STS", "42", "-ERR unknown command 'FOO', with args beginning with: "] }, "\(result("payload"))")
        #expect(TestBed.waitUntil { bed.log().contains("Server unwanted/a is DOWN, reason: Layer7 invalid response, info: \"TCPCHK matched unwanted content '+PONG' at step 2 comment: no pong wanted\", check duration: ") },
                "\(bed.log())")
    }

    @Test(arguments: [1, 2])
    func httpCheckVariablesAndHeaders(threads: Int) throws {
        let bed = try TestBed()
        let web = try bed.backend(name: "web"), probe = try bed.backend(name: "probe")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            nbthread \(threads)
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(front)
            default_backend vars
        backend vars
            option httpchk
            http-check set-var(check.token) str(abc123)
            http-check send meth GET uri-lf /probe/%[var(check.token)] hdr X-Test %[var(check.token)] hdr X-Empty %[var(check.nothing)]
            http-check expect status 200
            http-check expect hdr name x-seen-x-test value-lf %[var(check.token)]
            http-check set-var(check.after) str(later)
            http-check expect string-lf /probe/%[var(check.token)] on-success "ok %[var(check.after)]"
            server w 127.0.0.1:\(probe) check inter 200 rise 1 fall 1
        backend methods
            option httpchk
            http-check send meth GET uri /x hdr X-Test "a, b ,c"
            http-check expect hdr name -m end seen-x-test value b
            http-check expect fhdr name x-seen-x-test value -m reg '^a, b ,c$'
            http-check expect ! fhdr name X-SEEN-X-TEST value b
            server w 127.0.0.1:\(web) check inter 200 rise 1 fall 1
        backend whole
            option httpchk
            http-check send meth GET uri /x hdr X-Test "a, b ,c"
            http-check expect hdr name x-seen-x-test value "a, b"
            server w 127.0.0.1:\(web) check inter 200 rise 1 fall 1
        backend absent
            option httpchk
            http-check expect fhdr name -m beg x-seen-x value -m sub nothere
            server w 127.0.0.1:\(web) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func result(_ b: String) -> [String] { Self.result(socket, b, "w") }
        #expect(TestBed.waitUntil { result("vars") == ["UP", "L7OK", "200", "ok later"] }, "\(result("vars"))")
        #expect(TestBed.waitUntil { result("methods") == ["UP", "L7OK", "200", ""] }, "\(result("methods"))")
        // `hdr` splits values on commas: "a, b" is none of them. A header mismatch is a wrong
        // status with the status line's phrase, as HAProxy reports it.
        #expect(TestBed.waitUntil { result("whole") == ["DOWN", "L7STS", "200", "OK"] }, "\(result("whole"))")
        #expect(TestBed.waitUntil { result("absent") == ["DOWN", "L7STS", "200", "OK"] }, "\(result("absent"))")
        // The request the check sent: its URI and header from the variable; an empty header left out.
        let last = TestBed.stats(probe).last
        let headers = (last["headers"] as? [[String]] ?? []).map { $0.joined(separator: ": ") }
        #expect(last["target"] as? String == "/probe/abc123" && headers.contains("X-Test: abc123"), "\(last)")
        #expect(!headers.contains { $0.lowercased().hasPrefix("x-empty") }, "\(headers)")
        #expect(bed.log().contains("Server whole/w is DOWN, reason: Layer7 wrong status, code: 200, info: \"OK\", check duration: "), "\(bed.log())")
    }

    /// Debian's nginx as the checked server: it serves `/health` while the file exists (404
    /// once it is removed: `disable-on-404` drains the server to NOLB, and it comes back when
    /// the file does), and logs the `X-Haproxy-Server-State` header each check sends.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/sbin/nginx"), "needs nginx"))
    func nginxDrainsOn404AndSeesTheState() throws {
        let bed = try TestBed()
        let dir = bed.directory + "/nginx", port = TestBed.freePort(), front = TestBed.freePort()
        try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/www/health", contents: Data("ok\n".utf8))
        let stopNginx = try TLSOriginationTests.runNginx("""
        daemon on;
        pid \(dir)/nginx.pid;
        error_log \(dir)/error.log;
        events { worker_connections 64; }
        http {
            log_format state "$request_uri|$http_x_haproxy_server_state";
            access_log \(dir)/access.log state;
            client_body_temp_path \(dir); proxy_temp_path \(dir); fastcgi_temp_path \(dir); uwsgi_temp_path \(dir); scgi_temp_path \(dir);
            server { listen 127.0.0.1:\(port); root \(dir)/www; }
        }
        """, in: dir, port: port)
        defer { stopNginx() }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
            node lb-test
        \(TestBed.defaults("http"))
        frontend f
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            option httpchk GET /health
            http-check disable-on-404
            http-check send-state
            server n 127.0.0.1:\(port) check inter 150 rise 1 fall 1 weight 3

        """, waitFor: front)
        func result() -> [String] { Self.result(socket, "app", "n") }
        func accessLog() -> String { (try? String(contentsOfFile: dir + "/access.log", encoding: .utf8)) ?? "" }
        #expect(TestBed.waitUntil { result() == ["UP", "L7OK", "200", ""] }, "\(result())")
        #expect(TestBed.waitUntil { accessLog().contains("/health|UP; address=127.0.0.1; port=\(port); name=app/n; node=lb-test; weight=3/3; scur=0/0; qcur=0") },
                "\(accessLog())")
        try FileManager.default.removeItem(atPath: dir + "/www/health")
        #expect(TestBed.waitUntil { result() == ["NOLB", "L7OKC", "404", ""] }, "\(result())")
        // nginx now hears that the server is draining: NOLB, and no weight left in the farm.
        #expect(TestBed.waitUntil { accessLog().contains("/health|NOLB; address=127.0.0.1; port=\(port); name=app/n; node=lb-test; weight=3/0;") }, "\(accessLog())")
        #expect(bed.log().contains("Server app/n is stopping, reason: Layer7 check conditionally passed, code: 404, check duration: "), "\(bed.log())")
        FileManager.default.createFile(atPath: dir + "/www/health", contents: Data("ok\n".utf8))
        #expect(TestBed.waitUntil { result() == ["UP", "L7OK", "200", ""] }, "\(result())")
    }

    /// Several `tcp-check connect` rules in one check (HAProxy's documented "HTTP, then HTTPS
    /// on 443" pattern): a later connect ends the connection and opens another, here TLS to
    /// Debian's nginx with its own SNI; a refused connection says at which step, as HAProxy
    /// does. The server's `check-ssl` applies to its own connection only: a `connect`
    /// without `ssl` is plain. Same results as HAProxy 2.6 on the same file.
    @Test(.enabled(if: redis != nil && FileManager.default.fileExists(atPath: "/usr/sbin/nginx"), "needs redis-server and nginx"))
    func tcpCheckConnects() throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), tls = TestBed.freePort(), front = TestBed.freePort(), closed = TestBed.freePort()
        try bed.start(Self.redis!, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", bed.directory])
        #expect(TestBed.waitForPort(port), "redis on \(port)")
        let (crt, key, _) = try TLSOriginationTests.serverCertificate(in: bed.directory)
        let stopNginx = try TLSOriginationTests.nginx(bed, port: tls, crt: crt, key: key)
        defer { stopNginx() }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("tcp"))
            timeout check 500
        frontend f
            bind 127.0.0.1:\(front)
            default_backend tls
        backend implicit
            option tcp-check
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            server a 127.0.0.1:\(closed) check inter 200 rise 1 fall 1
        backend explicit
            option tcp-check
            tcp-check connect port \(closed) comment "redis port"
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend second
            option tcp-check
            tcp-check connect
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check connect port \(closed)
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend tls
            option tcp-check
            tcp-check connect
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check connect port \(tls) ssl sni check.example alpn http/1.1
            tcp-check send "GET / HTTP/1.0\\r\\n\\r\\n"
            tcp-check expect string sni=check.example
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1 check-ssl verify none
        backend commented
            option tcp-check
            tcp-check comment "first probe"
            tcp-check connect port \(closed)
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1
        backend lastconnect
            option tcp-check
            tcp-check connect
            tcp-check send PING\\r\\n
            tcp-check expect string +PONG
            tcp-check connect port \(port)
            server a 127.0.0.1:\(port) check inter 200 rise 1 fall 1

        """, waitFor: front)
        func result(_ b: String) -> [String] { Self.result(socket, b, "a") }
        // The last rule run is a connect: a layer-4 result, as HAProxy reports it.
        #expect(TestBed.waitUntil { result("lastconnect") == ["UP", "L4OK", "", "(tcp-check)"] }, "\(result("lastconnect"))")
        #expect(TestBed.waitUntil { result("implicit") == ["DOWN", "L4CON", "", "Connection refused at initial connection step of tcp-check"] }, "\(result("implicit"))")
        #expect(TestBed.waitUntil { result("explicit") == ["DOWN", "L4CON", "", "Connection refused at step 1 of tcp-check (connect port \(closed)) comment: 'redis port'"] }, "\(result("explicit"))")
        // A comment line is a rule of its own in HAProxy's numbering, and names the next rule.
        #expect(TestBed.waitUntil { result("commented") == ["DOWN", "L4CON", "", "Connection refused at step 2 of tcp-check (connect port \(closed)) comment: 'first probe'"] }, "\(result("commented"))")
        #expect(TestBed.waitUntil { result("second") == ["DOWN", "L4CON", "", "Connection refused at step 4 of tcp-check (connect port \(closed))"] }, "\(result("second"))")
        #expect(TestBed.waitUntil { result("tls") == ["UP", "L7OK", "0", "(tcp-check)"] }, "\(result("tls"))")
    }
}
