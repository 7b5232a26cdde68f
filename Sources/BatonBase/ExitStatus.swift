import Glibc

/// Baton's exit statuses: the guide's table (docs/guide.md), in one place. Every error kind
/// carries one of these; no throw site writes a number.
public struct ExitStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// 0: success (also a successful dry run).
    public static let success = ExitStatus(rawValue: 0)
    /// 1: a stage failed, or the recipe raised an error (a journal that cannot be written too).
    public static let failure = ExitStatus(rawValue: 1)
    /// 2: a gate ran out of iterations.
    public static let gateExhausted = ExitStatus(rawValue: 2)
    /// 3: usage or configuration error: bad arguments, unreadable or invalid recipe, a wrong field.
    public static let usage = ExitStatus(rawValue: 3)
    /// 4: a preflight check failed (fail-closed).
    public static let preflightFailed = ExitStatus(rawValue: 4)
    /// 5..99: chosen by the recipe with `baton.fail(message, {code = N})`.
    public static let recipeChosen: ClosedRange<Int32> = 5...99
    /// 124: the run budget (`--budget`, `baton.budget`) was exceeded; ended like a cancel.
    /// (timeout(1)'s code for the same thing.)
    public static let budgetExceeded = ExitStatus(rawValue: 124)
    /// 128 + n: ended by signal n (SIGHUP 129, SIGINT 130, SIGTERM 143); final.json is still written.
    public static func signal(_ sig: Int32) -> ExitStatus { ExitStatus(rawValue: 128 + sig) }
    public static let hangup = signal(SIGHUP)
    public static let interrupted = signal(SIGINT)
    public static let terminated = signal(SIGTERM)

    /// The table as the guide prints it: (code or range, meaning), in order.
    public static let table: [(codes: String, meaning: String)] = [
        ("0", "success"), ("1", "failure"), ("2", "gate exhausted"), ("3", "usage"),
        ("4", "preflight failed"), ("5..99", "recipe chosen"), ("124", "run budget exceeded"),
        ("129 / 130 / 143", "signal"),
    ]

    /// The table in one line, as `baton --help` says it: "0 success, 1 failure, ...".
    public static var summary: String { table.map { "\($0.codes) \($0.meaning)" }.joined(separator: ", ") }

    public var description: String { String(rawValue) }
}
