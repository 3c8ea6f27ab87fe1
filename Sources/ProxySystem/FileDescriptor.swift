import CProxySys
import Glibc

/// A raw file descriptor. A plain value: closing is explicit, never behind your back.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    public var description: String { "fd \(rawValue)" }

    /// open(2) with O_CLOEXEC added.
    public static func open(_ path: String, flags: Int32 = O_RDONLY, mode: mode_t = 0o644) throws -> FileDescriptor {
        let fd = try retryingOnInterrupt("open") { Glibc.open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(rawValue: fd)
    }

    /// close(2). EINTR is not retried: on Linux the descriptor is gone either way.
    public func close() {
        _ = Glibc.close(rawValue)
    }

    /// read(2) into `buffer`, retrying EINTR. Returns 0 at end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try retryingOnInterrupt("read") { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// write(2) of the whole buffer, retrying EINTR and short writes (blocking descriptors only).
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = try retryingOnInterrupt("write") {
                Glibc.write(rawValue, bytes.baseAddress! + offset, bytes.count - offset)
            }
            offset += n
        }
    }

    /// Writes a string's UTF-8 bytes.
    public func writeAll(_ text: String) throws {
        var copy = text
        try copy.withUTF8 { try writeAll(UnsafeRawBufferPointer($0)) }
    }

    public static let standardInput = FileDescriptor(rawValue: 0)
    public static let standardOutput = FileDescriptor(rawValue: 1)
    public static let standardError = FileDescriptor(rawValue: 2)
}
