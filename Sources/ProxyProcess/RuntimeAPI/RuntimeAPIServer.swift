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
/// committed to serving, so a reload that fails leaves the old process's socket where it was
/// (`-x PATH` of the next reload reaches the newest process).
final class RuntimeAPIServer {
    /// One `stats socket` line's listening socket.
    struct Endpoint {
        let fd: FileDescriptor
        let settings: StatsSocket
        /// For a UNIX socket: the configured path, and where it is bound until published.
        let path: String?
        var temporary: String?
        /// A link to the previous owner's socket, restored if this start fails.
        var backup: String?
        /// The published file's identity, to know later whether the path still names it.
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
    let idleTimeoutNanoseconds: UInt64
    /// Set once the engine runs, before the first session is accepted.
    var commands: RuntimeCommands?

    /// A `stats socket` that could not be bound, with its line.
    struct BindFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Binds every `stats socket` line (UNIX ones under a temporary name).
    init(configuration: Configuration) throws {
        idleTimeoutNanoseconds = UInt64(configuration.global.statsTimeout ?? 10_000) * 1_000_000
        do {
            for settings in configuration.global.statsSockets { endpoints.append(try Self.bind(settings)) }
        } catch {
            rollback()
            throw error
        }
    }

    private static func bind(_ settings: StatsSocket) throws -> Endpoint {
        let where_ = "\(settings.location): stats socket \(settings.address)"
        do {
            switch settings.address {
            case .unix(let path):
                let temporary = "\(path).\(getpid()).tmp"
                let fd = try Socket.make(family: AF_UNIX)
                do {
                    unlink(temporary)
                    try Socket.bind(fd, SocketAddress(unixPath: temporary))
                    if let mode = settings.mode, chmod(temporary, mode_t(mode)) != 0 { throw SystemError.last("chmod") }
                    var uid = settings.uid.map { uid_t($0) } ?? uid_t.max
                    var gid = settings.gid.map { gid_t($0) } ?? gid_t.max
                    if let name = settings.user {
                        guard let e = getpwnam(name) else { throw BindFailure(description: "\(where_): unknown user '\(name)'") }
                        uid = e.pointee.pw_uid
                    }
                    if let name = settings.group {
                        guard let e = getgrnam(name) else { throw BindFailure(description: "\(where_): unknown group '\(name)'") }
                        gid = e.pointee.gr_gid
                    }
                    if uid != uid_t.max || gid != gid_t.max, chown(temporary, uid, gid) != 0 { throw SystemError.last("chown") }
                    try Socket.listen(fd, backlog: 16)
                } catch {
                    fd.close()
                    unlink(temporary)
                    throw error
                }
                return Endpoint(fd: fd, settings: settings, path: path, temporary: temporary)
            case .inet, .abstract:
                guard let address = Listener.socketAddress(for: ListenerKey(address: settings.address)) else {
                    throw SystemError("bind", code: EINVAL)
                }
                let fd = try Socket.make(family: address.family)
                do {
                    if address.family != AF_UNIX {
                        try Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEADDR, value: 1)
                        try Socket.setOption(fd, level: SOL_SOCKET, name: SO_REUSEPORT, value: 1)
                    }
                    try Socket.bind(fd, address)
                    try Socket.listen(fd, backlog: 16)
                } catch {
                    fd.close()
                    throw error
                }
                return Endpoint(fd: fd, settings: settings, path: nil)
            case .inheritedFD(let n):
                let fd = FileDescriptor(rawValue: n)
                try Socket.setNonBlocking(fd)
                return Endpoint(fd: fd, settings: settings, path: nil)
            }
        } catch let e as SystemError {
            throw BindFailure(description: "\(where_): cannot bind: \(e.reason)")
        }
    }

    /// Renames the UNIX sockets into place, keeping a link to the sockets they replace.
    func publish() {
        for i in endpoints.indices {
            guard let path = endpoints[i].path, let temporary = endpoints[i].temporary else { continue }
            let backup = "\(path).\(getpid()).bak"
            unlink(backup)
            if link(path, backup) == 0 { endpoints[i].backup = backup }
            if rename(temporary, path) == 0 {
                endpoints[i].temporary = nil
                endpoints[i].file = Self.identity(path)
            } else {
                ProxyMain.printError("proxy: warning: stats socket: cannot rename '\(temporary)' to '\(path)': \(SystemError.last("rename").reason)\n")
            }
        }
    }

    static func identity(_ path: String) -> (device: UInt, inode: UInt)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt(st.st_dev), UInt(st.st_ino))
    }

    /// The start went through: the replaced sockets' links are dropped.
    func commit() {
        for i in endpoints.indices {
            if let backup = endpoints[i].backup { unlink(backup) }
            endpoints[i].backup = nil
        }
    }

    /// The start failed: every path goes back to what it named before.
    func rollback() {
        for i in endpoints.indices {
            if let temporary = endpoints[i].temporary { unlink(temporary) }
            if let backup = endpoints[i].backup, let path = endpoints[i].path { rename(backup, path) }
            endpoints[i].fd.close()
        }
        endpoints = []
    }

    // MARK: the control loop

    func register(in epoll: Epoll) {
        for (i, e) in endpoints.enumerated() {
            try? epoll.add(e.fd, events: Epoll.readable, token: Self.listenerToken + UInt64(i))
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
            guard listening, index < endpoints.count else { return true }
            while case .done(let (fd, _))? = try? Socket.accept(endpoints[index].fd) {
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

    /// Closes the sessions idle past `stats timeout`.
    func expire(epoll: Epoll) {
        let now = Clock.monotonicNanoseconds()
        for session in sessions.values where session.deadline <= now { end(session, epoll: epoll) }
    }

    /// Stops taking CLI connections (soft stop, exit). A UNIX path is removed only while it
    /// still names our socket: after a reload it names the successor's.
    func closeListeners(epoll: Epoll) {
        guard listening else { return }
        listening = false
        for e in endpoints {
            epoll.remove(e.fd)
            if let path = e.path, let mine = e.file, let there = Self.identity(path), mine == there { unlink(path) }
            e.fd.close()
        }
    }
}
