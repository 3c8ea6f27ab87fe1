import Foundation
import Testing

/// The stats page: basic auth (plain and crypt(3) passwords), the HTML strings monitoring
/// agents match, the `;csv` export read by Python's csv module and by Debian's
/// prometheus-haproxy-exporter, the URI modifiers, and the `stats admin` form posted by curl.
@Suite(.serialized) struct StatsPageTests {
    /// `pw` hashed with SHA-512 crypt (salt `saltsalt`).
    static let hashed = "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH2xk/"

    func config(_ port: Int, app: Int, socket: String, servers: Int = 2, extra: String = "") -> String {
        var list = ""
        for i in 0..<servers { list += "    server s\(i) 127.0.0.1:\(app)\n" }
        return """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            stats uri /haproxy?stats
            stats realm Ops\\ only
            stats auth admin:secret
            stats auth ops:\(Self.hashed)
            stats admin if { src 127.0.0.1 }
            default_backend app
        backend app
        \(list)
        listen public
            bind 127.0.0.1:\(port + 1)
            stats enable
            stats uri /
            stats refresh 10s
            stats hide-version
        \(extra)
        """
    }

    @Test func authenticationAndPageStrings() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        try bed.proxy(config(port, app: app, socket: bed.directory + "/s.sock"), waitFor: port)
        let url = "http://127.0.0.1:\(port)/haproxy?stats"
        let (anonymous, _, headers) = try TestBed.curl([url])
        #expect(anonymous == 401)
        #expect(headers.lowercased().contains("www-authenticate: basic realm=\"ops only\""), "\(headers)")
        #expect(try TestBed.curl(["-u", "admin:wrong", url]).0 == 401)
        #expect(try TestBed.curl(["-u", "ops:wrong", url]).0 == 401)
        let (plain, page, _) = try TestBed.curl(["-u", "admin:secret", url])
        #expect(plain == 200)
        #expect(try TestBed.curl(["-u", "ops:pw", url]).0 == 200, "crypt(3) password")
        // What Zabbix's and Datadog's templates match in the HTML.
        #expect(page.range(of: #"HAProxy version [^,]+, released \d{4}/\d{2}/\d{2}"#, options: .regularExpression) != nil)
        #expect(page.range(of: #"uptime = </b> \d+d \d+h\d{2}m\d{2}s"#, options: .regularExpression) != nil)
        #expect(page.contains("<a name=\"app\">") && page.contains(" s1</td>"))
        // The public page: no auth, no version, a refresh header that ;norefresh drops.
        let (code, publicPage, publicHeaders) = try TestBed.curl(["http://127.0.0.1:\(port + 1)/"])
        #expect(code == 200 && !publicPage.contains("HAProxy version"))
        #expect(publicHeaders.lowercased().contains("refresh: 10"))
        #expect(!(try TestBed.curl(["http://127.0.0.1:\(port + 1)/;norefresh"])).2.lowercased().contains("refresh:"))
        // HEAD gets the head only.
        let head = TestBed.raw(port + 1, "HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.1 200") && head.hasSuffix("\r\n\r\n"), "\(head)")
    }

    @Test func csvForMonitoringAgents() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(3)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        // Enough servers that the page is several output buffers long.
        try bed.proxy(config(port, app: app, socket: socket, servers: 300), waitFor: port)
        for _ in 0..<5 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        #expect(cli(socket, "disable server app/s1") == "\n")
        let (code, csv, headers) = try TestBed.curl(["-u", "admin:secret", "http://127.0.0.1:\(port)/haproxy?stats;csv;norefresh"])
        #expect(code == 200 && headers.lowercased().contains("content-type: text/plain"))
        #expect(csv.count > 48_000, "a page larger than the buffers: \(csv.count) bytes")
        // The same CSV as the socket, but for the counters the page's own request changed.
        let socketCSV = cli(socket, "show stat") ?? ""
        #expect(csv.split(separator: "\n").count == socketCSV.split(separator: "\n").count)
        #expect(csv.split(separator: "\n").first == socketCSV.split(separator: "\n").first)
        // Python's csv module reads every row by name.
        let script = """
        import csv, sys
        text = open(sys.argv[1]).read()
        rows = list(csv.DictReader(text[2:].splitlines()))
        assert len(rows) == 304, len(rows)
        s1 = [r for r in rows if r['svname'] == 's1'][0]
        fe = [r for r in rows if r['svname'] == 'FRONTEND' and r['pxname'] == 'web'][0]
        print(s1['status'], fe['req_tot'])
        """
        try csv.write(toFile: bed.directory + "/page.csv", atomically: true, encoding: .utf8)
        let py = try Harness.run(Harness.which("python3")!, ["-c", script, bed.directory + "/page.csv"])
        #expect(py.stdout == "MAINT 5\n", "\(py.stdout) \(py.stderr)")
        // ;typed and ;json, as the socket's forms.
        let typed = try TestBed.curl(["-u", "admin:secret", "http://127.0.0.1:\(port)/haproxy?stats;typed"]).1
        #expect(typed.contains("S.3.2.17.status.1:SGP:str:MAINT"), "\(typed.prefix(500))")
        let json = try TestBed.curl(["-u", "admin:secret", "http://127.0.0.1:\(port)/haproxy?stats;json"]).1
        #expect(((try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [[[String: Any]]])?.count == 304)
        // ;up hides servers that are not up.
        let up = try TestBed.curl(["-u", "admin:secret", "http://127.0.0.1:\(port)/haproxy?stats;csv;up"]).1
        #expect(!up.contains("app,s1,") && up.contains("app,s2,"))
        // Debian's exporter scrapes ;csv over HTTP with basic auth.
        if let exporter = HAProxyExporterReadsUs.exporter {
            try bed.start(exporter, ["--haproxy.scrape-uri=http://admin:secret@127.0.0.1:\(port)/haproxy?stats;csv",
                                     "--web.listen-address=127.0.0.1:\(port + 2)"], log: bed.directory + "/exporter.log")
            #expect(TestBed.waitForPort(port + 2))
            var metrics = ""
            let scraped = TestBed.waitUntil {
                metrics = (try? TestBed.curl(["http://127.0.0.1:\(port + 2)/metrics"]))?.1 ?? ""
                return metrics.contains("haproxy_up 1")
            }
            #expect(scraped, "\(bed.read(bed.directory + "/exporter.log"))")
            #expect(metrics.contains("haproxy_server_up{backend=\"app\",server=\"s1\"} 0"))
            #expect(metrics.contains("haproxy_server_up{backend=\"app\",server=\"s2\"} 1"))
            #expect(!metrics.contains("haproxy_exporter_csv_parse_failures 1"))
        }
    }

    @Test func adminFormSteersServers() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy(config(port, app: app, socket: socket, servers: 3), waitFor: port)
        let url = "http://127.0.0.1:\(port)/haproxy?stats"
        func post(_ form: String, auth: Bool = true) throws -> (Int, String) {
            let (code, _, headers) = try TestBed.curl((auth ? ["-u", "admin:secret"] : []) + ["-d", form, url])
            let location = headers.split(separator: "\r\n").first { $0.lowercased().hasPrefix("location:") } ?? ""
            return (code, String(location.dropFirst(10)))
        }
        func status(_ server: String) -> String {
            let line = (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("app,\(server),") } ?? ""
            return line.split(separator: ",", omittingEmptySubsequences: false).dropFirst(17).first.map(String.init) ?? ""
        }
        #expect(try post("s=s0&s=s1&action=drain&b=app") == (303, "/haproxy?stats;st=DONE"))
        #expect(status("s0") == "DRAIN" && status("s1") == "DRAIN" && status("s2") == "no check")
        #expect(try post("s=s0&action=maint&b=%23\(3)").0 == 303)  // the backend by its #id
        #expect(status("s0") == "MAINT")
        #expect(try post("s=s0&s=s1&action=ready&b=app").1.hasSuffix(";st=DONE"))
        #expect(status("s0") == "no check" && status("s1") == "no check")
        #expect(try post("s=s0&action=frobnicate&b=app").1.hasSuffix(";st=UNKN"))
        #expect(try post("s=nope&action=drain&b=app").1.hasSuffix(";st=NONE"))
        #expect(try post("action=drain&b=app").1.hasSuffix(";st=ERRP"))
        #expect(try post("s=s0&action=drain&b=nope").1.hasSuffix(";st=ERRP"))
        #expect(try post("s=s0&action=drain&b=app", auth: false).0 == 401)
        // The result is shown on the page the redirect leads to.
        let page = try TestBed.curl(["-u", "admin:secret", url + ";st=DONE"]).1
        #expect(page.contains("Action processed successfully."))
        #expect(page.contains("<input type=\"checkbox\" name=\"s\" value=\"s0\">"))
    }

    @Test func adminFormRefusedWhenTheConditionFails() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        listen web
            bind 127.0.0.1:\(port)
            stats uri /stats
            stats admin if { src 10.0.0.0/8 }
            server s0 127.0.0.1:\(app)

        """, waitFor: port)
        let (code, _, headers) = try TestBed.curl(["-d", "s=s0&action=maint&b=web", "http://127.0.0.1:\(port)/stats"])
        #expect(code == 303 && headers.contains(";st=DENY"))
        #expect(!(cli(socket, "show stat") ?? "").contains("MAINT"))
        #expect(!(try TestBed.curl(["http://127.0.0.1:\(port)/stats"])).1.contains("type=\"checkbox\""))
        // Not the stats URI: proxied as usual.
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/other"]).0 == 200)
    }
}
