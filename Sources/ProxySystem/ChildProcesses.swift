import Glibc

/// Children the loops ask for (external checks): started and reaped on the control thread
/// (a loop only queues the request and rings the doorbell, so no data loop's stack is ever
/// in a spawn), each one's start and exit handed back to whoever asked. A loop never waits
/// for a child.
public enum ChildProcesses {
    private static let waiting = Locked<[Int32: @Sendable (Int32) -> Void]>([:])

    /// A start a loop asked for: `started` gets the pid, or why it could not start.
    struct Request {
        let path: String
        let arguments: [String]
        let environment: [String]
        let started: @Sendable (Int32?, String?) -> Void
        let onExit: @Sendable (Int32) -> Void
    }
    private static let requests = Locked<[Request]>([])
    /// Rung when a request is queued; the control loop watches it (nil: no eventfd, and
    /// requests fail at once).
    public static let doorbell: EventFD? = try? EventFD()

    /// Asks the control thread to start `path` (see `spawn`); safe from any thread.
    public static func request(_ path: String, _ arguments: [String], environment: [String],
                               started: @escaping @Sendable (Int32?, String?) -> Void,
                               onExit: @escaping @Sendable (Int32) -> Void) {
        guard let bell = doorbell else { started(nil, "no eventfd to reach the control loop"); return }
        requests.withLock { $0.append(Request(path: path, arguments: arguments, environment: environment, started: started, onExit: onExit)) }
        bell.signal()
    }

    /// Starts what was asked for (on the control thread, when the doorbell rings).
    public static func runRequests() {
        doorbell?.drain()
        let queued = requests.withLock { q -> [Request] in
            let all = q
            q.removeAll()
            return all
        }
        for r in queued {
            do {
                r.started(try spawn(r.path, r.arguments, environment: r.environment, onExit: r.onExit), nil)
            } catch let e as SystemError {
                r.started(nil, e.reason)
            } catch {
                r.started(nil, "\(error)")
            }
        }
    }

    /// Starts `path` with `arguments` (argv[0] included) and exactly `environment`, stdin
    /// from /dev/null, in a process group of its own (so that a timeout kills what it
    /// started too); `onExit` gets its exit status (128+N for signal N), on the control
    /// thread. The table is held while it starts, so a fast exit cannot be reaped unseen.
    static func spawn(_ path: String, _ arguments: [String], environment: [String],
                             onExit: @escaping @Sendable (Int32) -> Void) throws -> Int32 {
        try waiting.withLock { table in
            let pid = try ProcessCalls.spawn(path, arguments, environment: environment, ownGroup: true, stdinFromNull: true)
            table[pid] = onExit
            return pid
        }
    }

    /// Reaps every child that exited: those started here report to their owner; others
    /// (orphans a PID 1 inherits) are only reaped.
    public static func reap() {
        while let (pid, status) = ProcessCalls.reapOne() {
            if let report = waiting.withLock({ $0.removeValue(forKey: pid) }) { report(status) }
        }
    }
}
