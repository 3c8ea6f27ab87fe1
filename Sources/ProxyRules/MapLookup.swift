import ProxySystem
import Glibc

/// A map file's entries indexed for one match method: exact keys in a dictionary, prefixes
/// longest first, networks most specific first, the other methods in file order (the first
/// that matches wins, as in HAProxy). Values live in one buffer the index owns, so a lookup
/// lends them without copying; the index stays alive for the loop's turn (`Published`).
public final class MapIndex: @unchecked Sendable {
    let method: MatchMethod
    let ignoreCase: Bool
    private var exact: [[UInt8]: Int] = [:]
    private var ordered: [(key: [UInt8], entry: Int)] = []
    private var networks: [(net: IPNetwork, entry: Int)] = []
    private var regexes: [(regex: PosixRegex, entry: Int)] = []
    private var ranges: [(range: IntegerRange, entry: Int)] = []
    let keys: [String]
    /// Each entry's value: offset and length in `storage`, and the value read as an integer
    /// and as an address.
    private var spans: [(offset: Int, count: Int)] = []
    private(set) var integers: [Int64] = []
    private(set) var addresses: [IPAddress?] = []
    private let storage: UnsafeMutableRawPointer

    public init(method: MatchMethod, ignoreCase: Bool, entries: [PatternReference.Entry]) throws {
        self.method = method
        self.ignoreCase = ignoreCase
        keys = entries.map(\.key)
        let total = entries.reduce(0) { $0 + ($1.value?.utf8.count ?? 0) }
        storage = UnsafeMutableRawPointer.allocate(byteCount: max(1, total), alignment: 1)
        var offset = 0
        for (i, e) in entries.enumerated() {
            let value = Array((e.value ?? "").utf8)
            value.withUnsafeBytes { storage.advanced(by: offset).copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(storage), byteCount: $0.count) }
            spans.append((offset, value.count))
            offset += value.count
            integers.append(AtolReading(e.value ?? "").value)
            addresses.append(IPAddress(parsing: e.value ?? ""))
            let key = ignoreCase ? Array(e.key.lowercased().utf8) : Array(e.key.utf8)
            switch method {
            case .string: if exact[key] == nil { exact[key] = i }
            case .ip:
                guard let net = IPNetwork(parsing: e.key) else { throw RuleError("'\(e.key)' is not an IP address or network") }
                networks.append((net, i))
            case .regex:
                do { regexes.append((try PosixRegex(e.key, caseInsensitive: ignoreCase), i)) } catch let error as PosixRegex.CompileError {
                    throw RuleError("regex '\(e.key)' does not compile: \(error.description)")
                }
            case .integer:
                ranges.append((try PatternSet.parseRange(e.key, nil), i))
            default:
                ordered.append((key, i))
            }
        }
        // The most specific first: longest prefix for beg, longest network mask for ip.
        if method == .beginning { ordered.sort { $0.key.count > $1.key.count } }
        networks.sort { $0.net.prefix > $1.net.prefix }
    }

    deinit { storage.deallocate() }

    /// The value bytes of entry `i`, lent for this loop turn.
    func value(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.advanced(by: spans[i].offset), count: spans[i].count)
    }

    /// The entry `sample` matches, if any.
    func find(_ sample: Sample, fold: CaseFold) -> Int? {
        switch method {
        case .ip:
            let address: IPAddress?
            switch sample {
            case .ip(let a): address = a
            case .bytes(let p): address = IPAddress(parsing: String(decoding: p, as: UTF8.self))
            default: address = nil
            }
            guard let address else { return nil }
            return networks.first { $0.net.contains(address) }?.entry
        case .integer:
            let v = sample.integerValue
            return ranges.first { $0.range.contains(v) }?.entry
        default:
            break
        }
        let text: [UInt8]
        switch sample {
        case .bytes(let p): text = p.map { ignoreCase ? CaseFold.lower.apply(fold.apply($0)) : fold.apply($0) }
        case .integer(let i): text = Array(String(i).utf8)
        case .boolean(let b): text = b ? [0x31] : [0x30]
        case .ip(let a): text = Array(a.description.utf8)
        }
        switch method {
        case .string: return exact[text]
        case .regex:
            let s = String(decoding: text, as: UTF8.self)
            return regexes.first { $0.regex.matches(s) }?.entry
        case .beginning: return ordered.first { text.starts(with: $0.key) }?.entry
        case .ending: return ordered.first { text.count >= $0.key.count && Array(text.suffix($0.key.count)) == $0.key }?.entry
        case .substring: return ordered.first { MapIndex.contains(text, $0.key) }?.entry
        case .directory, .domain:
            let delimiter: UInt8 = method == .directory ? UInt8(ascii: "/") : UInt8(ascii: ".")
            return ordered.first { MapIndex.containsDelimited(text, $0.key, delimiter) }?.entry
        default: return nil
        }
    }

    /// The key and value a sample finds (`get map`).
    public func entry(for sample: Sample) -> (key: String, value: String)? {
        guard let i = find(sample, fold: .none) else { return nil }
        return (keys[i], String(decoding: value(i), as: UTF8.self))
    }

    static func contains(_ text: [UInt8], _ key: [UInt8]) -> Bool { ByteSearch.contains(text, key) }

    /// `dir`/`dom`: the key appears bounded by the delimiter or the ends.
    static func containsDelimited(_ text: [UInt8], _ key: [UInt8], _ d: UInt8) -> Bool {
        guard !key.isEmpty, key.count <= text.count else { return false }
        for start in 0...(text.count - key.count) where text[start..<start + key.count].elementsEqual(key) {
            let before = start == 0 || text[start - 1] == d
            let end = start + key.count
            let after = end == text.count || text[end] == d
            if before && after { return true }
        }
        return false
    }
}

/// A `map*` converter: its file, method, output type and default; its index follows the
/// file's run-time changes.
public final class MapLookup: @unchecked Sendable, Equatable, CustomStringConvertible {
    public let name: String
    public let reference: PatternReference
    let method: MatchMethod
    let output: SampleType
    let defaultValue: String?
    /// The default's bytes, owned here so they can be lent.
    private let defaultBytes: UnsafeMutableRawBufferPointer
    private let defaultLength: Int
    private let defaultInteger: Int64
    private let defaultAddress: IPAddress?
    public private(set) var published: Published<MapIndex>!

    public static func == (a: MapLookup, b: MapLookup) -> Bool { a === b }
    public var description: String { "\(name)(\(reference.path)\(defaultValue.map { "," + $0 } ?? ""))" }

    /// The converters and what they read and give: `map` and `map_str` compare strings,
    /// `map_beg`... as the ACL methods; a suffix `_int` or `_ip` types the value.
    static let methods: [String: MatchMethod] = ["map": .string, "map_str": .string, "map_beg": .beginning, "map_sub": .substring,
                                                 "map_dir": .directory, "map_dom": .domain, "map_end": .ending, "map_reg": .regex,
                                                 "map_regm": .regex, "map_ip": .ip, "map_int": .integer]

    init(name: String, method: MatchMethod, output: SampleType, reference: PatternReference, defaultValue: String?) throws {
        self.name = name
        self.method = method
        self.output = output
        self.reference = reference
        self.defaultValue = defaultValue
        let d = Array((defaultValue ?? "").utf8)
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, d.count), alignment: 1)
        d.withUnsafeBytes { bytes.copyMemory(from: $0) }
        defaultBytes = bytes
        defaultLength = d.count
        defaultInteger = AtolReading(defaultValue ?? "").value
        defaultAddress = defaultValue.flatMap { IPAddress(parsing: $0) }
        if output == .ip, let d = defaultValue, IPAddress(parsing: d) == nil {
            bytes.deallocate()
            throw RuleError("\(name): the default '\(d)' is not an address")
        }
        reference.matchMethod = reference.matchMethod ?? method
        let first = try reference.attach(owner: self, build: { entries in try MapIndex(method: method, ignoreCase: false, entries: entries) },
                                         publish: { [weak self] in self?.published.publish($0) })
        published = Published(first)
    }

    /// The converter on a sample: the matched entry's value, else the default, else nothing.
    /// Bytes are lent from the index (or this converter) for the loop's turn.
    @inline(__always)
    func apply(_ sample: Sample, fold: CaseFold) -> Sample? {
        let index = published.value
        if let i = index.find(sample, fold: fold) {
            switch output {
            case .integer: return .integer(index.integers[i])
            case .ip: return index.addresses[i].map { .ip($0) }
            default: return .bytes(index.value(i))
            }
        }
        guard defaultValue != nil else { return nil }
        switch output {
        case .integer: return .integer(defaultInteger)
        case .ip: return defaultAddress.map { .ip($0) }
        default: return .bytes(UnsafeRawBufferPointer(rebasing: defaultBytes[0..<defaultLength]))
        }
    }

    deinit { defaultBytes.deallocate() }
}
