import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
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
/// (`InheritedSockets`); the interface name carried alongside is only a hint.
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
            for f in fds { FileDescriptor(rawValue: f).close() }
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

    // MARK: server (an old process, from its stats socket)

    /// Sends `listeners` to a client that asked `_getsocks`. Blocks at most a second per
    /// step: this runs in the control loop, never in a data loop.
    @discardableResult
    static func send(_ listeners: [Listener], to peer: FileDescriptor) -> Bool {
        guard (try? Socket.setBlocking(peer, true)) != nil, (try? Socket.setTimeouts(peer, milliseconds: 1000)) != nil else { return false }
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
