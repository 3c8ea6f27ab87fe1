import ProxySystem
import Glibc
import Synchronization

/// What one loop keeps beside its connections: the model, idle server connections, scratch.
final class LoopContext: @unchecked Sendable {
    let loop: EventLoop
    let model: RuntimeModel
    /// Idle server connections, kept for reuse.
    let pool: ConnectionPool
    var scratchServers: [Server] = []
    /// Sessions open on this loop.
    var sessions = 0
    /// Sessions by identity, so a soft stop can reach idle ones.
    var openSessions: [ObjectIdentifier: LoopObject] = [:]
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
    /// Agent checks run by this loop.
    var agents: [AgentCheck] = []
    /// `resolvers` sections run by this loop.
    var resolvers: [Resolvers] = []
    /// Where checks read their answers (16 KB, the loop's own: a check never allocates one).
    let readScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 16)
    /// Called after each session closes (the soft stop watches it).
    var onSessionClosed: (() -> Void)?

    /// This loop's block of statistics counters.
    let counters: LoopCounters

    init(loop: EventLoop, model: RuntimeModel) {
        self.loop = loop
        self.model = model
        counters = model.counters.loop(loop.index)
        pool = ConnectionPool(model: model)
        scratchServers.reserveCapacity(64)
    }

    deinit { readScratch.deallocate() }

    /// A pooled connection sent an event: the server closed it, or sent what nobody asked for.
    func discardIdle(_ c: Connection) { pool.discard(c) }
}
