/// A rule's `if`/`unless` condition: OR of AND-ed ACL references, as HAProxy defines it.
public struct Condition: Sendable, CustomStringConvertible {
    public enum Polarity: String, Sendable { case ifTrue = "if", unless }

    /// One ACL reference, maybe negated with `!`.
    public struct Factor: Sendable {
        public var negated: Bool
        public var acl: ACL
        /// As written: a name, or `{ ... }` for an anonymous ACL.
        public var text: String
    }

    public var polarity: Polarity
    /// The alternatives (OR), each a conjunction (AND) of factors.
    public var alternatives: [[Factor]]

    public var description: String {
        polarity.rawValue + " " + alternatives.map { $0.map { ($0.negated ? "!" : "") + $0.text }.joined(separator: " ") }
            .joined(separator: " || ")
    }

    /// Every ACL the condition reads, for reference and scope checks.
    public var acls: [ACL] { alternatives.flatMap { $0.map(\.acl) } }

    /// Parses the words after `if`/`unless`. `lookup` finds a declared ACL by name;
    /// predefined ACLs (`TRUE`, `METH_GET`...) are found here.
    public static func parse<S: Collection>(polarity: Polarity, _ words: S, lookup: (String) -> ACL?,
                                            knownNames: () -> [String],
                                            loadPatternFile: (String) throws -> [String],
                                            references: PatternReferences? = nil) throws -> Condition
    where S.Element == String {
        let tokens = Array(words)
        if tokens.isEmpty { throw RuleError("missing condition after '\(polarity.rawValue)'") }
        var alternatives: [[Factor]] = [[]]
        var i = 0
        while i < tokens.count {
            var word = tokens[i]
            i += 1
            if word == "or" || word == "||" {
                if alternatives[alternatives.count - 1].isEmpty {
                    throw RuleError("'\(word)' needs a condition on each side")
                }
                alternatives.append([])
                continue
            }
            var negated = false
            while word.hasPrefix("!") {
                negated.toggle()
                word.removeFirst()
                if word.isEmpty {
                    guard i < tokens.count else { throw RuleError("'!' must be followed by an ACL") }
                    word = tokens[i]
                    i += 1
                }
            }
            if word == "{" {
                var inner: [String] = []
                while i < tokens.count, tokens[i] != "}" {
                    if tokens[i] == "{" { throw RuleError("anonymous ACLs cannot nest: '{' inside '{ ... }'") }
                    inner.append(tokens[i])
                    i += 1
                }
                guard i < tokens.count else { throw RuleError("'{' has no matching '}'") }
                i += 1
                if inner.isEmpty { throw RuleError("empty anonymous ACL '{ }'") }
                let term = try ACLTerm.parse(inner, loadPatternFile: loadPatternFile, references: references)
                let text = "{ " + inner.joined(separator: " ") + " }"
                alternatives[alternatives.count - 1].append(Factor(negated: negated, acl: ACL(name: text, terms: [term]), text: text))
                continue
            }
            if word == "}" { throw RuleError("'}' without a matching '{'") }
            if word.hasPrefix("{") || word.hasSuffix("}") {
                throw RuleError("'\(word)': put spaces around '{' and '}' in an anonymous ACL")
            }
            guard let acl = lookup(word) ?? PredefinedACLs.named(word) else {
                var hint = ""
                if let near = Similarity.closest(to: word, in: knownNames() + PredefinedACLs.names) { hint = "; did you mean '\(near)'?" }
                throw RuleError("no such ACL '\(word)'\(hint)")
            }
            alternatives[alternatives.count - 1].append(Factor(negated: negated, acl: acl, text: (negated ? "" : "") + word))
        }
        if alternatives[alternatives.count - 1].isEmpty {
            throw RuleError("condition ends with '||'")
        }
        return Condition(polarity: polarity, alternatives: alternatives)
    }

    /// Evaluates the condition at run time.
    @inline(__always)
    public func evaluate<C: SampleContext>(_ context: C) -> Bool {
        var result = false
        for conjunction in alternatives {
            var all = true
            for f in conjunction where f.acl.matches(context) == f.negated {
                all = false
                break
            }
            if all { result = true; break }
        }
        return polarity == .ifTrue ? result : !result
    }
}

/// What folding made of a condition.
public enum FoldOutcome: Sendable {
    /// The rule applies to every request; the reasons name each value read.
    case always(reasons: [String])
    /// The rule never applies.
    case never(reasons: [String])
    /// Some of it depends on traffic; load-time parts are already removed.
    case dynamic(Condition, reasons: [String])
}

extension Condition {
    /// Decides every load-time ACL against `environment`, and simplifies the condition.
    /// Warnings (such as junk in an `env_int` value) are appended to `warnings`.
    public func fold(in environment: Environment, warnings: inout [String]) -> FoldOutcome {
        var reasons: [String] = []
        var kept: [[Factor]] = []
        var anyTrue = false
        for conjunction in alternatives {
            var remaining: [Factor] = []
            var falsified = false
            for f in conjunction {
                guard f.acl.isLoadTime else { remaining.append(f); continue }
                let (value, why) = f.acl.loadTimeValue(in: environment, warnings: &warnings)
                reasons.append(contentsOf: why)
                if value == f.negated { falsified = true; break }
            }
            if falsified { continue }
            if remaining.isEmpty { anyTrue = true; break }
            kept.append(remaining)
        }
        var unique: [String] = []
        for r in reasons where !unique.contains(r) { unique.append(r) }
        if anyTrue { return polarity == .ifTrue ? .always(reasons: unique) : .never(reasons: unique) }
        if kept.isEmpty { return polarity == .ifTrue ? .never(reasons: unique) : .always(reasons: unique) }
        return .dynamic(Condition(polarity: polarity, alternatives: kept), reasons: unique)
    }
}

extension ACL {
    /// The value of a load-time ACL, with a reason per term read, e.g. `env_int(X)=1 > 0`.
    func loadTimeValue(in environment: Environment, warnings: inout [String]) -> (Bool, [String]) {
        var reasons: [String] = []
        for term in terms {
            let (matched, reason) = term.loadTimeValue(in: environment, warnings: &warnings)
            reasons.append(reason)
            if matched { return (true, reasons) }
        }
        return (false, reasons)
    }
}

extension ACLTerm {
    /// Evaluates a load-time term. The reason reads `env_int(X)=1 > 0` or `env_int(X)=0, not > 0`.
    func loadTimeValue(in environment: Environment, warnings: inout [String]) -> (Bool, String) {
        let sample: Sample?
        var shown: String
        var storage: [UInt8] = []
        switch expression.fetch {
        case .env(let name):
            if let v = environment[name] {
                storage = Array(v.utf8)
                shown = "env(\(name))=\"\(v)\""
                sample = .integer(0) // placeholder, replaced below with the bytes
            } else {
                shown = "\(expression.fetch) unset"
                sample = nil
            }
        case .envInteger(let name):
            let raw = environment[name] ?? ""
            let reading = AtolReading(raw)
            if reading.overflowed {
                warnings.append("env_int(\(name)): value '\(raw)' does not fit 64 bits; read as \(reading.value)")
            } else if reading.hadJunk {
                warnings.append("env_int(\(name)): value '\(raw)' is not a plain integer; read as \(reading.value), as atol() would")
            }
            sample = .integer(reading.value)
            shown = "env_int(\(name))=\(reading.value)"
        case .constantBool(let b):
            sample = .boolean(b)
            shown = b ? "TRUE" : "FALSE"
        case .constantInt(let i):
            sample = .integer(i)
            shown = "\(expression)"
        case .constantIP(let ip):
            sample = .ip(ip)
            shown = "\(expression)"
        default:
            return (false, "\(expression) is not known at load")
        }
        guard var value = sample else { return (false, shown) }
        let matched: Bool = storage.withUnsafeBytes { raw in
            if case .env = expression.fetch { value = .bytes(raw) }
            guard let (converted, fold) = expression.convert(value) else {
                shown += ", \(expression) has no value"
                return false
            }
            if !expression.converters.isEmpty {
                switch converted {
                case .integer(let i): shown += ", \(expression)=\(i)"
                case .boolean(let b): shown += ", \(expression)=\(b ? "true" : "false")"
                case .bytes(let p):
                    let text = String(decoding: p.map { fold.apply($0) }, as: UTF8.self)
                    shown += ", \(expression)=\"\(text)\""
                case .ip(let a): shown += ", \(expression)=\(a)"
                }
            }
            return patterns.matches(converted, fold: fold)
        }
        if case .constantBool = expression.fetch, patterns.method == .boolean, patterns.isEmpty { return (matched, shown) }
        let test = patternText
        if test.isEmpty { return (matched, shown) }
        return (matched, matched ? "\(shown) \(test)" : "\(shown), not \(test)")
    }

    /// The patterns as an operator phrase: `> 0`, `in 1:5`, `= "on"`.
    var patternText: String {
        let symbols = ["gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "="]
        let parts: [String] = patterns.sources.map { source in
            switch patterns.method {
            case .integer, .length:
                let pieces = source.split(separator: " ")
                if pieces.count == 2, let s = symbols[String(pieces[0])] { return "\(s) \(pieces[1])" }
                return source.contains(":") ? "in \(source)" : "= \(source)"
            case .string: return "= \"\(source)\""
            case .beginning: return "begins with \"\(source)\""
            case .ending: return "ends with \"\(source)\""
            case .substring: return "contains \"\(source)\""
            case .regex: return "matches /\(source)/"
            default: return "\(patterns.method.rawValue) \(source)"
            }
        }
        if patterns.method == .found { return "found" }
        if patterns.method == .boolean && parts.isEmpty { return "true" }
        return parts.joined(separator: " or ")
    }
}

/// The ACLs HAProxy predefines: `TRUE`, `FALSE`, `LOCALHOST`, `HTTP_1.1`, `METH_GET`...
public enum PredefinedACLs {
    static let definitions: [(String, [String])] = [
        ("TRUE", ["always_true"]),
        ("FALSE", ["always_false"]),
        ("LOCALHOST", ["src", "127.0.0.1/8", "::1"]),
        ("HTTP", ["req.proto_http"]),
        ("HTTP_1.0", ["req.ver", "1.0"]),
        ("HTTP_1.1", ["req.ver", "1.1"]),
        ("HTTP_2.0", ["req.ver", "2.0"]),
        ("HTTP_CONTENT", ["hdr_val(content-length)", "gt", "0"]),
        ("HTTP_URL_ABS", ["url_reg", "^[^/:]*://"]),
        ("HTTP_URL_SLASH", ["url_beg", "/"]),
        ("HTTP_URL_STAR", ["url", "*"]),
        ("METH_CONNECT", ["method", "CONNECT"]),
        ("METH_DELETE", ["method", "DELETE"]),
        ("METH_GET", ["method", "GET", "HEAD"]),
        ("METH_HEAD", ["method", "HEAD"]),
        ("METH_OPTIONS", ["method", "OPTIONS"]),
        ("METH_POST", ["method", "POST"]),
        ("METH_PUT", ["method", "PUT"]),
        ("METH_TRACE", ["method", "TRACE"]),
        ("REQ_CONTENT", ["req.len", "gt", "0"]),
        ("WAIT_END", ["wait_end"]),
        ("RDP_COOKIE", ["req.rdp_cookie_cnt", "gt", "0"]),
    ]

    static let table: [String: ACL] = {
        var t: [String: ACL] = [:]
        for (name, words) in definitions {
            // The definitions are fixed text; a failure here is a programming error.
            let term = try! ACLTerm.parse(words, loadPatternFile: { _ in [] })
            t[name] = ACL(name: name, terms: [term])
        }
        return t
    }()

    public static var names: [String] { definitions.map(\.0) }

    public static func named(_ name: String) -> ACL? { table[name] }
}
