import Testing
@testable import ProxyRules

/// A request held in plain values, for matching ACLs without an engine.
struct FakeRequest: SampleContext {
    var path = "/"
    var url = "/"
    var method = "GET"
    var version = "1.1"
    var headers: [(String, String)] = []
    var source = IPAddress(parsing: "192.0.2.10")!
    var usableServers: [String: Int] = [:]
    var stopping = false

    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool {
        func bytes(_ s: String) -> Bool { Array(s.utf8).withUnsafeBytes { visit(.bytes($0)) } }
        switch fetch {
        case .path: return bytes(path)
        case .url: return bytes(url)
        case .method: return bytes(method)
        case .requestVersion: return bytes(version)
        case .header(let name, _, _):
            for (n, v) in headers where n.lowercased() == name {
                for part in v.split(separator: ",") where bytes(String(part).trimmingBlanks()) { return true }
            }
            return false
        case .headerCount(let name, _):
            return visit(.integer(Int64(headers.filter { name == nil || $0.0.lowercased() == name }.count)))
        case .source: return visit(.ip(source))
        case .backendUsableServers(let b): return visit(.integer(Int64(usableServers[b ?? ""] ?? 0)))
        case .stopping: return visit(.boolean(stopping))
        case .constantBool(let b): return visit(.boolean(b))
        default: return false
        }
    }
}

func term(_ text: String) throws -> ACLTerm {
    try ACLTerm.parse(text.split(separator: " ").map(String.init), loadPatternFile: { _ in [] })
}

@Suite struct ACLMatching {
    @Test func pathMethods() throws {
        var r = FakeRequest()
        r.path = "/static/img/logo.png"
        #expect(try term("path_beg /static").matches(r))
        #expect(try !term("path_beg /api").matches(r))
        #expect(try term("path_end .png .jpg").matches(r))
        #expect(try term("path_sub img").matches(r))
        #expect(try term("path_dir img").matches(r))
        #expect(try !term("path_dir im").matches(r))
        #expect(try term("path_reg ^/static/.*\\.png$").matches(r))
        #expect(try term("path /static/img/logo.png").matches(r))
        #expect(try !term("path /static").matches(r))
        #expect(try term("path -m beg /static").matches(r))
        #expect(try term("path -m len gt 10").matches(r))
    }

    @Test func ignoreCaseAndConverters() throws {
        var r = FakeRequest()
        r.headers = [("Host", "WWW.Example.COM")]
        #expect(try term("hdr(host) -i www.example.com").matches(r))
        #expect(try !term("hdr(host) www.example.com").matches(r))
        #expect(try term("hdr(host),lower www.example.com").matches(r))
        #expect(try term("hdr_end(host) -i example.com").matches(r))
        #expect(try term("hdr_dom(host) -i example").matches(r))
        #expect(try !term("hdr_dom(host) -i exam").matches(r))
        #expect(try term("hdr_cnt(host) eq 1").matches(r))
        #expect(try term("hdr(host) -m found").matches(r))
        #expect(try !term("hdr(x-missing) -m found").matches(r))
    }

    @Test func exactStringsUseSortedSearch() throws {
        var r = FakeRequest()
        let words = (0..<50).map { "/p\($0)" }
        let t = try ACLTerm.parse(["path"] + words, loadPatternFile: { _ in [] })
        for w in words {
            r.path = w
            #expect(t.matches(r))
        }
        r.path = "/p50"
        #expect(!t.matches(r))
        let ti = try ACLTerm.parse(["path", "-i"] + words.map { $0.uppercased() }, loadPatternFile: { _ in [] })
        r.path = "/p7"
        #expect(ti.matches(r))
    }

    @Test func integerOperatorsAndRanges() throws {
        var r = FakeRequest()
        r.usableServers = ["app": 2]
        #expect(try term("nbsrv(app) gt 1").matches(r))
        #expect(try !term("nbsrv(app) gt 2").matches(r))
        #expect(try term("nbsrv(app) ge 2").matches(r))
        #expect(try term("nbsrv(app) lt 3").matches(r))
        #expect(try term("nbsrv(app) le 2").matches(r))
        #expect(try term("nbsrv(app) eq 2").matches(r))
        #expect(try term("nbsrv(app) 2").matches(r))
        #expect(try term("nbsrv(app) 1:3").matches(r))
        #expect(try term("nbsrv(app) 2:").matches(r))
        #expect(try !term("nbsrv(app) :1").matches(r))
        #expect(try term("nbsrv(app),add(1) eq 3").matches(r))
        #expect(try term("nbsrv(app),mul(10),sub(5),div(3) eq 5").matches(r))
        #expect(try term("nbsrv(app),bool").matches(r))
    }

    @Test func networks() throws {
        var r = FakeRequest()
        #expect(try term("src 192.0.2.0/24").matches(r))
        #expect(try term("src 10.0.0.0/8 192.0.2.10").matches(r))
        #expect(try !term("src 10.0.0.0/8").matches(r))
        #expect(try term("src 192.0.2.0/255.255.255.0").matches(r))
        r.source = IPAddress(parsing: "::1")!
        #expect(PredefinedACLs.named("LOCALHOST")!.matches(r))
        r.source = IPAddress(parsing: "::ffff:127.0.0.2")!
        #expect(PredefinedACLs.named("LOCALHOST")!.matches(r))
        r.source = IPAddress(parsing: "2001:db8::5")!
        #expect(try term("src 2001:db8::/32").matches(r))
        #expect(try !term("src 2001:db9::/32").matches(r))
    }

    @Test func predefined() {
        var r = FakeRequest()
        r.method = "HEAD"
        #expect(PredefinedACLs.named("METH_GET")!.matches(r))
        #expect(!PredefinedACLs.named("METH_POST")!.matches(r))
        #expect(PredefinedACLs.named("HTTP_1.1")!.matches(r))
        #expect(PredefinedACLs.named("HTTP_URL_SLASH")!.matches(r))
        r.url = "http://example.com/"
        #expect(PredefinedACLs.named("HTTP_URL_ABS")!.matches(r))
        #expect(PredefinedACLs.named("TRUE")!.matches(r))
        #expect(!PredefinedACLs.named("FALSE")!.matches(r))
    }

    @Test func patternFiles() throws {
        let t = try ACLTerm.parse(["path_beg", "-f", "list"], loadPatternFile: { _ in ["# comment", "", "  /admin  ", "/private"] })
        var r = FakeRequest()
        r.path = "/private/x"
        #expect(t.matches(r))
        r.path = "/public"
        #expect(!t.matches(r))
    }

    @Test(arguments: [
        ("pth_beg /x", "unknown fetch method 'pth_beg'; did you mean 'path_beg'?"),
        ("env(X),int gt 0", "'int' is not a converter; match integers with '-m int', or use env_int(NAME) for an environment variable"),
        ("path -m nope x", "unknown match method '-m nope'"),
        ("path -z x", "unknown ACL flag '-z'; flags are -i, -f, -m, -n and --"),
        ("env_int(X) gt x", "'x' is not an integer or range (lo:hi)"),
        ("env_int(X) 5:1", "range '5:1' is empty: 5 > 1"),
        ("src 300.1.1.1", "'300.1.1.1' is not an IP address or network"),
        ("path_reg ([a-", "regex '([a-' does not compile: Unmatched [, [^, [:, [., or [="),
        ("hdr", "fetch 'hdr' needs a header name, e.g. hdr(host)"),
        ("env(1X)", "fetch 'env': '1X' is not a variable name"),
        ("srv_is_up(app)", "fetch 'srv_is_up' takes <backend>/<server>, not 'app'"),
        ("var(foo)", "fetch 'var': invalid variable name 'foo'; a name starts with its scope: proc, sess, txn, req, res or check, e.g. txn.path"),
        ("nbsrv(app),div(x) gt 1", "converter 'div' takes one integer argument, e.g. div(1)"),
        ("path,lowr x", "unknown converter 'lowr'; did you mean 'lower'?"),
    ])
    func badTerms(text: String, message: String) {
        #expect(throws: RuleError(message)) { try term(text) }
    }
}

@Suite struct Conditions {
    func parse(_ text: String, acls: [String: ACL] = [:]) throws -> Condition {
        let words = text.split(separator: " ").map(String.init)
        let polarity: Condition.Polarity = words[0] == "if" ? .ifTrue : .unless
        return try Condition.parse(polarity: polarity, words.dropFirst(), lookup: { acls[$0] },
                                   knownNames: { Array(acls.keys) }, loadPatternFile: { _ in [] })
    }

    @Test func andOrNot() throws {
        let acls = ["api": ACL(name: "api", terms: [try term("path_beg /api")]),
                    "post": ACL(name: "post", terms: [try term("method POST")])]
        var r = FakeRequest()
        r.path = "/api/x"
        #expect(try parse("if api", acls: acls).evaluate(r))
        #expect(try !parse("if api post", acls: acls).evaluate(r))
        #expect(try parse("if api !post", acls: acls).evaluate(r))
        #expect(try parse("if post || api", acls: acls).evaluate(r))
        #expect(try parse("if post or api", acls: acls).evaluate(r))
        #expect(try !parse("unless api", acls: acls).evaluate(r))
        #expect(try parse("if { path_beg /api } METH_GET", acls: acls).evaluate(r))
        #expect(try parse("if ! { path_beg /x }", acls: acls).evaluate(r))
    }

    @Test func repeatedNameORs() throws {
        let acl = ACL(name: "static", terms: [try term("path_beg /img")])
        acl.append(try term("path_end .css"))
        var r = FakeRequest()
        r.path = "/a/site.css"
        #expect(acl.matches(r))
        r.path = "/img/a.png"
        #expect(acl.matches(r))
        r.path = "/x"
        #expect(!acl.matches(r))
    }

    @Test(arguments: [
        ("if", "missing condition after 'if'"),
        ("if nope", "no such ACL 'nope'"),
        ("if api_v1x", "no such ACL 'api_v1x'; did you mean 'api_v1'?"),
        ("if { path_beg /x", "'{' has no matching '}'"),
        ("if }", "'}' without a matching '{'"),
        ("if TRUE ||", "condition ends with '||'"),
        ("if || TRUE", "'||' needs a condition on each side"),
        ("if { }", "empty anonymous ACL '{ }'"),
    ])
    func badConditions(text: String, message: String) throws {
        let acls = ["api_v1": ACL(name: "api_v1", terms: [try term("path_beg /v1")])]
        #expect(throws: RuleError(message)) { try parse(text, acls: acls) }
    }
}

@Suite struct ConverterEdges {
    /// HAProxy saturates instead of trapping: Int64.min / -1 and x / 0.
    @Test func divisionNeverTraps() throws {
        var r = FakeRequest()
        r.usableServers = ["app": 3]
        #expect(try term("nbsrv(app),div(0) eq 9223372036854775807").matches(r))
        #expect(try term("nbsrv(app),sub(3),sub(9223372036854775807),sub(1),div(-1) eq 9223372036854775807").matches(r))
    }
}

/// A fetch or converter HAProxy 2.6 documents and we do not build says so; a word that is
/// neither still gets "unknown" and a hint.
@Suite struct HAProxyNamesNotBuilt {
    @Test(arguments: [
        ("srv_id", "fetch 'srv_id' is not supported yet"),
        ("baseq_beg", "fetch 'baseq_beg' is not supported yet"),
        ("src,json", "converter 'json' is not supported yet"),
        ("pth_beg", "unknown fetch method 'pth_beg'; did you mean 'path_beg'?"),
        ("path,lowr", "unknown converter 'lowr'; did you mean 'lower'?"),
    ])
    func messages(_ text: String, _ message: String) {
        #expect(throws: RuleError(message)) { try SampleExpression.parse(text) }
    }
}
