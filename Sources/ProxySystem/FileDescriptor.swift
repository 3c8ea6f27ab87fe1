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

    /// One non-blocking write of the whole buffer: false when it could not all go now.
    @inline(__always)
    public func writeNow(_ bytes: UnsafeRawBufferPointer) -> Bool {
        Glibc.write(rawValue, bytes.baseAddress, bytes.count) == bytes.count
    }

    /// What kind of file it is (fstat).
    public var kind: FileKind {
        var st = stat()
        guard fstat(rawValue, &st) == 0 else { return .unknown }
        switch st.st_mode & S_IFMT {
        case S_IFSOCK: return .socket
        case S_IFIFO: return .pipe
        case S_IFCHR: return .characterDevice
        case S_IFREG: return .regular
        default: return .unknown
        }
    }

    /// A new, private open file description for the same file (through /proc/self/fd), so
    /// that flags such as O_NONBLOCK change nothing for others sharing this one.
    public func reopen(writeOnly: Bool = true, nonBlocking: Bool = true) throws -> FileDescriptor {
        let flags = (writeOnly ? O_WRONLY | O_APPEND : O_RDONLY) | (nonBlocking ? O_NONBLOCK : 0) | O_CLOEXEC
        let fd = try retryingOnInterrupt("open") { Glibc.open("/proc/self/fd/\(rawValue)", flags) }
        return FileDescriptor(rawValue: fd)
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

/// The kinds of file a descriptor may refer to, as far as writing to it goes.
public enum FileKind: Sendable {
    case socket, pipe, characterDevice, regular, unknown
}
