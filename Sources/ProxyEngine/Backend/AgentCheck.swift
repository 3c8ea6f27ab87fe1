import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// Asks one server's agent (`agent-check`) how the server is, every `agent-inter`, on one
/// loop: a TCP connection to `agent-port`, `agent-send` written, one line read back. The line
/// sets the weight (`75%`), the administrative state (`ready`, `drain`, `maint`), the health
/// (`up`, `down`, `failed`, `stopped`) and `maxconn:N`; `#` starts a description. An agent
/// that cannot be reached changes nothing: the health check judges connectivity.
final class AgentCheck: LoopObject {
    let server: Server
    let backend: Backend
    unowned(unsafe) let context: LoopContext
    let port: UInt16
    let payload: [UInt8]
    let interval: Int64
    var fd: FileDescriptor?
    var sent = 0
    var answer: [UInt8] = []
    var connected = false
    var inProgress = false
    var stopped = false
    var startedMs: Int64 = 0

    init(server: Server, backend: Backend, context: LoopContext) {
        self.server = server
        self.backend = backend
        self.context = context
        let o = server.definition.options
        port = UInt16(o.agentPort ?? 0)
        payload = Array((o.agentSend ?? "").utf8)
        interval = Int64(o.agentInter ?? o.inter)
        super.init()
    }

    /// Where the agent listens: `agent-addr`, else the server's address now, on `agent-port`.
    var address: SocketAddress {
        var a = server.address
        if let ip = server.definition.options.agentAddress { a = Backend.socketAddress(ip, port: port) }
        a.setPort(port)
        return a
    }

    func start(offset: Int64) { context.loop.setDeadline(self, context.loop.now + offset) }

    func stop() {
        stopped = true
        close()
        context.loop.clearDeadline(self)
    }

    private func close() {
        if let s = fd {
            context.loop.forget(s)
            s.close()
            fd = nil
        }
        inProgress = false
    }

    override func timerFired() {
        if stopped || context.model.stopping.load(ordering: .relaxed) { stop(); return }
        if inProgress {
            // A line not ended by the timeout: what came is the answer, if anything came.
            if connected && !answer.isEmpty { finish() } else { failed(connected ? "L7TOUT" : "L4TOUT", connected ? "Layer7 timeout" : "Layer4 timeout") }
            return
        }
        if server.adminState == .maintenance && server.operatorAdminState != .maintenance {
            context.loop.setDeadline(self, context.loop.now + interval)   // waiting for an address
            return
        }
        begin()
    }

    private func begin() {
        inProgress = true
        connected = false
        sent = 0
        answer.removeAll(keepingCapacity: true)
        startedMs = context.loop.now
        do {
            let a = address
            let s = try Socket.make(family: a.family)
            fd = s
            if case .done = try Socket.connect(s, a) { connected = true }
            try context.loop.register(s, events: Epoll.readable | Epoll.writable | Epoll.readHangup | Epoll.edgeTriggered, object: self)
            context.loop.setDeadline(self, startedMs + interval)
            if connected { handle(events: Epoll.writable) }
        } catch {
            failed("L4CON", "Layer4 connection problem")
        }
    }

    override func handle(events: UInt32) {
        guard inProgress, let s = fd else { return }
        if !connected {
            if Socket.pendingError(s) != 0 { failed("L4CON", "Layer4 connection problem"); return }
            connected = true
        }
        while sent < payload.count {
            let r = payload.withUnsafeBytes { try? Socket.write(s, from: $0.baseAddress! + sent, count: payload.count - sent) }
            switch r {
            case .done(let n)?: sent += n
            case .wouldBlock?: return
            case nil: failed("L4CON", "Layer4 connection problem"); return
            }
        }
        let chunk = context.readScratch
        while answer.count < 1024 {
            switch try? Socket.read(s, into: chunk.baseAddress!, count: 1024) {
            case .done(let n)? where n > 0:
                answer.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                if answer.contains(10) { finish(); return }
            case .wouldBlock?:
                return
            default:
                if answer.isEmpty { failed("L7RSP", "Layer7 invalid response") } else { finish() }
                return
            }
        }
        finish()
    }

    private func failed(_ status: String, _ reason: String) {
        let duration = context.loop.now - startedMs
        close()
        server.lastAgent.withLock { $0.status = status; $0.description = reason; $0.durationMs = duration; $0.code = nil }
        if !stopped { context.loop.setDeadline(self, context.loop.now + interval) }
    }

    /// Applies the agent's line, as HAProxy reads it.
    private func finish() {
        let duration = context.loop.now - startedMs
        close()
        if !stopped { context.loop.setDeadline(self, context.loop.now + interval) }
        var line = answer.prefix { $0 != 10 && $0 != 13 }
        var description = ""
        if let hash = line.firstIndex(of: UInt8(ascii: "#")) {
            description = String(decoding: line[line.index(after: hash)...], as: UTF8.self).trimmingBlanks()
            line = line[..<hash]
        }
        let words = String(decoding: line, as: UTF8.self).lowercased()
            .split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" }).map(String.init)
        var understood = false
        var health: Bool?
        for w in words {
            if w.hasSuffix("%"), let pct = Int(w.dropLast()), pct >= 0 {
                // A share of the configured weight, at most 256.
                server.setWeight(min(256, server.definition.options.weight * pct / 100))
                understood = true
            } else if w.hasPrefix("maxconn:"), let n = Int(w.dropFirst(8)), n >= 0 {
                server.setMaxconn(n)
                understood = true
            } else {
                switch w {
                case "ready": server.setAdminState(.ready); server.adminByAgent.store(false, ordering: .relaxed)
                case "drain": server.setAdminState(.drain); server.adminByAgent.store(true, ordering: .relaxed)
                case "maint": server.setAdminState(.maintenance); server.adminByAgent.store(true, ordering: .relaxed)
                case "up": agentSays(up: true, description); health = true
                case "down", "failed", "stopped": agentSays(up: false, description); health = false
                default: continue
                }
                understood = true
            }
        }
        // As HAProxy reports it: a health word is a check result, the rest changes no status.
        let (status, words_) = health == true ? ("L7OK", "Layer7 check passed") : health == false ? ("L7STS", "Layer7 wrong status")
            : understood ? ("CHECKED", "No status change") : ("L7RSP", "Layer7 invalid response")
        server.lastAgent.withLock {
            $0.status = status
            $0.description = words_
            $0.code = health != nil ? 0 : nil
            $0.durationMs = duration
        }
        backend.slotFreed()
    }

    private func agentSays(up: Bool, _ description: String) {
        let was = server.agentDown.exchange(!up, ordering: .relaxed)
        guard was == up else { return }     // no change
        // Up again only if the health check (when there is one) has it up.
        let healthUp = !server.definition.options.check || server.lastCheck.withLock { $0.status.isEmpty || $0.status.hasSuffix("OK") || $0.status == "L7OKC" }
        let nowUp = up && healthUp
        guard server.isUp.load(ordering: .relaxed) != nowUp else { return }
        server.setUp(nowUp)
        server.upSince.store(nowUp ? max(1, context.loop.now) : 0, ordering: .relaxed)
        let (active, backups) = backend.usableCounts()
        // HAProxy's words: the agent's verdict as a check result, its line in the info.
        let said = (nowUp ? "up" : "down") + (description.isEmpty ? "" : " (\(description))")
        var text = "Server \(backend.name)/\(server.name) is \(nowUp ? "UP" : "DOWN"), reason: Layer7 \(nowUp ? "check passed" : "wrong status"), code: 0, info: \"via agent : \(said)\", check duration: \(context.loop.now - startedMs)ms. "
        text += nowUp ? "\(active) active and \(backups) backup servers online. 0 sessions requeued, 0 total in queue."
            : "\(active) active and \(backups) backup servers left. \(server.active.load(ordering: .relaxed)) sessions active, 0 requeued, 0 remaining in queue."
        context.model.logger.alert(text, level: nowUp ? .notice : .alert, to: context.model.logger.destinations(for: backend.settings.logs))
        if nowUp { backend.slotFreed() }
    }
}
