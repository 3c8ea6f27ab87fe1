import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// `proxy cli [-s SOCKET] [COMMAND...]`: the runtime API's client, so no socat is needed.
/// With a command (its words joined as HAProxy's CLI reads them), it prints the answer and
/// exits 0, or 1 for `Unknown command`, `Permission denied` or a failed reload (`Success=0`), or 2 when the socket cannot
/// be reached. Without one, it reads commands line by line behind a `proxy> ` prompt, with
/// line editing and history on a terminal (`LineEditor`). It
/// waits for long answers rather than cutting them short. A separate process: blocking
/// calls are fine here, no event loop runs.
enum CLIClient {
    static let usage = """
    Usage: proxy cli [-s SOCKET] [COMMAND...]
      -s SOCKET   a UNIX path, unix@PATH, abns@NAME, ipv4@HOST:PORT or HOST:PORT
                  (default: $PROXY_SOCKET, else /run/proxy/admin.sock)
      COMMAND     e.g. show info, or "disable server app/a; get weight app/a"

    """

    static func run(_ arguments: [String]) -> Int32 {
        var words = arguments[...]
        var socket = getenv("PROXY_SOCKET").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/run/proxy/admin.sock"
        while let first = words.first, first.hasPrefix("-"), first.count > 1 {
            words = words.dropFirst()
            switch first {
            case "-s":
                guard let value = words.popFirst() else { ProxyMain.printError("proxy cli: -s needs a socket\n" + usage); return 2 }
                socket = value
            case "-h", "--help":
                print(usage, terminator: "")
                return 0
            case "--":
                break
            default:
                ProxyMain.printError("proxy cli: unknown option '\(first)'\n" + usage)
                return 2
            }
            if first == "--" { break }
        }
        if !words.isEmpty { return ask(words.joined(separator: " "), socket: socket) }
        // Interactive: one connection per line, so a command that closes it (a reload on a
        // master CLI) leaves the next line unaffected.
        var worst: Int32 = 0
        let tty = isatty(0) == 1
        var editor = tty ? LineEditor() : nil
        while true {
            let read = editor != nil ? editor!.readLine(prompt: "proxy> ") : readLine()
            guard let line = read else { break }
            let trimmed = line.trimmingBlanks()
            if trimmed.isEmpty { continue }
            if trimmed == "quit" || trimmed == "exit" { break }
            worst = max(worst, ask(trimmed, socket: socket))
        }
        return worst
    }

    /// Sends one command line and prints the whole answer.
    static func ask(_ line: String, socket: String) -> Int32 {
        let text: String
        do { text = try exchange(line, socket: socket) } catch let e as SystemError {
            ProxyMain.printError("proxy cli: cannot reach the runtime API at \(socket): \(e.reason)\n")
            return 2
        } catch {
            ProxyMain.printError("proxy cli: \(error)\n")
            return 2
        }
        write(text)
        // A master's `reload` that failed is a failure too: `ExecReload=proxy cli ... reload`
        // makes `systemctl reload` say so.
        return text.hasPrefix("Unknown command") || text.contains("Permission denied") || text.hasPrefix("Success=0") ? 1 : 0
    }

    /// The runtime API closed the connection before the command was sent.
    struct Closed: Error, CustomStringConvertible {
        var description: String { "the runtime API closed the connection" }
    }

    /// Sends one command line and returns the whole answer (until the server closes).
    static func exchange(_ line: String, socket: String, timeoutMilliseconds: Int = 60_000) throws -> String {
        let fd = try connect(socket, timeoutMilliseconds: timeoutMilliseconds)
        defer { fd.close() }
        let bytes = Array((line + "\n").utf8)
        var sent = 0
        while sent < bytes.count {
            let r = bytes[sent...].withUnsafeBytes { try? Socket.write(fd, from: $0.baseAddress!, count: $0.count) }
            guard case .done(let n)? = r, n > 0 else { throw Closed() }
            sent += n
        }
        var answer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let r = chunk.withUnsafeMutableBytes { try? Socket.read(fd, into: $0.baseAddress!, count: $0.count) }
            guard case .done(let n)? = r, n > 0 else { break }
            answer += chunk[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// Writes to standard output now (unbuffered: a prompt shows before the line is read).
    static func write(_ text: String) {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.write(1, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            bytes = bytes.dropFirst(n)
        }
    }

    /// A blocking connection to the socket, waiting up to `timeoutMilliseconds` (60 s by
    /// default: a master CLI `reload` answers late) for each answer's bytes.
    static func connect(_ spec: String, timeoutMilliseconds: Int = 60_000) throws -> FileDescriptor {
        if spec.hasPrefix("abns@") { return try UnixSocket.connect(abstract: String(spec.dropFirst(5)), timeoutMilliseconds: timeoutMilliseconds) }
        if spec.hasPrefix("unix@") { return try UnixSocket.connect(path: String(spec.dropFirst(5)), timeoutMilliseconds: timeoutMilliseconds) }
        var inet = spec
        for prefix in ["ipv4@", "ipv6@", "tcp@"] where inet.hasPrefix(prefix) { inet = String(inet.dropFirst(prefix.count)) }
        if !inet.hasPrefix("/"), let colon = inet.lastIndex(of: ":"), let port = UInt16(inet[inet.index(after: colon)...]) {
            var host = String(inet[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard let ip = IPAddress(parsing: host.isEmpty ? "127.0.0.1" : host) else { throw SystemError("connect", code: EINVAL) }
            let address = ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: port) : SocketAddress(ipv6: ip.bytes16, port: port)
            let fd = try Socket.make(family: address.family)
            do {
                try Socket.setBlocking(fd, true)
                try Socket.setTimeouts(fd, milliseconds: timeoutMilliseconds)
                _ = try Socket.connect(fd, address)
            } catch {
                fd.close()
                throw error
            }
            return fd
        }
        return try UnixSocket.connect(path: spec, timeoutMilliseconds: timeoutMilliseconds)
    }
}
