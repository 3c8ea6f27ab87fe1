import CProxySys
import Glibc

/// Process-level calls: signals, fork, sessions, identity, root directory, standard streams.
/// Each wraps one call and throws a `SystemError` naming it.
public enum ProcessCalls {
    /// This process's pid.
    public static var pid: Int32 { getpid() }

    /// kill(2): true when the signal was delivered, false when the pid is gone (ESRCH).
    public static func signal(_ pid: Int32, _ signal: Int32) throws -> Bool {
        if kill(pid, signal) == 0 { return true }
        let code = cproxy_errno()
        if code == ESRCH { return false }
        throw SystemError("kill", code: code)
    }

    /// What fork(2) returned, on each side.
    public enum ForkResult: Equatable, Sendable {
        case child
        case parent(child: Int32)
    }

    /// fork(2). Call it before any thread starts.
    public static func fork() throws -> ForkResult {
        let pid = Glibc.fork()
        if pid < 0 { throw SystemError.last("fork") }
        return pid == 0 ? .child : .parent(child: pid)
    }

    /// `-D`: forks; the parent waits for the child's verdict (a byte written on the returned
    /// descriptor: 0 serving) and exits with it, 1 if the child ends first; the child goes
    /// on in a new session with that descriptor. Call it before any thread starts.
    public static func daemonize() throws -> FileDescriptor {
        var fds: [Int32] = [0, 0]
        _ = try retryingOnInterrupt("pipe2") { cproxy_pipe2(&fds, O_CLOEXEC) }
        let read = FileDescriptor(rawValue: fds[0]), write = FileDescriptor(rawValue: fds[1])
        let result: ForkResult
        do { result = try fork() } catch {
            read.close()
            write.close()
            throw error
        }
        switch result {
        case .parent:
            write.close()
            var byte: UInt8 = 1
            let n = withUnsafeMutableBytes(of: &byte) { (try? read.read(into: $0)) ?? 0 }
            exitNow(n == 1 ? Int32(byte) : 1)
        case .child:
            read.close()
            try? newSession()
            return write
        }
    }

    /// setsid(2): a new session, without a controlling terminal.
    public static func newSession() throws {
        if setsid() < 0 { throw SystemError.last("setsid") }
    }

    /// _exit(2): ends the process now, without atexit handlers or buffered output.
    public static func exitNow(_ status: Int32) -> Never { _exit(status) }

    /// waitpid(2) for one child, blocking; returns its exit status (128+N for signal N).
    @discardableResult
    public static func wait(for child: Int32) -> Int32 {
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 {
            if cproxy_errno() != EINTR { return -1 }
        }
        let signalled = status & 0x7f
        return signalled == 0 ? (status >> 8) & 0xff : 128 + signalled
    }

    /// chroot(2) then chdir("/").
    public static func changeRoot(_ path: String) throws {
        if chroot(path) != 0 { throw SystemError.last("chroot") }
        if chdir("/") != 0 { throw SystemError.last("chdir") }
    }

    /// chdir(2).
    public static func changeDirectory(_ path: String) throws {
        if chdir(path) != 0 { throw SystemError.last("chdir") }
    }

    /// The host's name (gethostname).
    public static var hostname: String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        let end = name.firstIndex(of: 0) ?? name.count
        return String(decoding: name[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The real user id.
    public static var userID: UInt32 { getuid() }

    /// The real group id.
    public static var groupID: UInt32 { getgid() }

    /// Gives up root for good: supplementary groups (those of `userName`, or none), then the
    /// group, then the user. Each call that fails is named in the error.
    public static func dropPrivileges(uid: UInt32?, gid: UInt32?, userName: String?) throws {
        if let gid {
            if let name = userName {
                if initgroups(name, gid) != 0 { throw SystemError.last("initgroups") }
            } else if setgroups(0, nil) != 0 {
                throw SystemError.last("setgroups")
            }
            if setgid(gid) != 0 { throw SystemError.last("setgid") }
        } else if uid != nil, setgroups(0, nil) != 0 {
            throw SystemError.last("setgroups")
        }
        if let uid, setuid(uid) != 0 { throw SystemError.last("setuid") }
    }

    /// Points standard input, output and (unless `keepError`) error at /dev/null.
    public static func detachStandardStreams(keepError: Bool) throws {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        if null < 0 { throw SystemError.last("open") }
        defer { Glibc.close(null) }
        for target in keepError ? [Int32(0), 1] : [0, 1, 2] {
            if dup2(null, target) < 0 { throw SystemError.last("dup2") }
        }
    }

    /// Points `fd` at /dev/null (dup2), keeping its number.
    public static func redirectToNull(_ fd: FileDescriptor) throws {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        if null < 0 { throw SystemError.last("open") }
        defer { Glibc.close(null) }
        if dup2(null, fd.rawValue) < 0 { throw SystemError.last("dup2") }
    }

    /// Sleeps on the calling thread (the control thread only, never a data loop).
    public static func sleep(milliseconds: Int) {
        var ts = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var left = timespec()
        while nanosleep(&ts, &left) != 0 && cproxy_errno() == EINTR { ts = left }
    }
}

/// A pipe whose ends are plain descriptors (close-on-exec; blocking unless asked).
public enum Pipe {
    public static func make(nonBlocking: Bool = false) throws -> (read: FileDescriptor, write: FileDescriptor) {
        var fds: [Int32] = [0, 0]
        _ = try retryingOnInterrupt("pipe2") { cproxy_pipe2(&fds, O_CLOEXEC | (nonBlocking ? O_NONBLOCK : 0)) }
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
    }
}

/// The user and group databases (getpwnam_r, getgrnam_r): read at load, never on a loop.
public enum UserDatabase {
    /// A user's uid and primary gid, or nil when no such user exists.
    public static func user(named name: String) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        let rc = getpwnam_r(name, &entry, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    /// A group's gid, or nil when no such group exists.
    public static func group(named name: String) -> UInt32? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        let rc = getgrnam_r(name, &entry, &buffer, buffer.count, &result)
        guard rc == 0, result != nil else { return nil }
        return entry.gr_gid
    }
}

/// Resource limits (getrlimit/setrlimit).
public enum ResourceLimits {
    /// The soft and hard limit on open descriptors.
    public static func openFiles() -> (soft: UInt64, hard: UInt64) {
        var r = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &r)
        return (UInt64(r.rlim_cur), UInt64(r.rlim_max))
    }

    /// Sets the limit on open descriptors (raising the hard limit needs root).
    public static func setOpenFiles(soft: UInt64, hard: UInt64) throws {
        var r = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
        if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &r) != 0 { throw SystemError.last("setrlimit") }
    }

    /// `set-dumpable`: core dumps as large as the hard limits allow (RLIMIT_CORE and
    /// RLIMIT_FSIZE raised to them), and the process dumpable even after a change of user.
    /// Best effort, as in HAProxy: what the system refuses stays as it was.
    public static func allowCoreDumps() {
        for resource in [RLIMIT_CORE, RLIMIT_FSIZE] {
            var r = rlimit()
            if getrlimit(__rlimit_resource_t(resource.rawValue), &r) == 0, r.rlim_cur != r.rlim_max {
                r.rlim_cur = r.rlim_max
                _ = setrlimit(__rlimit_resource_t(resource.rawValue), &r)
            }
        }
        _ = cproxy_set_dumpable()
    }

    /// Caps the address space at `bytes` (`-m`, as HAProxy's RLIMIT_AS).
    public static func setAddressSpace(_ bytes: UInt64) throws {
        var r = rlimit(rlim_cur: rlim_t(bytes), rlim_max: rlim_t(bytes))
        if setrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &r) != 0 { throw SystemError.last("setrlimit") }
    }
}

/// poll(2) over a few descriptors, for the control thread's bounded waits.
public enum Poll {
    /// Waits until one of `fds` has `events` or `milliseconds` pass; returns each one's revents.
    public static func wait(_ fds: [FileDescriptor], events: Int16 = Int16(POLLIN), milliseconds: Int32) -> [Int16] {
        var set = fds.map { pollfd(fd: $0.rawValue, events: events, revents: 0) }
        while true {
            let n = poll(&set, nfds_t(set.count), milliseconds)
            if n >= 0 { return set.map(\.revents) }
            if cproxy_errno() != EINTR { return set.map { _ in Int16(POLLERR) } }
        }
    }
}
