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
