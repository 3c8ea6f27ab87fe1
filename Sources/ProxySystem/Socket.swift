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

    /// connect(2) to AF_UNSPEC: ends a TCP connection at once (a reset, as a close with
    /// SO_LINGER 0 sends) and leaves the socket unconnected, ready to connect again.
    /// Returns false where the socket cannot be reused that way.
    public static func disconnect(_ fd: FileDescriptor) -> Bool {
        var unspecified = sockaddr()
        unspecified.sa_family = sa_family_t(AF_UNSPEC)
        return Glibc.connect(fd.rawValue, &unspecified, socklen_t(MemoryLayout<sockaddr>.size)) == 0
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

    /// recv(2) with MSG_PEEK: looks at what is queued without taking it (the PROXY protocol
    /// header is taken only once it is whole, so the bytes after it stay in the kernel).
    @inline(__always)
    public static func peek(_ fd: FileDescriptor, into pointer: UnsafeMutableRawPointer, count: Int) throws -> IOResult<Int> {
        try nonBlocking("recv") { Glibc.recv(fd.rawValue, pointer, count, Int32(MSG_PEEK)) }
    }

    /// send(2) with MSG_NOSIGNAL, so a closed peer gives EPIPE rather than SIGPIPE.
    @inline(__always)
    public static func write(_ fd: FileDescriptor, from pointer: UnsafeRawPointer, count: Int) throws -> IOResult<Int> {
        try nonBlocking("send") { Glibc.send(fd.rawValue, pointer, count, Int32(MSG_NOSIGNAL)) }
    }

    /// One datagram (or stream chunk) sent now, never waiting (MSG_DONTWAIT): false when it
    /// could not all go at once.
    @inline(__always)
    public static func sendNow(_ fd: FileDescriptor, _ bytes: UnsafeRawBufferPointer, to address: SocketAddress? = nil) -> Bool {
        let flags = Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)
        if let a = address {
            return a.withSockAddr { sendto(fd.rawValue, bytes.baseAddress, bytes.count, flags, $0, $1) } == bytes.count
        }
        return Glibc.send(fd.rawValue, bytes.baseAddress, bytes.count, flags) == bytes.count
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
        try setBlocking(fd, false)
    }

    /// Sets or clears O_NONBLOCK.
    public static func setBlocking(_ fd: FileDescriptor, _ blocking: Bool) throws {
        let flags = fcntl(fd.rawValue, F_GETFL)
        if flags < 0 { throw SystemError.last("fcntl") }
        let wanted = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK
        if wanted != flags, fcntl(fd.rawValue, F_SETFL, wanted) < 0 { throw SystemError.last("fcntl") }
    }

    /// SO_RCVTIMEO and SO_SNDTIMEO: bounds each blocking receive and send.
    public static func setTimeouts(_ fd: FileDescriptor, milliseconds: Int) throws {
        var t = timeval(tv_sec: milliseconds / 1000, tv_usec: milliseconds % 1000 * 1000)
        for name in [SO_RCVTIMEO, SO_SNDTIMEO] {
            _ = try retryingOnInterrupt("setsockopt") {
                setsockopt(fd.rawValue, SOL_SOCKET, name, &t, socklen_t(MemoryLayout<timeval>.size))
            }
        }
    }

    /// SO_LINGER with a zero timeout: the next close sends a reset instead of a FIN.
    public static func setResetOnClose(_ fd: FileDescriptor) {
        var l = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd.rawValue, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
    }

    /// SO_BINDTODEVICE: the socket only takes traffic from interface `name`.
    public static func bindToDevice(_ fd: FileDescriptor, _ name: String) throws {
        _ = try retryingOnInterrupt("setsockopt(SO_BINDTODEVICE)") {
            name.withCString { setsockopt(fd.rawValue, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) }
        }
    }

    /// The interface a socket is bound to (SO_BINDTODEVICE), or nil for none.
    public static func boundDevice(_ fd: FileDescriptor) -> String? {
        var name = [CChar](repeating: 0, count: 64)
        var length = socklen_t(name.count)
        guard getsockopt(fd.rawValue, SOL_SOCKET, SO_BINDTODEVICE, &name, &length) == 0, length > 0 else { return nil }
        let end = name.firstIndex(of: 0) ?? name.count
        let text = String(decoding: name[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.isEmpty ? nil : text
    }
}
