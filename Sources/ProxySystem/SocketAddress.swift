import CProxySys
import Glibc

/// A socket address (IPv4, IPv6 or UNIX), held in a `sockaddr_storage`.
public struct SocketAddress: Sendable, CustomStringConvertible {
    public var storage = sockaddr_storage()
    public var length: socklen_t = 0

    public init() {}

    /// An IPv4 address from host-order value and port.
    public init(ipv4 address: UInt32, port: UInt16) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = address.bigEndian
        withUnsafeMutableBytes(of: &storage) { raw in
            withUnsafeBytes(of: sin) { raw.copyMemory(from: $0) }
        }
        length = socklen_t(MemoryLayout<sockaddr_in>.size)
    }

    /// An IPv6 address from 16 network-order bytes and a port.
    public init(ipv6 bytes: [UInt8], port: UInt16) {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in for i in 0..<16 { raw[i] = bytes[i] } }
        withUnsafeMutableBytes(of: &storage) { raw in
            withUnsafeBytes(of: sin6) { raw.copyMemory(from: $0) }
        }
        length = socklen_t(MemoryLayout<sockaddr_in6>.size)
    }

    /// Longest UNIX path or abstract name a `sockaddr_un` holds (108 bytes, one for the NUL).
    public static let maxUnixPathLength = 107

    /// A UNIX socket path, or an abstract name when `abstract` is true. A name too long for a
    /// `sockaddr_un` is an error (ENAMETOOLONG), never cut short.
    public init(checkedUnixPath path: String, abstract: Bool = false) throws {
        let bytes = Array(path.utf8)
        guard bytes.count <= Self.maxUnixPathLength - (abstract ? 1 : 0) else { throw SystemError("bind", code: ENAMETOOLONG) }
        self.init(unixBytes: bytes, abstract: abstract)
    }

    /// An abstract name the program makes itself (short by construction).
    public init(unixPath path: String, abstract: Bool) {
        let bytes = Array(path.utf8)
        precondition(bytes.count <= Self.maxUnixPathLength - 1, "UNIX socket name too long: \(path)")
        self.init(unixBytes: bytes, abstract: abstract)
    }

    private init(unixBytes bytes: [UInt8], abstract: Bool) {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sun.sun_path) { raw in
            var offset = 0
            if abstract { raw[0] = 0; offset = 1 }
            for (i, b) in bytes.enumerated() { raw[offset + i] = b }
        }
        withUnsafeMutableBytes(of: &storage) { raw in
            withUnsafeBytes(of: sun) { raw.copyMemory(from: $0) }
        }
        let pathLength = abstract ? 1 + bytes.count : bytes.count + 1
        length = socklen_t(MemoryLayout<sa_family_t>.size + pathLength)
    }

    public var family: Int32 { Int32(storage.ss_family) }

    /// Sets the port of an IPv4 or IPv6 address (host order in, network order stored).
    public mutating func setPort(_ port: UInt16) {
        guard family == AF_INET || family == AF_INET6 else { return }
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self) }
    }

    /// The port in host order (0 for UNIX sockets).
    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET: return UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
            case AF_INET6: return UInt16(bigEndian: raw.load(fromByteOffset: 2, as: UInt16.self))
            default: return 0
            }
        }
    }

    /// The address bytes: 4 for IPv4, 16 for IPv6, empty otherwise.
    public var addressBytes: [UInt8] {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case AF_INET: return Array(raw[4..<8])
            case AF_INET6: return Array(raw[8..<24])
            default: return []
            }
        }
    }

    /// The path of a UNIX address, or nil. An abstract name comes back with a leading "@".
    public var unixPath: String? {
        guard family == AF_UNIX else { return nil }
        let offset = MemoryLayout<sa_family_t>.size
        let count = Int(length) - offset
        guard count > 0 else { return "" }
        return withUnsafeBytes(of: storage) { raw in
            let bytes = Array(raw[offset..<offset + count])
            if bytes.first == 0 { return "@" + String(decoding: bytes.dropFirst(), as: UTF8.self) }
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            return String(decoding: bytes[..<end], as: UTF8.self)
        }
    }

    /// IPv4 address in host order, or nil.
    public var ipv4: UInt32? {
        guard family == AF_INET else { return nil }
        return withUnsafeBytes(of: storage) { UInt32(bigEndian: $0.load(fromByteOffset: 4, as: UInt32.self)) }
    }

    public var description: String {
        switch family {
        case AF_INET:
            let b = addressBytes
            return "\(b[0]).\(b[1]).\(b[2]).\(b[3]):\(port)"
        case AF_INET6:
            var text = [CChar](repeating: 0, count: 64)
            var bytes = addressBytes
            _ = inet_ntop(AF_INET6, &bytes, &text, 64)
            let end = text.firstIndex(of: 0) ?? text.count
            return "[" + String(decoding: text[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self) + "]:\(port)"
        case AF_UNIX:
            return "unix"
        default:
            return "?"
        }
    }

    /// Calls `body` with a `sockaddr` pointer and length.
    public func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) rethrows -> R {
        try withUnsafePointer(to: storage) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }
}

/// getaddrinfo(3), blocking: for the loader only, never on a loop.
public enum NameResolver {
    public enum Family { case ipv4, ipv6 }

    /// The first address of `host`: 4 or 16 network-order bytes, or nil.
    public static func firstAddress(of host: String, family: Family?) -> [UInt8]? {
        var hints = addrinfo()
        hints.ai_family = family == .ipv4 ? AF_INET : family == .ipv6 ? AF_INET6 : AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let sa = first.pointee.ai_addr else { return nil }
        if first.pointee.ai_family == AF_INET {
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                var a = p.pointee.sin_addr
                return withUnsafeBytes(of: &a) { Array($0) }
            }
        }
        if first.pointee.ai_family == AF_INET6 {
            return sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                var a = p.pointee.sin6_addr
                return withUnsafeBytes(of: &a) { Array($0) }
            }
        }
        return nil
    }
}
