import Glibc
import Testing
@testable import ProxyConfig
@testable import ProxyEngine
import ProxyRules
import ProxySystem

/// A runtime model from config text (names are not resolved; servers are IP addresses).
func model(_ text: String) throws -> RuntimeModel {
    var loader = ConfigLoader(environment: Environment())
    loader.resolvesNames = false
    let r = loader.load(text: text)
    guard let c = r.configuration else { throw RuleError("\(r.errors)") }
    return try RuntimeModel(configuration: c)
}

func backend(_ balance: String, servers: [String], extra: String = "") throws -> Backend {
    let m = try model("""
    defaults
        mode http
        timeout connect 1s
        timeout server 1s
    backend b
        balance \(balance)
    \(extra)
    \(servers.enumerated().map { "    server s\($0.offset) 127.0.0.1:\(8000 + $0.offset) \($0.element)" }.joined(separator: "\n"))
    """)
    return m.backends["b"]!
}

/// The event loop's timer heap, on a real loop: timers fire in deadline order (when more than
/// a timer step apart), a cleared one never fires, one moved later fires at its new deadline;
/// none fires early, or later than its bound.
@Suite struct TimerHeap {
    final class Timer: LoopObject {
        let name: Int
        let fired: (Int) -> Void
        init(_ name: Int, _ fired: @escaping (Int) -> Void) { self.name = name; self.fired = fired }
        override func timerFired() { fired(name) }
    }

    @Test func timersFireInDeadlineOrder() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        var order: [Int] = []
        var timers: [Timer] = []
        // 100 ms apart: each one's wake time (up to 31 ms late) stays before the next deadline.
        let deadlines = [300, 100, 250, 200, 500, 50, 400]
        for (i, d) in deadlines.enumerated() {
            let t = Timer(i) { n in
                order.append(n)
                if order.count == deadlines.count - 1 { loop.stop() }
            }
            timers.append(t)
            loop.setDeadline(t, loop.now + Int64(d))
        }
        loop.clearDeadline(timers[2])          // 250 ms: never fires
        loop.setDeadline(timers[5], loop.now + 600)  // 50 ms moved later: after everyone
        loop.run()
        #expect(order == [1, 3, 0, 6, 4, 5])
    }

    /// Timers wait for the end of their 32 ms step when an eighth of their duration allows
    /// it, and never fire early: a short timer keeps its precision.
    @Test func timersFireOnTheGridWithinAnEighthOfTheirDuration() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        let now = loop.now
        #expect(EventLoop.stepEnd(64) == 64 && EventLoop.stepEnd(65) == 96)
        #expect(EventLoop.latest(now + 8, setAt: now) == now + 9)
        #expect(EventLoop.latest(now + 80, setAt: now) == now + 90)
        #expect(EventLoop.latest(now + 10_000, setAt: now) == now + 10_000 + EventLoop.timerStep - 1)
        var firedAt: [Int: Int64] = [:]
        var deadlines: [Int: Int64] = [:]
        var timers: [Timer] = []
        // The 3 ms timer is due behind a 1 s one that is due first: each keeps its own bound.
        let durations = [3, 40, 300]
        let first = Timer(99) { _ in }
        loop.setDeadline(first, loop.now + 2)
        for (i, d) in durations.enumerated() {
            let t = Timer(i) { n in
                firedAt[n] = Clock.coarseMilliseconds()
                if firedAt.count == durations.count { loop.stop() }
            }
            timers.append(t)
            deadlines[i] = loop.now + Int64(d)
            loop.setDeadline(t, deadlines[i]!)
        }
        let watchdog = Timer(-1) { _ in loop.stop() }
        loop.setDeadline(watchdog, loop.now + 5_000)
        loop.run()
        loop.clearDeadline(watchdog)  // it holds the loop: no cycle left behind
        #expect(firedAt.count == durations.count, "\(firedAt)")
        for (i, d) in durations.enumerated() {
            guard let at = firedAt[i], let due = deadlines[i] else { continue }
            // Never early; late by its bound, plus the coarse clock's 4 ms and some scheduling.
            let bound = EventLoop.latest(due, setAt: due - Int64(d))
            #expect(at >= due && at <= bound + 30, "timer \(i) due \(due), bound \(bound), fired \(at)")
        }
    }

    /// Many timers set, moved earlier and later, cleared, and set from inside another's
    /// `timerFired`: each that stays set fires exactly once, never before its deadline, and
    /// the heap's bookkeeping (each object's index and key) stays whole.
    @Test func manyTimersMovedAndClearedEachFireOnce() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        var generator = SystemRandomNumberGenerator()
        var fired: [Int: Int] = [:]
        var early: [Int] = []
        var due: [Int: Int64] = [:]
        var timers: [Timer] = []
        var expected = Set<Int>()
        func finished() -> Bool { expected.allSatisfy { fired[$0] != nil } }
        func set(_ i: Int, _ ms: Int64) { due[i] = loop.now + ms; loop.setDeadline(timers[i], loop.now + ms) }
        for i in 0..<300 {
            timers.append(Timer(i) { n in
                if Clock.coarseMilliseconds() < due[n]! { early.append(n) }
                fired[n, default: 0] += 1
                // Re-entrancy: the heap is changed from inside a fire.
                if n % 10 == 0, n + 1 < timers.count, expected.contains(n + 1), fired[n + 1] == nil { set(n + 1, 1) }
                if finished() { loop.stop() }
            })
        }
        for i in timers.indices { set(i, Int64.random(in: 0...250, using: &generator)); expected.insert(i) }
        for i in stride(from: 3, to: 300, by: 7) { loop.clearDeadline(timers[i]); expected.remove(i) }
        for i in stride(from: 5, to: 300, by: 11) where expected.contains(i) { set(i, Int64.random(in: 0...400, using: &generator)) }
        for i in stride(from: 2, to: 300, by: 13) where expected.contains(i) { set(i, 1) }
        let watchdog = Timer(-1) { _ in loop.stop() }
        loop.setDeadline(watchdog, loop.now + 5_000)
        loop.run()
        loop.clearDeadline(watchdog)
        defer { timers.removeAll() }  // each timer's closure holds the list: break the cycle
        #expect(finished(), "not fired: \(expected.filter { fired[$0] == nil }.sorted())")
        #expect(fired.keys.allSatisfy { expected.contains($0) }, "a cleared timer fired")
        #expect(fired.values.allSatisfy { $0 == 1 }, "fired twice: \(fired.filter { $0.value > 1 })")
        #expect(early.isEmpty, "fired early: \(early)")
    }

    /// The heap holds its objects (as counted references, moved without counting): one whose
    /// deadline is cleared is let go at once, one waiting lives until it fires, and a loop
    /// that goes away lets go of the ones still waiting.
    @Test func theHeapKeepsItsObjectsUntilDoneWithThem() throws {
        weak var cleared: Timer?, fired: Timer?, waiting: Timer?
        do {
            let loop = try EventLoop(index: 0, bufferSize: 4096)
            do {
                let a = Timer(0) { _ in }, b = Timer(1) { _ in loop.stop() }, c = Timer(2) { _ in }
                for (t, d) in [(a, 5), (b, 10), (c, 60_000)] { loop.setDeadline(t, loop.now + Int64(d)) }
                (cleared, fired, waiting) = (a, b, c)
                loop.clearDeadline(a)
            }
            #expect(cleared == nil && fired != nil && waiting != nil)
            loop.run()
            #expect(fired == nil && waiting != nil)
        }
        #expect(waiting == nil)
    }
}

/// The per-loop buffer pool: buffers come back reused, and the count in use is kept.
@Suite struct BufferPoolUse {
    @Test func buffersAreReused() {
        let pool = BufferPool(bufferSize: 1024, reserve: 2)
        let a = pool.take(), b = pool.take(), c = pool.take()
        #expect(pool.inUse == 3)
        #expect(a.append(Array(repeating: 1, count: 1000)) && !a.append(Array(repeating: 1, count: 100)))
        pool.give(a); pool.give(b); pool.give(c)
        #expect(pool.inUse == 0)
        let d = pool.take()
        #expect(d === b || d === a)
        #expect(d.isEmpty && d.freeSpace == 1024)
    }

    /// `no-memory-trimming` reaches every loop's pool: it still shrinks, it never trims.
    @Test(arguments: [true, false])
    func noMemoryTrimmingReachesEveryLoop(_ set: Bool) throws {
        let m = try model("""
        global
            nbthread 2
            \(set ? "no-memory-trimming" : "")
        defaults
            mode http
        """)
        let engine = try ProxyEngine(model: m, listeners: [], threads: 2)
        #expect(engine.loops.count == 2 && engine.loops.allSatisfy { $0.buffers.trimsMemory == !set })
    }

    /// A head written piece by piece: after the first piece that does not fit, nothing more is
    /// written, and `fits` says so.
    @Test func aHeadWriterNeverLeavesAHole() {
        let pool = BufferPool(bufferSize: 16)
        let b = pool.take()
        var w = HeadWriter(b)
        w.append("GET / HTTP/1.1\r\n")
        #expect(w.fits && b.count == 16)
        w.append("x")
        w.append("")
        #expect(!w.fits && b.count == 16)
    }
}

/// Balancing, without a network: weights, least connections, first, hashing, backups, maxconn.
@Suite struct BalancerPicks {
    func picks(_ b: Backend, _ n: Int, key: (Int) -> UInt64 = { _ in 0 }) -> [String] {
        var scratch: [Server] = []
        return (0..<n).map { i in b.balancer.pick(hashKey: key(i), allBackups: false, scratch: &scratch)?.name ?? "-" }
    }

    @Test func roundRobinHonoursWeights() throws {
        let b = try backend("roundrobin", servers: ["weight 2", "weight 1"])
        let p = picks(b, 9)
        #expect(p.filter { $0 == "s0" }.count == 6 && p.filter { $0 == "s1" }.count == 3)
        #expect(p.prefix(3).contains("s1"), "smooth: s1 is not left to the end: \(p)")
    }

    @Test func leastConnectionsAndFirst() throws {
        let b = try backend("leastconn", servers: ["", "", ""])
        b.servers[0].active.store(3, ordering: .relaxed)
        b.servers[1].active.store(1, ordering: .relaxed)
        b.servers[2].active.store(2, ordering: .relaxed)
        #expect(picks(b, 1) == ["s1"])
        let f = try backend("first", servers: ["maxconn 1", "maxconn 1"])
        #expect(picks(f, 1) == ["s0"])
        f.servers[0].active.store(1, ordering: .relaxed)
        #expect(picks(f, 1) == ["s1"])
    }

    @Test func hashingIsStableAndBackupsWaitTheirTurn() throws {
        let b = try backend("source", servers: ["", "", "backup"])
        let once = picks(b, 20) { UInt64($0 * 7919) }
        #expect(once == picks(b, 20) { UInt64($0 * 7919) })
        #expect(!once.contains("s2") && Set(once) == ["s0", "s1"])
        b.servers[0].isUp.store(false, ordering: .relaxed)
        b.servers[1].isUp.store(false, ordering: .relaxed)
        #expect(Set(picks(b, 5)) == ["s2"])
    }

    /// A server's maxconn slot is taken by compare-and-swap: never more than maxconn, even
    /// from many threads at once.
    @Test func serverSlotsNeverExceedMaxconn() throws {
        let b = try backend("roundrobin", servers: ["maxconn 3"])
        let s = b.servers[0]
        let taken = Locked(0)
        var threads: [pthread_t] = []
        for _ in 0..<4 {
            threads.append(try Threads.start {
                for _ in 0..<10_000 {
                    if s.reserveSlot() {
                        taken.withLock { $0 = max($0, s.active.load(ordering: .relaxed)) }
                        s.active.subtract(1, ordering: .relaxed)
                    }
                }
            })
        }
        for t in threads { Threads.join(t) }
        #expect(taken.withLock { $0 } <= 3)
        #expect(s.active.load(ordering: .relaxed) == 0)
    }
}

/// A server's runtime state: what the runtime API will change, read by every loop.
@Suite struct ServerRuntimeState {
    @Test func adminStateWeightAndAddress() throws {
        let b = try backend("roundrobin", servers: ["", "disabled"])
        let s = b.servers[0]
        #expect(s.isUsable && s.acceptsPersistent && s.adminState == .ready)
        #expect(b.servers[1].adminState == .maintenance && !b.servers[1].isUsable)
        s.setAdminState(.drain)
        #expect(!s.isUsable && s.acceptsPersistent)
        s.setAdminState(.maintenance)
        #expect(!s.isUsable && !s.acceptsPersistent && s.isDisabled)
        s.setAdminState(.ready)
        s.setWeight(0)
        #expect(!s.isUsable && s.acceptsPersistent)
        s.setWeight(1000)
        #expect(s.weight == 256 && s.isUsable)
        s.setAddress(SocketAddress(ipv4: 0x7F00_0002, port: 9))
        #expect(s.address.ipv4 == 0x7F00_0002 && s.address.port == 9)
    }
}

/// The backend queue: first in, first out; a full queue refuses; cancelled tickets are
/// passed over; and from four threads at once every ticket is taken exactly once.
@Suite struct BackendQueueOrder {
    final class Waiter: QueueWaiter {
        let id: Int
        init(_ id: Int) { self.id = id }
        func leaveQueue() {}
    }

    @Test func oldestFirstAndCancelledPassedOver() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        let q = BackendQueue()
        let tickets = (0..<100).map { QueueTicket(Waiter($0), loop: loop) }
        for t in tickets { #expect(q.enqueue(t, limit: 100)) }
        #expect(!q.enqueue(QueueTicket(Waiter(100), loop: loop), limit: 100))
        for i in stride(from: 1, to: 100, by: 2) { #expect(q.cancel(tickets[i])) }
        // Cancelled tickets stop counting at once: 50 places are free again.
        #expect(q.count == 50)
        var order: [Int] = []
        while let t = q.takeOldest() { order.append((t.waiter as! Waiter).id) }
        #expect(order == Array(stride(from: 0, to: 100, by: 2)))
        #expect(q.isEmpty && q.count == 0)
        // Emptied, it takes new tickets from the start.
        let fresh = QueueTicket(Waiter(0), loop: loop)
        #expect(q.enqueue(fresh, limit: 1) && q.takeOldest() === fresh)
    }

    /// A cancelled ticket frees its place toward the limit at once; a ticket already taken
    /// cannot be cancelled (its wake-up must be passed on); a woken ticket put back goes first.
    @Test func cancelFreesItsPlaceAndAWokenTicketKeepsIt() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        let q = BackendQueue()
        let a = QueueTicket(Waiter(0), loop: loop), b = QueueTicket(Waiter(1), loop: loop)
        #expect(q.enqueue(a, limit: 1))
        #expect(!q.enqueue(b, limit: 1))
        #expect(q.cancel(a))
        #expect(q.enqueue(b, limit: 1))
        let c = QueueTicket(Waiter(2), loop: loop)
        #expect(q.enqueue(c, limit: 2))
        let woken = q.takeOldest()
        #expect(woken === b && !q.cancel(b))
        q.requeueFirst(b)
        #expect(q.count == 2 && q.takeOldest() === b && q.takeOldest() === c && q.takeOldest() == nil)
    }

    @Test func everyTicketIsTakenOnceAcrossThreads() throws {
        let loop = try EventLoop(index: 0, bufferSize: 4096)
        let q = BackendQueue()
        let taken = Locked<[Int]>([])
        var threads: [pthread_t] = []
        for thread in 0..<4 {
            threads.append(try Threads.start {
                var mine: [Int] = []
                for i in 0..<5_000 {
                    _ = q.enqueue(QueueTicket(Waiter(thread * 5_000 + i), loop: loop), limit: .max)
                    if i % 2 == 1 {
                        while mine.count < (i + 1) / 2, let t = q.takeOldest() { mine.append((t.waiter as! Waiter).id) }
                    }
                }
                taken.withLock { $0 += mine }
            })
        }
        for t in threads { Threads.join(t) }
        var rest: [Int] = []
        while let t = q.takeOldest() { rest.append((t.waiter as! Waiter).id) }
        let all = taken.withLock { $0 } + rest
        #expect(all.count == 20_000 && Set(all).count == 20_000)
    }
}

/// Variables: each scope lives as long as HAProxy's, and values are copies.
@Suite struct Variables {
    @Test func scopesEndWhenTheyShould() {
        var v = SessionVariables()
        v.set(.sess, "a", .integer(1))
        v.set(.txn, "b", .string(Array("x".utf8)))
        v.set(.req, "c", .boolean(true))
        v.set(.res, "d", .integer(4))
        v.transactionDone()
        #expect(v.value(.txn, "b") == nil && v.value(.req, "c") == nil && v.value(.res, "d") == nil)
        #expect(v.value(.sess, "a") == .integer(1))
        v.set(.sess, "a", nil)
        #expect(v.value(.sess, "a") == nil)
    }

    @Test func aValueIsACopy() {
        var bytes: [UInt8] = Array("Hello".utf8)
        let value = bytes.withUnsafeBytes { SampleValue(.bytes($0), fold: .lower) }
        bytes[0] = UInt8(ascii: "J")
        #expect(value == .string(Array("hello".utf8)))
    }
}

/// The log line header of each format, as HAProxy writes them.
@Suite struct LogFormats {
    @Test func headers() throws {
        let m = try model("global\n    log stdout format raw local0\n")
        let logger = m.logger
        func header(_ f: LogDestination.Format, _ facility: String = "local0", _ level: LogLevel = .info) -> String {
            logger.header(LogDestination(address: .stdout, format: f, facility: facility), level: level)
        }
        #expect(header(.raw) == "")
        #expect(header(.priority) == "<134>")
        #expect(header(.short, "local0", .error) == "<3>")
        #expect(header(.local).hasPrefix("<134>") && header(.local).hasSuffix(" proxy[\(getpid())]: "))
        #expect(header(.rfc3164).contains(" localhost proxy["))
        #expect(header(.rfc5424).hasPrefix("<134>1 20") && header(.rfc5424).hasSuffix(" - proxy \(getpid()) - - "))
        #expect(header(.iso).count == "2026-11-30T06:47:38.000376+00:00 ".count)
    }
}
