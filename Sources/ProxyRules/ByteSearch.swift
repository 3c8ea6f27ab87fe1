import CProxySys

/// Byte strings found in byte strings: map `sub` keys, check patterns, header values.
public enum ByteSearch {
    /// Whether `needle` occurs in `haystack` (an empty needle always does). Inlinable, so that
    /// each caller gets it specialized; contiguous bytes are searched with memmem(3).
    @inlinable
    public static func contains<H: Collection, N: Collection>(_ haystack: H, _ needle: N) -> Bool
    where H.Element == UInt8, N.Element == UInt8 {
        let contiguous = haystack.withContiguousStorageIfAvailable { h in
            needle.withContiguousStorageIfAvailable { n -> Bool in
                guard let needleStart = n.baseAddress, !n.isEmpty else { return true }
                guard let start = h.baseAddress, n.count <= h.count else { return false }
                return cproxy_memmem(start, h.count, needleStart, n.count) != nil
            }
        }
        if let found = contiguous ?? nil { return found }
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
