import ProxyConfig
import ProxySystem

/// How many descriptors the process needs, and RLIMIT_NOFILE set to match, as HAProxy 2.6
/// does: two per connection (client and server), splice pipes for a quarter of them when a
/// proxy runs in TCP mode, the listeners, the stats sockets and their sessions, three per
/// thread, the checks and log targets, and a margin. With `maxconn` unset, `maxconn` is what
/// the limit allows (at least 100); an explicit one is never lowered: a limit that cannot be
/// raised fails the start (`strict-limits`, the default) or warns (`no strict-limits`).
struct DescriptorBudget {
    let perConnection: Int
    let fixed: Int

    init(_ c: Configuration) {
        let listeners = c.frontends.flatMap(\.binds).reduce(0) { $0 + $1.addresses.count }
        let stats = c.global.statsSockets.count * (1 + c.global.statsMaxConnections)
        let checks = c.backends.flatMap(\.servers).filter(\.options.check).count
        let logs = c.global.logs.count + c.proxies.reduce(0) { $0 + $1.settings.logs.count }
        let tcp = c.proxies.contains { $0.mode == .tcp }
        // A TCP connection splices through two pipes (four descriptors); a quarter of them.
        perConnection = tcp ? 3 : 2
        fixed = 10 + listeners + stats + 3 * c.global.threads + checks + logs + 16
    }

    func needed(for maxconn: Int) -> Int { perConnection * maxconn + fixed }

    /// The `maxconn` a limit of `descriptors` allows.
    func maxconn(within descriptors: Int) -> Int { max(100, (descriptors - fixed) / perConnection) }
}

extension StartUp {
    /// Settles `maxconn` and RLIMIT_NOFILE together (see `DescriptorBudget`).
    func applyDescriptorLimit() throws {
        let g = configuration.global
        let budget = DescriptorBudget(configuration)
        let (soft, hard) = ResourceLimits.openFiles()
        let ceiling = UInt64(g.fdHardLimit.map { min(UInt64($0), hard) } ?? hard)
        let maxconn = g.maxconn ?? budget.maxconn(within: Int(min(ceiling, UInt64(Int32.max))))
        let needed = UInt64(budget.needed(for: maxconn))
        let wanted = g.ulimitN.map(UInt64.init) ?? max(needed, soft)
        var limit = soft
        if wanted != soft {
            do {
                try ResourceLimits.setOpenFiles(soft: wanted, hard: max(hard, wanted))
                limit = wanted
            } catch {
                let message = "cannot raise the file descriptor limit to \(wanted), it is \(soft) (hard \(hard)): \(error)"
                if g.strictLimits { throw Failure("proxy: \(message); run as root, raise 'ulimit -n', lower 'maxconn', or set 'no strict-limits'") }
                ProxyMain.printError("proxy: warning: \(message)\n")
            }
        }
        if limit < needed {
            let message = "the file descriptor limit (\(limit)) is too low for maxconn \(maxconn), which needs \(needed)"
            if g.strictLimits { throw Failure("proxy: \(message); raise 'ulimit-n' to \(needed) or more, lower 'maxconn', or set 'no strict-limits'") }
            ProxyMain.printError("proxy: warning: \(message)\n")
        }
        configuration.global.maxconn = maxconn
    }
}
