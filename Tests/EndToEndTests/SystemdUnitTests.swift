import Foundation
import Testing

/// contrib/systemd/proxy.service: `systemd-analyze verify` accepts it with the binary
/// installed at its ExecStart path in a scratch root, and its ExecStart line serves under
/// the unit's restrictions: the capability bounding set it keeps, and a read-only `/` except
/// `/run/proxy`, with a configuration that uses `user`, `group` and `chroot`.
@Suite(.serialized) struct SystemdUnitTests {
    static let unit = Harness.root + "/contrib/systemd/proxy.service"
    static let analyze = Harness.which("systemd-analyze")

    @Test(.enabled(if: analyze != nil, "needs systemd-analyze"))
    func verifyPasses() throws {
        let bed = try TestBed()
        let root = bed.directory + "/root"
        let fm = FileManager.default
        for d in ["usr/sbin", "bin", "etc/systemd/system", "lib/systemd"] { try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        try fm.copyItem(atPath: Harness.proxyBinary, toPath: root + "/usr/sbin/proxy")
        try fm.copyItem(atPath: "/bin/kill", toPath: root + "/bin/kill")
        try fm.copyItem(atPath: "/lib/systemd/system", toPath: root + "/lib/systemd/system")
        try fm.copyItem(atPath: Self.unit, toPath: root + "/etc/systemd/system/proxy.service")
        try fm.copyItem(atPath: Harness.root + "/contrib/systemd/proxy.socket", toPath: root + "/etc/systemd/system/proxy.socket")
        let r = try Harness.run(Self.analyze!, ["verify", "--root=\(root)", "/etc/systemd/system/proxy.service", "/etc/systemd/system/proxy.socket"])
        #expect(r.status == 0 && !r.stderr.contains("proxy.service") && !r.stderr.contains("proxy.socket"), "\(r.stdout) \(r.stderr)")
    }

    @Test(.enabled(if: Harness.isRoot && Harness.which("unshare") != nil && Harness.which("setpriv") != nil, "needs root, unshare, setpriv"))
    func execStartUnderTheUnitsRestrictions() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        // The unit's capability set, read from the unit itself.
        let unitText = try String(contentsOfFile: Self.unit, encoding: .utf8)
        let caps = unitText.split(separator: "\n").first { $0.hasPrefix("CapabilityBoundingSet=") }!
            .dropFirst("CapabilityBoundingSet=".count).split(separator: " ").map { "+" + $0.dropFirst(4).lowercased() }
        #expect(caps.count == 5, "\(caps)")
        let run = bed.directory + "/run", jail = bed.directory + "/jail"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: jail, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "/run/proxy", withIntermediateDirectories: true)
        let cfg = bed.directory + "/proxy.cfg"
        try """
        global
            user nobody
            group nogroup
            chroot \(jail)
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server s 127.0.0.1:\(app)

        """.write(toFile: cfg, atomically: true, encoding: .utf8)
        let script = """
        set -e
        mount --make-rprivate /
        mount --bind \(run) /run/proxy
        mount -o remount,bind,ro /
        exec setpriv --bounding-set=-all,\(caps.joined(separator: ",")) --inh-caps=-all \
            \(Harness.proxyBinary) -Ws -f \(cfg) -S /run/proxy/master.sock
        """
        let p = try bed.start(Harness.which("unshare")!, ["-m", "/bin/sh", "-c", script], log: bed.directory + "/unit.log",
                              environment: ["NOTIFY_SOCKET": ""])
        defer { kill(p.processIdentifier, SIGTERM) }
        #expect(TestBed.waitForPort(port), "\(bed.read(bed.directory + "/unit.log"))")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        // The master CLI lives in /run/proxy (here the bind-mounted directory).
        let proc = cli(run + "/master.sock", "show proc") ?? ""
        #expect(proc.contains("master") && proc.contains("# workers"), "\(proc) \(bed.read(bed.directory + "/unit.log"))")
        #expect(cli(run + "/master.sock", "reload")?.hasPrefix("Success=1") == true, "\(bed.read(bed.directory + "/unit.log"))")
        #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200)
        kill(p.processIdentifier, SIGTERM)
        #expect(TestBed.waitUntil { !p.isRunning })
    }
}
