import CProxySys
import Glibc

/// Socket calls on a `FileDescriptor`. Each wraps one syscall; EINTR is retried, EAGAIN is
/// `.wouldBlock`, and other failures throw a `SystemError` naming the call.
public enum Socket {
    public static let streamType = Int32(SOCK_STREAM.rawValue)
    public static let nonBlockingFlag = Int32(SOCK_NONBLOCK.rawValue)
    public static let closeOnExec = Int32(SOCK_CLOEXEC.rawValue)

    /// socket(2), non-blocking and close-on-exec.
    public static func make(family: Int32, type: Int32 = streamType) throws -> FileDescriptor {
        let fd = try retryingOnInterrupt("socket") { Glibc.socket(family, type | nonBlockingFlag | closeOnExec, 0) }
        return FileDescriptor(rawValue: fd)
    }

    /// setsockopt(2) with an integer value.
    public static func setOption(_ fd: FileDescriptor, level: Int32, name: Int32, value: Int32) throws {
        var v = value
        _ = try retryingOnInterrupt("setsockopt") {
            setsockopt(fd.rawValue, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// getsockopt(2) of an integer value.
    public static func option(_ fd: FileDescriptor, level: Int32, name: Int32) throws -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        _ = try retryingOnInterrupt("getsockopt") { getsockopt(fd.rawValue, level, name, &v, &len) }
        return v
    }

    public static func bind(_ fd: FileDescriptor, _ address: SocketAddress) throws {
        _ = try retryingOnInterrupt("bind") { address.withSockAddr { Glibc.bind(fd.rawValue, $0, $1) } }
    }

    public static func listen(_ fd: FileDescriptor, backlog: Int32) throws {
        _ = try retryingOnInterrupt("listen") { Glibc.listen(fd.rawValue, backlog) }
    }

    /// accept4(2): a non-blocking, close-on-exec client socket and its address.
    @inline(__always)
    public static func accept(_ fd: FileDescriptor) throws -> IOResult<(FileDescriptor, SocketAddress)> {
        var address = SocketAddress()
        address.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = try nonBlocking("accept4") {
            withUnsafeMutablePointer(to: &address.storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    cproxy_accept4(fd.rawValue, $0, &address.length, nonBlockingFlag | closeOnExec)
                }
            }
        }
        switch r {
        case .done(let client): return .done((FileDescriptor(rawValue: client), address))
        case .wouldBlock: return .wouldBlock
        }
    }

    /// connect(2) on a non-blocking socket: `.done` when connected at once, `.wouldBlock`
    /// while in progress (EINPROGRESS); wait for writability, then read `pendingError`.
    public static func connect(_ fd: FileDescriptor, _ address: SocketAddress) throws -> IOResult<Void> {
        while true {
            let rc = address.withSockAddr { Glibc.connect(fd.rawValue, $0, $1) }
            if rc == 0 { return .done(()) }
            let code = cproxy_errno()
            if code == EINTR { continue }
            if code == EINPROGRESS || code == EAGAIN { return .wouldBlock }
            throw SystemError("connect", code: code)
        }
    }

    /// SO_ERROR: the result of a non-blocking connect.
    public static func pendingError(_ fd: FileDescriptor) -> Int32 {
        (try? option(fd, level: SOL_SOCKET, name: SO_ERROR)) ?? EIO
    }

    /// read(2) into raw memory.
    @inline(__always)
    public static func read(_ fd: FileDescriptor, into pointer: UnsafeMutableRawPointer, count: Int) throws -> IOResult<Int> {
        try nonBlocking("read") { Glibc.read(fd.rawValue, pointer, count) }
    }

    /// send(2) with MSG_NOSIGNAL, so a closed peer gives EPIPE rather than SIGPIPE.
    @inline(__always)
    public static func write(_ fd: FileDescriptor, from pointer: UnsafeRawPointer, count: Int) throws -> IOResult<Int> {
        try nonBlocking("send") { Glibc.send(fd.rawValue, pointer, count, Int32(MSG_NOSIGNAL)) }
    }

    /// shutdown(2); errors (the peer already gone) are ignored.
    public static func shutdown(_ fd: FileDescriptor, _ how: Int32) {
        _ = Glibc.shutdown(fd.rawValue, how)
    }

    public static var shutWrite: Int32 { Int32(SHUT_WR) }

    /// getsockname(2).
    public static func localAddress(_ fd: FileDescriptor) -> SocketAddress {
        var address = SocketAddress()
        address.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &address.storage) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd.rawValue, $0, &address.length) }
        }
        return address
    }

    /// Sets O_NONBLOCK on a descriptor (inherited listeners may come blocking).
    public static func setNonBlocking(_ fd: FileDescriptor) throws {
        let flags = fcntl(fd.rawValue, F_GETFL)
        if flags < 0 { throw SystemError.last("fcntl") }
        if fcntl(fd.rawValue, F_SETFL, flags | O_NONBLOCK) < 0 { throw SystemError.last("fcntl") }
    }
}
