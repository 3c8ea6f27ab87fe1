import CProxySys
import Glibc

/// Who is at the other end of a UNIX socket (SO_PEERCRED): the process that connected, or,
/// seen by a client, the process that created the listening socket.
public struct PeerCredentials: Equatable, Sendable {
    public let pid: Int32
    public let uid: UInt32
    public let gid: UInt32
}

/// UNIX-socket calls the reload channels need: descriptor passing, peer credentials and
/// bounded blocking exchanges (used by the control thread, never by a data loop).
public enum UnixSocket {
    /// Most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
    public static let maxDescriptorsPerMessage = 253

    /// Sends `data` with `fds` attached (SCM_RIGHTS), blocking until written.
    public static func send(_ socket: FileDescriptor, _ data: [UInt8], fds: [Int32]) throws {
        precondition(fds.count <= maxDescriptorsPerMessage)
        var offset = 0
        while offset < data.count || (offset == 0 && data.isEmpty) {
            let attached = offset == 0 ? fds : []
            let n = try retryingOnInterrupt("sendmsg") {
                data.withUnsafeBytes { raw in
                    attached.withUnsafeBufferPointer { f in
                        cproxy_send_fds(socket.rawValue, raw.baseAddress.map { $0 + offset }, raw.count - offset, f.baseAddress, Int32(f.count))
                    }
                }
            }
            if data.isEmpty { break }
            offset += n
        }
    }

    /// Receives up to `capacity` bytes and the descriptors that come with them. A message
    /// whose descriptors did not all arrive (MSG_CTRUNC) is an error: the ones that did are
    /// closed, never silently kept or lost.
    public static func receive(_ socket: FileDescriptor, capacity: Int = 1 << 16) throws -> ([UInt8], [Int32]) {
        var buffer = [UInt8](repeating: 0, count: capacity)
        var fds = [Int32](repeating: -1, count: maxDescriptorsPerMessage)
        var count: Int32 = 0
        var truncated: Int32 = 0
        let n = try retryingOnInterrupt("recvmsg") {
            buffer.withUnsafeMutableBytes { raw in
                fds.withUnsafeMutableBufferPointer { f in
                    cproxy_recv_fds(socket.rawValue, raw.baseAddress, raw.count, f.baseAddress, Int32(maxDescriptorsPerMessage), &count, &truncated)
                }
            }
        }
        let received = Array(fds[0..<Int(count)])
        if truncated != 0 {
            for fd in received { Glibc.close(fd) }
            throw SystemError("recvmsg", code: EMSGSIZE)
        }
        return (Array(buffer[0..<n]), received)
    }

    /// A connected pair (socketpair(2)), close-on-exec; SOCK_SEQPACKET keeps message bounds.
    public static func pair(type: Int32 = Int32(SOCK_SEQPACKET.rawValue)) throws -> (FileDescriptor, FileDescriptor) {
        var fds: [Int32] = [-1, -1]
        _ = try retryingOnInterrupt("socketpair") { socketpair(AF_UNIX, type | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) }
        return (FileDescriptor(rawValue: fds[0]), FileDescriptor(rawValue: fds[1]))
    }

    /// SO_PEERCRED of a connected UNIX socket.
    public static func peer(_ socket: FileDescriptor) -> PeerCredentials? {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        guard cproxy_peer_credentials(socket.rawValue, &pid, &uid, &gid) == 0 else { return nil }
        return PeerCredentials(pid: pid, uid: uid, gid: gid)
    }

    /// Waits up to `milliseconds` for `fd` to become readable.
    public static func waitReadable(_ fd: FileDescriptor, milliseconds: Int32) -> Bool {
        Poll.wait([fd], milliseconds: milliseconds).first.map { $0 != 0 } ?? false
    }

    /// A blocking stream socket connected to a filesystem path. A listener whose backlog is
    /// full makes connect wait: `timeoutMilliseconds` bounds that, and each later send.
    public static func connect(path: String, timeoutMilliseconds: Int = 1000) throws -> FileDescriptor {
        let address = try SocketAddress(checkedUnixPath: path)
        return try connect(address, timeoutMilliseconds: timeoutMilliseconds)
    }

    /// A blocking stream socket connected to an abstract name; throws ECONNREFUSED when nobody listens.
    public static func connect(abstract name: String, timeoutMilliseconds: Int = 1000) throws -> FileDescriptor {
        try connect(SocketAddress(unixPath: name, abstract: true), timeoutMilliseconds: timeoutMilliseconds)
    }

    private static func connect(_ address: SocketAddress, timeoutMilliseconds: Int) throws -> FileDescriptor {
        let raw = try retryingOnInterrupt("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            try Socket.setTimeouts(fd, milliseconds: timeoutMilliseconds)
            _ = try retryingOnInterrupt("connect") { address.withSockAddr { Glibc.connect(raw, $0, $1) } }
        } catch {
            fd.close()
            throw error
        }
        return fd
    }

    /// A non-blocking listening stream socket on an abstract name.
    public static func listen(abstract name: String, backlog: Int32 = 16) throws -> FileDescriptor {
        let fd = try Socket.make(family: AF_UNIX)
        do {
            try Socket.bind(fd, SocketAddress(unixPath: name, abstract: true))
            try Socket.listen(fd, backlog: backlog)
        } catch {
            fd.close()
            throw error
        }
        return fd
    }

    /// Reads exactly `count` bytes from a blocking socket, waiting at most `milliseconds` for
    /// each part. Nil on end of stream or timeout.
    public static func readExactly(_ fd: FileDescriptor, count: Int, milliseconds: Int32) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            guard waitReadable(fd, milliseconds: milliseconds) else { return nil }
            let n = bytes.withUnsafeMutableBytes { raw in
                (try? retryingOnInterrupt("recv") { recv(fd.rawValue, raw.baseAddress! + got, count - got, 0) }) ?? 0
            }
            if n <= 0 { return nil }
            got += n
        }
        return bytes
    }
}
