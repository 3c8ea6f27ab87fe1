import ProxySystem

/// How a connection's bytes cross its socket when they are not the raw bytes themselves:
/// TLS records, in the TLS issue. The raw socket is the default and needs no object (a
/// connection whose `transport` is nil reads and sends directly, and may splice).
///
/// A transport may need the other direction to make progress (a TLS write waiting for a
/// handshake record, a read that must first send one): it says so with `wants`, and the
/// connection keeps the readiness of both directions, so the owner retries either way.
protocol Transport: AnyObject {
    /// Reads decoded bytes: `.done(0)` at the end of the stream, `.wouldBlock` when nothing
    /// is ready (see `wants`).
    func read(_ connection: Connection, into pointer: UnsafeMutableRawPointer, count: Int) throws -> IOResult<Int>
    /// Writes bytes to be encoded: how many were taken, or `.wouldBlock` (see `wants`).
    func write(_ connection: Connection, from pointer: UnsafeRawPointer, count: Int) throws -> IOResult<Int>
    /// Which readiness the last `.wouldBlock` waits for.
    var wants: TransportWait { get }
    /// The connection closes: a last word to the peer (TLS close_notify), never waiting.
    func close()
    /// The handshake failed before any byte of the application came (logged by the owner).
    var handshakeFailed: Bool { get }
}

/// What a transport's blocked call waits for: the socket's readable or writable edge.
enum TransportWait {
    case read
    case write
}
