import Testing
import ProxyRules
@testable import ProxyConfig

@Suite struct Lexing {
    @Test func wordsCommentsAndEscapes() throws {
        #expect(try words("  bind  :80\tname web  ") == ["bind", ":80", "name", "web"])
        #expect(try words("acl a path /x # a comment") == ["acl", "a", "path", "/x"])
        #expect(try words("acl a path /x#y") == ["acl", "a", "path", "/x"])
        #expect(try words(##"acl a path /x\#y"##) == ["acl", "a", "path", "/x#y"])
        #expect(try words(#"reqirep ^(GET\ /)(\ .*) \1x\2"#) == ["reqirep", "^(GET /)( .*)", #"\1x\2"#])
        #expect(try words(#"acl a path_reg \.png$"#) == ["acl", "a", "path_reg", #"\.png$"#])
        #expect(try words(#"x a\tb \x41\x42"#) == ["x", "a\tb", "AB"])
        #expect(try words(#"x \\ \"q\""#) == ["x", "\\", "\"q\""])
    }

    @Test func quotes() throws {
        #expect(try words(#"x "a b" 'c d'"#) == ["x", "a b", "c d"])
        #expect(try words(#"x "a"'b'c"#) == ["x", "abc"])
        #expect(try words(#"x "" y"#) == ["x", "", "y"])
        #expect(try words(#"x 'a"b' "c'd""#) == ["x", "a\"b", "c'd"])
        #expect(try words(#"x "a # b""#) == ["x", "a # b"])
        #expect(try words(#"x 'no \n escape'"#) == ["x", #"no \n escape"#])
    }

    @Test func expansionOnlyInDoubleQuotes() throws {
        let env = [("FOO", "bar"), ("LIST", "a b  c"), ("EMPTY", "")]
        #expect(try words(#"x "$FOO" "${FOO}" $FOO '$FOO' "\$FOO""#, env: env) == ["x", "bar", "bar", "$FOO", "$FOO", "$FOO"])
        #expect(try words(#"x "pre-${FOO}-post""#, env: env) == ["x", "pre-bar-post"])
        #expect(try words(#"x "${UNSET-dflt}" "${EMPTY-dflt}""#, env: env) == ["x", "dflt", ""])
        #expect(try words(#"x "${LIST[*]}" y"#, env: env) == ["x", "a", "b", "c", "y"])
        #expect(try words(#"x "${UNSET[*]}" y"#, env: env) == ["x", "y"])
        #expect(try words(#"x "a$""#, env: env) == ["x", "a$"])
        #expect(try words(#"x "$1""#, env: env) == ["x", "$1"])
    }

    @Test func addressesExpandUnquoted() throws {
        let env = [("PORT", "8080")]
        #expect(try words("bind 127.0.0.1:$PORT", env: env, addresses: true) == ["bind", "127.0.0.1:8080"])
        #expect(try words("bind 127.0.0.1:${PORT}", env: env, addresses: true) == ["bind", "127.0.0.1:8080"])
        #expect(try words("bind 127.0.0.1:$PORT", env: env) == ["bind", "127.0.0.1:$PORT"])
    }

    @Test func lexerErrors() {
        #expect(throws: LineLexer.Failure.self) { try words(#"x "abc"#) }
        #expect(throws: LineLexer.Failure.self) { try words("x 'abc") }
        #expect(throws: LineLexer.Failure.self) { try words(#"x \xZ1"#) }
        #expect(throws: LineLexer.Failure.self) { try words(#"x "${FOO""#) }
        #expect(throws: LineLexer.Failure.self) { try words(#"x "${}""#) }
    }

    @Test func unsetVariableMakesAnEmptyArgumentError() {
        let e = errors("global\n    setenv PROXY_HOME /x\n    chroot \"${PROXY_HOEM}\"\n")
        #expect(e == [#"t.cfg:3: error: argument 2 is empty because variable 'PROXY_HOEM' is not set; did you mean 'PROXY_HOME'?; set it, or give a default with "${PROXY_HOEM-default}""#])
    }

    @Test func addressExpansionInConfig() throws {
        let c = try model("frontend f\n    bind 127.0.0.1:$PORT\n    timeout client 1s\n", env: [("PORT", "8443")])
        #expect(c.proxies[0].binds[0].addresses == [.inet(family: .ipv4, address: IPAddress(parsing: "127.0.0.1"), port: 8443)])
    }

    @Test func setenvTakesEffectFromTheNextLine() throws {
        let c = try model("""
        global
            setenv PROXY_A one
            presetenv PROXY_B two
            presetenv PROXY_A ignored
            setenv PROXY_C "${PROXY_A}-${PROXY_B}"
            unsetenv PROXY_B
        """)
        #expect(c.environment["PROXY_A"] == "one")
        #expect(c.environment["PROXY_B"] == nil)
        #expect(c.environment["PROXY_C"] == "one-two")
        let kept = try model("global\n    resetenv KEEP\n", env: [("KEEP", "1"), ("DROP", "2")])
        #expect(kept.environment.names == ["KEEP"])
    }

    @Test func crlfAndMissingFinalNewline() throws {
        let c = try model("global\r\n    maxconn 10\r\n    nbthread 2")
        #expect(c.global.maxconn == 10)
        #expect(c.global.threads == 2)
    }

    @Test func hostileInputGetsDiagnosticsNotCrashes() {
        #expect(errors("global\n    maxconn \0 1\n") == ["t.cfg:2: error: binary data (a NUL byte) in the file; is 't.cfg' really a config file? The rest of it is skipped"])
        let long = "global\n    description " + String(repeating: "x", count: 10 << 20) + "\n"
        #expect(errors(long) == ["t.cfg:2: error: line is 10485776 bytes long; the limit is 65536. Is this a config file?"])
        #expect(!errors("global\n    \u{FFFD}\u{1} maxconn\n").isEmpty)
    }
}

@Suite struct ConditionalBlocks {
    @Test func ifElifElse() throws {
        let text = """
        global
        .if defined(PROXY_X)
            maxconn 1
        .elif streq("$PROXY_Y",yes)
            maxconn 2
        .else
            maxconn 3
        .endif
        """
        #expect(try model(text, env: [("PROXY_X", "")]).global.maxconn == 1)
        #expect(try model(text, env: [("PROXY_Y", "yes")]).global.maxconn == 2)
        #expect(try model(text).global.maxconn == 3)
    }

    @Test func operatorsAndNesting() throws {
        let text = """
        global
        .if defined(A) && !defined(B) || strneq("$C",c)
        .if 0
            maxconn 5
        .else
            maxconn 6
        .endif
        .endif
        """
        #expect(try model(text, env: [("A", "1"), ("C", "c")]).global.maxconn == 6)
        #expect(try model(text, env: [("A", "1"), ("B", "1"), ("C", "c")]).global.maxconn == nil)
        #expect(try model(text, env: [("C", "d")]).global.maxconn == 6)
    }

    @Test func inactiveBlocksAreNotLexed() throws {
        let c = try model("global\n.if 0\n    maxconn \"unterminated\n    bogus keyword\n.endif\n    maxconn 9\n")
        #expect(c.global.maxconn == 9)
    }

    @Test func messages() {
        let r = load(".notice hello\n.warning careful\n.alert stop here\n")
        #expect(r.diagnostics.map(\.description) == ["t.cfg:1: notice: hello", "t.cfg:2: warning: careful", "t.cfg:3: error: stop here"])
    }

    @Test func spacesAroundCommasCount() throws {
        #expect(try model("global\n.if streq(\"$X\", 1)\n    maxconn 1\n.endif\n", env: [("X", "1")]).global.maxconn == nil)
        #expect(try model("global\n.if streq(\"$X\",1)\n    maxconn 1\n.endif\n", env: [("X", "1")]).global.maxconn == 1)
    }

    @Test func directiveErrors() {
        #expect(errors(".else\n") == ["t.cfg:1: error: '.else' without '.if'"])
        #expect(errors(".if 1\n.else\n.else\n.endif\n") == ["t.cfg:3: error: a second '.else' in the same '.if' block"])
        #expect(errors(".if foo\n.endif\n") == ["t.cfg:1: error: '.if foo': unknown term 'foo'"])
        #expect(errors(".iff 1\n") == ["t.cfg:1: error: unknown directive '.iff'; did you mean '.if'?"])
    }
}
