/// Where a rule engine gets samples at run time (the engine's request and connection state).
public protocol SampleContext {
    /// Calls `visit` with each value of `fetch` (a header may have several) until it returns
    /// true, and returns whether any call did. No value at all means `visit` is never called.
    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool
}

/// One ACL line: a sample expression, flags and compiled patterns.
public struct ACLTerm: Sendable, CustomStringConvertible {
    public let expression: SampleExpression
    public let patterns: PatternSet
    /// For a term that reads files (`-f`): its patterns as the files are now.
    public let live: LivePatterns?
    /// The words after the ACL name, as written.
    public let text: String

    public var description: String { text }

    /// True when this term needs nothing but the environment and constants.
    public var isLoadTime: Bool { expression.fetch.scope == .load }

    /// Parses `FETCH[,CONV...] [FLAGS] [OPERATOR] [VALUE...]`.
    /// `loadPatternFile` reads a `-f` file into lines (the caller owns file access); with
    /// `references` (a configuration being loaded), files become shared references instead.
    public static func parse<S: Collection>(_ words: S, loadPatternFile: (String) throws -> [String],
                                            references: PatternReferences? = nil) throws -> ACLTerm
    where S.Element == String {
        let words0 = Array(words)
        var rest = words0[...]
        guard let first = rest.popFirst() else {
            throw RuleError("missing fetch method, e.g. 'acl name path_beg /static'")
        }
        let expression = try SampleExpression.parse(first)
        var ignoreCase = false
        var method: MatchMethod?
        var files: [String] = []
        flagLoop: while let flag = rest.first, flag.hasPrefix("-"), flag.count > 1, Int64(flag) == nil {
            rest.removeFirst()
            switch flag {
            case "-i": ignoreCase = true
            case "-n": break
            case "--": break flagLoop
            case "-f":
                guard let file = rest.popFirst() else { throw RuleError("flag '-f' needs a file name") }
                files.append(file)
            case "-m":
                guard let name = rest.popFirst() else {
                    throw RuleError("flag '-m' needs a match method: \(MatchMethod.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                if method != nil { throw RuleError("only one '-m' is allowed") }
                if !files.isEmpty { throw RuleError("'-m' must come before '-f'") }
                guard let m = MatchMethod(rawValue: name) else {
                    if name == "bin" { throw RuleError("'-m bin' is not supported yet") }
                    var hint = ""
                    if let near = Similarity.closest(to: name, in: MatchMethod.allCases.map(\.rawValue)) { hint = "; did you mean '\(near)'?" }
                    throw RuleError("unknown match method '-m \(name)'\(hint)")
                }
                method = m
            case "-M", "-u":
                throw RuleError("flag '\(flag)' is not supported yet")
            default:
                throw RuleError("unknown ACL flag '\(flag)'; flags are -i, -f, -m, -n and --")
            }
        }
        let chosen = method ?? expression.impliedMethod ?? MatchMethod.natural(for: expression.outputType)
        if chosen == .ip && expression.outputType != .ip && expression.outputType != .string && expression.outputType != .any {
            throw RuleError("'-m ip' cannot match '\(expression)', which gives a \(expression.outputType.rawValue)")
        }
        var patterns = PatternSet(method: chosen, ignoreCase: ignoreCase)
        var words: [(String, PatternSet.Operator?)] = []
        var op: PatternSet.Operator?
        while let word = rest.popFirst() {
            if let o = PatternSet.Operator(rawValue: word), chosen == .integer || chosen == .length {
                op = o
                continue
            }
            try patterns.add(word, operator: op)
            words.append((word, op))
        }
        let text = Array(words0).joined(separator: " ")
        // While a configuration loads, files become shared references that the runtime API
        // can change (`add acl FILE ...`), and the term reads them as they are now.
        if let registry = references {
            if files.isEmpty {
                let r = registry.inline(words.map(\.0), fetch: expression.keyword)
                r.matchMethod = chosen
                r.ignoreCase = ignoreCase
                return ACLTerm(expression: expression, patterns: patterns, live: nil, text: text)
            }
            var references: [PatternReference] = []
            for file in files {
                do { references.append(try registry.file(file, kind: .acl, usedAs: "acl")) } catch let e as RuleError { throw e } catch {
                    throw RuleError("cannot read pattern file '\(file)': \(error)")
                }
            }
            let live = try LivePatterns(method: chosen, ignoreCase: ignoreCase, words: words, references: references)
            return ACLTerm(expression: expression, patterns: patterns, live: live, text: text)
        }
        for file in files {
            let lines: [String]
            do { lines = try loadPatternFile(file) } catch let e as RuleError { throw e } catch {
                throw RuleError("cannot read pattern file '\(file)': \(error)")
            }
            for raw in lines {
                let line = raw.trimmingBlanks()
                if line.isEmpty || line.hasPrefix("#") { continue }
                try patterns.add(line, operator: nil)
            }
        }
        return ACLTerm(expression: expression, patterns: patterns, live: nil, text: text)
    }

    /// Matches this term at run time.
    @inline(__always)
    public func matches<C: SampleContext>(_ context: C) -> Bool {
        let expression = self.expression
        if let live {
            let box = live.published.value
            return context.visitSamples(of: expression.fetch) { raw in
                guard let (sample, fold) = expression.convert(raw) else { return false }
                return box.set.matches(sample, fold: fold)
            }
        }
        let patterns = self.patterns
        return context.visitSamples(of: expression.fetch) { raw in
            guard let (sample, fold) = expression.convert(raw) else { return false }
            return patterns.matches(sample, fold: fold)
        }
    }
}

/// An ACL: every line declared under one name, OR-ed. A reference, so that a line declared
/// after a rule names the ACL still counts, as in HAProxy.
public final class ACL: @unchecked Sendable {
    public let name: String
    public private(set) var terms: [ACLTerm]

    public init(name: String, terms: [ACLTerm]) {
        self.name = name
        self.terms = terms
    }

    public func append(_ term: ACLTerm) { terms.append(term) }

    public var isLoadTime: Bool { terms.allSatisfy(\.isLoadTime) }

    @inline(__always)
    public func matches<C: SampleContext>(_ context: C) -> Bool {
        for t in terms where t.matches(context) { return true }
        return false
    }
}

extension String {
    /// The string without leading and trailing blanks (space, tab, CR, LF).
    public func trimmingBlanks() -> String {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }
        guard let start = firstIndex(where: { !blank($0) }) else { return "" }
        let end = lastIndex(where: { !blank($0) })!
        return String(self[start...end])
    }
}
