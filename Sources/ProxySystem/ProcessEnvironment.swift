import CProxySys
import Glibc

/// The process environment, read and written through libc.
public enum ProcessEnvironment {
    /// Every NAME=VALUE pair, in the order the block holds them.
    public static func snapshot() -> [(String, String)] {
        var pairs: [(String, String)] = []
        guard var cursor = cproxy_environ() else { return pairs }
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") {
                pairs.append((String(text[..<eq]), String(text[text.index(after: eq)...])))
            }
            cursor += 1
        }
        return pairs
    }

    /// Sets one variable.
    public static func set(_ name: String, _ value: String) { setenv(name, value, 1) }

    /// Makes the process environment equal to `pairs`.
    public static func replace(with pairs: [(String, String)]) {
        let wanted = Dictionary(pairs, uniquingKeysWith: { _, last in last })
        for (name, _) in snapshot() where wanted[name] == nil { unsetenv(name) }
        for (name, value) in pairs { setenv(name, value, 1) }
    }
}

/// Clocks for timing and deadlines.
public enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds.
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
