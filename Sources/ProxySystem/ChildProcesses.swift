import Glibc

/// Children the loops start (external checks): each one's exit, reaped on the control
/// thread when SIGCHLD comes, goes to whoever started it. A loop never waits for a child.
public enum ChildProcesses {
    private static let waiting = Locked<[Int32: @Sendable (Int32) -> Void]>([:])

    /// Starts `path` with `arguments` (argv[0] included) and exactly `environment`, stdin
    /// from /dev/null, in a process group of its own (so that a timeout kills what it
    /// started too); `onExit` gets its exit status (128+N for signal N), on the control
    /// thread. The table is held while it starts, so a fast exit cannot be reaped unseen.
    public static func spawn(_ path: String, _ arguments: [String], environment: [String],
                             onExit: @escaping @Sendable (Int32) -> Void) throws -> Int32 {
        try waiting.withLock { table in
            let pid = try ProcessCalls.spawn(path, arguments, environment: environment, ownGroup: true, stdinFromNull: true)
            table[pid] = onExit
            return pid
        }
    }

    /// Forgets a child whose exit no longer matters (its check timed out and killed it).
    public static func forget(_ pid: Int32) { _ = waiting.withLock { $0.removeValue(forKey: pid) } }

    /// Reaps every child that exited: those started here report to their owner; others
    /// (orphans a PID 1 inherits) are only reaped.
    public static func reap() {
        while let (pid, status) = ProcessCalls.reapOne() {
            if let report = waiting.withLock({ $0.removeValue(forKey: pid) }) { report(status) }
        }
    }
}
