import ProxyConfig
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// Writes log lines to stdout, stderr or syslog over UDP/UNIX datagrams without blocking:
/// a line that cannot be sent at once is dropped and counted.
public final class Logger: @unchecked Sendable {
    struct Target {
        let destination: LogDestination
        let fd: Int32
        let address: SocketAddress?
    }
    let globalTargets: [LogDestination]
    private let sinks = Mutex<[String: Target]>([:])
    /// Lines dropped because a target was not ready.
    public let dropped = Atomic<Int>(0)
    let hostname: String
    let pid = getpid()

    init(global: [LogTarget]) {
        globalTargets = global.compactMap { if case .target(let d) = $0 { return d } else { return nil } }
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, 255)
        hostname = String(cChars: name)
    }

    /// The destinations a proxy logs to (`log global` expands to the global ones).
    func destinations(for logs: [LogTarget]) -> [LogDestination] {
        logs.flatMap { t -> [LogDestination] in
            switch t {
            case .global: return globalTargets
            case .target(let d): return [d]
            }
        }
    }

    private func target(for d: LogDestination) -> Target? {
        let key = "\(d.address)"
        return sinks.withLock { table -> Target? in
            if let t = table[key] { return t }
            var t: Target?
            switch d.address {
            case .stdout: t = Target(destination: d, fd: 1, address: nil)
            case .stderr: t = Target(destination: d, fd: 2, address: nil)
            case .fd(let n): t = Target(destination: d, fd: n, address: nil)
            case .udp(let host, let port):
                if let ip = IPAddress(parsing: host) ?? RuntimeBackend.resolveName(host),
                   let a = try? RuntimeBackend.resolve(ServerAddress(host: .ip(ip), port: port)),
                   let fd = try? Socket.make(family: a.family, type: Int32(SOCK_DGRAM.rawValue)) {
                    t = Target(destination: d, fd: fd.rawValue, address: a)
                }
            case .unix(let path):
                if let fd = try? Socket.make(family: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue)) {
                    t = (try? SocketAddress(checkedUnixPath: path)).map { Target(destination: d, fd: fd.rawValue, address: $0) }
                }
            }
            if let t { table[key] = t }
            return t
        }
    }

    static let facilities = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
                             "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
                             "local5", "local6", "local7"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Sends `message` (one line, no newline) to each destination at `level` (6 = info).
    func log(_ message: String, to destinations: [LogDestination], level: Int = 6) {
        for d in destinations {
            guard let t = target(for: d) else { continue }
            let facility = Self.facilities.firstIndex(of: d.facility) ?? 16
            let pri = facility * 8 + level
            var line: String
            switch d.format {
            case .raw: line = message
            case .short: line = "<\(pri)>" + message
            case .rfc5424:
                line = "<\(pri)>1 \(isoTime()) \(hostname) proxy \(pid) - - " + message
            default:
                line = "<\(pri)>\(syslogTime()) proxy[\(pid)]: " + message
            }
            if let max = d.length, line.utf8.count > max { line = String(decoding: line.utf8.prefix(max), as: UTF8.self) }
            line += "\n"
            let sent: Int = line.withCString { p in
                let n = strlen(p)
                if let a = t.address {
                    return a.withSockAddr { sendto(t.fd, p, n, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL), $0, $1) }
                }
                return Glibc.write(t.fd, p, n)
            }
            if sent < 0 { dropped.add(1, ordering: .relaxed) }
        }
    }

    func syslogTime() -> String {
        var t = time(nil)
        var tm = Glibc.tm()
        localtime_r(&t, &tm)
        let day = tm.tm_mday < 10 ? " \(tm.tm_mday)" : "\(tm.tm_mday)"
        return "\(Self.months[Int(tm.tm_mon)]) \(day) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))"
    }

    func isoTime() -> String {
        let (s, us) = Clock.wallClock()
        var t = time_t(s)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)).\(us / 1000)Z"
    }

    /// `25/Nov/2026:01:14:25.123`, as HAProxy's `%tr`.
    static func acceptDate(seconds: Int, microseconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        localtime_r(&t, &tm)
        let ms = microseconds / 1000
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(two(tm.tm_mday))/\(months[Int(tm.tm_mon)])/\(tm.tm_year + 1900):\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)).\(msText)"
    }

    /// A line on stderr for events such as "proxy started" (not traffic).
    public func alert(_ message: String) {
        let line = "[proxy \(pid)] " + message + "\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}

@inline(__always) func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
