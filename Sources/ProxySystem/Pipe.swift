import CProxySys
import Glibc

/// A kernel pipe used to move bytes between sockets with splice(2), without copying them
/// through user space.
public struct KernelPipe: Sendable {
    public let readEnd: FileDescriptor
    public let writeEnd: FileDescriptor

    public init() throws {
        var fds: [Int32] = [0, 0]
        _ = try retryingOnInterrupt("pipe2") { cproxy_pipe2(&fds, O_NONBLOCK | O_CLOEXEC) }
        readEnd = FileDescriptor(rawValue: fds[0])
        writeEnd = FileDescriptor(rawValue: fds[1])
    }

    public func close() {
        readEnd.close()
        writeEnd.close()
    }

    /// splice(2) with SPLICE_F_MOVE | SPLICE_F_NONBLOCK: 0 at end of input.
    @inline(__always)
    public static func splice(from input: FileDescriptor, to output: FileDescriptor, count: Int) throws -> IOResult<Int> {
        try nonBlocking("splice") { cproxy_splice(input.rawValue, output.rawValue, count, 1 | 2) }
    }
}
