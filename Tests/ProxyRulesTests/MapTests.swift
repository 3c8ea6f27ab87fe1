import Testing
@testable import ProxyRules
import ProxySystem

/// The `map_*` converters over a map file: each match method, typed outputs, the default,
/// and an entry changed at run time seen by the next lookup.
@Suite(.serialized) struct MapConverters {
    static let files: [String: [String]] = [
        "hosts.map": ["# comment", "a.example.com app_a", "", "b.example.com   app_b"],
        "paths.map": ["/api v1", "/api/v2 v2", "/static st"],
        "nets.map": ["10.0.0.0/8 lan", "10.1.0.0/16 office", "0.0.0.0/0 world"],
        "ports.map": ["80 http", "443 https", "1000:2000 range"],
        "doms.map": ["example.com ex", "test.org t"],
        "weights.map": ["a 10", "b 20"],
    ]

    func lookUp(_ expression: String, _ input: String) throws -> String? {
        defer { PatternReferences.loading = nil }
        PatternReferences.loading = PatternReferences(read: { path in
            guard let lines = Self.files[path] else { throw RuleError("no such file") }
            return lines
        })
        let e = try SampleExpression.parse(expression)
        let bytes = Array(input.utf8)
        return bytes.withUnsafeBytes { raw -> String? in
            let sample: Sample = Int64(input) != nil && expression.contains("map_int") ? .integer(Int64(input)!) : .bytes(raw)
            guard let (out, _) = e.convert(sample) else { return nil }
            switch out {
            case .bytes(let p): return String(decoding: p, as: UTF8.self)
            case .integer(let i): return "int:\(i)"
            case .ip(let a): return "ip:\(a)"
            case .boolean(let b): return "bool:\(b)"
            }
        }
    }

    @Test func methods() throws {
        #expect(try lookUp("str(x),map(hosts.map)", "a.example.com") == "app_a")
        #expect(try lookUp("str(x),map(hosts.map)", "b.example.com") == "app_b")
        #expect(try lookUp("str(x),map(hosts.map)", "c.example.com") == nil)
        #expect(try lookUp("str(x),map(hosts.map,fallback)", "c.example.com") == "fallback")
        #expect(try lookUp("str(x),lower,map(hosts.map)", "A.Example.COM") == "app_a")
        #expect(try lookUp("str(x),map_beg(paths.map)", "/api/v2/users") == "v2", "longest prefix")
        #expect(try lookUp("str(x),map_beg(paths.map)", "/api/v1") == "v1")
        #expect(try lookUp("str(x),map_beg(paths.map)", "/other") == nil)
        #expect(try lookUp("str(x),map_ip(nets.map)", "10.1.2.3") == "office", "most specific network: \(String(describing: try? lookUp("str(x),map_ip(nets.map)", "10.1.2.3")))")
        #expect(try lookUp("str(x),map_ip(nets.map)", "10.2.0.1") == "lan")
        #expect(try lookUp("str(x),map_ip(nets.map)", "8.8.8.8") == "world")
        #expect(try lookUp("str(x),map_int(ports.map)", "1500") == "range")
        #expect(try lookUp("str(x),map_dom(doms.map)", "www.example.com") == "ex")
        #expect(try lookUp("str(x),map_dom(doms.map)", "notexample.com") == nil)
        #expect(try lookUp("str(x),map_end(doms.map)", "shop.test.org") == "t")
        #expect(try lookUp("str(x),map_sub(doms.map)", "xxexample.comyy") == "ex")
        #expect(try lookUp("str(x),map_reg(hosts.map)", "a.example.com") == "app_a")
        #expect(try lookUp("str(x),map_str_int(weights.map)", "b") == "int:20")
        #expect(try lookUp("str(x),map_str_int(weights.map,7)", "z") == "int:7")
    }

    @Test func errorsAndRunTimeChanges() throws {
        #expect(throws: RuleError.self) { try lookUp("str(x),map(missing.map)", "a") }
        #expect(throws: RuleError.self) { try lookUp("str(x),map_foo(hosts.map)", "a") }
        #expect(throws: RuleError.self) { try lookUp("str(x),map()", "a") }
        PatternReferences.loading = PatternReferences(read: { Self.files[$0] ?? [] })
        defer { PatternReferences.loading = nil }
        let e = try SampleExpression.parse("str(x),map(hosts.map)")
        let ref = PatternReferences.loading!.find("hosts.map", kind: .map)!
        try ref.add(key: "c.example.com", value: "app_c")
        let found: String? = Array("c.example.com".utf8).withUnsafeBytes { raw in
            guard let (out, _) = e.convert(.bytes(raw)), case .bytes(let p) = out else { return nil }
            return String(decoding: p, as: UTF8.self)
        }
        #expect(found == "app_c")
        #expect(try ref.delete("#1"))
        #expect(ref.entries.map(\.key) == ["b.example.com", "c.example.com"])
        Quiescence.shared.reclaim()
    }
}
