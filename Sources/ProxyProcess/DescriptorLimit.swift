import ProxyConfig
import ProxySystem

/// How many descriptors the process needs, and RLIMIT_NOFILE set to match, as HAProxy 2.6
/// does: two per connection (client and server), the listeners, the stats sockets and their
/// sessions, three per thread, the checks and log targets, and a margin; then two per splice
/// pipe. Pipes are a bonus, not a need: without `maxpipes`, TCP splicing gets pipes for a
/// quarter of `maxconn` (two each) out of what the limit leaves, and past them bytes are
/// copied. With `maxconn` unset, `maxconn` is what the limit allows (at least 100). A limit
/// that cannot hold an explicit `maxconn` and `maxpipes` fails the start (`strict-limits`,
/// the default) or, with `no strict-limits`, warns; pipes then get what fits.
struct DescriptorBudget {
    let fixed: Int
    /// Some proxy runs in TCP mode, so splice pipes are worth having.
    let splices: Bool

    init(_ c: Configuration) {
        let listeners = c.frontends.flatMap(\.binds).reduce(0) { $0 + $1.addresses.count }
        let stats = c.global.statsSockets.count * (1 + c.global.statsMaxConnections)
        // One socket per check and per agent check, open or kept between runs.
        let checks = c.backends.flatMap(\.servers).reduce(0) { $0 + ($1.options.check ? 1 : 0) + ($1.options.agentCheck ? 1 : 0) }
        let logs = c.global.logs.count + c.proxies.reduce(0) { $0 + $1.settings.logs.count }
        splices = !c.global.noSplice && c.proxies.contains { $0.mode == .tcp }
        fixed = 10 + listeners + stats + 3 * c.global.threads + checks + logs + 16
    }

    /// Descriptors `maxconn` connections cannot do without.
    func needed(for maxconn: Int) -> Int { 2 * maxconn + fixed }

    /// The pipes wanted when `maxpipes` is not set: both directions of a quarter of the connections.
    func defaultPipes(for maxconn: Int) -> Int { splices ? maxconn / 2 : 0 }

    /// The `maxconn` a limit of `descriptors` allows, with `pipes` pipes (or the default share).
    func maxconn(within descriptors: Int, pipes: Int?) -> Int {
        if let pipes { return max(100, (descriptors - fixed - 2 * pipes) / 2) }
        return max(100, (descriptors - fixed) / (splices ? 3 : 2))
    }
}

extension StartUp {
    /// Settles `maxconn`, `maxpipes` and RLIMIT_NOFILE together (see `DescriptorBudget`).
    func applyDescriptorLimit() throws {
        var g = configuration.global
        // `nosplice` (`-dS`): no pipes, so TCP mode copies, whatever `maxpipes` says.
        if g.noSplice { g.maxpipes = 0 }
        let budget = DescriptorBudget(configuration)
        let (soft, hard) = ResourceLimits.openFiles()
        let ceiling = UInt64(g.fdHardLimit.map { min(UInt64($0), hard) } ?? hard)
        let maxconn = g.maxconn ?? budget.maxconn(within: Int(min(ceiling, UInt64(Int32.max))), pipes: g.maxpipes)
        let essential = budget.needed(for: maxconn)
        let required = essential + 2 * (g.maxpipes ?? 0)
        let full = essential + 2 * (g.maxpipes ?? budget.defaultPipes(for: maxconn))
        var limit = soft
        var refusal: String?
        if let wanted = g.ulimitN.map(UInt64.init) ?? (UInt64(full) > soft ? UInt64(full) : nil), wanted != soft {
            do {
                try ResourceLimits.setOpenFiles(soft: wanted, hard: max(hard, wanted))
                limit = wanted
            } catch {
                refusal = "setrlimit(\(wanted)): \(error)"
                // Without the privilege to pass the hard limit, take as much as it allows.
                let reachable = min(wanted, hard)
                if reachable > soft, (try? ResourceLimits.setOpenFiles(soft: reachable, hard: hard)) != nil { limit = reachable }
            }
        }
        if limit < UInt64(required) {
            let message = "the file descriptor limit (\(limit), hard \(hard)) is too low for maxconn \(maxconn)"
                + (g.maxpipes.map { " and maxpipes \($0), which need" } ?? ", which needs") + " \(required)"
                + (refusal.map { " (\($0))" } ?? "")
            if g.strictLimits {
                throw Failure("proxy: \(message); raise 'ulimit -n' (or 'ulimit-n') to \(required) or more, run as root (CAP_SYS_RESOURCE), lower 'maxconn', or set 'no strict-limits'")
            }
            ProxyMain.printError("proxy: warning: \(message)\n")
        }
        let spare = max(0, Int(min(limit, UInt64(Int32.max))) - essential) / 2
        configuration.global.maxconn = maxconn
        configuration.global.maxpipes = min(g.maxpipes ?? budget.defaultPipes(for: maxconn), spare)
        configuration.global.maxsock = essential + 2 * configuration.global.maxpipes!
        configuration.global.ulimitN = Int(min(limit, UInt64(Int32.max)))
    }
}
