/// Byte strings found in byte strings: map `sub` keys, check patterns, header values.
public enum ByteSearch {
    /// Whether `needle` occurs in `haystack` (an empty needle always does).
    public static func contains<H: Collection, N: Collection>(_ haystack: H, _ needle: N) -> Bool
    where H.Element == UInt8, N.Element == UInt8 {
        guard let first = needle.first else { return true }
        guard needle.count <= haystack.count else { return false }
        var i = haystack.startIndex
        var remaining = haystack.count
        while remaining >= needle.count {
            if haystack[i] == first && haystack[i...].starts(with: needle) { return true }
            i = haystack.index(after: i)
            remaining -= 1
        }
        return false
    }
}
