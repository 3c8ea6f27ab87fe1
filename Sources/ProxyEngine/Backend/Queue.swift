import ProxySystem
import Synchronization

/// What waits in a backend queue: told on its own loop that a slot may be free.
protocol QueueWaiter: AnyObject {
    func leaveQueue()
}

/// A waiter's place in a queue, and the loop it belongs to. The waiter marks it cancelled
/// (timeout, close) on its loop; whichever loop frees a slot reads that: an atomic.
final class QueueTicket: @unchecked Sendable {
    let waiter: QueueWaiter
    let loop: EventLoop
    private let cancelled = Atomic<Bool>(false)
    var cancelledInQueue: Bool {
        get { cancelled.load(ordering: .acquiring) }
        set { cancelled.store(newValue, ordering: .releasing) }
    }
    init(_ waiter: QueueWaiter, loop: EventLoop) {
        self.waiter = waiter
        self.loop = loop
    }
}

/// The requests of one backend waiting for a server slot, oldest first, shared by every
/// loop (HAProxy's backend queue). A freed slot goes to the oldest ticket not cancelled.
final class BackendQueue: @unchecked Sendable {
    /// The tickets from `head` on are waiting; the ones before it were taken.
    private struct Entries {
        var tickets: [QueueTicket] = []
        var head = 0
        var count: Int { tickets.count - head }
    }
    private let entries = Locked(Entries())
    /// Tickets waiting (cancelled ones included until they are passed over): read without
    /// the lock, so that freeing a slot when nobody waits costs no lock.
    private let waiting = Atomic<Int>(0)

    var isEmpty: Bool { waiting.load(ordering: .acquiring) == 0 }
    var count: Int { waiting.load(ordering: .acquiring) }

    /// Adds `ticket` at the end unless `limit` tickets already wait.
    func enqueue(_ ticket: QueueTicket, limit: Int) -> Bool {
        entries.withLock { e in
            guard e.count < limit else { return false }
            e.tickets.append(ticket)
            waiting.store(e.count, ordering: .releasing)
            return true
        }
    }

    /// Takes the oldest ticket not cancelled, passing over (and dropping) cancelled ones.
    func takeOldest() -> QueueTicket? {
        guard !isEmpty else { return nil }
        return entries.withLock { e in
            defer {
                // Taken tickets are dropped once they are half the array, so it stays small.
                if e.head > 32 && e.head * 2 >= e.tickets.count {
                    e.tickets.removeFirst(e.head)
                    e.head = 0
                }
                waiting.store(e.count, ordering: .releasing)
            }
            while e.head < e.tickets.count {
                let t = e.tickets[e.head]
                e.head += 1
                if !t.cancelledInQueue { return t }
            }
            e.tickets.removeAll(keepingCapacity: true)
            e.head = 0
            return nil
        }
    }
}
