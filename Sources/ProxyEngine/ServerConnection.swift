import ProxyHTTP
import ProxySystem
import Glibc
import Synchronization

/// A connection to a server. While a session uses it, events go to the session; while it
/// idles in the loop's pool, any event means the server closed it, so it is closed.
final class ServerConnection: LoopObject {
    let fd: FileDescriptor
    let server: RuntimeServer
    unowned(unsafe) let context: LoopContext
    /// The session using it, or nil while idle.
    unowned(unsafe) var session: HTTPSession?
    unowned(unsafe) var tunnel: TCPSession?
    var connected = false
    var readable = false
    var writable = false
    var eof = false
    /// The peer sent FIN (EPOLLRDHUP): keep reading past a short read, up to the 0.
    var hangup = false
    /// EPOLLERR seen: a pending connect failed (its code is read with SO_ERROR then).
    var errored = false
    var closed = false
    /// How many requests it has carried: a reused connection may be retried once on a race.
    var requests = 0

    init(fd: FileDescriptor, server: RuntimeServer, context: LoopContext) {
        self.fd = fd
        self.server = server
        self.context = context
    }

    override func handle(events: UInt32) {
        if closed { return }
        Readiness.note(events, readable: &readable, hangup: &hangup, writable: &writable)
        if events & (Epoll.error | Epoll.hangup) != 0 { errored = true }
        if let s = session { s.serverEvent(events) } else if let t = tunnel { t.serverEvent(events) } else {
            // Idle in the pool: the server closed it, or sent something unexpected.
            context.discardIdle(self)
        }
    }

    /// Opens a non-blocking connection to `server` and registers it (edge-triggered).
    /// `destinationPort` is the port the client connected to: a server without a port of its
    /// own (or with `+N`/`-N`) is reached on that port (plus N), as in HAProxy.
    static func open(to server: RuntimeServer, context: LoopContext, destinationPort: () -> UInt16) throws -> ServerConnection {
        let address = server.followsClientPort ? server.address(forDestinationPort: destinationPort()) : server.address
        let fd = try Socket.make(family: address.family)
        if address.family != AF_UNIX {
            try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
            if server.keepAlive { try Socket.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1) }
        }
        let c = ServerConnection(fd: fd, server: server, context: context)
        do {
            switch try Socket.connect(fd, address) {
            case .done: c.connected = true; c.writable = true
            case .wouldBlock: break
            }
            try context.loop.register(fd, events: Epoll.readable | Epoll.writable | Epoll.readHangup | Epoll.edgeTriggered, object: c)
        } catch {
            fd.close()
            throw error
        }
        return c
    }

    /// Closes the socket; an abortive close sends RST instead of FIN.
    func close(abort: Bool = false) {
        guard !closed else { return }
        closed = true
        if abort { Socket.setResetOnClose(fd) }
        context.loop.forget(fd)
        fd.close()
        session = nil
        tunnel = nil
    }
}

/// What one loop keeps beside its connections: the model, idle server connections, scratch.
final class LoopContext: @unchecked Sendable {
    let loop: EventLoop
    let model: RuntimeModel
    var idle: [ObjectIdentifier: [ServerConnection]] = [:]
    var scratchServers: [RuntimeServer] = []
    /// Sessions open on this loop.
    var sessions = 0
    /// Sessions by identity, so a soft stop can reach idle ones.
    var openSessions: [ObjectIdentifier: LoopObject] = [:]
    let maxIdlePerServer = 64
    /// Acceptors paused by maxconn, resumed when a connection closes.
    var pausedAcceptors: [Acceptor] = []
    /// Paused by the operator (SIGTTOU): closing connections must not resume accepting.
    var adminPaused = false
    /// Set while maxconn keeps some acceptor of this loop paused; read by other loops.
    let acceptorsPaused = Atomic<Bool>(false)
    /// The loop whose acceptor hands this one its connections (nil: it accepts itself).
    unowned(unsafe) var acceptingContext: LoopContext?
    var acceptors: [Acceptor] = []
    /// Health checks run by this loop.
    var checks: [HealthCheck] = []
    /// Called after each session closes (the soft stop watches it).
    var onSessionClosed: (() -> Void)?

    init(loop: EventLoop, model: RuntimeModel) {
        self.loop = loop
        self.model = model
        scratchServers.reserveCapacity(64)
    }

    /// An idle connection to `server`, if one is pooled.
    @inline(__always)
    func takeIdle(_ server: RuntimeServer) -> ServerConnection? {
        let key = ObjectIdentifier(server)
        // Popped in place: copying the list out of the dictionary would copy its storage.
        while let c = idle[key]?.popLast() {
            if c.eof || c.closed || c.hangup { c.close(); continue }
            return c
        }
        return nil
    }

    /// Pools a connection for reuse, or closes it when the pool is full. It sits between
    /// two messages, so a full pool closes it with a reset, as HAProxy does: the server is
    /// spared a lingering close and a TIME_WAIT.
    func release(_ c: ServerConnection) {
        c.session = nil
        let key = ObjectIdentifier(c.server)
        // A server reached on the client's port is not pooled: the next client's port may differ.
        if c.eof || c.closed || c.server.followsClientPort { c.close(); return }
        if context_stopping || (idle[key]?.count ?? 0) >= maxIdlePerServer {
            c.close(abort: true)
            return
        }
        idle[key, default: []].append(c)
    }

    var context_stopping: Bool { model.stopping.load(ordering: .relaxed) }

    func discardIdle(_ c: ServerConnection) {
        let key = ObjectIdentifier(c.server)
        idle[key]?.removeAll { $0 === c }
        c.close()
    }

    func closeAllIdle() {
        for (_, list) in idle { for c in list { c.close() } }
        idle.removeAll()
    }
}
