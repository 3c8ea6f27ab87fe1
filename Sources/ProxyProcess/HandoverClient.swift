import ProxySystem
import Glibc

/// The new process's side of the handover: asks every old pid at once for its sockets and
/// state, within one deadline for all of them, and keeps each channel open for `stop`.
struct HandoverClient {
    /// An old process that answered: its open channel, for `stop` and the acknowledgement.
    struct Channel {
        let pid: Int32
        let fd: FileDescriptor
        var reader = Handover.FrameReader()
    }

    /// Everything the old processes handed over.
    var channels: [Channel] = []
    var sockets = InheritedSockets()
    var serverStates: [String: Bool] = [:]
    private var newestGeneration = -1
    /// The runtime API's changes the old processes carried (`RuntimeState`).
    var runtimeLines: [String] = []
    /// TLS resumption state (ticket keys, cached sessions) from the newest old process.
    var tlsLines: [String] = []
    /// The channels of the old processes that confirmed they stopped, kept open: each sends
    /// what it counted after its snapshot when it exits (`RuntimeState.deltaLines`).
    /// Each with what was already read past `stopped` (a predecessor with nothing to drain
    /// sends its deltas right behind it).
    var predecessors: [(fd: FileDescriptor, reader: Handover.FrameReader)] = []
    /// Pids with no endpoint (gone, HAProxy, an older build): signalled only.
    var signalOnly: [Int32] = []
    /// Notes for stderr (a peer speaking another protocol version, say).
    var warnings: [String] = []

    /// Why the reload must not go on: an endpoint owned by someone else, or a broken reply.
    struct Refusal: Error, CustomStringConvertible {
        let description: String
    }

    /// Asks each pid in `pids`. Throws a `Refusal` (closing everything received) when an
    /// endpoint is not the process it claims to be, or its reply breaks the protocol.
    static func collect(from pids: [Int32], timeoutMilliseconds: Int = 3000) throws -> HandoverClient {
        var result = HandoverClient()
        let me = ProcessCalls.userID
        do {
            for pid in Set(pids).sorted() {
                let fd: FileDescriptor
                do {
                    fd = try UnixSocket.connect(abstract: Handover.endpointName(pid), timeoutMilliseconds: timeoutMilliseconds)
                } catch {
                    result.signalOnly.append(pid)
                    continue
                }
                // Only the very process we were told to replace, running as us or as root.
                guard let peer = UnixSocket.peer(fd) else {
                    fd.close()
                    throw Refusal(description: "cannot tell who holds the handover endpoint of pid \(pid)")
                }
                guard peer.pid == pid, peer.uid == me || peer.uid == 0 else {
                    fd.close()
                    throw Refusal(description: "the handover endpoint of pid \(pid) belongs to pid \(peer.pid) (uid \(peer.uid)), not to pid \(pid) running as uid \(me) or root: another local user may be impersonating it. Refusing its sockets")
                }
                try UnixSocket.send(fd, Handover.frame("\(Handover.magic) \(Handover.version) sockets"), fds: [])
                try Socket.setNonBlocking(fd)
                result.channels.append(Channel(pid: pid, fd: fd))
            }
            try result.readReplies(timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            result.abandon()
            if let r = error as? Refusal { throw r }
            throw Refusal(description: "the handover failed: \(error)")
        }
        return result
    }

    /// Reads every channel's reply, polling them together until all are complete.
    private mutating func readReplies(timeoutMilliseconds: Int) throws {
        var parsers = Array(repeating: Handover.ReplyParser(), count: channels.count)
        var pending = Set(channels.indices)
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while !pending.isEmpty {
            let now = Clock.monotonicNanoseconds()
            guard now < deadline else {
                let late = pending.map { String(channels[$0].pid) }.sorted().joined(separator: ", ")
                throw Refusal(description: "old pid \(late) did not hand over its sockets within \(timeoutMilliseconds) ms")
            }
            let order = pending.sorted()
            let ready = Poll.wait(order.map { channels[$0].fd }, milliseconds: Int32((deadline - now) / 1_000_000 + 1))
            for (i, revents) in zip(order, ready) where revents != 0 {
                var ended = false
                while true {
                    let r: ([UInt8], [Int32])
                    do { r = try UnixSocket.receive(channels[i].fd) } catch let e as SystemError where e.code == EAGAIN {
                        break
                    }
                    if r.0.isEmpty && r.1.isEmpty { ended = true; break }
                    channels[i].reader.feed(r.0, fds: r.1)
                }
                do {
                    if let reply = try parsers[i].advance(&channels[i].reader) {
                        let extra = channels[i].reader.takeAll()
                        sockets.add(reply.descriptors, declared: reply.hints.map(Handover.declaredDescriptor))
                        if !extra.isEmpty {
                            sockets.add(extra)
                            throw Handover.ProtocolError("\(extra.count) descriptors arrived outside any batch")
                        }
                        // Health comes from the newest old process, as the rest of the state.
                        let generation = reply.runtimeLines.first { $0.hasPrefix("generation ") }.flatMap { Int($0.dropFirst(11)) } ?? 0
                        if generation >= newestGeneration {
                            newestGeneration = generation
                            serverStates = reply.serverStates
                            if !reply.tlsLines.isEmpty { tlsLines = reply.tlsLines }
                        }
                        runtimeLines += ["from \(channels[i].pid)"] + reply.runtimeLines
                        pending.remove(i)
                        continue
                    }
                } catch let e as Handover.ProtocolError where channels[i].reader.looksLikeVersion1 && parsers[i].expected == nil {
                    _ = e
                    warnings.append("old pid \(channels[i].pid) speaks handover protocol 1: it will be signalled, and the listeners bound beside it with SO_REUSEPORT")
                    sockets.add(channels[i].reader.takeAll())
                    pending.remove(i)
                    signalOnly.append(channels[i].pid)
                    channels[i].fd.close()
                    channels[i] = Channel(pid: -1, fd: FileDescriptor(rawValue: -1))
                    continue
                } catch let e as Handover.ProtocolError {
                    sockets.add(channels[i].reader.takeAll())
                    throw Refusal(description: "old pid \(channels[i].pid) sent a bad handover reply: \(e)")
                }
                if ended {
                    sockets.add(channels[i].reader.takeAll())
                    if parsers[i].expected == nil {
                        // Closed before a greeting: it refused us (another uid, say). Signal only.
                        warnings.append("old pid \(channels[i].pid) closed its handover channel without an answer; it will be signalled, and the listeners bound beside it with SO_REUSEPORT")
                        pending.remove(i)
                        signalOnly.append(channels[i].pid)
                        channels[i].fd.close()
                        channels[i] = Channel(pid: -1, fd: FileDescriptor(rawValue: -1))
                        continue
                    }
                    throw Refusal(description: "old pid \(channels[i].pid) closed its handover channel in the middle of its reply")
                }
            }
        }
        channels.removeAll { $0.pid < 0 }
    }

    /// A master keeping a worker's listeners: the channels close without `stop` (the worker
    /// serves on), and the received descriptors are the caller's.
    mutating func keepSocketsOnly() -> [Int32] {
        for c in channels where c.pid > 0 { c.fd.close() }
        channels = []
        let kept = sockets.received
        sockets = InheritedSockets()
        return kept
    }

    /// A failed start: close the channels without saying `stop` (the old processes go on
    /// as they were) and every received descriptor.
    mutating func abandon() {
        for c in channels where c.pid > 0 { c.fd.close() }
        channels = []
        sockets.closeAll()
        sockets = InheritedSockets()
    }

    /// The point of no return: says `stop` on every channel, then waits (one deadline for
    /// all) for each `stopped`. Returns the pids that confirmed.
    mutating func stopAll(timeoutMilliseconds: Int = 3000) -> Set<Int32> {
        var waiting: [Int] = []
        for (i, c) in channels.enumerated() {
            if (try? Socket.setBlocking(c.fd, true)) != nil,
               (try? UnixSocket.send(c.fd, Handover.frame("stop"), fds: [])) != nil,
               (try? Socket.setNonBlocking(c.fd)) != nil {
                waiting.append(i)
            }
        }
        var unconfirmed = Set(channels.indices).subtracting(waiting)
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while !waiting.isEmpty {
            let now = Clock.monotonicNanoseconds()
            if now >= deadline { unconfirmed.formUnion(waiting); break }
            let ready = Poll.wait(waiting.map { channels[$0].fd }, milliseconds: Int32((deadline - now) / 1_000_000 + 1))
            var still: [Int] = []
            for (i, revents) in zip(waiting, ready) {
                guard revents != 0 else { still.append(i); continue }
                var confirmed = false, ended = false
                while let r = try? UnixSocket.receive(channels[i].fd) {
                    if r.0.isEmpty && r.1.isEmpty { ended = true; break }
                    for fd in r.1 { FileDescriptor(rawValue: fd).close() }
                    channels[i].reader.feed(r.0, fds: [])
                }
                // Only up to `stopped`: the frames behind it are the final deltas, for the
                // control loop, which gets this reader with them.
                while !confirmed, let text = try? channels[i].reader.next() { if text == "stopped" { confirmed = true } }
                if confirmed { continue }
                if ended { unconfirmed.insert(i) } else { still.append(i) }
            }
            waiting = still
        }
        for (i, c) in channels.enumerated() {
            if unconfirmed.contains(i) { c.fd.close() } else { predecessors.append((c.fd, c.reader)) }
        }
        let pids = Set(channels.indices).subtracting(unconfirmed).map { channels[$0].pid }
        channels = []
        return Set(pids)
    }

    /// Closes the channels of pids told to terminate (`-st`): they get SIGTERM instead.
    mutating func drop(_ pid: Int32) {
        for c in channels where c.pid == pid { c.fd.close() }
        channels.removeAll { $0.pid == pid }
    }
}
