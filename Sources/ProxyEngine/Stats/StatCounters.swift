import Synchronization

/// What each frontend, backend and server counts (`show stat`, the exporters).
public enum StatField: Int, CaseIterable {
    /// Sessions: connections on a frontend; requests or connections given to a backend or
    /// server (HAProxy's `stot`).
    case sessions
    case bytesIn, bytesOut, requests
    /// Times the balancer chose it (`lbtot`).
    case chosen
    /// Responses by class: 1xx to 5xx, then other.
    case h1xx, h2xx, h3xx, h4xx, h5xx, hOther
    /// Failed connection attempts (`econ`) and failed responses (`eresp`).
    case connectErrors, responseErrors
}

/// Every counter of every frontend, backend and server, one contiguous block per loop: a
/// loop writes only its own block (relaxed atomics, never contended, no reference counting
/// on the data path); `show stat` sums the blocks on read. Each object owns the slots from
/// its `statBase` on, one per `StatField`.
public final class CounterTable: @unchecked Sendable {
    let slots: Int
    let blocks: [UnsafeMutablePointer<Atomic<Int>>]

    init(threads: Int, objects: Int) {
        slots = max(1, objects) * StatField.allCases.count
        blocks = (0..<max(1, threads)).map { _ in
            let p = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: max(1, objects) * StatField.allCases.count)
            for i in 0..<(max(1, objects) * StatField.allCases.count) { (p + i).initialize(to: Atomic(0)) }
            return p
        }
    }

    deinit {
        for p in blocks {
            p.deinitialize(count: slots)
            p.deallocate()
        }
    }

    /// The counters loop `index` writes.
    func loop(_ index: Int) -> LoopCounters { LoopCounters(base: blocks[index]) }

    /// One object's counters, every loop's added up.
    public func totals(_ base: Int) -> StatTotals {
        let v = values(base)
        func f(_ field: StatField) -> Int { v[field.rawValue] }
        var t = StatTotals()
        t.sessions = f(.sessions); t.bytesIn = f(.bytesIn); t.bytesOut = f(.bytesOut)
        t.requests = f(.requests); t.chosen = f(.chosen)
        t.responses = [f(.h1xx), f(.h2xx), f(.h3xx), f(.h4xx), f(.h5xx), f(.hOther)]
        t.connectErrors = f(.connectErrors); t.responseErrors = f(.responseErrors)
        return t
    }

    /// Every field of one object, every loop's added up, in `StatField` order (the handover
    /// carries them to the next process).
    public func values(_ base: Int) -> [Int] {
        StatField.allCases.map { f in blocks.reduce(0) { $0 + ($1 + base + f.rawValue).pointee.load(ordering: .relaxed) } }
    }

    /// Adds an older process's totals to one object's counters (a reload: no counter goes
    /// back to 0). Done before the loops start.
    public func carry(_ base: Int, _ values: [Int]) {
        guard let p = blocks.first else { return }
        for (f, v) in zip(StatField.allCases, values) { (p + base + f.rawValue).pointee.wrappingAdd(v, ordering: .relaxed) }
    }

    /// Sets every counter to 0 (`clear counters all`). A loop adding at that moment may
    /// keep its increment or lose it, as in HAProxy.
    public func clearAll() {
        for p in blocks { for i in 0..<slots { (p + i).pointee.store(0, ordering: .relaxed) } }
    }

    /// Raises a peak to `value` if it is higher (a compare-and-swap only at a new peak).
    @inline(__always) static func raise(_ peak: borrowing Atomic<Int>, to value: Int) {
        var current = peak.load(ordering: .relaxed)
        while value > current {
            let (done, seen) = peak.compareExchange(expected: current, desired: value, ordering: .relaxed)
            if done { return }
            current = seen
        }
    }
}

/// One loop's block of counters: a plain pointer, so counting costs no reference counting.
struct LoopCounters {
    let base: UnsafeMutablePointer<Atomic<Int>>

    @inline(__always) func add(_ object: Int, _ field: StatField, _ n: Int = 1) {
        (base + object + field.rawValue).pointee.wrappingAdd(n, ordering: .relaxed)
    }

    /// A finished HTTP transaction: its status and bytes.
    @inline(__always) func transaction(_ object: Int, status: Int, bytesIn: Int, bytesOut: Int) {
        add(object, .requests)
        add(object, .bytesIn, bytesIn)
        add(object, .bytesOut, bytesOut)
        let field: StatField
        switch status / 100 {
        case 1: field = .h1xx
        case 2: field = .h2xx
        case 3: field = .h3xx
        case 4: field = .h4xx
        case 5: field = .h5xx
        default: field = .hOther
        }
        add(object, field)
    }
}

/// A snapshot of summed counters, for `show stat` and the exporters.
public struct StatTotals: Sendable {
    public var sessions = 0, bytesIn = 0, bytesOut = 0, requests = 0, chosen = 0
    /// 1xx, 2xx, 3xx, 4xx, 5xx, other.
    public var responses = [0, 0, 0, 0, 0, 0]
    public var connectErrors = 0, responseErrors = 0
}
