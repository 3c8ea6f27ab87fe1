import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// The PROXY-protocol stage on an accepted connection (`bind ... accept-proxy`, or
/// `tcp-request connection expect-proxy layer4`): it owns the connection until a whole
/// header has arrived, bounded by `timeout http-request` (HTTP) or `timeout client`, then
/// hands it to its application with the addresses the header names. The header is peeked
/// at and taken only once whole, so a header split over several reads is handled and the
/// client's bytes after it stay in the kernel. Anything else closes the connection and is
/// logged; nothing reaches a backend.
final class ProxyProtocolReceiver: LoopObject, ConnectionOwner {
    let connection: Connection
    let peer: SocketAddress
    let acceptor: Acceptor
    unowned(unsafe) let context: LoopContext
    let acceptedAt = Clock.wallClock()
    var finished = false

    init(connection: Connection, peer: SocketAddress, acceptor: Acceptor, context: LoopContext) {
        self.connection = connection
        self.peer = peer
        self.acceptor = acceptor
        self.context = context
        super.init()
        connection.owner = self
    }

    func start() {
        let frontend = acceptor.frontend
        let t = frontend.settings.timeouts
        let ms = (frontend.mode == .http ? t.httpRequest : nil) ?? t.client ?? 5000
        context.loop.setDeadline(self, context.loop.now + Int64(ms))
        receive()
    }

    func connectionReady(_ connection: Connection, events: UInt32) {
        if !finished { receive() }
    }

    override func timerFired() {
        if !finished { fail("Timeout while waiting for a PROXY protocol header") }
    }

    /// Peeks at what has arrived and acts once it decides: wait, refuse, or hand over.
    func receive() {
        guard connection.readable, !finished else { return }
        let outcome: (ProxyProtocol.Parse, Int)? = withUnsafeTemporaryAllocation(byteCount: ProxyProtocol.maxLength, alignment: 8) { buffer in
            guard let base = buffer.baseAddress else { return nil }
            let seen: Int
            do {
                guard let n = try connection.peek(into: base, count: ProxyProtocol.maxLength) else { return nil }
                seen = n
            } catch {
                return (.invalid("Connection error while waiting for a PROXY protocol header"), 0)
            }
            if seen == 0 { return (.invalid("Connection closed while waiting for a PROXY protocol header"), 0) }
            let parsed = ProxyProtocol.parse(UnsafeRawBufferPointer(start: base, count: seen))
            if case .complete(let header) = parsed {
                // Take exactly the header: the application's bytes stay queued.
                guard (try? connection.consume(header.length, scratch: base)) == true else {
                    return (.invalid("Connection error while taking the PROXY protocol header"), 0)
                }
            }
            return (parsed, seen)
        }
        guard let (parsed, seen) = outcome else { return }
        switch parsed {
        case .incomplete:
            // More must come: the next bytes bring a new edge. A FIN first means it never will.
            if connection.hangup { fail("Connection closed in the middle of a PROXY protocol header"); return }
            connection.readable = false
        case .invalid(let reason):
            fail(reason)
        case .complete(let header):
            finished = true
            context.loop.clearDeadline(self)
            // A FIN that came with the header brings no new edge: the application reads it now.
            context.startSession(connection, peer: header.source ?? peer, local: header.destination, acceptor: acceptor,
                                 bytesWaiting: seen > header.length || connection.hangup)
            // The stage is over (the connection's slot now goes with its session, or was
            // released if rules refused it): a soft stop may be waiting for this count.
            context.sessions -= 1
            context.openSessions[ObjectIdentifier(self)] = nil
            context.onSessionClosed?()
        }
    }

    /// Closes the connection and logs why, as HAProxy logs a connection error:
    /// `ip:port [date] frontend/bind: reason`.
    func fail(_ reason: String) {
        guard !finished else { return }
        finished = true
        context.loop.clearDeadline(self)
        connection.close()
        let frontend = acceptor.frontend
        if !frontend.logDestinations.isEmpty {
            let ip = HTTPTransaction.ip(of: peer)
            let date = Logger.acceptDate(seconds: acceptedAt.seconds, microseconds: acceptedAt.microseconds)
            let bind = acceptor.listener.options.name ?? acceptor.listener.key.description
            context.model.logger.log("\(ip):\(peer.port) [\(date)] \(frontend.name)/\(bind): \(reason)", to: frontend.logDestinations, level: .notice)
        }
        context.sessionClosed(self)
    }

    /// A stop: the connection goes, and the line says so.
    func close() { fail("Stopped while waiting for a PROXY protocol header") }
}
