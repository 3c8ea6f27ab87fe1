/// A value produced by a fetch at run time. Strings are borrowed bytes: nothing is copied.
public enum Sample {
    case boolean(Bool)
    case integer(Int64)
    case bytes(UnsafeRawBufferPointer)
    case ip(IPAddress)
}

/// A letter-case change that a converter applies while matching, without copying the sample.
public enum CaseFold: Sendable {
    case none, lower, upper

    @inline(__always)
    public func apply(_ b: UInt8) -> UInt8 {
        switch self {
        case .none: return b
        case .lower: return (b >= 0x41 && b <= 0x5a) ? b | 0x20 : b
        case .upper: return (b >= 0x61 && b <= 0x7a) ? b & ~0x20 : b
        }
    }
}

/// A converter in a sample expression (`,lower`, `,add(3)`...).
public enum Converter: Equatable, Sendable, CustomStringConvertible {
    case lower, upper, bool
    case add(Int64), sub(Int64), mul(Int64), div(Int64)
    /// `map(FILE[,DEFAULT])` and the other `map_*` forms.
    case map(MapLookup)
    /// `cut_crlf`: the text up to its first CR or LF.
    case cutCRLF
    /// `ltrim(CHARS)`, `rtrim(CHARS)`: those bytes taken off the start, or the end.
    case leftTrim([UInt8]), rightTrim([UInt8])
    /// Integer operations: `and`, `or`, `xor`, `mod` with a constant; `neg`, `cpl`.
    case and(Int64), or(Int64), xor(Int64), mod(Int64), neg, cpl
    /// Integer tests, to a boolean: `even`, `odd`, `not`.
    case even, odd, not
    /// `length`: a string's length in bytes.
    case length
    /// `bytes(OFFSET[,LENGTH])`: part of the bytes.
    case bytes(offset: Int, length: Int?)
    /// `field(INDEX,DELIMITERS[,COUNT])` and `word(...)`: fields (every delimiter splits) or
    /// words (runs of delimiters split, those at either end ignored), counted from the start
    /// (1...) or the end (-1...); COUNT of them (0: all the rest), with what lies between.
    case field(index: Int, delimiters: [UInt8], count: Int, words: Bool)

    public var description: String {
        switch self {
        case .lower: return "lower"
        case .upper: return "upper"
        case .bool: return "bool"
        case .add(let n): return "add(\(n))"
        case .sub(let n): return "sub(\(n))"
        case .mul(let n): return "mul(\(n))"
        case .div(let n): return "div(\(n))"
        case .map(let m): return m.description
        case .cutCRLF: return "cut_crlf"
        case .leftTrim(let c): return "ltrim(\(String(decoding: c, as: UTF8.self)))"
        case .rightTrim(let c): return "rtrim(\(String(decoding: c, as: UTF8.self)))"
        case .and(let n): return "and(\(n))"
        case .or(let n): return "or(\(n))"
        case .xor(let n): return "xor(\(n))"
        case .mod(let n): return "mod(\(n))"
        case .neg: return "neg"
        case .cpl: return "cpl"
        case .even: return "even"
        case .odd: return "odd"
        case .not: return "not"
        case .length: return "length"
        case .bytes(let o, let l): return "bytes(\(o)\(l.map { ",\($0)" } ?? ""))"
        case .field(let i, let d, let c, let words): return "\(words ? "word" : "field")(\(i),\(String(decoding: d, as: UTF8.self)),\(c))"
        }
    }

    static let names = ["lower", "upper", "bool", "add", "sub", "mul", "div", "map", "cut_crlf", "ltrim", "rtrim",
                        "and", "or", "xor", "mod", "neg", "cpl", "even", "odd", "not", "length", "bytes", "field", "word"]

    /// Parses one converter call, e.g. `add(2)`.
    static func parse(_ text: String) throws -> Converter {
        let (name, args) = try FetchRegistry.splitCall(text, what: "converter")
        func noArgs(_ c: Converter) throws -> Converter {
            if let a = args, !a.isEmpty { throw RuleError("converter '\(name)' takes no argument") }
            return c
        }
        func intArg() throws -> Int64 {
            guard let a = args, a.count == 1, let v = Int64(a[0]) else {
                if let a = args, a.count == 1, a[0].contains(".") {
                    throw RuleError("converter '\(name)': a variable as the argument ('\(a[0])') is not supported yet; give an integer")
                }
                throw RuleError("converter '\(name)' takes one integer argument, e.g. \(name)(1)")
            }
            return v
        }
        switch name {
        case "lower": return try noArgs(.lower)
        case "upper": return try noArgs(.upper)
        case "bool": return try noArgs(.bool)
        case "add": return .add(try intArg())
        case "sub": return .sub(try intArg())
        case "mul": return .mul(try intArg())
        case "div":
            return .div(try intArg())
        case "cut_crlf": return try noArgs(.cutCRLF)
        case "and": return .and(try intArg())
        case "or": return .or(try intArg())
        case "xor": return .xor(try intArg())
        case "mod": return .mod(try intArg())
        case "neg": return try noArgs(.neg)
        case "cpl": return try noArgs(.cpl)
        case "even": return try noArgs(.even)
        case "odd": return try noArgs(.odd)
        case "not": return try noArgs(.not)
        case "length": return try noArgs(.length)
        case "bytes":
            guard let a = args, (1...2).contains(a.count), let o = Int(a[0]), o >= 0, a.count == 1 || Int(a[1]).map({ $0 >= 0 }) == true else {
                throw RuleError("converter 'bytes' takes an offset and an optional length, integers >= 0: bytes(<offset>[,<length>])")
            }
            return .bytes(offset: o, length: a.count == 2 ? Int(a[1]) : nil)
        case "field", "word":
            // Within 32 bits, as HAProxy keeps them; the delimiters may be quoted.
            let limit = Int(Int32.max)
            guard let a = args, (2...3).contains(a.count), let i = Int(a[0]), i != 0, (-limit...limit).contains(i), !a[1].isEmpty,
                  a.count == 2 || Int(a[2]).map({ (0...limit).contains($0) }) == true else {
                throw RuleError("converter '\(name)' takes an index (1... from the start, -1... from the end), delimiters and an optional count (0: all the rest): \(name)(<index>,<delimiters>[,<count>])")
            }
            var delimiters = a[1]
            if delimiters.count >= 2, let q = delimiters.first, q == "'" || q == "\"", delimiters.last == q { delimiters = String(delimiters.dropFirst().dropLast()) }
            guard !delimiters.isEmpty else { throw RuleError("converter '\(name)' needs at least one delimiter") }
            return .field(index: i, delimiters: Array(delimiters.utf8), count: a.count == 3 ? Int(a[2])! : 1, words: name == "word")
        case "ltrim", "rtrim":
            // One argument, the characters; quotes around it (`ltrim(' ')`) are taken off.
            guard let a = args, a.count == 1 else { throw RuleError("converter '\(name)' takes the characters to remove, e.g. \(name)(' ')") }
            var chars = a[0]
            if chars.count >= 2, let q = chars.first, q == "'" || q == "\"", chars.last == q { chars = String(chars.dropFirst().dropLast()) }
            guard !chars.isEmpty else { throw RuleError("converter '\(name)' needs at least one character to remove") }
            return name == "ltrim" ? .leftTrim(Array(chars.utf8)) : .rightTrim(Array(chars.utf8))
        case _ where name.hasPrefix("map"):
            return .map(try mapConverter(name, args))
        case "int":
            throw RuleError("'int' is not a converter; match integers with '-m int', or use env_int(NAME) for an environment variable")
        default:
            if HAProxyNames.converters.contains(name) { throw RuleError("converter '\(name)' is not supported yet") }
            var hint = ""
            if let near = Similarity.closest(to: name, in: names) { hint = "; did you mean '\(near)'?" }
            throw RuleError("unknown converter '\(name)'\(hint)")
        }
    }

    /// `map[_METHOD][_OUTPUT](FILE[,DEFAULT])`: the file is loaded (once, shared) while the
    /// configuration loads.
    static func mapConverter(_ name: String, _ args: [String]?) throws -> MapLookup {
        // map, map_MATCH, or map_MATCH_OUTPUT (map_str_int: string keys, integer values).
        var base = name
        var output = SampleType.string
        let parts = name.split(separator: "_")
        if parts.count == 3, let type = ["int": SampleType.integer, "ip": .ip, "str": .string][String(parts[2])] {
            base = parts[0] + "_" + parts[1]
            output = type
        }
        guard let method = MapLookup.methods[base] else {
            let known = Array(MapLookup.methods.keys).sorted()
            var hint = ""
            if let near = Similarity.closest(to: name, in: known) { hint = "; did you mean '\(near)'?" }
            throw RuleError("unknown converter '\(name)'\(hint)")
        }
        guard let args, args.count == 1 || args.count == 2, !args[0].isEmpty else {
            throw RuleError("converter '\(name)' takes a map file and an optional default: \(name)(<file>[,<default>])")
        }
        guard let registry = PatternReferences.loading else { throw RuleError("converter '\(name)' needs its map file loaded with the configuration") }
        let reference: PatternReference
        do { reference = try registry.file(args[0], kind: .map, usedAs: "map") } catch let e as RuleError { throw e } catch {
            throw RuleError("cannot read map file '\(args[0])': \(error)")
        }
        return try MapLookup(name: name, method: method, output: output, reference: reference, defaultValue: args.count == 2 ? args[1] : nil)
    }

    /// The type this converter produces from `input`, or an error when it cannot take it.
    func outputType(from input: SampleType) throws -> SampleType {
        switch self {
        case .lower, .upper:
            if input == .boolean { throw RuleError("converter '\(self)' needs a string, but gets a boolean") }
            return .string
        case .bool:
            if input == .ip { throw RuleError("converter 'bool' needs an integer, but gets an address") }
            return .boolean
        case .add, .sub, .mul, .div:
            if input == .ip { throw RuleError("converter '\(self)' needs an integer, but gets an address") }
            return .integer
        case .map(let m):
            return m.output
        case .cutCRLF, .leftTrim, .rightTrim, .bytes, .field, .length:
            if input != .string && input != .any { throw RuleError("converter '\(self)' needs a string, but gets \(input == .integer ? "an integer" : input == .ip ? "an address" : "a boolean")") }
            return self == .length ? .integer : .string
        case .and, .or, .xor, .mod, .neg, .cpl, .even, .odd, .not:
            if input == .ip { throw RuleError("converter '\(self)' needs an integer, but gets an address") }
            switch self {
            case .even, .odd, .not: return .boolean
            default: return .integer
            }
        }
    }
}

/// A fetch followed by its converters: `hdr(host),lower`.
public struct SampleExpression: Equatable, Sendable, CustomStringConvertible {
    public var fetch: Fetch
    public var converters: [Converter]
    /// The type after every converter.
    public var outputType: SampleType
    /// The fetch keyword as written (`path_beg`), for messages.
    public var keyword: String
    /// The match method the keyword implies (`path_beg` implies `beg`).
    public var impliedMethod: MatchMethod?

    public var description: String { ([keyword] + converters.map(\.description)).joined(separator: ",") }

    /// Parses `fetch[,conv...]`, splitting on commas outside parentheses.
    public static func parse(_ text: String) throws -> SampleExpression {
        var parts: [String] = []
        var depth = 0
        let utf8 = text.utf8
        var start = utf8.startIndex
        var i = start
        while i != utf8.endIndex {
            let b = utf8[i]
            if b == UInt8(ascii: "(") { depth += 1 } else if b == UInt8(ascii: ")") { depth -= 1 } else if b == UInt8(ascii: ","), depth == 0 {
                parts.append(String(text[start..<i]))
                start = utf8.index(after: i)
            }
            i = utf8.index(after: i)
        }
        parts.append(String(text[start...]))
        guard let first = parts.first, !first.isEmpty else { throw RuleError("empty sample expression") }
        let (fetch, method) = try FetchRegistry.parse(first)
        var type = fetch.outputType
        var converters: [Converter] = []
        for part in parts.dropFirst() {
            guard !part.isEmpty else { throw RuleError("empty converter in '\(text)'") }
            let c = try Converter.parse(part)
            type = try c.outputType(from: type)
            converters.append(c)
        }
        let keyword = String(first.prefix { $0 != "(" })
        return SampleExpression(fetch: fetch, converters: converters, outputType: type,
                                keyword: first.contains("(") ? first : keyword, impliedMethod: method)
    }

    /// The sample after the converters. Strings stay borrowed; case converters become a fold.
    /// Nil when a converter has no answer (a map without the key and without a default).
    @inline(__always)
    public func convert(_ sample: Sample) -> (Sample, CaseFold)? {
        if converters.isEmpty { return (sample, .none) }
        var value = sample
        var fold = CaseFold.none
        for c in converters {
            switch c {
            case .lower: fold = .lower
            case .upper: fold = .upper
            case .bool: value = .boolean(value.integerValue != 0)
            case .add(let n): value = .integer(value.integerValue &+ n)
            case .sub(let n): value = .integer(value.integerValue &- n)
            case .mul(let n): value = .integer(value.integerValue &* n)
            case .div(let n):
                let v = value.integerValue
                if n == 0 { value = .integer(v < 0 ? .min : .max) } else {
                    let (q, o) = v.dividedReportingOverflow(by: n)
                    value = .integer(o ? .max : q)
                }
            case .map(let m):
                guard let found = m.apply(value, fold: fold) else { return nil }
                value = found
                fold = .none
            case .cutCRLF, .leftTrim, .rightTrim:
                // The borrowed bytes, narrowed: nothing is copied.
                guard case .bytes(let p) = value else { break }
                var start = 0, end = p.count
                switch c {
                case .cutCRLF: end = p.firstIndex { $0 == 13 || $0 == 10 } ?? p.count
                // A pending `lower`/`upper` applies to what is compared, as if already done.
                case .leftTrim(let chars): while start < end && chars.contains(fold.apply(p[start])) { start += 1 }
                default:
                    if case .rightTrim(let chars) = c { while end > start && chars.contains(fold.apply(p[end - 1])) { end -= 1 } }
                }
                value = .bytes(UnsafeRawBufferPointer(rebasing: p[start..<end]))
            case .and(let n): value = .integer(value.integerValue & n)
            case .or(let n): value = .integer(value.integerValue | n)
            case .xor(let n): value = .integer(value.integerValue ^ n)
            case .mod(let n):
                // As HAProxy: a zero divisor gives zero.
                let v = value.integerValue
                value = .integer(n == 0 ? 0 : v.remainderReportingOverflow(dividingBy: n).partialValue)
            // As HAProxy: the opposite of the smallest integer is the largest.
            case .neg: let v = value.integerValue; value = .integer(v == .min ? .max : -v)
            case .cpl: value = .integer(~value.integerValue)
            case .even: value = .boolean(value.integerValue & 1 == 0)
            case .odd: value = .boolean(value.integerValue & 1 == 1)
            case .not: value = .boolean(value.integerValue == 0)
            case .length:
                guard case .bytes(let p) = value else { break }
                value = .integer(Int64(p.count))
            case .bytes(let offset, let length):
                // The borrowed bytes, narrowed: past the end, nothing.
                guard case .bytes(let p) = value else { break }
                let start = min(offset, p.count)
                let end = length.map { start + min($0, p.count - start) } ?? p.count
                value = .bytes(UnsafeRawBufferPointer(rebasing: p[start..<end]))
            case .field(let index, let delimiters, let count, let words):
                guard case .bytes(let p) = value else { break }
                guard let r = Self.fields(p, index: index, delimiters: delimiters, count: count, words: words, fold: fold) else { return nil }
                value = .bytes(UnsafeRawBufferPointer(rebasing: p[r]))
            }
        }
        return (value, fold)
    }

    /// The bytes `field`/`word` keep of `p`, as HAProxy 2.6 picks them: from the first chosen
    /// field's start to the last one's end; a count that runs past the last field (or 0)
    /// runs to the end of `p` (to its start, counting from the end). Nil for a field that is
    /// not there (the sample then has no value); a word that is not there is empty.
    static func fields(_ p: UnsafeRawBufferPointer, index: Int, delimiters: [UInt8], count: Int, words: Bool, fold: CaseFold) -> Range<Int>? {
        var spans: [Range<Int>] = []
        var start = 0
        for i in 0...p.count {
            guard i == p.count || delimiters.contains(fold.apply(p[i])) else { continue }
            // A word is never empty: runs of delimiters, and those at either end, split nothing.
            if !words || i > start { spans.append(start..<i) }
            start = i + 1
        }
        let n = spans.count
        // The loader keeps index and count within 32 bits: no overflow here.
        let at = index > 0 ? index - 1 : n + index
        guard at >= 0, at < n else { return words ? p.count..<p.count : nil }
        if index > 0 {
            let last = at + count - 1
            return spans[at].lowerBound..<(count == 0 || last >= n ? p.count : spans[last].upperBound)
        }
        let first = at - count + 1
        return (count == 0 || first < 0 ? 0 : spans[first].lowerBound)..<spans[at].upperBound
    }
}

extension Sample {
    /// The sample cast to an integer, as HAProxy casts (strings read by leading digits).
    @inlinable
    public var integerValue: Int64 {
        switch self {
        case .boolean(let b): return b ? 1 : 0
        case .integer(let i): return i
        case .bytes(let p): return castToInteger(p)
        case .ip(let a): return a.isV4 ? Int64(a.v4Value) : 0
        }
    }
}

/// A sample's value owned rather than borrowed: what a variable keeps. Bytes are copied, so a
/// variable never points into a buffer that will be reused.
public enum SampleValue: Sendable, Equatable {
    case boolean(Bool)
    case integer(Int64)
    case string([UInt8])
    case ip(IPAddress)

    /// Copies `sample`, applying a case fold left by the converters.
    public init(_ sample: Sample, fold: CaseFold = .none) {
        switch sample {
        case .boolean(let b): self = .boolean(b)
        case .integer(let i): self = .integer(i)
        case .ip(let a): self = .ip(a)
        case .bytes(let p): self = .string(p.map { fold.apply($0) })
        }
    }

    /// Lends the value as a sample for the length of `body`.
    @inline(__always)
    public func withSample<R>(_ body: (Sample) -> R) -> R {
        switch self {
        case .boolean(let b): return body(.boolean(b))
        case .integer(let i): return body(.integer(i))
        case .ip(let a): return body(.ip(a))
        case .string(let s): return s.withUnsafeBytes { body(.bytes($0)) }
        }
    }

    /// The value as text, as a log-format renders it.
    public var text: [UInt8] {
        switch self {
        case .boolean(let b): return [b ? 0x31 : 0x30]
        case .integer(let i): return Array(String(i).utf8)
        case .ip(let a): return Array(a.description.utf8)
        case .string(let s): return s
        }
    }
}

/// Variables of one scope, by name (without the scope prefix).
public typealias VariableTable = [String: SampleValue]

/// The conditions of `set-var(NAME,COND...)` (HAProxy 2.6): the variable is set only when
/// all of them hold.
public struct VariableConditions: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The variable existed before (a `proc.` one always does: it is made at load).
    public static let ifExists = VariableConditions(rawValue: 1)
    public static let ifNotExists = VariableConditions(rawValue: 2)
    /// The new value is an empty string (a number, a boolean or an address never is).
    public static let ifEmpty = VariableConditions(rawValue: 4)
    public static let ifNotEmpty = VariableConditions(rawValue: 8)
    /// The variable has a value now (not never set, not unset).
    public static let ifSet = VariableConditions(rawValue: 16)
    public static let ifNotSet = VariableConditions(rawValue: 32)
    /// The variable's integer is greater, or less, than the new integer (true when either is
    /// not an integer).
    public static let ifGreater = VariableConditions(rawValue: 64)
    public static let ifLess = VariableConditions(rawValue: 128)

    public static let names: [(String, VariableConditions)] = [
        ("ifexists", .ifExists), ("ifnotexists", .ifNotExists), ("ifempty", .ifEmpty), ("ifnotempty", .ifNotEmpty),
        ("ifset", .ifSet), ("ifnotset", .ifNotSet), ("ifgt", .ifGreater), ("iflt", .ifLess),
    ]

    /// Parses the words after the name (at most four, as HAProxy takes them).
    public static func parse<S: Collection>(_ words: S, what: String) throws -> VariableConditions where S.Element == String {
        guard words.count <= 4 else { throw RuleError("\(what): at most four conditions, not \(words.count)") }
        var out: VariableConditions = []
        for w in words {
            guard let c = names.first(where: { $0.0 == w })?.1 else {
                var hint = ""
                if let near = Similarity.closest(to: w, in: names.map(\.0)) { hint = "; did you mean '\(near)'?" }
                throw RuleError("\(what): unknown condition '\(w)'; use \(names.map(\.0).joined(separator: ", "))\(hint)")
            }
            out.insert(c)
        }
        return out
    }

    /// Whether a variable of a table that holds only set variables (`current`: its value,
    /// nil when it has none) takes `new`; an unset (nil) is always taken.
    public func allow(current: SampleValue?, new: SampleValue?) -> Bool {
        guard let new, !isEmpty else { return true }
        return allow(current: current, exists: current != nil, new: new)
    }

    /// Whether a variable whose value is `current` (`exists`: it was made) takes `new`.
    public func allow(current: SampleValue?, exists: Bool, new: SampleValue) -> Bool {
        if contains(.ifExists) && !exists { return false }
        if contains(.ifNotExists) && exists { return false }
        let empty: Bool = { if case .string(let s) = new { return s.isEmpty } else { return false } }()
        if contains(.ifEmpty) && !empty { return false }
        if contains(.ifNotEmpty) && empty { return false }
        if contains(.ifSet) && current == nil { return false }
        if contains(.ifNotSet) && current != nil { return false }
        if case .integer(let old)? = current, case .integer(let value) = new {
            if contains(.ifGreater) && !(old > value) { return false }
            if contains(.ifLess) && !(old < value) { return false }
        }
        return true
    }
}
