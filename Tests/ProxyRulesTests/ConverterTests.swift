import Testing
@testable import ProxyRules

/// Converters applied to a sample: HAProxy 2.6's documented examples for `field` and
/// `word`, `bytes`, `length`, and the integer ones.
@Suite struct ConverterResults {
    /// `expression`'s converters applied to `input` (a string, or an integer when it is one).
    func result(_ expression: String, _ input: String) throws -> String {
        let e = try SampleExpression.parse(expression)
        let bytes = Array(input.utf8)
        return bytes.withUnsafeBytes { raw -> String in
            let sample: Sample = Int64(input).map { .integer($0) } ?? .bytes(raw)
            guard let (out, fold) = e.convert(sample) else { return "<none>" }
            switch out {
            case .bytes(let p): return String(decoding: p.map { fold.apply($0) }, as: UTF8.self)
            case .integer(let i): return "int:\(i)"
            case .boolean(let b): return "bool:\(b)"
            case .ip(let a): return a.description
            }
        }
    }

    @Test(arguments: [
        ("field(5,_)", "f5"), ("field(2,_,0)", "f2_f3__f5"), ("field(2,_,2)", "f2_f3"),
        ("field(-2,_,3)", "f2_f3_"), ("field(-3,_,0)", "f1_f2_f3"), ("field(4,_)", ""), ("field(9,_)", "<none>"),
        ("field(-9,_)", "<none>"), ("word(4,_)", "f5"), ("word(2,_,0)", "f2_f3__f5"), ("word(3,_,2)", "f3__f5"),
        ("word(-2,_,3)", "f1_f2_f3"), ("word(-3,_,0)", "f1_f2"), ("word(5,_)", ""),
    ])
    func fieldAndWordAsDocumented(_ converter: String, _ expected: String) throws {
        #expect(try result("str(x)," + converter, "f1_f2_f3__f5") == expected)
    }

    /// Past the last field or word (or with a count of 0), the result runs to the end of the
    /// input, delimiters included, as HAProxy 2.6's loops end there; quoted delimiters.
    @Test(arguments: [
        ("word(1,/,0)", "a/b/"), ("word(1,/,9)", "a/b/"), ("word(1,/,2)", "a/b"), ("word(-1,/,0)", "/a/b"),
        ("word(-2,/,5)", "/a"), ("field(2,/,0)", "a/b/"), ("field(-1,/,0)", "/a/b/"), ("word(1,'/')", "a"),
        ("field(2,\"/\")", "a"),
    ])
    func countsRunToTheEnds(_ converter: String, _ expected: String) throws {
        #expect(try result("str(x)," + converter, "/a/b/") == expected)
    }

    @Test func fieldTakesTheHostOutOfAHostHeader() throws {
        #expect(try result("str(x),field(1,:)", "example.com:8443") == "example.com")
        #expect(try result("str(x),word(1,/)", "/f1/f2/f3/f4") == "f1")
        // A pending case change applies to the delimiters compared, as to the result.
        #expect(try result("str(x),upper,field(2,X)", "axbXc") == "B")
    }

    @Test(arguments: [
        ("bytes(2)", "cdef"), ("bytes(2,2)", "cd"), ("bytes(9)", ""), ("bytes(4,9)", "ef"), ("length", "int:6"),
    ])
    func bytesAndLength(_ converter: String, _ expected: String) throws {
        #expect(try result("str(x)," + converter, "abcdef") == expected)
    }

    @Test(arguments: [
        ("and(6)", "int:4"), ("or(1)", "int:13"), ("xor(5)", "int:9"), ("mod(5)", "int:2"), ("mod(0)", "int:0"),
        ("neg", "int:-12"), ("cpl", "int:-13"), ("even", "bool:true"), ("odd", "bool:false"), ("not", "bool:false"),
        ("neg,add(20)", "int:8"), ("sub(12),sub(9223372036854775807),sub(1),neg", "int:9223372036854775807"),
    ])
    func integerConverters(_ converter: String, _ expected: String) throws {
        #expect(try result("int(0)," + converter, "12") == expected)
    }

    @Test func wrongUsesAreRefusedAtLoad() {
        #expect(throws: RuleError("converter 'and': a variable as the argument ('txn.mask') is not supported yet; give an integer")) {
            try SampleExpression.parse("src_port,and(txn.mask)")
        }
        #expect(throws: RuleError("converter 'field(1,:,1)' needs a string, but gets an integer")) { try SampleExpression.parse("src_port,field(1,:)") }
        #expect(throws: (any Error).self) { try SampleExpression.parse("path,field(0,/)") }
        // Index and count stay within 32 bits, as HAProxy keeps them.
        #expect(throws: (any Error).self) { try SampleExpression.parse("path,field(2,/,9223372036854775807)") }
        #expect(throws: (any Error).self) { try SampleExpression.parse("path,word(-9223372036854775808,/)") }
    }
}
