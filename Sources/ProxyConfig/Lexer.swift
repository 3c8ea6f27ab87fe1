import ProxyRules

/// Splits one config line into words, with HAProxy's quoting, escaping and `$VAR` rules.
///
/// - Blanks separate words; an unquoted `#` starts a comment.
/// - `\` escapes a blank, `#`, `$`, quote or backslash; `\r \n \t \xHH` are decoded; any other
///   backslash is kept as written, so regexes such as `\.` survive.
/// - Single quotes are literal. Double quotes expand `$VAR`, `${VAR}`, `${VAR-default}` and
///   `${VAR[*]}` (a word list). Unquoted `$` stays literal unless `expandUnquoted` (addresses).
struct LineLexer {
    /// A word and whether it came out empty only because a variable was unset.
    struct Word {
        var text: String
        var emptyBecauseUnset: String?
        /// A variable that was unset but left other text in the word.
        var partlyUnset: String?
    }

    enum Failure: Error {
        case message(String)
    }

    let environment: Environment
    let expandUnquoted: Bool
    /// Values for the pseudo-variables `.FILE`, `.LINE`, `.SECTION`.
    let pseudo: [String: String]

    func split(_ line: ArraySlice<UInt8>) throws -> [Word] {
        var words: [Word] = []
        var current: [UInt8] = []
        var started = false
        var unsetName: String?
        var hadContent = false
        var suppressIfEmpty = false
        var single = false, double = false
        var quoteColumn = 0
        var i = line.startIndex
        let end = line.endIndex

        func finish() {
            if started {
                if !(suppressIfEmpty && current.isEmpty && !hadContent) {
                    let text = String(decoding: current, as: UTF8.self)
                    let empty = current.isEmpty && !hadContent
                    words.append(Word(text: text, emptyBecauseUnset: empty ? unsetName : nil, partlyUnset: empty ? nil : unsetName))
                }
            }
            current.removeAll(keepingCapacity: true)
            started = false
            unsetName = nil
            hadContent = false
            suppressIfEmpty = false
        }

        while i < end {
            let c = line[i]
            if single {
                if c == UInt8(ascii: "'") { single = false } else { current.append(c); hadContent = true }
                i += 1
                continue
            }
            switch c {
            case UInt8(ascii: " ") where !double, UInt8(ascii: "\t") where !double:
                finish()
                i += 1
            case UInt8(ascii: "#") where !double:
                finish()
                i = end
            case UInt8(ascii: "'") where !double:
                single = true
                started = true
                quoteColumn = i - line.startIndex + 1
                i += 1
            case UInt8(ascii: "\""):
                double.toggle()
                started = true
                if double { quoteColumn = i - line.startIndex + 1 }
                i += 1
            case UInt8(ascii: "\\"):
                started = true
                hadContent = true
                guard i + 1 < end else { current.append(c); i += 1; continue }
                let n = line[i + 1]
                switch n {
                case UInt8(ascii: "\\"), UInt8(ascii: " "), UInt8(ascii: "#"), UInt8(ascii: "$"),
                     UInt8(ascii: "'"), UInt8(ascii: "\""), UInt8(ascii: "\t"):
                    current.append(n); i += 2
                case UInt8(ascii: "r"): current.append(13); i += 2
                case UInt8(ascii: "n"): current.append(10); i += 2
                case UInt8(ascii: "t"): current.append(9); i += 2
                case UInt8(ascii: "x"):
                    guard i + 3 < end, let h = Self.hex(line[i + 2]), let l = Self.hex(line[i + 3]) else {
                        throw Failure.message("invalid escape '\\x' at column \(i - line.startIndex + 1): it needs two hex digits, as in \\x41")
                    }
                    current.append(h << 4 | l)
                    i += 4
                default:
                    current.append(c); i += 1
                }
            case UInt8(ascii: "$") where double || expandUnquoted:
                started = true
                let (consumed, value, listMode, unset) = try expand(line, at: i)
                if consumed == 0 {
                    current.append(c); hadContent = true; i += 1
                    continue
                }
                i += consumed
                if let unset { unsetName = unsetName ?? unset }
                if listMode {
                    let parts = value.split(separator: UInt8(ascii: " "))
                    if parts.isEmpty { suppressIfEmpty = true; continue }
                    for (k, p) in parts.enumerated() {
                        if k > 0 {
                            words.append(Word(text: String(decoding: current, as: UTF8.self), emptyBecauseUnset: nil))
                            current.removeAll(keepingCapacity: true)
                        }
                        current.append(contentsOf: p)
                    }
                    hadContent = true
                } else {
                    if !value.isEmpty { hadContent = true }
                    current.append(contentsOf: value)
                }
            default:
                started = true
                hadContent = true
                current.append(c)
                i += 1
            }
        }
        if single || double {
            throw Failure.message("unterminated \(single ? "single" : "double") quote opened at column \(quoteColumn); close it, or escape it with '\\'")
        }
        finish()
        return words
    }

    static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }

    private static func isNameStart(_ b: UInt8) -> Bool {
        b == UInt8(ascii: "_") || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7a)
    }

    private static func isName(_ b: UInt8) -> Bool {
        isNameStart(b) || (b >= 0x30 && b <= 0x39)
    }

    /// Expands the variable at `start` (a `$`). Returns bytes consumed (0: a plain `$`),
    /// the value, whether it is a `[*]` word list, and the variable name if it was unset.
    private func expand(_ line: ArraySlice<UInt8>, at start: Int) throws -> (Int, [UInt8], Bool, String?) {
        var i = start + 1
        let end = line.endIndex
        if i < end, line[i] == UInt8(ascii: "{") {
            i += 1
            let nameStart = i
            if i < end, line[i] == UInt8(ascii: ".") { i += 1 }
            while i < end, Self.isName(line[i]) { i += 1 }
            let name = String(decoding: line[nameStart..<i], as: UTF8.self)
            guard !name.isEmpty, name != "." else {
                throw Failure.message("'${' at column \(start - line.startIndex + 1) needs a variable name, as in ${NAME}")
            }
            var defaultValue: [UInt8]?
            var listMode = false
            if i < end, line[i] == UInt8(ascii: "-") {
                i += 1
                var d: [UInt8] = []
                while i < end, line[i] != UInt8(ascii: "}") { d.append(line[i]); i += 1 }
                defaultValue = d
            } else if i + 2 < end, line[i] == UInt8(ascii: "["), line[i + 1] == UInt8(ascii: "*"), line[i + 2] == UInt8(ascii: "]") {
                listMode = true
                i += 3
            }
            guard i < end, line[i] == UInt8(ascii: "}") else {
                throw Failure.message("'${\(name)' at column \(start - line.startIndex + 1) has no closing '}'")
            }
            i += 1
            let (value, unset) = lookup(name, defaultValue: defaultValue)
            return (i - start, value, listMode, unset)
        }
        let nameStart = i
        guard i < end, Self.isNameStart(line[i]) || line[i] == UInt8(ascii: ".") else { return (0, [], false, nil) }
        if line[i] == UInt8(ascii: ".") { i += 1 }
        while i < end, Self.isName(line[i]) { i += 1 }
        let name = String(decoding: line[nameStart..<i], as: UTF8.self)
        if name == "." { return (0, [], false, nil) }
        let (value, unset) = lookup(name, defaultValue: nil)
        return (i - start, value, false, unset)
    }

    private func lookup(_ name: String, defaultValue: [UInt8]?) -> ([UInt8], String?) {
        if name.hasPrefix(".") {
            if let v = pseudo[name] { return (Array(v.utf8), nil) }
            return ([], name)
        }
        if let v = environment[name] { return (Array(v.utf8), nil) }
        if let d = defaultValue { return (d, nil) }
        return ([], name)
    }
}
