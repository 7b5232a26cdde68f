import BatonBase
import Glibc

/// The checks a preflight runs that need no Lua: their evaluation, and the words that
/// explain a failure. (`check = function` checks are run by the Lua binding.)
public enum PreflightCheck {
    case path(String, directory: Bool, executable: Bool)
    case command(Command, cwd: String?, timeout: Double)
    /// Set and non-empty. The value is never recorded.
    case env(String)
    /// The self-match guard of a `pgrep -f` wait on this pattern.
    case pgrep(String)

    public struct Outcome {
        public var ok: Bool
        public var detail: String
        /// A signal arrived while a command check ran.
        public var interrupted = false
    }

    public var kind: String {
        switch self {
        case .path: return "path"
        case .command: return "cmd"
        case .env: return "env"
        case .pgrep: return "pgrep"
        }
    }

    public var target: String {
        switch self {
        case let .path(p, _, _): return p
        case let .command(c, _, _): return c.display
        case let .env(name): return name
        case let .pgrep(pattern): return pattern
        }
    }

    /// Evaluates the check; a command check runs on `loop` (everything else goes on meanwhile).
    public func evaluate(environment: [String: String], loop: EventLoop) -> Outcome {
        switch self {
        case let .path(p, directory, executable):
            if !FileIO.exists(p) { return Outcome(ok: false, detail: "missing") }
            if directory && !FileIO.isDirectory(p) { return Outcome(ok: false, detail: "exists but is not a directory") }
            if executable && access(p, X_OK) != 0 { return Outcome(ok: false, detail: "exists but is not executable") }
            return Outcome(ok: true, detail: FileIO.isDirectory(p) ? "directory exists" : "exists")
        case let .command(cmd, cwd, timeout):
            let o = CommandRun.run(cmd, cwd: cwd, env: environment, timeout: timeout, on: loop,
                                   label: WaitLabel(.preflight, cmd.display))
            if o.ok { return Outcome(ok: true, detail: "exit 0") }
            return Outcome(ok: false, detail: o.timedOut ? "timed out after \(Clock.human(timeout))" : o.failureDescription,
                           interrupted: o.interrupted)
        case let .env(name):
            let set = getenv(name).map { $0.pointee != 0 } ?? false
            return Outcome(ok: set, detail: set ? "set" : "not set or empty")
        case let .pgrep(pattern):
            if let own = ProcessTable.selfMatch(pattern) {
                let first = pattern.first.map(String.init) ?? ""
                return Outcome(ok: false, detail: "a 'pgrep -f' wait on this pattern matches its own command line ('\(own)'), so it would never end; use a pattern such as '[\(first)]\(pattern.dropFirst())'")
            }
            let n = ProcessTable.matching(pattern)?.count ?? 0
            return Outcome(ok: true, detail: "no self-match; \(n) process\(n == 1 ? "" : "es") match now")
        }
    }
}
