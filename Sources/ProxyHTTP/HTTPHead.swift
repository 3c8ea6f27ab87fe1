/// A byte range inside a message buffer (offsets from the start of the head).
public struct ByteRange: Equatable, Sendable {
    public var start: Int32
    public var end: Int32
    public init(_ start: Int, _ end: Int) { self.start = Int32(start); self.end = Int32(end) }
    public var count: Int { Int(end - start) }
    public var isEmpty: Bool { end <= start }
    public static let empty = ByteRange(0, 0)
}

/// One header line: its name and its value, blanks trimmed, as ranges in the buffer.
public struct HeaderLine: Equatable, Sendable {
    public var name: ByteRange
    public var value: ByteRange
    /// The whole line including its CRLF.
    public var line: ByteRange
}

/// Why a message head was refused, and the status the client gets.
public struct HTTPParseError: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: Int
    public var reason: String
    public init(_ status: Int, _ reason: String) { self.status = status; self.reason = reason }
    public var description: String { "\(status): \(reason)" }
}

/// How a message body is delimited.
public enum BodyFraming: Equatable, Sendable {
    case none
    case contentLength(Int64)
    case chunked
    /// A response whose body runs until the server closes.
    case untilClose
}

/// A parsed request or response head. Ranges point into the caller's buffer; the header
/// array is reused between messages, so steady-state parsing allocates nothing.
public struct MessageHead: Sendable {
    // Request line.
    public var method = ByteRange.empty
    public var target = ByteRange.empty
    // Status line.
    public var status = 0
    public var reasonPhrase = ByteRange.empty
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and later 1.x).
    public var minorVersion = 1
    public var headers: [HeaderLine] = []
    /// Offset just past the blank line ending the head.
    public var length = 0
    /// End of the start line, including CRLF.
    public var startLineEnd = 0

    public var contentLength: Int64?
    public var chunked = false
    public var hasTransferEncoding = false
    public var connectionClose = false
    public var connectionKeepAlive = false
    public var connectionUpgrade = false
    public var hasUpgradeHeader = false
    public var host: ByteRange?

    public init() {}

    mutating func reset() {
        method = .empty; target = .empty; status = 0; reasonPhrase = .empty; minorVersion = 1
        headers.removeAll(keepingCapacity: true)
        length = 0; startLineEnd = 0
        contentLength = nil; chunked = false; hasTransferEncoding = false
        connectionClose = false; connectionKeepAlive = false; connectionUpgrade = false; hasUpgradeHeader = false
        host = nil
    }

    /// Keep-alive as the peer asked, by version and `Connection`.
    public var wantsKeepAlive: Bool {
        minorVersion >= 1 ? !connectionClose : connectionKeepAlive
    }
}
