import Foundation
import Testing

/// `proxy -c` as an operator runs it: the real binary on real files.
@Suite struct CheckMode {
    static let examples = Harness.files(in: "etc")

    @Test(arguments: examples)
    func everyExampleIsValid(file: String) throws {
        let r = try Harness.proxy(["-c", "-f", file], removing: ["PROXY_MAINT", "HAPROXY_MAINT"])
        #expect(r.status == 0, "\(file): \(r.stderr)")
        #expect(r.stdout.contains("Configuration file is valid"))
        #expect(!r.stderr.contains(": error:"))
    }

    @Test func verboseShowsWhatTheEnvironmentDecided() throws {
        let on = try Harness.proxy(["-c", "-V", "-f", "etc/proxy.cfg"], environment: ["PROXY_MAINT": "1"])
        #expect(on.status == 0)
        #expect(on.stdout.contains("etc/proxy.cfg:32: use_backend maintenance: always (env_int(PROXY_MAINT)=1 > 0)"))
        let off = try Harness.proxy(["-c", "-V", "-f", "etc/maintenance.cfg"], environment: ["HAPROXY_MAINT": "0"])
        #expect(off.stdout.contains("etc/maintenance.cfg:23: use_backend maintenance: never (env_int(HAPROXY_MAINT)=0, not > 0)"))
        let junk = try Harness.proxy(["-c", "-f", "etc/maintenance.cfg"], environment: ["HAPROXY_MAINT": "1x"])
        #expect(junk.stderr.contains("warning: env_int(HAPROXY_MAINT): value '1x' is not a plain integer; read as 1, as atol() would"))
    }

    @Test func quietPrintsNothingOnSuccess() throws {
        let r = try Harness.proxy(["-c", "-q", "-f", "etc/webmail.cfg"])
        #expect(r.status == 0 && r.stdout.isEmpty && r.stderr.isEmpty)
    }

    @Test func everyErrorIsReportedInOneRun() throws {
        let dir = try Harness.temporaryDirectory()
        let file = dir + "/many.cfg"
        try "global\n    maxcon 1\nbackend b\n    balnce roundrobin\n    retries many\n".write(toFile: file, atomically: true, encoding: .utf8)
        let r = try Harness.proxy(["-c", "-f", file])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(file):2: error: unknown keyword 'maxcon' in global; did you mean 'maxconn'?"))
        #expect(r.stderr.contains("\(file):4: error: unknown keyword 'balnce' in backend 'b'; did you mean 'balance'?"))
        #expect(r.stderr.contains("\(file):5: error: backend 'b': retries: 'many' is not an integer"))
        #expect(r.stderr.contains("3 errors in the configuration"))
    }

    @Test func missingFile() throws {
        let r = try Harness.proxy(["-c", "-f", "/nonexistent/proxy.cfg"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("/nonexistent/proxy.cfg: error: cannot open configuration file: No such file or directory"))
    }

    @Test func directoryLoadsCfgFilesInByteOrder() throws {
        let dir = try Harness.temporaryDirectory()
        try "frontend f\n    bind 127.0.0.1:18200\n    default_backend b2\n".write(toFile: dir + "/B.cfg", atomically: true, encoding: .utf8)
        try "backend b1\n    balnce x\n".write(toFile: dir + "/a.cfg", atomically: true, encoding: .utf8)
        try "backend b2\n    balnce y\n".write(toFile: dir + "/Z.cfg", atomically: true, encoding: .utf8)
        try "backend hidden\n    junk\n".write(toFile: dir + "/.hidden.cfg", atomically: true, encoding: .utf8)
        try "not a config".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        let r = try Harness.proxy(["-c", "-f", dir])
        let lines = r.stderr.split(separator: "\n").filter { $0.contains(": error: ") }.map(String.init)
        #expect(lines == ["\(dir)/Z.cfg:2: error: unknown keyword 'balnce' in backend 'b2'; did you mean 'balance'?",
                          "\(dir)/a.cfg:2: error: unknown keyword 'balnce' in backend 'b1'; did you mean 'balance'?"])
    }

    @Test func doubleDashMakesFiles() throws {
        let r = try Harness.proxy(["-c", "--", "etc/proxy.cfg", "etc/webmail.cfg"])
        #expect(r.status == 0, "\(r.stderr)")
    }

    @Test func binaryFileAndHugeLine() throws {
        let dir = try Harness.temporaryDirectory()
        var junk = Data("global\n".utf8)
        junk.append(contentsOf: (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) })
        try junk.write(to: URL(fileURLWithPath: dir + "/binary.cfg"))
        let b = try Harness.proxy(["-c", "-f", dir + "/binary.cfg"])
        #expect(b.status == 1 && b.stderr.contains("error: binary data (a NUL byte) in the file"))
        let huge = "global\n    maxconn " + String(repeating: "9", count: 10 << 20) + "\n"
        try huge.write(toFile: dir + "/huge.cfg", atomically: true, encoding: .utf8)
        let h = try Harness.proxy(["-c", "-f", dir + "/huge.cfg"])
        #expect(h.status == 1 && h.stderr.contains("huge.cfg:2: error: line is 10485772 bytes long; the limit is 65536"))
        let q = try Harness.proxy(["-c", "-f", "Tests/Fixtures/bad/05-unterminated-double-quote.cfg"])
        #expect(q.status == 1 && q.stderr.contains("unterminated double quote"))
    }

    /// Root ignores permissions, so this drops to nobody first, as CI runs as root.
    @Test(.enabled(if: Harness.which("setpriv") != nil, "needs setpriv (util-linux) to drop privileges"))
    func unreadableDirectory() throws {
        let setpriv = Harness.which("setpriv")!
        let dir = "/tmp/proxy-e2e-unreadable-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "global\n".write(toFile: dir + "/a.cfg", atomically: true, encoding: .utf8)
        chmod(dir, 0o000)
        defer { chmod(dir, 0o755); try? FileManager.default.removeItem(atPath: dir) }
        let probe = try Harness.run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", Harness.proxyBinary, "-v"])
        try #require(probe.status == 0, "user 65534 cannot run \(Harness.proxyBinary): \(probe.stderr)")
        let r = try Harness.run(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", Harness.proxyBinary, "-c", "-f", dir])
        #expect(r.status == 1)
        #expect(r.stderr.contains("\(dir): error: cannot read configuration directory: Permission denied; check its permissions"))
    }

    @Test func pidListGrammar() throws {
        let joined = try Harness.proxy(["-c", "-f", "etc/proxy.cfg", "-sf", "123 456"])
        #expect(joined.status == 1 && joined.stderr.contains("-sf option: some bytes unconsumed in PID list {456}"))
        let zero = try Harness.proxy(["-c", "-f", "etc/proxy.cfg", "-st", "0"])
        #expect(zero.status == 1 && zero.stderr.contains("Usage: proxy"))
        let empty = try Harness.proxy(["-c", "-f", "etc/proxy.cfg", "-sf"])
        #expect(empty.status == 0)
        let many = try Harness.proxy(["-c", "-sf", "1", "2", "-f", "etc/proxy.cfg"])
        #expect(many.status == 0)
    }

    @Test func versionHelpAndConditions() throws {
        #expect(try Harness.proxy(["-v"]).stdout.hasPrefix("proxy version "))
        #expect(try Harness.proxy(["-h"]).stdout.contains("-sf <pid>*"))
        #expect(try Harness.proxy(["-cc", "defined(PROXY_CC)"], environment: ["PROXY_CC": "1"]).status == 0)
        #expect(try Harness.proxy(["-cc", "defined(PROXY_CC)"], removing: ["PROXY_CC"]).status == 1)
        #expect(try Harness.proxy(["-cc", "bogus("]).status == 2)
        #expect(try Harness.proxy(["-Z"]).status == 1)
    }

    @Test func wireChangingKeywordsBlockStartButNotCheck() throws {
        let dir = try Harness.temporaryDirectory()
        try "frontend f\n    bind 127.0.0.1:18210 namespace blue\n    timeout client 1s\n".write(toFile: dir + "/p.cfg", atomically: true, encoding: .utf8)
        let check = try Harness.proxy(["-c", "-f", dir + "/p.cfg"])
        #expect(check.status == 0 && check.stderr.contains("p.cfg:2: warning: 'namespace' is accepted but not enforced yet"))
        let start = try Harness.proxy(["-f", dir + "/p.cfg"])
        #expect(start.status == 1 && start.stderr.contains("p.cfg:2: error: 'namespace' changes bytes on the wire"))
    }
}

/// Configs both `proxy` and HAProxy 2.6 must accept, and bad ones both must reject.
@Suite struct SameVerdictAsHAProxy {
    static let good = Harness.files(in: "Tests/Fixtures/common/good")
    static let bad = Harness.files(in: "Tests/Fixtures/common/bad")
    static let haproxy = Harness.which("haproxy")

    @Test func fixturesExist() {
        #expect(Self.good.count >= 5 && Self.bad.count >= 10)
    }

    @Test(arguments: good)
    func proxyAccepts(file: String) throws {
        let p = try Harness.proxy(["-c", "-q", "-f", file], removing: ["PROXY_MAINT", "HAPROXY_MAINT"])
        #expect(p.status == 0, "proxy rejects \(file): \(p.stderr)")
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"), arguments: good)
    func haproxyAccepts(file: String) throws {
        let h = try Harness.run(Self.haproxy!, ["-c", "-q", "-f", file], removing: ["PROXY_MAINT", "HAPROXY_MAINT"])
        #expect(h.status == 0, "haproxy rejects \(file): \(h.stderr)")
    }

    @Test(arguments: bad)
    func proxyRejects(file: String) throws {
        let p = try Harness.proxy(["-c", "-q", "-f", file])
        #expect(p.status == 1, "proxy accepts \(file)")
        #expect(p.stderr.contains("\(file):"), "proxy's error for \(file) has no file:line: \(p.stderr)")
    }

    @Test(.enabled(if: Harness.haproxyInstalled, "needs haproxy"), arguments: bad)
    func haproxyRejects(file: String) throws {
        let h = try Harness.run(Self.haproxy!, ["-c", "-q", "-f", file])
        #expect(h.status != 0, "haproxy accepts \(file)")
    }
}
