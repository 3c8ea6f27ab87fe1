import Testing
import ProxyRules
import ProxySystem
@testable import ProxyConfig

/// Every file in Tests/Fixtures/bad ends with `# expect: FILE:LINE: severity: message` lines.
/// Loading it must give exactly those errors (and those warnings, where listed).
@Suite struct BadConfigTable {
    static let directory = packageRoot + "/Tests/Fixtures/bad"
    static let files: [String] = (try? FileSystem.listDirectory(directory).filter { $0.hasSuffix(".cfg") }.sorted()) ?? []

    @Test func thereAreAtLeastFortyCases() {
        #expect(Self.files.count >= 40)
    }

    @Test(arguments: files)
    func badConfig(file: String) throws {
        let bytes = try FileSystem.readFile(Self.directory + "/" + file)
        let text = String(decoding: bytes, as: UTF8.self)
        let expected = text.split(separator: "\n").filter { $0.hasPrefix("# expect: ") }.map { String($0.dropFirst(10)) }
        #expect(!expected.isEmpty, "no '# expect:' line in \(file)")
        let result = ConfigLoader(environment: Environment([("HOME", "/root")])).load(bytes: bytes, name: file)
        #expect(result.configuration == nil)
        let expectedErrors = expected.filter { $0.contains(": error: ") }
        #expect(result.errors.map(\.description) == expectedErrors)
        for w in expected where w.contains(": warning: ") {
            #expect(result.warnings.map(\.description).contains(w))
        }
    }
}

/// Random and mutated configs: the loader must never crash, whatever it is fed.
@Suite struct ConfigFuzz {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static let seeds: [String] = {
        var list: [String] = []
        for name in ["proxy.cfg", "maintenance.cfg", "webmail.cfg"] {
            if let b = try? FileSystem.readFile(packageRoot + "/etc/" + name) { list.append(String(decoding: b, as: UTF8.self)) }
        }
        return list
    }()

    static let fragments = ["\"", "'", "\\", "${", "$X", "{", "}", "#", " if ", " unless ", "||", "!", "-m", "-i", "-f",
                            ",lower", "(", ")", ":", "\0", "\r", "\n", ".if 1", ".endif", "acl a path_beg /x", "use_backend",
                            "server s 127.0.0.1:80", "bind :0", "timeout client", "99999999999", "-1", "%[src]", "[::1]:80",
                            "env_int(M)", "gt", "frontend", "backend b", "defaults", "global", "listen l", "\u{FFFD}"]

    /// Runs `count` cases; CI runs a few thousand, `contrib/fuzz/config-fuzz` runs 100k+.
    static func run(count: Int, seed: UInt64) {
        var g = Generator(state: seed | 1)
        var loader = ConfigLoader(environment: Environment([("M", "1"), ("X", "v")]))
        // Mutated host names would each cost a DNS lookup; the fuzz is about the parser.
        loader.resolvesNames = false
        for _ in 0..<count {
            var bytes: [UInt8]
            if g.below(4) == 0 || seeds.isEmpty {
                bytes = (0..<g.below(400)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            } else {
                bytes = Array(seeds[g.below(seeds.count)].utf8)
                for _ in 0..<(1 + g.below(8)) {
                    let at = bytes.isEmpty ? 0 : g.below(bytes.count)
                    switch g.below(4) {
                    case 0: bytes.insert(contentsOf: Array(fragments[g.below(fragments.count)].utf8), at: at)
                    case 1: if !bytes.isEmpty { bytes.removeSubrange(at..<min(bytes.count, at + g.below(20))) }
                    case 2: if !bytes.isEmpty { bytes[at] = UInt8(truncatingIfNeeded: g.next()) }
                    default:
                        let from = bytes.isEmpty ? 0 : g.below(bytes.count)
                        let piece = Array(bytes[from..<min(bytes.count, from + g.below(80))])
                        bytes.insert(contentsOf: piece, at: at)
                    }
                }
            }
            _ = loader.load(bytes: bytes, name: "fuzz.cfg")
        }
    }

    @Test func randomAndMutatedConfigsNeverCrash() {
        let count = Int(ProcessEnvironment.snapshot().first { $0.0 == "PROXY_FUZZ_CASES" }?.1 ?? "") ?? 3000
        Self.run(count: count, seed: 0x9E37_79B9_7F4A_7C15)
    }
}
