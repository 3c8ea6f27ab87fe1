import ProxyRules
import ProxySystem

/// What loading produced: a model when there were no errors, and every diagnostic.
public struct LoadResult: Sendable {
    public var configuration: Configuration?
    public var diagnostics: [Diagnostic]

    public var errors: [Diagnostic] { diagnostics.filter { $0.severity == .error } }
    public var warnings: [Diagnostic] { diagnostics.filter { $0.severity == .warning } }
}

/// Loads HAProxy-style config files into a checked `Configuration`.
///
/// Every error is collected (one run reports them all); a file that cannot be read, a binary
/// file or an absurd line each get a diagnostic, never a crash.
public struct ConfigLoader: Sendable {
    /// The environment the files are expanded against (the process's, normally).
    public var environment: Environment
    /// Longest line accepted, in bytes.
    public static let maxLineLength = 65536
    /// Whether host names in addresses are resolved (and so checked) at load.
    public var resolvesNames = true
    /// `-dr`: a server name that does not resolve disables the server instead of failing.
    public var ignoresResolutionFailures = false

    public init(environment: Environment) {
        self.environment = environment
    }

    /// Expands `-f` arguments: a directory gives its `*.cfg` files not starting with `.`,
    /// sorted bytewise.
    public static func expandPaths(_ paths: [String]) -> ([String], [Diagnostic]) {
        var files: [String] = []
        var diagnostics: [Diagnostic] = []
        for path in paths {
            switch FileSystem.kind(of: path) {
            case .directory:
                do {
                    let names = try FileSystem.listDirectory(path)
                        .filter { $0.hasSuffix(".cfg") && !$0.hasPrefix(".") }
                        .sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                    let prefix = path.hasSuffix("/") ? path : path + "/"
                    for n in names where FileSystem.kind(of: prefix + n) != .directory { files.append(prefix + n) }
                } catch let e as SystemError {
                    diagnostics.append(Diagnostic(.error, "cannot read configuration directory: \(e.reason); check its permissions", at: SourceLocation(file: path, line: 0)))
                } catch {
                    diagnostics.append(Diagnostic(.error, "cannot read configuration directory: \(error)", at: SourceLocation(file: path, line: 0)))
                }
            case .missing:
                diagnostics.append(Diagnostic(.error, "cannot open configuration file: No such file or directory", at: SourceLocation(file: path, line: 0)))
            default:
                files.append(path)
            }
        }
        return (files, diagnostics)
    }

    /// Loads files and directories in order.
    public func load(paths: [String]) -> LoadResult {
        let (files, pathDiagnostics) = Self.expandPaths(paths)
        let parser = ConfigParser(environment: environment)
        parser.resolvesNames = resolvesNames
        parser.ignoresResolutionFailures = ignoresResolutionFailures
        parser.diagnostics = pathDiagnostics
        // Kept after the load: the engine compiles the rules' formats from this configuration.
        PatternReferences.loading = parser.references
        if files.isEmpty && pathDiagnostics.isEmpty {
            parser.diagnostics.append(Diagnostic(.error, "no configuration file given; use -f FILE", at: nil))
        }
        for file in files {
            let bytes: [UInt8]
            do {
                bytes = try FileSystem.readFile(file)
            } catch let e as SystemError {
                parser.diagnostics.append(Diagnostic(.error, "cannot open configuration file: \(e.reason)", at: SourceLocation(file: file, line: 0)))
                continue
            } catch {
                parser.diagnostics.append(Diagnostic(.error, "cannot open configuration file: \(error)", at: SourceLocation(file: file, line: 0)))
                continue
            }
            parser.parseFile(name: file, bytes: bytes)
        }
        return parser.finish(files: files)
    }

    /// Loads config text held in memory (tests, fuzzing).
    public func load(text: String, name: String = "test.cfg") -> LoadResult {
        load(bytes: Array(text.utf8), name: name)
    }

    public func load(bytes: [UInt8], name: String) -> LoadResult {
        let parser = ConfigParser(environment: environment)
        parser.resolvesNames = resolvesNames
        PatternReferences.loading = parser.references
        parser.parseFile(name: name, bytes: bytes)
        return parser.finish(files: [name])
    }
}

/// The state of one load: sections seen so far, the proxy being built, diagnostics.
final class ConfigParser {
    var config = Configuration()
    var diagnostics: [Diagnostic] = []
    var environment: Environment
    var resolvesNames = true
    var ignoresResolutionFailures = false
    /// The ACL and map files, shared by every rule that names them (the runtime API edits them).
    lazy var references = PatternReferences(read: { [unowned self] in try self.loadPatternFile($0) })

    enum Section {
        case none
        case global
        case defaults
        case proxy
        case resolvers
        /// A section kind we do not support: its lines are skipped.
        case unsupported(String)
    }

    var section: Section = .none
    /// The `resolvers` section being read (nil after a broken header).
    var resolversIndex: Int?
    /// The settings the next proxy inherits: the last `defaults` section.
    var currentDefaults = ProxySettings()
    var namedDefaults: [String: ProxySettings] = [:]
    /// The `defaults` being filled, with its name.
    var defaultsName: String?
    var defaultsLocation: SourceLocation?
    /// The proxy being filled.
    var proxy: ProxyDefinition?
    /// Rules waiting for folding, found when the configuration is complete.
    var sectionName = ""
    /// Keywords that are accepted but not enforced, with whether they change wire bytes.
    var unenforced: [UnenforcedKeyword] = []
    /// A warning found while parsing a `cookie` line.
    var cookieWarning: String?
    /// Every `env_int` read by an ACL, with where, so that junk in it warns even if unused.
    var envIntReads: [(String, SourceLocation)] = []
    var reportedFoldWarnings = Set<String>()
    /// Fetches naming backends or servers, checked once every section is known.
    var backendReferences: [(Fetch, SourceLocation, ProxyDefinition?)] = []
    /// Where `tune.maxrewrite` was set, for the check against `tune.bufsize`.
    var maxRewriteLocation: SourceLocation?

    /// The conditional-block stack: for each open `.if`, whether its branch is active,
    /// whether a branch was taken, and whether the enclosing block is active.
    struct ConditionalFrame {
        var active: Bool
        var taken: Bool
        var parentActive: Bool
        var sawElse: Bool
        var location: SourceLocation
    }
    var conditionals: [ConditionalFrame] = []

    init(environment: Environment) {
        self.environment = environment
    }

    func error(_ message: String, at location: SourceLocation?) {
        diagnostics.append(Diagnostic(.error, message, at: location))
    }

    func warning(_ message: String, at location: SourceLocation?) {
        diagnostics.append(Diagnostic(.warning, message, at: location))
    }

    var isActive: Bool { conditionals.last?.active ?? true }

    /// Splits a file into lines (LF, CRLF; a missing final newline is fine) and parses each.
    func parseFile(name: String, bytes: [UInt8]) {
        section = .none
        conditionals = []
        var lineNumber = 0
        var start = 0
        let count = bytes.count
        while start < count {
            lineNumber += 1
            var end = start
            while end < count && bytes[end] != 10 { end += 1 }
            var lineEnd = end
            if lineEnd > start && bytes[lineEnd - 1] == 13 { lineEnd -= 1 }
            let location = SourceLocation(file: name, line: lineNumber)
            let line = bytes[start..<lineEnd]
            start = end + 1
            if line.count > ConfigLoader.maxLineLength {
                error("line is \(line.count) bytes long; the limit is \(ConfigLoader.maxLineLength). Is this a config file?", at: location)
                continue
            }
            if line.contains(0) {
                error("binary data (a NUL byte) in the file; is '\(name)' really a config file? The rest of it is skipped", at: location)
                break
            }
            parseLine(line, at: location)
        }
        if let open = conditionals.first {
            error("'.if' is never closed; add '.endif'", at: open.location)
        }
        endSection()
        section = .none
    }

    /// Lexes and dispatches one line.
    func parseLine(_ line: ArraySlice<UInt8>, at location: SourceLocation) {
        // Find the first word cheaply to handle conditional directives in inactive blocks.
        var i = line.startIndex
        while i < line.endIndex, line[i] == 32 || line[i] == 9 { i += 1 }
        if i == line.endIndex || line[i] == UInt8(ascii: "#") { return }
        var j = i
        while j < line.endIndex, line[j] != 32, line[j] != 9 { j += 1 }
        let head = String(decoding: line[i..<j], as: UTF8.self)
        if head.hasPrefix(".") {
            if ![".if", ".elif", ".else", ".endif"].contains(head) && !isActive { return }
        } else if !isActive {
            return
        }

        let lexer = LineLexer(environment: environment, expandUnquoted: false,
                              pseudo: [".FILE": location.file, ".LINE": String(location.line), ".SECTION": sectionName])
        var words: [LineLexer.Word]
        do {
            if head.hasPrefix("."), head != ".if", head != ".elif", !isActive {
                words = [LineLexer.Word(text: head, emptyBecauseUnset: nil)]
            } else {
                words = try lexer.split(line)
            }
        } catch LineLexer.Failure.message(let m) {
            error(m, at: location)
            return
        } catch {
            return
        }
        if words.isEmpty { return }

        // Addresses expand `$VAR` even unquoted (HAProxy 2.6 behaviour).
        let addressIndex: Int?
        switch words[0].text {
        case "bind": addressIndex = 1
        case "server": addressIndex = 2
        case "log": addressIndex = 1
        default: addressIndex = nil
        }
        if let k = addressIndex, k < words.count, line.contains(UInt8(ascii: "$")) {
            let addressLexer = LineLexer(environment: environment, expandUnquoted: true, pseudo: lexer.pseudo)
            if let expanded = try? addressLexer.split(line), expanded.count == words.count {
                words[k] = expanded[k]
            }
        }

        for (n, w) in words.enumerated() {
            if let name = w.partlyUnset {
                var hint = ""
                if let near = Similarity.closest(to: name, in: environment.names) { hint = "; did you mean '\(near)'?" }
                warning("variable '\(name)' is not set and expands to nothing in '\(w.text)'\(hint)", at: location)
            }
            if let name = w.emptyBecauseUnset {
                var hint = ""
                if let near = Similarity.closest(to: name, in: environment.names) { hint = "; did you mean '\(near)'?" }
                error("argument \(n + 1) is empty because variable '\(name)' is not set\(hint); set it, or give a default with \"${\(name)-default}\"", at: location)
                return
            }
        }
        let texts = words.map(\.text)
        if texts[0].hasPrefix(".") {
            handleDirective(texts, at: location)
            return
        }
        dispatch(texts, at: location)
    }

    /// The line being parsed.
    var currentLocation = SourceLocation(file: "", line: 0)

    /// The section as messages name it: `global`, `frontend 'www'`, `defaults`.
    var sectionLabel: String {
        switch section {
        case .global: return "global"
        case .defaults: return defaultsName.map { "defaults '\($0)'" } ?? "defaults"
        case .proxy: return proxy.map { "\($0.kind.rawValue) '\($0.name)'" } ?? sectionName
        default: return sectionName
        }
    }

    /// Starts sections, or hands a keyword line to the current section's parser.
    func dispatch(_ words: [String], at location: SourceLocation) {
        currentLocation = location
        references.location = "file '\(location.file)' line \(location.line)"
        let keyword = words[0]
        switch keyword {
        case "global":
            endSection()
            section = .global
            sectionName = "global"
            if words.count > 1 { warning("'global' takes no argument; '\(words[1])' is ignored", at: location) }
            return
        case "defaults", "frontend", "backend", "listen":
            endSection()
            beginProxySection(ProxyKind(rawValue: keyword)!, words, at: location)
            return
        case "resolvers":
            endSection()
            beginResolvers(words, at: location)
            return
        case "userlist", "peers", "mailers", "cache", "program", "http-errors", "ring",
             "fcgi-app", "crt-store", "log-forward", "traces", "acme":
            endSection()
            section = .unsupported(keyword)
            sectionName = keyword
            error("section '\(keyword)' is not supported yet; its lines are skipped", at: location)
            return
        default:
            break
        }
        do {
            switch section {
            case .none:
                var hint = ""
                if let near = Similarity.closest(to: keyword, in: ["global", "defaults", "frontend", "backend", "listen"]) {
                    hint = "; did you mean '\(near)'?"
                }
                throw ConfigError("'\(keyword)' is outside any section; start one with 'global', 'defaults', 'frontend', 'backend' or 'listen'\(hint)")
            case .global:
                try parseGlobalKeyword(words, at: location)
            case .defaults, .proxy:
                try parseProxyKeyword(words, at: location)
            case .resolvers:
                try parseResolversKeyword(words, at: location)
            case .unsupported:
                return
            }
        } catch let e as ConfigError {
            error(withSection(e.message), at: location)
        } catch let e as RuleError {
            error(withSection("\(keywordPhrase(words)): " + e.message), at: location)
        } catch {
            self.error("\(error)", at: location)
        }
    }

    /// Prefixes a message with its section unless it names it already.
    func withSection(_ message: String) -> String {
        let label = sectionLabel
        if case .none = section { return message }
        if message.contains(label) || label.isEmpty { return message }
        return "\(label): \(message)"
    }

    /// `acl is_api`, `use_backend app`, `http-request deny`: what a rule error is about.
    func keywordPhrase(_ words: [String]) -> String {
        if words.count >= 2, ["acl", "use_backend", "http-request", "http-response", "tcp-request", "stats"].contains(words[0]) {
            return words[0] + " " + words[1]
        }
        return words[0]
    }

    /// Closes the section being built.
    func endSection() {
        switch section {
        case .defaults:
            if let name = defaultsName { namedDefaults[name] = currentDefaults }
        case .proxy:
            if let p = proxy { config.proxies.append(p) }
            proxy = nil
        default:
            break
        }
        section = .none
    }

    /// The proxy-or-defaults settings being edited.
    var settings: ProxySettings {
        get { proxy?.settings ?? currentDefaults }
        set {
            if proxy != nil { proxy!.settings = newValue } else { currentDefaults = newValue }
        }
    }

    var sectionKind: ProxyKind { proxy?.kind ?? .defaults }

    /// `defaults [NAME] [from NAME]`, `frontend NAME [from NAME]`...
    func beginProxySection(_ kind: ProxyKind, _ words: [String], at location: SourceLocation) {
        var name: String?
        var from: String?
        var rest = words.dropFirst()
        if let n = rest.first, n != "from" { name = n; rest = rest.dropFirst() }
        if rest.first == "from" {
            rest = rest.dropFirst()
            if let f = rest.first { from = f; rest = rest.dropFirst() } else {
                error("'from' needs the name of a defaults section", at: location)
            }
        }
        if let extra = rest.first {
            error("unexpected '\(extra)' after the section name; the form is '\(kind.rawValue) NAME [from DEFAULTS]'", at: location)
        }
        if let n = name, let bad = n.first(where: { !($0.isLetter || $0.isNumber || "-_.:".contains($0)) }) {
            error("\(kind.rawValue) name '\(n)' has an invalid character '\(bad)'; use letters, digits, '-', '_', '.', ':'", at: location)
        }
        var base = currentDefaults
        if let f = from {
            if let d = namedDefaults[f] { base = d } else {
                var hint = ""
                if let near = Similarity.closest(to: f, in: namedDefaults.keys) { hint = "; did you mean '\(near)'?" }
                error("no defaults section named '\(f)' is declared above\(hint)", at: location)
            }
        }
        sectionName = name ?? kind.rawValue
        if kind == .defaults {
            section = .defaults
            defaultsName = name
            defaultsLocation = location
            // An unnamed `defaults` or one without `from` starts afresh, as in HAProxy.
            currentDefaults = from != nil ? base : ProxySettings()
            return
        }
        guard let proxyName = name else {
            error("'\(kind.rawValue)' needs a name, e.g. '\(kind.rawValue) web'", at: location)
            section = .unsupported(kind.rawValue)
            return
        }
        section = .proxy
        proxy = ProxyDefinition(name: proxyName, kind: kind, location: location, settings: base)
    }
}
