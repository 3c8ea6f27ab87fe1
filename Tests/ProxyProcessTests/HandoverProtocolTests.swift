import Glibc
import Testing
@testable import ProxyConfig
@testable import ProxyProcess
import ProxyRules
import ProxySystem

/// The handover's frames, batches and checks, without processes: what one side writes, the
/// other reads, and every breach of the protocol is refused.
@Suite struct HandoverProtocol {
    /// Runs the receiver's parser over frames as they would arrive (descriptors with their frame).
    func parse(_ frames: [(bytes: [UInt8], fds: [Int32])], split: Int = .max) throws -> Handover.Reply? {
        var reader = Handover.FrameReader()
        var parser = Handover.ReplyParser()
        for f in frames {
            var rest = f.bytes[...]
            var first = true
            while !rest.isEmpty {
                let piece = rest.prefix(split)
                reader.feed(Array(piece), fds: first ? f.fds : [])
                first = false
                rest = rest.dropFirst(piece.count)
                if let r = try parser.advance(&reader) { return r }
            }
        }
        return nil
    }

    @Test func keysRoundTrip() {
        let keys = [
            ListenerKey(address: .inet(family: .ipv4, address: IPAddress(parsing: "127.0.0.1"), port: 80)),
            ListenerKey(address: .inet(family: .ipv6, address: nil, port: 443), v6only: true, interface: "eth 0"),
            ListenerKey(address: .unix(path: "/run/a b%.sock")),
            ListenerKey(address: .abstract(name: "x\ny")),
        ]
        for k in keys {
            let text = Handover.encode(k)
            let parts = text.split(separator: " ")
            #expect(parts.count == 2)
            #expect(Handover.decode(parts[0], parts[1]) == k)
        }
    }

    @Test func aReplyOfManyBatchesIsReadWhole() throws {
        // 600 descriptors: three batches (253, 253, 94), each with its own frame.
        let sockets = (0..<600).map { (fd: Int32(1000 + $0), hint: "listener x") }
        let frames = Handover.reply(sockets: sockets, serverStates: ["server app s1 down", "future line"])
        #expect(frames.count == 5)
        #expect(frames.map(\.fds.count) == [0, 253, 253, 94, 0])
        for split in [.max, 7, 1] {
            let reply = try #require(try parse(frames, split: split))
            #expect(reply.descriptors == sockets.map(\.fd))
            #expect(reply.serverStates == ["app/s1": false])
        }
    }

    @Test func breachesAreRefused() throws {
        func refused(_ frames: [(bytes: [UInt8], fds: [Int32])]) -> Bool {
            do { return try parse(frames) == nil } catch { return true }
        }
        let good = Handover.reply(sockets: [(fd: 5, hint: "a"), (fd: 6, hint: "b")], serverStates: [])
        #expect(try parse(good) != nil)
        // Another version.
        #expect(refused([(Handover.frame("PROXY-HANDOVER 3 sockets 0"), []), (Handover.frame("end\n"), [])]))
        // More descriptors than announced, and a batch whose descriptors did not come.
        #expect(refused([(Handover.frame("PROXY-HANDOVER 2 sockets 1"), []), (Handover.frame("batch 2\na\nb\n"), [5, 6])]))
        #expect(refused([(Handover.frame("PROXY-HANDOVER 2 sockets 1"), []), (Handover.frame("batch 1\na\n"), [])]))
        // A batch over the kernel's limit.
        #expect(refused([(Handover.frame("PROXY-HANDOVER 2 sockets 300"), []), (Handover.frame("batch 300\n"), [])]))
        // The state without its end line never completes.
        #expect(refused([good[0], good[1], (Handover.frame("server a b up\n"), [])]))
        // A frame over the limit, and the unframed text of protocol 1.
        #expect(refused([([0x7f, 0xff, 0xff, 0xff], [])]))
        var reader = Handover.FrameReader()
        reader.feed(Array("PROXY-HANDOVER 1\nlistener 0 x\nend\n".utf8), fds: [])
        #expect(reader.looksLikeVersion1)
        #expect(throws: Handover.ProtocolError.self) { _ = try reader.next() }
    }

    /// A socket the kernel says is not listening, or not a stream, is refused whatever its hint.
    @Test func theKernelDecidesWhatASocketIs() throws {
        let listening = try Socket.make(family: AF_INET)
        try Socket.bind(listening, SocketAddress(ipv4: 0x7f000001, port: 0))
        try Socket.listen(listening, backlog: 4)
        let idle = try Socket.make(family: AF_INET)
        let datagram = try Socket.make(family: AF_INET, type: Int32(SOCK_DGRAM.rawValue))
        var sockets = InheritedSockets()
        sockets.add([listening.rawValue, idle.rawValue, datagram.rawValue])
        #expect(sockets.observed.map(\.fd) == [listening.rawValue])
        #expect(sockets.refused.count == 2)
        let port = Int(Socket.localAddress(listening).port)
        let wanted = ListenerKey(address: .inet(family: .ipv4, address: IPAddress(parsing: "127.0.0.1"), port: port))
        let other = ListenerKey(address: .inet(family: .ipv4, address: IPAddress(parsing: "127.0.0.1"), port: port + 1))
        #expect(sockets.match([other, wanted]) == [wanted: listening.rawValue])
        sockets.closeAll()
    }
}
