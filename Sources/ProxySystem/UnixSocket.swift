import CProxySys
import Glibc

/// UNIX-socket calls the handover channel needs: descriptor passing and peer credentials.
public enum UnixSocket {
    /// Sends `data` with `fds` attached (SCM_RIGHTS), blocking until written.
    public static func send(_ socket: FileDescriptor, _ data: [UInt8], fds: [Int32]) throws {
        let n = try retryingOnInterrupt("sendmsg") {
            data.withUnsafeBytes { raw in
                fds.withUnsafeBufferPointer { f in
                    cproxy_send_fds(socket.rawValue, raw.baseAddress, raw.count, f.baseAddress, Int32(f.count))
                }
            }
        }
        if n != data.count { throw SystemError("sendmsg", code: EMSGSIZE) }
    }

    /// Receives up to `capacity` bytes and up to 253 descriptors in one message.
    public static func receive(_ socket: FileDescriptor, capacity: Int = 1 << 16) throws -> ([UInt8], [Int32]) {
        var buffer = [UInt8](repeating: 0, count: capacity)
        var fds = [Int32](repeating: -1, count: 253)
        var count: Int32 = 0
        let n = try retryingOnInterrupt("recvmsg") {
            buffer.withUnsafeMutableBytes { raw in
                fds.withUnsafeMutableBufferPointer { f in
                    cproxy_recv_fds(socket.rawValue, raw.baseAddress, raw.count, f.baseAddress, 253, &count)
                }
            }
        }
        return (Array(buffer[0..<n]), Array(fds[0..<Int(count)]))
    }

    /// The uid of the connected peer.
    public static func peerUID(_ socket: FileDescriptor) -> UInt32? {
        var uid: UInt32 = 0
        return cproxy_peer_uid(socket.rawValue, &uid) == 0 ? uid : nil
    }

    /// Waits up to `milliseconds` for `fd` to become readable.
    public static func waitReadable(_ fd: FileDescriptor, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, milliseconds) == 1
    }

    /// A blocking stream socket connected to a filesystem path. A listener whose backlog is
    /// full makes connect wait: `timeoutMilliseconds` bounds that, and each later send.
    public static func connect(path: String, timeoutMilliseconds: Int = 1000) throws -> FileDescriptor {
        let raw = try retryingOnInterrupt("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let fd = FileDescriptor(rawValue: raw)
        var timeout = timeval(tv_sec: timeoutMilliseconds / 1000, tv_usec: timeoutMilliseconds % 1000 * 1000)
        setsockopt(raw, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        do {
            let address = SocketAddress(unixPath: path)
            _ = try retryingOnInterrupt("connect") { address.withSockAddr { Glibc.connect(raw, $0, $1) } }
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

    /// A blocking connected stream socket to an abstract name, or nil when nobody listens.
    public static func connectAbstract(_ name: String) -> FileDescriptor? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let address = SocketAddress(unixPath: name, abstract: true)
        let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 { Glibc.close(fd); return nil }
        return FileDescriptor(rawValue: fd)
    }
}
