import ProxyRules
import ProxySystem
import Synchronization

/// Anything a loop dispatches to: epoll events for its descriptor, and one timer deadline.
/// A plain class with overridable methods, so dispatch is a vtable call, not a cast.
open class LoopObject {
    /// Position in the loop's timer heap, or -1, and the key it sits under there, its wake
    /// time (kept here too, so that moving a deadline later, the common case, reads nothing
    /// of the heap).
    final var timerIndex = -1
    final var timerKey: Int64 = 0
    /// When it wants `timerFired()`; may be later than the key it sits under in the heap
    /// (re-armed lazily).
    public final var deadline: Int64 = .max

    public init() {}

    /// Ready events for the registered descriptor.
    open func handle(events: UInt32) {}

    /// The deadline passed.
    open func timerFired() {}

    /// Called after `EventLoop.runAgain`: there was more work than one turn allows.
    open func resume() {}

    /// Queued on `runAgain` already.
    final var queuedToRun = false
}

/// Edge-triggered bookkeeping shared by every connection: what an event set says about a
/// descriptor. A FIN (EPOLLRDHUP) or error means "read until the 0", even after a short read.
enum Readiness {
    @inline(__always)
    static func note(_ events: UInt32, readable: inout Bool, hangup: inout Bool, writable: inout Bool) {
        if events & (Epoll.readable | Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 { readable = true }
        if events & (Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 { hangup = true }
        if events & Epoll.writable != 0 { writable = true }
    }
}

/// One event loop: an epoll instance, a timer heap and a mailbox, run by one thread.
/// It owns its connections outright; other threads reach it only through `post`.
public final class EventLoop: @unchecked Sendable {
    public let epoll: Epoll
    public let index: Int
    public let buffers: BufferPool
    /// The coarse clock, read once per wake-up.
    public private(set) var now: Int64

    private let mailboxBell: EventFD
    private let mailbox = Locked<[() -> Void]>([])
    private var running = true

    /// A binary min-heap of timer slots; each object knows its index.
    private var heap: [TimerSlot] = []
    /// A heap slot: the deadline it sits under, and its object, retained by the heap. Plain
    /// values, so sifting compares keys in place and moves slots without counting references.
    /// The key is the slot's wake time (`wakeTime`), so that each timer keeps its own bound.
    private struct TimerSlot { var key: Int64; let object: Unmanaged<LoopObject> }
    /// Registered objects, kept alive while registered.
    private var registered: [Int32: LoopObject] = [:]

    /// This loop's turns, for objects published to every loop (`Published`).
    let turns = Quiescence.Turns()

    deinit {
        for slot in heap { slot.object.release() }
    }

    public init(index: Int, bufferSize: Int) throws {
        self.index = index
        epoll = try Epoll()
        mailboxBell = try EventFD()
        buffers = BufferPool(bufferSize: bufferSize)
        now = Clock.coarseMilliseconds()
        try epoll.add(mailboxBell.fd, events: Epoll.readable, token: 0)
        heap.reserveCapacity(4096)
    }

    // MARK: registration

    @inline(__always) func token(_ o: LoopObject) -> UInt64 {
        UInt64(UInt(bitPattern: Unmanaged.passUnretained(o).toOpaque()))
    }

    /// Registers `fd` for `events`; the object is kept alive until `unregister`.
    public func register(_ fd: FileDescriptor, events: UInt32, object: LoopObject) throws {
        try epoll.add(fd, events: events, token: token(object))
        registered[fd.rawValue] = object
    }

    /// Changes the events `fd` is registered for; a readiness already there is reported.
    public func modify(_ fd: FileDescriptor, events: UInt32, object: LoopObject) throws {
        try epoll.modify(fd, events: events, token: token(object))
    }

    /// Removes `fd` from epoll. The object is released after the current batch of events,
    /// since a later event in the same batch may still name it.
    public func unregister(_ fd: FileDescriptor) {
        epoll.remove(fd)
        if let o = registered.removeValue(forKey: fd.rawValue) { graveyard.append(o) }
    }

    /// Objects with work left over: resumed on the next turn, before waiting on epoll.
    /// Edge-triggered epoll will not tell us again about bytes we left unread.
    private var again: [LoopObject] = []

    /// Asks for `resume()` on the next turn.
    @inline(__always)
    public func runAgain(_ o: LoopObject) {
        if o.queuedToRun { return }
        o.queuedToRun = true
        again.append(o)
    }

    /// Drops the loop's reference for a descriptor that is about to be closed: closing it
    /// removes it from epoll, so no `epoll_ctl(DEL)` is needed (one syscall saved per fd).
    /// Only for descriptors that were never duplicated (listeners are shared: unregister those).
    public func forget(_ fd: FileDescriptor) {
        if let o = registered.removeValue(forKey: fd.rawValue) { graveyard.append(o) }
    }

    /// Objects unregistered during this batch, released after it.
    private var graveyard: [LoopObject] = []

    // MARK: timers

    /// Sets `object`'s deadline. Moving it later costs nothing now; the heap catches up
    /// when the old key comes due. Moving it earlier keeps the old key when that still lies
    /// within the new deadline's bounds.
    @inline(__always)
    public func setDeadline(_ object: LoopObject, _ deadline: Int64) {
        object.deadline = deadline
        let i = object.timerIndex
        if i < 0 {
            let key = wakeTime(deadline)
            object.timerIndex = heap.count
            object.timerKey = key
            heap.append(TimerSlot(key: key, object: .passRetained(object)))
            siftUp(heap.count - 1)
        } else if deadline < object.timerKey {
            let key = wakeTime(deadline)
            guard key < object.timerKey else { return }
            object.timerKey = key
            heap[i].key = key
            siftUp(i)
        }
    }

    /// Removes `object`'s deadline.
    @inline(__always)
    public func clearDeadline(_ object: LoopObject) {
        object.deadline = .max
        let i = object.timerIndex
        guard i >= 0 else { return }
        object.timerIndex = -1
        let removed = heap[i].object
        let last = heap.removeLast()
        if i < heap.count {
            heap[i] = last
            siftDown(i)
            siftUp(last.object._withUnsafeGuaranteedRef { $0.timerIndex })
        }
        removed.release()
    }

    private func siftUp(_ start: Int) {
        heap.withUnsafeMutableBufferPointer { h in
            var i = start
            let item = h[i]
            while i > 0 {
                let parent = (i - 1) / 2
                if h[parent].key <= item.key { break }
                Self.put(h[parent], in: h, at: i)
                i = parent
            }
            Self.put(item, in: h, at: i)
        }
    }

    /// Puts `slot` at `i` and tells its object where it is.
    @inline(__always)
    private static func put(_ slot: TimerSlot, in h: UnsafeMutableBufferPointer<TimerSlot>, at i: Int) {
        h[i] = slot
        slot.object._withUnsafeGuaranteedRef { $0.timerIndex = i }
    }

    private func siftDown(_ start: Int) {
        heap.withUnsafeMutableBufferPointer { h in
            var i = start
            let n = h.count
            let item = h[i]
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var m = l
                if l + 1 < n && h[l + 1].key < h[l].key { m = l + 1 }
                if h[m].key >= item.key { break }
                Self.put(h[m], in: h, at: i)
                i = m
            }
            Self.put(item, in: h, at: i)
        }
    }

    private func runTimers() {
        while let first = heap.first, first.key <= now {
            let object = first.object.takeUnretainedValue()
            if object.deadline > now {
                // Re-armed later: move it to its real deadline.
                let key = wakeTime(object.deadline)
                heap[0].key = key
                object.timerKey = key
                siftDown(0)
                continue
            }
            clearDeadline(object)
            object.timerFired()
        }
    }

    /// Timers fire on a grid of this many milliseconds of the monotonic clock: a timer wakes
    /// its loop at the end of the step its deadline falls in, when that is at most an eighth
    /// of its duration late (the Linux timer wheel's bound), else at that eighth; never
    /// early. Timers close together cost one wake-up (a thousand servers checked every second
    /// wake a loop 32 times rather than a thousand). Measured with
    /// `contrib/bench/checks` (tcp-check, 1,000 servers): steps of 16 ms saved about a tenth
    /// of the CPU against none, 32 ms a tenth more, 64 ms only a twentieth more again.
    public static let timerStep: Int64 = 32  // a power of 2

    /// The latest a timer set at `setAt` for `deadline` may fire: an eighth of its duration
    /// late, less than a step.
    @inline(__always)
    static func latest(_ deadline: Int64, setAt: Int64) -> Int64 {
        deadline > Int64.max - timerStep ? deadline : deadline + min(timerStep - 1, max(0, deadline &- setAt) &>> 3)
    }

    /// When a timer set now for `deadline` fires: the end of its step if it may wait that
    /// long, else as late as it may.
    @inline(__always)
    func wakeTime(_ deadline: Int64) -> Int64 {
        let end = Self.stepEnd(deadline), latest = Self.latest(deadline, setAt: now)
        return end <= latest ? end : latest
    }

    /// The end of the timer step `deadline` falls in.
    @inline(__always)
    static func stepEnd(_ deadline: Int64) -> Int64 {
        // Deadlines are milliseconds of the monotonic clock (positive); a step is a power of 2.
        deadline > Int64.max - timerStep ? deadline : (deadline + timerStep - 1) & ~(timerStep - 1)
    }

    /// Milliseconds until the first wake time, or -1.
    private var nextTimeout: Int32 {
        guard let first = heap.first else { return -1 }
        let delta = first.key - Clock.coarseMilliseconds()
        return delta <= 0 ? 0 : Int32(min(delta + 1, 60_000))
    }

    // MARK: mailbox

    /// Runs `work` on this loop's thread, soon. Safe from any thread.
    public func post(_ work: @escaping @Sendable () -> Void) {
        mailbox.withLock { $0.append(work) }
        mailboxBell.signal()
    }

    private func drainMailbox() {
        mailboxBell.drain()
        let work = mailbox.withLock { box -> [() -> Void] in
            let w = box
            box.removeAll()
            return w
        }
        for w in work { w() }
    }

    /// Ends `run()` after the current wake-up.
    public func stop() { running = false }

    // MARK: run

    /// Waits for events and dispatches them until `stop()`.
    public func run() {
        let capacity: Int32 = 256
        let events = UnsafeMutablePointer<EpollEvent>.allocate(capacity: Int(capacity))
        Quiescence.shared.register(turns)
        defer {
            events.deallocate()
            Quiescence.shared.unregister(turns)
        }
        while running {
            var timeout = again.isEmpty ? nextTimeout : 0
            if let trimDue = buffers.trimIfNeeded(now: now), timeout < 0 || trimDue < timeout { timeout = trimDue }
            turns.advance()  // idle: holds no published object
            let n = epoll.wait(events, capacity: capacity, timeoutMilliseconds: timeout)
            turns.advance()
            now = Clock.coarseMilliseconds()
            for i in 0..<n {
                let token = events[i].data.u64
                if token == 0 { drainMailbox(); continue }
                let object = Unmanaged<LoopObject>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(token))!).takeUnretainedValue()
                object.handle(events: events[i].events)
            }
            if !again.isEmpty {
                let list = again
                again.removeAll(keepingCapacity: true)
                for o in list { o.queuedToRun = false; o.resume() }
            }
            if !heap.isEmpty { runTimers() }
            if !graveyard.isEmpty { graveyard.removeAll(keepingCapacity: true) }
        }
    }
}
