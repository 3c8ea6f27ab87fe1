import Foundation
import Glibc
import Testing

/// `tcp-request content set-var|set-var-fmt|unset-var|capture` and `req.ssl_ver`: in a TCP
/// frontend before routing (SNI routing by a variable, the capture in `%hr`), and in HTTP
/// mode on each request, in the frontend and in the backend. The same file runs under
/// HAProxy 2.6 and proxy, and the log lines must be the same.
@Suite(.serialized) struct ContentRuleTests {
    func config(sni: Int, web: Int, tls: Int, plain: Int, app: Int, log: String) -> String {
        """
        global
            log \(log) format raw local0
        defaults
            mode tcp
            log global
            timeout client 5s
            timeout server 5s
            timeout connect 2s
        frontend sni
            bind 127.0.0.1:\(sni)
            tcp-request inspect-delay 2s
            tcp-request content set-var(sess.sni) req.ssl_sni if { req.ssl_hello_type 1 }
            tcp-request content set-var(sess.ver) req.ssl_ver if { req.ssl_hello_type 1 }
            tcp-request content set-var-fmt(sess.from) "%[src]-%[var(sess.sni)]" if { req.ssl_hello_type 1 }
            tcp-request content capture req.ssl_sni len 5
            tcp-request content accept if { req.ssl_hello_type 1 }
            use_backend tls if { var(sess.sni) -m str localhost }
            log-format "%ci %ft %b/%s %hr %hrl %[var(sess.sni)] %[var(sess.ver)] %[var(sess.from)] %[capture.req.hdr(0)] %{+Q}hr"
            default_backend plain
        backend tls
            server s1 127.0.0.1:\(tls)
        backend plain
            server s1 127.0.0.1:\(plain)
        frontend web
            mode http
            bind 127.0.0.1:\(web)
            tcp-request content set-var(txn.path) path
            tcp-request content capture req.hdr(host) len 10
            tcp-request content unset-var(txn.path) if { path /unset }
            tcp-request content reject if { path /reject }
            log-format "%ci %ft %b/%s %ST %tsc %hr %[var(txn.path)] %[capture.req.hdr(0)]"
            default_backend h
        backend h
            mode http
            tcp-request content reject if { path /breject }
            server s1 127.0.0.1:\(app)

        """
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func variablesAndCapturesLikeHAProxy() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let app = try bed.backend(name: "app")
        let tls = TestBed.freePort(), plain = TestBed.freePort()
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend t
            bind 127.0.0.1:\(tls) ssl crt \(pem)
            http-request return status 200 content-type text/plain string "tls"
        frontend p
            bind 127.0.0.1:\(plain) ssl crt \(pem)
            http-request return status 200 content-type text/plain string "plain"

        """, waitFor: tls)
        var results: [[String]] = []
        for subject in ["proxy", "haproxy"] {
            let sni = TestBed.freePort(), web = TestBed.freePort()
            let logFile = bed.directory + "/\(subject).log", socket = bed.directory + "/\(subject)-log.sock"
            let catcher = try bed.start(Harness.which("socat") ?? "/usr/bin/socat", ["-u", "UNIX-RECV:\(socket)", "CREATE:\(logFile)"])
            #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: socket) })
            let path = bed.directory + "/\(subject).cfg"
            try config(sni: sni, web: web, tls: tls, plain: plain, app: app, log: socket).write(toFile: path, atomically: true, encoding: .utf8)
            let p = try bed.start(subject == "proxy" ? Harness.proxyBinary : Harness.which("haproxy")!, ["-f", path, "-db"],
                                  log: bed.directory + "/\(subject).out")
            #expect(TestBed.waitForPort(sni) && TestBed.waitForPort(web), "\(subject) did not start")
            for name in ["localhost", "elsewhere"] {
                let r = try TestBed.curl(["-k", "--resolve", "\(name):\(sni):127.0.0.1", "https://\(name):\(sni)/"])
                #expect(r.1 == (name == "localhost" ? "tls" : "plain"), "\(subject) \(name): \(r)")
            }
            #expect(try TestBed.curl(["-H", "Host: averylonghostname", "http://127.0.0.1:\(web)/ok"]).0 == 200)
            #expect(try TestBed.curl(["http://127.0.0.1:\(web)/unset"]).0 == 200)
            for refused in ["/reject", "/breject"] {
                #expect(try TestBed.curl(["http://127.0.0.1:\(web)\(refused)"]).0 == 0, "\(subject) \(refused): closed with no response")
            }
            var lines: [String] = []
            _ = TestBed.waitUntil {
                lines = ((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                                        // HAProxy logs the tests' port probe of the HTTP port; proxy does not.
                    .filter { !$0.contains(" 400 CR-- ") }
                return lines.count >= 6
            }
            results.append(lines)
            p.terminate()
            p.waitUntilExit()
            catcher.terminate()
        }
        #expect(results[0].count == 6, "\(results[0])")
        #expect(Set(results[0]) == Set(results[1]), "proxy:\n\(results[0].joined(separator: "\n"))\nhaproxy:\n\(results[1].joined(separator: "\n"))")
        #expect(results[0].contains { $0.hasPrefix("127.0.0.1 sni tls/s1 {local} local localhost 196611 127.0.0.1-localhost local ") }, "\(results[0])")
    }
}
