import Foundation
import Glibc
import Testing

/// `bind ... ssl crt FILE` (the first step of the TLS issue): curl and `openssl s_client`
/// against it in HTTP and TCP mode, keep-alive over one TLS connection, large bodies both
/// ways through partial TLS writes, and certificates checked before anything starts: by
/// `-c`, at start, and at a reload, which leaves the old process serving.
@Suite(.serialized) struct TLSTerminationTests {
    /// A self-signed certificate for localhost and 127.0.0.1, and its key, in one PEM file
    /// (HAProxy's `crt` layout); returns (PEM with key, certificate alone for clients).
    static func certificate(in directory: String, name: String = "site") throws -> (pem: String, ca: String) {
        let key = directory + "/\(name).key", cert = directory + "/\(name).crt", pem = directory + "/\(name).pem"
        let r = try Harness.run("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                                                     "-days", "30", "-subj", "/CN=localhost",
                                                     "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        #expect(r.status == 0, "\(r.stderr)")
        let both = try String(contentsOfFile: cert, encoding: .utf8) + String(contentsOfFile: key, encoding: .utf8)
        try both.write(toFile: pem, atomically: true, encoding: .utf8)
        return (pem, cert)
    }

    /// A client CA (`ca.crt`) and alice's certificate it signed (`alice.crt`, `alice.key`,
    /// subject `/C=FR/O=Ops/CN=alice`, serial 4660) in `d`.
    static func clientCertificate(in d: String) throws {
        let made = try Harness.run("/bin/sh", ["-c", """
            cd \(d) && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj '/CN=Test Client CA' && \
            openssl req -newkey rsa:2048 -nodes -keyout alice.key -out alice.csr -subj '/C=FR/O=Ops/CN=alice' && \
            openssl x509 -req -in alice.csr -CA ca.crt -CAkey ca.key -set_serial 4660 -days 5 -out alice.crt
            """])
        #expect(made.status == 0, "\(made.stderr)")
    }

    func config(_ https: Int, _ tcps: Int, app: Int, pem: String) -> String {
        """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(https) ssl crt \(pem)
            log stdout format raw local0
            http-request use-service prometheus-exporter if { path /metrics }
            default_backend app
        frontend raw
            mode tcp
            bind 127.0.0.1:\(tcps) ssl crt \(pem)
            default_backend apptcp
        backend app
            server s 127.0.0.1:\(app)
        backend apptcp
            mode tcp
            server s 127.0.0.1:\(app)

        """
    }

    @Test func curlAndOpenSSLAgainstBindSSL() throws {
        let bed = try TestBed()
        let (pem, ca) = try Self.certificate(in: bed.directory)
        let https = TestBed.freePort(), tcps = TestBed.freePort()
        let app = try bed.backend(name: "app")
        try bed.proxy(config(https, tcps, app: app, pem: pem), waitFor: https)
        // HTTP over TLS, verified against the certificate; two requests on one connection.
        let two = try Harness.run("/usr/bin/curl", ["-s", "--cacert", ca, "https://localhost:\(https)/a", "https://localhost:\(https)/b",
                                                   "-w", "[%{http_code} %{num_connects}]"])
        #expect(two.stdout.contains("app GET /a") && two.stdout.contains("app GET /b"), "\(two.stdout) \(two.stderr)")
        #expect(two.stdout.contains("[200 1]") && two.stdout.contains("[200 0]"), "the second request reuses the TLS connection: \(two.stdout)")
        // A large body both ways, through partial TLS writes, in HTTP and in TCP mode.
        for port in [https, tcps] {
            let big = try Harness.run("/bin/sh", ["-c", "curl -s --cacert \(ca) 'https://localhost:\(port)/big?bytes=3000000' | wc -c"])
            #expect(big.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "3000000", "port \(port): \(big.stdout) \(big.stderr)")
        }
        let body = bed.directory + "/upload.bin"
        FileManager.default.createFile(atPath: body, contents: Data(repeating: 0x61, count: 2_000_000))
        let up = try Harness.run("/usr/bin/curl", ["-s", "--cacert", ca, "--data-binary", "@" + body, "https://localhost:\(https)/up",
                                                  "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
        #expect(up.stdout == "200 2000000", "\(up.stdout) \(up.stderr)")
        // openssl s_client: TLS 1.3 by default; TLS 1.1 is refused (1.2 is the floor).
        let s = try Harness.run("/bin/sh", ["-c", "printf 'GET /s HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' | openssl s_client -quiet -connect 127.0.0.1:\(https) -servername localhost 2>&1"])
        #expect(s.stdout.contains("HTTP/1.1 200") && s.stdout.contains("app GET /s"), "\(s.stdout)")
        let proto = try Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(https) </dev/null 2>&1"])
        #expect(proto.stdout.contains("TLSv1.3"), "\(proto.stdout)")
        let old = try Harness.run("/bin/sh", ["-c", "openssl s_client -tls1_1 -connect 127.0.0.1:\(https) </dev/null 2>&1"])
        #expect(!old.stdout.contains("Cipher is TLS") || old.stdout.contains("Cipher is (NONE)"), "\(old.stdout)")
        // Plain HTTP on the TLS port gets nothing served (the handshake fails, logged as
        // HAProxy logs it), and the process serves on.
        #expect((try? TestBed.curl(["-m", "3", "http://127.0.0.1:\(https)/"]))?.0 != 200)
        #expect(TestBed.waitUntil { bed.log().contains("] web/127.0.0.1:\(https): SSL handshake failure") }, "\(bed.log())")
        #expect(try TestBed.curl(["--cacert", ca, "https://localhost:\(https)/"]).0 == 200)
        // Counted: handshakes in `show info`, failures in the metrics.
        let metrics = try TestBed.curl(["--cacert", ca, "https://localhost:\(https)/metrics"]).1
        // Two failed: the TLS 1.1 client and the plain HTTP one.
        #expect(metrics.contains("haproxy_process_ssl_failed_handshakes_total 2"), "\(metrics)")
        #expect(metrics.contains("haproxy_process_current_ssl_connections 1") && !metrics.contains("haproxy_process_ssl_connections_total 0"))
    }

    @Test func certificatesAreCheckedBeforeAnythingStarts() throws {
        let bed = try TestBed()
        let (pem, ca) = try Self.certificate(in: bed.directory)
        let (other, _) = try Self.certificate(in: bed.directory, name: "other")
        // A certificate with another certificate's key.
        let mismatch = bed.directory + "/mismatch.pem"
        let cert = try String(contentsOfFile: bed.directory + "/site.crt", encoding: .utf8)
        let key = try String(contentsOfFile: bed.directory + "/other.key", encoding: .utf8)
        try (cert + key).write(toFile: mismatch, atomically: true, encoding: .utf8)
        _ = other
        let https = TestBed.freePort(), tcps = TestBed.freePort()
        let app = try bed.backend(name: "app")
        for (file, why) in [(mismatch, "key values mismatch"), (bed.directory + "/none.pem", "No such file or directory")] {
            let path = bed.directory + "/bad.cfg"
            try config(https, tcps, app: app, pem: file).write(toFile: path, atomically: true, encoding: .utf8)
            let check = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
            #expect(check.status == 1 && check.stderr.contains("bad.cfg:7: error: bind: cannot load") && check.stderr.contains(why), "\(check.stderr)")
            let start = try Harness.run(Harness.proxyBinary, ["-f", path, "-D"])
            #expect(start.status == 1 && start.stderr.contains("bad.cfg:7: error:"), "\(start.stderr)")
        }
        // An expired certificate loads, as in HAProxy, with a warning naming its date.
        let caDir = bed.directory + "/ca"
        try FileManager.default.createDirectory(atPath: caDir, withIntermediateDirectories: true)
        try "".write(toFile: caDir + "/index.txt", atomically: true, encoding: .utf8)
        try "01\n".write(toFile: caDir + "/serial", atomically: true, encoding: .utf8)
        try "[ ca ]\ndefault_ca = c\n[ c ]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\ndefault_md = sha256\npolicy = p\n[ p ]\ncommonName = supplied\n"
            .write(toFile: caDir + "/ca.cnf", atomically: true, encoding: .utf8)
        let made = try Harness.run("/bin/sh", ["-c", "cd \(caDir) && openssl req -newkey rsa:2048 -nodes -keyout old.key -out old.csr -subj /CN=localhost && openssl ca -batch -config ca.cnf -selfsign -keyfile old.key -in old.csr -out old.crt -startdate 20200101000000Z -enddate 20200102000000Z -notext && cat old.crt old.key > old.pem"])
        #expect(made.status == 0, "\(made.stderr)")
        try config(https, tcps, app: app, pem: caDir + "/old.pem").write(toFile: bed.directory + "/old.cfg", atomically: true, encoding: .utf8)
        let expired = try Harness.run(Harness.proxyBinary, ["-c", "-f", bed.directory + "/old.cfg"])
        #expect(expired.status == 0 && expired.stderr.contains("old.cfg:7: warning: bind: the certificate in '\(caDir)/old.pem' expired on Jan  2 00:00:00 2020 GMT"),
                "\(expired.stderr)")
        // A reload with a bad certificate: the old process serves on.
        let p = try bed.proxy(config(https, tcps, app: app, pem: pem), waitFor: https)
        let path = bed.directory + "/bad.cfg"
        try config(https, tcps, app: app, pem: mismatch).write(toFile: path, atomically: true, encoding: .utf8)
        let reload = try Harness.run(Harness.proxyBinary, ["-f", path, "-D", "-sf", String(p.processIdentifier)])
        #expect(reload.status == 1 && reload.stderr.contains("key values mismatch"), "\(reload.stderr)")
        #expect(p.isRunning)
        #expect(try TestBed.curl(["--cacert", ca, "https://localhost:\(https)/"]).0 == 200)
    }

    /// `ssl_fc` and friends: HAProxy's two idioms, redirect to https (the proxy-level
    /// `redirect`, which runs after the `http-request` rules) and tell the backend.
    @Test func sslFetchesInRules() throws {
        let bed = try TestBed()
        let (pem, ca) = try Self.certificate(in: bed.directory)
        let http = TestBed.freePort(), https = TestBed.freePort(), alpnPort = TestBed.freePort()
        let app = try bed.backend(name: "app")
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(http)
            bind 127.0.0.1:\(https) ssl crt \(pem)
            redirect scheme https code 301 if !{ ssl_fc }
            bind 127.0.0.1:\(alpnPort) ssl crt \(pem) alpn h2,http/1.1
            http-request set-header X-Test "https %[ssl_fc_protocol] %[ssl_fc_sni] alpn=%[ssl_fc_alpn] reused=%[ssl_fc_session_reused]" if { ssl_fc }
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """, waitFor: https)
        let plain = try TestBed.curl(["http://127.0.0.1:\(http)/page"])
        #expect(plain.0 == 301 && plain.2.lowercased().contains("location: https://127.0.0.1:\(http)/page"), "\(plain.2)")
        let secure = try TestBed.curl(["--cacert", ca, "https://localhost:\(alpnPort)/page"])
        #expect(secure.0 == 200 && secure.2.contains("X-Seen-X-Test: https TLSv1.3 localhost alpn=http/1.1 reused=0"), "\(secure.2)")
        // No ALPN on the line: none negotiated, the fetch is empty.
        let noALPN = try TestBed.curl(["--cacert", ca, "https://localhost:\(https)/page"])
        #expect(noALPN.2.contains("X-Seen-X-Test: https TLSv1.3 localhost alpn= reused=0"), "\(noALPN.2)")
    }

    /// The settings real configs carry: `ssl-default-bind-*` in global, `crt-base`, versions
    /// per line, ALPN with h2 left out; checked with `openssl s_client` and curl.
    @Test func globalDefaultsAndLineSettings() throws {
        let bed = try TestBed()
        _ = try Self.certificate(in: bed.directory)
        let ca = bed.directory + "/site.crt"
        let a = TestBed.freePort(), b = TestBed.freePort()
        try bed.proxy("""
        global
            crt-base \(bed.directory)
            ssl-default-bind-ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384
            ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
            ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
            tune.ssl.default-dh-param 2048
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(a) ssl crt site.pem alpn h2,http/1.1
            bind 127.0.0.1:\(b) ssl crt site.pem no-tlsv13
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: b)
        #expect(bed.log().contains("'h2' is left out of alpn"), "\(bed.log())")
        #expect(bed.log().contains("'tune.ssl.default-dh-param 2048': DHE parameters follow"), "\(bed.log())")
        let v = try Harness.run("/usr/bin/curl", ["-sv", "--cacert", ca, "https://localhost:\(a)/"])
        #expect(v.stdout == "ok" && v.stderr.contains("TLSv1.3 / TLS_AES_128_GCM_SHA256") && v.stderr.contains("ALPN: server accepted http/1.1"), "\(v.stderr)")
        let twelve = try Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(b) </dev/null 2>&1"])
        #expect(twelve.stdout.contains("New, TLSv1.2, Cipher is ECDHE-RSA-AES128-GCM-SHA256"), "\(twelve.stdout)")
        // A cipher list OpenSSL matches nothing in: refused with the line, before anything starts.
        let path = bed.directory + "/bad.cfg"
        try "\(TestBed.defaults("http"))\nfrontend f\n    bind 127.0.0.1:\(TestBed.freePort()) ssl crt \(bed.directory)/site.pem ciphers NOSUCHCIPHER\n".write(toFile: path, atomically: true, encoding: .utf8)
        let check = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        #expect(check.status == 1 && check.stderr.contains("bad.cfg:") && check.stderr.contains("no cipher of 'NOSUCHCIPHER'"), "\(check.stderr)")
    }

    /// `crt DIRECTORY`: every certificate in it loads; SNI picks by DNS name, wildcards
    /// included; an unknown name gets the first (the default), as HAProxy does.
    @Test func sniChoosesAmongADirectory() throws {
        let bed = try TestBed()
        let dir = bed.directory + "/certs"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (file, cn, san) in [("a", "a.example", "DNS:a.example"), ("b", "b.example", "DNS:b.example,DNS:www.b.example"), ("w", "*.c.example", "")] {
            var args = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/\(file).key", "-out", bed.directory + "/\(file).crt",
                        "-days", "30", "-subj", "/CN=\(cn)"]
            if !san.isEmpty { args += ["-addext", "subjectAltName=\(san)"] }
            #expect(try Harness.run("/usr/bin/openssl", args).status == 0)
            let pem = try String(contentsOfFile: bed.directory + "/\(file).crt", encoding: .utf8) + String(contentsOfFile: dir + "/\(file).key", encoding: .utf8)
            try pem.write(toFile: dir + "/\(file).pem", atomically: true, encoding: .utf8)
        }
        let port = TestBed.freePort()
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port) ssl crt \(dir)
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: port)
        func subject(_ name: String) -> String {
            let r = try? Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(port) -servername \(name) </dev/null 2>/dev/null | grep -m1 '^subject='"])
            return r?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        }
        #expect(subject("a.example") == "subject=CN = a.example")
        #expect(subject("www.b.example") == "subject=CN = b.example")
        #expect(subject("x.c.example") == "subject=CN = *.c.example")
        #expect(subject("y.x.c.example") == "subject=CN = a.example", "a wildcard covers one label")
        #expect(subject("unknown.example") == "subject=CN = a.example")
        let ok = try Harness.run("/usr/bin/curl", ["-s", "--cacert", bed.directory + "/b.crt", "--resolve", "www.b.example:\(port):127.0.0.1",
                                                  "https://www.b.example:\(port)/"])
        #expect(ok.stdout == "ok", "\(ok.stderr)")
        // strict-sni: an unknown name, or none, gets no certificate at all.
        let strict = TestBed.freePort()
        let path = bed.directory + "/strict.cfg"
        try "\(TestBed.defaults("http"))\nfrontend web\n    bind 127.0.0.1:\(strict) ssl crt \(dir) strict-sni\n    http-request return status 200 content-type text/plain string \"ok\"\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let p = try bed.start(Harness.proxyBinary, ["-f", path], log: bed.directory + "/strict.log")
        defer { kill(p.processIdentifier, SIGTERM) }
        #expect(TestBed.waitForPort(strict))
        func handshake(_ servername: String?) -> String {
            let sni = servername.map { "-servername \($0)" } ?? "-noservername"
            let r = try? Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(strict) \(sni) </dev/null 2>&1"])
            return r?.stdout ?? ""
        }
        #expect(handshake("a.example").contains("subject=CN = a.example"))
        #expect(handshake("x.c.example").contains("subject=CN = *.c.example"))
        #expect(handshake("unknown.example").contains("unrecognized name"), "\(handshake("unknown.example"))")
        #expect(!handshake(nil).contains("subject="), "no SNI, no certificate")
    }

    /// Client certificates: `verify required` refuses a client without one (or with one no
    /// authority in `ca-file` signed); `verify optional` lets it in; `ssl_c_*` tell the rules.
    @Test func clientCertificates() throws {
        let bed = try TestBed()
        let (pem, _) = try Self.certificate(in: bed.directory)
        let d = bed.directory
        try Self.clientCertificate(in: d)
        let required = TestBed.freePort(), optional = TestBed.freePort()
        try bed.proxy("""
        global
            ca-base \(d)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(required) ssl crt \(pem) ca-file ca.crt verify required
            bind 127.0.0.1:\(optional) ssl crt \(pem) ca-file ca.crt verify optional
            http-request set-header X-Client-DN %[ssl_c_s_dn] if { ssl_c_used }
            http-request return status 200 content-type text/plain lf-string "used=%[ssl_c_used] verify=%[ssl_c_verify] s=%[ssl_c_s_dn] i=%[ssl_c_i_dn] new=%[ssl_fc_has_crt]"

        """, waitFor: required)
        let alice = ["-k", "--cert", d + "/alice.crt", "--key", d + "/alice.key"]
        let withCert = try TestBed.curl(alice + ["https://127.0.0.1:\(required)/"])
        #expect(withCert.1 == "used=1 verify=0 s=/C=FR/O=Ops/CN=alice i=/CN=Test Client CA new=1", "\(withCert)")
        #expect(try TestBed.curl(["-k", "https://127.0.0.1:\(required)/"]).0 == 0, "no certificate, no request")
        #expect(try TestBed.curl(["-k", "--cert", pem, "https://127.0.0.1:\(optional)/"]).0 == 0, "a certificate no authority signed")
        let without = try TestBed.curl(["-k", "https://127.0.0.1:\(optional)/"])
        #expect(without.1 == "used=0 verify=0 s= i= new=0", "\(without)")
        #expect(try TestBed.curl(alice + ["https://127.0.0.1:\(optional)/"]).1.hasPrefix("used=1 verify=0 s=/C=FR/O=Ops/CN=alice"))
        // Without a ca-file, `verify` is refused at load, with the fix.
        let path = d + "/noca.cfg"
        try "frontend f\n    timeout client 1s\n    bind :1 ssl crt \(pem) verify required\n".write(toFile: path, atomically: true, encoding: .utf8)
        let noCA = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        #expect(noCA.status == 1 && noCA.stderr.contains("noca.cfg:3: error: frontend 'f': bind: 'verify required' checks client certificates against a 'ca-file'"), "\(noCA.stderr)")
    }

    /// Hostile TLS: a truncated ClientHello is closed and logged; a ClientHello trickled a
    /// byte at a time still completes; a TLS 1.2 client asking to renegotiate gets a
    /// no_renegotiation alert; a plain HTTP request to the TLS port is closed; the process
    /// serves on.
    @Test func hostileClients() throws {
        let bed = try TestBed()
        let (pem, _) = try Self.certificate(in: bed.directory)
        let port = TestBed.freePort()
        let p = try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port) ssl crt \(pem)
            log stdout format raw local0
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: port)
        let python = Harness.which("python3") ?? "/usr/bin/python3"
        let r = try Harness.run(python, [Harness.root + "/Tests/EndToEndTests/Helpers/hostile_tls.py", String(port)])
        #expect(r.stdout.contains("truncated closed") && r.stdout.contains("trickled HTTP/1.1 200 OK"), "\(r.stdout) \(r.stderr)")
        #expect(TestBed.waitUntil { bed.log().contains("SSL handshake failure") }, "\(bed.log())")
        // `R` on s_client's input asks for a renegotiation (TLS 1.2 has it; 1.3 does not).
        let renegotiation = try Harness.run("/bin/sh", ["-c", "(sleep 0.5; printf 'R\\n'; sleep 1) | openssl s_client -connect 127.0.0.1:\(port) -tls1_2 2>&1"])
        #expect(renegotiation.stdout.contains("RENEGOTIATING") && renegotiation.stdout.contains("no renegotiation"), "\(renegotiation.stdout)")
        let plain = TestBed.raw(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(!plain.contains("200 OK"), "a plain request on the TLS port: \(plain)")
        #expect(p.isRunning)
        #expect(try TestBed.curl(["-k", "https://127.0.0.1:\(port)/"]).1 == "ok")
    }

    /// `crt-list`: per-line SNI filters (wildcards and `!` exclusions) and a line's own
    /// `verify`/`ca-file`, versions and ciphers; the first line is the default; an option that
    /// cannot apply per certificate is refused.
    @Test func certificateList() throws {
        let bed = try TestBed()
        let d = bed.directory
        let made = try Harness.run("/bin/sh", ["-c", """
            cd \(d) && for n in a b; do openssl req -x509 -newkey rsa:2048 -nodes -keyout $n.key -out $n.crt -days 30 -subj /CN=$n.example -addext subjectAltName=DNS:$n.example && cat $n.crt $n.key > $n.pem; done && \
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj '/CN=Test Client CA' && \
            openssl req -newkey rsa:2048 -nodes -keyout alice.key -out alice.csr -subj '/CN=alice' && \
            openssl x509 -req -in alice.csr -CA ca.crt -CAkey ca.key -set_serial 7 -days 5 -out alice.crt
            """])
        #expect(made.status == 0, "\(made.stderr)")
        try """
            # the first is the default
            a.pem
            b.pem [alpn http/1.1 verify required ca-file \(d)/ca.crt] b.example *.b.test !secret.b.test
            b.pem [ssl-max-ver TLSv1.2 ciphers ECDHE-RSA-AES128-GCM-SHA256] old.b.example

            """.write(toFile: d + "/list.txt", atomically: true, encoding: .utf8)
        let port = TestBed.freePort()
        let config = """
        global
            crt-base \(d)
        \(TestBed.defaults("http"))
        frontend tls
            bind 127.0.0.1:\(port) ssl crt-list list.txt
            http-request return status 200 content-type text/plain lf-string "sni=%[ssl_fc_sni] crt=%[ssl_c_used]"

        """
        try bed.proxy(config, waitFor: port)
        func subject(_ name: String) -> String {
            let r = try? Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(port) -servername \(name) </dev/null 2>/dev/null | grep -m1 '^subject='"])
            return r?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        }
        #expect(subject("a.example") == "subject=CN = a.example")
        #expect(subject("b.example") == "subject=CN = b.example")
        #expect(subject("x.b.test") == "subject=CN = b.example", "a wildcard filter")
        #expect(subject("other.example") == "subject=CN = a.example", "the default")
        #expect(subject("secret.b.test") == "subject=CN = a.example", "excluded from b's wildcard: the default")
        // A line's own versions and ciphers apply when SNI picks it, and only then.
        func negotiated(_ name: String) -> String {
            let r = try? Harness.run("/bin/sh", ["-c", "openssl s_client -connect 127.0.0.1:\(port) -servername \(name) </dev/null 2>/dev/null | grep -E '^(New|    Protocol|    Cipher)' | tr -s ' ' | tr '\\n' ' '"])
            return r?.stdout ?? ""
        }
        let old = negotiated("old.b.example"), modern = negotiated("b.example")
        #expect(old.contains("TLSv1.2") && old.contains("ECDHE-RSA-AES128-GCM-SHA256"), "\(old)")
        #expect(modern.contains("TLSv1.3"), "\(modern)")
        let resolve = ["--resolve", "x.b.test:\(port):127.0.0.1", "https://x.b.test:\(port)/"]
        #expect(try TestBed.curl(["-k"] + resolve).0 == 0, "b's line requires a client certificate")
        #expect(try TestBed.curl(["-k", "--cert", d + "/alice.crt", "--key", d + "/alice.key"] + resolve).1 == "sni=x.b.test crt=1")
        #expect(try TestBed.curl(["-k", "--resolve", "a.example:\(port):127.0.0.1", "https://a.example:\(port)/"]).1 == "sni=a.example crt=0")
        try "a.pem [strict-sni]\n".write(toFile: d + "/bad.txt", atomically: true, encoding: .utf8)
        let path = d + "/bad.cfg"
        try config.replacingOccurrences(of: "list.txt", with: "bad.txt").write(toFile: path, atomically: true, encoding: .utf8)
        let c = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        #expect(c.status == 1 && c.stderr.contains("crt-list 'bad.txt' line 1: strict-sni belongs to the bind line"), "\(c.stderr)")
    }
}
