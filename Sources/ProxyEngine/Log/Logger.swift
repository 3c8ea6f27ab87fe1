import ProxyConfig
import ProxyRules
import ProxySystem
import Synchronization
import Glibc

/// Sends log lines to stdout, stderr, syslog over UDP, or a UNIX datagram socket, without
/// ever blocking a loop: every target is opened at start-up (before chroot; names resolved
/// at load), every write is non-blocking, and a line that cannot go at once is dropped and
/// counted. Levels (`max`, `min`), `sample`, `len` and the eight HAProxy formats apply per
/// `log` line. Nothing on this path takes a lock.
public final class Logger: @unchecked Sendable {
    /// Where one target's bytes go.
    final class Sink: @unchecked Sendable {
        enum Kind {
            /// A datagram socket: sendto with MSG_DONTWAIT.
            case datagram(FileDescriptor, SocketAddress)
            /// A stream socket (journald's stdout): send with MSG_DONTWAIT.
            case streamSocket(FileDescriptor)
            /// A pipe, terminal or file, through a descriptor of our own made non-blocking.
            case file(FileDescriptor)
        }
        let kind: Kind
        init(_ kind: Kind) { self.kind = kind }

        /// Writes the whole line, or nothing; false when it could not go now.
        func write(_ p: UnsafeRawBufferPointer) -> Bool {
            switch kind {
            case .datagram(let fd, let a): return Socket.sendNow(fd, p, to: a)
            case .streamSocket(let fd): return Socket.sendNow(fd, p)
            case .file(let fd): return fd.writeNow(p)
            }
        }
    }

    /// A `log` line's counter for `sample`.
    final class Counter: @unchecked Sendable {
        let value = Atomic<Int>(0)
    }

    let globalTargets: [LogDestination]
    private var sinks: [LogDestination.Address: Sink] = [:]
    private var counters: [LogDestination: Counter] = [:]
    /// Where events (server up/down, resource alarms) also go, as HAProxy prints them.
    private let standardError: Sink
    /// Lines dropped because a target was not ready (`show info`'s DroppedLogs).
    public let dropped = Atomic<Int>(0)
    let hostname: String
    let pid = ProcessCalls.pid
    /// Problems found while opening the targets, for the start-up to report.
    public private(set) var notes: [String] = []
    /// Descriptors of our own opened on stdout or stderr, which a daemon points at /dev/null.
    private var standardStreamCopies: [FileDescriptor] = []

    /// Opens every target the configuration names. Call it before any chroot: a stream is
    /// reopened through /proc/self/fd to get a non-blocking descriptor of our own.
    public init(configuration: Configuration) {
        globalTargets = configuration.global.logs.compactMap { if case .target(let d) = $0 { return d } else { return nil } }
        hostname = ProcessCalls.hostname
        var notes: [String] = []
        var copies: [FileDescriptor] = []
        standardError = Self.stream(2, notes: &notes, copies: &copies)
        var all = globalTargets
        for p in configuration.proxies {
            for t in p.settings.logs { if case .target(let d) = t { all.append(d) } }
        }
        for d in all {
            if d.sample != nil, counters[d] == nil { counters[d] = Counter() }
            guard sinks[d.address] == nil else { continue }
            switch d.address {
            case .stdout: sinks[d.address] = Self.stream(1, notes: &notes, copies: &copies)
            case .stderr: sinks[d.address] = standardError
            case .fd(let n): sinks[d.address] = Self.stream(n, notes: &notes, copies: &copies)
            case .udp(let host, let ip, let port):
                guard let ip = ip ?? IPAddress(parsing: host) else {
                    notes.append("log \(host):\(port): the name was not resolved at load; this target is skipped")
                    continue
                }
                let a = ip.isV4 ? SocketAddress(ipv4: ip.v4Value, port: UInt16(port)) : SocketAddress(ipv6: ip.bytes16, port: UInt16(port))
                do { sinks[d.address] = Sink(.datagram(try Socket.make(family: a.family, type: Int32(SOCK_DGRAM.rawValue)), a)) } catch {
                    notes.append("log \(host):\(port): \(error); this target is skipped")
                }
            case .unix(let path):
                do {
                    let a = try SocketAddress(checkedUnixPath: path)
                    sinks[d.address] = Sink(.datagram(try Socket.make(family: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue)), a))
                } catch {
                    notes.append("log \(path): \(error); this target is skipped")
                }
            }
        }
        self.notes = notes
        standardStreamCopies = copies
    }

    /// A daemon detaches from its terminal: our own copies of stdout and stderr go to
    /// /dev/null too, so nothing keeps the terminal (or a caller's pipe) open.
    public func detachStandardStreams() {
        for fd in standardStreamCopies { try? ProcessCalls.redirectToNull(fd) }
    }

    /// A non-blocking way to write to descriptor `n` without changing it for anyone else
    /// (O_NONBLOCK on fd 1 would also change the terminal or pipe for the parent shell).
    static func stream(_ n: Int32, notes: inout [String], copies: inout [FileDescriptor]) -> Sink {
        let fd = FileDescriptor(rawValue: n)
        switch fd.kind {
        case .socket:
            return Sink(.streamSocket(fd))
        case .pipe, .characterDevice:
            if let own = try? fd.reopen() {
                if n <= 2 { copies.append(own) }
                return Sink(.file(own))
            }
            notes.append("log fd@\(n): cannot open a non-blocking descriptor of its own (/proc missing?); writes to it may wait")
            return Sink(.file(fd))
        default:
            return Sink(.file(fd))
        }
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

    static let facilities = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
                             "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
                             "local5", "local6", "local7"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// Sends `message` (one line, no newline) to each destination at `level`.
    func log(_ message: String, to destinations: [LogDestination], level: LogLevel = .info) {
        for d in destinations {
            guard level <= d.maxLevel, let sink = sinks[d.address] else { continue }
            if let sample = d.sample, let counter = counters[d] {
                let position = counter.value.wrappingAdd(1, ordering: .relaxed).oldValue % sample.size + 1
                guard sample.ranges.contains(where: { $0.contains(position) }) else { continue }
            }
            let sent = max(level, d.minLevel)
            var line = header(d, level: sent) + message
            if let max = d.length, line.utf8.count > max { line = String(decoding: line.utf8.prefix(max), as: UTF8.self) }
            line += "\n"
            let ok = line.withUTF8 { sink.write(UnsafeRawBufferPointer($0)) }
            if !ok { dropped.add(1, ordering: .relaxed) }
        }
    }

    /// The header a format puts before the message.
    func header(_ d: LogDestination, level: LogLevel) -> String {
        let facility = Self.facilities.firstIndex(of: d.facility) ?? 16
        let pri = facility * 8 + level.rawValue
        switch d.format {
        case .local: return "<\(pri)>\(syslogTime()) proxy[\(pid)]: "
        case .rfc3164: return "<\(pri)>\(syslogTime()) localhost proxy[\(pid)]: "
        case .rfc5424: return "<\(pri)>1 \(isoTime()) - proxy \(pid) - - "
        case .priority: return "<\(pri)>"
        case .short: return "<\(level.rawValue)>"
        case .timed: return "<\(level.rawValue)>\(isoTime()) "
        case .iso: return "\(isoTime()) "
        case .raw: return ""
        }
    }

    /// `Nov 30 06:47:37`, local time, day padded with a space.
    func syslogTime() -> String {
        var t = time(nil)
        var tm = Glibc.tm()
        localtime_r(&t, &tm)
        let day = tm.tm_mday < 10 ? " \(tm.tm_mday)" : "\(tm.tm_mday)"
        return "\(Self.months[Int(tm.tm_mon)]) \(day) \(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))"
    }

    /// `2026-11-30T06:47:38.000264+00:00`: local time, microseconds, offset.
    func isoTime() -> String {
        let (s, us) = Clock.wallClock()
        var t = time_t(s)
        var tm = Glibc.tm()
        localtime_r(&t, &tm)
        let offset = tm.tm_gmtoff
        let sign = offset < 0 ? "-" : "+"
        let o = abs(offset)
        let micro = String(us).leftPaddedWithZeros(6)
        return "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)).\(micro)\(sign)\(two(Int32(o / 3600))):\(two(Int32(o / 60 % 60)))"
    }

    /// `25/Nov/2026:01:14:25.123`, as HAProxy's `%tr`.
    public static func acceptDate(seconds: Int, microseconds: Int) -> String {
        var t = time_t(seconds)
        var tm = Glibc.tm()
        localtime_r(&t, &tm)
        let ms = microseconds / 1000
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(two(tm.tm_mday))/\(months[Int(tm.tm_mon)])/\(tm.tm_year + 1900):\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)).\(msText)"
    }

    /// An event (a server going down, a resource alarm): on stderr, as HAProxy prints it,
    /// and to `destinations` at `level`. Never blocks.
    public func alert(_ message: String, level: LogLevel = .alert, to destinations: [LogDestination] = []) {
        let line = "[proxy \(pid)] " + message + "\n"
        let ok = line.utf8.withContiguousStorageIfAvailable { standardError.write(UnsafeRawBufferPointer($0)) } ?? false
        if !ok { dropped.add(1, ordering: .relaxed) }
        if !destinations.isEmpty { log(message, to: destinations, level: level) }
    }
}

@inline(__always) func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }

extension String {
    func leftPaddedWithZeros(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
