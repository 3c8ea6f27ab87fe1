import Foundation
import Testing

/// `http-request use-service prometheus-exporter`: HAProxy's exporter names, checked by
/// `promtool check metrics` and scraped by a real Prometheus server.
@Suite(.serialized) struct PrometheusTests {
    static let promtool = Harness.which("promtool")
    static let prometheus = Harness.which("prometheus")

    func config(_ port: Int, app: Int, socket: String) -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request use-service prometheus-exporter if { path /metrics }
            default_backend app
        backend app
            server a 127.0.0.1:\(app) check inter 200ms
            server b 127.0.0.1:\(app)
        listen raw
            mode tcp
            bind 127.0.0.1:\(port + 1)
            server t 127.0.0.1:\(app)

        """
    }

    @Test func namesLabelsAndScopes() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy(config(port, app: app, socket: socket), waitFor: port)
        for _ in 0..<7 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        #expect(cli(socket, "set server app/b state drain") == "\n")
        #expect(TestBed.waitUntil { (cli(socket, "show stat") ?? "").contains("L4OK") })
        let (code, metrics, headers) = try TestBed.curl(["http://127.0.0.1:\(port)/metrics"])
        #expect(code == 200 && headers.lowercased().contains("content-type: text/plain; version=0.0.4"))
        for line in ["haproxy_process_nbthread 1", "haproxy_frontend_http_requests_total{proxy=\"web\"} 7",
                     "haproxy_frontend_status{proxy=\"web\",state=\"UP\"} 1",
                     "haproxy_frontend_http_responses_total{proxy=\"web\",code=\"2xx\"} 7",
                     "haproxy_backend_http_requests_total{proxy=\"app\"} 7",
                     "haproxy_backend_status{proxy=\"app\",state=\"UP\"} 1",
                     "haproxy_server_status{proxy=\"app\",server=\"b\",state=\"DRAIN\"} 1",
                     "haproxy_server_status{proxy=\"app\",server=\"a\",state=\"UP\"} 1",
                     "haproxy_server_check_status{proxy=\"app\",server=\"a\",state=\"L4OK\"} 1",
                     "haproxy_server_weight{proxy=\"app\",server=\"a\"} 1", "haproxy_backend_current_sessions{proxy=\"raw\"} 0",
                     "haproxy_process_generation 0", "# TYPE haproxy_server_sessions_total counter"] {
            #expect(metrics.contains(line + "\n"), "missing \(line)")
        }
        // Checks are reported only for servers that have them; HTTP figures only for HTTP proxies.
        #expect(!metrics.contains("haproxy_server_check_status{proxy=\"app\",server=\"b\""))
        #expect(!metrics.contains("haproxy_frontend_http_requests_total{proxy=\"raw\"}"))
        // Every name is a promex name or one of ours.
        for line in metrics.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.hasPrefix("haproxy_process_") || line.hasPrefix("haproxy_frontend_") || line.hasPrefix("haproxy_backend_")
                    || line.hasPrefix("haproxy_server_"), "\(line)")
        }
        let servers = try TestBed.curl(["http://127.0.0.1:\(port)/metrics?scope=server&no-maint"]).1
        #expect(servers.contains("haproxy_server_") && !servers.contains("haproxy_process_") && !servers.contains("haproxy_backend_"))
        #expect(cli(socket, "set server app/b state maint") == "\n")
        let noMaint = try TestBed.curl(["http://127.0.0.1:\(port)/metrics?scope=server&no-maint"]).1
        #expect(!noMaint.contains("server=\"b\"") && noMaint.contains("server=\"a\""))
        let two = try TestBed.curl(["http://127.0.0.1:\(port)/metrics?scope=global&scope=frontend"]).1
        #expect(two.contains("haproxy_process_") && two.contains("haproxy_frontend_") && !two.contains("haproxy_server_"))
        if let promtool = Self.promtool {
            try (metrics + "\n").write(toFile: bed.directory + "/m.txt", atomically: true, encoding: .utf8)
            let r = try Harness.run("/bin/sh", ["-c", "\(promtool) check metrics < \(bed.directory)/m.txt"])
            #expect(r.status == 0, "promtool: \(r.stdout) \(r.stderr)")
        }
    }

    @Test(.enabled(if: prometheus != nil, "needs prometheus"))
    func aPrometheusServerScrapesIt() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(3)
        let app = try bed.backend(name: "app")
        try bed.proxy(config(port, app: app, socket: bed.directory + "/s.sock"), waitFor: port)
        for _ in 0..<11 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        try """
        global:
          scrape_interval: 1s
        scrape_configs:
          - job_name: proxy
            static_configs:
              - targets: ['127.0.0.1:\(port)']

        """.write(toFile: bed.directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        try bed.start(Self.prometheus!, ["--config.file=\(bed.directory)/prometheus.yml", "--storage.tsdb.path=\(bed.directory)/tsdb",
                                         "--web.listen-address=127.0.0.1:\(port + 2)"], log: bed.directory + "/prometheus.log")
        let query = "http://127.0.0.1:\(port + 2)/api/v1/query?query=haproxy_frontend_http_requests_total"
        var answer = ""
        let seen = TestBed.waitUntil(timeout: 30) {
            answer = (try? TestBed.curl([query]))?.1 ?? ""
            return answer.contains("\"proxy\":\"web\"")
        }
        #expect(seen, "\(answer)\n\(bed.read(bed.directory + "/prometheus.log").suffix(2000))")
        // The scrapes themselves are requests too: at least the 11 sent, as a number.
        let value = answer.range(of: #""value":\[[0-9.]+,"(\d+)"\]"#, options: .regularExpression).map { String(answer[$0]) } ?? ""
        let n = Int(value.split(separator: "\"").dropLast().last ?? "") ?? -1
        #expect(n >= 11, "\(answer)")
        let up = (try? TestBed.curl(["http://127.0.0.1:\(port + 2)/api/v1/query?query=up"]))?.1 ?? ""
        #expect(up.contains("\"value\":[") && up.contains(",\"1\"]"), "\(up)")
    }
}
