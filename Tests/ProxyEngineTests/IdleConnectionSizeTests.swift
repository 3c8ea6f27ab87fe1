import Glibc
import Testing
@testable import ProxyConfig
@testable import ProxyEngine
import ProxyRules
import ProxySystem

@_silgen_name("malloc_usable_size") func mallocUsableSize(_ p: UnsafeMutableRawPointer) -> Int

/// What an idle keep-alive connection costs in memory: its transaction fits malloc's fast
/// per-thread cache (tcache, chunks up to 1,032 bytes) and its Connection stays small.
/// Measured beside HAProxy by contrib/bench/engine (RSS with 8,000 idle connections).
@Suite struct IdleConnectionSize {
    /// A Swift class's instance size, from its metadata: on Linux (no Objective-C fields) it
    /// sits 24 bytes in, after the kind, the superclass, the flags and the address point.
    static func instanceSize(_ type: AnyClass) -> Int {
        Int(unsafeBitCast(type, to: UnsafeRawPointer.self).load(fromByteOffset: 24, as: UInt32.self))
    }

    /// The usable size of the chunk glibc's malloc makes for `n` bytes (16-byte chunks with
    /// an 8-byte header, 32 at least).
    static func chunk(_ n: Int) -> Int { max(32, (n + 8 + 15) & ~15) - 8 }

    @Test func transactionAndConnectionStaySmall() throws {
        let m = try model("""
        defaults
            mode http
            timeout connect 1s
            timeout client 1s
            timeout server 1s
        frontend f
            bind 127.0.0.1:1
            default_backend b
        backend b
            server s 127.0.0.1:2
        """)
        let loop = try EventLoop(index: 0, bufferSize: 16384)
        let context = LoopContext(loop: loop, model: m)
        var fds: [Int32] = [0, 0]
        _ = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds)
        let key = m.configuration.proxies[0].binds[0].listenerKeys[0]
        let listener = Listener(key: key, fd: FileDescriptor(rawValue: fds[1]), frontendName: "f", options: m.configuration.proxies[0].binds[0].options)
        let acceptor = Acceptor(listener: listener, frontend: m.frontends[0], context: context)
        let c = try Connection.accepted(FileDescriptor(rawValue: fds[0]), context: context)
        let t = HTTPTransaction(connection: c, peer: SocketAddress(ipv4: 1, port: 2), local: nil, acceptor: acceptor, context: context)
        // What each object asks malloc for (its class's instance size), and the chunk that
        // takes: malloc's usable size of the very object may be a granule more when a free
        // chunk was not worth splitting, which depends on what the other tests left behind.
        let connectionBytes = Self.chunk(Self.instanceSize(Connection.self))
        let transactionBytes = Self.chunk(Self.instanceSize(HTTPTransaction.self))
        #expect(mallocUsableSize(Unmanaged.passUnretained(c).toOpaque()) >= connectionBytes)
        #expect(mallocUsableSize(Unmanaged.passUnretained(t).toOpaque()) >= transactionBytes)
        #expect(transactionBytes <= 1032, "HTTPTransaction takes \(transactionBytes) bytes")
        #expect(connectionBytes <= 144, "Connection takes \(connectionBytes) bytes")
        t.close()
        Glibc.close(fds[1])
    }
}
