import Foundation
import Testing

/// `proxy` as PID 1 in a new PID namespace (what a container runs): SIGTERM drains the
/// requests in flight, then exits 0; orphans handed to it are reaped; SIGINT stops at once.
@Suite(.serialized) struct ContainerInitTests {
    static let available = Harness.isRoot && Harness.which("unshare") != nil && Harness.which("nsenter") != nil

    /// Starts `proxy -f CONFIG` as PID 1 under unshare; returns unshare and proxy's host pid.
    func startAsInit(_ bed: TestBed, _ config: String, port: Int) throws -> (Process, Int32) {
        let path = bed.directory + "/init.cfg"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let unshare = try bed.start(Harness.which("unshare")!, ["--pid", "--fork", "--mount-proc", Harness.proxyBinary, "-f", path],
                                    log: bed.directory + "/init.log")
        #expect(TestBed.waitForPort(port), "\(bed.read(bed.directory + "/init.log"))")
        var child: Int32 = 0
        _ = TestBed.waitUntil {
            let out = (try? Harness.run("/usr/bin/pgrep", ["-P", String(unshare.processIdentifier)]))?.stdout ?? ""
            child = Int32(out.split(separator: "\n").first ?? "") ?? 0
            return child > 0
        }
        return (unshare, child)
    }

    func config(_ port: Int, _ app: Int) -> String {
        """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """
    }

    @Test(.enabled(if: available, "needs root, unshare and nsenter"))
    func sigtermDrainsThenExitsZero() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (unshare, proxy) = try startAsInit(bed, config(port, app), port: port)
        #expect(proxy > 0)
        // An orphan handed to PID 1: a child of a process entered into the namespace.
        _ = try Harness.run(Harness.which("nsenter")!, ["-t", String(proxy), "-p", "-m", "/bin/sh", "-c", "sleep 0.2 & exit 0"])
        let zombies = {
            ((try? Harness.run("/bin/ps", ["-o", "stat=", "--ppid", String(proxy)]))?.stdout ?? "").split(separator: "\n").filter { $0.hasPrefix("Z") }.count
        }
        #expect(TestBed.waitUntil(timeout: 3) { zombies() == 0 }, "an orphan was left a zombie")
        // A request in flight when the runtime says stop: it completes, then PID 1 exits 0.
        let slow = try TestBed.slowRequest(port, ms: 1500)
        #expect(TestBed.waitUntil { kill(proxy, 0) == 0 })
        usleep(300_000)
        kill(proxy, SIGTERM)
        slow.waitUntilExit()
        #expect(slow.terminationStatus == 0, "the request in flight failed")
        #expect(TestBed.waitUntil(timeout: 10) { !unshare.isRunning })
        #expect(unshare.terminationStatus == 0, "\(bed.read(bed.directory + "/init.log"))")
    }

    @Test(.enabled(if: available, "needs root, unshare and nsenter"))
    func sigintStopsAtOnce() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let (unshare, proxy) = try startAsInit(bed, config(port, app), port: port)
        let slow = try TestBed.slowRequest(port, ms: 5000)
        usleep(300_000)
        kill(proxy, SIGINT)
        #expect(TestBed.waitUntil(timeout: 3) { !unshare.isRunning })
        slow.waitUntilExit()
    }

    /// contrib/docker/entrypoint.sh: it execs proxy, so proxy is PID 1 and drains on SIGTERM;
    /// `-c` checks and exits; the env file is read when present.
    @Test(.enabled(if: available, "needs root, unshare and nsenter"))
    func theContainerEntrypoint() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let path = bed.directory + "/proxy.cfg"
        try """
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            http-request return status 503 if { env_int(MAINT) gt 0 }
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """.write(toFile: path, atomically: true, encoding: .utf8)
        try "MAINT=1\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        let entrypoint = Harness.root + "/contrib/docker/entrypoint.sh"
        let environment = ["PROXY": Harness.proxyBinary, "PROXY_CONFIG": path, "PROXY_ENVFILE": bed.directory + "/env",
                           "PROXY_MASTER_SOCKET": bed.directory + "/master.sock"]
        let check = try Harness.run(entrypoint, ["-c"], environment: environment)
        #expect(check.status == 0 && check.stdout.contains("Configuration file is valid"), "\(check.stdout) \(check.stderr)")
        let unshare = try bed.start(Harness.which("unshare")!, ["--pid", "--fork", "--mount-proc", entrypoint],
                                    log: bed.directory + "/init.log", environment: environment)
        #expect(TestBed.waitForPort(port), "\(bed.read(bed.directory + "/init.log"))")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 503, "the env file was read")
        var proxy: Int32 = 0
        _ = TestBed.waitUntil {
            let out = (try? Harness.run("/usr/bin/pgrep", ["-P", String(unshare.processIdentifier)]))?.stdout ?? ""
            proxy = Int32(out.split(separator: "\n").first ?? "") ?? 0
            return proxy > 0
        }
        let comm = (try? String(contentsOfFile: "/proc/\(proxy)/comm", encoding: .utf8)) ?? ""
        #expect(comm.hasPrefix("proxy"), "PID 1 is \(comm)")
        // The seed's switch in a container: edit the env file, SIGUSR2 (docker kill -s USR2).
        try "MAINT=0\n".write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        kill(proxy, SIGUSR2)
        #expect(TestBed.waitUntil { (try? TestBed.curl(["http://127.0.0.1:\(port)/"]))?.0 == 200 }, "SIGUSR2 to PID 1 reads the env file afresh")
        kill(proxy, SIGTERM)
        #expect(TestBed.waitUntil(timeout: 10) { !unshare.isRunning })
        #expect(unshare.terminationStatus == 0, "\(bed.read(bed.directory + "/init.log"))")
    }
}

/// As PID 1 the master is implied (no -W needed): SIGUSR2 starts a new worker, and with no
/// global `log` line, `log global` writes to stdout, where a container runtime collects it.
@Suite(.serialized) struct ContainerMasterTests {
    @Test(.enabled(if: ContainerInitTests.available, "needs root, unshare and nsenter"))
    func theMasterIsImpliedAndLogsGoToStdout() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let config = """
        \(TestBed.defaults("http"))
            log global
            option httplog
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """
        let (unshare, proxy) = try ContainerInitTests().startAsInit(bed, config, port: port)
        defer { kill(proxy, SIGINT) }
        func workers() -> [Int32] {
            ((try? Harness.run("/usr/bin/pgrep", ["-P", String(proxy)]))?.stdout ?? "").split(separator: "\n").compactMap { Int32($0) }
        }
        #expect(TestBed.waitUntil { workers().count == 1 }, "PID 1 runs as a master with one worker")
        let first = workers()
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/logged-path"]).0 == 200)
        #expect(TestBed.waitUntil { bed.read(bed.directory + "/init.log").contains("GET /logged-path HTTP/1.1") },
                "\(bed.read(bed.directory + "/init.log"))")
        kill(proxy, SIGUSR2)
        #expect(TestBed.waitUntil { let w = workers(); return w.count == 1 && w != first }, "SIGUSR2 to PID 1 reloads")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        kill(proxy, SIGTERM)
        #expect(TestBed.waitUntil(timeout: 10) { !unshare.isRunning })
        #expect(unshare.terminationStatus == 0)
    }
}

/// contrib/kubernetes/proxy.yaml: its ConfigMap's config and env file load (`-dr`: the
/// cluster's service name does not resolve here), and the sidecar's commands exist.
@Suite struct KubernetesExampleTests {
    /// The block under `  NAME: |` in the manifest, de-indented.
    static func block(_ text: String, _ name: String) -> String {
        var out: [Substring] = []
        var inside = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "  \(name): |" { inside = true; continue }
            if inside {
                if line.hasPrefix("    ") || line.isEmpty { out.append(line.dropFirst(min(4, line.count))) } else { break }
            }
        }
        return out.joined(separator: "\n") + "\n"
    }

    @Test func theConfigMapLoads() throws {
        let bed = try TestBed()
        let manifest = try String(contentsOfFile: Harness.root + "/contrib/kubernetes/proxy.yaml", encoding: .utf8)
        try Self.block(manifest, "proxy.cfg").write(toFile: bed.directory + "/proxy.cfg", atomically: true, encoding: .utf8)
        try Self.block(manifest, "env").write(toFile: bed.directory + "/env", atomically: true, encoding: .utf8)
        let r = try Harness.run(Harness.proxyBinary, ["-c", "-dr", "-f", bed.directory + "/proxy.cfg", "-e", bed.directory + "/env"])
        #expect(r.status == 0 && r.stdout.contains("Configuration file is valid"), "\(r.stdout) \(r.stderr)")
        #expect(manifest.contains("proxy cli -s /run/proxy/master.sock reload") && manifest.contains("monitor-uri /healthz"))
    }
}
