import Foundation
import Glibc
import Testing

/// `server ... ssl` (origination) against real TLS servers: Debian's nginx and HAProxy 2.6.
/// The certificate is verified by default (with the name sent as SNI, or `verifyhost`),
/// sessions are reused unless `no-ssl-reuse`, checks run over TLS, and a server whose
/// certificate does not verify gets no request.
@Suite(.serialized) struct TLSOriginationTests {
    /// A certificate for `backend.test` (and localhost), its key, and the two in one PEM.
    static func serverCertificate(in directory: String) throws -> (crt: String, key: String, pem: String) {
        let key = directory + "/backend.key", crt = directory + "/backend.crt", pem = directory + "/backend.pem"
        let r = try Harness.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                                                     "-days", "30", "-subj", "/CN=backend.test",
                                                     "-addext", "subjectAltName=DNS:backend.test,DNS:localhost"])
        #expect(r.status == 0, "\(r.stderr)")
        try (String(contentsOfFile: crt, encoding: .utf8) + String(contentsOfFile: key, encoding: .utf8)).write(toFile: pem, atomically: true, encoding: .utf8)
        return (crt, key, pem)
    }

    /// Debian's nginx serving TLS on `port`, answering with the SNI it got and whether the
    /// session was resumed (`r` or `.`). It runs as a daemon (a SIGKILLed master would leave
    /// its workers on the port); the returned stop ends it gracefully.
    static func nginx(_ bed: TestBed, port: Int, crt: String, key: String) throws -> () -> Void {
        let dir = bed.directory + "/nginx"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let conf = """
        daemon on;
        pid \(dir)/nginx.pid;
        error_log \(dir)/error.log;
        events { worker_connections 64; }
        http {
            access_log off;
            client_body_temp_path \(dir); proxy_temp_path \(dir); fastcgi_temp_path \(dir); uwsgi_temp_path \(dir); scgi_temp_path \(dir);
            ssl_session_cache shared:S:1m;
            server {
                listen 127.0.0.1:\(port) ssl;
                ssl_certificate \(crt);
                ssl_certificate_key \(key);
                location / { return 200 "nginx sni=$ssl_server_name reused=$ssl_session_reused\\n"; }
            }
        }
        """
        return try runNginx(conf, in: dir, port: port)
    }

    /// Starts Debian's nginx as a daemon on `conf` (which puts its pid in DIR/nginx.pid) and
    /// waits for `port`; the returned stop ends it gracefully.
    static func runNginx(_ conf: String, in dir: String, port: Int) throws -> () -> Void {
        try conf.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
        let r = try Harness.run("/usr/sbin/nginx", ["-c", dir + "/nginx.conf", "-p", dir, "-e", dir + "/error.log"])
        #expect(r.status == 0 && TestBed.waitForPort(port), "nginx did not start: \(r.stderr) \((try? String(contentsOfFile: dir + "/error.log", encoding: .utf8)) ?? "")")
        return {
            guard let text = try? String(contentsOfFile: dir + "/nginx.pid", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else { return }
            kill(pid, SIGTERM)
            _ = TestBed.waitUntil(timeout: 5) { kill(pid, 0) != 0 }
        }
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/sbin/nginx"), "needs nginx"))
    func toNginxVerifiedWithSNIAndReuse() throws {
        let bed = try TestBed()
        let (crt, key, _) = try Self.serverCertificate(in: bed.directory)
        let tls = TestBed.freePort(), port = TestBed.freePort()
        let stopNginx = try Self.nginx(bed, port: tls, crt: crt, key: key)
        defer { stopNginx() }
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
            http-reuse never
        frontend web
            bind 127.0.0.1:\(port)
            use_backend wrongname if { path_beg /wrong }
            use_backend unverified if { path_beg /none }
            use_backend fresh if { path_beg /fresh }
            use_backend byhost if { path_beg /host }
            default_backend verified
        backend verified
            server n 127.0.0.1:\(tls) ssl ca-file \(crt) sni str(backend.test) check inter 200
        backend wrongname
            server n 127.0.0.1:\(tls) ssl ca-file \(crt) verifyhost other.test check inter 200
        backend unverified
            server n 127.0.0.1:\(tls) ssl verify none
        backend fresh
            server n 127.0.0.1:\(tls) ssl ca-file \(crt) verifyhost localhost no-ssl-reuse
        backend byhost
            server n 127.0.0.1:\(tls) ssl ca-file \(crt) sni req.hdr(host)

        """, waitFor: port)
        // Verified, with the SNI sent; the second connection resumes the first one's session.
        let first = try TestBed.curl(["http://127.0.0.1:\(port)/a"])
        let second = try TestBed.curl(["http://127.0.0.1:\(port)/b"])
        #expect(first.0 == 200 && first.1.contains("sni=backend.test"), "\(first)")
        #expect(second.1.contains("reused=r"), "the next connection resumes: \(second)")
        // `sni req.hdr(host)`: the Host header's name, without its port.
        let host = try TestBed.curl(["-H", "Host: localhost:8443", "http://127.0.0.1:\(port)/host"])
        #expect(host.1.contains("sni=localhost "), "\(host)")
        // `no-ssl-reuse`: a full handshake every time.
        for _ in 0..<2 {
            let r = try TestBed.curl(["http://127.0.0.1:\(port)/fresh"])
            #expect(r.0 == 200 && r.1.contains("reused=."), "\(r)")
        }
        // `verify none`: no authority needed.
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/none"]).0 == 200)
        // A certificate that does not name `verifyhost`: the check says why, no request goes.
        #expect(TestBed.waitUntil {
            let s = cli(socket, "show stat") ?? ""
            return s.contains("wrongname,n,") && s.split(separator: "\n").contains { $0.hasPrefix("wrongname,n,") && $0.contains("DOWN") && $0.contains("L6RSP") }
                && s.split(separator: "\n").contains { $0.hasPrefix("verified,n,") && $0.contains("UP") && $0.contains("L6OK") }
        }, "\(cli(socket, "show stat") ?? "")")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/wrong"]).0 == 503)
        let servers = cli(socket, "show servers state wrongname") ?? ""
        #expect(!servers.isEmpty)
    }

    /// HAProxy 2.6 as the TLS server, in TCP mode: bytes pass through our TLS client; a
    /// server whose certificate is signed by no authority we trust is not used, and the
    /// connection fails over to the next attempt's 503 in HTTP mode.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func toHAProxyInTCPAndHTTPMode() throws {
        let bed = try TestBed()
        let (crt, _, pem) = try Self.serverCertificate(in: bed.directory)
        let other = try TLSTerminationTests.certificate(in: bed.directory, name: "other")
        let tls = TestBed.freePort(), tcp = TestBed.freePort(), http = TestBed.freePort()
        try """
        global
            log stdout format raw local0
        \(TestBed.defaults("http"))
        frontend tlsb
            bind 127.0.0.1:\(tls) ssl crt \(pem) alpn http/1.1
            http-request return status 403 if { path /alpn } !{ ssl_fc_alpn -m found }
            http-request return status 200 content-type text/plain lf-string "haproxy sni=%[ssl_fc_sni] resumed=%[ssl_fc_is_resumed]\\n"

        """.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(tls))
        try bed.proxy("""
        global
            stats socket \(bed.directory)/api.sock level admin
        \(TestBed.defaults("http"))
        frontend raw
            mode tcp
            bind 127.0.0.1:\(tcp)
            default_backend tlstcp
        frontend web
            bind 127.0.0.1:\(http)
            use_backend untrusted if { path_beg /untrusted }
            default_backend tlshttp
        backend tlstcp
            mode tcp
            server h 127.0.0.1:\(tls) ssl ca-file \(crt) sni str(backend.test)
        backend tlshttp
            server h 127.0.0.1:\(tls) ssl ca-file \(crt) verifyhost backend.test
        backend untrusted
            retries 1
            server h 127.0.0.1:\(tls) ssl ca-file \(other.ca) sni str(backend.test)
        backend checked
            option httpchk GET /alpn
            server with 127.0.0.1:\(tls) ssl verify none check inter 200 check-alpn http/1.1
            server without 127.0.0.1:\(tls) ssl verify none check inter 200

        """, waitFor: http)
        let raw = TestBed.raw(tcp, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        #expect(raw.contains("200") && raw.contains("haproxy sni=backend.test"), "\(raw)")
        let one = try TestBed.curl(["http://127.0.0.1:\(http)/"])
        #expect(one.0 == 200 && one.1.contains("haproxy sni= "), "no SNI without 'sni': \(one)")
        let bad = try TestBed.curl(["http://127.0.0.1:\(http)/untrusted"])
        #expect(bad.0 == 503, "\(bad)")
        // `check-alpn`: the check offers it (the server answers 403 to a check without ALPN).
        let socket = bed.directory + "/api.sock"
        #expect(TestBed.waitUntil {
            let rows = (cli(socket, "show stat") ?? "").split(separator: "\n")
            return rows.contains { $0.hasPrefix("checked,with,") && $0.contains(",UP,") && $0.contains("L7OK") }
                && rows.contains { $0.hasPrefix("checked,without,") && $0.contains("DOWN") && $0.contains("L7STS") }
        }, "\(cli(socket, "show stat") ?? "")")
    }

    /// Verification by default, as HAProxy 2.6: `ssl` without a `ca-file` is refused at load
    /// with the fix; `ssl-server-verify none` lifts it; a missing file is named; a reload with
    /// one leaves the old process serving.
    @Test func verificationIsRequiredAndFilesAreChecked() throws {
        let bed = try TestBed()
        let (crt, _, _) = try Self.serverCertificate(in: bed.directory)
        let port = TestBed.freePort()
        func config(_ server: String, global: String = "") -> String {
            """
            global
            \(global)
            \(TestBed.defaults("http"))
            frontend web
                bind 127.0.0.1:\(port)
                default_backend b
            backend b
                server s 127.0.0.1:1 \(server)

            """
        }
        func check(_ text: String) throws -> Harness.Output {
            let path = bed.directory + "/c.cfg"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        }
        let noCA = try check(config("ssl"))
        #expect(noCA.status == 1 && noCA.stderr.contains("c.cfg:12: error: server 'b/s': 'ssl' verifies the server's certificate by default")
                && noCA.stderr.contains("'verify none'"), "\(noCA.stderr)")
        #expect(try check(config("ssl", global: "    ssl-server-verify none")).status == 0)
        #expect(try check(config("ssl verify none")).status == 0)
        #expect(try check(config("ssl ca-file \(crt)")).status == 0)
        let missing = try check(config("ssl ca-file \(bed.directory)/nope.pem"))
        #expect(missing.status == 1 && missing.stderr.contains("c.cfg:12: error: server 'b/s': cannot read the certificate authorities in '\(bed.directory)/nope.pem'"), "\(missing.stderr)")
        let base = try check(config("ssl ca-file backend.crt", global: "    ca-base \(bed.directory)"))
        #expect(base.status == 0, "ca-base: \(base.stderr)")
        let tcpSNI = try check(config("ssl verify none sni req.hdr(host)").replacingOccurrences(of: "backend b\n", with: "backend b\n    mode tcp\n")
            .replacingOccurrences(of: "frontend web\n", with: "frontend web\n    mode tcp\n"))
        #expect(tcpSNI.status == 1 && tcpSNI.stderr.contains("sni 'req.hdr(host)' is not known"), "\(tcpSNI.stderr)")
        // A reload whose server authority file is missing: the old process serves on.
        let p = try bed.proxy(config("ssl ca-file \(crt)"), waitFor: port)
        let path = bed.directory + "/bad.cfg"
        try config("ssl ca-file \(bed.directory)/gone.pem").write(toFile: path, atomically: true, encoding: .utf8)
        let reload = try Harness.run(Harness.proxyBinary, ["-f", path, "-D", "-sf", String(p.processIdentifier)])
        #expect(reload.status == 1 && reload.stderr.contains("gone.pem"), "\(reload.stderr)")
        #expect(p.isRunning)
        #expect(TestBed.waitForPort(port))
    }
}
