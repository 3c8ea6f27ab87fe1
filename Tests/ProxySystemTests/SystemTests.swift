import Glibc
import Testing
@testable import ProxySystem

/// The syscall layer: each wrapper does its one call, and errors name it.
@Suite struct SystemCalls {
    @Test func directoryNamesAreCreatedRenamedAndRemoved() throws {
        var template = Array("/tmp/proxy-system-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        let d = try Directory.open(path)
        defer { d.close(); rmdir(path) }
        let fd = try d.create("a.tmp", mode: 0o600)
        try fd.writeAll("1234\n")
        fd.close()
        let before = d.identity("a.tmp")
        try d.rename("a.tmp", to: "a")
        #expect(d.identity("a") == before && before != nil && d.identity("a.tmp") == nil)
        #expect(try FileSystem.readFile(path + "/a") == Array("1234\n".utf8))
        try d.unlink("a")
        try d.unlink("a")   // already gone: fine
        #expect(d.isWritable)
        #expect(throws: SystemError.self) { try Directory.open(path + "/missing") }
    }

    @Test func unixPathsTooLongAreRefusedNotCut() {
        let long = "/tmp/" + String(repeating: "x", count: 120)
        #expect(throws: SystemError("bind", code: ENAMETOOLONG)) { _ = try SocketAddress(checkedUnixPath: long) }
        #expect((try? SocketAddress(checkedUnixPath: "/tmp/ok.sock"))?.unixPath == "/tmp/ok.sock")
    }

    /// Descriptors travel with their message, and who sent them is known.
    @Test func descriptorsAndCredentialsOverAUnixSocket() throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let a = FileDescriptor(rawValue: pair[0]), b = FileDescriptor(rawValue: pair[1])
        defer { a.close(); b.close() }
        let pipe = try Pipe.make()
        try UnixSocket.send(a, Array("hello".utf8), fds: [pipe.read.rawValue, pipe.write.rawValue])
        let (bytes, fds) = try UnixSocket.receive(b)
        #expect(bytes == Array("hello".utf8) && fds.count == 2)
        #expect(fds.allSatisfy { $0 != pipe.read.rawValue && $0 != pipe.write.rawValue })
        let peer = UnixSocket.peer(b)
        #expect(peer?.pid == getpid() && peer?.uid == getuid())
        for f in fds { FileDescriptor(rawValue: f).close() }
        pipe.read.close(); pipe.write.close()
    }

    @Test func aLockSerialises() throws {
        let counter = Locked(0)
        var threads: [pthread_t] = []
        for _ in 0..<4 { threads.append(try Threads.start { for _ in 0..<10_000 { counter.withLock { $0 += 1 } } }) }
        for t in threads { Threads.join(t) }
        #expect(counter.withLock { $0 } == 40_000)
    }

    @Test func errorsNameTheirCall() {
        #expect(throws: SystemError("open", code: ENOENT)) { _ = try FileDescriptor.open("/nonexistent/x") }
        #expect(SystemError("open", code: ENOENT).description == "open: No such file or directory")
        let (soft, hard) = ResourceLimits.openFiles()
        #expect(soft > 0 && soft <= hard)
        #expect(UserDatabase.user(named: "root")?.uid == 0 && UserDatabase.user(named: "no-such-user-xyz") == nil)
        #expect(UserDatabase.group(named: "root") == 0)
    }
}
