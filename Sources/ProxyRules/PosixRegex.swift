import Glibc

/// A compiled POSIX extended regular expression (regcomp(3) from Glibc), as HAProxy 1.x used.
public final class PosixRegex: @unchecked Sendable {
    private let compiled: UnsafeMutablePointer<regex_t>
    /// The source text, for messages and `-V`.
    public let pattern: String
    public let caseInsensitive: Bool
    /// Number of capture groups.
    public var groupCount: Int { Int(compiled.pointee.re_nsub) }

    public struct CompileError: Error, CustomStringConvertible {
        public let description: String
    }

    public init(_ pattern: String, caseInsensitive: Bool = false) throws {
        // Compile before any stored property is set: a throwing init that had set them all
        // would run deinit, and free the buffer a second time.
        let buffer = UnsafeMutablePointer<regex_t>.allocate(capacity: 1)
        var flags = REG_EXTENDED
        if caseInsensitive { flags |= REG_ICASE }
        let rc = regcomp(buffer, pattern, flags)
        if rc != 0 {
            var text = [CChar](repeating: 0, count: 256)
            regerror(rc, buffer, &text, text.count)
            buffer.deallocate()
            throw CompileError(description: String(cChars: text))
        }
        compiled = buffer
        self.pattern = pattern
        self.caseInsensitive = caseInsensitive
    }

    deinit {
        regfree(compiled)
        compiled.deallocate()
    }

    /// True when the regex matches anywhere in `text`.
    public func matches(_ text: String) -> Bool {
        regexec(compiled, text, 0, nil, 0) == 0
    }

    /// True when the regex matches anywhere in the bytes (copied to a C string; no NULs allowed).
    public func matches<C: Collection>(bytes: C) -> Bool where C.Element == UInt8 {
        var cString = [CChar]()
        cString.reserveCapacity(bytes.count + 1)
        for b in bytes {
            if b == 0 { return false }
            cString.append(CChar(bitPattern: b))
        }
        cString.append(0)
        return regexec(compiled, cString, 0, nil, 0) == 0
    }

    /// When the regex matches `text`, returns `template` with `\0`...`\9` replaced by the
    /// groups; otherwise nil. The result replaces the whole input, as HAProxy's `replace-*`
    /// actions and 1.x `reqrep` do (unmatched text is not kept unless a group captures it).
    public func substitute(in text: String, template: String) -> String? {
        let groups = 10
        var matches = [regmatch_t](repeating: regmatch_t(), count: groups)
        let rc = text.withCString { regexec(compiled, $0, groups, &matches, 0) }
        guard rc == 0 else { return nil }
        return String(decoding: expand(template, matches: matches, in: Array(text.utf8)), as: UTF8.self)
    }

    /// Expands `\N` references in a replacement template against match groups.
    private func expand(_ template: String, matches: [regmatch_t], in bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        let t = Array(template.utf8)
        var i = 0
        while i < t.count {
            if t[i] == UInt8(ascii: "\\"), i + 1 < t.count, t[i + 1] >= 0x30, t[i + 1] <= 0x39 {
                let g = Int(t[i + 1] - 0x30)
                if g < matches.count, matches[g].rm_so >= 0 {
                    out.append(contentsOf: bytes[Int(matches[g].rm_so)..<Int(matches[g].rm_eo)])
                }
                i += 2
            } else {
                out.append(t[i])
                i += 1
            }
        }
        return out
    }
}
