import ProxyConfig
import ProxyControl
import ProxyEngine
import ProxySystem
import Glibc

/// The `stats socket` lines: their listening sockets and the CLI sessions on them, served
/// by the control loop. A session sends one line of `;`-separated commands (HAProxy's
/// non-interactive mode), gets the answers, and is closed; after `prompt` it stays open,
/// answering line after line behind a `> ` prompt, until `quit` or the client closes.
///
/// A UNIX socket is bound as `PATH.PID.tmp` and renamed into place at the point of no
/// return, so a reload that fails leaves the old process's socket where it was, and after
/// one that succeeds `PATH` (and `-x PATH`) reaches the newest process. An inet or abstract
/// address the old process holds is handed over with its listeners.
final class RuntimeAPIServer {
    /// One `stats socket` line's listening socket.
    struct Endpoint {
        var fd: FileDescriptor?
        let settings: StatsSocket
        /// For a UNIX socket: its directory, opened before any chroot and kept, so that
        /// publishing and the final unlink work from inside one; and the names in it.
        var directory: Directory?
        var name = ""
        var temporary: String?
        /// The published file's identity, to know later whether the name still is ours.
        var file: FileIdentity?
    }

    /// A CLI connection: the bytes of its command line, then the answer being written.
    final class Session {
        let fd: FileDescriptor
        /// The `stats socket` it came in on; -1 for a session the master passed (`@N` on the
        /// master CLI), which carries its own level.
        let endpoint: Int
        var level: AccessLevel?
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var deadline: UInt64
        /// `set timeout cli`: this session's idle timeout, when it set one.
        var timeoutNanoseconds: UInt64?
        /// `prompt` was given: more lines follow, each answered behind `> `.
        var interactive = false
        /// Close once the output is written (non-interactive, or `quit`).
        var closing = false
        /// A command answered by the data loops is under way: later lines wait for it.
        var waiting = false
        /// The client closed while a command was under way.
        var ended = false
        init(fd: FileDescriptor, endpoint: Int, deadline: UInt64) {
            self.fd = fd
            self.endpoint = endpoint
            self.deadline = deadline
        }
    }

    /// Tokens in the control loop's epoll: listeners and sessions are told apart by range.
    static let listenerToken: UInt64 = 1 << 40
    static let sessionToken: UInt64 = 1 << 41
    static let maxLine = 16 * 1024

    private(set) var endpoints: [Endpoint] = []
    private var sessions: [Int32: Session] = [:]
    private var listening = false
    /// Listeners taken out of the epoll after an accept error (out of descriptors), re-armed
    /// on the next tick so the control loop does not spin.
    private var resting: [Int] = []
    let idleTimeoutNanoseconds: UInt64
    /// `stats maxconn`: sessions served at once; past it the listeners rest until one ends.
    let maxSessions: Int
    private var full = false
    /// Set once the engine runs, before the first session is accepted.
    var commands: RuntimeCommands?

    /// A `stats socket` that could not be bound, with its line.
    struct BindFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// The listener keys of the inet and abstract sockets, which an old process hands over.
    static func inheritableKeys(_ configuration: Configuration) -> [ListenerKey] {
        configuration.global.statsSockets.compactMap { s in
            switch s.address {
            case .inet, .abstract: return ListenerKey(address: s.address)
            default: return nil
            }
        }
    }

    /// Binds every `stats socket` line: UNIX ones under a temporary name, inet and abstract
    /// ones from the sockets the old processes handed over, or afresh.
    init(configuration: Configuration, inherited: [ListenerKey: Int32]) throws {
        idleTimeoutNanoseconds = UInt64(configuration.global.statsTimeout ?? 10_000) * 1_000_000
        maxSessions = configuration.global.statsMaxConnections
        do {
            for settings in configuration.global.statsSockets {
                endpoints.append(try Self.bind(settings, inherited: inherited))
            }
        } catch {
            rollback()
            throw error
        }
    }

    private static func failure(_ settings: StatsSocket, _ what: String) -> BindFailure {
        BindFailure(description: "\(settings.location): error: stats socket \(settings.address): \(what)")
    }

    private static func bind(_ settings: StatsSocket, inherited: [ListenerKey: Int32]) throws -> Endpoint {
        do {
            switch settings.address {
            case .unix(let path):
                return try bindUnix(path, settings)
            case .inet, .abstract:
                let key = ListenerKey(address: settings.address)
                if let fd = inherited[key] {
                    let f = FileDescriptor(rawValue: fd)
                    try Socket.setNonBlocking(f)
                    return Endpoint(fd: f, settings: settings)
                }
                // The frontends' bind, with SO_REUSEADDR and SO_REUSEPORT for inet addresses.
                let l = try Listener.bind(key, frontend: "stats socket", options: BindOptions(), backlog: 16, reusePort: true)
                return Endpoint(fd: l.fd, settings: settings)
            case .inheritedFD(let n):
                let fd = FileDescriptor(rawValue: n)
                try Socket.setNonBlocking(fd)
                return Endpoint(fd: fd, settings: settings)
            }
        } catch let e as SystemError {
            let hint = e.code == EADDRINUSE ? " (another process holds it and did not hand it over)" : ""
            throw failure(settings, "cannot bind: \(e.reason)\(hint)")
        }
    }

    private static func bindUnix(_ path: String, _ settings: StatsSocket) throws -> Endpoint {
        let directory: Directory
        let name: String
        do { (directory, name) = try Directory.containing(path) } catch let e as SystemError {
            throw failure(settings, "cannot open the directory of '\(path)': \(e.reason); create it first")
        }
        var endpoint = Endpoint(fd: nil, settings: settings, directory: directory, name: name)
        let temporary = "\(name).\(ProcessCalls.pid).tmp"
        do {
            let fd = try Socket.make(family: AF_UNIX)
            endpoint.fd = fd
            try directory.unlink(temporary)
            try Socket.bind(fd, SocketAddress(checkedUnixPath: directory.path + "/" + temporary))
            endpoint.temporary = temporary
            if let mode = settings.mode { try directory.changeMode(temporary, mode) }
            if settings.uid != nil || settings.gid != nil { try directory.changeOwner(temporary, uid: settings.uid, gid: settings.gid) }
            try Socket.listen(fd, backlog: 16)
            endpoint.file = directory.identity(temporary)
        } catch {
            endpoint.fd?.close()
            if let t = endpoint.temporary { try? directory.unlink(t) }
            directory.close()
            if let e = error as? SystemError {
                let hint = e.code == ENAMETOOLONG ? " (a UNIX socket path holds at most \(SocketAddress.maxUnixPathLength - 12) bytes here)" : ""
                throw failure(settings, "cannot bind: \(e.reason)\(hint)")
            }
            throw error
        }
        return endpoint
    }

    /// The renames that publish the UNIX sockets, done at the point of no return.
    var pendingNames: [NameChange] {
        endpoints.compactMap { e in
            guard let d = e.directory, let t = e.temporary else { return nil }
            return NameChange(directory: d, temporary: t, name: e.name)
        }
    }

    /// The UNIX sockets now have their names.
    func published() {
        for i in endpoints.indices { endpoints[i].temporary = nil }
    }

    /// The sockets a successor may take over: inet and abstract ones.
    var handoverSockets: [(fd: Int32, hint: String)] {
        endpoints.compactMap { e in
            guard let fd = e.fd else { return nil }
            switch e.settings.address {
            case .inet, .abstract: return (fd.rawValue, "stats " + Handover.encode(ListenerKey(address: e.settings.address)))
            default: return nil
            }
        }
    }

    /// The start failed: temporary names go (unless `keepNames`: a privileged helper removes
    /// them), and every socket is closed but those `inherited` (the handover closes those).
    func rollback(keepNames: Bool = false, sparing inherited: Set<Int32> = []) {
        for e in endpoints {
            if let d = e.directory {
                if let t = e.temporary, !keepNames { try? d.unlink(t) }
                d.close()
            }
            if let fd = e.fd, !inherited.contains(fd.rawValue) { fd.close() }
        }
        endpoints = []
    }

    // MARK: the control loop

    func register(in epoll: Epoll) {
        for (i, e) in endpoints.enumerated() {
            if let fd = e.fd { try? epoll.add(fd, events: Epoll.readable, token: Self.listenerToken + UInt64(i)) }
        }
        listening = true
    }

    /// Handles one epoll event if it is ours; false otherwise.
    func handle(token: UInt64, events: UInt32, epoll: Epoll) -> Bool {
        if token >= Self.sessionToken {
            guard let session = sessions[Int32(truncatingIfNeeded: token - Self.sessionToken)] else { return true }
            if events & Epoll.writable != 0 && !session.output.isEmpty {
                flush(session, epoll: epoll)
            } else {
                read(session, epoll: epoll)
            }
            return true
        }
        if token >= Self.listenerToken {
            let index = Int(token - Self.listenerToken)
            guard listening, index < endpoints.count, let listener = endpoints[index].fd else { return true }
            while true {
                if sessions.count >= maxSessions {
                    // At `stats maxconn`: new clients wait in the backlog until a session ends.
                    full = true
                    for e in endpoints { if let fd = e.fd { epoll.remove(fd) } }
                    break
                }
                let accepted: IOResult<(FileDescriptor, SocketAddress)>
                do { accepted = try Socket.accept(listener) } catch {
                    // Out of descriptors, say: rest until the next tick instead of spinning.
                    epoll.remove(listener)
                    resting.append(index)
                    break
                }
                guard case .done(let (fd, _)) = accepted else { break }
                let session = Session(fd: fd, endpoint: index, deadline: Clock.monotonicNanoseconds() + idleTimeoutNanoseconds)
                sessions[fd.rawValue] = session
                try? epoll.add(fd, events: Epoll.readable | Epoll.readHangup, token: Self.sessionToken + UInt64(fd.rawValue))
            }
            return true
        }
        return false
    }

    /// A connection the master passed for a command routed here from its CLI (`@1` or
    /// `@!PID`), served like a `stats socket` session at the master CLI's level. Old workers
    /// take them too, after their listeners have closed, so what they still hold can be seen.
    func adopt(_ fd: FileDescriptor, level: AccessLevel, epoll: Epoll) {
        try? Socket.setNonBlocking(fd)
        let session = Session(fd: fd, endpoint: -1, deadline: Clock.monotonicNanoseconds() + idleTimeoutNanoseconds)
        session.level = level
        sessions[fd.rawValue] = session
        try? epoll.add(fd, events: Epoll.readable | Epoll.readHangup, token: Self.sessionToken + UInt64(fd.rawValue))
    }

    private func read(_ session: Session, epoll: Epoll) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let r = chunk.withUnsafeMutableBytes { raw in
                try? Socket.read(session.fd, into: raw.baseAddress!, count: raw.count)
            }
            switch r {
            case .done(let n)? where n > 0:
                session.input += chunk[0..<n]
                guard runBufferedLines(session, epoll: epoll) else { return }
                if session.waiting {
                    if session.input.count > Self.maxLine { end(session, epoll: epoll) }
                    continue
                }
                if session.closing { flush(session, epoll: epoll); return }
                if session.input.count > Self.maxLine { end(session, epoll: epoll); return }
                if !session.output.isEmpty { flush(session, epoll: epoll); return }
            case .wouldBlock?:
                return
            default:
                // End of stream: a line without its newline still counts, as with HAProxy.
                session.ended = true
                if session.waiting {
                    // The answer under way finishes the session (`resume`); the descriptor
                    // stays registered, with no events, so its output can still wait for room.
                    try? epoll.modify(session.fd, events: 0, token: Self.sessionToken + UInt64(session.fd.rawValue))
                    return
                }
                finishAtEnd(session, epoll: epoll)
                return
            }
        }
    }

    /// Runs the complete lines buffered, until one waits for the loops; false when the
    /// session is gone.
    private func runBufferedLines(_ session: Session, epoll: Epoll) -> Bool {
        while !session.closing, !session.waiting, let newline = session.input.firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: session.input[..<newline], as: UTF8.self)
            let trimmed = line.trimmingBlanks()
            if trimmed.hasSuffix("<<") {
                // A payload follows, up to an empty line: wait until it is all here.
                guard let end = Self.payloadEnd(session.input, from: newline + 1) else { return true }
                let payload = String(decoding: session.input[(newline + 1)..<end.start], as: UTF8.self)
                session.input.removeSubrange(..<end.next)
                var commands = RuntimeCommands.split(trimmed)
                if !commands.isEmpty { commands[commands.count - 1].append(payload) }
                guard runCommands(commands, from: 0, in: session, epoll: epoll) else { return false }
                continue
            }
            session.input.removeSubrange(...newline)
            guard run(line, in: session, epoll: epoll) else { return false }
        }
        return true
    }

    /// Where a payload starting at `from` ends: the start of its empty line, and just past it.
    static func payloadEnd(_ input: [UInt8], from: Int) -> (start: Int, next: Int)? {
        var lineStart = from
        var i = from
        while i < input.count {
            if input[i] == UInt8(ascii: "\n") {
                let line = input[lineStart..<i]
                if line.isEmpty || line.elementsEqual([UInt8(ascii: "\r")]) { return (lineStart, i + 1) }
                lineStart = i + 1
            }
            i += 1
        }
        return nil
    }

    /// The client closed: a last line without its newline runs, then the session ends.
    private func finishAtEnd(_ session: Session, epoll: Epoll) {
        if !session.input.isEmpty && !session.closing && !session.waiting {
            let line = String(decoding: session.input, as: UTF8.self)
            session.input = []
            guard run(line, in: session, epoll: epoll) else { return }
            if session.waiting { return }
        }
        session.closing = true
        flush(session, epoll: epoll)
    }

    /// A command answered by the loops is done: the lines that waited run, then the output
    /// goes out.
    private func resume(_ session: Session, epoll: Epoll) {
        guard runBufferedLines(session, epoll: epoll), !session.waiting else { return }
        if session.ended { finishAtEnd(session, epoll: epoll); return }
        flush(session, epoll: epoll)
    }

    /// Runs one line's commands into the session's output. False when the session is gone
    /// (`_getsocks` hands it the listeners and ends it).
    private func run(_ line: String, in session: Session, epoll: Epoll) -> Bool {
        runCommands(RuntimeCommands.split(line), from: 0, in: session, epoll: epoll)
    }

    /// Runs a line's commands from `start`. A command the data loops answer suspends the
    /// line: its answer, then the commands after it, come when the loops have answered.
    private func runCommands(_ list: [[String]], from start: Int, in session: Session, epoll: Epoll) -> Bool {
        let level = session.level ?? endpoints[session.endpoint].settings.level
        let exposesListeners = session.endpoint >= 0 && endpoints[session.endpoint].settings.exposeListeners
        var i = start
        while i < list.count {
            let command = list[i]
            i += 1
            if command == ["_getsocks"] {
                // Refused without `expose-fd listeners`: nothing is sent, as HAProxy does.
                if exposesListeners, let engine = commands?.engine {
                    epoll.remove(session.fd)
                    ListenerExport.send(engine.listeners, to: session.fd)
                }
                end(session, epoll: epoll)
                return false
            }
            if command == ["quit"] { session.closing = true; break }
            if command == ["prompt"] { session.interactive.toggle() }
            if command == ["show", "runtime-state"] {
                // Ours: what a reload would carry (`proxy -c -V -x SOCKET` compares it).
                if level < .operator {
                    session.output += Array("Permission denied\n\n".utf8)
                } else if let engine = commands?.engine {
                    session.output += Array((RuntimeState.lines(engine.model).joined(separator: "\n") + "\n\n").utf8)
                }
                continue
            }
            if command.count >= 3, command[0] == "set", command[1] == "timeout", command[2] == "cli" {
                session.output += Array(Self.setTimeout(command, session).utf8)
                continue
            }
            guard let commands else { continue }
            let next = i
            // An answer given at once (a refusal) comes back inside the call.
            var immediate: String?
            var inCall = true
            let started = commands.runOnLoops(command, level: level) { [weak self] answer in
                if inCall { immediate = answer; return }
                guard let self, self.sessions[session.fd.rawValue] === session else { return }
                session.output += Array(answer.utf8)
                session.waiting = false
                guard self.runCommands(list, from: next, in: session, epoll: epoll) else { return }
                self.resume(session, epoll: epoll)
            }
            inCall = false
            if started {
                if let immediate { session.output += Array(immediate.utf8); continue }
                session.waiting = true
                return true
            }
            session.output += Array(commands.run(command, level: level).utf8)
        }
        if session.interactive && !session.closing {
            session.output += Array("> ".utf8)
        } else {
            session.closing = true
        }
        return true
    }

    /// `set timeout cli <delay>`: the session's idle timeout, in seconds unless a unit says
    /// otherwise (HAProxy's form; hatop sends it).
    static func setTimeout(_ words: [String], _ session: Session) -> String {
        guard words.count == 4 else { return "Expects an integer value.\n\n" }
        let text = words[3]
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        let scale: UInt64? = ["": 1_000_000_000, "s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "m": 60_000_000_000,
                              "h": 3_600_000_000_000, "d": 86_400_000_000_000][String(unit)]
        // At most about 24 days (2^31 - 1 ms), as HAProxy's timers hold.
        guard let n = UInt64(digits), let scale, n > 0 else { return "Expects an integer value.\n\n" }
        let (ns, overflow) = n.multipliedReportingOverflow(by: scale)
        guard !overflow, ns <= UInt64(Int32.max) * 1_000_000 else { return "Timeout too large: at most 2147483647 ms.\n\n" }
        session.timeoutNanoseconds = ns
        return "\n"
    }

    private func flush(_ session: Session, epoll: Epoll) {
        while session.written < session.output.count {
            let r = session.output.withUnsafeBytes { raw in
                try? Socket.write(session.fd, from: raw.baseAddress! + session.written, count: raw.count - session.written)
            }
            switch r {
            case .done(let n)?:
                session.written += n
            case .wouldBlock?:
                try? epoll.modify(session.fd, events: Epoll.writable, token: Self.sessionToken + UInt64(session.fd.rawValue))
                return
            default:
                end(session, epoll: epoll)
                return
            }
        }
        if session.closing { end(session, epoll: epoll); return }
        // Interactive: all written; wait for the next line.
        session.output = []
        session.written = 0
        session.deadline = Clock.monotonicNanoseconds() + (session.timeoutNanoseconds ?? idleTimeoutNanoseconds)
        try? epoll.modify(session.fd, events: Epoll.readable | Epoll.readHangup, token: Self.sessionToken + UInt64(session.fd.rawValue))
    }

    private func end(_ session: Session, epoll: Epoll) {
        epoll.remove(session.fd)
        session.fd.close()
        sessions[session.fd.rawValue] = nil
        if full && listening && sessions.count < maxSessions {
            full = false
            register(in: epoll)
        }
    }

    /// Closes the sessions idle past `stats timeout`, and re-arms resting listeners.
    func expire(epoll: Epoll) {
        let now = Clock.monotonicNanoseconds()
        for session in sessions.values where session.deadline <= now { end(session, epoll: epoll) }
        if listening {
            for i in resting { if let fd = endpoints[i].fd { try? epoll.add(fd, events: Epoll.readable, token: Self.listenerToken + UInt64(i)) } }
        }
        resting = []
    }

    /// Stops taking CLI connections (soft stop, exit). A UNIX name is removed only while it
    /// still names our socket: after a reload it names the successor's.
    func closeListeners(epoll: Epoll) {
        guard listening else { return }
        listening = false
        for i in endpoints.indices {
            let e = endpoints[i]
            if let fd = e.fd {
                epoll.remove(fd)
                fd.close()
            }
            endpoints[i].fd = nil
            if let d = e.directory {
                if e.temporary == nil, let mine = e.file, d.identity(e.name) == mine { try? d.unlink(e.name) }
                d.close()
                endpoints[i].directory = nil
            }
        }
    }
}
