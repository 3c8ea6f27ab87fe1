import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// A client connection in TCP mode: bytes forwarded both ways, byte for byte, with
/// half-close carried across (a FIN from one side becomes `shutdown(SHUT_WR)` on the other).
final class TCPSession: LoopObject {
    let fd: FileDescriptor
    unowned(unsafe) let context: LoopContext
    /// The acceptor that took this connection: its slot is released when it closes.
    let acceptor: Acceptor
    let frontend: RuntimeFrontend
    let backend: RuntimeBackend
    var server: ServerConnection?
    var closed = false
    var clientReadable = true
    var clientWritable = true
    var clientEOF = false
    var clientHangup = false
    var toServer: Buffer?
    var toClient: Buffer?
    var serverShut = false
    var clientShut = false
    var retriesLeft: Int
    var connecting = false
    /// Zero-copy forwarding through a pipe per direction; nil means plain read/write.
    var upPipe: KernelPipe?
    var downPipe: KernelPipe?
    var upInPipe = 0
    var downInPipe = 0
    var splicing = true
    var slotServer: RuntimeServer?
    /// The server of the last attempt (for `redispatch`).
    var triedServer: RuntimeServer?
    /// Logged already at the connection to the server (`option logasap`).
    var loggedEarly = false
    // For the log line.
    let clientAddress: SocketAddress
    let acceptedAt = Clock.wallClock()
    var acceptedMs: Int64 = 0
    var connectedMs: Int64 = -1
    var bytesToClient = 0

    func releaseSlot() {
        guard let s = slotServer else { return }
        slotServer = nil
        s.active.subtract(1, ordering: .relaxed)
    }

    init(fd: FileDescriptor, client: SocketAddress, acceptor: Acceptor, backend: RuntimeBackend, context: LoopContext) {
        self.fd = fd
        clientAddress = client
        acceptedMs = context.loop.now
        self.acceptor = acceptor
        frontend = acceptor.frontend
        self.backend = backend
        self.context = context
        retriesLeft = backend.settings.retries
        super.init()
    }

    var loop: EventLoop { context.loop }

    func start() {
        connect()
        if !closed { progress() }
    }

    func connect() {
        // `option redispatch`: the last retry goes to another server than the one that failed.
        let excluded = backend.settings.options.redispatch && retriesLeft == 0 && retriesLeft < backend.settings.retries ? triedServer : nil
        var picked: RuntimeServer?
        for _ in 0..<4 {
            guard let candidate = backend.balancer.pick(hashKey: 0, allBackups: backend.settings.options.allBackups,
                                                        excluding: excluded, scratch: &context.scratchServers) else { break }
            if candidate.reserveSlot() { picked = candidate; break }
        }
        guard let chosen = picked else {
            close()
            return
        }
        slotServer = chosen
        triedServer = chosen
        do {
            let c = try ServerConnection.open(to: chosen, context: context) { [fd] in Socket.localAddress(fd).port }
            c.tunnel = self
            server = c
            connecting = !c.connected
        } catch {
            retryOrClose()
        }
    }

    func retryOrClose() {
        releaseSlot()
        if let s = server { server = nil; s.close() }
        if retriesLeft > 0 {
            retriesLeft -= 1
            connect()
        } else {
            close()
        }
    }

    override func handle(events: UInt32) {
        if closed { return }
        Readiness.note(events, readable: &clientReadable, hangup: &clientHangup, writable: &clientWritable)
        progress()
    }

    func serverEvent(_ events: UInt32) {
        if closed { return }
        progress()
    }

    override func timerFired() {
        close()
    }

    override func resume() {
        if !closed { progress() }
    }

    func progress() {
        guard let s = server else { return }
        if connecting {
            guard s.writable || s.readable || s.errored else { updateDeadline(); return }
            if s.errored {
                retryOrClose()
                if !closed { updateDeadline() }
                return
            }
            connecting = false
            s.connected = true
            s.writable = true
            connectedMs = loop.now
            if frontend.settings.options.logASAP {
                // Log now, totals so far prefixed with '+', as HAProxy does.
                logConnection(early: true)
                loggedEarly = true
            }
        }
        if splicing {
            if upPipe == nil {
                // Two pipes out of `maxpipes`, or copying through buffers from here on.
                let model = context.model
                if Acceptor.reserve(model.pipesInUse, below: model.maxPipes, count: 2) {
                    do {
                        upPipe = try KernelPipe()
                        downPipe = try KernelPipe()
                    } catch {
                        upPipe?.close()
                        upPipe = nil
                        model.pipesInUse.subtract(2, ordering: .relaxed)
                        splicing = false
                    }
                } else {
                    splicing = false
                }
            }
            if splicing { spliceBothWays(s); return }
        }
        if toServer == nil { toServer = loop.buffers.take() }
        if toClient == nil { toClient = loop.buffers.take() }
        let up = toServer!, down = toClient!
        var rounds = 0
        while !closed && rounds < 64 {
            rounds += 1
            var moved = false
            // client -> server
            if !up.isEmpty && s.writable {
                switch (try? Socket.write(s.fd, from: up.base + up.head, count: up.count)) ?? .done(-1) {
                case .done(let n) where n > 0:
                    up.head += n
                    if up.isEmpty { up.clear() } else { s.writable = false }
                    moved = true
                case .done: close(); return
                case .wouldBlock: s.writable = false
                }
            }
            if up.isEmpty && clientReadable && !clientEOF {
                up.clear()
                switch (try? Socket.read(fd, into: up.writePointer, count: up.capacity)) ?? .done(0) {
                case .done(let n):
                    if n == 0 { clientEOF = true } else { up.tail = n; if n < up.capacity && !clientHangup { clientReadable = false } }
                    moved = true
                case .wouldBlock: clientReadable = false
                }
            }
            if clientEOF && up.isEmpty && !serverShut {
                Socket.shutdown(s.fd, Socket.shutWrite)
                serverShut = true
            }
            // server -> client
            if !down.isEmpty && clientWritable {
                switch (try? Socket.write(fd, from: down.base + down.head, count: down.count)) ?? .done(-1) {
                case .done(let n) where n > 0:
                    down.head += n
                    bytesToClient += n
                    if down.isEmpty { down.clear() } else { clientWritable = false }
                    moved = true
                case .done: close(); return
                case .wouldBlock: clientWritable = false
                }
            }
            if down.isEmpty && s.readable && !s.eof {
                down.clear()
                switch (try? Socket.read(s.fd, into: down.writePointer, count: down.capacity)) ?? .done(0) {
                case .done(let n):
                    if n == 0 { s.eof = true } else { down.tail = n; if n < down.capacity && !s.hangup { s.readable = false } }
                    moved = true
                case .wouldBlock: s.readable = false
                }
            }
            if s.eof && down.isEmpty && !clientShut {
                Socket.shutdown(fd, Socket.shutWrite)
                clientShut = true
            }
            if clientShut && serverShut { close(); return }
            if !moved { break }
            if rounds == 64 { loop.runAgain(self) }
        }
        if !closed { updateDeadline() }
    }

    /// Moves bytes both ways with splice(2): socket → pipe → socket, no copy in user space.
    func spliceBothWays(_ s: ServerConnection) {
        guard let up = upPipe, let down = downPipe else { return }
        let chunk = 1 << 16
        var rounds = 0
        while !closed && rounds < 64 {
            rounds += 1
            var moved = false
            do {
                // client -> pipe -> server
                if upInPipe > 0 && s.writable {
                    switch try KernelPipe.splice(from: up.readEnd, to: s.fd, count: upInPipe) {
                    case .done(let n): upInPipe -= n; moved = n > 0
                    case .wouldBlock: s.writable = false
                    }
                }
                if upInPipe == 0 && clientReadable && !clientEOF {
                    switch try KernelPipe.splice(from: fd, to: up.writeEnd, count: chunk) {
                    case .done(let n):
                        // A short splice may only mean the pipe's slots filled: not drained.
                        if n == 0 { clientEOF = true } else { upInPipe = n }
                        moved = true
                    case .wouldBlock: clientReadable = false
                    }
                }
                if clientEOF && upInPipe == 0 && !serverShut {
                    Socket.shutdown(s.fd, Socket.shutWrite)
                    serverShut = true
                }
                // server -> pipe -> client
                if downInPipe > 0 && clientWritable {
                    switch try KernelPipe.splice(from: down.readEnd, to: fd, count: downInPipe) {
                    case .done(let n): downInPipe -= n; bytesToClient += n; moved = moved || n > 0
                    case .wouldBlock: clientWritable = false
                    }
                }
                if downInPipe == 0 && s.readable && !s.eof {
                    switch try KernelPipe.splice(from: s.fd, to: down.writeEnd, count: chunk) {
                    case .done(let n):
                        if n == 0 { s.eof = true } else { downInPipe = n }
                        moved = true
                    case .wouldBlock: s.readable = false
                    }
                }
                if s.eof && downInPipe == 0 && !clientShut {
                    Socket.shutdown(fd, Socket.shutWrite)
                    clientShut = true
                }
            } catch {
                close()
                return
            }
            if clientShut && serverShut { close(); return }
            if !moved { break }
            if rounds == 64 { loop.runAgain(self) }
        }
        if !closed { updateDeadline() }
    }

    /// One line per connection, in HAProxy's tcplog layout:
    /// `ci:cp [date] frontend backend/server Tw/Tc/Tt bytes ts ac/fc/bc/sc/rc sq/bq`.
    func logConnection(early: Bool = false) {
        guard !frontend.logDestinations.isEmpty, !loggedEarly else { return }
        let o = frontend.settings.options
        if o.dontLogNull && bytesToClient == 0 && connectedMs < 0 { return }
        let ip = HTTPSession.ip(of: clientAddress)
        let tc = connectedMs >= 0 ? connectedMs - acceptedMs : -1
        let tt = loop.now - acceptedMs
        let line: String
        if o.tcpLog || o.httpLog {
            let state = connectedMs < 0 ? "SC" : "--"
            let plus = early ? "+" : ""
            line = "\(ip):\(clientAddress.port) [\(Logger.acceptDate(seconds: acceptedAt.seconds, microseconds: acceptedAt.microseconds))] \(frontend.name) \(backend.name)/\(server?.server.name ?? slotServer?.name ?? "<NOSRV>") 0/\(tc)/\(plus)\(tt) \(plus)\(bytesToClient) \(state) \(context.model.activeConnections.load(ordering: .relaxed))/\(frontend.active.load(ordering: .relaxed))/0/0/0 0/0"
        } else {
            line = "Connect from \(ip):\(clientAddress.port) (\(frontend.name)/TCP)"
        }
        context.model.logger.log(line, to: frontend.logDestinations)
    }

    func updateDeadline() {
        let t = frontend.settings.timeouts
        let b = backend.settings.timeouts
        let ms: Int?
        if connecting {
            ms = b.connect ?? 5000
        } else if clientShut || serverShut {
            ms = (clientShut ? t.clientFin : b.serverFin) ?? b.tunnel ?? t.client
        } else {
            ms = b.tunnel ?? t.tunnel ?? min(t.client ?? Int.max, b.server ?? Int.max)
        }
        if let ms, ms != Int.max { loop.setDeadline(self, loop.now + Int64(ms)) } else { loop.clearDeadline(self) }
    }

    func close() {
        guard !closed else { return }
        closed = true
        logConnection()
        releaseSlot()
        loop.clearDeadline(self)
        loop.forget(fd)
        fd.close()
        if let s = server { server = nil; s.close() }
        if let b = toServer { loop.buffers.give(b) }
        if let b = toClient { loop.buffers.give(b) }
        if let up = upPipe, let down = downPipe {
            up.close()
            down.close()
            context.model.pipesInUse.subtract(2, ordering: .relaxed)
        }
        upPipe = nil
        downPipe = nil
        toServer = nil
        toClient = nil
        context.sessionClosed(self)
    }
}
