import CProxySys
import Glibc

extension ProcessCalls {
    /// posix_spawn(2) of `path` with `arguments` (argv[0] included) and the current
    /// environment, with `descriptors` duplicated onto the given numbers in the child, and
    /// the child's signal mask cleared and every signal at its default: a master starts its
    /// workers this way, never fork from a process that may hold locks.
    /// `environment`: exactly these variables (nil: ours). `ownGroup`: a process group of its
    /// own. `stdinFromNull`: stdin reads /dev/null. Every descriptor above 2 not duplicated
    /// is closed in the child, whatever its close-on-exec flag.
    public static func spawn(_ path: String, _ arguments: [String], descriptors: [(from: Int32, to: Int32)] = [],
                             environment: [String]? = nil, ownGroup: Bool = false, stdinFromNull: Bool = false) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (from, to) in descriptors { posix_spawn_file_actions_adddup2(&actions, from, to) }
        if stdinFromNull { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
        if environment != nil {
            _ = cproxy_spawn_close_from(&actions, 3 + Int32(descriptors.filter { $0.to > 2 }.map { $0.to - 2 }.max() ?? 0))
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if ownGroup {
            flags |= POSIX_SPAWN_SETPGROUP
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var envp: [UnsafeMutablePointer<CChar>?] = (environment ?? []).map { strdup($0) } + [nil]
        defer { for p in envp { free(p) } }
        var pid: pid_t = 0
        let r = environment == nil ? posix_spawn(&pid, path, &actions, &attributes, &argv, environ)
            : posix_spawn(&pid, path, &actions, &attributes, &argv, &envp)
        guard r == 0 else { throw SystemError("posix_spawn", code: r) }
        return pid
    }

    /// The exit of one child, if it has exited: (pid, status as `wait(for:)` reports it).
    public static func reapOne() -> (pid: Int32, status: Int32)? {
        var status: Int32 = 0
        let pid = waitpid(-1, &status, WNOHANG)
        guard pid > 0 else { return nil }
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (pid, code)
    }

    /// The absolute path of this process's binary (`/proc/self/exe`).
    public static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
