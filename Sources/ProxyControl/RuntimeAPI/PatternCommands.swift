import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem

/// `show|get|add|set|del|clear|prepare|commit acl|map`: the ACL pattern files and map files
/// as the loops use them now, changed at run time with HAProxy's commands and answers. The
/// writes need admin level (HAProxy 3.3's rule; 2.6 checked nothing). A change is checked
/// for every ACL and map that reads the file before any of them sees it.
extension RuntimeCommands {
    var references: PatternReferences? { engine.model.configuration.patternReferences }

    /// A payload (`add map FILE <<` and the lines after it) travels as the last two words.
    static func payload(_ words: [String]) -> ([String], String?) {
        if words.count >= 2, words[words.count - 2] == "<<" { return (Array(words.dropLast(2)), words.last!) }
        return (words, nil)
    }

    func unknown(_ kind: PatternReference.Kind) -> String {
        "Unknown \(kind == .acl ? "ACL" : "map") identifier. Please use #<id> or <file>.\n\n"
    }

    /// An entry's id as `show acl|map` prints it.
    static func entryID(_ e: PatternReference.Entry, _ r: PatternReference) -> String {
        "0x" + String((r.id + 1) << 20 | e.id, radix: 16)
    }

    func runPatternCommand(_ verb: String, _ kind: PatternReference.Kind, _ allWords: [String], level: AccessLevel) -> String {
        guard let refs = references else { return unknown(kind) }
        let (words, payload) = Self.payload(allWords)
        let writes = ["add", "set", "del", "clear", "prepare", "commit"].contains(verb)
        guard level >= (writes ? .admin : .operator) else { return "Permission denied\n\n" }
        var args = Array(words.dropFirst(2))
        var version: Int?
        if let first = args.first, first.hasPrefix("@") {
            guard let v = Int(first.dropFirst()) else { return "Version number expected after '@'.\n\n" }
            version = v
            args.removeFirst()
        }
        if verb == "show" && args.isEmpty {
            var text = "# id (file) description\n"
            for r in refs.all where r.kind == kind {
                text += "\(r.id) (\(r.path)) \(r.description). curr_ver=\(r.currentVersion) next_ver=\(r.nextVersion) entry_cnt=\(r.entries.count)\n"
            }
            return text + "\n"
        }
        guard let name = args.first else {
            if verb == "add" && kind == .map {
                return "'add map' expects three parameters (map identifier, key and value) or one parameter (map identifier) and a payload\n\n"
            }
            return "Missing \(kind == .acl ? "ACL" : "map") identifier.\n\n"
        }
        guard let r = refs.find(name, kind: kind) else { return unknown(kind) }
        let rest = Array(args.dropFirst())
        do {
            switch verb {
            case "show":
                return r.entries.map { "\(Self.entryID($0, r)) \($0.key)\($0.value.map { " " + $0 } ?? "")\n" }.joined() + "\n"
            case "get":
                guard let value = rest.first else { return "Missing value to look up.\n\n" }
                return kind == .map ? lookUpMap(r, value) : lookUpACL(r, value)
            case "add":
                var items: [(String, String?)] = []
                if let payload {
                    for line in payload.split(separator: "\n") {
                        let text = String(line).trimmingBlanks()
                        if text.isEmpty { continue }
                        if kind == .map {
                            let key = text.prefix { $0 != " " && $0 != "\t" }
                            items.append((String(key), String(text.dropFirst(key.count).drop { $0 == " " || $0 == "\t" })))
                        } else {
                            items.append((text, nil))
                        }
                    }
                } else if kind == .map {
                    guard rest.count == 2 else {
                        return "'add map' expects three parameters (map identifier, key and value) or one parameter (map identifier) and a payload\n\n"
                    }
                    items = [(rest[0], rest[1])]
                } else {
                    guard rest.count == 1 else { return "'add acl' expects two parameters: ACL identifier and pattern.\n\n" }
                    items = [(rest[0], nil)]
                }
                guard r.path != "" else { return readOnly(kind) }
                if let version {
                    for (k, v) in items where !r.add(version: version, key: k, value: v) { return "Unknown version.\n\n" }
                } else {
                    try r.add(contentsOf: items)
                }
                return Self.done
            case "set":
                guard kind == .map else { return usage(level) }
                guard rest.count == 2 else { return "'set map' expects three parameters: map identifier, key and value.\n\n" }
                guard r.path != "" else { return readOnly(kind) }
                return try r.set(rest[0], value: rest[1]) ? Self.done : "entry not found.\n\n"
            case "del":
                guard rest.count == 1 else { return "'del \(kind.rawValue)' expects two parameters: \(kind.rawValue) identifier and key.\n\n" }
                guard r.path != "" else { return readOnly(kind) }
                return try r.delete(rest[0]) ? Self.done : "Key not found.\n\n"
            case "clear":
                guard r.path != "" else { return readOnly(kind) }
                if let version { return r.clear(version: version) ? Self.done : "Unknown version.\n\n" }
                try r.clear()
                return Self.done
            case "prepare":
                guard r.path != "" else { return readOnly(kind) }
                return "New version created: \(r.prepare())\n\n"
            case "commit":
                guard let version else { return "'commit \(kind.rawValue)' expects a version (@N) and a \(kind.rawValue) identifier.\n\n" }
                return try r.commit(version: version) ? Self.done : "Unknown version.\n\n"
            default:
                return usage(level)
            }
        } catch let e as RuleError {
            return e.message + "\n\n"
        } catch {
            return "\(error)\n\n"
        }
    }

    func readOnly(_ kind: PatternReference.Kind) -> String {
        "These patterns are written on the \(kind == .acl ? "ACL" : "map") line itself; to change them at run time, load them from a file (-f FILE).\n\n"
    }

    /// `get map`: which entry a value finds, as HAProxy words it.
    func lookUpMap(_ r: PatternReference, _ value: String) -> String {
        let method = r.matchMethod ?? .string
        guard let index = try? MapIndex(method: method, ignoreCase: false, entries: r.entries) else { return "type=\(method.rawValue), case=sensitive, found=no\n\n" }
        var answer = "type=\(method.rawValue), case=sensitive, found=no\n\n"
        let bytes = Array(value.utf8)
        bytes.withUnsafeBytes { raw in
            let sample: Sample = method == .integer ? .integer(Int64(value) ?? 0) : .bytes(raw)
            if let (key, found) = index.entry(for: sample) {
                answer = "type=\(method.rawValue), case=sensitive, found=yes, idx=\(method == .string || method == .ip || method == .beginning ? "tree" : "list"), key=\"\(key)\", value=\"\(found)\", type=\"str\"\n\n"
            }
        }
        return answer
    }

    /// `get acl`: whether a value matches, and which pattern.
    func lookUpACL(_ r: PatternReference, _ value: String) -> String {
        let method = r.matchMethod ?? .string
        let caseText = r.ignoreCase ? "insensitive" : "sensitive"
        let bytes = Array(value.utf8)
        for e in r.entries {
            var set = PatternSet(method: method, ignoreCase: r.ignoreCase)
            guard (try? set.add(e.key)) != nil else { continue }
            let matched: Bool = bytes.withUnsafeBytes { raw in
                switch method {
                case .integer: return set.matches(.integer(Int64(value) ?? 0), fold: .none)
                case .ip: return IPAddress(parsing: value).map { set.matches(.ip($0), fold: .none) } ?? false
                default: return set.matches(.bytes(raw), fold: .none)
                }
            }
            if matched {
                let idx = method == .string || method == .ip || method == .beginning ? "tree" : "list"
                return "type=\(method.rawValue), case=\(caseText), match=yes, idx=\(idx), pattern=\"\(e.key)\"\n\n"
            }
        }
        return "type=\(method.rawValue), case=\(caseText), match=no\n\n"
    }
}
