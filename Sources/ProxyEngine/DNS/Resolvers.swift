import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// One `resolvers` section at run time, on one loop: it asks the name servers for every name
/// its servers use, at most every `hold valid`, and moves the servers to what they answer.
/// Never blocks: one connected UDP socket per name server (or a TCP connection, `tcp@`,
/// opened when a query needs it), the loop's timer for the rest.
final class Resolvers: LoopObject {
    let definition: ResolversDefinition
    unowned(unsafe) let context: LoopContext
    private(set) var nameservers: [NameserverSocket] = []
    private(set) var resolutions: [Resolution] = []
    /// Queries waiting for an answer, by ID.
    private var pending: [UInt16: Resolution] = [:]
    private var stopped = false
    /// Answers that matched no query (wrong ID, question or source): counted, never applied.
    private(set) var ignoredAnswers = 0
    /// SRV targets asked for by name (the additional section did not carry them): the last
    /// address each resolved to.
    private var targetAddresses: [String: (address: IPAddress, by: String)] = [:]

    /// One name asked of the section, and the servers that follow it.
    final class Resolution {
        let name: String
        let wire: [UInt8]
        /// `_service._proto.name`: SRV records give each server its target and port.
        let isSRV: Bool
        let preferIPv4: Bool
        var queryType: UInt16
        var triedOtherType = false
        var id: UInt16 = 0
        var sentAt: Int64 = 0
        /// How late this query went out after `nextAt` (timers fire on a grid): the next
        /// one is due that much sooner, so that lateness does not add up.
        var lateness: Int64 = 0
        var tries = 0
        var errorAnswers = 0
        /// Name servers the query in flight reached (a send that failed expects no answer).
        var expected = 0
        var lastError = "other"
        var awaiting = false
        /// When the next query goes out.
        var nextAt: Int64 = 0
        var lastValid: Int64 = .min
        /// Addresses answered, each with when it was last in an answer (`hold obsolete`).
        var records: [(IPAddress, Int64)] = []
        var services: [DNSMessage.Service] = []
        var servers: [(Server, Backend)] = []
        /// The name servers that answered the query in flight, and the last query's ID (an
        /// answer to it after another server's is `outdated`).
        var answeredBy: Set<ObjectIdentifier> = []
        var lastID: UInt16 = 0
        /// An SRV target's own resolution (its A or AAAA records), for the SRV name whose answer
        /// named it without its address in the additional section.
        var parent: Resolution?

        init(name: String, wire: [UInt8], preferIPv4: Bool) {
            self.name = name
            self.wire = wire
            self.preferIPv4 = preferIPv4
            isSRV = name.hasPrefix("_")
            queryType = isSRV ? DNSMessage.typeSRV : preferIPv4 ? DNSMessage.typeA : DNSMessage.typeAAAA
        }
    }

    /// One name server's socket, connected so that the kernel drops datagrams from anyone else;
    /// or, for `tcp@`, its TCP connection (nil until a query needs it, and again once the
    /// server closes it), with the queries not yet written and the answer bytes not yet whole.
    final class NameserverSocket: LoopObject {
        let name: String
        var fd: FileDescriptor?
        let address: SocketAddress
        let stream: Bool
        var connected = false
        /// Registered for writability too (bytes wait in `outbox`).
        var wantsWrite = false
        var outbox: [UInt8] = []
        var inbox: [UInt8] = []
        unowned(unsafe) let owner: Resolvers
        /// `show resolvers`' counters (a detached set if the section is unknown to the model).
        let counters: NameserverCounters
        init(name: String, fd: FileDescriptor?, address: SocketAddress, stream: Bool, owner: Resolvers, counters: NameserverCounters?) {
            self.name = name
            self.fd = fd
            self.address = address
            self.stream = stream
            self.owner = owner
            self.counters = counters ?? NameserverCounters(name: name)
        }
        override func handle(events: UInt32) {
            if stream { owner.streamEvents(self, events) } else { owner.read(self) }
        }
    }

    init(definition: ResolversDefinition, servers: [(Server, Backend)], context: LoopContext) {
        self.definition = definition
        self.context = context
        super.init()
        for (s, b) in servers {
            guard case .name(let host) = s.definition.address.host else { continue }
            let prefer4 = s.definition.options.resolvePreferIPv4
            if let r = resolutions.first(where: { $0.name == host.lowercased() && $0.preferIPv4 == prefer4 }) {
                r.servers.append((s, b))
            } else if let wire = DNSMessage.encodeName(host) {
                let r = Resolution(name: host.lowercased(), wire: wire, preferIPv4: prefer4)
                r.servers.append((s, b))
                resolutions.append(r)
            }
        }
    }

    /// Opens the sockets and asks every name now.
    func start() {
        for n in definition.nameservers {
            do {
                let address = Backend.socketAddress(n.address, port: UInt16(n.port))
                let counters = context.model.resolverCounters.counters(section: definition.name, nameserver: n.name)
                if n.stream {
                    nameservers.append(NameserverSocket(name: n.name, fd: nil, address: address, stream: true, owner: self, counters: counters))
                    continue
                }
                let fd = try Socket.make(family: address.family, type: Int32(SOCK_DGRAM.rawValue))
                _ = try Socket.connect(fd, address)
                let socket = NameserverSocket(name: n.name, fd: fd, address: address, stream: false, owner: self, counters: counters)
                try context.loop.register(fd, events: Epoll.readable, object: socket)
                nameservers.append(socket)
            } catch {
                log("resolvers \(definition.name): nameserver \(n.name) (\(AddressText.ip(Backend.socketAddress(n.address, port: 0))):\(n.port)) cannot be used: \(error)", level: .warning)
            }
        }
        for r in resolutions { r.nextAt = context.loop.now }
        schedule()
    }

    func stop() {
        stopped = true
        context.loop.clearDeadline(self)
        for n in nameservers { close(n) }
        nameservers = []
    }

    private func schedule() {
        guard !stopped else { return }
        var next = Int64.max
        for r in resolutions {
            next = min(next, r.id != 0 ? r.sentAt + Int64(definition.retryInterval) : r.nextAt)
        }
        if next != .max { context.loop.setDeadline(self, max(next, context.loop.now)) }
    }

    override func timerFired() {
        guard !stopped else { return }
        let now = context.loop.now
        for r in resolutions {
            if r.id != 0 {
                guard now - r.sentAt >= Int64(definition.retryInterval) else { continue }
                pending[r.id] = nil
                for n in nameservers where !r.answeredBy.contains(ObjectIdentifier(n)) { n.counters.add(.timeouts) }
                r.lastID = r.id
                r.id = 0
                r.tries += 1
                if r.errorAnswers > 0 && !r.isSRV && !r.triedOtherType {
                    // Some name server said no to this family and the others are silent (one
                    // may be down): ask the other family rather than wait on the silent ones.
                    r.triedOtherType = true
                    r.queryType = r.queryType == DNSMessage.typeA ? DNSMessage.typeAAAA : DNSMessage.typeA
                    send(r)
                } else if r.tries >= definition.retries {
                    failed(r, status: r.errorAnswers > 0 ? r.lastError : "timeout")
                } else {
                    send(r)
                }
            } else if now >= r.nextAt {
                r.lateness = min(now - r.nextAt, EventLoop.timerStep)
                r.tries = 0
                r.triedOtherType = false
                r.queryType = r.isSRV ? DNSMessage.typeSRV : r.preferIPv4 ? DNSMessage.typeA : DNSMessage.typeAAAA
                send(r)
            }
        }
        schedule()
    }

    private func send(_ r: Resolution) {
        var id: UInt16
        repeat { id = UInt16.random(in: 1...UInt16.max) } while pending[id] != nil
        r.id = id
        r.sentAt = context.loop.now
        r.errorAnswers = 0
        r.answeredBy = []
        pending[id] = r
        let query = DNSMessage.query(id: id, name: r.wire, type: r.queryType, payloadSize: definition.acceptedPayloadSize)
        r.expected = 0
        for n in nameservers {
            n.counters.add(.sent)
            if n.stream ? sendStream(n, query) : (n.fd.map { fd in query.withUnsafeBytes { Socket.sendNow(fd, $0) } } ?? false) { r.expected += 1 } else {
                // A name server known to be away (its ICMP error is pending): not waited for.
                n.counters.add(.sendErrors)
                r.answeredBy.insert(ObjectIdentifier(n))
            }
        }
    }

    private var receiveBuffer = [UInt8](repeating: 0, count: 65536)

    fileprivate func read(_ n: NameserverSocket) {
        guard let fd = n.fd else { return }
        while true {
            let got: Int = receiveBuffer.withUnsafeMutableBytes { raw in
                let r = Glibc.recv(fd.rawValue, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT))
                return r
            }
            if got < 0 {
                if errno == EINTR { continue }
                return // EAGAIN, or the ICMP error of a name server that is not there
            }
            process(Array(receiveBuffer[0..<got]), from: n)
        }
    }

    /// One DNS message from a name server: applied if it answers a query in flight (its ID,
    /// question and type), counted and dropped otherwise.
    private func process(_ bytes: [UInt8], from n: NameserverSocket) {
        guard bytes.count >= 2 else { ignoredAnswers += 1; n.counters.add(.invalid); return }
        let id = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
        guard let r = pending[id] else {
            ignoredAnswers += 1
            // An answer to a query another name server already answered (or that timed out).
            n.counters.add(resolutions.contains { $0.lastID == id } ? .outdated : .invalid)
            return
        }
        guard let response = DNSMessage.parse(bytes, id: id, name: r.wire, type: r.queryType) else {
            ignoredAnswers += 1
            n.counters.add(.invalid)
            return
        }
        r.answeredBy.insert(ObjectIdentifier(n))
        answered(r, response, from: n)
    }

    // MARK: DNS over TCP (`nameserver NAME tcp@ADDRESS`)

    /// Queues a query on the name server's TCP connection, opening it if there is none;
    /// false when it cannot be opened (the query then expects no answer from it).
    private func sendStream(_ n: NameserverSocket, _ query: [UInt8]) -> Bool {
        if n.fd == nil {
            do {
                let fd = try Socket.make(family: n.address.family)
                n.fd = fd
                n.connected = false
                n.wantsWrite = true
                n.inbox = []
                n.outbox = []
                switch try Socket.connect(fd, n.address) {
                case .done: n.connected = true
                case .wouldBlock: break
                }
                try context.loop.register(fd, events: Epoll.readable | Epoll.writable | Epoll.readHangup, object: n)
            } catch {
                close(n)
                return false
            }
        }
        n.outbox += [UInt8(query.count >> 8), UInt8(query.count & 0xff)] + query
        if n.connected { flush(n) }
        return n.fd != nil
    }

    /// Writes what the connection takes now; asks for writability only while bytes wait.
    private func flush(_ n: NameserverSocket) {
        guard let fd = n.fd, n.connected else { return }
        while !n.outbox.isEmpty {
            let r = n.outbox.withUnsafeBytes { try? Socket.write(fd, from: $0.baseAddress!, count: $0.count) }
            switch r {
            case .done(let written)?: n.outbox.removeFirst(written)
            case .wouldBlock?:
                if !n.wantsWrite { try? context.loop.modify(fd, events: Epoll.readable | Epoll.writable | Epoll.readHangup, object: n) }
                n.wantsWrite = true
                return
            case nil:
                close(n)
                return
            }
        }
        if n.wantsWrite { try? context.loop.modify(fd, events: Epoll.readable | Epoll.readHangup, object: n) }
        n.wantsWrite = false
    }

    fileprivate func streamEvents(_ n: NameserverSocket, _ events: UInt32) {
        guard let fd = n.fd else { return }
        if !n.connected {
            if events & (Epoll.error | Epoll.hangup) != 0 { n.counters.add(.sendErrors); close(n); return }
            guard events & Epoll.writable != 0 else { return }
            n.connected = true
        }
        flush(n)
        guard n.fd != nil, events & (Epoll.readable | Epoll.readHangup | Epoll.hangup | Epoll.error) != 0 else { return }
        // Answers, each after its two-byte length; the server may close an idle connection
        // (the next query opens another).
        var ended = false
        while true {
            let got: Int = receiveBuffer.withUnsafeMutableBytes { raw in Glibc.recv(fd.rawValue, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT)) }
            if got < 0 && errno == EINTR { continue }
            if got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if got <= 0 { ended = true; break }
            n.inbox += receiveBuffer[0..<got]
        }
        // Every whole answer is taken off first: processing one may send a query, which
        // reopens a closed connection and starts a new buffer.
        var messages: [[UInt8]] = []
        while n.inbox.count >= 2 {
            let length = Int(n.inbox[0]) << 8 | Int(n.inbox[1])
            guard n.inbox.count >= 2 + length else { break }
            messages.append(Array(n.inbox[2..<(2 + length)]))
            n.inbox.removeFirst(2 + length)
        }
        if ended { close(n) }
        for m in messages { process(m, from: n) }
    }

    /// Closes a name server's socket; a TCP one opens again with the next query.
    private func close(_ n: NameserverSocket) {
        guard let fd = n.fd else { return }
        context.loop.unregister(fd)
        fd.close()
        n.fd = nil
        n.connected = false
        n.wantsWrite = false
        n.outbox = []
        n.inbox = []
    }

    private func answered(_ r: Resolution, _ response: DNSMessage.Response, from n: NameserverSocket) {
        let usable = r.isSRV ? !response.services.isEmpty : !response.addresses.isEmpty
        if response.rcode == 0 && !response.truncated && usable {
            pending[r.id] = nil
            r.lastID = r.id
            r.id = 0
            n.counters.add(.valid)
            var by = "\(definition.name)/\(n.name)"
            valid(r, response, by: &by)
            // `by` moves to "DNS cache" once the answer moved a server.
            if by != "\(definition.name)/\(n.name)" { n.counters.add(.updates) }
            schedule()
            return
        }
        // An error: the first valid answer of any name server wins, so wait for the others.
        n.counters.add(response.truncated ? .truncated : response.rcode == 3 ? .nx : response.rcode == 5 ? .refused : .other)
        r.errorAnswers += 1
        r.lastError = response.truncated ? "other" : response.rcode == 3 ? "nx" : response.rcode == 5 ? "refused" : "other"
        guard r.errorAnswers >= r.expected else { return }
        pending[r.id] = nil
        r.lastID = r.id
        r.id = 0
        // A and AAAA: ask the other family once before counting a failure.
        if !r.isSRV && !r.triedOtherType {
            r.triedOtherType = true
            r.queryType = r.queryType == DNSMessage.typeA ? DNSMessage.typeAAAA : DNSMessage.typeA
            send(r)
        } else {
            failed(r, status: r.lastError)
        }
        schedule()
    }

    private func hold(_ status: String) -> Int64 {
        switch status {
        case "nx": return Int64(definition.holdNX)
        case "refused": return Int64(definition.holdRefused)
        case "timeout": return Int64(definition.holdTimeout)
        default: return Int64(definition.holdOther)
        }
    }

    /// No valid answer: the servers keep their addresses for `hold STATUS`, then wait in
    /// `MAINT (resolution)`.
    private func failed(_ r: Resolution, status: String) {
        let now = context.loop.now
        r.id = 0
        r.nextAt = now + Int64(definition.resolveInterval) - r.lateness
        if r.parent != nil, r.lastValid == .min || now - r.lastValid >= hold(status) { targetAddresses[r.name] = nil }
        guard r.lastValid == .min || now - r.lastValid >= hold(status) else { return }
        r.records = []
        r.services = []
        for (s, b) in r.servers where s.setAwaitingAddress(true) {
            goingDown(s, b, "DNS \(status == "nx" ? "NX" : status) status")
        }
    }

    private func valid(_ r: Resolution, _ response: DNSMessage.Response, by: inout String) {
        let now = context.loop.now
        r.lastValid = now
        r.nextAt = now + Int64(max(definition.holdValid, definition.resolveInterval)) - r.lateness
        if let parent = r.parent {
            // An SRV target's address: its services take it, and the slots follow.
            targetAddresses[r.name] = response.addresses.first.map { ($0, by) }
            fillTargets(parent)
            assignServices(parent)
            return
        }
        if r.isSRV {
            r.services = response.services   // in answer order, as HAProxy takes them
            fillTargets(r)
            assignServices(r)
            return
        }
        let obsolete = Int64(definition.holdObsolete)
        let answered = Set(response.addresses)
        var kept = r.records.filter { old in now - old.1 < obsolete && !answered.contains(old.0) }
        var listed = Set(kept.map(\.0))
        for a in response.addresses where listed.insert(a).inserted { kept.append((a, now)) }
        r.records = kept
        let families = (v4: kept.contains { $0.0.isV4 }, v6: kept.contains { !$0.0.isV4 })
        // Who holds which address now, per backend: one pass, not one per server.
        var owners: [ObjectIdentifier: [IPAddress: Int]] = [:]
        for (s, b) in r.servers where !s.awaitsAddress {
            if let ip = IPAddress(socketAddress: s.address) { owners[ObjectIdentifier(b), default: [:]][ip, default: 0] += 1 }
        }
        for (s, b) in r.servers { assign(s, b, r, listed: listed, families: families, owners: &owners[ObjectIdentifier(b), default: [:]], by: &by) }
    }

    /// Gives a server the best address of the answer: the preferred family (+8), inside
    /// `resolve-net` (+4), its own already (+1); one another server of its backend holds is
    /// not taken unless `allow-dup-ip`. None left: `MAINT (resolution)` (HAProxy's rule).
    private func assign(_ s: Server, _ b: Backend, _ r: Resolution, listed: Set<IPAddress>, families: (v4: Bool, v6: Bool), owners: inout [IPAddress: Int], by: inout String) {
        let o = s.definition.options
        let current = s.awaitsAddress ? nil : IPAddress(socketAddress: s.address)
        func takenByOthers(_ ip: IPAddress) -> Bool {
            !o.allowDuplicateIP && owners[ip, default: 0] - (ip == current ? 1 : 0) > 0
        }
        // The usual answer: it still holds an address of the list, which nothing beats.
        let preferredListed = o.resolvePreferIPv4 ? families.v4 : families.v6
        if let ip = current, listed.contains(ip), ip.isV4 == o.resolvePreferIPv4 || !preferredListed, o.resolveNets.isEmpty, !takenByOthers(ip) { return }
        var best: (IPAddress, Int)?
        for (ip, _) in r.records where !takenByOthers(ip) {
            var score = 0
            if ip.isV4 == o.resolvePreferIPv4 { score += 8 }
            if o.resolveNets.contains(where: { $0.contains(ip) }) { score += 4 }
            if ip == current { score += 1 }
            if best == nil || score > best!.1 { best = (ip, score) }
        }
        if let old = current { owners[old, default: 1] -= 1 }
        guard let (ip, _) = best else {
            noAddress(s, b)
            return
        }
        owners[ip, default: 0] += 1
        move(s, b, to: ip, port: s.address.port, from: current, by: &by)
    }

    /// SRV targets without an address from the additional section take the one their own
    /// resolution found; those not asked for yet are asked now (and then every `hold valid`).
    private func fillTargets(_ r: Resolution) {
        for i in r.services.indices where r.services[i].address == nil {
            let target = r.services[i].target.lowercased()
            if let a = targetAddresses[target] {
                r.services[i].address = a.address
                r.services[i].learntFrom = a.by
                continue
            }
            guard !resolutions.contains(where: { $0.parent === r && $0.name == target }), let wire = DNSMessage.encodeName(target) else { continue }
            let t = Resolution(name: target, wire: wire, preferIPv4: r.preferIPv4)
            t.parent = r
            resolutions.append(t)
            send(t)
        }
    }

    /// SRV: each server in order takes a record no other server of its backend holds.
    private func assignServices(_ r: Resolution) {
        var used: Set<String> = []
        for (s, _) in r.servers where !s.awaitsAddress {
            if let ip = IPAddress(socketAddress: s.address),
               let svc = r.services.first(where: { $0.address == ip && Int($0.port) == Int(s.address.port) }) {
                used.insert("\(svc.target):\(svc.port)")
            }
        }
        for (s, b) in r.servers {
            let current = s.awaitsAddress ? nil : IPAddress(socketAddress: s.address)
            if let ip = current, r.services.contains(where: { $0.address == ip && Int($0.port) == Int(s.address.port) }) { continue }
            guard let svc = r.services.first(where: { $0.address != nil && !used.contains("\($0.target):\($0.port)") }) else {
                noAddress(s, b)
                continue
            }
            used.insert("\(svc.target):\(svc.port)")
            // An SRV weight (0-65535) becomes a server weight of 1-256, as HAProxy scales it.
            if !s.definition.options.ignoreSRVWeight { s.setWeight(min(256, svc.weight / 256 + 1)) }
            // HAProxy's words: a target asked for by name was moved `by dns/NS`, as a name is.
            var by = svc.learntFrom ?? "DNS additional record"
            move(s, b, to: svc.address!, port: UInt16(clamping: svc.port), from: current, by: &by, host: svc.target,
                 announceReady: svc.learntFrom != nil)
        }
    }

    /// `by`: the name server whose answer moved the server (HAProxy's wording: the first
    /// server of an answer is moved `by dns/ns1`, the others `by DNS cache`).
    private func move(_ s: Server, _ b: Backend, to ip: IPAddress, port: UInt16, from current: IPAddress?, by: inout String, host target: String? = nil,
                      announceReady: Bool = true) {
        if ip != current || s.address.port != port {
            s.setAddress(Backend.socketAddress(ip, port: port))
            let before = current.map { AddressText.ip(Backend.socketAddress($0, port: 0)) } ?? "(none)"
            log("\(b.name)/\(s.name) changed its IP from \(before) to \(AddressText.ip(Backend.socketAddress(ip, port: 0))) by \(by).", level: .warning, b)
            by = "DNS cache"
        }
        if s.setAwaitingAddress(false) {
            var host = target ?? ""
            if target == nil, case .name(let h) = s.definition.address.host { host = h }
            log("Server \(b.name)/\(s.name) ('\(host)') is UP/READY (resolves again).", level: .warning, b)
            if target == nil || announceReady { log("Server \(b.name)/\(s.name) administratively READY thanks to valid DNS answer.", level: .warning, b) }
            b.slotFreed()
        }
    }

    /// No address left for the server: it forgets the one it had and waits in `MAINT (resolution)`.
    private func noAddress(_ s: Server, _ b: Backend) {
        guard s.setAwaitingAddress(true) else { return }
        s.setAddress(Backend.socketAddress(IPAddress(v4: 0), port: s.address.port))
        goingDown(s, b, "No IP for server ")
    }

    private func goingDown(_ s: Server, _ b: Backend, _ reason: String) {
        let (active, backups) = b.usableCounts()
        log("Server \(b.name)/\(s.name) is going DOWN for maintenance (\(reason)). \(active) active and \(backups) backup servers left. \(s.active.load(ordering: .relaxed)) sessions active, 0 requeued, 0 remaining in queue.", level: .warning, b)
    }

    private func log(_ line: String, level: LogLevel, _ b: Backend? = nil) {
        let logger = context.model.logger
        logger.alert(line, level: level, to: b.map { logger.destinations(for: $0.settings.logs) } ?? [])
    }
}

extension IPAddress {
    /// The IP of an inet socket address (nil for a UNIX path or the unspecified address).
    init?(socketAddress a: SocketAddress) {
        if let v4 = a.ipv4 {
            guard v4 != 0 else { return nil }
            self.init(v4: v4)
        } else if a.family == AF_INET6, case let b = a.addressBytes, b.count == 16 {
            self.init(bytes16: b)
        } else {
            return nil
        }
    }
}
