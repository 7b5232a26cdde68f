import BatonBase

/// Where one stage call (id, occurrence) stands in a journal's fold. Decided in one place,
/// `RunHistory`'s fold: a call still open when a later life of the run begins, or when the
/// journal ends without a live runner, is `unfinished` (its runner died).
public enum CallState: Sendable, Equatable, CustomStringConvertible {
    /// Made by the event that is being folded (never seen once the fold returns).
    case new
    /// An attempt is running.
    case running
    /// Between attempts (a retry's backoff).
    case waiting
    /// Over, with the stage's status.
    case ended(StageStatus)
    /// Its runner died while it was open.
    case unfinished

    /// The word the views and the report use: running, waiting, passed, failed, ..., unfinished.
    public var rawValue: String {
        switch self {
        case .new: return "new"
        case .running: return "running"
        case .waiting: return "waiting"
        case let .ended(s): return s.rawValue
        case .unfinished: return "unfinished"
        }
    }

    public init?(rawValue: String) {
        switch rawValue {
        case "new": self = .new
        case "running": self = .running
        case "waiting": self = .waiting
        case "unfinished": self = .unfinished
        default:
            guard let s = StageStatus(rawValue: rawValue) else { return nil }
            self = .ended(s)
        }
    }

    public var description: String { rawValue }
    public var isOpen: Bool { self == .running || self == .waiting }
    public var ended: StageStatus? { if case let .ended(s) = self { return s }; return nil }
}
