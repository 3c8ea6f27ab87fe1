import ProxySystem
/// A compiled pattern set, boxed so it can be published to the loops.
public final class PatternSetBox: @unchecked Sendable {
    public let set: PatternSet
    init(_ set: PatternSet) { self.set = set }
}

/// The patterns of an ACL term that reads files (`-f`): its own words and the files'
/// entries, rebuilt and published when a file changes at run time (`add acl`, `del acl`).
public final class LivePatterns: @unchecked Sendable {
    let method: MatchMethod
    let ignoreCase: Bool
    let words: [(String, PatternSet.Operator?)]
    let references: [PatternReference]
    public private(set) var published: Published<PatternSetBox>!

    init(method: MatchMethod, ignoreCase: Bool, words: [(String, PatternSet.Operator?)], references: [PatternReference]) throws {
        self.method = method
        self.ignoreCase = ignoreCase
        self.words = words
        self.references = references
        for r in references {
            r.matchMethod = r.matchMethod ?? method
            r.ignoreCase = r.ignoreCase || ignoreCase
            let first = try r.attach(owner: self, build: { [weak self] entries in
                guard let self else { return PatternSetBox(PatternSet(method: .found, ignoreCase: false)) }
                return try self.build(replacing: r, with: entries)
            }, publish: { [weak self] in self?.published.publish($0) })
            if published == nil { published = Published(first) }
        }
    }

    /// The set from the words and every file's entries, `changed`'s being `entries`.
    func build(replacing changed: PatternReference, with entries: [PatternReference.Entry]) throws -> PatternSetBox {
        var set = PatternSet(method: method, ignoreCase: ignoreCase)
        for r in references {
            for e in r === changed ? entries : r.entries {
                do { try set.add(e.key, operator: nil) } catch let error as RuleError {
                    throw RuleError("\(r.path): \(error.message)")
                }
            }
        }
        for (w, op) in words { try set.add(w, operator: op) }
        return PatternSetBox(set)
    }
}
