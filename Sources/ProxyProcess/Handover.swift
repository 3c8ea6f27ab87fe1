import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// The reload channel between an old process and its successor: a private UNIX stream
/// socket in the abstract namespace, keyed by the old pid (`proxy-handover-PID`), carrying
/// length-prefixed frames (a 4-byte big-endian length, then that many bytes of text lines).
///
///     new → old   PROXY-HANDOVER 2 sockets
///     old → new   PROXY-HANDOVER 2 sockets <N>            N descriptors follow in batches
///                 batch <K>, then K hint lines             (K ≤ 253 descriptors, SCM_RIGHTS)
///                 server <backend> <server> up|down ...    the carried state, then
///                 end
///     new → old   stop                                     once the new process can serve
///     old → new   stopped                                  once it has stopped accepting
///
/// Both sides check who is at the other end (SO_PEERCRED): the new process talks only to the
/// very pid it was told to replace, running as its own uid or root; the old one answers only
/// its own uid or root. The new process then asks the kernel what every received descriptor
/// is (`InheritedSockets`): the hint lines are never trusted. The version, the counts and
/// the `end` line are checked; a reply that breaks any of them fails the reload, and the old
/// process goes on serving. State lines a reader does not know are skipped, so a newer
/// binary can take over from an older one of the same protocol version.
enum Handover {
    static let version = 2
    static let magic = "PROXY-HANDOVER"
    /// The longest frame either side accepts.
    static let maxFrame = 16 << 20

    static func endpointName(_ pid: Int32) -> String { "proxy-handover-\(pid)" }

    // MARK: frames

    /// A frame: the length, big-endian, then the text.
    static func frame(_ text: String) -> [UInt8] {
        let body = Array(text.utf8)
        let n = UInt32(body.count)
        return [UInt8(n >> 24), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + body
    }

    /// Why a peer's frames were refused.
    struct ProtocolError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// Splits a byte stream into frames, pairing each `batch K` frame with the K descriptors
    /// that arrived with it (a descriptor arrives with the first byte of its frame).
    struct FrameReader {
        private(set) var bytes: [UInt8] = []
        private(set) var descriptors: [Int32] = []
        /// True when the stream began with the unframed text of protocol 1.
        var looksLikeVersion1: Bool { bytes.starts(with: Array(magic.utf8).prefix(4)) }

        mutating func feed(_ data: [UInt8], fds: [Int32]) {
            bytes += data
            descriptors += fds
        }

        /// The next whole frame, or nil until one is complete.
        mutating func next() throws -> String? {
            guard bytes.count >= 4 else { return nil }
            if looksLikeVersion1 { throw ProtocolError("the peer speaks handover protocol 1") }
            let n = Int(bytes[0]) << 24 | Int(bytes[1]) << 16 | Int(bytes[2]) << 8 | Int(bytes[3])
            guard n <= maxFrame else { throw ProtocolError("a frame of \(n) bytes exceeds the limit of \(maxFrame)") }
            guard bytes.count >= 4 + n else { return nil }
            let text = String(decoding: bytes[4..<4 + n], as: UTF8.self)
            bytes.removeFirst(4 + n)
            return text
        }

        /// Takes `count` descriptors that arrived in order.
        mutating func take(_ count: Int) throws -> [Int32] {
            guard count <= descriptors.count else {
                throw ProtocolError("a batch announced \(count) descriptors but \(descriptors.count) arrived")
            }
            let taken = Array(descriptors.prefix(count))
            descriptors.removeFirst(count)
            return taken
        }

        /// Descriptors received but not claimed by a batch (to be closed).
        mutating func takeAll() -> [Int32] {
            defer { descriptors = [] }
            return descriptors
        }
    }

    // MARK: listener keys as hint text

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

    /// The `fd@N` a hint line says its listener was bound from, if any.
    static func declaredDescriptor(_ hint: String) -> Int32? {
        let w = hint.split(separator: " ")
        guard w.count == 3, w[0] == "listener", let key = decode(w[1], w[2]), case .inheritedFD(let n) = key.address else { return nil }
        return n
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

    /// The old side's reply: a header, batches of descriptors with hint lines, the state.
    /// Returns the frames and, per frame, the descriptors to attach.
    static func reply(sockets: [(fd: Int32, hint: String)], serverStates: [String]) -> [(bytes: [UInt8], fds: [Int32])] {
        var frames: [(bytes: [UInt8], fds: [Int32])] = [(frame("\(magic) \(version) sockets \(sockets.count)"), [])]
        var start = 0
        while start < sockets.count {
            let batch = sockets[start..<min(start + UnixSocket.maxDescriptorsPerMessage, sockets.count)]
            let text = "batch \(batch.count)\n" + batch.map { $0.hint + "\n" }.joined()
            frames.append((frame(text), batch.map(\.fd)))
            start += batch.count
        }
        frames.append((frame(serverStates.map { $0 + "\n" }.joined() + "end\n"), []))
        return frames
    }

    /// What the new side read from one old process.
    struct Reply {
        var descriptors: [Int32] = []
        /// Each descriptor's hint line, as sent (a label only: the kernel says what it is).
        var hints: [String] = []
        /// Server health carried over: "backend/server" → up.
        var serverStates: [String: Bool] = [:]
        /// The runtime API's changes (`RuntimeState`), as lines.
        var runtimeLines: [String] = []
        /// TLS resumption state (`TLSResumption`), as lines.
        var tlsLines: [String] = []
    }

    /// Reads the old side's reply out of `reader`: nil until it is complete. Throws on any
    /// breach of the protocol; the descriptors read so far are then in `partial`.
    struct ReplyParser {
        var expected: Int?
        var reply = Reply()
        var finished = false

        mutating func advance(_ reader: inout FrameReader) throws -> Reply? {
            while !finished, let text = try reader.next() {
                var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                if lines.last == "" { lines.removeLast() }
                guard let expected else {
                    let w = text.split(separator: " ")
                    guard w.count == 4, w[0] == magic, w[2] == "sockets", let n = Int(w[3]), n >= 0 else {
                        throw ProtocolError("an unexpected greeting '\(text.prefix(60))'")
                    }
                    guard w[1] == "\(version)" else { throw ProtocolError("the peer speaks handover protocol \(w[1]), not \(version)") }
                    self.expected = n
                    continue
                }
                if reply.descriptors.count < expected {
                    let w = lines.first?.split(separator: " ") ?? []
                    guard w.count == 2, w[0] == "batch", let k = Int(w[1]), k > 0, k <= UnixSocket.maxDescriptorsPerMessage,
                          reply.descriptors.count + k <= expected, lines.count == k + 1 else {
                        throw ProtocolError("a malformed descriptor batch after \(reply.descriptors.count) of \(expected)")
                    }
                    reply.descriptors += try reader.take(k)
                    reply.hints += lines.dropFirst().map(String.init)
                    continue
                }
                guard lines.last == "end" else { throw ProtocolError("the state did not end with 'end'") }
                for line in lines.dropLast() {
                    let w = line.split(separator: " ")
                    if w.first == "server", w.count >= 4 { reply.serverStates["\(w[1])/\(w[2])"] = w[3] == "up" }
                    else if let k = w.first, RuntimeState.carries(k) { reply.runtimeLines.append(String(line)) }
                    else if line.hasPrefix("tls-") { reply.tlsLines.append(String(line)) }
                }
                finished = true
            }
            return finished ? reply : nil
        }
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
