import ProxySystem
import Glibc

/// The last invalid request each frontend received and the last invalid response each
/// backend got, with the bytes, for `show errors`. Written only when a message is refused,
/// never on the way of a valid one.
public final class ErrorCaptures: @unchecked Sendable {
    /// One refused message.
    public struct Capture: Sendable {
        public var date: (seconds: Int, microseconds: Int)
        public var isRequest: Bool
        public var frontend: String
        public var backend: String?
        public var server: String?
        public var source: String
        public var reason: String
        public var event: Int
        public var bytes: [UInt8]
    }

    private let state = Locked<(events: Int, byProxy: [String: Capture])>((0, [:]))

    /// The most bytes kept of a message.
    static let limit = 16 * 1024

    func record(isRequest: Bool, frontend: String, backend: String?, server: String?, source: String, reason: String,
                bytes: UnsafeRawBufferPointer) {
        let kept = Array(UnsafeRawBufferPointer(rebasing: bytes[0..<min(bytes.count, Self.limit)]))
        let now = Clock.wallClock()
        state.withLock { s in
            let capture = Capture(date: (now.seconds, now.microseconds), isRequest: isRequest, frontend: frontend, backend: backend,
                                  server: server, source: source, reason: reason, event: s.events, bytes: kept)
            s.events += 1
            // A request's error belongs to its frontend, a response's to its backend.
            s.byProxy[(isRequest ? "req " : "rsp ") + (isRequest ? frontend : backend ?? frontend)] = capture
        }
    }

    /// Every capture, oldest first, and the number of events since start.
    public func all() -> (events: Int, captures: [Capture]) {
        state.withLock { s in (s.events, s.byProxy.values.sorted { $0.event < $1.event }) }
    }
}
