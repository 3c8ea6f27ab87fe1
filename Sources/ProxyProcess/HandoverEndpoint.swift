import ProxyConfig
import ProxyEngine
import ProxySystem
import Glibc

/// The old process's side of the handover, served by the control loop without blocking it:
/// a listening abstract socket named after this pid, and one channel per successor. It is
/// bound before privileges are dropped, so SO_PEERCRED shows its creator as root (or the
/// user who started it), which is what a successor checks.
final class HandoverEndpoint {
    /// One successor's channel.
    final class Channel {
        let fd: FileDescriptor
        var reader = Handover.FrameReader()
        var answered = false
        /// Waiting for the engine to stop accepting before saying `stopped`.
        var awaitingAcknowledgement = false
        /// The counters as sent in the reply: what this successor starts from.
        var snapshot: [String: [Int]] = [:]
        /// Told `stopped`: the successor, in the order they came (the newest gets the deltas).
        var successorOrder: Int?
        let deadline: UInt64
        init(fd: FileDescriptor, deadline: UInt64) {
            self.fd = fd
            self.deadline = deadline
        }
    }

    let fd: FileDescriptor
    private(set) var channels: [Int32: Channel] = [:]
    /// The counters the first confirmed successor started from: the final deltas are
    /// counted from there, whichever successor is newest at exit.
    private var baseline: [String: [Int]]?
    private var successors = 0
    /// How long a successor may take to ask, once connected.
    static let requestTimeoutNanoseconds: UInt64 = 5_000_000_000

    /// Binds `proxy-handover-<pid>`.
    init() throws {
        fd = try UnixSocket.listen(abstract: Handover.endpointName(ProcessCalls.pid))
    }

    func close() {
        for c in channels.values { c.fd.close() }
        channels = [:]
        closeListener()
    }

    private var listening = true

    /// Takes no more successors (an exiting process); the channels stay open.
    func closeListener() {
        guard listening else { return }
        listening = false
        fd.close()
    }

    /// Accepts waiting successors of our uid (or root); returns the new channels to watch.
    func acceptAll() -> [FileDescriptor] {
        var accepted: [FileDescriptor] = []
        while let r = try? Socket.accept(fd), case .done(let (peer, _)) = r {
            guard let who = UnixSocket.peer(peer), who.uid == ProcessCalls.userID || who.uid == 0 else {
                peer.close()
                continue
            }
            channels[peer.rawValue] = Channel(fd: peer, deadline: Clock.monotonicNanoseconds() + Self.requestTimeoutNanoseconds)
            accepted.append(peer)
        }
        return accepted
    }

    /// What a channel's bytes asked for.
    enum Request {
        case none
        /// The successor asked for the sockets: they were sent.
        case answered
        /// The successor said `stop`: soft-stop, then acknowledge.
        case stop
        /// The channel is done (closed, refused, or broken).
        case closed
    }

    /// Reads a readable channel and acts on it.
    func readable(_ channelFD: FileDescriptor, sockets: () -> [(fd: Int32, hint: String)], serverStates: () -> [String]) -> Request {
        guard let c = channels[channelFD.rawValue] else { return .closed }
        var ended = false
        while true {
            guard let r = try? UnixSocket.receive(c.fd) else { break }
            for fd in r.1 { FileDescriptor(rawValue: fd).close() }
            if r.0.isEmpty { ended = true; break }
            c.reader.feed(r.0, fds: [])
        }
        var result = Request.none
        do {
            while let text = try c.reader.next() {
                if !c.answered, text == "\(Handover.magic) \(Handover.version) sockets" {
                    c.answered = true
                    // The baseline is read from the very lines sent: the successor starts from
                    // exactly these values, and whatever is counted after them is a delta.
                    let states = serverStates()
                    c.snapshot = RuntimeState.snapshot(fromLines: states)
                    try send(Handover.reply(sockets: sockets(), serverStates: states), on: c.fd)
                    result = .answered
                } else if c.answered, text == "stop" {
                    c.awaitingAcknowledgement = true
                    result = .stop
                } else {
                    ended = true
                }
            }
        } catch {
            ended = true
        }
        if ended && !c.awaitingAcknowledgement {
            drop(c)
            return .closed
        }
        return result
    }

    /// Sends the reply, blocking for at most a second per frame (the successor is reading).
    private func send(_ frames: [(bytes: [UInt8], fds: [Int32])], on fd: FileDescriptor) throws {
        try Socket.setBlocking(fd, true)
        try Socket.setTimeouts(fd, milliseconds: 1000)
        for f in frames { try UnixSocket.send(fd, f.bytes, fds: f.fds) }
        try Socket.setNonBlocking(fd)
    }

    /// This process no longer accepts: says `stopped` to every successor that asked.
    func acknowledgeStops() {
        for c in channels.values where c.awaitingAcknowledgement {
            try? Socket.setBlocking(c.fd, true)
            try? Socket.setTimeouts(c.fd, milliseconds: 1000)
            try? UnixSocket.send(c.fd, Handover.frame("stopped"), fds: [])
            try? Socket.setNonBlocking(c.fd)
            c.awaitingAcknowledgement = false
            c.successorOrder = successors
            successors += 1
            if baseline == nil { baseline = c.snapshot }
        }
    }

    /// At exit: what this process counted since its first successor's snapshot goes to the
    /// newest successor still connected, which adds it to its own counters (and, if it is
    /// itself draining, passes it on the same way when it exits).
    func sendFinalDeltas(_ lines: (_ baseline: [String: [Int]]) -> [String]) {
        guard let baseline, let newest = channels.values.filter({ $0.successorOrder != nil })
            .max(by: { $0.successorOrder! < $1.successorOrder! }) else { return }
        let text = (lines(baseline) + ["end"]).joined(separator: "\n")
        try? Socket.setBlocking(newest.fd, true)
        try? Socket.setTimeouts(newest.fd, milliseconds: 1000)
        try? UnixSocket.send(newest.fd, Handover.frame(text), fds: [])
    }

    /// Channels that never asked in time.
    func expire(now: UInt64) -> [FileDescriptor] {
        let late = channels.values.filter { !$0.answered && $0.deadline <= now }
        for c in late { drop(c) }
        return late.map(\.fd)
    }

    private func drop(_ c: Channel) {
        channels[c.fd.rawValue] = nil
        c.fd.close()
    }
}
