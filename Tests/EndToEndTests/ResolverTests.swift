import Foundation
import Glibc
import Testing

/// Run-time DNS against a real name server (dnsmasq, its records in a `--hostsdir` file it
/// re-reads by inotify when the test replaces it): a `server-template` follows a name whose addresses change under load,
/// `init-addr none` waits in `MAINT (resolution)`, and a reload keeps what DNS taught.
@Suite(.serialized) struct ResolverTests {
    static let dnsmasq = Harness.which("dnsmasq") ?? (FileManager.default.fileExists(atPath: "/usr/sbin/dnsmasq") ? "/usr/sbin/dnsmasq" : nil)

    /// A dnsmasq answering from the directory of `hosts` only, on a free port; returns the
    /// port and its process.
    static func nameserver(_ bed: TestBed, hosts: String, extra: [String] = []) throws -> (Int, Process) {
        let port = TestBed.freePort()
        let log = bed.directory + "/dnsmasq-\(port).log"
        // dnsmasq closes every descriptor it inherits: it runs under a helper that keeps the one
        // Foundation's Process watches for the exit.
        let python = Harness.which("python3") ?? "/usr/bin/python3"
        let p = try bed.start(python, [Harness.root + "/Tests/EndToEndTests/Helpers/under_parent.py", dnsmasq!, "-k", "--log-facility=-", "-u", "root", "--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces",
                                         "--no-resolv", "--no-hosts", "--hostsdir=\((hosts as NSString).deletingLastPathComponent)", "--pid-file=", "--local-ttl=0"] + extra, log: log)
        #expect(TestBed.waitUntil { bed.read(log).contains("started") }, "dnsmasq did not start: \(bed.read(log))")
        return (port, p)
    }

    /// Replaces the records (a rename, which dnsmasq's inotify watch sees).
    static func setRecords(_ hosts: String, _ name: String, _ addresses: [String]) throws {
        try addresses.map { "\($0) \(name)\n" }.joined().write(toFile: hosts, atomically: true, encoding: .utf8)
    }

    /// The addresses of `backend`'s servers in `show stat`, by server, for those that have one.
    static func addresses(_ socket: String, _ backend: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in (cli(socket, "show stat") ?? "").split(separator: "\n") where line.hasPrefix("\(backend),") {
            let f = line.split(separator: ",", omittingEmptySubsequences: false)
            guard f.count > 73, f[1] != "BACKEND", !f[73].isEmpty, f[17] != "MAINT (resolution)" else { continue }
            out[String(f[1])] = String(f[73])
        }
        return out
    }

    func config(front: Int, dns: Int, backendPort: Int, socket: String, extra: String = "", transport: String = "") -> String {
        """
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
            timeout http-keep-alive 10s
        resolvers dns
            nameserver local \(transport)127.0.0.1:\(dns)
            hold valid 200ms
            timeout resolve 100ms
            timeout retry 200ms
            accepted_payload_size 8192
        frontend web
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            server-template srv 5 app.test:\(backendPort) resolvers dns init-addr none resolve-prefer ipv4
        \(extra)
        """
    }

    /// `show resolvers`: every section and name server with HAProxy 2.6's counters and layout
    /// (compared side by side on this file). A second name server that is down (its port
    /// closed) neither holds the answer back nor hides the other family: the name resolves
    /// by its A record after the first server refuses AAAA, as HAProxy resolves it.
    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func showResolversCounts() throws {
        let bed = try TestBed()
        let hosts = bed.directory + "/hosts.d/app"
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        try Self.setRecords(hosts, "app.test", ["127.0.0.5"])
        let (dns, _) = try Self.nameserver(bed, hosts: hosts)
        let dead = TestBed.freePort(), front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        resolvers dns
            nameserver local 127.0.0.1:\(dns)
            nameserver dead 127.0.0.1:\(dead)
            hold valid 1s
            timeout retry 200ms
        resolvers other
            nameserver x 127.0.0.1:\(dns)
        frontend f
            bind 127.0.0.1:\(front)
            default_backend app
        backend app
            server a app.test:80 resolvers dns init-addr none
            server b nx.test:80 resolvers dns init-addr none

        """, waitFor: front)
        #expect(TestBed.waitUntil(timeout: 5) { Self.addresses(socket, "app")["a"] == "127.0.0.5:80" }, "\(Self.addresses(socket, "app"))")
        let text = cli(socket, "show resolvers") ?? ""
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "Resolvers section dns" && lines[1] == " nameserver local:" && lines.contains("Resolvers section other"), "\(text)")
        #expect(lines.filter { $0.hasPrefix("  ") }.map { $0.split(separator: ":")[0].trimmingCharacters(in: .whitespaces) }.prefix(15)
                == ["sent", "snd_error", "valid", "update", "cname", "cname_error", "any_err", "nx", "timeout", "refused", "other", "invalid", "too_big", "truncated", "outdated"], "\(text)")
        #expect(lines.contains("  cname_error: 0") && lines.contains("  outdated:    0") && text.hasSuffix("\n\n"), "\(text)")
        func counter(_ server: String, _ name: String) -> Int {
            let block = text.components(separatedBy: " nameserver \(server):\n").dropFirst().first ?? ""
            let line = block.split(separator: "\n").first { $0.hasPrefix("  \(name):") } ?? ""
            return Int(line.split(separator: " ").last ?? "") ?? -1
        }
        #expect(counter("local", "valid") >= 1 && counter("local", "update") == 1 && counter("local", "refused") >= 1, "\(text)")
        #expect(counter("dead", "valid") == 0 && counter("dead", "timeout") + counter("dead", "snd_error") >= 1, "\(text)")
        #expect(counter("x", "sent") == 0, "\(text)")
        #expect(cli(socket, "show resolvers other")?.hasPrefix("Resolvers section other\n nameserver x:\n  sent:        0\n") == true)
        #expect(cli(socket, "show resolvers nope") == "Can't find that resolvers section\n\n")
    }

    /// `nameserver NAME tcp@ADDRESS` (DNS over TCP, as HAProxy 2.6 has it): the queries go
    /// on one TCP connection to dnsmasq, each after its length; when the server ends the
    /// connection the next query opens another, and the template follows the records.
    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func tcpNameserverFollowsTheRecords() throws {
        let bed = try TestBed()
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        let hosts = bed.directory + "/hosts.d/app"
        try "127.0.0.2 app.test\n127.0.0.3 app.test\n".write(toFile: hosts, atomically: true, encoding: .utf8)
        let (dnsPort, _) = try Self.nameserver(bed, hosts: hosts)
        let backendPort = TestBed.freePort(), front = TestBed.freePort()
        for i in 2...4 { try bed.backend(name: "b\(i)", port: backendPort, host: "127.0.0.\(i)") }
        let socket = bed.directory + "/api.sock"
        let proxy = try bed.proxy(config(front: front, dns: dnsPort, backendPort: backendPort, socket: socket, transport: "tcp@"), waitFor: front)
        #expect(TestBed.waitUntil { Set(Self.addresses(socket, "app").values) == ["127.0.0.2:\(backendPort)", "127.0.0.3:\(backendPort)"] },
                "\(Self.addresses(socket, "app"))\n\(bed.log())")
        // Over TCP: the proxy holds a connection to the name server's port.
        let tcp = try Harness.run("/usr/bin/ss", ["-tnpH", "dst", "127.0.0.1:\(dnsPort)"])
        #expect(tcp.stdout.contains("pid=\(proxy.processIdentifier),"), "\(tcp.stdout)")
        // dnsmasq answers a TCP connection from a child forked with the records of that
        // moment (HAProxy stays on the old records too); ending that child closes the
        // connection, and the next query opens another, to fresh records.
        try Self.setRecords(hosts, "app.test", ["127.0.0.4"])
        let children = try Harness.run("/usr/bin/ss", ["-tnpH", "src", "127.0.0.1:\(dnsPort)"]).stdout
        for pid in children.split(separator: "pid=").dropFirst().compactMap({ Int32($0.prefix { $0.isNumber }) }) { kill(pid, SIGKILL) }
        #expect(TestBed.waitUntil { Self.addresses(socket, "app").values.sorted() == ["127.0.0.4:\(backendPort)"] }, "\(Self.addresses(socket, "app"))")
        let text = cli(socket, "show resolvers dns") ?? ""
        #expect(text.contains(" nameserver local:") && !text.contains("  valid:       0\n"), "\(text)")
    }

    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func templateFollowsTheRecordsUnderLoad() throws {
        let bed = try TestBed()
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        let hosts = bed.directory + "/hosts.d/app"
        try "127.0.0.2 app.test\n127.0.0.3 app.test\n".write(toFile: hosts, atomically: true, encoding: .utf8)
        let (dnsPort, _) = try Self.nameserver(bed, hosts: hosts)
        let backendPort = TestBed.freePort()
        for i in 2...5 { try bed.backend(name: "b\(i)", port: backendPort, host: "127.0.0.\(i)") }
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        try bed.proxy(config(front: front, dns: dnsPort, backendPort: backendPort, socket: socket), waitFor: front)

        #expect(TestBed.waitUntil { Set(Self.addresses(socket, "app").values) == ["127.0.0.2:\(backendPort)", "127.0.0.3:\(backendPort)"] },
                "\(Self.addresses(socket, "app"))\n\(bed.log())")
        let statuses = (cli(socket, "show stat") ?? "").split(separator: "\n").filter { $0.hasPrefix("app,srv") }
        #expect(statuses.filter { $0.contains(",MAINT (resolution),") }.count == 3, "\(statuses)")
        let load = try SteadyLoad(port: front, directory: bed.directory)
        #expect(TestBed.waitUntil { (try? TestBed.curl(["http://127.0.0.1:\(front)/"]).0) == 200 })

        try Self.setRecords(hosts, "app.test", (2...5).map { "127.0.0.\($0)" })
        #expect(TestBed.waitUntil { Self.addresses(socket, "app").count == 4 }, "\(Self.addresses(socket, "app"))")
        // Each slot holds its own address: no two share one.
        #expect(Set(Self.addresses(socket, "app").values).count == 4)
        var seen: Set<String> = []
        #expect(TestBed.waitUntil {
            if let r = try? TestBed.curl(["http://127.0.0.1:\(front)/"]), r.0 == 200 { seen.insert(String(r.1.prefix(2))) }
            return seen.count == 4
        }, "backends answered: \(seen)")

        try Self.setRecords(hosts, "app.test", ["127.0.0.4"])
        #expect(TestBed.waitUntil { Self.addresses(socket, "app").values.sorted() == ["127.0.0.4:\(backendPort)"] }, "\(Self.addresses(socket, "app"))")
        #expect(TestBed.waitUntil { bed.log().contains("is going DOWN for maintenance (No IP for server ).") }, "\(bed.log())")
        let r = load.finish()
        #expect(r.failed == 0 && r.ok > 0, "ok \(r.ok), failed \(r.failed): \(r.errors)")
        let after = try TestBed.curl(["http://127.0.0.1:\(front)/"])
        #expect(after.0 == 200 && after.1.hasPrefix("b4"), "\(after)")
    }

    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func initAddrNoneWaitsForTheNameAndAReloadKeepsWhatDNSTaught() throws {
        let bed = try TestBed()
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        let hosts = bed.directory + "/hosts.d/app"
        try "".write(toFile: hosts, atomically: true, encoding: .utf8)
        let (dnsPort, dns) = try Self.nameserver(bed, hosts: hosts)
        let backendPort = TestBed.freePort()
        try bed.backend(name: "b6", port: backendPort, host: "127.0.0.6")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let pidFile = bed.directory + "/proxy.pid"
        let text = config(front: front, dns: dnsPort, backendPort: backendPort, socket: socket)
            .replacingOccurrences(of: "server-template srv 5 app.test", with: "server one app.test")
        try bed.proxy(text, waitFor: front, arguments: ["-p", pidFile])
        // No record yet: the server waits, and the frontend answers 503.
        #expect(TestBed.waitUntil { (cli(socket, "show stat") ?? "").contains("app,one,") })
        #expect((cli(socket, "show stat") ?? "").contains(",MAINT (resolution),"))
        #expect((cli(socket, "show servers state app") ?? "").contains(" one - 0 32 "), "\(cli(socket, "show servers state app") ?? "")")
        #expect(try TestBed.curl(["http://127.0.0.1:\(front)/"]).0 == 503)

        try Self.setRecords(hosts, "app.test", ["127.0.0.6"])
        #expect(TestBed.waitUntil { (try? TestBed.curl(["http://127.0.0.1:\(front)/"]))?.1.hasPrefix("b6") == true }, "\(bed.log())")
        #expect(bed.log().contains("app/one changed its IP from (none) to 127.0.0.6 by dns/local."), "\(bed.log())")
        #expect(bed.log().contains("Server app/one ('app.test') is UP/READY (resolves again)."))

        // The name server goes away; a reload still starts with the address DNS gave, where
        // the file alone ('init-addr none') would start without one.
        kill(dns.processIdentifier, SIGTERM)
        let old = bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
        let reload = try Harness.proxy(["-f", bed.directory + "/proxy.cfg", "-D", "-p", pidFile, "-sf", old])
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(TestBed.waitUntil { bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines) != old })
        let served = try TestBed.curl(["http://127.0.0.1:\(front)/"])
        #expect(served.0 == 200 && served.1.hasPrefix("b6"), "\(served)")
        #expect((cli(socket, "show stat") ?? "").contains("app,one,") && !(cli(socket, "show stat") ?? "").contains("MAINT (resolution)"))
        if let pid = Int32(bed.read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)) { kill(pid, SIGTERM) }
    }

    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func srvRecordsSetAddressesAndPorts() throws {
        // `_service._proto.name`: each slot takes one SRV record's target (its address from the
        // additional section) and port; a slot with no record left waits.
        let bed = try TestBed()
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        let hosts = bed.directory + "/hosts.d/targets"
        try "127.0.0.8 b8.test\n127.0.0.9 b9.test\n".write(toFile: hosts, atomically: true, encoding: .utf8)
        let p8 = TestBed.freePort(), p9 = TestBed.freePort()
        let (dnsPort, _) = try Self.nameserver(bed, hosts: hosts, extra: ["--srv-host=_web._tcp.app.test,b8.test,\(p8),0,10",
                                                                          "--srv-host=_web._tcp.app.test,b9.test,\(p9),0,10"])
        try bed.backend(name: "b8", port: p8, host: "127.0.0.8")
        try bed.backend(name: "b9", port: p9, host: "127.0.0.9")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let text = config(front: front, dns: dnsPort, backendPort: 1, socket: socket)
            .replacingOccurrences(of: "server-template srv 5 app.test:1", with: "server-template srv 3 _web._tcp.app.test")
        try bed.proxy(text, waitFor: front)
        #expect(TestBed.waitUntil { Set(Self.addresses(socket, "app").values) == ["127.0.0.8:\(p8)", "127.0.0.9:\(p9)"] },
                "\(Self.addresses(socket, "app"))\n\(bed.log())")
        #expect((cli(socket, "show stat") ?? "").contains("app,srv3,") && (cli(socket, "show stat") ?? "").contains(",MAINT (resolution),"))
        var seen: Set<String> = []
        #expect(TestBed.waitUntil {
            if let r = try? TestBed.curl(["http://127.0.0.1:\(front)/"]), r.0 == 200 { seen.insert(String(r.1.prefix(2))) }
            return seen == ["b8", "b9"]
        }, "\(seen)")
        #expect(bed.log().contains("changed its IP from (none) to 127.0.0.8 by DNS additional record."), "\(bed.log())")
    }

    @Test(.enabled(if: dnsmasq != nil, "needs dnsmasq"))
    func srvTargetsWithoutAdditionalRecordsAreAskedFor() throws {
        // dnsmasq answers SRV without an additional record for a target it knows by
        // `--address`: each target is then asked for by name, and its slot takes its address.
        let bed = try TestBed()
        try FileManager.default.createDirectory(atPath: bed.directory + "/hosts.d", withIntermediateDirectories: true)
        let hosts = bed.directory + "/hosts.d/none"
        try "".write(toFile: hosts, atomically: true, encoding: .utf8)
        let p6 = TestBed.freePort(), p7 = TestBed.freePort()
        let (dnsPort, _) = try Self.nameserver(bed, hosts: hosts, extra: ["--srv-host=_web._tcp.app.test,b6.test,\(p6),0,10",
                                                                          "--srv-host=_web._tcp.app.test,b7.test,\(p7),0,10",
                                                                          "--address=/b6.test/127.0.0.6", "--address=/b7.test/127.0.0.7"])
        try bed.backend(name: "b6", port: p6, host: "127.0.0.6")
        try bed.backend(name: "b7", port: p7, host: "127.0.0.7")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let text = config(front: front, dns: dnsPort, backendPort: 1, socket: socket)
            .replacingOccurrences(of: "server-template srv 5 app.test:1", with: "server-template srv 3 _web._tcp.app.test")
        try bed.proxy(text, waitFor: front)
        #expect(TestBed.waitUntil { Set(Self.addresses(socket, "app").values) == ["127.0.0.6:\(p6)", "127.0.0.7:\(p7)"] },
                "\(Self.addresses(socket, "app"))\n\(bed.log())")
        var seen: Set<String> = []
        #expect(TestBed.waitUntil {
            if let r = try? TestBed.curl(["http://127.0.0.1:\(front)/"]), r.0 == 200 { seen.insert(String(r.1.prefix(2))) }
            return seen == ["b6", "b7"]
        }, "\(seen)")
    }

    @Test func bogusAnswersChangeNothing() throws {
        // Before each real answer, the name server sends answers a resolver must drop (another
        // ID, another question, no QR bit, truncated, a compression loop, a record longer than
        // the datagram, cut short): the server only ever takes the real one.
        let bed = try TestBed()
        let dnsPort = TestBed.freePort()
        try bed.start(Harness.which("python3") ?? "/usr/bin/python3",
                      [Harness.root + "/Tests/EndToEndTests/Helpers/hostile_dns.py", String(dnsPort), "app.test", "127.0.0.7"])
        let backendPort = TestBed.freePort()
        try bed.backend(name: "b7", port: backendPort, host: "127.0.0.7")
        let front = TestBed.freePort()
        let socket = bed.directory + "/api.sock"
        let text = config(front: front, dns: dnsPort, backendPort: backendPort, socket: socket)
            .replacingOccurrences(of: "server-template srv 5 app.test", with: "server one app.test")
        try bed.proxy(text, waitFor: front)
        #expect(TestBed.waitUntil { Self.addresses(socket, "app")["one"] == "127.0.0.7:\(backendPort)" }, "\(bed.log())")
        // A few more rounds of the same (hold valid is 200 ms): never another address.
        for _ in 0..<5 {
            Thread.sleep(forTimeInterval: 0.2)
            #expect(Self.addresses(socket, "app")["one"] == "127.0.0.7:\(backendPort)", "\(Self.addresses(socket, "app"))")
        }
        #expect(!bed.log().contains("10.9.9."), "\(bed.log())")
        #expect(try TestBed.curl(["http://127.0.0.1:\(front)/"]).1.hasPrefix("b7"))
    }
}
