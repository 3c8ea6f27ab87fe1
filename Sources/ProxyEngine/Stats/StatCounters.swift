import Synchronization

/// One thread's counters for one frontend, backend or server. Only its own loop writes them
/// (relaxed atomics, never contended); the runtime API sums every thread's on read.
public final class StatCounters: @unchecked Sendable {
    /// Sessions (connections on a frontend; requests or connections given to a backend or
    /// server), HAProxy's `stot`.
    let sessions = Atomic<Int>(0)
    let bytesIn = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    /// Times the balancer chose it (`lbtot`).
    let chosen = Atomic<Int>(0)
    /// Responses by class: 1xx to 5xx, then other.
    let h1xx = Atomic<Int>(0), h2xx = Atomic<Int>(0), h3xx = Atomic<Int>(0)
    let h4xx = Atomic<Int>(0), h5xx = Atomic<Int>(0), hOther = Atomic<Int>(0)
    /// Connection attempts that failed (`econ`) and responses that failed (`eresp`).
    let connectErrors = Atomic<Int>(0)
    let responseErrors = Atomic<Int>(0)

    init() {}

    @inline(__always) func add(_ a: borrowing Atomic<Int>, _ n: Int = 1) { a.wrappingAdd(n, ordering: .relaxed) }

    /// A finished HTTP transaction: its status and bytes.
    @inline(__always) func transaction(status: Int, bytesIn bin: Int, bytesOut bout: Int) {
        add(requests)
        add(bytesIn, bin)
        add(bytesOut, bout)
        switch status / 100 {
        case 1: add(h1xx)
        case 2: add(h2xx)
        case 3: add(h3xx)
        case 4: add(h4xx)
        case 5: add(h5xx)
        default: add(hOther)
        }
    }
}

/// The counters of one frontend, backend or server: one `StatCounters` per loop, plus the
/// peaks, which every thread may raise (a compare-and-swap, only when a new peak is reached).
public final class StatCounterSet: @unchecked Sendable {
    let perThread: [StatCounters]
    let peakSessions = Atomic<Int>(0)
    let peakQueue = Atomic<Int>(0)

    init(threads: Int) {
        perThread = (0..<max(1, threads)).map { _ in StatCounters() }
    }

    /// The counters loop `index` writes.
    @inline(__always) func thread(_ index: Int) -> StatCounters { perThread[index] }

    /// Raises a peak to `value` if it is higher.
    @inline(__always) static func raise(_ peak: borrowing Atomic<Int>, to value: Int) {
        var current = peak.load(ordering: .relaxed)
        while value > current {
            let (done, seen) = peak.compareExchange(expected: current, desired: value, ordering: .relaxed)
            if done { return }
            current = seen
        }
    }

    /// Every thread's counters added up.
    public var totals: StatTotals {
        var t = StatTotals()
        for c in perThread {
            t.sessions += c.sessions.load(ordering: .relaxed)
            t.bytesIn += c.bytesIn.load(ordering: .relaxed)
            t.bytesOut += c.bytesOut.load(ordering: .relaxed)
            t.requests += c.requests.load(ordering: .relaxed)
            t.chosen += c.chosen.load(ordering: .relaxed)
            t.responses[0] += c.h1xx.load(ordering: .relaxed)
            t.responses[1] += c.h2xx.load(ordering: .relaxed)
            t.responses[2] += c.h3xx.load(ordering: .relaxed)
            t.responses[3] += c.h4xx.load(ordering: .relaxed)
            t.responses[4] += c.h5xx.load(ordering: .relaxed)
            t.responses[5] += c.hOther.load(ordering: .relaxed)
            t.connectErrors += c.connectErrors.load(ordering: .relaxed)
            t.responseErrors += c.responseErrors.load(ordering: .relaxed)
        }
        t.peakSessions = peakSessions.load(ordering: .relaxed)
        t.peakQueue = peakQueue.load(ordering: .relaxed)
        return t
    }
}

/// A snapshot of summed counters, for `show stat` and the exporters.
public struct StatTotals: Sendable {
    public var sessions = 0, bytesIn = 0, bytesOut = 0, requests = 0, chosen = 0
    /// 1xx, 2xx, 3xx, 4xx, 5xx, other.
    public var responses = [0, 0, 0, 0, 0, 0]
    public var connectErrors = 0, responseErrors = 0
    public var peakSessions = 0, peakQueue = 0
}
