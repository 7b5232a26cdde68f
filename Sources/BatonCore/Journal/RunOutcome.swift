import BatonBase

/// How a run ended, as final.json, the `final` event and `status` spell it; `running` is what
/// persistFinal writes while the run goes on. One enum for every writer and reader.
public enum RunOutcome: String, CaseIterable, Sendable {
    case succeeded, failed, cancelled, dry_run, running

    /// A status read from disk; a word this version does not know counts as `failed`
    /// (a reader never shows a run as having succeeded when it cannot tell).
    public init(reading word: String?) { self = word.flatMap(RunOutcome.init(rawValue:)) ?? .failed }

    /// Whether the run is over (everything but `running`).
    public var isEnding: Bool { self != .running }
}
