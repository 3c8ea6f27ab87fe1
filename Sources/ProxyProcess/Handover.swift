import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import CProxySys
import Glibc

/// The reload channel between an old process and its successor: one versioned, line-based
/// exchange over a private UNIX socket in the abstract namespace, keyed by the old pid.
///
///     new → old   PROXY-HANDOVER 1 listeners
///     old → new   PROXY-HANDOVER 1                 (with the listening fds, SCM_RIGHTS)
///                 listener <i> <key>                one per fd, in order
///                 server <backend> <server> up|down the carried state
///                 end
///     new → old   stop                              once the new process can serve
///     old → new   stopped                           once it has stopped accepting
///
/// Lines a receiver does not know are skipped, so a newer binary can take over from an
/// older one. Abstract sockets have no file permissions: a peer is served only when
/// SO_PEERCRED shows our own uid, or root.
enum Handover {
    static let version = 1
    static let magic = "PROXY-HANDOVER"

    static func endpointName(_ pid: Int32) -> String { "proxy-handover-\(pid)" }

    // MARK: listener keys as text

    static func escape(_ s: String) -> String {
        s.replacingAll("%", "%25").replacingAll(" ", "%20").replacingAll("\n", "%0A")
    }

    static func unescape(_ s: Substring) -> String {
        String(s).replacingAll("%0A", "\n").replacingAll("%20", " ").replacingAll("%25", "%")
    }

    static func encode(_ k: ListenerKey) -> String {
        let address: String
        switch k.address {
        case .inet(let family, let ip, let port): address = "inet,\(family.rawValue),\(ip?.description ?? "*"),\(port)"
        case .unix(let path): address = "unix," + path
        case .abstract(let name): address = "abns," + name
        case .inheritedFD(let fd): address = "fd,\(fd)"
        }
        let options = "v4v6=\(k.v4v6 ? 1 : 0),v6only=\(k.v6only ? 1 : 0),transparent=\(k.transparent ? 1 : 0),if=\(k.interface ?? ""),ns=\(k.namespace ?? "")"
        return escape(address) + " " + escape(options)
    }

    static func decode(_ address: Substring, _ options: Substring) -> ListenerKey? {
        let a = unescape(address)
        let parts = a.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        let listen: ListenAddress
        switch parts.first {
        case "inet":
            guard parts.count == 4, let family = AddressFamily(rawValue: parts[1]), let port = Int(parts[3]) else { return nil }
            listen = .inet(family: family, address: parts[2] == "*" ? nil : IPAddress(parsing: parts[2]), port: port)
        case "unix": listen = .unix(path: String(a.dropFirst(5)))
        case "abns": listen = .abstract(name: String(a.dropFirst(5)))
        case "fd":
            guard parts.count == 2, let fd = Int32(parts[1]) else { return nil }
            listen = .inheritedFD(fd)
        default: return nil
        }
        var o: [String: String] = [:]
        for item in unescape(options).split(separator: ",") {
            let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if kv.count == 2 { o[String(kv[0])] = String(kv[1]) }
        }
        return ListenerKey(address: listen, v4v6: o["v4v6"] == "1", v6only: o["v6only"] == "1",
                           interface: (o["if"] ?? "").isEmpty ? nil : o["if"], namespace: (o["ns"] ?? "").isEmpty ? nil : o["ns"],
                           transparent: o["transparent"] == "1")
    }

    // MARK: new process side

    /// What a new process received from old ones.
    struct Inheritance {
        /// Received listening sockets by key (the first wins; the rest are spare).
        var listeners: [ListenerKey: Int32] = [:]
        /// Every received descriptor, to close the unused ones after the acknowledgements.
        var received: [Int32] = []
        /// Server health carried over: (backend, server) → up.
        var serverStates: [String: Bool] = [:]
        /// Open channels to old processes, for `stop` and its acknowledgement.
        var channels: [(pid: Int32, fd: FileDescriptor)] = []
    }

    /// Asks each old pid for its listeners. Pids without an endpoint are skipped here
    /// (they will only be signalled).
    static func collect(from pids: [Int32]) -> Inheritance {
        var result = Inheritance()
        for pid in pids {
            guard let fd = UnixSocket.connectAbstract(endpointName(pid)) else { continue }
            do {
                try fd.writeAll("\(magic) \(version) listeners\n")
                guard UnixSocket.waitReadable(fd, milliseconds: 2000) else { fd.close(); continue }
                let (bytes, fds) = try UnixSocket.receive(fd)
                result.received += fds
                let text = String(decoding: bytes, as: UTF8.self)
                for line in text.split(separator: "\n") {
                    let w = line.split(separator: " ")
                    switch w.first {
                    case "listener" where w.count >= 4:
                        if let i = Int(w[1]), i < fds.count, let key = decode(w[2], w[3]), result.listeners[key] == nil {
                            result.listeners[key] = fds[i]
                        }
                    case "server" where w.count >= 4:
                        result.serverStates["\(w[1])/\(w[2])"] = w[3] == "up"
                    default:
                        break
                    }
                }
                result.channels.append((pid, fd))
            } catch {
                fd.close()
            }
        }
        return result
    }

    /// Says `stop` and waits for `stopped`: the old process no longer accepts.
    static func stop(_ channel: FileDescriptor, timeoutMilliseconds: Int32 = 5000) -> Bool {
        defer { channel.close() }
        guard (try? channel.writeAll("stop\n")) != nil else { return false }
        guard UnixSocket.waitReadable(channel, milliseconds: timeoutMilliseconds) else { return false }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { (try? channel.read(into: $0)) ?? 0 }
        return String(decoding: buffer[0..<max(0, n)], as: UTF8.self).hasPrefix("stopped")
    }

    // MARK: old process side

    /// This process's endpoint, served from the control loop.
    final class Endpoint {
        let fd: FileDescriptor

        init?() {
            let raw = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard raw >= 0 else { return nil }
            let address = SocketAddress(unixPath: Handover.endpointName(getpid()), abstract: true)
            guard address.withSockAddr({ Glibc.bind(raw, $0, $1) }) == 0, Glibc.listen(raw, 16) == 0 else {
                Glibc.close(raw)
                return nil
            }
            fd = FileDescriptor(rawValue: raw)
        }

        /// Accepts one peer of our uid (or root), and answers its `listeners` request.
        /// Returns the channel, which stays open for `stop`.
        func serveOne(listeners: [Listener], model: RuntimeModel) -> FileDescriptor? {
            let raw = cproxy_accept4(fd.rawValue, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
            guard raw >= 0 else { return nil }
            let peer = FileDescriptor(rawValue: raw)
            guard let uid = UnixSocket.peerUID(peer), uid == getuid() || uid == 0 else {
                peer.close()
                return nil
            }
            guard UnixSocket.waitReadable(peer, milliseconds: 2000) else { peer.close(); return nil }
            var buffer = [UInt8](repeating: 0, count: 256)
            let n = buffer.withUnsafeMutableBytes { (try? peer.read(into: $0)) ?? 0 }
            let request = String(decoding: buffer[0..<max(0, n)], as: UTF8.self)
            guard request.hasPrefix(Handover.magic), request.contains("listeners") else { peer.close(); return nil }
            var text = "\(Handover.magic) \(Handover.version)\n"
            var fds: [Int32] = []
            for l in listeners.prefix(253) {
                text += "listener \(fds.count) \(Handover.encode(l.key))\n"
                fds.append(l.fd.rawValue)
            }
            for (_, b) in model.backends {
                for s in b.servers { text += "server \(b.name) \(s.name) \(s.isUp.load(ordering: .relaxed) ? "up" : "down")\n" }
            }
            text += "end\n"
            do { try UnixSocket.send(peer, Array(text.utf8), fds: fds) } catch {
                peer.close()
                return nil
            }
            return peer
        }

        func close() { fd.close() }
    }
}

extension String {
    /// Replaces every occurrence of `target` (no Foundation in this binary).
    func replacingAll(_ target: String, _ replacement: String) -> String {
        guard !target.isEmpty, contains(target) else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    /// The first range of `target`, by scalars.
    func range(of target: String) -> Range<Index>? {
        guard let first = target.first else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i] == first, self[i...].hasPrefix(target) {
                return i..<index(i, offsetBy: target.count)
            }
            i = index(after: i)
        }
        return nil
    }
}
