import Foundation
import Glibc
import Testing

/// SNI routing without terminating TLS (HAProxy's `req.ssl_sni` idiom): a TCP frontend with
/// `tcp-request inspect-delay` reads the ClientHello's server name and passes the stream,
/// untouched, to the backend that name routes to (two HAProxy 2.6 TLS servers here); bytes
/// that are no TLS go to the default at once; a client that sends nothing waits the delay.
@Suite(.serialized) struct SNIRoutingTests {
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func routesByTheClientHellosServerName() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let a = TestBed.freePort(), b = TestBed.freePort(), front = TestBed.freePort()
        let app = try bed.backend(name: "plain")
        try """
        \(TestBed.defaults("http"))
        frontend a
            bind 127.0.0.1:\(a) ssl crt \(pem)
            http-request return status 200 content-type text/plain lf-string "A sni=%[ssl_fc_sni]"
        frontend b
            bind 127.0.0.1:\(b) ssl crt \(pem)
            http-request return status 200 content-type text/plain lf-string "B sni=%[ssl_fc_sni]"

        """.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(a) && TestBed.waitForPort(b))
        try bed.proxy("""
        \(TestBed.defaults("tcp"))
        frontend sni
            bind 127.0.0.1:\(front)
            tcp-request inspect-delay 1s
            tcp-request content accept if { req.ssl_hello_type 1 }
            use_backend a if { req.ssl_sni -i a.test }
            use_backend b if { req_ssl_sni -i b.test }
            default_backend plain
        backend a
            server a 127.0.0.1:\(a)
        backend b
            server b 127.0.0.1:\(b)
        backend plain
            server p 127.0.0.1:\(app)

        """, waitFor: front)
        for name in ["a", "b"] {
            let r = try TestBed.curl(["-k", "--resolve", "\(name).test:\(front):127.0.0.1", "https://\(name).test:\(front)/"])
            #expect(r.1 == "\(name.uppercased()) sni=\(name).test", "\(r)")
        }
        // Not TLS: routed at once to the default.
        let start = Date()
        let plain = try TestBed.curl(["http://127.0.0.1:\(front)/x"])
        #expect(plain.0 == 200 && plain.1.contains("plain GET /x") && Date().timeIntervalSince(start) < 0.9, "\(plain)")
        // A client that sends nothing is handed on when the delay ends.
        let silent = TestBed.raw(front, [], timeout: 3, halfClose: false)
        #expect(silent.isEmpty)
        // `-c` says when the delay is missing.
        let path = bed.directory + "/nodelay.cfg"
        try "frontend f\n    mode tcp\n    timeout client 1s\n    bind :1\n    use_backend b if { req.ssl_sni a.test }\nbackend b\n    mode tcp\n    server s 127.0.0.1:1\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let c = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        #expect(c.stderr.contains("nodelay.cfg:5: warning: frontend 'f': 'req.ssl_sni' needs the client's first bytes"), "\(c.stderr)")
    }
}
