import ProxyRules

/// `.if/.elif/.else/.endif` blocks and `.notice/.warning/.alert/.diag` messages.
extension ConfigParser {
    func handleDirective(_ words: [String], at location: SourceLocation) {
        let directive = words[0]
        let argument = words.dropFirst().joined(separator: " ")
        switch directive {
        case ".if":
            let parentActive = isActive
            var value = false
            if parentActive { value = evaluate(argument, directive, at: location) }
            conditionals.append(ConditionalFrame(active: parentActive && value, taken: value, parentActive: parentActive,
                                                 sawElse: false, location: location))
        case ".elif":
            guard var frame = conditionals.popLast() else {
                error("'.elif' without '.if'", at: location)
                return
            }
            if frame.sawElse { error("'.elif' after '.else'", at: location) }
            if frame.parentActive && !frame.taken {
                let value = evaluate(argument, directive, at: location)
                frame.active = value
                frame.taken = value
            } else {
                frame.active = false
            }
            conditionals.append(frame)
        case ".else":
            guard var frame = conditionals.popLast() else {
                error("'.else' without '.if'", at: location)
                return
            }
            if frame.sawElse { error("a second '.else' in the same '.if' block", at: location) }
            frame.sawElse = true
            frame.active = frame.parentActive && !frame.taken
            frame.taken = true
            conditionals.append(frame)
        case ".endif":
            if conditionals.popLast() == nil { error("'.endif' without '.if'", at: location) }
        case ".notice":
            diagnostics.append(Diagnostic(.notice, argument, at: location))
        case ".warning":
            warning(argument, at: location)
        case ".alert":
            error(argument, at: location)
        case ".diag":
            break
        default:
            var hint = ""
            if let near = Similarity.closest(to: directive, in: [".if", ".elif", ".else", ".endif", ".notice", ".warning", ".alert", ".diag"]) {
                hint = "; did you mean '\(near)'?"
            }
            error("unknown directive '\(directive)'\(hint)", at: location)
        }
    }

    func evaluate(_ text: String, _ directive: String, at location: SourceLocation) -> Bool {
        var parser = ConditionExpressionParser(text: Array(text.utf8), environment: environment)
        do {
            let value = try parser.parseExpression()
            parser.skipBlanks()
            if parser.index < parser.text.count {
                throw ConfigError("unexpected '\(String(decoding: parser.text[parser.index...], as: UTF8.self))'")
            }
            return value
        } catch let e as ConfigError {
            let shown = text.count > 60 ? String(text.prefix(50)) + "..." : text
            error("'\(directive) \(shown)': \(e.message)", at: location)
            return false
        } catch {
            return false
        }
    }
}

/// The expression language of `.if`: predicates, `!`, `&&`, `||` and parentheses.
struct ConditionExpressionParser {
    let text: [UInt8]
    let environment: Environment
    var index = 0
    var depth = 0

    init(text: [UInt8], environment: Environment) {
        self.text = text
        self.environment = environment
    }

    static let predicates = ["defined", "streq", "strneq", "strstr", "version_atleast", "version_before", "feature", "enabled"]

    mutating func skipBlanks() {
        while index < text.count, text[index] == 32 || text[index] == 9 { index += 1 }
    }

    mutating func parseExpression() throws -> Bool {
        var value = try parseConjunction()
        while true {
            skipBlanks()
            if match("||") {
                let rhs = try parseConjunction()
                value = value || rhs
            } else {
                return value
            }
        }
    }

    mutating func parseConjunction() throws -> Bool {
        var value = try parseTerm()
        while true {
            skipBlanks()
            if match("&&") {
                let rhs = try parseTerm()
                value = value && rhs
            } else {
                return value
            }
        }
    }

    mutating func match(_ s: String) -> Bool {
        let b = Array(s.utf8)
        if index + b.count <= text.count, Array(text[index..<index + b.count]) == b {
            index += b.count
            return true
        }
        return false
    }

    mutating func parseTerm() throws -> Bool {
        depth += 1
        defer { depth -= 1 }
        if depth > 64 { throw ConfigError("expression nested more than 64 deep") }
        skipBlanks()
        guard index < text.count else {
            if text.allSatisfy({ $0 == 32 || $0 == 9 }) { return false }
            throw ConfigError("missing a term at the end")
        }
        if match("!") { return !(try parseTerm()) }
        if match("(") {
            let v = try parseExpression()
            skipBlanks()
            guard match(")") else { throw ConfigError("missing ')'") }
            return v
        }
        let start = index
        while index < text.count, text[index] != 32, text[index] != 9, text[index] != UInt8(ascii: "("),
              text[index] != UInt8(ascii: ")"), text[index] != UInt8(ascii: "&"), text[index] != UInt8(ascii: "|") {
            index += 1
        }
        let word = String(decoding: text[start..<index], as: UTF8.self)
        if index < text.count, text[index] == UInt8(ascii: "(") {
            index += 1
            var args: [String] = []
            var current: [UInt8] = []
            while index < text.count, text[index] != UInt8(ascii: ")") {
                if text[index] == UInt8(ascii: ",") {
                    args.append(String(decoding: current, as: UTF8.self))
                    current = []
                } else {
                    current.append(text[index])
                }
                index += 1
            }
            guard index < text.count else { throw ConfigError("'\(word)(' is missing its ')'") }
            index += 1
            args.append(String(decoding: current, as: UTF8.self))
            return try predicate(word, args)
        }
        if word.isEmpty { throw ConfigError("unexpected character") }
        if let n = Int64(word) { return n != 0 }
        var hint = ""
        if let near = Similarity.closest(to: word, in: Self.predicates) { hint = "; did you mean '\(near)()'?" }
        throw ConfigError("unknown term '\(word)'\(hint)")
    }

    func predicate(_ name: String, _ args: [String]) throws -> Bool {
        func need(_ n: Int) throws {
            if args.count != n { throw ConfigError("'\(name)' takes \(n) argument\(n == 1 ? "" : "s"), got \(args.count)") }
        }
        switch name {
        case "defined":
            try need(1)
            return environment[args[0]] != nil
        case "streq":
            try need(2)
            return args[0] == args[1]
        case "strneq":
            try need(2)
            return args[0] != args[1]
        case "strstr":
            try need(2)
            return args[1].isEmpty || args[0].contains(args[1])
        case "version_atleast":
            try need(1)
            return compareVersion(args[0]) <= 0
        case "version_before":
            try need(1)
            return compareVersion(args[0]) > 0
        case "feature", "enabled":
            try need(1)
            return false
        default:
            var hint = ""
            if let near = Similarity.closest(to: name, in: Self.predicates) { hint = "; did you mean '\(near)'?" }
            throw ConfigError("unknown predicate '\(name)'\(hint)")
        }
    }

    /// Compares a version with the HAProxy release whose syntax we follow (2.6.12, Debian 12's).
    func compareVersion(_ v: String) -> Int {
        let mine = [2, 6, 12]
        let theirs = v.split(separator: ".").map { Int($0.prefix { $0.isNumber }) ?? 0 }
        for i in 0..<3 {
            let t = i < theirs.count ? theirs[i] : 0
            if t != mine[i] { return t < mine[i] ? -1 : 1 }
        }
        return 0
    }
}

extension ConfigLoader {
    /// Evaluates a `.if` expression on its own (`proxy -cc`).
    public static func evaluateCondition(_ text: String, environment: Environment) -> Result<Bool, RuleError> {
        let lexer = LineLexer(environment: environment, expandUnquoted: false, pseudo: [:])
        do {
            let words = try lexer.split(Array(text.utf8)[...]).map(\.text)
            var parser = ConditionExpressionParser(text: Array(words.joined(separator: " ").utf8), environment: environment)
            let value = try parser.parseExpression()
            parser.skipBlanks()
            if parser.index < parser.text.count { return .failure(RuleError("unexpected text at the end")) }
            return .success(value)
        } catch let e as ConfigError {
            return .failure(RuleError(e.message))
        } catch LineLexer.Failure.message(let m) {
            return .failure(RuleError(m))
        } catch {
            return .failure(RuleError("\(error)"))
        }
    }
}
