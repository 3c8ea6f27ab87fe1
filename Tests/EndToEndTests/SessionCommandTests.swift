import Foundation
import Testing

/// `show sess`, `shutdown session` and `show errors`: sessions listed with HAProxy's first
/// fields (the id before the colon is what `shutdown session` takes), a session killed on
/// any loop, and the last refused request captured per frontend.
@Suite(.serialized) struct SessionCommandTests {
    func config(_ port: Int, app: Int, socket: String, level: String = "admin", threads: Int = 2) -> String {
        """
        global
            nbthread \(threads)
            stats socket \(socket) level \(level)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:\(app)

        """
    }


    @Test func listAndKillSessions() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy(config(port, app: app, socket: socket), waitFor: port)
        let clients = try (0..<3).map { _ in try TestBed.slowRequest(port, ms: 8000) }
        var listing = ""
        #expect(TestBed.waitUntil {
            listing = cli(socket, "show sess") ?? ""
            return listing.split(separator: "\n").filter { $0.contains("fe=web be=app srv=a") }.count == 3
        }, "\(listing)")
        let first = listing.split(separator: "\n").first { $0.contains("fe=web") }!
        #expect(first.range(of: #"^0x[0-9a-f]+: proto=tcpv4 src=127\.0\.0\.1:\d+ fe=web be=app srv=a ts=00 age=\d+s$"#,
                            options: .regularExpression) != nil, "\(first)")
        let id = String(first.split(separator: ":")[0])
        // The same line, up to its age (which may tick a second between two commands).
        let firstUpToAge = String(first[..<first.range(of: " age=")!.lowerBound])
        let detail = cli(socket, "show sess \(id)") ?? ""
        #expect(detail.hasPrefix(firstUpToAge) && detail.contains("frontend=web (mode=http)") && detail.contains("server=a"), "\(detail)")
        // Several commands on one line keep their order around an answer from the loops.
        let line = cli(socket, "show cli level; show sess \(id); show version") ?? ""
        #expect(line.hasPrefix("admin\n\n\(firstUpToAge)") && line.contains("\n\n2.6.12-proxy-"), "\(line)")
        #expect(cli(socket, "shutdown session \(id)") == "\n")
        #expect(cli(socket, "shutdown session \(id)") == "No such session (use 'show sess').\n\n")
        #expect(cli(socket, "show sess 0xdead") == "No such session (use 'show sess').\n\n")
        #expect(cli(socket, "show sess nope") == "Session pointer expected (use 'show sess').\n\n")
        #expect(cli(socket, "shutdown session") == "Session pointer expected (use 'show sess').\n\n")
        #expect(TestBed.waitUntil { (cli(socket, "show sess") ?? "").split(separator: "\n").filter { $0.contains("fe=web") }.count == 2 })
        // The killed client saw its connection end; the others are still waiting.
        #expect(TestBed.waitUntil { clients.filter { !$0.isRunning }.count == 1 })
        for c in clients where c.isRunning { c.terminate() }
    }

    @Test func levels() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(1)
        let app = try bed.backend(name: "app")
        let user = bed.directory + "/u.sock", operatorSocket = bed.directory + "/o.sock"
        try bed.proxy(config(port, app: app, socket: user, level: "user")
                      .replacingOccurrences(of: "level user", with: "level user\n    stats socket \(operatorSocket) level operator"),
                      waitFor: port)
        #expect(cli(user, "show sess") == "Permission denied\n\n")
        #expect(cli(user, "show errors") == "Permission denied\n\n")
        // Allowed (the port probe's connection may still be listed on a slow machine).
        let sessions = cli(operatorSocket, "show sess") ?? ""
        #expect(sessions.hasSuffix("\n") && !sessions.contains("Permission denied"), "\(sessions)")
        #expect(cli(operatorSocket, "shutdown session 0x1") == "Permission denied\n\n")
        // A timeout past what the timers hold is refused, not a crash.
        #expect(cli(user, "set timeout cli 1000000d") == "Timeout too large: at most 2147483647 ms.\n\n")
        #expect(cli(user, "set timeout cli 300000000m") == "Timeout too large: at most 2147483647 ms.\n\n")
        #expect(cli(user, "set timeout cli 30") == "\n" && cli(user, "show cli level") == "user\n\n")
    }

    @Test func lastRefusedRequestIsCaptured() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy(config(port, app: app, socket: socket, threads: 1), waitFor: port)
        #expect(cli(socket, "show errors")?.contains(": 0\n") == true)
        let answer = TestBed.raw(port, "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        #expect(answer.hasPrefix("HTTP/1.1 400"))
        let text = cli(socket, "show errors") ?? ""
        #expect(text.contains(": 1\n"), "\(text)")
        #expect(text.contains("frontend web (#2): invalid request"), "\(text)")
        #expect(text.contains("  00000  GET / HTTP/1.1\\r\\n\n  00016  Host: x\\r\\n\n  00025  Bad Header\\r\\n\n"), "\(text)")
        #expect(!(cli(socket, "show errors web response") ?? "").contains("invalid request"))
        #expect((cli(socket, "show errors 2 request") ?? "").contains("invalid request"))
        #expect(cli(socket, "show errors nope") == "No such proxy.\n\n")
    }
}
