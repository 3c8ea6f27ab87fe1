import CProxyTLS
import Synchronization
import ProxyRules
import ProxySystem
import Glibc

/// One TLS session over a connection's socket, server side (`bind ... ssl`) or client side
/// (`server ... ssl`): bytes read are decrypted, bytes written are encrypted, the handshake
/// runs inside the first reads or writes. It owns the OpenSSL session and frees it with itself.
final class TLSTransport: Transport {
    let session: UnsafeMutableRawPointer
    private(set) var wants = TransportWait.read
    /// The handshake failed (a protocol error before it finished): logged as HAProxy does.
    private(set) var handshakeFailed = false

    /// The SNI a client session sent (nil: none, or an accepted session).
    private(set) var serverName: String?
    /// Where an accepted session counts its handshake (nil: a server-side session).
    private let counters: TLSCounters?
    private var counted = false
    /// The server context an accepted session was made from (nil for client sessions).
    private let context: TLSContext?
    /// When an accepted session's handshake completed (coarse monotonic ms; 0: not yet), for `%Th`.
    private(set) var establishedAtMs: Int64 = 0

    /// A session for an accepted socket; nil when OpenSSL cannot make one.
    init?(accepting fd: FileDescriptor, context: TLSContext, counters: TLSCounters) {
        guard let s = cproxy_tls_accept(context.handle, fd.rawValue) else { return nil }
        session = s
        // Its context (and SNI table) lives as long as the session: `commit ssl cert` may
        // publish another one meanwhile.
        self.context = context
        self.counters = counters
        counters.open.add(1, ordering: .relaxed)
    }

    /// A client session on a connecting socket to a TLS server, sending `serverName` as SNI.
    init?(connecting fd: FileDescriptor, to tls: ServerTLS, serverName: String?) {
        let made = serverName.withOptionalCString { name in
            tls.verifyHost.withOptionalCString { host in cproxy_tls_connect(tls.context, fd.rawValue, name, host, tls.reuse) }
        }
        guard let s = made else { return nil }
        session = s
        wants = .write
        counters = nil
        context = nil
        self.serverName = serverName
    }

    deinit {
        if let c = counters { c.open.subtract(1, ordering: .relaxed) }
        cproxy_tls_free(session)
    }

    /// Counts the handshake once it completed (accepted sessions).
    @inline(__always)
    private func noteEstablished() {
        guard !counted, let c = counters, established else { return }
        counted = true
        establishedAtMs = Clock.coarseMilliseconds()
        c.handshakes.add(1, ordering: .relaxed)
        if resumed { c.resumed.add(1, ordering: .relaxed) }
    }

    /// Why the peer's certificate was refused, if it was.
    var verifyError: String? { cproxy_tls_verify_error(session).map { String(cString: $0) } }

    func read(_ connection: Connection, into pointer: UnsafeMutableRawPointer, count: Int) throws -> IOResult<Int> {
        let r = cproxy_tls_read(session, pointer, count)
        // A broken stream ends reading as a FIN does, without an error to allocate: most
        // clients leave without close_notify, and that is the common end of a connection.
        if r == Int(CPROXY_TLS_ERROR) {
            if !counted { noteEstablished() }
            brokenStream()
            return .done(0)
        }
        return try outcome(r, "SSL_read")
    }

    func write(_ connection: Connection, from pointer: UnsafeRawPointer, count: Int) throws -> IOResult<Int> {
        try outcome(cproxy_tls_write(session, pointer, count), "SSL_write")
    }

    private func outcome(_ r: Int, _ call: String) throws -> IOResult<Int> {
        if !counted { noteEstablished() }
        if r >= 0 { return .done(r) }
        switch r {
        case Int(CPROXY_TLS_WANT_READ):
            wants = .read
            return .wouldBlock
        case Int(CPROXY_TLS_WANT_WRITE):
            wants = .write
            return .wouldBlock
        case Int(CPROXY_TLS_CLOSED):
            // A peer that left mid-handshake (a truncated ClientHello) failed it; one that
            // sent nothing (a port probe) did not.
            if !established && cproxy_tls_peer_sent_bytes(session) == 1 { handshakeFailed = true }
            return .done(0)
        default:
            brokenStream()
            throw SystemError(call, code: EPROTO)
        }
    }

    /// The stream is broken (a protocol error, or the peer left without close_notify): no
    /// close_notify will reach anyone; before the handshake ended, that handshake failed
    /// if the peer had started one.
    private func brokenStream() {
        if !established && cproxy_tls_peer_sent_bytes(session) == 1 { handshakeFailed = true }
        shutDown = true
    }

    /// Drives the handshake without moving application bytes: true once it is complete,
    /// false while it waits (see `wants`); throws when it failed.
    func handshake() throws -> Bool {
        let r = cproxy_tls_handshake(session)
        if r == 1 { noteEstablished(); return true }
        if case .done = try outcome(r, "SSL_do_handshake") {
            // The peer closed before the handshake finished (`handshakeFailed` says whether
            // it had started one).
            throw SystemError("SSL_do_handshake", code: EPROTO)
        }
        return false
    }

    /// Sends close_notify, once (a half-close, then the close, both ask).
    func close() {
        guard !shutDown else { return }
        shutDown = true
        cproxy_tls_shutdown(session)
    }
    private var shutDown = false

    /// `ssl_fc_protocol`, `ssl_fc_cipher`, `ssl_fc_sni`: text owned by the OpenSSL session,
    /// valid while it lives (a sample is visited in place, never kept).
    var established: Bool { cproxy_tls_established(session) == 1 }
    var protocolText: UnsafeRawBufferPointer { Self.bytes(cproxy_tls_protocol(session)) }
    var cipherText: UnsafeRawBufferPointer { Self.bytes(cproxy_tls_cipher(session)) }
    var serverNameText: UnsafeRawBufferPointer? { cproxy_tls_server_name(session).map(Self.bytes) }

    var alpnText: UnsafeRawBufferPointer? {
        var length: UInt32 = 0
        guard let p = cproxy_tls_alpn(session, &length), length > 0 else { return nil }
        return UnsafeRawBufferPointer(start: p, count: Int(length))
    }
    var resumed: Bool { cproxy_tls_reused(session) == 1 }

    /// The client certificate of the session, for a PROXY v2 SSL TLV: whether it came in this
    /// handshake, its verify result, its CN.
    var clientCertificate: (thisHandshake: Bool, verify: Int, commonName: [UInt8]?)? {
        var thisHandshake: Int32 = 0
        guard established, cproxy_tls_peer_certificate(session, &thisHandshake) == 1 else { return nil }
        var name = [CChar](repeating: 0, count: 256)
        let n = cproxy_tls_peer_common_name(session, &name, Int32(name.count))
        return (thisHandshake == 1, Int(cproxy_tls_peer_verify_result(session)),
                n > 0 ? name.prefix(Int(n)).map { UInt8(bitPattern: $0) } : nil)
    }

    /// `ssl_c_*` and `ssl_fc_has_crt`, read from the session; names are copied out of
    /// OpenSSL for the length of the visit only.
    func visitClientCertificate(_ field: TLSClientField, _ visit: (Sample) -> Bool) -> Bool {
        var thisHandshake: Int32 = 0
        let used = cproxy_tls_peer_certificate(session, &thisHandshake) == 1
        switch field {
        case .used: return visit(.boolean(used))
        case .hasCertificate: return visit(.boolean(thisHandshake == 1))
        case .verify: return visit(.integer(Int64(cproxy_tls_peer_verify_result(session))))
        case .subjectDN, .issuerDN:
            guard let text = cproxy_tls_peer_name(session, field == .issuerDN ? 1 : 0) else { return false }
            defer { cproxy_tls_free_text(text) }
            return visit(.bytes(UnsafeRawBufferPointer(start: text, count: strlen(text))))
        case .serial:
            var bytes = [UInt8](repeating: 0, count: 64)
            let n = cproxy_tls_peer_serial(session, &bytes, Int32(bytes.count))
            guard n > 0 else { return false }
            return bytes.withUnsafeBytes { visit(.bytes(UnsafeRawBufferPointer(rebasing: $0[0..<Int(n)]))) }
        }
    }

    private static func bytes(_ p: UnsafePointer<CChar>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: p, count: strlen(p))
    }
}

/// Client TLS counters of the process, shared by the loops (relaxed atomics).
public final class TLSCounters: Sendable {
    public let handshakes = Atomic<Int>(0)
    public let resumed = Atomic<Int>(0)
    public let failures = Atomic<Int>(0)
    public let open = Atomic<Int>(0)
}
