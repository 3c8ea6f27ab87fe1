import Foundation
import Glibc
import Testing

/// The TCP options the proxy sets on its sockets, seen from outside: `option
/// tcp-smart-accept` and `option tcp-smart-connect` in the segments each side counts
/// (TCP_INFO): the ACK of a request rides on its response, and a server connection's
/// handshake ends with the request, as HAProxy arranges it; `clitcpka-*`/`srvtcpka-*` on a
/// copy of the proxy's very sockets (pidfd_getfd).
@Suite(.serialized) struct TCPSocketOptionTests {
    /// A request to `port` on a fresh keep-alive connection, answered in full; the socket
    /// stays open (the caller closes it).
    static func answeredConnection(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var done = false
        defer { if !done { close(fd) } }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { return nil }
        let request = Array("GET / HTTP/1.1\r\nHost: t\r\n\r\n".utf8)
        guard send(fd, request, request.count, 0) == request.count else { return nil }
        // The whole answer (keep-alive, so no FIN follows it): head and its Content-Length.
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { return nil }
            answer += chunk[0..<n]
            let text = String(decoding: answer, as: UTF8.self)
            guard let end = text.range(of: "\r\n\r\n") else { continue }
            let length = text[..<end.lowerBound].split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
            if text.utf8.count >= text.utf8.distance(from: text.startIndex, to: end.upperBound) + length { break }
        }
        done = true
        return fd
    }

    /// How many TCP segments a client received for one request on a fresh connection: the
    /// SYN-ACK, a lone ACK of the request if one came, the answer.
    static func segmentsReceived(_ port: Int) -> Int? {
        guard let fd = answeredConnection(port) else { return nil }
        defer { close(fd) }
        var info = [UInt8](repeating: 0, count: 232)
        var size = socklen_t(info.count)
        guard getsockopt(fd, Int32(IPPROTO_TCP), Int32(TCP_INFO), &info, &size) == 0, size >= 144 else { return nil }
        return Int(info[140]) | Int(info[141]) << 8 | Int(info[142]) << 16 | Int(info[143]) << 24
    }

    /// Several tries: a lone ACK may still come if an answer takes longer than the kernel's
    /// delayed-ACK timer (40 ms) on a loaded machine; never, on the other hand, the other way.
    static func tries(_ count: Int = 8, _ measure: () -> Int?) -> [Int] { (0..<count).compactMap { _ in measure() } }

    @Test func smartAcceptIsOnInHTTPModeAndOffWhenSaidSo() throws {
        let bed = try TestBed()
        let auto = TestBed.freePort(), off = TestBed.freePort(), tcpOn = TestBed.freePort()
        let app = try bed.backend(name: "app")
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend auto
            bind 127.0.0.1:\(auto)
            http-request return status 200 content-type text/plain string ok
        frontend off
            bind 127.0.0.1:\(off)
            no option tcp-smart-accept
            http-request return status 200 content-type text/plain string ok
        listen tcp
            mode tcp
            option tcp-smart-accept
            bind 127.0.0.1:\(tcpOn)
            server app 127.0.0.1:\(app)

        """, waitFor: auto)
        #expect(TestBed.waitForPort(off) && TestBed.waitForPort(tcpOn))
        let smart = Self.tries { Self.segmentsReceived(auto) }, plain = Self.tries { Self.segmentsReceived(off) }
        let tcp = Self.tries { Self.segmentsReceived(tcpOn) }
        // HTTP mode: the request is acknowledged by its answer (SYN-ACK, answer); `no option
        // tcp-smart-accept`: by an ACK of its own first.
        #expect(smart.contains(2), "\(smart)")
        #expect(!plain.isEmpty && plain.allSatisfy { $0 >= 3 }, "\(plain)")
        // TCP mode with the option: the same saving, the answer coming from the server.
        #expect(tcp.contains(2), "\(tcp)")
    }

    @Test func smartConnectSendsTheRequestWithTheHandshake() throws {
        let bed = try TestBed()
        let smart = TestBed.freePort(), plain = TestBed.freePort()
        let app = try bed.backend(name: "app")
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend smart
            bind 127.0.0.1:\(smart)
            default_backend smart
        frontend plain
            bind 127.0.0.1:\(plain)
            default_backend plain
        backend smart
            option tcp-smart-connect
            option http-server-close
            server app 127.0.0.1:\(app)
        backend plain
            option http-server-close
            server app 127.0.0.1:\(app)

        """, waitFor: smart)
        /// What the server counted when it read the request: SYN and request (the ACK rode on
        /// it), or SYN, ACK and request.
        func serverSegments(_ port: Int) -> Int? {
            guard let (status, body, _) = try? TestBed.curl(["http://127.0.0.1:\(port)/segments"]), status == 200 else { return nil }
            return body.split(separator: "=").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        let withOption = Self.tries { serverSegments(smart) }, without = Self.tries { serverSegments(plain) }
        #expect(withOption.contains(2), "\(withOption)")
        #expect(!without.isEmpty && without.allSatisfy { $0 >= 3 }, "\(without)")
    }

    /// The local port of a socket.
    static func localPort(_ fd: Int32) -> Int {
        var a = sockaddr_in()
        var size = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    /// The keep-alive options of the proxy's established socket from `local` to `remote`
    /// (0: any port), read from a copy of it.
    static func keepAlive(_ pid: Int32, local: Int, remote: Int) -> [String: Int] {
        let python = Harness.which("python3") ?? "/usr/bin/python3"
        guard let r = try? Harness.run(python, [Harness.root + "/Tests/EndToEndTests/Helpers/socket_options.py", String(pid), String(local), String(remote)]),
              let object = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else { return [:] }
        return object.compactMapValues { $0 as? Int }
    }

    /// `option clitcpka` with `clitcpka-cnt|idle|intvl` on each accepted socket, `option
    /// srvtcpka` with `srvtcpka-*` on each server connection (a time without a unit is in
    /// seconds); the others keep the system's values, and a frontend without the option sets
    /// nothing.
    @Test(.enabled(if: getuid() == 0, "needs root, to copy the proxy's sockets"))
    func keepAliveProbesAreSet() throws {
        let bed = try TestBed()
        let front = TestBed.freePort(), plain = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let proxy = try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(front)
            option clitcpka
            clitcpka-cnt 4
            clitcpka-idle 7
            clitcpka-intvl 3s
            default_backend app
        frontend plain
            bind 127.0.0.1:\(plain)
            default_backend app
        backend app
            option srvtcpka
            srvtcpka-idle 1m
            srvtcpka-cnt 5
            server app 127.0.0.1:\(app) tcp-ut 7s

        """, waitFor: front)
        let pid = proxy.processIdentifier
        let systemInterval = Int(((try? String(contentsOfFile: "/proc/sys/net/ipv4/tcp_keepalive_intvl", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines))
        guard let fd = Self.answeredConnection(front) else { Issue.record("no answer from \(front)"); return }
        defer { close(fd) }
        let client = Self.keepAlive(pid, local: front, remote: Self.localPort(fd))
        #expect(client["keepalive"] == 1 && client["keepcnt"] == 4 && client["keepidle"] == 7 && client["keepintvl"] == 3, "\(client)")
        // The server connection stays open for reuse: its options.
        let server = Self.keepAlive(pid, local: 0, remote: app)
        #expect(server["keepalive"] == 1 && server["keepcnt"] == 5 && server["keepidle"] == 60, "\(server)")
        #expect(server["keepintvl"] == systemInterval, "\(server), system \(String(describing: systemInterval))")
        // `tcp-ut` on the server line: TCP_USER_TIMEOUT, in milliseconds.
        #expect(server["usertimeout"] == 7000, "\(server)")
        guard let other = Self.answeredConnection(plain) else { Issue.record("no answer from \(plain)"); return }
        defer { close(other) }
        let off = Self.keepAlive(pid, local: plain, remote: Self.localPort(other))
        #expect(off["keepalive"] == 0, "\(off)")
    }

    /// `max-reuse N`: a server connection carries N more requests after its first, then a
    /// new one opens; 0: one request each; unset: one connection for them all.
    @Test(arguments: [(-1, 1), (1, 3), (0, 6)])
    func maxReuseBoundsAServerConnection(_ limit: Int, _ connections: Int) throws {
        let bed = try TestBed()
        let front = TestBed.freePort()
        let app = try bed.backend(name: "app")
        try bed.proxy("""
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            server app 127.0.0.1:\(app)\(limit >= 0 ? " max-reuse \(limit)" : "")

        """, waitFor: front)
        // Six requests on one client connection (curl keeps it), each answered with the port
        // the server saw it come from.
        let urls = (0..<6).map { _ in "http://127.0.0.1:\(front)/peer" }
        let r = try Harness.run(Harness.which("curl") ?? "/usr/bin/curl", ["-s"] + urls)
        let ports = r.stdout.split(separator: "\n").map(String.init)
        #expect(ports.count == 6, "\(r.stdout) \(r.stderr)")
        #expect(Set(ports).count == connections, "\(ports)")
    }
}
