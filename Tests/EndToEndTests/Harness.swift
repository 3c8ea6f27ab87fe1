import Foundation
import Testing

/// Runs the real `proxy` binary (and HAProxy, where installed) as child processes.
enum Harness {
    /// The package root, from this file's path.
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    /// The binary under test: $PROXY_BIN, or the debug build next to the tests.
    static let proxyBinary: String = {
        if let p = ProcessInfo.processInfo.environment["PROXY_BIN"], !p.isEmpty { return p }
        let bundle = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("proxy").path
        if FileManager.default.isExecutableFile(atPath: bundle) { return bundle }
        return root + "/.build/debug/proxy"
    }()

    /// Whether HAProxy and root are here: tests that need them are reported as skipped without.
    static let haproxyInstalled = which("haproxy") != nil
    static let isRoot = getuid() == 0

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for dir in dirs where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        return nil
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `executable` with `arguments` in the package root, with extra environment, and
    /// returns its status and output. It spawns and reaps the child itself (posix_spawn,
    /// waitpid): Foundation's Process can miss a SIGCHLD when two children exit at once (a
    /// `-D` parent and the old process it replaced), and then waits forever.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    removing: [String] = [], directory: String? = nil) throws -> Output {
        var env = ProcessInfo.processInfo.environment
        for k in removing { env[k] = nil }
        for (k, v) in environment { env[k] = v }
        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard pipe(&out) == 0, pipe(&err) == 0 else { throw POSIXError(.EMFILE) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        // glibc's _np file actions (not in the Glibc module, which lacks _GNU_SOURCE): change
        // directory, and close everything above stderr so no descriptor of the test leaks.
        typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
        typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        let handle = dlopen(nil, RTLD_NOW)
        if let f = dlsym(handle, "posix_spawn_file_actions_addchdir_np") {
            _ = unsafeBitCast(f, to: AddChdir.self)(&actions, directory ?? root)
        }
        if let f = dlsym(handle, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(f, to: AddClosefrom.self)(&actions, 3)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in argv + envp { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        close(out[1]); close(err[1])
        guard rc == 0 else { close(out[0]); close(err[0]); throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .EIO) }
        // Read both pipes until both close, so neither can fill up and block the child.
        var stdout: [UInt8] = [], stderr: [UInt8] = []
        var fds = [pollfd(fd: out[0], events: Int16(POLLIN), revents: 0), pollfd(fd: err[0], events: Int16(POLLIN), revents: 0)]
        var chunk = [UInt8](repeating: 0, count: 65536)
        while fds.contains(where: { $0.fd >= 0 }) {
            if poll(&fds, 2, -1) < 0 { if errno == EINTR { continue }; break }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = read(fds[i].fd, &chunk, chunk.count)
                if n > 0 {
                    if i == 0 { stdout += chunk[0..<n] } else { stderr += chunk[0..<n] }
                } else if n == 0 || errno != EINTR {
                    close(fds[i].fd)
                    fds[i].fd = -1
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Output(status: code, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    static func proxy(_ arguments: [String], environment: [String: String] = [:], removing: [String] = []) throws -> Output {
        try run(proxyBinary, arguments, environment: environment, removing: removing)
    }

    /// A fresh temporary directory.
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "proxy-e2e-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + directory)) ?? [])
            .filter { $0.hasSuffix(".cfg") }.sorted().map { directory + "/" + $0 }
    }
}
