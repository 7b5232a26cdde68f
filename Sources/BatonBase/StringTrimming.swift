extension StringProtocol {
    /// Without leading and trailing characters that satisfy `drop`.
    public func trimming(_ drop: (Character) -> Bool) -> String {
        var s = Substring(self)
        while let f = s.first, drop(f) { s.removeFirst() }
        while let l = s.last, drop(l) { s.removeLast() }
        return String(s)
    }

    public func trimmingWhitespace() -> String { trimming { $0.isWhitespace } }

    /// Without leading and trailing characters found in `set` (Foundation-free).
    public func trimmingCharacters(in set: String) -> String { trimming { set.contains($0) } }
}
