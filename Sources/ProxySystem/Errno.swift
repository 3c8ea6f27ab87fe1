import CProxySys
import Glibc

/// An errno value, thrown as an error that names the system call that failed.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The raw errno.
    public let code: Int32
    /// The call that failed, e.g. `open` or `epoll_ctl`.
    public let call: String

    public init(_ call: String, code: Int32) {
        self.call = call
        self.code = code
    }

    /// The error left by the last failed call in this thread.
    public static func last(_ call: String) -> SystemError {
        SystemError(call, code: cproxy_errno())
    }

    /// The C library's text for the code, e.g. "No such file or directory".
    public var reason: String { String(cString: strerror(code)) }

    public var description: String { "\(call): \(reason)" }
}

/// What a non-blocking call returns: a value, or "try again when the fd is ready".
/// Would-block is a value, never a thrown error, so the hot path stays exception-free.
public enum IOResult<T> {
    case done(T)
    case wouldBlock
}

/// Retries `body` while it fails with EINTR; throws any other failure as a `SystemError`.
@inline(__always)
public func retryingOnInterrupt<T: BinaryInteger>(_ call: String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = cproxy_errno()
        if code == EINTR { continue }
        throw SystemError(call, code: code)
    }
}

/// Like `retryingOnInterrupt`, but turns EAGAIN/EWOULDBLOCK into `.wouldBlock`.
@inline(__always)
public func nonBlocking<T: BinaryInteger>(_ call: String, _ body: () -> T) throws -> IOResult<T> {
    while true {
        let result = body()
        if result >= 0 { return .done(result) }
        let code = cproxy_errno()
        if code == EINTR { continue }
        if code == EAGAIN || code == EWOULDBLOCK { return .wouldBlock }
        throw SystemError(call, code: code)
    }
}
