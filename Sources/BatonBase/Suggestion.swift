/// "Did you mean": one rule for the command line (unknown commands, help topics) and the
/// recipe side (unknown fields and values). The recipes' Lua kit has its own (kit.suggest),
/// which does not count a swap of neighbours as one edit.

/// The closest allowed name within a small edit distance: one edit away (a swap of two
/// neighbours counts as one) or a prefix first (`rnus` is `runs`, not `run`), then the
/// nearest within a third of the word's length.
public func suggestion(_ word: String, _ options: [String]) -> String? {
    let w = Array(word.lowercased().utf8)
    var best: (String, Int)? = nil
    for o in options {
        let ob = Array(o.lowercased().utf8)
        // In half edits: one edit (2) or an abbreviation (3) beats anything further,
        // whatever the order of `options`.
        var d = 2 * editDistance(w, ob)
        if d > 2, w.count >= 2, ob.starts(with: w) { d = 3 }
        if d <= 2 * max(2, w.count / 3), best == nil || d < best!.1 { best = (o, d) }
    }
    return best?.0
}

public func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var prev2 = prev
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = Swift.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            // Two neighbours swapped is one edit (optimal string alignment).
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { cur[j] = Swift.min(cur[j], prev2[j - 2] + 1) }
        }
        prev2 = prev
        swap(&prev, &cur)
    }
    return prev[b.count]
}
