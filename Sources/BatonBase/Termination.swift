/// How a process ended, decoded once from a wait status.
public enum Termination: Equatable, Sendable {
    case exited(Int32)
    case signaled(Int32)

    public init(waitStatus st: Int32) {
        if (st & 0x7f) == 0 { self = .exited((st >> 8) & 0xff) } else { self = .signaled(st & 0x7f) }
    }

    public var exitCode: Int32? { if case let .exited(c) = self { return c }; return nil }
    public var signal: Int32? { if case let .signaled(s) = self { return s }; return nil }
    public var succeeded: Bool { self == .exited(0) }

    /// Shell conventions for a command that could not start.
    public static let notExecutable: Int32 = 126
    public static let notFound: Int32 = 127
}
