import ProxySystem
import Glibc

/// One ACL pattern file or map file as loaded and changed at run time (HAProxy's pattern
/// reference): its entries with stable ids, the versions `prepare`/`commit` build, and the
/// indexes of the ACL terms and map converters that read it, rebuilt and published to the
/// loops on each change. Changed by the control thread only; the loops read the indexes.
public final class PatternReference: @unchecked Sendable {
    public enum Kind: String, Sendable { case acl, map }

    /// A pattern (ACL) or a key and its value (map).
    public struct Entry: Sendable, Equatable {
        public let id: Int
        public var key: String
        public var value: String?
    }

    /// An index built from the entries: checked first (a bad pattern changes nothing), then
    /// published.
    struct User {
        /// The ACL term or map converter: a parse that was only a check leaves none.
        weak var owner: AnyObject?
        let build: ([Entry]) throws -> AnyObject
        let publish: (AnyObject) -> Void
    }

    public let id: Int
    public let kind: Kind
    /// The file as written (empty for the patterns written on an ACL line).
    public let path: String
    /// `show acl`/`show map`'s description of where it is used.
    public private(set) var description: String
    public private(set) var entries: [Entry]
    /// The entries the file had at load, for a reload to compare.
    public let loaded: [Entry]
    /// How the first ACL reading it matches (for `get acl`), and whether it ignores case.
    public internal(set) var matchMethod: MatchMethod?
    public internal(set) var ignoreCase = false
    public private(set) var currentVersion = 0
    public private(set) var nextVersion = 0
    private var prepared: [Int: [Entry]] = [:]
    private var nextEntryID: Int
    private var users: [User] = []

    init(id: Int, kind: Kind, path: String, description: String, entries: [(String, String?)]) {
        self.id = id
        self.kind = kind
        self.path = path
        self.description = description
        self.entries = entries.enumerated().map { Entry(id: $0.offset + 1, key: $0.element.0, value: $0.element.1) }
        loaded = self.entries
        nextEntryID = entries.count + 1
    }

    /// Registers an index over the entries; builds it now (a bad pattern in the file is a
    /// load error) and returns it.
    func attach<T: AnyObject>(owner: AnyObject, build: @escaping ([Entry]) throws -> T, publish: @escaping (T) -> Void) throws -> T {
        let first = try build(entries)
        users.removeAll { $0.owner == nil }
        users.append(User(owner: owner, build: { try build($0) }, publish: { publish($0 as! T) }))
        return first
    }

    /// Builds every index for `next` and, when all succeed, publishes them and keeps `next`.
    private func install(_ next: [Entry]) throws {
        users.removeAll { $0.owner == nil }
        let built = try users.map { try $0.build(next) }
        for (u, index) in zip(users, built) { u.publish(index) }
        entries = next
    }

    // MARK: run-time changes (the control thread)

    /// A new entry at the end of the current version (`add acl|map`).
    public func add(key: String, value: String?) throws { try add(contentsOf: [(key, value)]) }

    /// New entries at the end, all or none (a payload): the indexes are built once.
    public func add(contentsOf items: [(String, String?)]) throws {
        var next = entries
        for (i, (k, v)) in items.enumerated() { next.append(Entry(id: nextEntryID + i, key: k, value: v)) }
        try install(next)
        nextEntryID += items.count
    }

    /// The entries a `#ID` or a key designates.
    func matching(_ keyOrID: String) -> [Int] {
        if keyOrID.hasPrefix("#"), let id = Int(keyOrID.dropFirst(keyOrID.hasPrefix("#0x") ? 3 : 1),
                                                 radix: keyOrID.hasPrefix("#0x") ? 16 : 10) {
            return entries.indices.filter { entries[$0].id == id }
        }
        return entries.indices.filter { entries[$0].key == keyOrID }
    }

    /// `set map`: a new value for every entry with this key (or `#ID`); false when none.
    public func set(_ keyOrID: String, value: String) throws -> Bool {
        let hits = matching(keyOrID)
        guard !hits.isEmpty else { return false }
        var next = entries
        for i in hits { next[i].value = value }
        try install(next)
        return true
    }

    /// `del acl|map`: removes every entry with this key (or `#ID`); false when none.
    public func delete(_ keyOrID: String) throws -> Bool {
        let hits = Set(matching(keyOrID))
        guard !hits.isEmpty else { return false }
        try install(entries.enumerated().filter { !hits.contains($0.offset) }.map(\.element))
        return true
    }

    /// `clear acl|map` (current version).
    public func clear() throws { try install([]) }

    /// Replaces every entry (a reload carrying this reference's run-time state).
    public func replace(with list: [(String, String?)]) throws {
        let next = list.map { k, v -> Entry in
            defer { nextEntryID += 1 }
            return Entry(id: nextEntryID, key: k, value: v)
        }
        try install(next)
    }

    /// `prepare acl|map`: a new empty version to fill with `add ... @VERSION`.
    public func prepare() -> Int {
        nextVersion += 1
        prepared[nextVersion] = []
        return nextVersion
    }

    /// `add acl|map @VERSION`: false when the version was not prepared.
    public func add(version: Int, key: String, value: String?) -> Bool {
        guard prepared[version] != nil else { return false }
        prepared[version]!.append(Entry(id: nextEntryID, key: key, value: value))
        nextEntryID += 1
        return true
    }

    /// `commit acl|map @VERSION`: the version replaces the current entries; false when
    /// there is no such version. Older prepared versions are dropped, as in HAProxy.
    public func commit(version: Int) throws -> Bool {
        guard let list = prepared[version] else { return false }
        try install(list)
        currentVersion = version
        prepared = prepared.filter { $0.key > version }
        return true
    }

    /// `clear acl|map @VERSION`: drops a prepared version.
    public func clear(version: Int) -> Bool { prepared.removeValue(forKey: version) != nil }
}

/// Every pattern reference of a configuration, in the order they were declared, so `show
/// acl` and `show map` number them as HAProxy does. Built while the configuration loads:
/// the loader sets `loading` when it starts (on the one thread that loads, before any loop
/// runs) and leaves it, so the engine compiling that configuration's formats finds the
/// same references; files are read through `read`.
public final class PatternReferences: @unchecked Sendable {
    /// The references of the configuration this thread loads (per thread: loads in
    /// parallel, as tests do, never see each other's files).
    public static var loading: PatternReferences? {
        get { pthread_getspecific(key).map { Unmanaged<PatternReferences>.fromOpaque($0).takeUnretainedValue() } }
        set {
            if let old = pthread_getspecific(key) { Unmanaged<PatternReferences>.fromOpaque(old).release() }
            pthread_setspecific(key, newValue.map { Unmanaged.passRetained($0).toOpaque() })
        }
    }

    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k, nil)
        return k
    }()

    public private(set) var all: [PatternReference] = []
    /// Reads a file's lines (the loader owns file access).
    let read: (String) throws -> [String]
    /// Where the line being parsed is, for the descriptions (`file 'X' line N`).
    public var location = ""

    public init(read: @escaping (String) throws -> [String]) { self.read = read }

    /// The reference for `path` used as `kind`, loaded the first time it is named.
    func file(_ path: String, kind: Kind, usedAs what: String) throws -> PatternReference {
        if let r = all.first(where: { $0.path == path && $0.kind == kind }) { return r }
        var entries: [(String, String?)] = []
        for raw in try read(path) {
            let line = raw.trimmingBlanks()
            if line.isEmpty || line.hasPrefix("#") { continue }
            if kind == .map {
                let key = line.prefix { $0 != " " && $0 != "\t" }
                let value = line.dropFirst(key.count).drop { $0 == " " || $0 == "\t" }
                entries.append((String(key), String(value)))
            } else {
                entries.append((line, nil))
            }
        }
        let r = PatternReference(id: all.count, kind: kind, path: path,
                                 description: "pattern loaded from file '\(path)' used by \(what) at \(location)", entries: entries)
        all.append(r)
        return r
    }

    /// The reference for patterns written on an ACL line.
    func inline(_ patterns: [String], fetch: String) -> PatternReference {
        let r = PatternReference(id: all.count, kind: .acl, path: "", description: "acl '\(fetch)' \(location)",
                                 entries: patterns.map { ($0, nil) })
        all.append(r)
        return r
    }

    public typealias Kind = PatternReference.Kind

    /// A reference by `#ID` or file name, of that kind.
    public func find(_ name: String, kind: Kind) -> PatternReference? {
        if name.hasPrefix("#"), let id = Int(name.dropFirst()) { return all.first { $0.id == id && $0.kind == kind } }
        return all.first { $0.path == name && $0.kind == kind }
    }
}
