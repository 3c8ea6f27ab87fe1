import Foundation
import Testing

/// `disable frontend` / `enable frontend` and `set maxconn frontend|global`: a disabled
/// frontend's port refuses connections (as HAProxy's pause does) and says PAUSED, a
/// reload keeps it so, and enabling it serves again.
@Suite(.serialized) struct FrontendCommandTests {
    func config(port: Int, socket: String, app: Int, level: String = "admin") -> String {
        """
        global
            maxconn 500
            stats socket \(socket) level \(level)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request use-service prometheus-exporter if { path /metrics }
            default_backend app
        frontend other
            bind 127.0.0.1:\(port + 1)
            default_backend app
        backend app
            server a 127.0.0.1:\(app)

        """
    }

    func row(_ socket: String, _ name: String) -> [String] {
        let line = (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix("\(name),FRONTEND,") } ?? ""
        let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        // A row not there (yet) reads as empty fields, never an out-of-range crash.
        return fields + Array(repeating: "", count: max(0, 110 - fields.count))
    }

    /// curl's verdict: the status, or 0 when the connection was refused.
    func status(_ port: Int) -> Int { (try? TestBed.curl(["http://127.0.0.1:\(port)/"], timeout: 2))?.0 ?? -1 }

    @Test func disabledFrontendRefusesAndSurvivesAReload() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let first = try bed.proxy(config(port: port, socket: socket, app: app), waitFor: port)
        #expect(cli(socket, "disable frontend other") == "\n")
        #expect(cli(socket, "disable frontend other") == "All sockets are already disabled.\n\n")
        #expect(cli(socket, "disable frontend nope") == "No such frontend.\n\n")
        #expect(row(socket, "other")[17] == "PAUSED" && row(socket, "web")[17] == "OPEN")
        #expect(status(port + 1) == 0, "refused")
        #expect(status(port) == 200)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/metrics"]).1.contains("haproxy_frontend_status{proxy=\"other\",state=\"DOWN\"} 1"))
        #expect(cli(socket, "set maxconn frontend web 7; set maxconn global 300") == "\n\n")
        #expect(cli(socket, "set maxconn frontend web many") == "Integer value expected.\n\n")
        #expect(cli(socket, "set maxconn global 501") == "Value out of range. Must be between 0 and 500.\n\n")
        #expect(row(socket, "web")[6] == "7" && row(socket, "other")[6] == "300")
        #expect(cli(socket, "show info")?.contains("\nMaxconn: 300\n") == true)
        // A reload: still disabled, still refusing; the limits are kept.
        let (second, log) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "same.cfg",
                                               arguments: ["-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { !first.isRunning })
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") }, "\(bed.read(log))")
        #expect(row(socket, "other")[17] == "PAUSED")
        #expect(status(port + 1) == 0, "still refused after the reload")
        #expect(status(port) == 200)
        #expect(row(socket, "web")[6] == "7" && row(socket, "other")[6] == "300")
        #expect(cli(socket, "enable frontend other") == "\n")
        #expect(cli(socket, "enable frontend other") == "All sockets are already enabled.\n\n")
        #expect(row(socket, "other")[17] == "OPEN")
        #expect(status(port + 1) == 200)
        // `set maxconn global 0` gives the configured limit back.
        #expect(cli(socket, "set maxconn global 0") == "\n")
        #expect(cli(socket, "show info")?.contains("\nMaxconn: 500\n") == true)
        kill(second.processIdentifier, SIGTERM)
    }

    @Test func needAdminLevel() throws {
        let bed = try TestBed()
        let port = TestBed.freePortRange(2)
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        try bed.proxy(config(port: port, socket: socket, app: app, level: "operator"), waitFor: port)
        for command in ["disable frontend other", "enable frontend other", "set maxconn frontend web 5", "set maxconn global 5"] {
            #expect(cli(socket, command) == "Permission denied\n\n", "\(command)")
        }
        #expect(status(port + 1) == 200)
    }
}
