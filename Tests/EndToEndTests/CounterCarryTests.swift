import Foundation
import Testing

/// Counters are exact across reloads: what an old process counts while it drains (after
/// its successor took its snapshot) arrives when it exits, and a process that is itself
/// draining passes on what its predecessor sent. Requests finished by old processes are
/// all in the newest one's `req_tot`.
@Suite(.serialized) struct CounterCarryTests {
    func config(port: Int, socket: String, app: Int) -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server a 127.0.0.1:\(app)

        """
    }

    func field(_ socket: String, _ row: String, _ index: Int) -> Int {
        let line = (cli(socket, "show stat") ?? "").split(separator: "\n").first { $0.hasPrefix(row) } ?? ""
        let fields = line.split(separator: ",", omittingEmptySubsequences: false)
        return index < fields.count ? Int(fields[index]) ?? -1 : -1
    }


    @Test func drainingProcessesHandTheirCountsOn() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let first = try bed.proxy(config(port: port, socket: socket, app: app), waitFor: port)
        for _ in 0..<3 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        // A slow request that the first process will finish after the second took its snapshot.
        let slowOne = try TestBed.slowRequest(port, ms: 1500)
        #expect(TestBed.waitUntil { field(socket, "web,FRONTEND,", 4) == 1 })  // scur
        let (second, log2) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "b.cfg",
                                                arguments: ["-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log2).contains("serving") }, "\(bed.read(log2))")
        // Another slow one on the second, then a third process while both drain.
        let slowTwo = try TestBed.slowRequest(port, ms: 1200)
        #expect(TestBed.waitUntil { field(socket, "web,FRONTEND,", 4) == 1 })
        for _ in 0..<2 { _ = try TestBed.curl(["http://127.0.0.1:\(port)/"]) }
        let (third, log3) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "c.cfg",
                                               arguments: ["-sf", String(second.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log3).contains("serving") }, "\(bed.read(log3))")
        _ = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        // Every old process gone: 3 + 1 + 1 + 2 + 1 requests, all counted by the newest.
        #expect(TestBed.waitUntil(timeout: 15) { !first.isRunning && !second.isRunning })
        slowOne.waitUntilExit()
        slowTwo.waitUntilExit()
        #expect(TestBed.waitUntil { field(socket, "web,FRONTEND,", 48) == 8 }, "req_tot \(field(socket, "web,FRONTEND,", 48))")
        #expect(field(socket, "web,FRONTEND,", 40) == 8, "hrsp_2xx")
        #expect(field(socket, "app,a,", 7) == 8, "server stot")
        #expect(cli(socket, "show info")?.contains("\nCumReq: 8\n") == true)
        kill(third.processIdentifier, SIGTERM)
    }

    /// `-sf $(pidof proxy)` while an older process still waits for its own predecessor: the
    /// waiting one refuses the handover at once (it takes no new successor), the reload goes
    /// on with the others, and every count still ends in the newest process.
    @Test func reloadWhileAnOldProcessWaits() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let a = try bed.proxy(config(port: port, socket: socket, app: app), waitFor: port)
        let slowOne = try TestBed.slowRequest(port, ms: 2500)
        #expect(TestBed.waitUntil { field(socket, "web,FRONTEND,", 4) == 1 })
        let (b, logB) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "b.cfg", arguments: ["-sf", String(a.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(logB).contains("serving") })
        let (c, logC) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "c.cfg", arguments: ["-sf", String(b.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(logC).contains("serving") })
        // B has stopped serving and waits for A's counts; D names every old pid.
        let started = Date()
        let (d, logD) = try bed.startProxy(config(port: port, socket: socket, app: app), name: "d.cfg",
                                           arguments: ["-sf", String(a.processIdentifier), String(b.processIdentifier), String(c.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(logD).contains("serving") }, "\(bed.read(logD))")
        #expect(Date().timeIntervalSince(started) < 2.5, "the reload waited on a process that takes no successor")
        _ = try TestBed.curl(["http://127.0.0.1:\(port)/"])
        slowOne.waitUntilExit()
        #expect(TestBed.waitUntil(timeout: 15) { !a.isRunning && !b.isRunning && !c.isRunning })
        #expect(TestBed.waitUntil { field(socket, "web,FRONTEND,", 48) == 2 }, "req_tot \(field(socket, "web,FRONTEND,", 48))")
        kill(d.processIdentifier, SIGTERM)
    }
}
