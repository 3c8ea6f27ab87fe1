import Foundation
import Testing

/// `-e FILE` / `--env-file FILE` (ours): the seed's switch in a file read at every start, so a
/// reload flips it even where the environment is frozen (a service manager's).
@Suite(.serialized) struct EnvFileTests {
    @Test func checkModeShowsWhatTheFileDecides() throws {
        let bed = try TestBed()
        let env = bed.directory + "/env"
        try """
        # the seed's switch
        export HAPROXY_MAINT=1

        GREETING="hello world"   
        OTHER='a b'
        """.write(toFile: env, atomically: true, encoding: .utf8)
        let r = try Harness.run(Harness.proxyBinary, ["-c", "-V", "-f", Harness.root + "/etc/maintenance.cfg", "-e", env],
                                removing: ["HAPROXY_MAINT"], directory: Harness.root)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\(env): HAPROXY_MAINT=1") && r.stdout.contains("\(env): GREETING=hello world")
                && r.stdout.contains("\(env): OTHER=a b"), "\(r.stdout)")
        #expect(r.stdout.contains("use_backend maintenance: always (env_int(HAPROXY_MAINT)=1 > 0)"), "\(r.stdout)")
        // The file wins over the inherited environment.
        let over = try Harness.run(Harness.proxyBinary, ["-c", "-V", "-f", Harness.root + "/etc/maintenance.cfg", "--env-file", env],
                                   environment: ["HAPROXY_MAINT": "0"], directory: Harness.root)
        #expect(over.stdout.contains("always (env_int(HAPROXY_MAINT)=1 > 0)"), "\(over.stdout)")
    }

    @Test func malformedLinesStopEverything() throws {
        let bed = try TestBed()
        for (text, message) in [("A=1\nnot an assignment\n", ":2: error: 'not an assignment' is not NAME=value"),
                                ("1A=x\n", ":1: error: '1A' is not a variable name"),
                                ("A=\"open\n", ":1: error: the value of A opens a double quote it does not close")] {
            try text.write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
            let r = try Harness.run(Harness.proxyBinary, ["-c", "-f", Harness.root + "/etc/proxy.cfg", "-e", bed.directory + "/env"],
                                    directory: Harness.root)
            #expect(r.status == 1 && r.stderr.contains(bed.directory + "/env" + message), "\(r.stderr)")
        }
        let missing = try Harness.run(Harness.proxyBinary, ["-c", "-f", Harness.root + "/etc/proxy.cfg", "-e", bed.directory + "/none"],
                                      directory: Harness.root)
        #expect(missing.status == 1 && missing.stderr.contains("cannot read the environment file"), "\(missing.stderr)")
    }

    @Test func aReloadFlipsTheSwitchFromTheFile() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/p.sock"
        let env = bed.directory + "/env"
        let config = """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            acl maintenance_mode env_int(HAPROXY_MAINT) gt 0
            use_backend maintenance if maintenance_mode
            default_backend app
        backend maintenance
            http-request return status 503 content-type text/plain string "maintenance"
        backend app
            server s 127.0.0.1:\(app)

        """
        try "HAPROXY_MAINT=0\n".write(toFile: env, atomically: true, encoding: .utf8)
        let first = try bed.proxy(config, waitFor: port, environment: ["HAPROXY_MAINT": "1"], arguments: ["-e", env])
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200, "the file's 0 wins over the inherited 1")
        #expect(cli(socket, "show env HAPROXY_MAINT") == "HAPROXY_MAINT=0\n\n")
        try "HAPROXY_MAINT=1\n".write(toFile: env, atomically: true, encoding: .utf8)
        let (second, log) = try bed.startProxy(config, name: "same.cfg", arguments: ["-e", env, "-sf", String(first.processIdentifier)])
        #expect(TestBed.waitUntil { bed.read(log).contains("serving") }, "\(bed.read(log))")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503)
        // A broken file: the reload fails and changes nothing.
        try "HAPROXY_MAINT=0\noops\n".write(toFile: env, atomically: true, encoding: .utf8)
        let (failed, logFailed) = try bed.startProxy(config, name: "bad.cfg", arguments: ["-e", env, "-sf", String(second.processIdentifier)])
        failed.waitUntilExit()
        #expect(failed.terminationStatus == 1 && bed.read(logFailed).contains("env:2: error:"), "\(bed.read(logFailed))")
        #expect(second.isRunning)
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503)
        kill(second.processIdentifier, SIGTERM)
    }
}
