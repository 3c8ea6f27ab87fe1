import Testing
@testable import ProxyRules

@Suite struct Folding {
    func condition(_ text: String) throws -> Condition {
        let words = text.split(separator: " ").map(String.init)
        return try Condition.parse(polarity: words[0] == "if" ? .ifTrue : .unless, words.dropFirst(), lookup: { _ in nil },
                                   knownNames: { [] }, loadPatternFile: { _ in [] })
    }

    func fold(_ text: String, _ env: [(String, String)]) throws -> (String, [String]) {
        var warnings: [String] = []
        switch try condition(text).fold(in: Environment(env), warnings: &warnings) {
        case .always(let reasons): return ("always " + reasons.joined(separator: "; "), warnings)
        case .never(let reasons): return ("never " + reasons.joined(separator: "; "), warnings)
        case .dynamic(let c, _): return ("dynamic " + c.description, warnings)
        }
    }

    @Test func envIntFolds() throws {
        #expect(try fold("if { env_int(HAPROXY_MAINT) gt 0 }", [("HAPROXY_MAINT", "1")]).0 == "always env_int(HAPROXY_MAINT)=1 > 0")
        #expect(try fold("if { env_int(HAPROXY_MAINT) gt 0 }", [("HAPROXY_MAINT", "0")]).0 == "never env_int(HAPROXY_MAINT)=0, not > 0")
        #expect(try fold("if { env_int(HAPROXY_MAINT) gt 0 }", []).0 == "never env_int(HAPROXY_MAINT)=0, not > 0")
        #expect(try fold("unless { env_int(HAPROXY_MAINT) gt 0 }", []).0 == "always env_int(HAPROXY_MAINT)=0, not > 0")
    }

    /// `env_int` reads like atol: leading blanks and a sign, then digits; junk warns.
    @Test(arguments: [
        ("1", true, false), ("0", false, false), ("", false, false), ("abc", false, true), ("2x", true, true),
        (" 1", true, false), ("-1", false, false), ("+3", true, false), ("1 ", true, true),
    ])
    func envIntReadsLikeAtol(value: String, matches: Bool, warns: Bool) throws {
        let (result, warnings) = try fold("if { env_int(M) gt 0 }", [("M", value)])
        #expect(result.hasPrefix(matches ? "always" : "never"))
        #expect(warnings.isEmpty == !warns)
        if warns { #expect(warnings[0].contains("env_int(M): value '\(value)'")) }
    }

    /// `env(X) -m int` follows HAProxy 2.6's observed table (reference §4.2).
    @Test(arguments: [
        (nil as String?, false), ("1", true), ("0", false), ("", false), ("abc", false), ("2x", true), (" 1", false), ("-1", false),
    ])
    func envDashMIntMatchesHAProxy(value: String?, matches: Bool) throws {
        let env = value.map { [("HAPROXY_MAINT", $0)] } ?? []
        let (result, _) = try fold("if { env(HAPROXY_MAINT) -m int gt 0 }", env)
        #expect(result.hasPrefix(matches ? "always" : "never"), "value \(String(describing: value)): \(result)")
    }

    @Test func envStrings() throws {
        #expect(try fold("if { env(SITE) -m str blue }", [("SITE", "blue")]).0 == "always env(SITE)=\"blue\" = \"blue\"")
        #expect(try fold("if { env(SITE) blue }", []).0 == "never env(SITE) unset")
        #expect(try fold("if { env(SITE) -m found }", [("SITE", "")]).0.hasPrefix("always"))
    }

    @Test func partialFolding() throws {
        #expect(try fold("if { env_int(M) gt 0 } METH_POST", [("M", "1")]).0 == "dynamic if METH_POST")
        #expect(try fold("if { env_int(M) gt 0 } METH_POST", [("M", "0")]).0.hasPrefix("never"))
        #expect(try fold("if METH_POST || { env_int(M) gt 0 }", [("M", "3")]).0.hasPrefix("always"))
        #expect(try fold("if METH_POST || { env_int(M) gt 0 }", [("M", "0")]).0 == "dynamic if METH_POST")
        #expect(try fold("if TRUE", []).0.hasPrefix("always"))
        #expect(try fold("if !TRUE", []).0.hasPrefix("never"))
    }

    @Test func atolReading() {
        #expect(AtolReading("42").value == 42)
        #expect(AtolReading("  -7z") == AtolReading(value: -7, hadJunk: true, overflowed: false))
        #expect(AtolReading("99999999999999999999").overflowed)
        #expect(castToInteger(Array(" 1".utf8)) == 0)
        #expect(castToInteger(Array("2x".utf8)) == 2)
        #expect(castToInteger(Array("-12".utf8)) == -12)
    }
}

extension AtolReading {
    init(value: Int64, hadJunk: Bool, overflowed: Bool) {
        self = AtolReading("0")
        self.value = value
        self.hadJunk = hadJunk
        self.overflowed = overflowed
    }
}

@Suite struct Regexes {
    @Test func substitutionReplacesTheWholeInput() throws {
        let r = try PosixRegex("^(GET /)( .*)", caseInsensitive: true)
        #expect(r.substitute(in: "GET / HTTP/1.1", template: "\\1webmail.html\\2") == "GET /webmail.html HTTP/1.1")
        #expect(r.substitute(in: "get / HTTP/1.1", template: "\\1x\\2") == "get /x HTTP/1.1")
        #expect(r.substitute(in: "GET /a HTTP/1.1", template: "\\1x\\2") == nil)
        let loc = try PosixRegex("^(Location: )(http:[/]*)(.*)", caseInsensitive: true)
        #expect(loc.substitute(in: "Location: http://example.com/a", template: "\\1https://\\3") == "Location: https://example.com/a")
    }

    @Test func badRegexThrowsWithoutCrashing() {
        #expect(throws: PosixRegex.CompileError.self) { try PosixRegex("([a-") }
    }
}
