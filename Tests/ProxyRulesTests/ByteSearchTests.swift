import Testing
import ProxyRules

/// `ByteSearch.contains`: memmem over contiguous bytes, the element-wise search otherwise,
/// with the same answers on the edges.
@Suite struct ByteSearchTests {
    static let cases: [(haystack: String, needle: String, found: Bool)] = [
        ("+PONG\r\n", "+PONG", true), ("+PONG\r\n", "\r\n", true), ("+PONG\r\n", "PONGS", false),
        ("", "", true), ("abc", "", true), ("", "a", false), ("ab", "abc", false),
        ("aaab", "aab", true), ("abcabd", "abd", true), ("abcabc", "cab", true), ("xyz", "xyz", true),
    ]

    @Test(arguments: 0..<cases.count)
    func contiguousAndElementWiseAgree(_ i: Int) {
        let (h, n, found) = Self.cases[i]
        let hb = Array(h.utf8), nb = Array(n.utf8)
        #expect(ByteSearch.contains(hb, nb) == found, "\(h) / \(n)")
        // A collection without contiguous storage takes the element-wise path.
        #expect(ByteSearch.contains(hb.lazy.map { $0 }, nb.lazy.map { $0 }) == found, "\(h) / \(n), element-wise")
        #expect(ByteSearch.contains(h.utf8, n.utf8) == found, "\(h) / \(n), UTF-8 view")
    }

    /// A slice starts at its own first byte, not the array's.
    @Test func slicesSearchOnlyTheirOwnBytes() {
        let bytes = Array("needle haystack".utf8)
        #expect(!ByteSearch.contains(bytes[7...], Array("needle".utf8)))
        #expect(ByteSearch.contains(bytes[7...], Array("stack".utf8)))
        #expect(ByteSearch.contains(bytes[0..<6], bytes[0..<6]))
        #expect(!ByteSearch.contains(bytes[0..<5], Array("needle".utf8)))
    }
}
