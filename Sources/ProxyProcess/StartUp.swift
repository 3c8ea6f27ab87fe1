import ProxyConfig
import ProxyControl
import ProxyEngine
import ProxySystem
import Glibc

/// The ordered start-up, with one point of no return (Cloudflare tableflip's lesson): each
/// step is a function, in the order DECISIONS gives, and everything that can fail happens
/// before the old processes are told to stop. A failure before that point undoes what was
/// done and leaves the old processes serving as they were; after it, nothing may fail, and
/// what does anyway is logged while the new process serves on.
///
///     1. prepare         the chroot directory, limits, signals
///     2. obtainSockets   the handover from each old pid, then -x, then bind the rest
///     3. daemonize       -D: the parent waits for the child's verdict
///     4. writePidFile    our handover endpoint (named after the serving pid), then the
///                        pidfile under a temporary name beside the real one
///     5. changeRoot      chroot
///     6. dropPrivileges  setgid, initgroups, setuid (a helper keeps root to publish names)
///     7. startEngine     the model, the loops, the health checks, the control loop's epoll
///     8. pointOfNoReturn tell the old pids, publish the pidfile and stats socket names
final class StartUp {
    var configuration: Configuration
    let options: CommandLineOptions

    /// A start-up step that failed: the message, already in `file:line:` form where it has one.
    struct Failure: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    // What the steps acquired, undone by `abort`.
    private var signals: SignalFD?
    private var handover = HandoverClient()
    private var paused: [Int32] = []
    private var listeners: [Listener] = []
    private var runtimeAPI: RuntimeAPIServer?
    private var endpoint: HandoverEndpoint?
    private var control: Epoll?
    private var verdict: FileDescriptor?
    private var pidFile: PidFile?
    private var renamer: PrivilegedRenamer?
    private var engine: ProxyEngine?
    /// The TLS servers' client contexts, read before any chroot.
    private var serverTLS: [String: ServerTLS] = [:]
    private var logger: Logger?
    /// Messages for the log as well as stderr, sent once the logger exists.
    private var notes: [String] = []

    init(configuration: Configuration, options: CommandLineOptions) {
        self.configuration = configuration
        self.options = options
    }

    var oldPIDs: [Int32] { options.softStopPIDs + options.terminatePIDs }

    /// Runs every step, then the control loop; returns the exit status.
    func run() -> Int32 {
        do {
            try prepare()
            try obtainSockets()
            try daemonize()
            try writePidFile()
            try changeRoot()
            try dropPrivileges()
            if configuration.global.setDumpable { ResourceLimits.allowCoreDumps() }
            try startEngine()
        } catch let f as Failure {
            return abort(f.message)
        } catch {
            return abort("proxy: cannot start: \(error)")
        }
        pointOfNoReturn()
        guard let engine, let signals, let control, let runtimeAPI else { return 1 }
        return ControlLoop(engine: engine, signals: signals, epoll: control, configuration: configuration,
                           endpoint: endpoint, runtimeAPI: runtimeAPI, predecessors: handover.predecessors,
                           masterPipe: options.masterPipeFD.map { FileDescriptor(rawValue: $0) }).run()
    }

    // MARK: 1. prepare

    private func prepare() throws {
        if let dir = configuration.global.chroot, FileSystem.kind(of: dir) != .directory {
            throw Failure("proxy: cannot chroot to '\(dir)': no such directory; create it or remove the 'chroot' line")
        }
        // `setenv` and friends change the process's own environment, as HAProxy's do, so that
        // `env()` at run time reads what the config set.
        ProcessEnvironment.replace(with: configuration.environment.pairs)
        if let mb = options.memoryLimitMegabytes {
            do { try ResourceLimits.setAddressSpace(UInt64(mb) << 20) } catch {
                throw Failure("proxy: cannot fix the memory limit to \(mb) megabytes (-m): \(error)")
            }
        }
        if options.noSplice { configuration.global.noSplice = true }
        try applyDescriptorLimit()
        // Every log target opens now, before chroot; nothing opens or resolves one later.
        logger = Logger(configuration: configuration)
        for note in logger!.notes {
            ProxyMain.printError("proxy: warning: \(note)\n")
            notes.append(note)
        }
        // Signals are blocked before any thread starts, so every thread inherits the mask and
        // only the control loop's signalfd sees them.
        do {
            // SIGCHLD: the exits of external checks (and, as PID 1, of the orphans the kernel
            // gives a container's init) are reaped by the control loop.
            signals = try SignalFD(signals: [SIGTERM, SIGINT, SIGUSR1, SIGTTOU, SIGTTIN, SIGHUP, SIGPIPE, SIGCHLD]
                                   + (ProcessCalls.pid == 1 ? [SIGUSR2, SIGQUIT] : []))
        } catch {
            throw Failure("proxy: \(error)")
        }
    }

    // MARK: 2. sockets

    private func obtainSockets() throws {
        do {
            handover = try HandoverClient.collect(from: oldPIDs)
        } catch let r as HandoverClient.Refusal {
            throw Failure("proxy: \(r.description); nothing was changed, the old processes serve on")
        }
        for w in handover.warnings { ProxyMain.printError("proxy: warning: \(w)\n") }
        // HAProxy's `-x SOCKET`: the sockets of whichever process (ours or HAProxy) listens there.
        if let path = options.socketTransfer {
            do {
                let received = try ListenerExport.fetch(from: path)
                handover.sockets.add(received.map(\.fd), interfaceHints: received.map(\.interface))
            } catch {
                ProxyMain.printError("proxy: warning: -x: \(error); binding the listeners afresh with SO_REUSEPORT\n")
            }
        }
        // A master's replacement worker (its predecessor died): the listeners the master held.
        if !options.inheritedDescriptors.isEmpty { handover.sockets.add(options.inheritedDescriptors, asThemselves: true) }
        // systemd's socket activation, when this process is the one it started.
        if let activated = SocketActivation.fromEnvironment() { handover.sockets.add(activated, asThemselves: true) }
        for note in handover.sockets.refused { ProxyMain.printError("proxy: warning: an old process sent a socket that was refused: \(note)\n") }
        let frontendKeys = configuration.frontends.flatMap(\.binds).flatMap(\.listenerKeys)
        let inherited = handover.sockets.match(frontendKeys + RuntimeAPIServer.inheritableKeys(configuration))
        TLSResumption.configure(configuration.global)
        // The old process's ticket keys and sessions: clients resume across the reload.
        let adopted = TLSResumption.adopt(handover.tlsLines)
        if adopted.keys + adopted.sessions > 0 && !options.quiet {
            notes.append("TLS resumption carried over: \(adopted.keys) ticket key\(adopted.keys == 1 ? "" : "s"), \(adopted.sessions) cached session\(adopted.sessions == 1 ? "" : "s")")
        }
        try bindListeners(inherited: inherited)
        do { serverTLS = try ServerTLS.loadAll(configuration) } catch let e as TLSContext.LoadError {
            throw Failure(e.description)
        }
        do {
            runtimeAPI = try RuntimeAPIServer(configuration: configuration, inherited: inherited)
        } catch let e as RuntimeAPIServer.BindFailure {
            throw Failure(e.description)
        }
        do { control = try Epoll() } catch { throw Failure("proxy: cannot start: \(error)") }
    }

    /// Binds what the old processes did not hand over. A port held without SO_REUSEPORT is
    /// retried for up to 2 s with the old pids that handed nothing over paused (SIGTTOU), as
    /// HAProxy does; when every old pid handed over, the holder is foreign: fail at once.
    private func bindListeners(inherited: [ListenerKey: Int32]) throws {
        let reusePort = !(options.noReusePort || configuration.global.noReusePort)
        var attempt = 0
        while true {
            do {
                listeners = try Listener.bindAll(configuration, reusePort: reusePort, inherited: inherited)
                break
            } catch let e as BindError where e.error.code == EADDRINUSE && !handover.signalOnly.isEmpty && attempt < 200 {
                if attempt == 0 {
                    for pid in handover.signalOnly where (try? ProcessCalls.signal(pid, SIGTTOU)) == true { paused.append(pid) }
                }
                attempt += 1
                ProcessCalls.sleep(milliseconds: 10)
            } catch let e as BindError {
                throw Failure("\(e.location): error: cannot bind \(e.address): \(e.error.reason)\(Self.hint(e.error.code))")
            } catch let e as TLSContext.LoadError {
                throw Failure(e.description)
            }
        }
        if listeners.isEmpty {
            throw Failure("proxy: no frontend has a 'bind' line; nothing to serve")
        }
        // An expired certificate loads (as in HAProxy) but is said, once per bind line.
        var said = Set<ObjectIdentifier>()
        for l in listeners {
            guard let tls = l.tls, said.insert(ObjectIdentifier(tls)).inserted, !options.quiet else { continue }
            for w in tls.warnings { ProxyMain.printError(w + "\n") }
        }
    }

    static func hint(_ code: Int32) -> String {
        switch code {
        case EADDRINUSE: return " (another process holds the port without SO_REUSEPORT; stop it or pass -sf/-st with its pid)"
        case EACCES: return " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        case EADDRNOTAVAIL: return " (the address is not configured on this host)"
        case ENODEV: return " (no such network interface)"
        case EPERM: return " (binding to an interface needs CAP_NET_RAW before Linux 5.7)"
        case ENOTSOCK: return " (fd@N takes a listening socket this process was given: systemd's socket activation, a master, or a parent that passed it)"
        case ENAMETOOLONG: return " (a UNIX socket path holds at most \(SocketAddress.maxUnixPathLength) bytes)"
        default: return ""
        }
    }

    // MARK: 3. daemon

    private func daemonize() throws {
        // A master's worker: the verdict goes to the master, in the foreground.
        if let fd = options.workerVerdictFD {
            verdict = FileDescriptor(rawValue: fd)
            return
        }
        guard (options.daemon || configuration.global.daemon) && !options.foreground else { return }
        // The parent's verdict is the child's: 0 only once the child serves.
        do { verdict = try ProcessCalls.daemonize() } catch { throw Failure("proxy: cannot start the daemon: \(error)") }
    }

    // MARK: 4. pidfile

    private func writePidFile() throws {
        bindHandoverEndpoint()
        // A master's worker: the pidfile is the master's.
        guard options.workerVerdictFD == nil, let path = options.pidFile ?? configuration.global.pidfile else { return }
        do {
            pidFile = try PidFile.prepare(path, pid: ProcessCalls.pid)
        } catch let e as SystemError {
            throw Failure("proxy: cannot write pidfile '\(path)': \(e.reason)")
        }
    }

    /// Our own endpoint for the next reload. It is named after the pid that serves, so it is
    /// bound after the daemon fork, and while we may still be root, so that SO_PEERCRED shows
    /// a successor the credentials it expects. Failing to bind it is not fatal.
    private func bindHandoverEndpoint() {
        do {
            endpoint = try HandoverEndpoint()
        } catch {
            let note = "cannot bind the handover endpoint '\(Handover.endpointName(ProcessCalls.pid))': \(error); the next reload will bind its listeners beside this process with SO_REUSEPORT instead of taking them over"
            ProxyMain.printError("proxy: warning: \(note)\n")
            notes.append(note)
        }
    }

    // MARK: 5. chroot

    private func changeRoot() throws {
        guard let dir = configuration.global.chroot else { return }
        do { try ProcessCalls.changeRoot(dir) } catch let e as SystemError {
            throw Failure("proxy: cannot chroot to '\(dir)': \(e.reason)")
        }
    }

    // MARK: 6. privileges

    /// The names published at the point of no return.
    private var pendingNames: [NameChange] {
        (pidFile.map { [$0.change] } ?? []) + (runtimeAPI?.pendingNames ?? [])
    }

    private func dropPrivileges() throws {
        let g = configuration.global
        let changesUser = g.uid.map { $0 != ProcessCalls.userID } ?? false
        let changesGroup = g.gid.map { $0 != ProcessCalls.groupID } ?? false
        guard changesUser || changesGroup else { return }
        if !pendingNames.isEmpty && ProcessCalls.userID == 0 && changesUser {
            do { renamer = try PrivilegedRenamer(pendingNames) } catch {
                throw Failure("proxy: cannot start the helper that publishes the pidfile and socket names: \(error)")
            }
        }
        do {
            try ProcessCalls.dropPrivileges(uid: changesUser ? g.uid : nil, gid: changesGroup ? g.gid : nil,
                                            userName: changesUser ? g.user : nil)
        } catch let e as SystemError {
            let who = [g.user.map { "user '\($0)'" } ?? g.uid.map { "uid \($0)" }, g.group.map { "group '\($0)'" } ?? g.gid.map { "gid \($0)" }]
                .compactMap { $0 }.joined(separator: " and ")
            throw Failure("proxy: cannot switch to \(who): \(e.description)\(ProcessCalls.userID == 0 ? "" : " (only root can change its identity)")")
        }
    }

    // MARK: 7. engine

    private func startEngine() throws {
        if configuration.global.threads == 1 { Memory.useOneArena() }
        let model: RuntimeModel
        do { model = try RuntimeModel(configuration: configuration, logger: logger, serverTLS: serverTLS) } catch {
            throw Failure("proxy: cannot start: \(error)")
        }
        // Only a checked server takes its carried health: without `check` it is always up.
        for (_, b) in model.backends {
            for srv in b.servers where srv.definition.options.check {
                if let up = handover.serverStates["\(b.name)/\(srv.name)"] { srv.isUp.store(up, ordering: .relaxed) }
            }
        }
        // The runtime API's changes survive the reload, unless this file changed that item.
        let carried = RuntimeState.apply(handover.runtimeLines, to: model)
        for note in carried.overridden {
            ProxyMain.printError("proxy: warning: \(note)\n")
            model.logger.alert(note, level: .notice)
        }
        if carried.kept > 0 && !options.quiet {
            ProxyMain.printError("proxy: \(carried.kept) runtime change\(carried.kept == 1 ? "" : "s") carried over from the old process\n")
        }
        do {
            let e = try ProxyEngine(model: model, listeners: listeners, threads: configuration.global.threads)
            engine = e
            // The runtime API, the stats page and the metrics read the same engine.
            let commands = RuntimeCommands(engine: e, startedAt: Clock.wallClock().seconds, threads: configuration.global.threads,
                                           stopping: { [model] in model.stopping.load(ordering: .relaxed) })
            model.services.statsPage = StatsPage(commands: commands)
            model.services.prometheus = PrometheusExporter(commands: commands)
            runtimeAPI?.commands = commands
            try e.start()
        } catch {
            throw Failure("proxy: cannot start the engine: \(error)")
        }
        for note in notes { model.logger.alert(note) }
    }

    // MARK: 8. the point of no return

    /// Tells the old processes, and publishes the names. Nothing here can fail the start: a
    /// problem is reported, and this process serves on.
    private func pointOfNoReturn() {
        let terminateOnly = Set(options.terminatePIDs).subtracting(options.softStopPIDs)
        for pid in terminateOnly { handover.drop(pid) }
        let confirmed = handover.stopAll()
        for pid in Set(oldPIDs).subtracting(confirmed).sorted() {
            if !handover.signalOnly.contains(pid) && !terminateOnly.contains(pid) {
                ProxyMain.printError("proxy: old pid \(pid) did not confirm it stopped accepting; sending SIGUSR1\n")
            }
            tellOld(pid, terminateOnly.contains(pid) ? SIGTERM : SIGUSR1)
        }
        var problems: [String] = []
        if let renamer {
            problems = renamer.commit()
            self.renamer = nil
        } else {
            for change in pendingNames {
                do { try change.publish() } catch let e as SystemError {
                    problems.append("cannot rename '\(change.temporary)' to '\(change.name)' in \(change.directory.path): \(e.reason)")
                } catch {}
            }
        }
        runtimeAPI?.published()
        for p in problems {
            ProxyMain.printError("proxy: warning: \(p); serving on\n")
            engine?.model.logger.alert(p)
        }
        handover.sockets.closeUnused(keeping: Set(listeners.map(\.fd.rawValue)).union(runtimeAPI?.endpoints.compactMap { $0.fd?.rawValue } ?? []))
        if options.workerVerdictFD == nil && (options.daemon || configuration.global.daemon) && !options.foreground {
            try? ProcessCalls.detachStandardStreams(keepError: options.verbose)
            if !options.verbose { logger?.detachStandardStreams() }
        } else if !options.quiet {
            let addresses = listeners.map { "\($0.frontendName)@\($0.key)" }.joined(separator: ", ")
            let taken = listeners.filter { handover.sockets.received.contains($0.fd.rawValue) }.count
            let note = taken > 0 ? " (\(taken) listener\(taken == 1 ? "" : "s") taken over)" : ""
            ProxyMain.printError("proxy \(ProxyMain.version) (pid \(ProcessCalls.pid)): serving \(addresses)\(note)\n")
        }
        // The verdict last, so that a master's `reload` answer carries the line above.
        if let verdict {
            var ok: UInt8 = 0
            _ = try? withUnsafeBytes(of: &ok) { try verdict.writeAll($0) }
            verdict.close()
            self.verdict = nil
        }
    }

    /// Signals an old pid; a successful kill is its acknowledgement. A pid that is gone is
    /// skipped and reported, and does not fail the reload.
    private func tellOld(_ pid: Int32, _ signal: Int32) {
        do {
            if try !ProcessCalls.signal(pid, signal) {
                ProxyMain.printError("proxy: old pid \(pid) no longer exists; skipped\n")
            }
        } catch {
            ProxyMain.printError("proxy: cannot signal pid \(pid): \(error)\n")
        }
    }

    // MARK: failure

    /// Undoes every step taken: the old processes go on as they were, resumed if paused.
    private func abort(_ message: String) -> Int32 {
        if let engine {
            engine.hardStop()
            engine.join()
        }
        for pid in paused { _ = try? ProcessCalls.signal(pid, SIGTTIN) }
        // Inherited descriptors are closed once, by the handover; the rest by their owners.
        let inherited = Set(handover.sockets.received)
        handover.abandon()
        if let renamer {
            renamer.abort()
        } else {
            pidFile?.change.discard()
        }
        runtimeAPI?.rollback(keepNames: renamer != nil, sparing: inherited)
        pidFile?.change.directory.close()
        for l in listeners where !inherited.contains(l.fd.rawValue) { l.fd.close() }
        endpoint?.close()
        ProxyMain.printError(message.hasSuffix("\n") ? message : message + "\n")
        if let verdict {
            var failed: UInt8 = 1
            _ = try? withUnsafeBytes(of: &failed) { try verdict.writeAll($0) }
        }
        return 1
    }
}
