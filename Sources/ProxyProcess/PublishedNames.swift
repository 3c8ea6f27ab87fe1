import ProxySystem
import Glibc

/// A name prepared under a temporary name and published by one rename at the point of no
/// return: the pidfile and the UNIX stats sockets. Until then the old names stand.
struct NameChange {
    let directory: Directory
    let temporary: String
    let name: String

    func publish() throws { try directory.rename(temporary, to: name) }
    func discard() { try? directory.unlink(temporary) }
}

/// The pidfile, written to `NAME.PID.tmp` beside its final name.
struct PidFile {
    let change: NameChange

    /// Opens the pidfile's directory (kept, so the rename works after chroot) and writes the
    /// pid under the temporary name.
    static func prepare(_ path: String, pid: Int32) throws -> PidFile {
        let (directory, name) = try Directory.containing(path)
        let temporary = "\(name).\(pid).tmp"
        do {
            let fd = try directory.create(temporary)
            defer { fd.close() }
            try fd.writeAll("\(pid)\n")
        } catch {
            try? directory.unlink(temporary)
            directory.close()
            throw error
        }
        return PidFile(change: NameChange(directory: directory, temporary: temporary, name: name))
    }
}

/// Publishes names on behalf of a process that has given up root. Renaming in a directory
/// such as /run needs root, but privileges are dropped before the point of no return; so a
/// helper is forked while still root and single-threaded. It waits on a pipe and does only
/// this: at `commit` it performs the renames and reports any error; if the pipe closes
/// without a commit (a failed start, or the process died) it removes the temporary names.
final class PrivilegedRenamer {
    private let child: Int32
    private let command: FileDescriptor
    private let report: FileDescriptor

    init(_ changes: [NameChange]) throws {
        let toChild = try Pipe.make()
        let fromChild: (read: FileDescriptor, write: FileDescriptor)
        do { fromChild = try Pipe.make() } catch {
            toChild.read.close(); toChild.write.close()
            throw error
        }
        switch try ProcessCalls.fork() {
        case .child:
            toChild.write.close()
            fromChild.read.close()
            var byte: UInt8 = 0
            let n = withUnsafeMutableBytes(of: &byte) { (try? toChild.read.read(into: $0)) ?? 0 }
            var errors = ""
            for c in changes {
                if n == 1 && byte == UInt8(ascii: "c") {
                    do { try c.publish() } catch let e as SystemError {
                        errors += "cannot rename '\(c.temporary)' to '\(c.name)' in \(c.directory.path): \(e.reason)\n"
                    } catch {}
                } else {
                    c.discard()
                }
            }
            try? fromChild.write.writeAll(errors)
            ProcessCalls.exitNow(0)
        case .parent(let pid):
            toChild.read.close()
            fromChild.write.close()
            child = pid
            command = toChild.write
            report = fromChild.read
        }
    }

    /// Asks the helper to publish; returns its errors (empty on success). Never throws.
    func commit() -> [String] {
        var c = UInt8(ascii: "c")
        _ = try? withUnsafeBytes(of: &c) { try command.writeAll($0) }
        command.close()
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while let n = try? chunk.withUnsafeMutableBytes({ try report.read(into: $0) }), n > 0 { text += chunk[0..<n] }
        report.close()
        ProcessCalls.wait(for: child)
        return String(decoding: text, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// A failed start: the helper removes the temporary names.
    func abort() {
        command.close()
        report.close()
        ProcessCalls.wait(for: child)
    }
}
