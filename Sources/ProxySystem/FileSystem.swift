import CProxySys
import Glibc

/// Reading files and directories at load time (blocking, never on the data path).
public enum FileSystem {
    /// What a path names.
    public enum Kind: Sendable { case missing, regular, directory, other }

    /// stat(2) reduced to the kind of file.
    public static func kind(of path: String) -> Kind {
        var st = stat()
        if stat(path, &st) != 0 { return .missing }
        switch st.st_mode & S_IFMT {
        case S_IFREG: return .regular
        case S_IFDIR: return .directory
        default: return .other
        }
    }

    /// The whole file, refusing anything larger than `limit` bytes.
    public static func readFile(_ path: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path)
        defer { fd.close() }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try fd.read(into: $0) }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
            if result.count > limit { throw SystemError("read", code: EFBIG) }
        }
        return result
    }

    /// The names in a directory, without `.` and `..`, in no particular order.
    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError.last("opendir") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// A directory held open (O_PATH) so that names in it can be created, renamed and removed
/// later, from inside a chroot too. Every call is relative to it (the `*at` family).
public struct Directory: Sendable {
    public let fd: FileDescriptor
    /// The path it was opened with, for messages.
    public let path: String

    /// Opens the directory that holds `path`'s last component, and returns it with that name.
    public static func containing(_ path: String) throws -> (Directory, String) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return (try Directory.open(directory), name)
    }

    public static func open(_ path: String) throws -> Directory {
        let fd = cproxy_open_directory(path)
        if fd < 0 { throw SystemError.last("open") }
        return Directory(fd: FileDescriptor(rawValue: fd), path: path)
    }

    public func close() { fd.close() }

    /// Creates `name` (replacing a stale one) for writing.
    public func create(_ name: String, mode: mode_t = 0o644) throws -> FileDescriptor {
        try unlink(name)
        let raw = try retryingOnInterrupt("open") { openat(fd.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode) }
        return FileDescriptor(rawValue: raw)
    }

    /// renameat(2): `from` replaces `to` atomically.
    public func rename(_ from: String, to: String) throws {
        if renameat(fd.rawValue, from, fd.rawValue, to) != 0 { throw SystemError.last("rename") }
    }

    /// unlinkat(2); a name already gone is fine.
    public func unlink(_ name: String) throws {
        if unlinkat(fd.rawValue, name, 0) != 0 && cproxy_errno() != ENOENT { throw SystemError.last("unlink") }
    }

    public func changeMode(_ name: String, _ mode: UInt32) throws {
        if fchmodat(fd.rawValue, name, mode_t(mode), 0) != 0 { throw SystemError.last("chmod") }
    }

    /// fchownat(2); nil leaves that id unchanged.
    public func changeOwner(_ name: String, uid: UInt32?, gid: UInt32?) throws {
        if fchownat(fd.rawValue, name, uid ?? UInt32.max, gid ?? UInt32.max, 0) != 0 { throw SystemError.last("chown") }
    }

    /// The device and inode `name` refers to now, or nil.
    public func identity(_ name: String) -> FileIdentity? {
        var st = stat()
        guard fstatat(fd.rawValue, name, &st, 0) == 0 else { return nil }
        return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// True when the calling process (effective ids) may create and remove names in it.
    public var isWritable: Bool { faccessat(fd.rawValue, ".", W_OK | X_OK, AT_EACCESS) == 0 }
}

/// Which file a name refers to: its device and inode.
public struct FileIdentity: Equatable, Sendable {
    public let device: UInt64
    public let inode: UInt64
}
