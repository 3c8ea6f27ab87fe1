/// Finds the known word nearest to a misspelt one, for "did you mean" hints.
public enum Similarity {
    /// Optimal string alignment distance (Damerau-Levenshtein without repeated edits).
    public static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.utf8), y = Array(b.utf8)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var prevPrev = [Int](repeating: 0, count: y.count + 1)
        var prev = Array(0...y.count)
        var cur = [Int](repeating: 0, count: y.count + 1)
        for i in 1...x.count {
            cur[0] = i
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                var best = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
                if i > 1 && j > 1 && x[i - 1] == y[j - 2] && x[i - 2] == y[j - 1] {
                    best = min(best, prevPrev[j - 2] + 1)
                }
                cur[j] = best
            }
            (prevPrev, prev, cur) = (prev, cur, prevPrev)
        }
        return prev[y.count]
    }

    /// The candidate closest to `word`, if it is close enough to be a plausible typo.
    public static func closest<S: Sequence>(to word: String, in candidates: S) -> String? where S.Element == String {
        let limit = max(1, min(3, word.utf8.count / 3))
        var best: (String, Int)?
        if word.utf8.count > 64 { return nil }
        for candidate in candidates {
            if abs(candidate.utf8.count - word.utf8.count) > limit { continue }
            let d = distance(word.lowercased(), candidate.lowercased())
            if d <= limit, best == nil || d < best!.1 { best = (candidate, d) }
        }
        return best?.0
    }
}
