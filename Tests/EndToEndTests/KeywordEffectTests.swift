import Foundation
import Glibc
import Testing

/// A UDP socket on 127.0.0.1 that collects syslog datagrams.
final class SyslogCatcher {
    let fd: Int32
    let port: Int
    var lines: [String] = []

    init() {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close(fd) }

    /// Reads what has arrived.
    @discardableResult
    func collect() -> [String] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            lines.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
        return lines
    }
}

/// Keywords and flags that were once parsed and ignored, now each with its effect.
@Suite(.serialized) struct KeywordEffects {
    /// `log`: `sample` sends 1 line in 2, a `notice` maximum drops traffic lines (info), and
    /// `len` with `format short` cuts the line and tags it with the level alone.
    @Test func logSampleLevelLengthAndFormat() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let b = try bed.backend(name: "one")
        let sampled = SyslogCatcher(), filtered = SyslogCatcher(), short = SyslogCatcher(), iso = SyslogCatcher()
        let frontend = """
            option httplog
            log 127.0.0.1:\(sampled.port) format raw sample 1:2 local0
            log 127.0.0.1:\(filtered.port) local0 notice
            log 127.0.0.1:\(short.port) len 80 format short local0
            log 127.0.0.1:\(iso.port) format rfc5424 local3
        """
        try bed.proxy(httpConfig(port: port, servers: [("s1", b)], frontend: frontend), waitFor: port)
        for i in 0..<4 { #expect(try TestBed.curl(["http://127.0.0.1:\(port)/\(i)"]).0 == 200) }
        #expect(TestBed.waitUntil { short.collect().count == 4 }, "\(short.lines)")
        #expect(TestBed.waitUntil { sampled.collect().count == 2 }, "\(sampled.lines)")
        #expect(sampled.lines.allSatisfy { $0.hasPrefix("127.0.0.1:") && $0.contains("\"GET /") }, "\(sampled.lines)")
        #expect(short.lines.allSatisfy { $0.hasPrefix("<6>127.0.0.1:") && $0.utf8.count == 81 && $0.hasSuffix("\n") }, "\(short.lines)")
        #expect(TestBed.waitUntil { iso.collect().count == 4 })
        // <PRI>1 TIMESTAMP - proxy PID - - MSG, with local3 (19) * 8 + info (6) = 158.
        #expect(iso.lines.allSatisfy { $0.hasPrefix("<158>1 20") && $0.contains(" - proxy ") }, "\(iso.lines)")
        #expect(filtered.collect().isEmpty, "\(filtered.lines)")
    }

    /// `bind ... maxconn 1`: a second connection waits in the backlog until the first closes.
    @Test func bindMaxconnLimitsThatListener() throws {
        let bed = try TestBed()
        let port = TestBed.freePort(), other = TestBed.freePort()
        try bed.proxy("""
        defaults
            mode http
            timeout client 10s
            timeout http-keep-alive 10s
        frontend web
            bind 127.0.0.1:\(port) maxconn 1
            bind 127.0.0.1:\(other)
            http-request return status 200 content-type text/plain string "ok"

        """, waitFor: port)
        let r = try Harness.run(Harness.which("python3")!, ["-c", """
        import socket
        def ask(s):
            s.sendall(b'GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n')
            return s.recv(4096)[:12].decode()
        a = socket.create_connection(('127.0.0.1', \(port))); ra = ask(a)
        b = socket.create_connection(('127.0.0.1', \(port))); b.settimeout(0.7)
        try:
            rb = ask(b)
        except socket.timeout:
            rb = 'waiting'
        o = socket.create_connection(('127.0.0.1', \(other))); ro = ask(o)
        a.close(); b.settimeout(5)
        print(ra, rb, ro, b.recv(4096)[:12].decode(), sep='|')
        """])
        let ok = "HTTP/1.1 200"
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == [ok, "waiting", ok, ok].joined(separator: "|"), "\(r.stdout) \(r.stderr)")
    }

    /// A server address `:+N` goes to the port the client connected to, plus N.
    @Test func serverPortOffsetFollowsTheClientsPort() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        try bed.backend(name: "offset", port: port + 1)
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s1 127.0.0.1:+1

        """, waitFor: port)
        let (code, body, _) = try TestBed.curl(["http://127.0.0.1:\(port)/x"])
        #expect(code == 200 && body == "offset GET /x body=0")
    }

    /// `tcp-request content reject` in TCP mode closes the connection before any server.
    @Test func tcpRequestContentRejects() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let echo = try bed.backend(name: "echo", kind: "echo")
        try bed.proxy(tcpEchoConfig(port: port, echo: echo, listen: "    tcp-request content reject if { src 127.0.0.1 }\n"), waitFor: port)
        #expect(TestBed.raw(port, "hello", timeout: 2).isEmpty)
    }

    /// `setenv` reaches the running process: `env()` in a format reads it.
    @Test func setenvIsSeenAtRunTime() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        try bed.proxy("""
        global
            setenv GREETING hello-from-setenv
        defaults
            mode http
            timeout client 10s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain lf-string "%[env(GREETING)]"

        """, waitFor: port, environment: ["GREETING": "from-the-shell"])
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).1 == "hello-from-setenv")
    }

    /// `grace`: after SIGUSR1 the process keeps serving (with `stopping` true) that long.
    @Test func graceKeepsServingAfterSIGUSR1() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let p = try bed.proxy("""
        global
            grace 1500ms
        defaults
            mode http
            timeout client 10s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200 content-type text/plain string "stopping" if { stopping }
            http-request return status 200 content-type text/plain string "running"

        """, waitFor: port)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).1 == "running")
        kill(p.processIdentifier, SIGUSR1)
        #expect(TestBed.waitUntil(timeout: 1) { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]).1) == "stopping" })
        #expect(p.isRunning)
        #expect(TestBed.waitUntil(timeout: 5) { !p.isRunning }, "it did not stop after the grace")
    }

    /// Command-line flags: -dW refuses any warning, -n and -N set maxconn, -L exports the
    /// peer name, -dr starts an unresolvable server disabled instead of failing.
    @Test func commandLineFlags() throws {
        let dir = try Harness.temporaryDirectory()
        let warned = dir + "/w.cfg"
        try "frontend f\n    mode http\n    bind 127.0.0.1:18401\n    http-request return status 200\n".write(toFile: warned, atomically: true, encoding: .utf8)
        #expect(try Harness.proxy(["-c", "-f", warned]).status == 0)
        let strict = try Harness.proxy(["-c", "-dW", "-f", warned])
        #expect(strict.status == 1 && strict.stderr.contains("-dW"))
        try "global\n    zero-warning\n".appending("frontend f\n    mode http\n    bind 127.0.0.1:18401\n    http-request return status 200\n").write(toFile: dir + "/z.cfg", atomically: true, encoding: .utf8)
        #expect(try Harness.proxy(["-c", "-f", dir + "/z.cfg"]).status == 1)
        #expect(try Harness.proxy(["-L", "peer7", "-cc", "streq(\"${HAPROXY_LOCALPEER}\",peer7)"]).status == 0)
        let unresolved = dir + "/u.cfg"
        try "defaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\nbackend b\n    server s1 no-such-host.invalid:80\n".write(toFile: unresolved, atomically: true, encoding: .utf8)
        #expect(try Harness.proxy(["-c", "-f", unresolved]).status == 1)
        let lenient = try Harness.proxy(["-c", "-dr", "-f", unresolved])
        #expect(lenient.status == 0 && lenient.stderr.contains("could not resolve address 'no-such-host.invalid', disabling server"), "\(lenient.stderr)")

        let bed = try TestBed()
        let port = TestBed.freePort()
        let socket = bed.directory + "/s.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        defaults
            mode http
            timeout client 10s
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 200

        """, waitFor: port, arguments: ["-n", "77"])
        #expect(cli(socket, "show info")?.contains("Maxconn: 77\n") == true)
    }
}
