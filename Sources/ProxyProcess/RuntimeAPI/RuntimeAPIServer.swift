import ProxyConfig
import ProxyEngine
import ProxySystem
import CProxySys
import Glibc

/// The `stats socket` lines: their listening sockets and the CLI sessions on them, served by
/// the control loop. A session sends one line of `;`-separated commands (HAProxy's
/// non-interactive mode), gets the answers, and is closed.
///
/// A UNIX socket is bound as `PATH.PID.tmp` and renamed into place only once the process is
/// about to serve, with a link to the old socket kept until the old processes are told, so
/// a reload that fails leaves the old process's socket where it was (`-x PATH` of the next
/// reload reaches the newest process).
final class RuntimeAPIServer {
    /// One `stats socket` line's listening socket (nil while a held address waits for the
    /// old process to let it go).
    struct Endpoint {
        var fd: FileDescriptor?
        let settings: StatsSocket
        /// For a UNIX socket: its directory, opened before any chroot and kept, so that
        /// publishing, rollback and the final unlink work from inside one; and the names in it.
        var directory: Int32 = -1
        var name = ""
        var temporary: String?
        /// A link to the previous owner's socket, restored if this start fails.
        var backup: String?
        /// The published file's identity, to know later whether the name still is ours.
        var file: (device: UInt, inode: UInt)?
    }

    /// A CLI connection: the bytes of its command line, then the answer being written.
    final class Session {
        let fd: FileDescriptor
        let endpoint: Int
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        var deadline: UInt64
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
    /// Set once the engine runs, before the first session is accepted.
    var commands: RuntimeCommands?

    /// A `stats socket` that could not be bound, with its line.
    struct BindFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Binds every `stats socket` line: UNIX ones under a temporary name, beside a link to
    /// the socket they will replace. An address still held by an old process (an abstract
    /// name, say) is left for `bindHeld()` once the old processes have stopped.
    init(configuration: Configuration, oldProcesses: Bool) throws {
        idleTimeoutNanoseconds = UInt64(configuration.global.statsTimeout ?? 10_000) * 1_000_000
        do {
            for settings in configuration.global.statsSockets {
                endpoints.append(try Self.bind(settings, deferringHeld: oldProcesses))
            }
        } catch {
            rollback()
            throw error
        }
    }

    private static func failure(_ settings: StatsSocket, _ what: String) -> BindFailure {
        BindFailure(description: "\(settings.location): error: stats socket \(settings.address): \(what)")
    }

    private static func bind(_ settings: StatsSocket, deferringHeld: Bool) throws -> Endpoint {
        do {
            switch settings.address {
            case .unix(let path):
                return try bindUnix(path, settings)
            case .inet, .abstract:
                // The frontends' bind, with SO_REUSEADDR and SO_REUSEPORT for inet addresses.
                do {
                    let l = try Listener.bind(ListenerKey(address: settings.address), frontend: "stats socket",
                                              options: BindOptions(), backlog: 16, reusePort: true)
                    return Endpoint(fd: l.fd, settings: settings)
                } catch let e as SystemError where e.code == EADDRINUSE && deferringHeld {
                    return Endpoint(fd: nil, settings: settings)
                }
            case .inheritedFD(let n):
                let fd = FileDescriptor(rawValue: n)
                try Socket.setNonBlocking(fd)
                return Endpoint(fd: fd, settings: settings)
            }
        } catch let e as SystemError {
            throw failure(settings, "cannot bind: \(e.reason)")
        }
    }

    private static func bindUnix(_ path: String, _ settings: StatsSocket) throws -> Endpoint {
        let slash = path.lastIndex(of: "/")
        let directoryPath = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        let directory = cproxy_open_directory(directoryPath)
        guard directory >= 0 else {
            throw failure(settings, "cannot open the directory '\(directoryPath)': \(SystemError.last("open").reason)")
        }
        var endpoint = Endpoint(fd: nil, settings: settings, directory: directory, name: name)
        let temporary = "\(name).\(getpid()).tmp"
        let backup = "\(name).\(getpid()).bak"
        do {
            let fd = try Socket.make(family: AF_UNIX)
            endpoint.fd = fd
            unlinkat(directory, temporary, 0)
            try Socket.bind(fd, SocketAddress(unixPath: directoryPath + "/" + temporary))
            endpoint.temporary = temporary
            if let mode = settings.mode, fchmodat(directory, temporary, mode_t(mode), 0) != 0 { throw SystemError.last("chmod") }
            var uid = settings.uid.map { uid_t($0) } ?? uid_t.max
            var gid = settings.gid.map { gid_t($0) } ?? gid_t.max
            if let user = settings.user {
                guard let e = getpwnam(user) else { throw failure(settings, "unknown user '\(user)'") }
                uid = e.pointee.pw_uid
            }
            if let group = settings.group {
                guard let e = getgrnam(group) else { throw failure(settings, "unknown group '\(group)'") }
                gid = e.pointee.gr_gid
            }
            if uid != uid_t.max || gid != gid_t.max, fchownat(directory, temporary, uid, gid, 0) != 0 { throw SystemError.last("chown") }
            try Socket.listen(fd, backlog: 16)
            // Keep the running process's socket reachable until this start commits.
            unlinkat(directory, backup, 0)
            if linkat(directory, name, directory, backup, 0) == 0 {
                endpoint.backup = backup
            } else if cproxy_errno() != ENOENT {
                throw failure(settings, "cannot keep a link to the socket in use at '\(path)': \(SystemError.last("link").reason)")
            }
        } catch {
            endpoint.fd?.close()
            if let t = endpoint.temporary { unlinkat(directory, t, 0) }
            if let b = endpoint.backup { unlinkat(directory, b, 0) }
            Glibc.close(directory)
            if let e = error as? SystemError { throw failure(settings, "cannot bind: \(e.reason)") }
            throw error
        }
        return endpoint
    }

    /// Binds the addresses an old process held at start-up; it has stopped by now (ours
    /// close their stats sockets before acknowledging). One that is still held after a short
    /// wait is reported and left out.
    func bindHeld() {
        for i in endpoints.indices where endpoints[i].fd == nil && endpoints[i].directory < 0 {
            let settings = endpoints[i].settings
            for attempt in 0..<20 {
                if let e = try? Self.bind(settings, deferringHeld: true), e.fd != nil {
                    endpoints[i].fd = e.fd
                    break
                }
                if attempt == 19 {
                    ProxyMain.printError("\(settings.location): warning: stats socket \(settings.address) is still held by an old process; the runtime API is not served there\n")
                }
                usleep(10_000)
            }
        }
    }

    /// Renames the UNIX sockets into place.
    func publish() {
        for i in endpoints.indices {
            guard let temporary = endpoints[i].temporary else { continue }
            let directory = endpoints[i].directory
            if renameat(directory, temporary, directory, endpoints[i].name) == 0 {
                endpoints[i].temporary = nil
                endpoints[i].file = Self.identity(directory, endpoints[i].name)
            } else {
                ProxyMain.printError("\(endpoints[i].settings.location): warning: stats socket: cannot rename '\(temporary)' into place: \(SystemError.last("rename").reason)\n")
            }
        }
    }

    static func identity(_ directory: Int32, _ name: String) -> (device: UInt, inode: UInt)? {
        var st = stat()
        guard fstatat(directory, name, &st, 0) == 0 else { return nil }
        return (UInt(st.st_dev), UInt(st.st_ino))
    }

    /// The start went through (the old processes are told): the replaced sockets' links go.
    func commit() {
        for i in endpoints.indices {
            if let backup = endpoints[i].backup { unlinkat(endpoints[i].directory, backup, 0) }
            endpoints[i].backup = nil
        }
    }

    /// The start failed: every name goes back to what it named before.
    func rollback() {
        for e in endpoints {
            if e.directory >= 0 {
                if let temporary = e.temporary { unlinkat(e.directory, temporary, 0) }
                if let backup = e.backup {
                    renameat(e.directory, backup, e.directory, e.name)
                } else if let mine = e.file, let there = Self.identity(e.directory, e.name), mine == there {
                    unlinkat(e.directory, e.name, 0)
                }
                Glibc.close(e.directory)
            }
            e.fd?.close()
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

    private func read(_ session: Session, epoll: Epoll) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let r = chunk.withUnsafeMutableBytes { raw in
                try? Socket.read(session.fd, into: raw.baseAddress!, count: raw.count)
            }
            switch r {
            case .done(let n)? where n > 0:
                session.input += chunk[0..<n]
                if let newline = session.input.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: session.input[..<newline], as: UTF8.self)
                    run(line, in: session, epoll: epoll)
                    return
                }
                if session.input.count > Self.maxLine { end(session, epoll: epoll); return }
            case .wouldBlock?:
                return
            default:
                // End of stream: a line without its newline still counts, as with HAProxy.
                if !session.input.isEmpty {
                    run(String(decoding: session.input, as: UTF8.self), in: session, epoll: epoll)
                } else {
                    end(session, epoll: epoll)
                }
                return
            }
        }
    }

    private func run(_ line: String, in session: Session, epoll: Epoll) {
        let settings = endpoints[session.endpoint].settings
        for command in RuntimeCommands.split(line) {
            if command == ["_getsocks"] {
                // Refused without `expose-fd listeners`: nothing is sent, as HAProxy does.
                if settings.exposeListeners, let engine = commands?.engine {
                    epoll.remove(session.fd)
                    ListenerExport.send(engine.listeners, to: session.fd)
                }
                end(session, epoll: epoll)
                return
            }
            if command == ["quit"] { break }
            if let commands { session.output += Array(commands.run(command, level: settings.level).utf8) }
        }
        session.input = []
        if session.output.isEmpty { end(session, epoll: epoll); return }
        flush(session, epoll: epoll)
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
        end(session, epoll: epoll)
    }

    private func end(_ session: Session, epoll: Epoll) {
        epoll.remove(session.fd)
        session.fd.close()
        sessions[session.fd.rawValue] = nil
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
            if e.directory >= 0 {
                if let mine = e.file, let there = Self.identity(e.directory, e.name), mine == there { unlinkat(e.directory, e.name, 0) }
                Glibc.close(e.directory)
                endpoints[i].directory = -1
            }
        }
    }
}
