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

/// The `typed` and `json` forms beside HAProxy 2.6's: for every field both print, the same
/// position, tags and type; the JSON parses and carries the same values as the typed form.
@Suite(.serialized) struct TypedFormsBesideHAProxy {
    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"))
    func typedAndJSON() throws {
        let bed = try TestBed()
        let ports = TestBed.freePortRange(4)
        let app = try bed.backend(name: "app")
        let ours = bed.directory + "/p.sock", theirs = bed.directory + "/h.sock"
        let stat = ShowStatBesideHAProxy()
        try stat.config(ports: ports + 2, socket: theirs, app: app).write(toFile: bed.directory + "/h.cfg", atomically: true, encoding: .utf8)
        try bed.start(Harness.which("haproxy")!, ["-f", bed.directory + "/h.cfg"], log: bed.directory + "/haproxy.log")
        #expect(TestBed.waitForPort(ports + 2))
        try bed.proxy(stat.config(ports: ports, socket: ours, app: app), waitFor: ports)
        #expect(TestBed.waitUntil { [ours, theirs].allSatisfy { (cli($0, "show stat") ?? "").contains("L4OK") } })
        /// `OBJ.POS.NAME -> TAGS:TYPE` and the values, by object and field.
        func typed(_ text: String) -> (tags: [String: String], values: [String: String]) {
            var tags: [String: String] = [:], values: [String: String] = [:]
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 3, omittingEmptySubsequences: false)
                guard parts.count == 4 else { continue }
                let head = parts[0].split(separator: ".")
                let key = head.count == 6 ? "\(head[0]).\(head[3]).\(head[4])" : "\(head[0]).\(head[1])"
                tags[key] = "\(parts[1]):\(parts[2])"
                values[String(parts[0])] = String(parts[3])
            }
            return (tags, values)
        }
        for command in ["show stat typed", "show info typed"] {
            let (mine, myValues) = typed(cli(ours, command) ?? ""), (reference, _) = typed(cli(theirs, command) ?? "")
            #expect(!mine.isEmpty && !reference.isEmpty)
            for (key, tag) in mine {
                if let t = reference[key] { #expect(tag == t, "\(command) \(key): ours \(tag), HAProxy's \(t)") }
            }
            // The keys HAProxy prints and we print too cover most of ours.
            #expect(mine.keys.filter { reference[$0] != nil }.count * 10 >= mine.count * 9, "\(command): \(mine.keys.filter { reference[$0] == nil }.sorted())")
            if command == "show stat typed" {
                #expect(myValues["F.2.0.17.status.1"] == "OPEN" && myValues["S.3.1.1.svname.1"] == "a")
            }
        }
        // JSON: parses, and says what the typed form says.
        for command in ["show stat json", "show info json"] {
            let text = cli(ours, command) ?? ""
            let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8))
            #expect(parsed != nil, "\(command): \(text.prefix(300))")
            let reference = try? JSONSerialization.jsonObject(with: Data((cli(theirs, command) ?? "").utf8))
            #expect(type(of: parsed) == type(of: reference))
        }
        let objects = (try? JSONSerialization.jsonObject(with: Data((cli(ours, "show stat json") ?? "").utf8))) as? [[[String: Any]]] ?? []
        let frontend = objects.first { ($0.first?["objType"] as? String) == "Frontend" } ?? []
        let status = frontend.first { (($0["field"] as? [String: Any])?["name"] as? String) == "status" }
        #expect(((status?["value"] as? [String: Any])?["value"] as? String) == "OPEN")
        #expect(((status?["tags"] as? [String: Any])?["origin"] as? String) == "Status")
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
