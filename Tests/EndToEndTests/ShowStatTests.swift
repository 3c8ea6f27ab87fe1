import Foundation
import Testing

/// `show stat` beside HAProxy 2.6: the same config and the same requests to each, then the
/// CSV compared: the header byte for byte up to the `-` column, the rows in the same order
/// with the same shape (the same fields empty, except the rates and timings we do not
/// measure), and the values both know: status, weights, ids, types, sessions, responses.
@Suite(.serialized) struct ShowStatBesideHAProxy {
    func config(ports: Int, socket: String, app: Int) -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(ports)
            default_backend app
        backend app
            server a 127.0.0.1:\(app) weight 10 check inter 300ms
            server b 127.0.0.1:\(app) maxconn 5 backup
        listen tcpl
            mode tcp
            bind 127.0.0.1:\(ports + 1)
            server t 127.0.0.1:\(app)

        """
    }

    /// The fields we leave empty where HAProxy measures something we do not.
    static let unmeasured: Set<String> = ["rate", "rate_max", "req_rate", "req_rate_max", "conn_rate", "conn_rate_max", "lastsess",
                                          "last_chk", "qtime", "ctime", "rtime", "ttime", "qtime_max", "ctime_max", "rtime_max",
                                          "ttime_max", "downtime", "cookie", "check_duration"]

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func csvLikeHAProxys() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(4)
        let app = try bed.backend(name: "app")
        let ours = bed.directory + "/p.sock", theirs = bed.directory + "/h.sock"
        try config(ports: ports + 2, socket: theirs, app: app).write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 2))
        try bed.proxy(config(ports: ports, socket: ours, app: app), waitFor: ports)
        for port in [ports, ports + 2] {
            for path in ["/", "/status/404", "/x"] { _ = try TestBed.curl(["http://127.0.0.1:\(port)\(path)"]) }
        }
        // Both have checked server a once.
        let checked = TestBed.waitUntil {
            [ours, theirs].allSatisfy { (cli($0, "show stat") ?? "").contains("L4OK") }
        }
        #expect(checked)
        let mine = cli(ours, "show stat") ?? "", reference = cli(theirs, "show stat") ?? ""
        let myLines = mine.split(separator: "\n", omittingEmptySubsequences: false)
        let theirLines = reference.split(separator: "\n", omittingEmptySubsequences: false)
        guard let dash = theirLines.first?.range(of: ",-,") else { Issue.record("HAProxy's header: \(reference)"); return }
        #expect(String(myLines[0]) == String(theirLines[0][..<dash.upperBound]), "header:\n\(myLines[0])\n\(theirLines[0])")
        #expect(mine.hasSuffix(",\n\n") && myLines.dropFirst().filter { !$0.isEmpty }.allSatisfy { $0.hasSuffix(",-,") })
        let names = String(myLines[0].dropFirst(2)).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        func rows(_ lines: [Substring]) -> [[String: String]] {
            lines.dropFirst().filter { !$0.isEmpty }.map { line in
                let f = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                var d: [String: String] = [:]
                for (i, n) in names.enumerated() where i < f.count { d[n] = f[i] }
                d["#fields"] = "\(f.count)"
                return d
            }
        }
        let a = rows(myLines), h = rows(theirLines)
        #expect(a.map { "\($0["pxname"]!)/\($0["svname"]!)" } == h.map { "\($0["pxname"]!)/\($0["svname"]!)" })
        guard a.count == h.count else { return }
        for (m, t) in zip(a, h) {
            let row = "\(m["pxname"]!)/\(m["svname"]!)"
            #expect(m["#fields"] == "\(names.count)", "\(row) has \(m["#fields"]!) fields")
            for n in names where n != "-" && !n.isEmpty && !Self.unmeasured.contains(n) {
                #expect(m[n]!.isEmpty == t[n]!.isEmpty, "\(row) \(n): ours '\(m[n]!)', HAProxy's '\(t[n]!)'")
            }
            // A connection that sends nothing (the test's port probe) is a 400 request to
            // HAProxy's frontend and a silent close to ours: the frontends' request counts differ.
            let requests = m["svname"] == "FRONTEND" ? [] : ["hrsp_4xx", "req_tot"]
            for n in ["status", "weight", "act", "bck", "iid", "sid", "type", "pid", "stot", "hrsp_2xx", "mode",
                      "algo", "check_status", "check_rise", "check_fall", "addr", "uweight", "lbtot", "qcur", "scur", "econ"] + requests {
                #expect(m[n] == t[n], "\(row) \(n): ours '\(m[n] ?? "-")', HAProxy's '\(t[n] ?? "-")'")
            }
        }
    }
}

/// Debian's prometheus-haproxy-exporter reads our `show stat` through the stats socket as
/// it reads HAProxy's: `haproxy_up 1`, and per-frontend and per-server values that match.
@Suite(.serialized) struct HAProxyExporterReadsUs {
    static let exporter = Harness.which("prometheus-haproxy-exporter")

    @Test(.enabled(if: exporter != nil, "needs prometheus-haproxy-exporter"))
    func scrapesTheStatsSocket() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(ports)
            default_backend app
        backend app
            server a 127.0.0.1:\(app)
            server b 127.0.0.1:\(app)

        """, waitFor: ports)
        for _ in 0..<5 { _ = try TestBed.curl(["http://127.0.0.1:\(ports)/"]) }
        #expect(cli(socket, "disable server app/b") == "\n")
        try bed.start(Self.exporter!, ["--haproxy.scrape-uri=unix:\(socket)", "--web.listen-address=127.0.0.1:\(ports + 1)"],
                      log: bed.directory + "/exporter.log")
        #expect(TestBed.waitForPort(ports + 1))
        var metrics = ""
        let scraped = TestBed.waitUntil {
            metrics = (try? TestBed.curl(["http://127.0.0.1:\(ports + 1)/metrics"]))?.1 ?? ""
            return metrics.contains("haproxy_up 1")
        }
        #expect(scraped, "\(bed.read(bed.directory + "/exporter.log"))")
        for line in ["haproxy_up 1", "haproxy_frontend_http_requests_total{frontend=\"web\"} 5",
                     "haproxy_server_up{backend=\"app\",server=\"a\"} 1", "haproxy_server_up{backend=\"app\",server=\"b\"} 0",
                     "haproxy_backend_up{backend=\"app\"} 1", "haproxy_frontend_current_sessions{frontend=\"web\"} 0"] {
            #expect(metrics.contains(line), "missing \(line)")
        }
        #expect(!metrics.contains("haproxy_exporter_csv_parse_failures 1"))
    }
}
