import Synchronization

/// A value the event loops read without a lock while the control thread replaces it (a map
/// or an ACL file changed at run time). Readers load the current object and use it within
/// the current turn of their loop; a replaced object is released only once every loop has
/// been seen idle or past a turn since (quiescent-state reclamation), so no reader can
/// still hold it. Writers are the control thread only.
public final class Published<Value: AnyObject>: @unchecked Sendable {
    private let bits: Atomic<UInt>

    public init(_ value: Value) {
        bits = Atomic(UInt(bitPattern: Unmanaged.passRetained(value).toOpaque()))
    }

    deinit {
        Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits.load(ordering: .acquiring))!).release()
    }

    /// The current object: valid for the rest of this loop turn.
    @inline(__always)
    public var value: Value {
        Unmanaged<Value>.fromOpaque(UnsafeRawPointer(bitPattern: bits.load(ordering: .sequentiallyConsistent))!).takeUnretainedValue()
    }

    /// Replaces the object; the old one is released once no loop can still be using it.
    public func publish(_ next: Value) {
        let old = bits.exchange(UInt(bitPattern: Unmanaged.passRetained(next).toOpaque()), ordering: .sequentiallyConsistent)
        Quiescence.shared.retire(UnsafeRawPointer(bitPattern: old)!) { Unmanaged<Value>.fromOpaque($0).release() }
    }
}

/// Each event loop's turn counter, and the objects waiting for every loop to move on. A
/// loop's counter is odd while it waits in epoll (it holds nothing then) and even while it
/// runs; an object retired when a loop's counter read `c` is free of that loop once the
/// counter is no longer `c`, or `c` was odd.
public final class Quiescence: @unchecked Sendable {
    public static let shared = Quiescence()

    /// One loop's counter.
    public final class Turns: @unchecked Sendable {
        public let count = Atomic<UInt64>(0)
        public init() {}
        /// Before epoll_wait (idle) and after it (running).
        @inlinable public func advance() { count.add(1, ordering: .sequentiallyConsistent) }
    }

    private struct Retired: @unchecked Sendable {
        let pointer: UnsafeRawPointer
        let release: (UnsafeRawPointer) -> Void
        let seen: [(Turns, UInt64)]
    }

    /// A pthread mutex (`Locked`), which ThreadSanitizer sees, unlike a futex-parked Mutex.
    private let state = Locked<(loops: [Turns], retired: [Retired])>(([], []))

    public func register(_ t: Turns) { state.withLock { $0.loops.append(t) } }

    public func unregister(_ t: Turns) {
        state.withLock { $0.loops.removeAll { $0 === t } }
        reclaim()
    }

    func retire(_ pointer: UnsafeRawPointer, release: @escaping (UnsafeRawPointer) -> Void) {
        state.withLock { s in
            let seen = s.loops.map { ($0, $0.count.load(ordering: .sequentiallyConsistent)) }
            s.retired.append(Retired(pointer: pointer, release: release, seen: seen))
        }
        reclaim()
    }

    /// Releases what no loop can hold any more (the control thread calls it on its ticks).
    public func reclaim() {
        let free = state.withLock { s -> [Retired] in
            let live = Set(s.loops.map { ObjectIdentifier($0) })
            var out: [Retired] = []
            s.retired.removeAll { r in
                let done = r.seen.allSatisfy { t, c in
                    !live.contains(ObjectIdentifier(t)) || c & 1 == 1 || t.count.load(ordering: .sequentiallyConsistent) != c
                }
                if done { out.append(r) }
                return done
            }
            return out
        }
        for r in free { r.release(r.pointer) }
    }

    /// Objects still waiting (for tests and `show info`-like reports).
    public var waiting: Int { state.withLock { $0.retired.count } }
}
