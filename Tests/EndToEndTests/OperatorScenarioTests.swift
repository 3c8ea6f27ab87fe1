import Foundation
import Testing

/// What operators do at 3 a.m., end to end under a steady load: the seed thread's wish (one
/// site into maintenance with no reload, kept over reloads), an Ansible-style drain, and a
/// set of runtime changes that ten reloads in a row do not lose, with counters that never
/// go back.
@Suite(.serialized) struct OperatorScenarioTests {
    func showStat(_ socket: String, _ row: String) -> [String] {
        let line = (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix(row) } ?? ""
        let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        // A row not there (yet) reads as empty fields, never an out-of-range crash.
        return fields + Array(repeating: "", count: max(0, 110 - fields.count))
    }

    func reload(_ bed: TestBed, _ config: String, old: Process, name: String) throws -> Process {
        let (next, log) = try bed.startProxy(config, name: name, arguments: ["-sf", String(old.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") }, "\(bed.read(log))")
        return next
    }

    @Test func seedsWishSurvivesReloadsUnderLoad() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let config = ProcessVariablesAtRunTime.seedConfig(port: port, socket: socket, app: app)
        var current = try bed.proxy(config, waitFor: port)
        func status(_ host: String) -> Int { (try? TestBed.curl(["-H", "Host: \(host)", "http://127.0.0.1:\(port)/"]))?.0 ?? 0 }
        // Site B (and every other host) is under a steady load the whole time.
        let load = try SteadyLoad(port: port, directory: bed.directory)
        #expect(TestBed.waitUntil { Int(showStat(socket, "web,FRONTEND,")[safe: 48] ?? "") ?? 0 >= 10 }, "the load never started")
        #expect(cli(socket, "set var proc.site_a_maint bool(true)") == "\n")
        #expect(status("a.example.com") == 503 && status("b.example.com") == 200)
        for i in 0..<3 {
            current = try reload(bed, config, old: current, name: "r\(i).cfg")
            #expect(status("a.example.com") == 503, "site A left maintenance at reload \(i)")
        }
        #expect(cli(socket, "set var proc.site_a_maint bool(false)") == "\n")
        #expect(status("a.example.com") == 200)
        let result = load.finish()
        #expect(result.failed == 0 && result.ok > 0, "\(result)")
        kill(current.processIdentifier, SIGTERM)
    }

    @Test func ansibleStyleDrainUnderLoad() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b")
        let socket = bed.directory + "/p.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        listen web
            bind 127.0.0.1:\(port)
            server a 127.0.0.1:\(a)
            server b 127.0.0.1:\(b)

        """, waitFor: port)
        let load = try SteadyLoad(port: port, directory: bed.directory)
        #expect(TestBed.waitUntil { Int(showStat(socket, "web,a,")[safe: 7] ?? "") ?? 0 > 5 })
        // Ansible's haproxy module: drain, then poll show stat until scur is 0 and DRAIN.
        #expect(cli(socket, "set server web/a state drain") == "\n")
        #expect(TestBed.waitUntil { let r = showStat(socket, "web,a,"); return r[4] == "0" && r[17] == "DRAIN" })
        let before = Int(showStat(socket, "web,a,")[7]) ?? -1
        #expect(TestBed.waitUntil { Int(showStat(socket, "web,b,")[7]) ?? 0 > 20 })
        #expect(Int(showStat(socket, "web,a,")[7]) == before, "a drained server gets no new session")
        #expect(cli(socket, "set server web/a state ready") == "\n")
        #expect(TestBed.waitUntil { Int(showStat(socket, "web,a,")[7]) ?? 0 > before })
        let result = load.finish()
        #expect(result.failed == 0 && result.ok > 0, "\(result)")
    }

    @Test func tenReloadsKeepEveryChange() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let a = try bed.backend(name: "a"), b = try bed.backend(name: "b"), c = try bed.backend(name: "c"), moved = try bed.backend(name: "moved")
        let socket = bed.directory + "/p.sock"
        try "x.example.com be_x\n".write(toFile: bed.directory + "/hosts.map", atomically: true, encoding: .utf8)
        func config(weightC: Int = 10) -> String {
            """
            global
                stats socket \(socket) level admin
            \(TestBed.defaults("http"))
            frontend web
                bind 127.0.0.1:\(port)
                use_backend %[req.hdr(host),lower,map(\(bed.directory)/hosts.map,app)]
            backend app
                server a 127.0.0.1:\(a) weight 10
                server b 127.0.0.1:\(b) weight 10
                server c 127.0.0.1:\(c) weight \(weightC)
            backend be_x
                http-request return status 200 content-type text/plain string "x"
            backend be_y
                http-request return status 200 content-type text/plain string "y"

            """
        }
        var current = try bed.proxy(config(), waitFor: port)
        let load = try SteadyLoad(port: port, directory: bed.directory)
        #expect(TestBed.waitUntil { Int(showStat(socket, "web,FRONTEND,")[safe: 48] ?? "") ?? 0 >= 10 }, "the load never started")
        #expect(cli(socket, "set server app/a state maint; set server app/b state drain; set weight app/c 5") == "\n\n\n")
        #expect(cli(socket, "set server app/c addr 127.0.0.1 port \(moved)")?.contains("port changed") == true)
        #expect(cli(socket, "add map \(bed.directory)/hosts.map y.example.com be_y") == "\n")
        var lastRequests = 0
        for i in 0..<10 {
            current = try reload(bed, config(), old: current, name: "r\(i).cfg")
            let state = cli(socket, "show servers state app") ?? ""
            #expect(state.contains(" a 127.0.0.1 2 1 "), "maint lost at reload \(i): \(state)")
            #expect(state.contains(" b 127.0.0.1 2 8 "), "drain lost at reload \(i): \(state)")
            #expect(cli(socket, "get weight app/c") == "5 (initial 10)\n\n")
            #expect(state.contains(" c 127.0.0.1 2 0 5 10 ") && state.contains(" \(moved) "), "c lost at reload \(i): \(state)")
            let host = try TestBed.curl(["-H", "Host: y.example.com", "http://127.0.0.1:\(port)/"])
            #expect(host.1 == "y", "map entry lost at reload \(i)")
            let requests = Int(showStat(socket, "web,FRONTEND,")[48]) ?? -1
            #expect(requests >= lastRequests, "req_tot went back at reload \(i): \(requests) < \(lastRequests)")
            lastRequests = requests
        }
        // The file changes c's weight: the file wins for that item only.
        current = try reload(bed, config(weightC: 30), old: current, name: "changed.cfg")
        #expect(cli(socket, "get weight app/c") == "30 (initial 30)\n\n")
        #expect(cli(socket, "show servers state app")?.contains(" a 127.0.0.1 2 1 ") == true)
        let result = load.finish()
        #expect(result.failed == 0 && result.ok > 0, "\(result)")
        kill(current.processIdentifier, SIGTERM)
    }
}

extension Array {
    /// The element at `i`, or nil past the end (a row not there yet).
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
