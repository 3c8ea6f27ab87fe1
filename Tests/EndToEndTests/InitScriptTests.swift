import Foundation
import Testing

/// `contrib/init.d/proxy` under dash and bash: start, status, a good reload, a bad reload
/// that leaves the old process serving, check, stop, with the LSB exit codes.
@Suite(.serialized) struct InitScriptTests {
    static let script = Harness.root + "/contrib/init.d/proxy"

    @Test(arguments: ["/bin/sh", "/bin/bash"])
    func lifecycle(shell: String) throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let config = bed.directory + "/proxy.cfg", pidfile = bed.directory + "/proxy.pid"
        func write(_ body: String) throws {
            try """
            \(TestBed.defaults("http"))
            frontend web
                bind 127.0.0.1:\(port)
            \(body)
                default_backend app
            backend app
                server s 127.0.0.1:\(app)

            """.write(toFile: config, atomically: true, encoding: .utf8)
        }
        let environment = ["PROXY": Harness.proxyBinary, "CONFIG": config, "PIDFILE": pidfile, "ENVFILE": bed.directory + "/env",
                           "DEFAULTS": bed.directory + "/no-defaults", "STOP_TIMEOUT": "5"]
        func run(_ action: String) throws -> Harness.Output {
            try Harness.run(shell, [Self.script, action], environment: environment)
        }
        func pid() -> Int32 { Int32((try? String(contentsOfFile: pidfile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0 }
        try write("")
        #expect(try run("status").status == 3)
        let start = try run("start")
        #expect(start.status == 0, "\(start.stdout) \(start.stderr)")
        defer { if pid() > 0 { kill(pid(), SIGKILL) } }
        #expect(try run("status").status == 0)
        #expect(try run("start").status == 0, "start when running is fine")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        // A good reload: a new pid, serving.
        let first = pid()
        try "HAPROXY_MAINT=1\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        try write("    http-request return status 503 if { env_int(HAPROXY_MAINT) gt 0 }")
        let reload = try run("reload")
        #expect(reload.status == 0, "\(reload.stdout) \(reload.stderr)")
        #expect(pid() != first && pid() > 0)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503, "the env file was read at the reload")
        // A bad reload: exit 1, the old process serves on, the pidfile still names it.
        let serving = pid()
        try write("    frobnicate yes")
        let bad = try run("reload")
        #expect(bad.status == 1 && bad.stderr.contains("still serving"), "\(bad.stdout) \(bad.stderr)")
        #expect(pid() == serving && kill(serving, 0) == 0)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503)
        #expect(try run("check").status == 1)
        try write("")
        #expect(try run("check").status == 0)
        #expect(try run("force-reload").status == 0)
        // Stop: soft, then gone; the status says so.
        let stop = try run("stop")
        #expect(stop.status == 0, "\(stop.stdout) \(stop.stderr)")
        #expect(try run("status").status == 3)
        #expect(try run("reload").status == 7)
        #expect(try run("stop").status == 0, "stop when stopped is fine")
        #expect(try run("bogus").status == 2)
    }
}
