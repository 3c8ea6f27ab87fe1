import ProxyConfig
import ProxySystem
import Glibc

/// Questions the control thread asks every data loop at once (`show sess`, `shutdown
/// session`): each loop answers about its own sessions on its own thread, so nothing of a
/// session is read from another thread; the answers come back through a doorbell, and the
/// control thread runs the completion. A loop that no longer runs (it finished its soft
/// stop) is waited for at most a second.
public final class LoopQueries: @unchecked Sendable {
    final class Query: @unchecked Sendable {
        var parts: [[String]?]
        var remaining: Int
        let deadline: UInt64
        let done: ([String]) -> Void
        init(loops: Int, done: @escaping ([String]) -> Void) {
            parts = Array(repeating: nil, count: loops)
            remaining = loops
            deadline = Clock.monotonicNanoseconds() + 1_000_000_000
            self.done = done
        }
    }

    /// Rung when every loop has answered some query.
    public let doorbell: EventFD
    private let pending = Locked<[Query]>([])

    init() throws { doorbell = try EventFD() }

    /// One loop's answer.
    func answer(_ query: Query, loop: Int, _ lines: [String]) {
        let complete = pending.withLock { _ -> Bool in
            query.parts[loop] = lines
            query.remaining -= 1
            return query.remaining == 0
        }
        if complete { doorbell.signal() }
    }

    func add(_ query: Query) { pending.withLock { $0.append(query) } }

    /// Runs the completions of the queries answered, or past their deadline (on the control
    /// thread: on its doorbell, and on each of its ticks).
    public func runAnswered() {
        doorbell.drain()
        let now = Clock.monotonicNanoseconds()
        let ready = pending.withLock { list -> [(Query, [String])] in
            var out: [(Query, [String])] = []
            list.removeAll { q in
                guard q.remaining == 0 || q.deadline <= now else { return false }
                out.append((q, q.parts.compactMap { $0 }.flatMap { $0 }))
                return true
            }
            return out
        }
        for (q, lines) in ready { q.done(lines) }
    }
}

extension ProxyEngine {
    /// Runs `work` on every loop, and `done` with the lines of all, in loop order, on the
    /// control thread once they are in.
    func ask(_ work: @escaping @Sendable (LoopContext) -> [String], done: @escaping ([String]) -> Void) {
        let query = LoopQueries.Query(loops: loops.count, done: done)
        queries.add(query)
        for (i, loop) in loops.enumerated() {
            let context = contexts[i]
            let queries = self.queries
            loop.post { queries.answer(query, loop: i, work(context)) }
        }
    }

    /// `show sess`: one line per session, HAProxy's first fields, in loop order.
    public func describeSessions(detailed: Bool, id: String? = nil, done: @escaping ([String]) -> Void) {
        ask({ context in
            var lines: [String] = []
            for (key, s) in context.openSessions {
                let name = SessionID.text(key)
                if let id, id != name { continue }
                if let d = (s as? SessionDescribing)?.describe(id: name, detailed: detailed) { lines.append(d) }
            }
            return lines
        }, done: done)
    }

    /// `shutdown session ID`: closes that session wherever it is; `done(true)` when found.
    public func shutdownSession(id: String, done: @escaping (Bool) -> Void) {
        ask({ context in
            for (key, s) in context.openSessions where SessionID.text(key) == id {
                (s as? SessionDescribing)?.kill()
                return ["found"]
            }
            return []
        }, done: { done(!$0.isEmpty) })
    }
}

/// A session's name on the runtime API: its address, as HAProxy prints its pointer.
enum SessionID {
    static func text(_ key: ObjectIdentifier) -> String {
        "0x" + String(UInt(bitPattern: key), radix: 16)
    }
}

/// What `show sess` says of a session, and how `shutdown session` ends it.
protocol SessionDescribing: AnyObject {
    func describe(id: String, detailed: Bool) -> String
    func kill()
}

extension SessionDescribing {
    /// The fields HAProxy's `show sess` starts with, which scripts split by position.
    static func summary(id: String, proto: String, source: String, frontend: Frontend, backend: String?, server: String?, age: Int) -> String {
        "\(id): proto=\(proto) src=\(source) fe=\(frontend.name) be=\(backend ?? "<NONE>") srv=\(server ?? "<none>") ts=00 age=\(Self.age(age))"
    }

    static func age(_ seconds: Int) -> String {
        if seconds >= 86_400 { return "\(seconds / 86_400)d\(seconds / 3600 % 24)h" }
        if seconds >= 3600 { return "\(seconds / 3600)h\(seconds / 60 % 60)m" }
        if seconds >= 60 { return "\(seconds / 60)m\(seconds % 60)s" }
        return "\(seconds)s"
    }

    /// `show sess ID`'s lines after the first.
    static func details(_ frontend: Frontend, listener: String, backend: String?, server: String?, mode: String) -> String {
        "\n  frontend=\(frontend.name) (mode=\(mode)), addr=\(listener)\n  backend=\(backend ?? "<NONE>")\n  server=\(server ?? "<none>")"
    }
}

extension HTTPTransaction: SessionDescribing {
    func describe(id: String, detailed: Bool) -> String {
        let now = Clock.wallClock().seconds
        let server = self.server?.server?.name ?? slotServer?.name
        var text = Self.summary(id: id, proto: clientIP.isV4 ? "tcpv4" : "tcpv6", source: "\(clientIP):\(clientPort)", frontend: frontend, backend: backend?.name, server: server,
                                age: max(0, now - acceptedAt.seconds))
        if detailed {
            text += Self.details(frontend, listener: "\(local.ip):\(local.port)", backend: backend?.name, server: server, mode: "http")
            text += "\n  transactions=\(transactions) phase=\(phase)"
        }
        return text
    }

    func kill() {
        terminationState = "KD"
        if responseStarted { logTransaction() }
        close()
    }
}

extension TCPStream: SessionDescribing {
    func describe(id: String, detailed: Bool) -> String {
        let now = Clock.wallClock().seconds
        let server = self.server?.server?.name ?? slotServer?.name
        let proto = clientAddress.family == AF_INET6 ? "tcpv6" : clientAddress.family == AF_UNIX ? "unix_stream" : "tcpv4"
        let source = clientAddress.family == AF_UNIX ? "unix" : "\(AddressText.ip(clientAddress)):\(clientAddress.port)"
        var text = Self.summary(id: id, proto: proto, source: source, frontend: frontend, backend: backend.name, server: server,
                                age: max(0, now - acceptedAt.seconds))
        if detailed { text += Self.details(frontend, listener: "-", backend: backend.name, server: server, mode: "tcp") }
        return text
    }

    func kill() { close() }
}
