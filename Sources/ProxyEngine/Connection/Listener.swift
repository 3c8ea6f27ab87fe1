import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// A listening socket and the frontend it feeds. A value: it can be bound here, or built
/// from a descriptor inherited from an older process (the reload issue's handover).
public struct Listener: Sendable {
    public let key: ListenerKey
    public let fd: FileDescriptor
    public let frontendName: String
    public let options: BindOptions
    /// `ssl`: the TLS context its connections start with.
    public var tls: TLSBinding?

    public init(key: ListenerKey, fd: FileDescriptor, frontendName: String, options: BindOptions) {
        self.key = key
        self.fd = fd
        self.frontendName = frontendName
        self.options = options
    }

    /// An IPv4 or IPv6 stream listener (what `disable frontend` shuts and listens again).
    public var isTCP: Bool {
        if case .inet = key.address { return true }
        return false
    }

    /// The socket address a listener key binds to.
    public static func socketAddress(for key: ListenerKey) throws -> SocketAddress? {
        switch key.address {
        case .inet(let family, let address, let port):
            if family == .ipv4 { return SocketAddress(ipv4: address?.v4Value ?? 0, port: UInt16(port)) }
            return SocketAddress(ipv6: address?.bytes16 ?? [UInt8](repeating: 0, count: 16), port: UInt16(port))
        case .unix(let path): return try SocketAddress(checkedUnixPath: path)
        case .abstract(let name): return try SocketAddress(checkedUnixPath: name, abstract: true)
        case .inheritedFD: return nil
        }
    }

    /// Binds a fresh socket for `key`, with SO_REUSEADDR and (unless told not to) SO_REUSEPORT.
    /// Every option in the key is applied or the bind fails: a listener is never left on
    /// more than it was asked for (a failed SO_BINDTODEVICE would listen on every interface).
    public static func bind(_ key: ListenerKey, frontend: String, options: BindOptions, backlog: Int,
                            reusePort: Bool) throws -> Listener {
        if case .inheritedFD(let n) = key.address {
            // Only a listening socket this process was given: never some other descriptor
            // that happens to have that number.
            let fd = FileDescriptor(rawValue: n)
            guard (try? Socket.option(fd, level: SOL_SOCKET, name: SO_ACCEPTCONN)) == 1 else { throw SystemError("bind", code: ENOTSOCK) }
            try Socket.setNonBlocking(fd)
            return Listener(key: key, fd: fd, frontendName: frontend, options: options)
        }
        guard let address = try socketAddress(for: key) else { throw SystemError("bind", code: EINVAL) }
        let fd = try Socket.make(family: address.family)
        do {
            if address.family != AF_UNIX {
                try Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
                if reusePort { try Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1) }
                if address.family == AF_INET6 && (key.v6only || key.v4v6) {
                    try Socket.setOption(fd, level: Int32(IPPROTO_IPV6), name: IPV6_V6ONLY, value: key.v6only ? 1 : 0)
                }
                if key.transparent {
                    try Socket.setOption(fd, level: address.family == AF_INET6 ? SOL_IPV6 : SOL_IP,
                                         name: address.family == AF_INET6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, value: 1)
                }
                if options.deferAccept { try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_DEFER_ACCEPT, value: 1) }
                if options.tcpFastOpen {
                    try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_FASTOPEN, value: Int32(clamping: options.backlog ?? backlog))
                }
                if let mss = options.maximumSegmentSize { try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_MAXSEG, value: Int32(mss)) }
                if let ut = options.userTimeout { try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_USER_TIMEOUT, value: Int32(clamping: ut)) }
                if let name = key.interface { try Socket.bindToDevice(fd, name) }
            }
            if case .unix(let path) = key.address {
                let (directory, name) = try Directory.containing(path)
                defer { directory.close() }
                try directory.unlink(name)
                try Socket.bind(fd, address)
                if let mode = options.mode { try directory.changeMode(name, mode) }
                if options.uid != nil || options.gid != nil { try directory.changeOwner(name, uid: options.uid, gid: options.gid) }
            } else {
                try Socket.bind(fd, address)
            }
            try Socket.listen(fd, backlog: Int32(clamping: options.backlog ?? backlog))
        } catch {
            fd.close()
            throw error
        }
        return Listener(key: key, fd: fd, frontendName: frontend, options: options)
    }

    /// `option tcp-smart-accept`, as HAProxy applies it: TCP_QUICKACK off on the listening
    /// socket (after listen(2), which resets it), inherited by each connection it accepts, so
    /// the ACK of a request rides on its response; on again where the option is off, since an
    /// inherited socket keeps what the last process set. A hint: a failure changes nothing.
    static func setDelayedAck(_ fd: FileDescriptor, _ key: ListenerKey, _ on: Bool) {
        guard case .inet = key.address else { return }
        try? Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_QUICKACK, value: on ? 0 : 1)
    }

    /// Obtains every `bind` line's sockets: an inherited socket with the same key first (the
    /// very kernel socket, so its accept queue is never closed), a fresh bind otherwise.
    public static func bindAll(_ configuration: Configuration, reusePort: Bool,
                               inherited: [ListenerKey: Int32] = [:]) throws -> [Listener] {
        var listeners: [Listener] = []
        do {
            for p in configuration.proxies where p.isFrontend {
                let backlog = p.settings.backlog ?? p.settings.maxconn ?? 1024
                for b in p.binds {
                    let smartAccept = p.settings.options.smartAccept ?? (p.settings.mode == .http || b.options.ssl)
                    // Certificates are loaded and checked here, before the point of no return.
                    let tls = b.options.ssl ? try TLSBinding.load(b, global: configuration.global) : nil
                    for key in b.listenerKeys {
                        if let fd = inherited[key] {
                            let f = FileDescriptor(rawValue: fd)
                            try Socket.setNonBlocking(f)
                            var l = Listener(key: key, fd: f, frontendName: p.name, options: b.options)
                            l.tls = tls
                            setDelayedAck(f, key, smartAccept)
                            listeners.append(l)
                            continue
                        }
                        do {
                            var l = try bind(key, frontend: p.name, options: b.options, backlog: backlog, reusePort: reusePort)
                            l.tls = tls
                            setDelayedAck(l.fd, key, smartAccept)
                            listeners.append(l)
                        } catch let e as SystemError {
                            throw BindError(location: b.location, address: key.description, error: e)
                        }
                    }
                }
            }
        } catch {
            for l in listeners where !inherited.values.contains(l.fd.rawValue) { l.fd.close() }
            throw error
        }
        return listeners
    }
}

/// A `bind` that failed, with its config line.
public struct BindError: Error, CustomStringConvertible {
    public let location: SourceLocation
    public let address: String
    public let error: SystemError
    public var description: String { "\(location): cannot bind \(address): \(error.reason)" }
}
