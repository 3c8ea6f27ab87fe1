import Foundation
import Testing

/// The PROXY protocol with real peers: stunnel in front (the seed's webmail), HAProxy on
/// either side, hostile headers, `expect-proxy`, TCP mode and health checks. Clients bind
/// other loopback addresses (127.0.0.2 and up) so the address the header carries differs
/// from the front's own 127.0.0.1.
@Suite(.serialized) struct ProxyProtocolPeers {
    static let stunnelInstalled = Harness.which("stunnel4") != nil || Harness.which("stunnel") != nil

    /// A self-signed certificate and key for stunnel, made with the openssl tool.
    func certificate(in bed: TestBed) throws -> String {
        let pem = bed.directory + "/cert.pem"
        let r = try Harness.run(Harness.which("openssl")!, ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
                                                            "-days", "2", "-keyout", pem, "-out", pem])
        #expect(r.status == 0, "\(r.stderr)")
        return pem
    }

    /// stunnel terminating TLS on `tlsPort` and sending `protocol = proxy` to `port`.
    func stunnel(_ bed: TestBed, tlsPort: Int, port: Int) throws {
        let pem = try certificate(in: bed)
        let conf = bed.directory + "/stunnel.conf"
        try """
        foreground = yes
        pid =
        [web]
        accept = 127.0.0.1:\(tlsPort)
        connect = 127.0.0.1:\(port)
        protocol = proxy
        cert = \(pem)

        """.write(toFile: conf, atomically: true, encoding: .utf8)
        try bed.start(Harness.which("stunnel4") ?? Harness.which("stunnel")!, [conf], log: bed.directory + "/stunnel.log")
        #expect(TestBed.waitForPort(tlsPort), "stunnel: \(bed.read(bed.directory + "/stunnel.log"))")
    }

    func webmail(port: Int, backend: Int, extra: String = "") -> String {
        """
        \(TestBed.defaults("http"))
            log stdout format raw local0
            option httplog
        frontend webmail
            bind 127.0.0.1:\(port) accept-proxy
            option forwardfor
            http-request set-header X-Src %[src]
            http-request deny deny_status 403 if { src 127.0.0.9 }
        \(extra)
            default_backend app
        backend app
            balance source
            server s1 127.0.0.1:\(backend)

        """
    }

    /// The seed's site: client → stunnel (TLS, `protocol = proxy`) → proxy `accept-proxy` →
    /// backend. The backend sees the real client in X-Forwarded-For, `src` ACLs match it,
    /// and the log line names it.
    @Test(.enabled(if: stunnelInstalled, "needs stunnel4"))
    func stunnelInFront() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        let b = try bed.backend(name: "app")
        try bed.proxy(webmail(port: ports, backend: b), waitFor: ports)
        try stunnel(bed, tlsPort: ports + 1, port: ports)
        let (code, body, seen) = try TestBed.curl(["-k", "--interface", "127.0.0.2", "https://localhost:\(ports + 1)/inbox"])
        #expect(code == 200, "\(body) \(bed.log())")
        #expect(seen.contains("X-Seen-X-Forwarded-For: 127.0.0.2"), "\(seen)")
        let headers = TestBed.stats(b).last["headers"] as? [[String]] ?? []
        #expect(headers.contains(["X-Src", "127.0.0.2"]), "\(headers)")
        let (denied, _, _) = try TestBed.curl(["-k", "--interface", "127.0.0.9", "https://localhost:\(ports + 1)/inbox"])
        #expect(denied == 403)
        let logged = TestBed.waitUntil { bed.log().contains("127.0.0.2:") && bed.log().contains("\"GET /inbox HTTP/1.1\"") }
        #expect(logged, "\(bed.log())")
    }

    /// Under wrk through stunnel, five reloads of the proxy behind it lose no request.
    @Test(.enabled(if: stunnelInstalled && Harness.which("wrk") != nil, "needs stunnel4 and wrk"))
    func reloadsBehindStunnelLoseNothing() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        let b = try bed.backend(name: "app")
        let pidFile = bed.directory + "/proxy.pid"
        let cfg = webmail(port: ports, backend: b).replacingOccurrences(of: "    log stdout format raw local0\n    option httplog\n", with: "")
        try bed.proxy(cfg, waitFor: ports, arguments: ["-p", pidFile])
        try stunnel(bed, tlsPort: ports + 1, port: ports)
        let (reloads, report) = try bed.reloadsUnderWrk("https://127.0.0.1:\(ports + 1)/", pidFile: pidFile)
        #expect(reloads == 5)
        let clean = report.contains("requests in") && !report.contains("Socket errors") && !report.contains("Non-2xx")
        #expect(clean, "\(report)")
    }

    /// HAProxy `send-proxy-v2` in front of `proxy accept-proxy`.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func haproxySendsV2() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        let b = try bed.backend(name: "app")
        try bed.proxy(webmail(port: ports, backend: b), waitFor: ports)
        try """
        \(TestBed.defaults("http"))
        frontend front
            bind 127.0.0.1:\(ports + 1)
            default_backend us
        backend us
            server p 127.0.0.1:\(ports) send-proxy-v2

        """.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 1))
        let (code, _, seen) = try TestBed.curl(["--interface", "127.0.0.3", "http://127.0.0.1:\(ports + 1)/"])
        // HAProxy writes header names in lower case.
        #expect(code == 200 && seen.lowercased().contains("x-seen-x-forwarded-for: 127.0.0.3"), "\(code) \(seen) \(bed.log())")
    }

    /// `proxy send-proxy` in front of HAProxy `accept-proxy`: HAProxy sees (and answers with)
    /// the client's address that `proxy` sent, v1 and v2.
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func haproxyReceives() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(4)
        try """
        \(TestBed.defaults("http"))
        frontend behind
            bind 127.0.0.1:\(ports + 2) accept-proxy
            http-request return status 200 content-type text/plain lf-string "seen %ci:%cp via %fi:%fp\\n"

        """.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 2))
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend v1
            bind 127.0.0.1:\(ports)
            default_backend one
        frontend v2
            bind 127.0.0.1:\(ports + 1)
            default_backend two
        backend one
            server h 127.0.0.1:\(ports + 2) send-proxy
        backend two
            http-reuse always
            server h 127.0.0.1:\(ports + 2) send-proxy-v2

        """, waitFor: ports)
        // A connection opened with one client's header is never reused for another client,
        // even with `http-reuse always`: each sees its own address.
        for (port, name, client) in [(ports, "v1", "127.0.0.4"), (ports + 1, "v2", "127.0.0.4"), (ports + 1, "v2", "127.0.0.6")] {
            let (code, body, _) = try TestBed.curl(["--interface", client, "http://127.0.0.1:\(port)/"])
            let seen = code == 200 && body.hasPrefix("seen \(client):") && body.contains("via 127.0.0.1:\(port)")
            #expect(seen, "\(name): \(code) \(body)")
        }
    }

    /// Hostile headers are closed and logged, and reach no backend: a missing header, a wrong
    /// v2 signature, a v1 line without its end, one cut by the client, a v2 header with a
    /// bogus length, and a header trickled a byte at a time past `timeout client`.
    @Test func hostileHeadersNeverReachTheBackend() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "app")
        try bed.proxy(webmail(port: port, backend: b).replacingOccurrences(of: "timeout client 10s", with: "timeout client 1s"), waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket, time
        def send(data, trickle=False, close_after=False):
            s = socket.create_connection(('127.0.0.1', \(port)))
            s.settimeout(4)
            try:
                if trickle:
                    for b in data:
                        s.sendall(bytes([b])); time.sleep(0.3)
                else:
                    s.sendall(data)
                if close_after:
                    s.shutdown(socket.SHUT_WR)
                return s.recv(100) == b''
            except (ConnectionResetError, BrokenPipeError):
                return True
            except socket.timeout:
                return False
        sig = b'\\r\\n\\r\\n\\x00\\r\\nQUIT\\n'
        print(send(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n'),
              send(b'\\r\\n\\r\\n\\x00\\r\\nQUIX\\n' + b'\\x21\\x11\\x00\\x0c' + bytes(12)),
              send(b'PROXY TCP4 ' + b'1' * 120),
              send(b'PROXY TCP4 192.0.2.7 10.0', close_after=True),
              send(sig + b'\\x21\\x11\\xff\\xff' + bytes(64)),
              send(b'PROXY TCP4 192.0.2.7 10.0.0.1 1 2\\r\\nGET / HTTP/1.1\\r\\n\\r\\n', trickle=True))
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "True True True True True True", "\(r.stdout) \(r.stderr)")
        #expect(TestBed.stats(b).count == 0, "a hostile connection reached the backend")
        let log = bed.log()
        for reason in ["does not look like a PROXY protocol header", "longer than 107 bytes", "in the middle of a PROXY protocol header",
                       "is larger than the", "Timeout while waiting for a PROXY protocol header"] {
            #expect(log.contains(reason), "no log line says '\(reason)': \(log)")
        }
    }

    /// `tcp-request connection expect-proxy layer4 if { src ... }`: the header is expected
    /// only from the trusted front; anyone else talks plain HTTP.
    @Test func expectProxyOnlyFromTheTrustedFront() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "app")
        try bed.proxy(webmail(port: port, backend: b, extra: "    tcp-request connection expect-proxy layer4 if { src 127.0.0.5 }")
            .replacingOccurrences(of: " accept-proxy", with: ""), waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket
        def ask(source, data):
            s = socket.create_connection(('127.0.0.1', \(port)), source_address=(source, 0))
            s.settimeout(4)
            s.sendall(data)
            out = b''
            while True:
                c = s.recv(65536)
                if not c: break
                out += c
            xff = [l for l in out.split(b'\\r\\n') if l.lower().startswith(b'x-seen-x-forwarded-for')]
            return xff[0].split(b': ')[1].decode() if xff else out[:12].decode()
        req = b'GET / HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n'
        print(ask('127.0.0.5', b'PROXY TCP4 198.51.100.7 10.0.0.1 4000 80\\r\\n' + req), ask('127.0.0.6', req))
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "198.51.100.7 127.0.0.6", "\(r.stdout) \(r.stderr)")
    }

    /// TCP mode: the header a client sent decides the address we send on (`send-proxy`), and
    /// the client's bytes follow it unchanged (an echo server shows both).
    @Test func tcpModeReceivesAndSends() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let echo = try bed.backend(name: "echo", kind: "echo")
        try bed.proxy("""
        \(TestBed.defaults("tcp"))
        frontend tcp
            bind 127.0.0.1:\(port) accept-proxy
            default_backend echo
        backend echo
            server e 127.0.0.1:\(echo) send-proxy

        """, waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket
        s = socket.create_connection(('127.0.0.1', \(port))); s.settimeout(4)
        s.sendall(b'PROXY TCP4 203.0.113.9 10.1.2.3 5555 6666\\r\\nhello')
        s.shutdown(socket.SHUT_WR)
        out = b''
        while True:
            c = s.recv(65536)
            if not c: break
            out += c
        print(out.decode().replace('\\r\\n', '|'))
        """])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "PROXY TCP4 203.0.113.9 10.1.2.3 5555 6666|hello", "\(r.stdout) \(r.stderr)")
    }

    /// `check-send-proxy`: checks of a server that demands a PROXY header pass with it (the
    /// server stays up) and fail without it (down).
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func checksSendTheHeader() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        try """
        \(TestBed.defaults("http"))
        frontend strict
            bind 127.0.0.1:\(ports + 1) accept-proxy
            http-request return status 200 content-type text/plain string "ok"

        """.write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 1))
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(ports)
            http-request return status 200 content-type text/plain lf-string "with=%[nbsrv(with)] without=%[nbsrv(without)]"
        backend with
            option httpchk GET /
            server h 127.0.0.1:\(ports + 1) check inter 100ms fall 1 rise 1 port \(ports + 1) check-send-proxy
        backend without
            option httpchk GET /
            server h 127.0.0.1:\(ports + 1) check inter 100ms fall 1 rise 1 port \(ports + 1)

        """, waitFor: ports)
        var last = ""
        let settled = TestBed.waitUntil(timeout: 5) {
            last = (try? TestBed.curl(["http://127.0.0.1:\(ports)/"]).1) ?? ""
            return last == "with=1 without=0"
        }
        #expect(settled, "\(last)")
    }

    /// `send-proxy-v2-ssl-cn` and `proxy-v2-options ssl,ssl-cipher`: the SSL TLV says how the
    /// client reached us (flags, verify result, version, the client certificate's CN, the
    /// cipher), in HTTP and TCP mode; a client not over TLS gets flags 0 and no sub-TLV.
    @Test func sslTLVTellsTheServerAboutTheClientsTLS() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let d = bed.directory
        try TLSTerminationTests.clientCertificate(in: d)
        let peer = TestBed.freePort()
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3", [Harness.root + "/Tests/EndToEndTests/Helpers/proxy_v2_peer.py", String(peer)])
        #expect(TestBed.waitForPort(peer))
        let https = TestBed.freePort(), http = TestBed.freePort(), tcps = TestBed.freePort()
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(https) ssl crt \(pem) ca-file \(d)/ca.crt verify optional
            bind 127.0.0.1:\(http)
            default_backend app
        frontend raw
            mode tcp
            bind 127.0.0.1:\(tcps) ssl crt \(pem)
            default_backend apptcp
        backend app
            server p 127.0.0.1:\(peer) send-proxy-v2-ssl-cn
        backend apptcp
            mode tcp
            server p 127.0.0.1:\(peer) send-proxy-v2 proxy-v2-options ssl,ssl-cipher

        """, waitFor: https)
        func ssl(_ body: String) -> [String: Any]? {
            guard let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
                  let tlvs = json["tlvs"] as? [[String: Any]] else { return nil }
            return tlvs.first { $0["type"] as? Int == 0x20 }
        }
        let alice = try TestBed.curl(["-k", "--tlsv1.3", "--cert", d + "/alice.crt", "--key", d + "/alice.key", "https://127.0.0.1:\(https)/"])
        let a = ssl(alice.1)
        #expect(a?["client"] as? Int == 7 && a?["verify"] as? Int == 0, "\(alice.1)")
        #expect((a?["sub"] as? [String: String]) == ["0x21": "TLSv1.3", "0x22": "alice"], "\(alice.1)")
        let anonymous = ssl(try TestBed.curl(["-k", "--tlsv1.3", "https://127.0.0.1:\(https)/"]).1)
        #expect(anonymous?["client"] as? Int == 1 && (anonymous?["sub"] as? [String: String]) == ["0x21": "TLSv1.3"], "\(String(describing: anonymous))")
        let plain = ssl(try TestBed.curl(["http://127.0.0.1:\(http)/"]).1)
        #expect(plain?["client"] as? Int == 0 && (plain?["sub"] as? [String: String])?.isEmpty == true, "\(String(describing: plain))")
        let tcp = try TestBed.curl(["-k", "--tlsv1.3", "https://127.0.0.1:\(tcps)/"])
        let t = ssl(tcp.1)
        #expect(t?["client"] as? Int == 1 && (t?["sub"] as? [String: String])?["0x23"]?.hasPrefix("TLS_") == true, "\(tcp.1)")
    }
}
