import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import CProxySys
import Glibc

/// HAProxy's `_getsocks` exchange on a stats socket, both sides, so that `-x SOCKET` works
/// between any pair of proxy and HAProxy processes (`stats socket ... expose-fd listeners`):
///
///     client → server   "_getsocks\n"
///     server → client   N, a native-endian 32-bit count (nothing at all when refused)
///     server → client   messages of at most 252 descriptors (SCM_RIGHTS); per descriptor the
///                       bytes carry a length byte and a namespace name, a length byte and an
///                       interface name, then 4 zero bytes
///     client → server   4 bytes after each message; the server waits for them after a full one
///
/// The receiver matches sockets to its `bind` lines by what the kernel says about each one
/// (getsockname, IPV6_V6ONLY, IP_TRANSPARENT) plus the interface name carried alongside.
enum ListenerExport {
    static let batchSize = 252

    /// A socket received from an old process, with the names sent alongside it.
    struct Received {
        var fd: Int32
        var namespace: String
        var interface: String
    }

    /// Why `-x` brought nothing.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    // MARK: client (the new process, `-x SOCKET`)

    /// Connects to `path`, asks for the listening sockets and receives them all.
    static func fetch(from path: String, timeoutMilliseconds: Int32 = 1000) throws -> [Received] {
        let fd: FileDescriptor
        do { fd = try UnixSocket.connect(path: path) } catch let e as SystemError {
            throw Failure(description: "cannot connect to '\(path)': \(e.reason)")
        }
        defer { fd.close() }
        try fd.writeAll("_getsocks\n")
        guard let countBytes = UnixSocket.readExactly(fd, count: 4, milliseconds: timeoutMilliseconds) else {
            throw Failure(description: "'\(path)' sent no sockets; its 'stats socket' line needs 'expose-fd listeners'")
        }
        let expected = Int(countBytes.withUnsafeBytes { $0.load(as: Int32.self) })
        guard expected >= 0, expected < 1 << 20 else { throw Failure(description: "'\(path)' announced \(expected) sockets") }
        var fds: [Int32] = []
        var bytes: [UInt8] = []
        var failure: Failure?
        // Descriptors and their names may come in separate reads: read until both are whole.
        var received: [Received]?
        while received == nil {
            if fds.count > expected {
                failure = Failure(description: "'\(path)' sent \(fds.count) sockets, not the \(expected) it announced")
                break
            }
            if fds.count == expected, let all = describe(fds, bytes) {
                received = all
                break
            }
            guard UnixSocket.waitReadable(fd, milliseconds: timeoutMilliseconds),
                  let (data, got) = try? UnixSocket.receive(fd), !data.isEmpty || !got.isEmpty else {
                failure = Failure(description: fds.count < expected
                    ? "'\(path)' sent \(fds.count) of \(expected) sockets, then stopped"
                    : "'\(path)' sent malformed socket descriptions")
                break
            }
            fds += got
            bytes += data
            if !got.isEmpty {
                var ack: Int32 = 0
                _ = withUnsafeBytes(of: &ack) { try? fd.writeAll($0) }
            }
        }
        guard let received, failure == nil else {
            for f in fds { Glibc.close(f) }
            throw failure ?? Failure(description: "'\(path)' sent nothing usable")
        }
        return received
    }

    /// The names sent along with `fds`, in their order; nil while some are still missing.
    static func describe(_ fds: [Int32], _ bytes: [UInt8]) -> [Received]? {
        var result: [Received] = []
        var offset = 0
        func name() -> String? {
            guard offset < bytes.count else { return nil }
            let length = Int(bytes[offset])
            guard offset + 1 + length <= bytes.count else { return nil }
            defer { offset += 1 + length }
            return String(decoding: bytes[offset + 1..<offset + 1 + length], as: UTF8.self)
        }
        for f in fds {
            guard let ns = name(), let interface = name(), offset + 4 <= bytes.count else { return nil }
            offset += 4
            result.append(Received(fd: f, namespace: ns, interface: interface))
        }
        return result
    }

    /// Pairs each wanted listener key with a received socket of the same address and options.
    static func match(_ received: [Received], wanted: [ListenerKey]) -> [ListenerKey: Int32] {
        let systemV6Only = (try? FileSystem.readFile("/proc/sys/net/ipv6/bindv6only"))?.first == UInt8(ascii: "1")
        var observed: [(key: ListenerKey, fd: Int32)] = []
        for r in received {
            let fd = FileDescriptor(rawValue: r.fd)
            guard (try? Socket.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN)) == 1 else { continue }
            let local = Socket.localAddress(fd)
            var key: ListenerKey
            switch local.family {
            case AF_INET:
                let value = local.ipv4 ?? 0
                key = ListenerKey(address: .inet(family: .ipv4, address: value == 0 ? nil : IPAddress(v4: value), port: Int(local.port)))
                key.transparent = (try? Socket.option(fd, level: SOL_IP, name: IP_TRANSPARENT)) == 1
            case AF_INET6:
                let bytes = local.addressBytes
                key = ListenerKey(address: .inet(family: .ipv6, address: bytes.allSatisfy { $0 == 0 } ? nil : IPAddress(bytes16: bytes),
                                                 port: Int(local.port)))
                key.v6only = (try? Socket.option(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY)) == 1
                key.transparent = (try? Socket.option(fd, level: SOL_IPV6, name: IPV6_TRANSPARENT)) == 1
            case AF_UNIX:
                guard var path = local.unixPath else { continue }
                if path.hasPrefix("@") {
                    key = ListenerKey(address: .abstract(name: String(path.dropFirst())))
                } else {
                    // HAProxy binds UNIX listeners as PATH.PID.tmp and renames them into place.
                    if path.hasSuffix(".tmp"), let dot = path.dropLast(4).lastIndex(of: "."),
                       path[path.index(after: dot)..<path.index(path.endIndex, offsetBy: -4)].allSatisfy(\.isNumber) {
                        path = String(path[..<dot])
                    }
                    key = ListenerKey(address: .unix(path: path))
                }
            default:
                continue
            }
            key.interface = r.interface.isEmpty ? nil : r.interface
            key.namespace = r.namespace.isEmpty ? nil : r.namespace
            observed.append((key, r.fd))
        }
        var result: [ListenerKey: Int32] = [:]
        var taken = Set<Int32>()
        for want in wanted where result[want] == nil {
            let hit = observed.first { o in
                guard !taken.contains(o.fd), o.key.address == want.address, o.key.interface == want.interface,
                      o.key.namespace == want.namespace, o.key.transparent == want.transparent else { return false }
                // Only a wildcard IPv6 socket can also take IPv4: the flag matters there alone.
                if case .inet(.ipv6, nil, _) = want.address {
                    let v6only = want.v6only ? true : want.v4v6 ? false : systemV6Only
                    return o.key.v6only == v6only
                }
                return true
            }
            if let hit {
                result[want] = hit.fd
                taken.insert(hit.fd)
            }
        }
        return result
    }

    // MARK: server (an old process, from its stats socket)

    /// Sends `listeners` to a client that asked `_getsocks`. Blocks at most a second per
    /// step: this runs in the control loop, never in a data loop.
    @discardableResult
    static func send(_ listeners: [Listener], to peer: FileDescriptor) -> Bool {
        let flags = fcntl(peer.rawValue, F_GETFL)
        _ = fcntl(peer.rawValue, F_SETFL, flags & ~O_NONBLOCK)
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(peer.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(peer.rawValue, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var count = Int32(listeners.count)
        guard (try? withUnsafeBytes(of: &count) { try peer.writeAll($0) }) != nil else { return false }
        var start = 0
        while start < listeners.count {
            let batch = listeners[start..<min(start + batchSize, listeners.count)]
            var bytes: [UInt8] = []
            for l in batch {
                let ns = Array((l.key.namespace ?? "").utf8.prefix(255))
                let interface = Array((l.key.interface ?? "").utf8.prefix(255))
                bytes.append(UInt8(ns.count)); bytes += ns
                bytes.append(UInt8(interface.count)); bytes += interface
                bytes += [0, 0, 0, 0]
            }
            guard (try? UnixSocket.send(peer, bytes, fds: batch.map(\.fd.rawValue))) != nil else { return false }
            start += batch.count
            if batch.count == batchSize, start < listeners.count {
                guard UnixSocket.readExactly(peer, count: 4, milliseconds: 1000) != nil else { return false }
            }
        }
        return true
    }
}
