import Foundation
import Glibc
import Testing

/// TLS sessions that survive a reload: a client that saved its session (`openssl s_client
/// -sess_out`) resumes it against the new process (`-sess_in` says `Reused`), by ticket and,
/// with `no-tls-tickets`, by session ID, in TLS 1.2 and 1.3; and a reload under https load
/// (wrk) fails no request.
@Suite(.serialized) struct TLSResumptionTests {
    func config(_ tickets: Int, _ ids: Int, pem: String) -> String {
        """
        global
            tune.ssl.lifetime 600
        \(TestBed.defaults("http"))
        frontend tls
            bind 127.0.0.1:\(tickets) ssl crt \(pem)
            bind 127.0.0.1:\(ids) ssl crt \(pem) no-tls-tickets
            http-request return status 200 content-type text/plain string "ok"

        """
    }

    /// One request with `openssl s_client`, saving or offering a session: "New" or "Reused".
    static func handshake(_ port: Int, _ version: String, _ session: String, save: Bool) throws -> String {
        let request = "printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'"
        let r = try Harness.run("/bin/sh", ["-c", "\(request) | openssl s_client -connect 127.0.0.1:\(port) \(version) -ign_eof \(save ? "-sess_out" : "-sess_in") \(session) 2>&1"])
        if r.stdout.contains("\nReused, ") { return "Reused" }
        if r.stdout.contains("\nNew, ") { return "New" }
        return r.stdout
    }

    @Test func sessionsResumeAfterAReload() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let tickets = TestBed.freePort(), ids = TestBed.freePort()
        let pidFile = bed.directory + "/proxy.pid"
        try bed.proxy(config(tickets, ids, pem: pem), waitFor: tickets, arguments: ["-p", pidFile])
        let cases = [(tickets, "-tls1_2"), (tickets, "-tls1_3"), (ids, "-tls1_2"), (ids, "-tls1_3")]
        for (port, version) in cases {
            #expect(try Self.handshake(port, version, bed.directory + "/s\(port)\(version)", save: true) == "New")
        }
        for _ in 0..<2 {
            let old = bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
            let r = try Harness.proxy(["-f", bed.directory + "/proxy.cfg", "-D", "-p", pidFile, "-sf", old])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(TestBed.waitUntil { kill(Int32(old) ?? 0, 0) != 0 }, "the old process stops")
            for (port, version) in cases {
                let got = try Self.handshake(port, version, bed.directory + "/s\(port)\(version)", save: false)
                #expect(got == "Reused", "port \(port) \(version) (\(port == ids ? "session ID" : "ticket")) after a reload: \(got)")
            }
        }
        if let pid = Int32(bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)) { kill(pid, SIGTERM) }
    }

    /// Under wrk over https, five reloads lose no request.
    @Test(.enabled(if: Harness.which("wrk") != nil, "needs wrk"))
    func reloadsUnderTLSLoadLoseNothing() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let port = TestBed.freePort(), ids = TestBed.freePort()
        let pidFile = bed.directory + "/proxy.pid"
        try bed.proxy(config(port, ids, pem: pem), waitFor: port, arguments: ["-p", pidFile])
        let (reloads, report) = try bed.reloadsUnderWrk("https://127.0.0.1:\(port)/", pidFile: pidFile)
        #expect(reloads == 5)
        let clean = report.contains("requests in") && !report.contains("Socket errors") && !report.contains("Non-2xx")
        #expect(clean, "\(report)")
    }

    /// `tls-ticket-keys FILE`: the keys come from the file, so a session resumes even after
    /// a full restart (no handover); a file with fewer than three keys is refused.
    @Test func ticketKeysFromAFile() throws {
        let bed = try TestBed()
        let (pem, _) = try TLSTerminationTests.certificate(in: bed.directory)
        let keys = bed.directory + "/keys.txt"
        #expect(try Harness.run("/bin/sh", ["-c", "for i in 1 2 3 4; do openssl rand 80 | openssl base64 -A; echo; done > \(keys)"]).status == 0)
        let port = TestBed.freePort()
        let config = """
        \(TestBed.defaults("http"))
        frontend tls
            bind 127.0.0.1:\(port) ssl crt \(pem) tls-ticket-keys \(keys)
            http-request return status 200 content-type text/plain string "ok"

        """
        let first = try bed.proxy(config, waitFor: port)
        for v in ["-tls1_3", "-tls1_2"] { #expect(try Self.handshake(port, v, bed.directory + "/s\(v)", save: true) == "New") }
        kill(first.processIdentifier, SIGTERM)
        first.waitUntilExit()
        try bed.proxy(config, waitFor: port)
        for v in ["-tls1_3", "-tls1_2"] {
            let got = try Self.handshake(port, v, bed.directory + "/s\(v)", save: false)
            #expect(got == "Reused", "\(v) after a restart with the same key file: \(got)")
        }
        let two = bed.directory + "/two.txt"
        #expect(try Harness.run("/bin/sh", ["-c", "head -2 \(keys) > \(two)"]).status == 0)
        let path = bed.directory + "/two.cfg"
        try config.replacingOccurrences(of: keys, with: two).write(toFile: path, atomically: true, encoding: .utf8)
        let c = try Harness.run(Harness.proxyBinary, ["-c", "-f", path])
        #expect(c.status == 1 && c.stderr.contains("holds 2 keys; it needs at least 3"), "\(c.stderr)")
    }
}
