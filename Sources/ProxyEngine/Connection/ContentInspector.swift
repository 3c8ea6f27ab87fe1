import ProxyConfig
import ProxySystem
import Glibc

/// `tcp-request inspect-delay` on a TCP frontend whose rules or routes read the client's
/// first bytes (`req.ssl_sni`, `req.ssl_hello_type`): it owns the connection until those
/// bytes decide (a whole TLS record, or bytes that are no TLS), the client closes, or the
/// delay ends, then hands the connection on with what it saw. The bytes are peeked at, so
/// they stay in the kernel for the server.
final class ContentInspector: LoopObject, ConnectionOwner {
    let connection: Connection
    let peer: SocketAddress
    let local: SocketAddress?
    let acceptor: Acceptor
    unowned(unsafe) let context: LoopContext
    var finished = false
    /// The most it looks at: one TLS record and its header.
    static let window = 16384 + 5

    init(connection: Connection, peer: SocketAddress, local: SocketAddress?, acceptor: Acceptor, context: LoopContext) {
        self.connection = connection
        self.peer = peer
        self.local = local
        self.acceptor = acceptor
        self.context = context
        super.init()
        connection.owner = self
    }

    func start(delay: Int64, bytesWaiting: Bool) {
        context.loop.setDeadline(self, context.loop.now + delay)
        if bytesWaiting { connection.readable = true }
        inspect(final: false)
    }

    func connectionReady(_ connection: Connection, events: UInt32) {
        if !finished { inspect(final: false) }
    }

    /// The delay ended: the rules decide with what came.
    override func timerFired() {
        if !finished { connection.readable = true; inspect(final: true) }
    }

    func inspect(final: Bool) {
        guard !finished else { return }
        var seen = [UInt8](repeating: 0, count: Self.window)
        var count = 0
        var closed = false
        if connection.readable || final {
            do {
                if let k = try seen.withUnsafeMutableBytes({ try connection.peek(into: $0.baseAddress!, count: $0.count) }) {
                    count = k
                    closed = k == 0
                }
            } catch {
                closed = true
            }
        }
        let decided = seen.withUnsafeBytes { ClientHello(UnsafeRawBufferPointer(rebasing: $0[0..<count])).complete }
        guard decided || closed || final || count == Self.window || connection.hangup else {
            // More must come: its arrival is a new edge.
            connection.readable = false
            return
        }
        if closed && count == 0 {
            // Gone before saying anything (a port probe): nothing to route, as HAProxy.
            close()
            return
        }
        finished = true
        context.loop.clearDeadline(self)
        context.openSessions[ObjectIdentifier(self)] = nil
        context.sessions -= 1
        context.startSession(connection, peer: peer, local: local, acceptor: acceptor, bytesWaiting: count > 0 || connection.hangup,
                             payload: Array(seen[0..<count]))
        context.onSessionClosed?()
    }

    /// A stop: the connection goes.
    func close() {
        guard !finished else { return }
        finished = true
        context.loop.clearDeadline(self)
        connection.close()
        context.sessionClosed(self)
    }
}
