import ProxyConfig
import ProxyHTTP
import ProxyRules
import ProxySystem
import Glibc

/// Lends a name's bytes as a sample, without copying them.
@inline(__always)
func visitText(_ text: String, _ visit: (Sample) -> Bool) -> Bool {
    var text = text
    return text.withUTF8 { visit(.bytes(UnsafeRawBufferPointer($0))) }
}

/// The host's name, read once, as HAProxy reads it (`hostname`).
private let hostName = Array(ProcessCalls.hostname.utf8)

/// The fetches every context answers the same way: load-time values, process state and
/// `proc.` variables. Nil when `fetch` is not one of them.
enum ProcessSamples {
    @inline(__always)
    static func visit(_ fetch: Fetch, model: RuntimeModel, backend: Backend?, _ visit: (Sample) -> Bool) -> Bool? {
        switch fetch {
        case .constantBool(let b): return visit(.boolean(b))
        case .constantInt(let i): return visit(.integer(i))
        case .constantString(let s): return Array(s.utf8).withUnsafeBytes { visit(.bytes($0)) }
        case .constantIP(let ip): return visit(.ip(ip))
        case .constantBinary(let b): return b.withUnsafeBytes { visit(.bytes($0)) }
        case .env(let name):
            guard let v = getenv(name) else { return false }
            return visit(.bytes(UnsafeRawBufferPointer(start: v, count: strlen(v))))
        case .envInteger(let name):
            return visit(.integer(AtolReading(getenv(name).map { String(cString: $0) } ?? "").value))
        case .backendUsableServers(let name):
            guard let b = name.flatMap({ model.backends[$0] }) ?? backend else { return visit(.integer(0)) }
            return visit(.integer(Int64(b.usableServerCount)))
        case .serverIsUp(let b, let s):
            guard let server = model.backends[b]?.server(named: s) else { return false }
            return visit(.boolean(server.isUsable))
        case .stopping:
            return visit(.boolean(model.stopping.load(ordering: .relaxed)))
        case .date(let offset, let perSecond):
            let now = Clock.wallClock()
            // The offset is in the unit asked for, added last, as HAProxy adds it.
            return visit(.integer(Int64(now.seconds) &* perSecond &+ Int64(now.microseconds) / (1_000_000 / perSecond) &+ offset))
        case .dateMicroseconds:
            return visit(.integer(Int64(Clock.wallClock().microseconds)))
        case .hostName:
            return hostName.withUnsafeBytes { visit(.bytes($0)) }
        case .processNumber:
            return visit(.integer(1))
        case .variable(.proc, let name, let fallback):
            if let found = model.processVariables.withLock({ $0[name] }) { return found.withSample(visit) }
            return fallback.map { f in Array(f.utf8).withUnsafeBytes { visit(.bytes($0)) } } ?? false
        default:
            return nil
        }
    }
}

/// The `ssl_fc*` fetches, answered from the client connection's TLS session (nil: not TLS).
enum TLSSamples {
    static func visit(_ fetch: Fetch, _ tls: TLSTransport?, _ visit: (Sample) -> Bool) -> Bool {
        switch fetch {
        case .tlsFrontend:
            return visit(.boolean(tls != nil))
        case .tlsServerName:
            guard let t = tls, let name = t.serverNameText else { return false }
            return visit(.bytes(name))
        case .tlsProtocol:
            guard let t = tls, t.established else { return false }
            return visit(.bytes(t.protocolText))
        case .tlsCipher:
            guard let t = tls, t.established else { return false }
            return visit(.bytes(t.cipherText))
        case .tlsALPN:
            guard let t = tls, let a = t.alpnText else { return false }
            return visit(.bytes(a))
        case .tlsResumed:
            guard let t = tls else { return visit(.boolean(false)) }
            return visit(.boolean(t.resumed))
        case .tlsClient(let field):
            guard let t = tls, t.established else {
                // Not TLS (or not yet): no certificate was used.
                return field == .used || field == .hasCertificate ? visit(.boolean(false)) : false
            }
            return t.visitClientCertificate(field, visit)
        default:
            return false
        }
    }
}

/// The fetches known when a connection is accepted (`tcp-request connection`, TCP routing).
struct ConnectionSamples: SampleContext {
    let client: IPAddress
    let clientPort: UInt16
    let local: IPAddress
    let localPort: UInt16
    unowned(unsafe) let model: RuntimeModel
    /// The client's TLS session, once one runs (a TCP stream's `sni ssl_fc_sni`).
    var tls: TLSTransport? = nil
    /// The client's first bytes, peeked at by `tcp-request inspect-delay`.
    var payload: UnsafeRawBufferPointer? = nil
    /// The frontend's name, and the backend's once the route chose one (`fe_name`, `be_name`).
    var frontendName = ""
    var backendName: String?
    /// The session's variables and request captures (`tcp-request content set-var|capture`).
    var variables = SessionVariables()
    var captures: [[UInt8]?] = []

    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool {
        switch fetch {
        case .variable(let scope, let name, let fallback) where scope != .proc:
            if let v = variables.value(scope, name) { return v.withSample(visit) }
            return fallback.map { f in Array(f.utf8).withUnsafeBytes { visit(.bytes($0)) } } ?? false
        case .capturedRequestHeader(let slot):
            guard slot >= 0, slot < captures.count, let c = captures[slot] else { return false }
            return c.withUnsafeBytes { visit(.bytes($0)) }
        case .helloVersion:
            guard let p = payload, let v = ClientHello(p).version else { return false }
            return visit(.integer(Int64(v)))
        case .frontendName: return visitText(frontendName, visit)
        case .backendName: return visitText(backendName ?? frontendName, visit)
        case .source: return visit(.ip(client))
        case .sourcePort: return visit(.integer(Int64(clientPort)))
        case .destination: return visit(.ip(local))
        case .destinationPort: return visit(.integer(Int64(localPort)))
        case .tlsFrontend, .tlsServerName, .tlsProtocol, .tlsCipher, .tlsALPN, .tlsResumed, .tlsClient:
            return TLSSamples.visit(fetch, tls, visit)
        case .helloType:
            guard let p = payload, let type = ClientHello(p).helloType else { return false }
            return visit(.integer(Int64(type)))
        case .helloServerName:
            guard let p = payload, let r = ClientHello(p).serverName else { return false }
            return visit(.bytes(UnsafeRawBufferPointer(rebasing: p[r])))
        default: return ProcessSamples.visit(fetch, model: model, backend: nil, visit) ?? false
        }
    }
}

/// Reads fetches out of one parsed message head, in place (no copies).
struct MessageView {
    let bytes: UnsafeRawBufferPointer
    let head: MessageHead

    @inline(__always) func equalsName(_ r: ByteRange, _ lowerName: String) -> Bool {
        let p = bytes
        guard r.count == lowerName.utf8.count else { return false }
        var i = Int(r.start)
        for c in lowerName.utf8 {
            var b = p[i]
            if b >= 0x41 && b <= 0x5a { b |= 0x20 }
            if b != c { return false }
            i += 1
        }
        return true
    }

    @inline(__always) func slice(_ r: ByteRange) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Int(r.start)..<Int(r.end)])
    }

    func visitHeader(_ name: String, occurrence: Int?, split: Bool, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        var values: [ByteRange] = []
        let wantAll = occurrence == nil
        for h in head.headers where equalsName(h.name, name) {
            if split {
                var i = Int(h.value.start)
                let end = Int(h.value.end)
                while i <= end {
                    while i < end, p[i] == 0x20 || p[i] == 9 { i += 1 }
                    let s = i
                    var inQuote = false
                    while i < end, inQuote || p[i] != 0x2c { if p[i] == 0x22 { inQuote.toggle() }; i += 1 }
                    var e = i
                    while e > s, p[e - 1] == 0x20 || p[e - 1] == 9 { e -= 1 }
                    if wantAll {
                        if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[s..<e]))) { return true }
                    } else {
                        values.append(ByteRange(s, e))
                    }
                    i += 1
                }
            } else if wantAll {
                if visit(.bytes(slice(h.value))) { return true }
            } else {
                values.append(h.value)
            }
        }
        guard let occ = occurrence, !values.isEmpty else { return false }
        let index = occ > 0 ? occ - 1 : values.count + occ
        guard index >= 0 && index < values.count else { return false }
        return visit(.bytes(slice(values[index])))
    }

    func headerCount(_ name: String?) -> Int {
        var n = 0
        for h in head.headers where name == nil || equalsName(h.name, name!) { n += 1 }
        return n
    }

    /// A cookie's values: `name=value` pairs of `Cookie` lines (a request), or the first pair
    /// of each `Set-Cookie` line (a response).
    func visitCookie(_ name: String, inResponse: Bool, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        let n = Array(name.utf8)
        for h in head.headers where equalsName(h.name, inResponse ? "set-cookie" : "cookie") {
            var i = Int(h.value.start)
            let end = Int(h.value.end)
            while i < end {
                while i < end, p[i] == 0x20 || p[i] == 0x3b { i += 1 }
                let ks = i
                while i < end, p[i] != 0x3d, p[i] != 0x3b { i += 1 }
                let ke = i
                var vs = i, ve = i
                if i < end, p[i] == 0x3d {
                    i += 1
                    vs = i
                    while i < end, p[i] != 0x3b { i += 1 }
                    ve = i
                    while ve > vs, p[ve - 1] == 0x20 { ve -= 1 }
                }
                if ke - ks == n.count, (0..<n.count).allSatisfy({ p[ks + $0] == n[$0] }) {
                    if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[vs..<ve]))) { return true }
                }
                if inResponse { break }
            }
        }
        return false
    }

    func visitURLParameter(_ name: String, delimiter: UInt8, _ visit: (Sample) -> Bool) -> Bool {
        let p = bytes
        let t = head.target
        var i = Int(t.start)
        let end = Int(t.end)
        while i < end, p[i] != 0x3f { i += 1 }
        guard i < end else { return false }
        i += 1
        let n = Array(name.utf8)
        while i < end {
            let ks = i
            while i < end, p[i] != 0x3d, p[i] != delimiter, p[i] != 0x23 { i += 1 }
            let ke = i
            var vs = i, ve = i
            if i < end, p[i] == 0x3d {
                i += 1
                vs = i
                while i < end, p[i] != delimiter, p[i] != 0x23 { i += 1 }
                ve = i
            }
            if ke - ks == n.count, (0..<n.count).allSatisfy({ p[ks + $0] == n[$0] }) {
                if visit(.bytes(UnsafeRawBufferPointer(rebasing: p[vs..<ve]))) { return true }
            }
            if i < end, p[i] == 0x23 { return false }
            i += 1
        }
        return false
    }
}

/// The fetches of an HTTP transaction in one phase. In the request phase they read the
/// request head in the input buffer; in the response phase the response head, plus what was
/// captured from the request when it was parsed (method, version) and the connection. A
/// fetch the phase cannot serve gives no value: the request bytes are never read once the
/// head is gone (the loader refuses such fetches in response actions, and warns for ACLs).
struct HTTPSamples: SampleContext {
    unowned(unsafe) let session: HTTPTransaction
    let phase: RulePhase

    @inline(__always) var request: MessageView { MessageView(bytes: session.requestBytes, head: session.request) }
    @inline(__always) var response: MessageView { MessageView(bytes: session.responseBytes, head: session.response) }

    @inline(__always) func message(_ side: MessageSide) -> MessageView {
        switch side {
        case .current: return phase == .response ? response : request
        case .request: return request
        case .response: return response
        }
    }

    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool {
        guard fetch.usage.isAvailable(in: phase) else { return false }
        switch fetch {
        case .path:
            return visit(.bytes(request.slice(session.pathRange)))
        case .url:
            return visit(.bytes(request.slice(session.request.target)))
        case .frontendName:
            return visitText(session.frontend.name, visit)
        case .backendName:
            return visitText(session.backend?.name ?? session.frontend.name, visit)
        case .serverName:
            guard let s = session.triedServer else { return false }
            return visitText(s.name, visit)
        case .base:
            // Host and path joined in a copy of our own, lent for the visit only.
            let path = request.slice(session.pathRange)
            var joined: [UInt8]?
            _ = request.visitHeader("host", occurrence: 1, split: false) { s in
                if case .bytes(let host) = s { joined = Array(host) + Array(path) }
                return true
            }
            guard let bytes = joined else { return visit(.bytes(path)) }
            return bytes.withUnsafeBytes { visit(.bytes($0)) }
        case .query:
            let r = session.request.target
            let t = request.slice(r)
            guard let q = t.firstIndex(of: UInt8(ascii: "?")) else { return false }
            let end = t[(q + 1)...].firstIndex(of: UInt8(ascii: "#")) ?? t.count
            return visit(.bytes(UnsafeRawBufferPointer(rebasing: t[(q + 1)..<end])))
        case .method:
            if phase == .request { return visit(.bytes(request.slice(session.request.method))) }
            if phase == .log, session.variables.capturedMethod.isEmpty {
                // The log line keeps the request line, not the head: read the method from it.
                guard let m = RequestLineParts(session.requestLineForLog.isEmpty ? nil : session.requestLineForLog).method else { return false }
                return Array(m.utf8).withUnsafeBytes { visit(.bytes($0)) }
            }
            return session.variables.capturedMethod.withUnsafeBytes { visit(.bytes($0)) }
        case .requestVersion:
            return (session.request.minorVersion == 0 ? "1.0" : "1.1").utf8.withContiguousStorageIfAvailable { visit(.bytes(UnsafeRawBufferPointer($0))) } ?? false
        case .responseVersion:
            return (session.response.minorVersion == 0 ? "1.0" : "1.1").utf8.withContiguousStorageIfAvailable { visit(.bytes(UnsafeRawBufferPointer($0))) } ?? false
        case .status:
            return visit(.integer(Int64(session.response.status)))
        case .header(let name, let occurrence, let side):
            return message(side).visitHeader(name, occurrence: occurrence, split: true, visit)
        case .fullHeader(let name, let occurrence, let side):
            return message(side).visitHeader(name, occurrence: occurrence, split: false, visit)
        case .headerCount(let name, let side):
            return visit(.integer(Int64(message(side).headerCount(name))))
        case .cookie(let name, let side):
            let inResponse = side == .response || (side == .current && phase == .response)
            return message(side).visitCookie(name, inResponse: inResponse, visit)
        case .urlParameter(let name, let delimiter):
            return request.visitURLParameter(name, delimiter: delimiter ?? UInt8(ascii: "&"), visit)
        case .tlsFrontend, .tlsServerName, .tlsProtocol, .tlsCipher, .tlsALPN, .tlsResumed, .tlsClient:
            return TLSSamples.visit(fetch, session.client.transport as? TLSTransport, visit)
        case .source:
            return visit(.ip(session.clientIP))
        case .sourcePort:
            return visit(.integer(Int64(session.clientPort)))
        case .destination:
            return visit(.ip(session.localIP))
        case .destinationPort:
            return visit(.integer(Int64(session.local.port)))
        case .requestLength:
            return visit(.integer(Int64(session.bufferedRequestBytes)))
        case .contentLength:
            guard let n = session.request.contentLength else { return false }
            return visit(.integer(n))
        case .isHTTP:
            return visit(.boolean(true))
        case .capturedRequestHeader(let slot):
            guard slot >= 0, slot < session.captures.count, let c = session.captures[slot] else { return false }
            return c.withUnsafeBytes { visit(.bytes($0)) }
        case .variable(let scope, let name, let fallback) where scope != .proc:
            if let v = session.variables.value(scope, name) { return v.withSample(visit) }
            return fallback.map { f in Array(f.utf8).withUnsafeBytes { visit(.bytes($0)) } } ?? false
        default:
            return ProcessSamples.visit(fetch, model: session.context.model, backend: session.backend, visit) ?? false
        }
    }
}
