import ProxyConfig
import ProxyHTTP
import ProxyRules
import Glibc

/// A request the proxy answers itself (the stats page, the Prometheus exporter): what the
/// service is given, copied out of the transaction's buffers.
public struct ServiceRequest: Sendable {
    public var method: String
    /// The request target as sent (origin form, with its query).
    public var target: String
    /// Header lines in order, names lower-cased.
    public var headers: [(name: String, value: String)]
    /// The body, whole (a form post); empty for a GET.
    public var body: [UInt8]
    /// The proxy whose `stats` lines apply (nil for `use-service`).
    public var proxyName: String?
    public var stats: StatsSettings?
    /// `stats admin if COND` held for this request.
    public var adminAllowed: Bool

    /// The first value of a header, by lower-case name.
    public func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }
}

/// What a service answers; the engine frames it (status line, length, connection, HEAD).
public struct ServiceResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// Something the proxy serves itself, called on a data loop: it must not block.
public protocol LocalService: AnyObject, Sendable {
    func respond(to request: ServiceRequest) -> ServiceResponse
}

/// The services a config can name, installed by the process before the loops start and
/// never changed after.
public final class LocalServices: @unchecked Sendable {
    public var statsPage: LocalService?
    public var prometheus: LocalService?
    public init() {}
}

/// A proxy's stats page settings, boxed so the per-request test is one pointer load.
final class StatsEndpoint: Sendable {
    let settings: StatsSettings
    init(_ settings: StatsSettings) { self.settings = settings }
}

/// Which service a request goes to, with what it needs.
enum ServiceRoute {
    case stats(proxyName: String, StatsSettings)
    case prometheus
}

extension HTTPTransaction {
    /// True when the request's target starts with `stats uri` of a proxy with stats enabled,
    /// and its method is one the page answers (as HAProxy: GET, HEAD, POST).
    func matchesStats(_ s: StatsSettings) -> Bool {
        let p = requestBytes
        let t = request.target
        guard t.count >= s.uri.utf8.count else { return false }
        var i = Int(t.start)
        for c in s.uri.utf8 { if p[i] != c { return false }; i += 1 }
        let m = request.method
        let method = UnsafeRawBufferPointer(rebasing: p[Int(m.start)..<Int(m.end)])
        return method.elementsEqual("GET".utf8) || method.elementsEqual("HEAD".utf8) || method.elementsEqual("POST".utf8)
    }

    /// Starts answering with a service: at once, or once a posted body has arrived.
    func startService(_ route: ServiceRoute) {
        switch request.requestFraming {
        case .none:
            runService(route)
        case .contentLength(let n):
            guard let inBuf = input, n <= Int64(inBuf.capacity - requestHeadLength) else {
                sendLocal(HTTPStatusText.errorPage(413), status: 413, close: true)
                return
            }
            pendingService = route
            phase = .service
            _ = readServiceBody()
        default:
            sendLocal(HTTPStatusText.errorPage(411), status: 411, close: true)
        }
    }

    /// The `.service` phase: reads until the posted body is whole, then answers.
    func readServiceBody() -> Bool {
        guard let route = pendingService, let inBuf = input, case .contentLength(let n) = request.requestFraming else { return false }
        var moved = false
        while Int64(inBuf.count - requestHeadLength) < n {
            if inBuf.freeSpace == 0 { inBuf.compact() }
            guard let read = client.read(into: inBuf) else { return moved }
            if read == 0 { terminationState = "CR"; close(); return true }
            moved = true
        }
        pendingService = nil
        phase = .head
        runService(route)
        return true
    }

    /// Calls the service and sends its answer.
    func runService(_ route: ServiceRoute) {
        let p = requestBytes
        func text(_ r: ByteRange) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: p[Int(r.start)..<Int(r.end)]), as: UTF8.self) }
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(request.headers.count)
        for h in request.headers { headers.append((text(h.name).lowercased(), text(h.value))) }
        var body: [UInt8] = []
        if case .contentLength(let n) = request.requestFraming, n > 0 {
            body = Array(UnsafeRawBufferPointer(rebasing: p[requestHeadLength..<requestHeadLength + Int(n)]))
        }
        var req = ServiceRequest(method: text(request.method), target: text(request.target), headers: headers, body: body,
                                 proxyName: nil, stats: nil, adminAllowed: false)
        let service: LocalService?
        switch route {
        case .stats(let name, let settings):
            req.proxyName = name
            req.stats = settings
            if let c = settings.admin { req.adminAllowed = c.evaluate(HTTPSamples(session: self, phase: .request)) }
            service = context.model.services.statsPage
        case .prometheus:
            service = context.model.services.prometheus
        }
        guard let service else {
            sendLocal(HTTPStatusText.errorPage(503), status: 503)
            return
        }
        terminationState = "PR"
        let answer = service.respond(to: req)
        sendLocal(frame(answer), status: answer.status)
        terminationState = "--"
    }

    /// A service's answer as HTTP/1.1 bytes: status line, its headers, the length and the
    /// connection's fate; no body for HEAD.
    func frame(_ r: ServiceResponse) -> [UInt8] {
        var head = "HTTP/1.1 \(r.status) \(HTTPStatusText.reason(r.status))\r\n"
        for (name, value) in r.headers { head += "\(name): \(value)\r\n" }
        head += "content-length: \(r.body.count)\r\n"
        if closeAfterResponse { head += "connection: close\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if !requestWasHEAD { bytes += r.body }
        return bytes
    }
}
