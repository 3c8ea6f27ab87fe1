import Foundation
import Glibc
import Testing

/// Access-log lines: `log-format` with HAProxy's `%` variables, flags and `%[expr]`, and the
/// built-in `option httplog`, `option httplog clf` and `option tcplog` layouts, compared
/// line for line with HAProxy 2.6 on the same file where the values do not depend on timing.
@Suite(.serialized) struct AccessLogTests {
    /// The fields that do not depend on ports or timers, in one format, with flags.
    static let stableFormat = #"%{+Q}o %{-Q}ci %ft %b %s %ST %HM %HU %HP %HPO %HQ %HV %{-Q}r %r %ts %tsc %CC %hr %[var(txn.tag)] %{+E}[var(txn.quote)] %[src] %{+X}ci %[ssl_fc] %sslv %{-Q}sslv"#

    static func config(_ port: Int, tlsPort: Int, app: Int, pem: String, format: String, log: String) -> String {
        """
        global
            log \(log) format raw local0
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            bind 127.0.0.1:\(tlsPort) ssl crt \(pem)
            log global
            log-format "\(format.replacingOccurrences(of: "\"", with: "\\\""))"
            http-request set-var(txn.tag) str(tagged)
            http-request set-var(txn.quote) str(a]b)
            default_backend app
        backend app
            server s1 127.0.0.1:\(app)

        """
    }

    /// Sends the same requests to `port`, one connection each, and returns nothing: the
    /// lines are read from the log.
    static func traffic(_ port: Int, tlsPort: Int, ca: String) throws {
        _ = TestBed.raw(port, "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        _ = TestBed.raw(port, "GET http://h/abs/p?q=%22 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        _ = TestBed.raw(port, "POST /post HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
        _ = TestBed.raw(port, "GET /odd%23\"<> HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        // A fragment is refused with a 400 by both, and logged as "<BADREQ>".
        _ = TestBed.raw(port, "GET /nothing#frag HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        let r = try Harness.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "--tlsv1.3", "--cacert", ca, "https://localhost:\(tlsPort)/tls"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    /// A log file's lines, once `count` are there.
    static func lines(_ path: String, count: Int) -> [String] {
        var lines: [String] = []
        _ = TestBed.waitUntil {
            lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                .filter { !$0.hasPrefix("[") && !$0.contains("): serving") && !$0.contains("Proxy ") }
                // HAProxy logs the tests' port probes: a TLS one, and a plain one as a 400 "CR".
                .filter { !$0.contains("Connection closed during SSL handshake") && !$0.contains(" CR CR-- ") }
            return lines.count >= count
        }
        return lines
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func customFormatMatchesHAProxy() throws {
        let bed = try TestBed()
        let (pem, ca) = try TLSTerminationTests.certificate(in: bed.directory)
        let app = try bed.backend(name: "app")
        var results: [[String]] = []
        for subject in ["proxy", "haproxy"] {
            let port = TestBed.freePort(), tlsPort = TestBed.freePort()
            let logFile = bed.directory + "/\(subject).log"
            let socket = bed.directory + "/\(subject)-log.sock"
            let catcher = try bed.start(Harness.which("socat") ?? "/usr/bin/socat", ["-u", "UNIX-RECV:\(socket)", "CREATE:\(logFile)"])
            #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: socket) })
            let cfg = Self.config(port, tlsPort: tlsPort, app: app, pem: pem, format: Self.stableFormat, log: socket)
            let path = bed.directory + "/\(subject).cfg"
            try cfg.write(toFile: path, atomically: true, encoding: .utf8)
            let p = try bed.start(subject == "proxy" ? Harness.proxyBinary : Harness.which("haproxy")!, ["-f", path, "-db"],
                                  log: bed.directory + "/\(subject).out")
            #expect(TestBed.waitForPort(port) && TestBed.waitForPort(tlsPort), "\(subject) did not start")
            try Self.traffic(port, tlsPort: tlsPort, ca: ca)
            results.append(Self.lines(logFile, count: 6))
            p.terminate()
            p.waitUntilExit()
            catcher.terminate()
        }
        let (ours, theirs) = (results[0], results[1])
        #expect(ours.count == 6 && theirs.count == 6, "proxy: \(ours)\nhaproxy: \(theirs)")
        // Lines may come in another order (one connection each); the client ports and
        // their hex form differ between the two runs.
        func stable(_ line: String) -> String {
            var words = line.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
            if words.count > 1 { words.removeAll { $0.hasPrefix("7F000001") } }
            return words.joined(separator: " ")
        }
        #expect(Set(ours.map(stable)) == Set(theirs.map(stable)), "proxy:\n\(ours.joined(separator: "\n"))\nhaproxy:\n\(theirs.joined(separator: "\n"))")
        #expect(ours.contains { $0.contains("\"web~\"") && $0.contains("TLSv1.3") }, "\(ours)")
    }

    /// `option httplog`, `option httplog clf` and `option tcplog`: HAProxy's documented
    /// layouts, with the request line escaped, timers and byte counts where they belong.
    @Test func builtInLayouts() throws {
        let bed = try TestBed()
        let app = try bed.backend(name: "app")
        let http = TestBed.freePort(), clf = TestBed.freePort(), tcp = TestBed.freePort()
        let logFile = bed.directory + "/access.log"
        let socket = bed.directory + "/log.sock"
        _ = try bed.start(Harness.which("socat") ?? "/usr/bin/socat", ["-u", "UNIX-RECV:\(socket)", "CREATE:\(logFile)"])
        #expect(TestBed.waitUntil { FileManager.default.fileExists(atPath: socket) })
        try bed.proxy("""
        global
            log \(socket) format raw local0
        \(TestBed.defaults("http"))
            log global
        frontend web
            bind 127.0.0.1:\(http)
            option httplog
            default_backend app
        frontend clf
            bind 127.0.0.1:\(clf)
            option httplog clf
            default_backend app
        frontend raw
            mode tcp
            bind 127.0.0.1:\(tcp)
            option tcplog
            default_backend apptcp
        backend app
            server s1 127.0.0.1:\(app)
        backend apptcp
            mode tcp
            server s1 127.0.0.1:\(app)

        """, waitFor: http)
        _ = TestBed.raw(http, "GET /x?a\"b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        let lineHTTP = Self.lines(logFile, count: 1).last ?? ""
        _ = TestBed.raw(clf, "GET /clf HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        let lineCLF = Self.lines(logFile, count: 2).last ?? ""
        _ = TestBed.raw(tcp, "GET /tcp HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        let lineTCP = Self.lines(logFile, count: 3).last ?? ""
        // 127.0.0.1:PORT [DATE] web app/s1 TR/Tw/Tc/Tr/Ta ST B CC CS tsc ac/fc/bc/sc/rc sq/bq "request"
        let h = lineHTTP.split(separator: " ").map(String.init)
        #expect(h.count == 15, "\(lineHTTP)")
        if h.count == 15 {
            #expect(h[0].hasPrefix("127.0.0.1:") && h[1].hasPrefix("[") && h[2] == "web" && h[3] == "app/s1", "\(lineHTTP)")
            #expect(h[4].split(separator: "/").count == 5 && h[5] == "200" && Int(h[6])! > 0 && h[7] == "-" && h[8] == "-" && h[9] == "----", "\(lineHTTP)")
            #expect(lineHTTP.hasSuffix(" \"GET /x?a#22b HTTP/1.1\""), "a quote is escaped: \(lineHTTP)")
        }
        #expect(lineCLF.hasPrefix("127.0.0.1 - - [") && lineCLF.contains(" +0000] \"GET /clf HTTP/1.1\" 200 ")
                && lineCLF.contains(" \"\" \"\" ") && lineCLF.contains(" \"clf\" \"app\" \"s1\" "), "\(lineCLF)")
        // 127.0.0.1:PORT [DATE] raw apptcp/s1 Tw/Tc/Tt B ts ac/fc/bc/sc/rc sq/bq
        let t = lineTCP.split(separator: " ").map(String.init)
        #expect(t.count == 9 && t[2] == "raw" && t[3] == "apptcp/s1" && t[4].split(separator: "/").count == 3
                && Int(t[5])! > 0 && t[6] == "--", "\(lineTCP)")
    }
}
