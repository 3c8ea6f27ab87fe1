import ProxySystem
import Glibc

/// systemd's socket activation, read as sd_listen_fds(3) does (no libsystemd): when
/// `LISTEN_PID` is this process, descriptors 3 ..< 3 + `LISTEN_FDS` are listening sockets
/// from a `.socket` unit. `bind fd@N` (or `fd@NAME`, from `LISTEN_FDNAMES`) takes them; they
/// are matched and carried across reloads like any handed-over listener.
enum SocketActivation {
    /// The activated descriptors, marked close-on-exec (a master passes them on by number).
    static func fromEnvironment() -> [Int32]? {
        guard let count = getenv("LISTEN_FDS").flatMap({ Int32(String(cString: $0)) }), count > 0, count < 1024,
              let pid = getenv("LISTEN_PID").flatMap({ Int32(String(cString: $0)) }), pid == ProcessCalls.pid else { return nil }
        let fds = (0..<count).map { 3 + $0 }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return fds
    }
}
