import ProxyConfig
import ProxySystem


/// Picks a server for a request, by the backend's algorithm. The state (round-robin
/// position, weights) is shared by every thread under one lock.
final class Balancer: @unchecked Sendable {
    let algorithm: BalanceAlgorithm
    let servers: [Server]

    struct State {
        /// Smooth weighted round robin: each server's current weight.
        var current: [Int]
        var next = 0
        var random = SplitMix(seed: 0x9E37_79B9_7F4A_7C15)
    }
    private let state: Locked<State>

    init(algorithm: BalanceAlgorithm, servers: [Server]) {
        self.algorithm = algorithm
        self.servers = servers
        state = Locked(State(current: Array(repeating: 0, count: servers.count)))
    }

    /// The servers to choose among now: usable normal servers; else the first usable backup
    /// (all of them with `option allbackups`).
    @inline(__always)
    func eligible(allBackups: Bool, excluding: Server?, into list: inout [Server]) {
        list.removeAll(keepingCapacity: true)
        for s in servers where !s.isBackup && s.isUsable && s !== excluding { list.append(s) }
        if !list.isEmpty { return }
        for s in servers where s.isBackup && s.isUsable && s !== excluding {
            list.append(s)
            if !allBackups { return }
        }
    }

    /// Chooses a server with room, or nil when none can take the request now.
    /// `hashKey` feeds `source` and `uri`.
    func pick(hashKey: UInt64, allBackups: Bool, excluding: Server? = nil, scratch: inout [Server]) -> Server? {
        eligible(allBackups: allBackups, excluding: excluding, into: &scratch)
        if scratch.isEmpty { return nil }
        if scratch.count == 1 { return scratch[0].hasRoom ? scratch[0] : nil }
        switch algorithm {
        case .roundRobin:
            let now = Clock.coarseMilliseconds()
            return state.withLock { st -> Server? in
                // Smooth weighted round robin over servers with room (weights ramp in slowstart).
                var total = 0
                var best: Server?
                for s in scratch where s.hasRoom {
                    let w = s.effectiveWeight(now: now)
                    st.current[s.index] += w
                    total += w
                    if best == nil || st.current[s.index] > st.current[best!.index] { best = s }
                }
                if let b = best { st.current[b.index] -= total }
                return best
            }
        case .staticRoundRobin:
            return state.withLock { st -> Server? in
                // Weighted, in a fixed order: expand by weight, cycle.
                let totalWeight = scratch.reduce(0) { $0 + $1.weight }
                for _ in 0..<totalWeight {
                    var slot = st.next % max(totalWeight, 1)
                    st.next &+= 1
                    for s in scratch {
                        if slot < s.weight { if s.hasRoom { return s } else { break } }
                        slot -= s.weight
                    }
                }
                return nil
            }
        case .leastConnections:
            var best: Server?
            var bestScore = Int.max
            for s in scratch where s.hasRoom {
                // Fewest connections per unit of weight (read once: the runtime API may set it to 0).
                let w = s.weight
                guard w > 0 else { continue }
                let score = (s.active.load(ordering: .relaxed) + 1) * 256 / w
                if score < bestScore { best = s; bestScore = score }
            }
            return best
        case .first:
            for s in scratch where s.hasRoom { return s }
            return nil
        case .source, .uri:
            let totalWeight = scratch.reduce(0) { $0 + $1.weight }
            var slot = Int(hashKey % UInt64(max(totalWeight, 1)))
            for s in scratch {
                if slot < s.weight { return s.hasRoom ? s : nil }
                slot -= s.weight
            }
            return nil
        case .random(let draws):
            return state.withLock { st -> Server? in
                var best: Server?
                for _ in 0..<max(1, draws) {
                    let s = scratch[Int(st.random.next() % UInt64(scratch.count))]
                    guard s.hasRoom else { continue }
                    if best == nil || s.active.load(ordering: .relaxed) < best!.active.load(ordering: .relaxed) { best = s }
                }
                return best
            }
        }
    }
}

/// A small fast PRNG for `balance random`.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// FNV-1a, for `balance source` and `balance uri`.
@inline(__always)
func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}
