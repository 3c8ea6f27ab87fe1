import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// Listening sockets received from another process (our handover, HAProxy's `-x`), each
/// identified by asking the kernel what it is: whatever key the sender declared is only a
/// hint. A descriptor that is not a listening stream socket (or a TCP listener paused by
/// `disable frontend`) is refused.
struct InheritedSockets {
    /// A received socket as the kernel describes it.
    struct Observed {
        let fd: Int32
        let key: ListenerKey
        /// The `fd@N` this socket serves: N itself for a descriptor given at that number
        /// (socket activation, a master), or the number the old process's `bind fd@N` used.
        var declaredFD: Int32?
    }

    /// Every descriptor received, so that those left unused can be closed.
    private(set) var received: [Int32] = []
    /// Those the kernel confirmed to be listening stream sockets, in arrival order.
    private(set) var observed: [Observed] = []
    /// Descriptors refused (not a listening stream socket), with why, for the report.
    private(set) var refused: [String] = []

    /// Takes ownership of `fds`; `interfaceHints` are names sent alongside (HAProxy's `-x`).
    /// `declared`: the `fd@N` each one served (`asThemselves`: each serves its own number).
    mutating func add(_ fds: [Int32], interfaceHints: [String?] = [], declared: [Int32?] = [], asThemselves: Bool = false) {
        for (i, fd) in fds.enumerated() {
            received.append(fd)
            let hint = i < interfaceHints.count ? interfaceHints[i] : nil
            if let key = Self.observe(FileDescriptor(rawValue: fd), interfaceHint: hint) {
                observed.append(Observed(fd: fd, key: key, declaredFD: asThemselves ? fd : i < declared.count ? declared[i] : nil))
            } else {
                refused.append("descriptor \(fd) is not a listening stream socket")
            }
        }
    }

    /// The listener key of a listening socket, from getsockname and its socket options.
    static func observe(_ fd: FileDescriptor, interfaceHint: String? = nil) -> ListenerKey? {
        guard (try? Socket.option(fd, level: SOL_SOCKET, name: SO_TYPE)) == Socket.streamType,
              let domain = try? Socket.option(fd, level: SOL_SOCKET, name: SO_DOMAIN) else { return nil }
        let local = Socket.localAddress(fd)
        guard local.family == domain else { return nil }
        if (try? Socket.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN)) != 1 {
            // A TCP listener the old process paused (`disable frontend` shut it for reading):
            // still bound to its port, connected to nothing. The new engine listens again
            // unless the frontend is carried as disabled.
            var peer = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let connected = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd.rawValue, $0, &length) }
            } == 0
            guard local.family == AF_INET || local.family == AF_INET6, local.port != 0, !connected else { return nil }
        }
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
            guard var path = local.unixPath, !path.isEmpty else { return nil }
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
            return nil
        }
        key.interface = Socket.boundDevice(fd) ?? (interfaceHint?.isEmpty == false ? interfaceHint : nil)
        return key
    }

    /// Pairs each wanted key with an observed socket of the same address and options; each
    /// socket serves one key at most.
    func match(_ wanted: [ListenerKey]) -> [ListenerKey: Int32] {
        let systemV6Only = (try? FileSystem.readFile("/proc/sys/net/ipv6/bindv6only"))?.first == UInt8(ascii: "1")
        var result: [ListenerKey: Int32] = [:]
        var taken = Set<Int32>()
        for want in wanted where result[want] == nil {
            if case .inheritedFD(let n) = want.address {
                if let o = observed.first(where: { !taken.contains($0.fd) && $0.declaredFD == n }) {
                    result[want] = o.fd
                    taken.insert(o.fd)
                }
                continue
            }
            let hit = observed.first { o in
                guard !taken.contains(o.fd), o.key.address == want.address, o.key.interface == want.interface,
                      o.key.transparent == want.transparent else { return false }
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

    /// Closes every received descriptor not in `kept`.
    func closeUnused(keeping kept: Set<Int32>) {
        for fd in received where !kept.contains(fd) { FileDescriptor(rawValue: fd).close() }
    }

    /// Closes everything received (a failed start).
    func closeAll() { closeUnused(keeping: []) }
}
