import BatonBase
/// Failure classes and signatures: what makes a failure worth retrying, and how the
/// same failure is recognised when it happens again.
public enum FailureClass: String, Sendable, CaseIterable {
    case transient
    case deterministic
    /// No output for `noOutputTimeout` seconds: ended by Baton. Retried only when listed.
    case stalled
}

public struct TransientRules: Sendable, Equatable {
    public var exitCodes: Set<Int32> = []
    public var stderrPatterns: [String] = []
    public init(exitCodes: Set<Int32> = [], stderrPatterns: [String] = []) {
        self.exitCodes = exitCodes; self.stderrPatterns = stderrPatterns
    }

    /// Timeouts, deaths by signal and matching rules are transient; the rest deterministic.
    public func classify(timedOut: Bool, signal: Int32?, exit: Int32?, stderrTail: String) -> FailureClass {
        if timedOut || signal != nil { return .transient }
        if let e = exit, exitCodes.contains(e) { return .transient }
        for p in stderrPatterns where !p.isEmpty && stderrTail.contains(p) { return .transient }
        return .deterministic
    }
}

public enum FailureSignature {
    /// A stable hash (FNV-1a, 64 bits, as 16 hex digits) of the class, the exit code and the
    /// last non-empty stderr line with numbers and hex runs folded to `#`.
    public static func make(_ cls: FailureClass, exit: Int32?, signal: Int32?, stderrTail: String) -> String {
        let line = lastNonEmptyLine(stderrTail)
        let code = exit.map { "exit=\($0)" } ?? signal.map { "signal=\($0)" } ?? "none"
        return fnv1a("\(cls.rawValue)|\(code)|\(fold(line))")
    }

    public static func lastNonEmptyLine(_ s: String) -> String { lastNonEmptyLines(s, 1).first ?? "" }

    /// The last `n` lines that are not blank, trimmed, oldest first.
    public static func lastNonEmptyLines(_ s: String, _ n: Int) -> [String] {
        var out: [String] = []
        for line in s.split(separator: "\n", omittingEmptySubsequences: true).reversed() where out.count < n {
            let t = String(line).trimmingWhitespace()
            if !t.isEmpty { out.append(t) }
        }
        return out.reversed()
    }

    /// Folds digit runs, `0x…` literals and hex runs of 6+ characters that contain a digit.
    public static func fold(_ s: String) -> String {
        let u = Array(s.utf8)
        var out: [UInt8] = []
        var i = 0
        func isHex(_ c: UInt8) -> Bool { (48...57).contains(c) || (97...102).contains(c) || (65...70).contains(c) }
        func isWord(_ c: UInt8) -> Bool { isHex(c) || (71...90).contains(c) || (103...122).contains(c) || c == 95 }
        while i < u.count {
            let c = u[i]
            if isHex(c), i == 0 || !isWord(u[i - 1]) {
                var j = i
                var hasDigit = false
                if c == 48, i + 1 < u.count, u[i + 1] == UInt8(ascii: "x") || u[i + 1] == UInt8(ascii: "X") {
                    j = i + 2
                    while j < u.count, isHex(u[j]) { j += 1 }
                    if j > i + 2 { out.append(UInt8(ascii: "#")); i = j; continue }
                    j = i
                }
                while j < u.count, isHex(u[j]) { if (48...57).contains(u[j]) { hasDigit = true }; j += 1 }
                let end = j == u.count || !isWord(u[j])
                if end, hasDigit, j - i >= 6 || u[i..<j].allSatisfy({ (48...57).contains($0) }) {
                    out.append(UInt8(ascii: "#")); i = j; continue
                }
            }
            if (48...57).contains(c) {
                var j = i
                while j < u.count, (48...57).contains(u[j]) { j += 1 }
                out.append(UInt8(ascii: "#")); i = j; continue
            }
            out.append(c); i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func fnv1a(_ s: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for b in s.utf8 { h ^= UInt64(b); h = h &* 0x100000001b3 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

public struct Backoff: Sendable, Equatable {
    public var initial: Double = 1
    public var factor: Double = 2
    public var max: Double = 60
    public init(initial: Double = 1, factor: Double = 2, max: Double = 60) {
        self.initial = initial; self.factor = factor; self.max = max
    }
    /// Delay before attempt `n + 1`, after `n` failed attempts.
    public func delay(afterAttempt n: Int) -> Double {
        var d = initial
        if n > 1 { for _ in 1..<n { d *= factor; if d >= max { break } } }
        return Swift.min(d, max)
    }
}
