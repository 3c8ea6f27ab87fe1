import ProxySystem
import Synchronization

/// What waits in a backend queue: told on its own loop that a slot may be free.
protocol QueueWaiter: AnyObject {
    func leaveQueue()
}

/// A waiter's place in a queue, and the loop it belongs to. It leaves the queue exactly
/// once, either taken (a slot was freed for it) or cancelled (timeout, close): a
/// compare-and-swap decides which, since the two happen on different loops.
final class QueueTicket: @unchecked Sendable {
    let waiter: QueueWaiter
    let loop: EventLoop
    private let state = Atomic<Int>(0)
    static let waiting = 0, taken = 1, cancelled = 2

    init(_ waiter: QueueWaiter, loop: EventLoop) {
        self.waiter = waiter
        self.loop = loop
    }

    /// Moves the ticket from waiting to `to`; false when it had already left the queue.
    func leave(as to: Int) -> Bool {
        state.compareExchange(expected: Self.waiting, desired: to, ordering: .acquiringAndReleasing).exchanged
    }

    var isWaiting: Bool { state.load(ordering: .acquiring) == Self.waiting }

    /// Back to waiting: a woken request that lost the race for the slot keeps its place.
    func rewait() { state.store(Self.waiting, ordering: .releasing) }
}

/// The requests of one backend waiting for a server slot, oldest first, shared by every
/// loop (HAProxy's backend queue). A freed slot goes to the oldest ticket still waiting;
/// a cancelled ticket stops counting at once (O(1)) and is dropped when the head passes it.
final class BackendQueue: @unchecked Sendable {
    /// The tickets from `head` on are in the queue (cancelled ones until passed over); the
    /// ones before it were taken. `live` counts those still waiting.
    private struct Entries {
        var tickets: [QueueTicket] = []
        var head = 0
        var live = 0
    }
    private let entries = Locked(Entries())
    /// Tickets still waiting: read without the lock, so that freeing a slot when nobody
    /// waits costs no lock.
    private let waiting = Atomic<Int>(0)

    var isEmpty: Bool { waiting.load(ordering: .sequentiallyConsistent) == 0 }
    var count: Int { waiting.load(ordering: .sequentiallyConsistent) }

    /// Adds `ticket` at the end unless `limit` tickets already wait.
    func enqueue(_ ticket: QueueTicket, limit: Int) -> Bool {
        entries.withLock { e in
            guard e.live < limit else { return false }
            e.tickets.append(ticket)
            e.live += 1
            waiting.store(e.live, ordering: .sequentiallyConsistent)
            return true
        }
    }

    /// Puts a woken ticket back at the front: it was the oldest, and stays so. Never refused
    /// (it held its place when it was woken).
    func requeueFirst(_ ticket: QueueTicket) {
        entries.withLock { e in
            ticket.rewait()
            if e.head > 0 {
                e.head -= 1
                e.tickets[e.head] = ticket
            } else {
                e.tickets.insert(ticket, at: 0)
            }
            e.live += 1
            waiting.store(e.live, ordering: .releasing)
        }
    }

    /// Cancels a waiting ticket: false when a freed slot took it first (its wake-up is then
    /// on the way and must be passed on).
    func cancel(_ ticket: QueueTicket) -> Bool {
        entries.withLock { e in
            guard ticket.leave(as: QueueTicket.cancelled) else { return false }
            e.live -= 1
            waiting.store(e.live, ordering: .sequentiallyConsistent)
            // Cancelled tickets (each holding its closed waiter) are dropped once they
            // outnumber the waiting ones, so the array stays bounded by the queue's limit.
            if e.tickets.count - e.head > 2 * e.live + 32 {
                e.tickets = e.tickets[e.head...].filter { $0.isWaiting }
                e.head = 0
            }
            return true
        }
    }

    /// Takes the oldest ticket still waiting, passing over (and dropping) cancelled ones.
    func takeOldest() -> QueueTicket? {
        guard !isEmpty else { return nil }
        return entries.withLock { e in
            defer {
                // Passed tickets are dropped once they are half the array, so it stays small.
                if e.head > 32 && e.head * 2 >= e.tickets.count {
                    e.tickets.removeFirst(e.head)
                    e.head = 0
                } else if e.head == e.tickets.count {
                    e.tickets.removeAll(keepingCapacity: true)
                    e.head = 0
                }
                waiting.store(e.live, ordering: .releasing)
            }
            while e.head < e.tickets.count {
                let t = e.tickets[e.head]
                e.head += 1
                if t.leave(as: QueueTicket.taken) {
                    e.live -= 1
                    return t
                }
            }
            return nil
        }
    }
}
