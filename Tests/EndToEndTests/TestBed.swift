import Foundation
import Testing

/// Real processes for one test: backends started by the test and the `proxy` binary on a
/// temporary config. Everything is stopped by `stop()` (and on deinit).
final class TestBed {
    var processes: [Process] = []
    let directory: String
    var proxy: Process?
    var proxyLog: String { directory + "/proxy.log" }

    init() throws {
        directory = try Harness.temporaryDirectory()
    }

    deinit { stop() }

    /// Stops everything this bed started. Children of the test runner may inherit a mask
    /// that blocks SIGTERM, so backends get SIGKILL; the proxy gets SIGTERM (it reads
    /// signals through a signalfd) and SIGKILL if it has not gone within 5 s.
    func stop() {
        for p in processes where p.isRunning {
            if p === proxy {
                kill(p.processIdentifier, SIGTERM)
                if !TestBed.waitUntil(timeout: 5, { !p.isRunning }) { kill(p.processIdentifier, SIGKILL) }
            } else {
                kill(p.processIdentifier, SIGKILL)
            }
            p.waitUntilExit()
        }
        processes.removeAll()
        // Daemons (-D) a test started are not children: those that published a pidfile, or
        // got stuck before publishing it (PIDFILE.PID.tmp), are stopped too, never left running.
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            let parts = name.split(separator: ".")
            var pid: Int32?
            if name.hasSuffix(".tmp"), parts.count >= 3, name.contains(".pid.") { pid = Int32(parts[parts.count - 2]) }
            if name.hasSuffix(".pid") { pid = Int32(read(directory + "/" + name).trimmingCharacters(in: .whitespacesAndNewlines)) }
            // Only a process started on this bed's config (a pid may have been reused since).
            if let pid, pid > 1, read("/proc/\(pid)/cmdline").contains(directory) { kill(pid, SIGKILL) }
        }
    }

    /// Ports handed out by this test process, below the kernel's ephemeral range (32768+),
    /// so outgoing connections never take them. No two tests of one run share a port: two
    /// proxies on one port with SO_REUSEPORT would silently answer each other's tests.
    private static let portLock = NSLock()
    nonisolated(unsafe) private static var nextPort = 20000 + Int(getpid() % 40) * 300

    /// A port no test of this run has had, and that nobody listens on right now.
    static func freePort() -> Int {
        portLock.lock()
        defer { portLock.unlock() }
        while true {
            let port = nextPort
            nextPort = nextPort >= 32000 ? 20000 : nextPort + 1
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = UInt16(port).bigEndian
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            close(fd)
            if rc == 0 { return port }
        }
    }

    /// `count` consecutive ports no test of this run has had, all free now.
    static func freePortRange(_ count: Int) -> Int {
        while true {
            let first = freePort()
            var ok = true
            for i in 1..<count where freePort() != first + i { ok = false; break }
            if ok { return first }
        }
    }

    /// The `defaults` section most tests share: a mode and the three timeouts (five lines, no
    /// trailing newline, so line numbers in a config stay as written).
    static func defaults(_ mode: String) -> String {
        "defaults\n    mode \(mode)\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s"
    }

    /// How much slower the binary under test runs (contrib/sanitize sets PROXY_TEST_SLOWDOWN):
    /// every deadline a test waits on is scaled by it.
    static let slowdown = Double(ProcessInfo.processInfo.environment["PROXY_TEST_SLOWDOWN"] ?? "") ?? 1

    /// True once something accepts on the port, polling until `timeout`.
    static func waitForPort(_ port: Int, timeout: Double = 10, host: String = "127.0.0.1") -> Bool {
        let deadline = Date().addingTimeInterval(timeout * slowdown)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr(host)
            addr.sin_port = UInt16(port).bigEndian
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            close(fd)
            if rc == 0 { return true }
            usleep(20_000)
        }
        return false
    }

    /// Waits until `condition` holds, polling until `timeout`.
    @discardableResult
    static func waitUntil(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout * slowdown)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    @discardableResult
    func start(_ executable: String, _ arguments: [String], log: String? = nil, environment: [String: String] = [:]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let log {
            FileManager.default.createFile(atPath: log, contents: nil)
            let h = FileHandle(forWritingAtPath: log)
            p.standardOutput = h
            p.standardError = h
        } else {
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
        }
        try p.run()
        processes.append(p)
        return p
    }

    /// wrk (8 connections, 4 s) against `url` while the proxy on this bed's config is
    /// reloaded `count` times 0.5 s apart (`-D -p pidFile -sf OLD`): the reloads that
    /// succeeded and wrk's report. The last process is stopped.
    func reloadsUnderWrk(_ url: String, pidFile: String, count: Int = 5) throws -> (reloads: Int, report: String) {
        let wrk = Process()
        wrk.executableURL = URL(fileURLWithPath: Harness.which("wrk")!)
        wrk.arguments = ["-t1", "-c8", "-d4s", url]
        let out = Pipe()
        wrk.standardOutput = out
        try wrk.run()
        var reloads = 0
        for _ in 0..<count {
            Thread.sleep(forTimeInterval: 0.5)
            let old = read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)
            let r = try Harness.proxy(["-f", directory + "/proxy.cfg", "-D", "-p", pidFile, "-sf", old])
            if r.status == 0 { reloads += 1 }
        }
        let report = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        wrk.waitUntilExit()
        if let pid = Int32(read(pidFile).trimmingCharacters(in: .whitespacesAndNewlines)) { kill(pid, SIGTERM) }
        return (reloads, report)
    }

    /// Starts an HTTP test backend and waits for it.
    @discardableResult
    func backend(name: String, port: Int = TestBed.freePort(), kind: String = "http", host: String? = nil) throws -> Int {
        let python = Harness.which("python3") ?? "/usr/bin/python3"
        try start(python, [Harness.root + "/Tests/EndToEndTests/Helpers/backend.py", kind, host.map { "\($0):\(port)" } ?? String(port), name])
        #expect(Self.waitForPort(port, host: host ?? "127.0.0.1"), "backend \(name) did not start on \(port)")
        return port
    }

    /// Writes `config` and starts `proxy -f` on it; waits for `port` to accept.
    @discardableResult
    func proxy(_ config: String, waitFor port: Int, environment: [String: String] = [:], arguments: [String] = []) throws -> Process {
        let path = directory + "/proxy.cfg"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let p = try start(Harness.proxyBinary, ["-f", path] + arguments, log: proxyLog, environment: environment)
        proxy = p
        #expect(Self.waitForPort(port), "proxy did not listen on \(port): \(log())")
        // The port accepts once bound; names (stats sockets, pidfile) are published a little
        // later, at the point of no return, which the "serving" line follows.
        let daemonOrQuiet = arguments.contains("-D") || arguments.contains("-q")
            || config.split(separator: "\n").contains { ["daemon", "quiet"].contains($0.trimmingCharacters(in: .whitespaces)) }
        if !daemonOrQuiet {
            #expect(Self.waitUntil { self.log().contains("): serving ") || !p.isRunning }, "proxy did not say it serves: \(log())")
        }
        return p
    }

    /// The names in this bed's directory.
    func names() -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }

    func log() -> String { (try? String(contentsOfFile: proxyLog, encoding: .utf8)) ?? "" }

    /// Starts a request to the test backend's `/slow?ms=N` through `port`, in the background;
    /// returns the curl process.
    static func slowRequest(_ port: Int, ms: Int) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Harness.which("curl") ?? "/usr/bin/curl")
        p.arguments = ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/slow?ms=\(ms)"]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// Runs curl; returns (status code, body, headers).
    static func curl(_ arguments: [String], timeout: Int = 10) throws -> (Int, String, String) {
        let dir = NSTemporaryDirectory()
        let headers = dir + "h-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: headers) }
        let r = try Harness.run(Harness.which("curl") ?? "/usr/bin/curl",
                                ["-s", "-m", String(timeout), "-D", headers, "-w", "\n%{http_code}"] + arguments)
        var body = r.stdout
        var code = 0
        if let nl = body.lastIndex(of: "\n") {
            code = Int(body[body.index(after: nl)...]) ?? 0
            body = String(body[..<nl])
            if body.hasSuffix("\n") { body.removeLast() }
        }
        let h = (try? String(contentsOfFile: headers, encoding: .utf8)) ?? ""
        return (code, body, h)
    }

    /// Sends raw bytes on one connection (python3 Helpers/rawclient.py) and returns what
    /// came back before the server closed or `timeout` passed.
    static func raw(_ port: Int, _ data: [UInt8], timeout: Double = 3, halfClose: Bool = false) -> [UInt8] {
        let file = NSTemporaryDirectory() + "raw-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard (try? Data(data).write(to: URL(fileURLWithPath: file))) != nil else { return [] }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Harness.which("python3") ?? "/usr/bin/python3")
        p.arguments = [Harness.root + "/Tests/EndToEndTests/Helpers/rawclient.py", String(port), file, "--timeout", String(timeout)]
            + (halfClose ? ["--half-close"] : [])
        let out = Pipe()
        p.standardOutput = out
        guard (try? p.run()) != nil else { return [] }
        let bytes = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Array(bytes)
    }

    static func raw(_ port: Int, _ text: String, timeout: Double = 3) -> String {
        String(decoding: raw(port, Array(text.utf8), timeout: timeout), as: UTF8.self)
    }

    /// The backend's request counter and last request (from its /stats).
    static func stats(_ port: Int) -> (count: Int, last: [String: Any]) {
        let json = statsJSON(port)
        return (json["count"] as? Int ?? -1, json["last"] as? [String: Any] ?? [:])
    }

    /// The most /slow requests the backend ever answered at once.
    static func peak(_ port: Int) -> Int { statsJSON(port)["peak"] as? Int ?? -1 }

    static func statsJSON(_ port: Int) -> [String: Any] {
        guard let (code, body, _) = try? curl(["http://127.0.0.1:\(port)/stats"]), code == 200,
              let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return [:] }
        return json
    }
}
