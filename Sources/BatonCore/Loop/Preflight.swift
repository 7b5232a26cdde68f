import BatonBase
import Glibc

/// The checks a preflight runs that need no Lua: their evaluation, and the words that
/// explain a failure. (`check = function` checks are the recipe's: `PreflightItem.function`.)
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
        if let o = immediate() { return o }
        guard case let .command(cmd, cwd, timeout) = self else { return Outcome(ok: false, detail: "") }
        let o = CommandRun.run(cmd, cwd: cwd, env: environment, timeout: timeout, on: loop,
                               label: WaitLabel(.preflight, cmd.display))
        return Self.outcome(of: o, timeout: timeout)
    }

    /// A command check's outcome from its command's.
    static func outcome(of o: CommandRun.Outcome, timeout: Double) -> Outcome {
        if o.ok { return Outcome(ok: true, detail: "exit 0") }
        return Outcome(ok: false, detail: o.timedOut ? "timed out after \(Clock.human(timeout))" : o.failureDescription,
                       interrupted: o.interrupted)
    }

    /// The outcome of a check that runs no command (nil for a command check).
    func immediate() -> Outcome? {
        switch self {
        case let .path(p, directory, executable):
            if !FileIO.exists(p) { return Outcome(ok: false, detail: "missing") }
            if directory && !FileIO.isDirectory(p) {
                return Outcome(ok: false, detail: "exists but is not a directory")
            }
            if executable && access(p, X_OK) != 0 { return Outcome(ok: false, detail: "exists but is not executable") }
            return Outcome(ok: true, detail: FileIO.isDirectory(p) ? "directory exists" : "exists")
        case .command:
            return nil
        case let .env(name):
            let set = getenv(name).map { $0.pointee != 0 } ?? false
            return Outcome(ok: set, detail: set ? "set" : "not set or empty")
        case let .pgrep(pattern):
            if let own = ProcessTable.selfMatch(pattern) {
                let first = pattern.first.map(String.init) ?? ""
                return Outcome(ok: false, detail: "a 'pgrep -f' wait on this pattern matches its own command line "
                               + "('\(own)'), so it would never end; use a pattern such as "
                                   + "'[\(first)]\(pattern.dropFirst())'")
            }
            let n = ProcessTable.matching(pattern)?.count ?? 0
            return Outcome(ok: true, detail: "no self-match; \(n) process\(n == 1 ? "" : "es") match now")
        }
    }
}

/// One check of a preflight: one that needs no Lua, or the recipe's `check` function
/// (which returns ok and a detail; it throws only to abort the run).
public struct PreflightItem {
    public enum Kind {
        case check(PreflightCheck)
        case function(() throws -> (ok: Bool, detail: String))
    }

    public var kind: Kind
    /// The `name` the recipe gave it.
    public var name: String?
    /// Its place in the list, from 1 (a nameless function is "check N").
    public var index: Int

    public init(_ kind: Kind, name: String?, index: Int) { self.kind = kind; self.name = name; self.index = index }

    /// How the journal names it: "path", "cmd", "env", "pgrep" or "check".
    var kindWord: String {
        if case let .check(c) = kind { return c.kind }
        return "check"
    }
}

/// A preflight: checks run in order, all of them, before the recipe commits to anything.
public struct PreflightSpec {
    public var name = "preflight"
    public var policy = PreflightPolicy.fail
    public var checks: [PreflightItem] = []
    public init() {}
}

/// What a preflight found.
public struct PreflightReport {
    public var ok: Bool
    /// The report table: name, policy, ok, checks.
    public var json: JSON
    /// "preflight 'x' failed: ...": a warning (policy warn, or a dry run) when not ok.
    public var failure: String?
}

extension RunContext {
    /// Runs every check (command checks on the loop, functions on the caller's side),
    /// journals the outcome, and with policy fail throws `PrimitiveError` (exit status 5)
    /// when any check failed (not in a dry run: there it is a warning).
    public func preflight(_ spec: PreflightSpec) throws -> PreflightReport {
        let exec = PreflightExecution(spec: spec, context: self)
        try drive(exec)
        if exec.cancelled { throw LoopInterrupted() }   // (its command was ended: the run is stopping)
        let ok = exec.failures.isEmpty
        record(.preflight(PreflightRecord(name: spec.name,
                                          policy: spec.policy,
                                          ok: ok,
                                          dryRun: dryRun,
                                          checks: exec.results)))
        try checkFatal()
        let json: JSON = .object([("name", .string(spec.name)), ("policy", .string(spec.policy.rawValue)),
                                  ("ok", .bool(ok)), ("checks", .array(exec.results.map(\.json)))])
        let failure = ok ? nil : "preflight '\(spec.name)' failed: " + exec.failures.joined(separator: "; ")
        if let m = failure, spec.policy == .fail && !dryRun {
            throw PrimitiveError(message: m, status: .preflightFailed, kind: "preflight", attachment: ("report", json))
        }
        return PreflightReport(ok: ok, json: json, failure: failure)
    }
}

/// A preflight as a loop task: command checks run as its sub-tasks, the others at once;
/// it stops for its caller to run a `check` function.
final class PreflightExecution: CallerTask {
    let spec: PreflightSpec
    unowned let context: RunContext
    /// The check in progress (checks.count: all done).
    var next = 0
    var command: CommandRun?
    private(set) var phaseNumber = 0
    private(set) var results: [PreflightRecord.Check] = []
    private(set) var failures: [String] = []
    var cancelled = false

    init(spec: PreflightSpec, context: RunContext) {
        self.spec = spec
        self.context = context
        runChecks()
    }

    var current: PreflightItem? { next < spec.checks.count ? spec.checks[next] : nil }
    var label: WaitLabel {
        if case let .check(.command(cmd, _, _)) = current?.kind { return WaitLabel(.preflight, cmd.display) }
        return WaitLabel(.preflight, spec.name)
    }
    var fds: [Int32] { [] }
    var heartbeatEvery: Double? { nil }
    var job: Job? { command?.job }
    var nextWake: Double? { command?.nextWake }
    var isFinished: Bool { current == nil || (cancelled && command == nil) }
    var needsCaller: Bool {
        if cancelled { return false }
        if case .function = current?.kind { return true }
        return false
    }

    func cancel(force: Bool) {
        cancelled = true
        command?.cancel(force: force)
    }

    func interrupted() {}

    /// Runs the checks that need no one else, up to a command (started) or a function.
    func runChecks() {
        while !cancelled, let item = current, case let .check(check) = item.kind {
            if let o = check.immediate() {
                done(item, target: check.target, ok: o.ok, detail: o.detail)
                continue
            }
            guard case let .command(cmd, cwd, timeout) = check else { return }
            let run = CommandRun.start(cmd, cwd: cwd, env: context.baseEnvironment, timeout: timeout)
            command = run
            phaseNumber += 1
            if !run.isFinished { return }
            commandEnded(item, check, run.outcome, timeout: timeout)
        }
    }

    func advance(now: Double) {
        guard let run = command, let item = current, case let .check(check) = item.kind,
              case let .command(_, _, timeout) = check else { return }
        run.advance(now: now)
        if run.isFinished {
            commandEnded(item, check, run.outcome, timeout: timeout)
            runChecks()
        }
    }

    func commandEnded(_ item: PreflightItem, _ check: PreflightCheck, _ o: CommandRun.Outcome, timeout: Double) {
        command = nil
        phaseNumber += 1
        if o.interrupted { cancelled = true; return }
        let out = PreflightCheck.outcome(of: o, timeout: timeout)
        done(item, target: check.target, ok: out.ok, detail: out.detail)
    }

    func callBack() throws {
        guard let item = current, case let .function(f) = item.kind else { return }
        let (ok, detail) = try f()
        done(item, target: item.name ?? "check \(item.index)", ok: ok, detail: detail)
        runChecks()
    }

    func done(_ item: PreflightItem, target t: String, ok: Bool, detail: String) {
        var target = t
        if let label = item.name, item.kindWord != "check" { target = "\(label) (\(target))" }
        results.append(PreflightRecord.Check(kind: item.kindWord, target: target, ok: ok, detail: detail))
        if !ok { failures.append("\(item.kindWord) \(target): \(detail)") }
        next += 1
    }
}
