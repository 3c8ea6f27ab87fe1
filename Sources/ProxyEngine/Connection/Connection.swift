import ProxySystem
import Glibc

/// Who a connection reports readiness to: the HTTP transaction or TCP stream using it.
protocol ConnectionOwner: AnyObject {
    /// The connection's descriptor became ready; its readiness flags are already updated.
    func connectionReady(_ connection: Connection, events: UInt32)
}

/// One socket, client or server side: the descriptor, its edge-triggered readiness, the byte
/// counters, half-close and close, and the transport and stages bytes pass through. It never
/// looks at what it carries: its owner (an `HTTPTransaction` or a `TCPStream`) does. Buffers
/// are the owner's channels (as HAProxy's stream keeps them), so a request can be replayed on
/// a second connection when the first fails.
final class Connection: LoopObject {
    /// Whether epoll reports writability. A TLS client connection starts without it (a
    /// fresh socket is writable, so asking at once costs a wakeup with nothing to do) and
    /// asks the first time a write finds the socket full. (First: it sits in the padding
    /// before `fd`, and an idle connection stays within its 144-byte malloc chunk.)
    var reportsWritable = true
    let fd: FileDescriptor
    unowned(unsafe) let context: LoopContext
    /// Who gets its events. Safe unowned: an owner closes or pools (nil) its connections
    /// before it goes, and a closed connection ignores events.
    unowned(unsafe) var owner: (any ConnectionOwner)?
    /// The server it reaches (server side); nil on the client side.
    let server: Server?
    /// How bytes move: nil is the raw socket (read/send, and splice when both ends are raw),
    /// taken inline on the hot path; a `Transport` object replaces it (TLS).
    var transport: (any Transport)?
    var connected: Bool
    var readable: Bool
    var writable: Bool
    /// The peer's FIN was read (or the connection failed while reading).
    var eof = false
    /// The peer sent FIN (EPOLLRDHUP): keep reading past a short read, up to the 0.
    var hangup = false
    /// EPOLLERR or EPOLLHUP seen: a pending connect failed (its code is read with SO_ERROR).
    var errored = false
    var closed = false
    /// Our side was shut for writing (FIN sent).
    var writeShut = false
    /// Bytes read from and written to the socket (stages included).
    var bytesIn = 0
    var bytesOut = 0
    /// How many requests it has carried: a reused connection may be retried once on a race.
    var requests = 0
    /// Bytes a stage puts on the wire before anything the owner writes: the PROXY header.
    var preface: [UInt8]?

    /// The SNI a TLS server connection was opened with: a pooled one serves only requests
    /// that would send the same. Kept by the transport: idle client connections stay small.
    var serverName: String? { (transport as? TLSTransport)?.serverName }

    /// The events every connection is registered for: edge-triggered, both ways, FIN noticed.
    static let events = Epoll.readable | Epoll.writable | Epoll.readHangup | Epoll.edgeTriggered

    init(fd: FileDescriptor, server: Server?, connected: Bool, context: LoopContext) {
        self.fd = fd
        self.server = server
        self.connected = connected
        readable = connected
        writable = connected
        self.context = context
    }

    /// An accepted client connection, registered with this loop (edge-triggered).
    /// `writesLater`: registered for reading only, until a write first blocks (TLS: the
    /// handshake is tried at once, as the ClientHello is usually there already).
    static func accepted(_ fd: FileDescriptor, context: LoopContext, writesLater: Bool = false) throws -> Connection {
        let c = Connection(fd: fd, server: nil, connected: true, context: context)
        c.reportsWritable = !writesLater
        try context.loop.register(fd, events: writesLater ? events & ~Epoll.writable : events, object: c)
        return c
    }

    /// The socket is full (or a TLS read must first send): wait for its next writable edge,
    /// asking epoll for it first if the registration did not.
    @inline(__always)
    func waitWritable() {
        writable = false
        if !reportsWritable { reportWritable() }
    }

    /// Adds writability to the registration; epoll reports it at once if the socket has room.
    /// Out of line: the read and write paths that may call it stay small.
    @inline(never)
    func reportWritable() {
        reportsWritable = true
        guard !closed else { return }
        do {
            try context.loop.modify(fd, events: Self.events, object: self)
        } catch {
            // Cannot fail for a registered descriptor; if it did, end the connection rather
            // than wait forever for an edge that will not come.
            errored = true
            eof = true
        }
    }

    /// Opens a non-blocking connection to `server` and registers it (edge-triggered).
    /// `destinationPort` is the port the client connected to: a server without a port of its
    /// own (or with `+N`/`-N`) is reached on that port (plus N), as in HAProxy.
    /// A TLS server (`ssl`) gets a TLS session sending `serverName` as SNI.
    static func open(to server: Server, context: LoopContext, serverName: String? = nil, destinationPort: () -> UInt16) throws -> Connection {
        let address = server.followsClientPort ? server.address(forDestinationPort: destinationPort()) : server.address
        let fd = try Socket.make(family: address.family)
        if address.family != AF_UNIX {
            try Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_NODELAY, value: 1)
            if server.keepAlive {
                try Socket.setOption(fd, level: SOL_SOCKET, name: SO_KEEPALIVE, value: 1)
                server.keepAliveProbes.apply(to: fd)
            }
            if let ut = server.userTimeout { try? Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_USER_TIMEOUT, value: Int32(clamping: ut)) }
            if server.delaysHandshakeACK { try? Socket.setOption(fd, level: Int32(IPPROTO_TCP), name: TCP_QUICKACK, value: 0) }
        }
        let c = Connection(fd: fd, server: server, connected: false, context: context)
        c.readable = false
        do {
            if let tls = server.tls, tls.forTraffic {
                guard let t = TLSTransport(connecting: fd, to: tls, serverName: serverName) else { throw SystemError("SSL_new", code: ENOMEM) }
                c.transport = t
            }
            switch try Socket.connect(fd, address) {
            case .done: c.established()
            case .wouldBlock: break
            }
            try context.loop.register(fd, events: events, object: c)
        } catch {
            fd.close()
            throw error
        }
        return c
    }

    /// The connect completed: writable now; a TLS client also reads, so that its handshake
    /// starts even when the owner has nothing to send yet (a server that speaks first).
    func established() {
        connected = true
        writable = true
        if transport != nil { readable = true }
    }

    override func handle(events: UInt32) {
        if closed { return }
        Readiness.note(events, readable: &readable, hangup: &hangup, writable: &writable)
        if events & (Epoll.error | Epoll.hangup) != 0 { errored = true }
        if let o = owner { o.connectionReady(self, events: events) } else if server != nil {
            // Idle in the pool: the server closed it, or sent something unexpected.
            context.discardIdle(self)
        }
    }

    // MARK: moving bytes

    /// Reads into `buffer`, at most `max` bytes: the count read, 0 at the peer's FIN (or a
    /// failure, which ends reading too), nil when there is nothing to read now.
    @inline(__always)
    func read(into buffer: Buffer, max: Int = .max) -> Int? {
        guard readable, !eof else { return nil }
        let room = Swift.min(buffer.freeSpace, max)
        guard room > 0 else { return nil }
        let result: IOResult<Int>
        do {
            if let t = transport { result = try t.read(self, into: buffer.writePointer, count: room) } else {
                result = try Socket.read(fd, into: buffer.writePointer, count: room)
            }
        } catch {
            eof = true
            return 0
        }
        switch result {
        case .done(let n):
            if n == 0 { eof = true; return 0 }
            buffer.tail += n
            bytesIn += n
            // A short read drained the socket (edge-triggered), unless a FIN is pending.
            if n < room && !hangup && transport == nil { readable = false }
            return n
        case .wouldBlock:
            // A TLS read that must first send (a handshake record) waits for writability,
            // and stays readable so that the owner retries it then.
            if let t = transport, t.wants == .write { waitWritable() } else { readable = false }
            return nil
        }
    }

    /// Writes what `buffer` holds (after any pending preface) and advances its head: the
    /// count of the buffer's bytes written (0 when the socket is full), or nil on failure.
    @inline(__always)
    func write(from buffer: Buffer) -> Int? {
        guard writable else { return 0 }
        if preface != nil {
            guard let done = flushPreface() else { return nil }
            if !done { return 0 }
        }
        guard !buffer.isEmpty else { return 0 }
        guard let n = send(buffer.base + buffer.head, count: buffer.count) else { return nil }
        buffer.head += n
        guard !buffer.isEmpty else { return n }
        guard transport != nil else {
            // A short write filled the socket: no more until its next edge.
            waitWritable()
            return n
        }
        // TLS takes a record at a time, so a short write says nothing about the socket:
        // go on until all is out or the socket is full (edge-triggered).
        var total = n
        while !buffer.isEmpty && writable {
            guard let m = send(buffer.base + buffer.head, count: buffer.count) else { return nil }
            if m == 0 { break }
            buffer.head += m
            total += m
        }
        return total
    }

    /// Sends bytes now: the count written (0 and not writable when the socket is full), or
    /// nil when the connection failed.
    @inline(__always)
    func send(_ pointer: UnsafeRawPointer, count: Int) -> Int? {
        let result: IOResult<Int>
        do {
            if let t = transport { result = try t.write(self, from: pointer, count: count) } else {
                result = try Socket.write(fd, from: pointer, count: count)
            }
        } catch {
            return nil
        }
        return wrote(result)
    }

    /// Counts what a write moved; a full socket is no longer writable until its next edge.
    @inline(__always)
    func wrote(_ result: IOResult<Int>) -> Int {
        switch result {
        case .done(let n):
            bytesOut += n
            return n
        case .wouldBlock:
            // A TLS write that must first read (a handshake record) waits for readability.
            if let t = transport, t.wants == .read { readable = false } else { waitWritable() }
            return 0
        }
    }

    /// Puts the pending preface on the wire: true once it is all out, false while the socket
    /// is full, nil on failure.
    func flushPreface() -> Bool? {
        guard let bytes = preface else { return true }
        guard writable else { return false }
        let sent = bytes.withUnsafeBytes { send($0.baseAddress!, count: $0.count) }
        guard let n = sent else { return nil }
        if n == bytes.count { preface = nil; return true }
        if n > 0 { preface = Array(bytes[n...]) }
        waitWritable()
        return false
    }

    /// Looks at queued bytes without taking them (MSG_PEEK): the count (0 at the peer's FIN),
    /// nil when nothing is there now. A stage reads its header this way, so the bytes after
    /// it stay in the kernel for the application.
    func peek(into pointer: UnsafeMutableRawPointer, count: Int) throws -> Int? {
        switch try Socket.peek(fd, into: pointer, count: count) {
        case .done(let n): return n
        case .wouldBlock:
            readable = false
            return nil
        }
    }

    /// Takes exactly `count` bytes a peek already saw (a stage's header) and drops them.
    func consume(_ count: Int, scratch: UnsafeMutableRawPointer) throws -> Bool {
        var left = count
        while left > 0 {
            guard case .done(let n) = try Socket.read(fd, into: scratch, count: left), n > 0 else { return false }
            left -= n
            bytesIn += n
        }
        return true
    }

    /// Whether bytes may be spliced straight between this socket and a pipe.
    var canSplice: Bool { transport == nil && preface == nil }

    /// splice(2) from this socket into a pipe: bytes moved (0 at the peer's FIN), or nil when
    /// nothing is there now.
    func splice(to pipe: FileDescriptor, count: Int) throws -> Int? {
        switch try KernelPipe.splice(from: fd, to: pipe, count: count) {
        case .done(let n):
            if n == 0 { eof = true } else { bytesIn += n }
            return n
        case .wouldBlock:
            readable = false
            return nil
        }
    }

    /// splice(2) from a pipe into this socket: bytes moved (0 when the socket is full).
    func splice(from pipe: FileDescriptor, count: Int) throws -> Int {
        wrote(try KernelPipe.splice(from: pipe, to: fd, count: count))
    }

    // MARK: ending

    /// Sends FIN (once): the peer reads the end of our stream.
    func shutdownWrite() {
        guard !writeShut, !closed else { return }
        writeShut = true
        // TLS ends its stream with close_notify before the FIN: a peer that sees a bare FIN
        // calls the stream truncated, and the session it would resume is dropped.
        transport?.close()
        Socket.shutdown(fd, Socket.shutWrite)
    }

    /// The code of a failed non-blocking connect (SO_ERROR).
    var pendingError: Int32 { Socket.pendingError(fd) }

    /// The address and port this socket is bound to (asked of the kernel).
    var localAddress: SocketAddress { Socket.localAddress(fd) }

    /// Closes the socket; an abortive close sends RST instead of FIN.
    func close(abort: Bool = false) {
        guard !closed else { return }
        closed = true
        if let t = transport {
            if !abort { t.close() }
            transport = nil
        }
        if abort { Socket.setResetOnClose(fd) }
        context.loop.forget(fd)
        fd.close()
        owner = nil
    }
}

