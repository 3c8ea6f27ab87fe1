import ProxyRules
import ProxySystem
import Glibc

/// What `Backend.admit` gave a request: a server whose slot it now holds, a place in the
/// queue, or a refusal with the status and log state HAProxy gives.
enum Admission {
    case server(Server)
    case queued(QueueTicket)
    case refused(status: Int, reason: String, state: String)
}

/// Who asks for a server, and what it already knows: the balancing key, a server its
/// persistence cookie names, a server to avoid (`redispatch`), and its ticket when it was
/// woken from the queue.
struct AdmissionRequest {
    var hashKey: UInt64 = 0
    var persisted: Server?
    var excluding: Server?
    /// Tried when the balancer finds nothing but `excluding` has room (the last retry).
    var fallback: Server?
    var wokenTicket: QueueTicket?
}

extension Backend {
    /// The only way to a server, for HTTP and TCP alike. A server's `maxconn` slot is taken
    /// with a compare-and-swap (two loops never both take the last one). While requests
    /// wait, a newcomer the balancer could send anywhere queues behind them (FIFO, as
    /// HAProxy's backend queue); one bound to a server (a persistence cookie, `balance
    /// source|uri`) takes a free slot there at once, as HAProxy's server queues let it. A
    /// request woken from the queue that still finds no slot goes back to the front, keeping
    /// its place, and waits for the next freed slot.
    func admit(_ waiter: QueueWaiter, loop: EventLoop, counters: LoopCounters, _ r: AdmissionRequest, scratch: inout [Server]) -> Admission {
        if let p = r.persisted, p.acceptsPersistent, p.hasRoom, p !== r.excluding, p.reserveSlot() { return granted(p, counters, balanced: false) }
        let mayPick = r.wokenTicket != nil || hashesRequests || queue.isEmpty
        if mayPick {
            for _ in 0..<4 {
                guard let candidate = balancer.pick(hashKey: r.hashKey, allBackups: settings.options.allBackups,
                                                    excluding: r.excluding, scratch: &scratch)
                    ?? (r.fallback?.hasRoom == true ? r.fallback : nil) else { break }
                if candidate.reserveSlot() { return granted(candidate, counters, balanced: true) }
            }
        }
        guard servers.contains(where: { $0.isUsable }) else {
            return .refused(status: 503, reason: "no server available", state: "SC")
        }
        if let woken = r.wokenTicket {
            // The slot it was woken for went to another request: it is that request's to
            // free, and the release wakes this one again. Never woken again from here, so a
            // request the balancer cannot place cannot spin.
            queue.requeueFirst(woken)
            return .queued(woken)
        }
        let ticket = QueueTicket(waiter, loop: loop)
        guard queue.enqueue(ticket, limit: queueLimit) else {
            return .refused(status: 503, reason: "queue full", state: "sQ")
        }
        CounterTable.raise(peakQueue, to: queue.count)
        // A slot may have been freed between the pick and the enqueue (that release saw no
        // waiter): look again, at the servers the balancer would choose among.
        if hasRoom(excluding: r.excluding, scratch: &scratch) { slotFreed() }
        return .queued(ticket)
    }

    /// Counts a granted slot: sessions and balancer choices, and the peaks.
    @inline(__always)
    func granted(_ s: Server, _ counters: LoopCounters, balanced: Bool) -> Admission {
        counters.add(s.statBase, .sessions)
        counters.add(statBase, .sessions)
        // `lbtot` counts the balancer's picks only, not a persistence cookie's, as HAProxy does.
        if balanced {
            counters.add(s.statBase, .chosen)
            counters.add(statBase, .chosen)
        }
        CounterTable.raise(s.peakSessions, to: s.active.load(ordering: .relaxed))
        CounterTable.raise(peakSessions, to: active.wrappingAdd(1, ordering: .relaxed).newValue)
        return .server(s)
    }

    /// Gives back a slot `admit` granted on `server`, and wakes the oldest waiting request.
    @inline(__always)
    func release(_ server: Server) {
        active.wrappingSubtract(1, ordering: .relaxed)
        // Sequentially consistent, as `enqueue`'s count and the look-again in `admit`: a
        // release and an enqueue racing each other cannot both miss the other.
        server.active.subtract(1, ordering: .sequentiallyConsistent)
        if !queue.isEmpty { slotFreed() }
    }

    /// Whether a server the balancer would choose among (normal ones, else backups) has a
    /// free slot now.
    func hasRoom(excluding: Server?, scratch: inout [Server]) -> Bool {
        balancer.eligible(allBackups: settings.options.allBackups, excluding: excluding, into: &scratch)
        return scratch.contains { $0.maxconn == 0 || $0.active.load(ordering: .sequentiallyConsistent) < $0.maxconn }
    }

    /// A queued request leaves (timeout, close). When a freed slot had already taken its
    /// ticket, that wake-up is passed on to the next in line, so no slot is lost.
    func cancel(_ ticket: QueueTicket) {
        if !queue.cancel(ticket) { slotFreed() }
    }
}

extension Backend {
    /// `balance source`: the client address's bytes as the kernel gave them (4, 16, or none
    /// for a UNIX socket), hashed; the same for HTTP and TCP.
    static func sourceKey(_ ip: IPAddress, family: Int32) -> UInt64 {
        switch family {
        case AF_INET: return withUnsafeBytes(of: ip.v4Value.bigEndian) { fnv1a($0) }
        case AF_INET6: return ip.bytes16.withUnsafeBytes { fnv1a($0) }
        default: return fnv1a(UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }
}
