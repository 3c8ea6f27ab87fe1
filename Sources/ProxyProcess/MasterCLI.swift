import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// The master CLI (`-S PATH[,mode,600][,level,admin][,user,U][,group,G]`): its listening
/// socket and its sessions, served by the master's epoll without blocking. A line holds
/// `;`-separated commands. `reload`, `show proc`, `prompt`, `quit` and `help` are the
/// master's; a command prefixed `@1` (the serving worker) or `@!PID` (any worker, old ones
/// included) goes to that worker's runtime API at this socket's level, and a bare prefix
/// sets the session's target for the commands after it (`@!1234; show stat`). A routed
/// command travels on a fresh socket pair whose far end is passed to the worker over its
/// order channel; the answer is copied back as it comes, pausing while the client is slow.
final class MasterCLI {
    /// Where and how the socket is bound, from `-S`.
    struct Settings {
        var path = ""
        var mode: mode_t = 0o600
        var level: AccessLevel = .admin
        var uid: UInt32?
        var gid: UInt32?

        /// Parses `-S`'s value; a message naming the fix otherwise.
        static func parse(_ text: String) -> Result<Settings, CommandLineOptions.UsageError> {
            var parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            var s = Settings()
            var path = parts.removeFirst()
            if path.hasPrefix("unix@") { path.removeFirst(5) }
            if path.isEmpty || path.contains("@") || !path.contains("/") && path.contains(":") {
                return .failure(.init(message: "-S '\(text)': the master CLI listens on a UNIX socket path (e.g. -S /run/proxy/master.sock,mode,600,level,admin)"))
            }
            s.path = path
            while !parts.isEmpty {
                let key = parts.removeFirst()
                guard !parts.isEmpty else { return .failure(.init(message: "-S '\(text)': '\(key)' needs a value")) }
                let value = parts.removeFirst()
                switch key {
                case "mode":
                    guard let m = mode_t(value, radix: 8), m <= 0o777 else { return .failure(.init(message: "-S '\(text)': mode '\(value)' is not an octal mode such as 600")) }
                    s.mode = m
                case "level":
                    switch value {
                    case "user": s.level = .user
                    case "operator": s.level = .operator
                    case "admin": s.level = .admin
                    default: return .failure(.init(message: "-S '\(text)': level is user, operator or admin, not '\(value)'"))
                    }
                case "user", "uid":
                    if let n = UInt32(value) { s.uid = n } else if let u = UserDatabase.user(named: value) { s.uid = u.uid } else {
                        return .failure(.init(message: "-S '\(text)': no user '\(value)'"))
                    }
                case "group", "gid":
                    if let n = UInt32(value) { s.gid = n } else if let g = UserDatabase.group(named: value) { s.gid = g } else {
                        return .failure(.init(message: "-S '\(text)': no group '\(value)'"))
                    }
                default:
                    return .failure(.init(message: "-S '\(text)': unknown option '\(key)' (mode, level, user, group)"))
                }
            }
            return .success(s)
        }
    }

    /// Where a command goes.
    enum Target: Equatable {
        case master
        case worker(pid: Int32)
        /// `@1`: whichever worker serves when the command runs.
        case current
    }

    /// One client connection.
    final class Session {
        let fd: FileDescriptor
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var interactive = false
        var closing = false
        /// The commands of the line being run, as written.
        var pending: [String] = []
        var target = Target.master
        /// A routed command under way: the master's end of its pair.
        var relay: FileDescriptor?
        /// Reading the relay waits while the client has not taken this much.
        var relayPaused = false
        var waitingForReload = false
        /// Reloads the master had started when this session asked: answered by a later one.
        var reloadTicket = 0
        var deadline: UInt64
        init(fd: FileDescriptor, deadline: UInt64) {
            self.fd = fd
            self.deadline = deadline
        }
    }

    static let sessionToken: UInt64 = 1 << 32
    static let relayToken: UInt64 = 1 << 33
    static let maxLine = 64 * 1024
    static let maxPendingOutput = 256 * 1024
    static let idleNanoseconds: UInt64 = 10_000_000_000
    static let interactiveIdleNanoseconds: UInt64 = 600_000_000_000

    let settings: Settings
    let listener: FileDescriptor
    private var sessions: [Int32: Session] = [:]
    private var relays: [Int32: Session] = [:]
    unowned let master: Master

    init(_ settings: Settings, master: Master) throws {
        self.settings = settings
        self.master = master
        unlink(settings.path)
        let fd = try Socket.make(family: AF_UNIX)
        do {
            try Socket.bind(fd, try SocketAddress(checkedUnixPath: settings.path))
            guard chmod(settings.path, settings.mode) == 0 else { throw SystemError("chmod", code: errno) }
            if settings.uid != nil || settings.gid != nil {
                guard chown(settings.path, settings.uid ?? UInt32.max, settings.gid ?? UInt32.max) == 0 else { throw SystemError("chown", code: errno) }
            }
            try Socket.listen(fd, backlog: 16)
            try Socket.setNonBlocking(fd)
        } catch {
            fd.close()
            unlink(settings.path)
            throw error
        }
        listener = fd
    }

    func close() {
        for s in sessions.values { end(s, epoll: nil) }
        listener.close()
        unlink(settings.path)
    }

    // MARK: events

    func accept(epoll: Epoll) {
        while let r = try? Socket.accept(listener), case .done(let (fd, _)) = r {
            try? Socket.setNonBlocking(fd)
            let s = Session(fd: fd, deadline: Clock.monotonicNanoseconds() + Self.idleNanoseconds)
            sessions[fd.rawValue] = s
            try? epoll.add(fd, events: Epoll.readable | Epoll.readHangup, token: Self.sessionToken + UInt64(fd.rawValue))
        }
    }

    /// Handles one epoll event if it is ours.
    func handle(token: UInt64, events: UInt32, epoll: Epoll) -> Bool {
        if token >= Self.relayToken {
            if let s = relays[Int32(truncatingIfNeeded: token - Self.relayToken)] { readRelay(s, epoll: epoll) }
            return true
        }
        if token >= Self.sessionToken {
            guard let s = sessions[Int32(truncatingIfNeeded: token - Self.sessionToken)] else { return true }
            if events & Epoll.writable != 0 { flush(s, epoll: epoll) }
            if events & (Epoll.readable | Epoll.readHangup) != 0, sessions[s.fd.rawValue] === s { read(s, epoll: epoll) }
            return true
        }
        return false
    }

    /// Ends the sessions idle past their timeout.
    func expire(epoll: Epoll) {
        let now = Clock.monotonicNanoseconds()
        for s in sessions.values where s.deadline <= now && s.relay == nil && !s.waitingForReload { end(s, epoll: epoll) }
    }

    /// The reload the sessions asked for is over: each hears the verdict, then its
    /// connection closes (commands after `reload` on its line are not run, as HAProxy).
    func reloadFinished(ok: Bool, message: String, upTo started: Int, epoll: Epoll) {
        for s in sessions.values where s.waitingForReload && s.reloadTicket < started {
            s.waitingForReload = false
            s.output += Array("Success=\(ok ? 1 : 0)\n--\n\(message)\n\n".utf8)
            s.pending = []
            s.closing = true
            flush(s, epoll: epoll)
        }
    }

    var waitingForReload: Bool { sessions.values.contains { $0.waitingForReload } }

    private func read(_ s: Session, epoll: Epoll) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let r = chunk.withUnsafeMutableBytes { try? Socket.read(s.fd, into: $0.baseAddress!, count: $0.count) }
            switch r {
            case .done(let n)? where n > 0:
                s.input += chunk[0..<n]
                s.deadline = Clock.monotonicNanoseconds() + (s.interactive ? Self.interactiveIdleNanoseconds : Self.idleNanoseconds)
                if s.input.count > Self.maxLine {
                    s.output += Array("Command line too long (at most \(Self.maxLine) bytes).\n\n".utf8)
                    s.input = []
                    s.closing = true
                    flush(s, epoll: epoll)
                    return
                }
            case .wouldBlock?:
                runLines(s, epoll: epoll)
                return
            default:
                // End of input: a last line without its newline still runs.
                if !s.input.isEmpty && s.input.last != UInt8(ascii: "\n") { s.input.append(UInt8(ascii: "\n")) }
                try? epoll.modify(s.fd, events: 0, token: Self.sessionToken + UInt64(s.fd.rawValue))
                runLines(s, epoll: epoll)
                if sessions[s.fd.rawValue] === s, !s.waitingForReload, s.relay == nil, s.pending.isEmpty {
                    s.closing = true
                    flush(s, epoll: epoll)
                }
                return
            }
        }
    }

    /// Runs the complete lines received, while nothing is under way.
    private func runLines(_ s: Session, epoll: Epoll) {
        while sessions[s.fd.rawValue] === s, s.relay == nil, !s.waitingForReload, !s.closing {
            if !s.pending.isEmpty { runPending(s, epoll: epoll); continue }
            guard let newline = s.input.firstIndex(of: UInt8(ascii: "\n")) else { break }
            let line = String(decoding: s.input[..<newline], as: UTF8.self).trimmingBlanks()
            var commands = Self.splitCommands(line)
            var consumed = newline + 1
            if line.hasSuffix("<<") {
                // A payload follows up to an empty line; it goes with the line's last command.
                guard let end = RuntimeAPIServer.payloadEnd(s.input, from: newline + 1) else { break }
                if !commands.isEmpty { commands[commands.count - 1] += "\n" + String(decoding: s.input[(newline + 1)..<end.start], as: UTF8.self) }
                consumed = end.next
            }
            s.input.removeSubrange(..<consumed)
            s.pending = commands.isEmpty ? [""] : commands
        }
        flush(s, epoll: epoll)
    }

    /// Runs the line's commands until one is under way or the line is done.
    private func runPending(_ s: Session, epoll: Epoll) {
        while !s.pending.isEmpty, s.relay == nil, !s.waitingForReload, !s.closing {
            var command = s.pending.removeFirst().trimmingBlanks()
            var target = s.target
            if command.hasPrefix("@") {
                let word = String(command.prefix { $0 != " " && $0 != "\t" })
                command = String(command.dropFirst(word.count)).trimmingBlanks()
                guard let t = resolve(word) else {
                    s.output += Array("Can't find the target PID matching the prefix '\(word)'\n\n".utf8)
                    continue
                }
                if command.isEmpty { s.target = t; continue }
                target = t
            }
            if target == .master {
                runMasterCommand(command, s, epoll: epoll)
            } else {
                route(command, to: target, s, epoll: epoll)
            }
        }
        if s.pending.isEmpty, s.relay == nil, !s.waitingForReload {
            if s.interactive && !s.closing { s.output += Array(prompt(s).utf8) } else { s.closing = true }
        }
    }

    func resolve(_ word: String) -> Target? {
        switch word {
        case "@master", "@0": return .master
        case "@1": return master.current != nil ? .current : nil
        default:
            guard word.hasPrefix("@!"), let pid = Int32(word.dropFirst(2)) else { return nil }
            return master.workerForRouting(pid) != nil ? .worker(pid: pid) : nil
        }
    }

    private func prompt(_ s: Session) -> String {
        let base: String
        switch s.target {
        case .master: base = master.lastReloadOK ? "master" : "master[ReloadFailed]"
        case .current: base = "@1"
        case .worker(let pid): base = "@!\(pid)"
        }
        return "\(base)> "
    }

    private func runMasterCommand(_ command: String, _ s: Session, epoll: Epoll) {
        let words = command.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        switch words {
        case []:
            break
        case ["reload"]:
            guard settings.level >= .operator else { s.output += Array("Permission denied\n\n".utf8); return }
            s.waitingForReload = true
            s.reloadTicket = master.reloadStarts
            master.requestReload(epoll: epoll)
        case ["show", "proc"]:
            s.output += Array(master.showProc().utf8)
        case ["prompt"]:
            s.interactive.toggle()
        case ["quit"]:
            s.pending = []
            s.closing = true
        case ["help"]:
            s.output += Array("""
            The following commands are valid at this level:
              @<relative pid> : send a command to the <relative pid> process (@1: the serving worker)
              @!<pid>         : send a command to the <pid> process, old workers included
              @master         : send a command to the master process
              help           : list the commands
              prompt         : toggle the interactive prompt
              quit           : leave this session
              reload         : start a new worker, then say Success=1 or Success=0 and why
              show proc      : the master, its workers and old workers


            """.utf8)
        default:
            s.output += Array("Unknown command: '\(command)'. Use 'help', or '@1 \(command)' for the worker.\n\n".utf8)
        }
    }

    private func route(_ command: String, to target: Target, _ s: Session, epoll: Epoll) {
        let worker: Master.Worker?
        switch target {
        case .current: worker = master.current
        case .worker(let pid): worker = master.workerForRouting(pid)
        case .master: worker = nil
        }
        guard let worker else {
            s.output += Array("The target process has exited.\n\n".utf8)
            return
        }
        let pair: (FileDescriptor, FileDescriptor)
        do { pair = try UnixSocket.pair(type: Int32(SOCK_STREAM.rawValue)) } catch {
            s.output += Array("Cannot reach the worker: \(error)\n\n".utf8)
            return
        }
        let (near, far) = pair
        do {
            try UnixSocket.send(worker.orders, [UInt8(ascii: "S"), UInt8(settings.level.rawValue)], fds: [far.rawValue])
        } catch {
            far.close()
            near.close()
            s.output += Array("Cannot reach worker \(worker.pid): \(error)\n\n".utf8)
            return
        }
        far.close()
        // The command (a payload ends with an empty line), then end of input: the worker
        // answers and closes.
        let bytes = Array((command + (command.contains("\n") ? "\n\n" : "\n")).utf8)
        _ = bytes.withUnsafeBytes { try? near.writeAll($0) }
        Socket.shutdown(near, Int32(SHUT_WR))
        try? Socket.setNonBlocking(near)
        s.relay = near
        relays[near.rawValue] = s
        try? epoll.add(near, events: Epoll.readable | Epoll.readHangup, token: Self.relayToken + UInt64(near.rawValue))
    }

    private func readRelay(_ s: Session, epoll: Epoll) {
        guard let relay = s.relay else { return }
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while s.output.count - s.written < Self.maxPendingOutput {
            let r = chunk.withUnsafeMutableBytes { try? Socket.read(relay, into: $0.baseAddress!, count: $0.count) }
            switch r {
            case .done(let n)? where n > 0:
                s.output += chunk[0..<n]
            case .wouldBlock?:
                flush(s, epoll: epoll)
                return
            default:
                epoll.remove(relay)
                relays[relay.rawValue] = nil
                relay.close()
                s.relay = nil
                s.relayPaused = false
                runPending(s, epoll: epoll)
                runLines(s, epoll: epoll)
                return
            }
        }
        // The client is slow: stop reading the worker until it has taken what is pending.
        s.relayPaused = true
        try? epoll.modify(relay, events: 0, token: Self.relayToken + UInt64(relay.rawValue))
        flush(s, epoll: epoll)
    }

    private func flush(_ s: Session, epoll: Epoll) {
        guard sessions[s.fd.rawValue] === s else { return }
        while s.written < s.output.count {
            let r = s.output.withUnsafeBytes { try? Socket.write(s.fd, from: $0.baseAddress! + s.written, count: $0.count - s.written) }
            switch r {
            case .done(let n)?:
                s.written += n
            case .wouldBlock?:
                try? epoll.modify(s.fd, events: Epoll.writable, token: Self.sessionToken + UInt64(s.fd.rawValue))
                return
            default:
                end(s, epoll: epoll)
                return
            }
        }
        s.output = []
        s.written = 0
        if s.relayPaused, let relay = s.relay {
            s.relayPaused = false
            try? epoll.modify(relay, events: Epoll.readable | Epoll.readHangup, token: Self.relayToken + UInt64(relay.rawValue))
        }
        if s.closing && s.relay == nil && !s.waitingForReload { end(s, epoll: epoll); return }
        try? epoll.modify(s.fd, events: Epoll.readable | Epoll.readHangup, token: Self.sessionToken + UInt64(s.fd.rawValue))
    }

    private func end(_ s: Session, epoll: Epoll?) {
        if let relay = s.relay {
            epoll?.remove(relay)
            relays[relay.rawValue] = nil
            relay.close()
            s.relay = nil
        }
        epoll?.remove(s.fd)
        s.fd.close()
        sessions[s.fd.rawValue] = nil
    }

    /// A line's commands, split at each `;` not escaped by a backslash, as written (escapes
    /// kept, for the worker's own parser).
    static func splitCommands(_ line: String) -> [String] {
        var out: [String] = []
        var current = ""
        var escaped = false
        for c in line {
            if escaped { current.append(c); escaped = false; continue }
            if c == "\\" { current.append(c); escaped = true; continue }
            if c == ";" { out.append(current); current = ""; continue }
            current.append(c)
        }
        out.append(current)
        return out.map { $0.trimmingBlanks() }.filter { !$0.isEmpty }
    }
}
