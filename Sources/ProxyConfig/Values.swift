import ProxyRules

/// Parsers for the value forms config keywords share: times, integers, sizes.
enum Values {
    /// Longest timer HAProxy accepts: 2^31-1 ms (about 24.8 days).
    static let maxMilliseconds = Int(Int32.max)

    /// `100` (ms), `10s`, `1m`, `500us`, `2h`, `1d`.
    static func time(_ text: String, for what: String) throws -> Milliseconds {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        let unit = text.dropFirst(digits.count)
        guard !digits.isEmpty, let n = Int(digits) else {
            throw ConfigError("\(what): '\(text)' is not a time; write a number with an optional unit: us, ms, s, m, h, d (e.g. 30s)")
        }
        let ms: Int
        switch unit {
        case "", "ms": ms = n
        case "us": ms = (n + 999) / 1000
        case "s": ms = n.multipliedReportingOverflow(by: 1000).overflow ? Int.max : n * 1000
        case "m": ms = n.multipliedReportingOverflow(by: 60_000).overflow ? Int.max : n * 60_000
        case "h": ms = n.multipliedReportingOverflow(by: 3_600_000).overflow ? Int.max : n * 3_600_000
        case "d": ms = n.multipliedReportingOverflow(by: 86_400_000).overflow ? Int.max : n * 86_400_000
        default:
            throw ConfigError("\(what): unknown time unit '\(unit)' in '\(text)'; use us, ms, s, m, h or d")
        }
        if ms > maxMilliseconds {
            throw ConfigError("\(what): '\(text)' is too long; the maximum is 2147483647ms (about 24.8 days)")
        }
        return ms
    }

    /// A non-negative integer within `range`.
    static func integer(_ text: String, for what: String, in range: ClosedRange<Int> = 0...Int(Int32.max)) throws -> Int {
        guard let n = Int(text) else {
            throw ConfigError("\(what): '\(text)' is not an integer")
        }
        guard range.contains(n) else {
            throw ConfigError("\(what): \(n) is out of range; it must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return n
    }

    /// A size in bytes with an optional k, m or g suffix.
    static func size(_ text: String, for what: String) throws -> Int {
        let lower = text.lowercased()
        var multiplier = 1
        var digits = Substring(lower)
        if let last = lower.last, "kmg".contains(last) {
            multiplier = last == "k" ? 1024 : last == "m" ? 1 << 20 : 1 << 30
            digits = digits.dropLast()
        }
        guard let n = Int(digits), n >= 0, n <= Int(Int32.max) / multiplier else {
            throw ConfigError("\(what): '\(text)' is not a size; write bytes, optionally with k, m or g")
        }
        return n * multiplier
    }

    /// Exactly `count` arguments after the keyword words, or an error naming the form.
    static func expect(_ args: ArraySlice<String>, _ count: Int, usage: String) throws {
        if args.count < count { throw ConfigError("missing argument; the form is '\(usage)'") }
        if args.count > count {
            throw ConfigError("unexpected '\(args[args.startIndex + count])'; the form is '\(usage)'")
        }
    }
}
