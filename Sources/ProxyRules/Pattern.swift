/// How an ACL compares samples with its patterns (`-m` values).
public enum MatchMethod: String, Sendable, CaseIterable {
    case found, boolean = "bool", integer = "int", ip, length = "len", string = "str"
    case substring = "sub", regex = "reg", beginning = "beg", ending = "end"
    case directory = "dir", domain = "dom"

    /// The method an ACL uses when none is given, from the sample type.
    static func natural(for type: SampleType) -> MatchMethod {
        switch type {
        case .boolean: return .boolean
        case .integer: return .integer
        case .ip: return .ip
        case .string, .any: return .string
        }
    }

    /// Whether patterns are strings compared byte-wise.
    var isTextual: Bool {
        switch self {
        case .string, .substring, .beginning, .ending, .directory, .domain: return true
        default: return false
        }
    }
}

/// An inclusive integer range; `gt 3` is `4...max`.
public struct IntegerRange: Equatable, Sendable {
    public var low: Int64
    public var high: Int64
    @inline(__always) func contains(_ v: Int64) -> Bool { v >= low && v <= high }
}

/// The compiled patterns of one ACL term: lowered for `-i`, integers and networks parsed at load.
public struct PatternSet: Sendable {
    public private(set) var method: MatchMethod
    public private(set) var ignoreCase: Bool
    var strings: [[UInt8]] = []
    var ranges: [IntegerRange] = []
    var networks: [IPNetwork] = []
    var regexes: [PosixRegex] = []
    /// The patterns as written, for messages and `-V`.
    public private(set) var sources: [String] = []

    public var isEmpty: Bool { sources.isEmpty }

    public init(method: MatchMethod, ignoreCase: Bool) {
        self.method = method
        self.ignoreCase = ignoreCase
    }

    /// Integer comparison operators, applying to the values after them.
    enum Operator: String { case eq, ge, gt, le, lt }

    /// Adds one pattern as written (the runtime API's `get acl` tries them one by one).
    public mutating func add(_ text: String) throws { try add(text, operator: nil) }

    /// Adds one pattern as written; `op` applies to integer methods.
    mutating func add(_ text: String, operator op: Operator?) throws {
        switch method {
        case .found, .boolean:
            // HAProxy accepts and ignores values here.
            break
        case .integer, .length:
            ranges.append(try Self.parseRange(text, op))
        case .ip:
            guard let net = IPNetwork(parsing: text) else {
                throw RuleError("'\(text)' is not an IP address or network")
            }
            networks.append(net)
        case .regex:
            do { regexes.append(try PosixRegex(text, caseInsensitive: ignoreCase)) } catch let e as PosixRegex.CompileError {
                throw RuleError("regex '\(text)' does not compile: \(e.description)")
            }
        case .string:
            let bytes = ignoreCase ? Array(text.lowercased().utf8) : Array(text.utf8)
            let at = Self.insertionIndex(of: bytes, in: strings)
            strings.insert(bytes, at: at)
        case .substring, .beginning, .ending, .directory, .domain:
            var bytes = ignoreCase ? Array(text.lowercased().utf8) : Array(text.utf8)
            if method == .directory || method == .domain {
                let sep: Set<UInt8> = method == .directory ? [0x2f] : [0x2e, 0x2f]
                while let f = bytes.first, sep.contains(f) { bytes.removeFirst() }
                while let l = bytes.last, sep.contains(l) { bytes.removeLast() }
            }
            strings.append(bytes)
        }
        if op != nil, method != .integer, method != .length {
            throw RuleError("operator '\(op!.rawValue)' needs integer matching (-m int)")
        }
        sources.append(op.map { "\($0.rawValue) \(text)" } ?? text)
    }

    static func parseRange(_ text: String, _ op: Operator?) throws -> IntegerRange {
        func int(_ s: Substring) throws -> Int64 {
            guard let v = Int64(s) else { throw RuleError("'\(text)' is not an integer or range (lo:hi)") }
            return v
        }
        if let colon = text.firstIndex(of: ":") {
            let lo = text[..<colon], hi = text[text.index(after: colon)...]
            let low = lo.isEmpty ? Int64.min : try int(lo)
            let high = hi.isEmpty ? Int64.max : try int(hi)
            if low > high { throw RuleError("range '\(text)' is empty: \(low) > \(high)") }
            return IntegerRange(low: low, high: high)
        }
        let v = try int(Substring(text))
        switch op ?? .eq {
        case .eq: return IntegerRange(low: v, high: v)
        case .ge: return IntegerRange(low: v, high: .max)
        case .gt: return IntegerRange(low: v == .max ? .max : v + 1, high: v == .max ? .min : .max)
        case .le: return IntegerRange(low: .min, high: v)
        case .lt: return IntegerRange(low: v == .min ? .max : .min, high: v == .min ? .min : v - 1)
        }
    }

    // MARK: matching (no allocation except for regex and `-m ip` on strings)

    /// True when the (converted) sample matches any pattern.
    @inline(__always)
    public func matches(_ sample: Sample, fold: CaseFold) -> Bool {
        switch method {
        case .found: return true
        case .boolean:
            switch sample {
            case .boolean(let b): return b
            case .bytes(let p): return !p.isEmpty
            default: return sample.integerValue != 0
            }
        case .integer:
            let v = sample.integerValue
            for r in ranges where r.contains(v) { return true }
            return false
        case .length:
            guard case .bytes(let p) = sample else { return false }
            for r in ranges where r.contains(Int64(p.count)) { return true }
            return false
        case .ip:
            let address: IPAddress
            switch sample {
            case .ip(let a): address = a
            case .bytes(let p):
                guard let a = IPAddress(parsing: String(decoding: p, as: UTF8.self)) else { return false }
                address = a
            default: return false
            }
            for n in networks where n.contains(address) { return true }
            return false
        case .regex:
            let text: String
            switch sample {
            case .bytes(let p): text = String(decoding: p.map { fold.apply($0) }, as: UTF8.self)
            case .integer(let i): text = String(i)
            case .boolean(let b): text = b ? "1" : "0"
            case .ip(let a): text = a.description
            }
            for r in regexes where r.matches(text) { return true }
            return false
        default:
            switch sample {
            case .bytes(let p): return matchText(p, fold: fold)
            case .integer(let i):
                let digits = Array(String(i).utf8)
                return digits.withUnsafeBytes { matchText($0, fold: .none) }
            case .boolean(let b):
                return [b ? UInt8(ascii: "1") : UInt8(ascii: "0")].withUnsafeBytes { matchText($0, fold: .none) }
            case .ip(let a):
                let text = Array(a.description.utf8)
                return text.withUnsafeBytes { matchText($0, fold: .none) }
            }
        }
    }

    @inline(__always)
    private func byte(_ p: UnsafeRawBufferPointer, _ i: Int, _ fold: CaseFold) -> UInt8 {
        let b = fold.apply(p[i])
        return ignoreCase ? CaseFold.lower.apply(b) : b
    }

    private func equal(_ p: UnsafeRawBufferPointer, at offset: Int, _ pattern: [UInt8], _ fold: CaseFold) -> Bool {
        if offset < 0 || offset + pattern.count > p.count { return false }
        for j in 0..<pattern.count where byte(p, offset + j, fold) != pattern[j] { return false }
        return true
    }

    /// Lexicographic order of the folded sample against a pattern: <0, 0, >0.
    private func compare(_ p: UnsafeRawBufferPointer, _ s: [UInt8], _ fold: CaseFold) -> Int {
        let n = min(p.count, s.count)
        for i in 0..<n {
            let a = byte(p, i, fold)
            if a != s[i] { return a < s[i] ? -1 : 1 }
        }
        return p.count - s.count
    }

    static func insertionIndex(of bytes: [UInt8], in sorted: [[UInt8]]) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let mid = (low + high) / 2
            if sorted[mid].lexicographicallyPrecedes(bytes) { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private func matchText(_ p: UnsafeRawBufferPointer, fold: CaseFold) -> Bool {
        switch method {
        case .string:
            // `strings` is sorted: binary search, comparing folded sample bytes in place.
            var low = 0, high = strings.count
            while low < high {
                let mid = (low + high) / 2
                let c = compare(p, strings[mid], fold)
                if c == 0 { return true }
                if c < 0 { high = mid } else { low = mid + 1 }
            }
            return false
        case .beginning:
            for s in strings where equal(p, at: 0, s, fold) { return true }
            return false
        case .ending:
            for s in strings where equal(p, at: p.count - s.count, s, fold) { return true }
            return false
        case .substring:
            for s in strings {
                if s.isEmpty { return true }
                if p.count >= s.count {
                    for start in 0...(p.count - s.count) where equal(p, at: start, s, fold) { return true }
                }
            }
            return false
        case .directory, .domain:
            let domain = method == .domain
            func isDelimiter(_ b: UInt8) -> Bool {
                if b == 0x2f { return true }
                return domain && (b == 0x2e || b == 0x3a || b == 0x3f)
            }
            for s in strings where !s.isEmpty && p.count >= s.count {
                for start in 0...(p.count - s.count) where equal(p, at: start, s, fold) {
                    let before = start == 0 || isDelimiter(p[start - 1])
                    let end = start + s.count
                    let after = end == p.count || isDelimiter(p[end])
                    if before && after { return true }
                }
            }
            return false
        default:
            return false
        }
    }
}
