import BatonBase

/// How a gate decides each iteration.
public enum GateDecider {
    /// The recipe's `check(iteration)`: its returned table (nil: none, or nothing JSON can hold).
    case check((Int) throws -> JSON?)
    /// A command whose output's last JSON object is the decision.
    case command(Command)
}

/// One gate: up to `maxIterations` decisions until one approves.
public struct GateSpec {
    public var name: String
    public var decider: GateDecider
    public var maxIterations = 1
    /// The decision when `check` or the command gives none.
    public var fallback: JSON?
    public var cwd: String?
    /// Over the run's environment, for the command.
    public var env: [String: String] = [:]
    public var timeout: Double?
    /// The recipe's `onReject(decision, iteration)`, between a rejection and the next iteration.
    public var onReject: ((JSON, Int) throws -> Void)?
    /// Told of each decision once it is journaled (the terminal's line).
    public var onDecision: ((GateDecision) -> Void)?

    public init(name: String, decider: GateDecider) { self.name = name; self.decider = decider }
}

/// One iteration's decision.
public struct GateDecision {
    public var iteration: Int
    public var maxIterations: Int
    public var approved: Bool
    public var issues: JSON
    /// The decision as the recipe sees it: `approved`, `issues`, what else it said,
    /// `iteration` and `fallback_used`.
    public var json: JSON

    /// "approved", "approved (notes: ...)" or "rejected: ...". (Issues of an approved decision
    /// are notes, warnings, not the reasons of a rejection.)
    public var verdict: String {
        if !approved { return "rejected: " + GateDecision.issueText(issues) }
        let hasIssues = !(issues.arrayValue?.isEmpty ?? false)
        return "approved" + (hasIssues ? " (notes: \(GateDecision.issueText(issues)))" : "")
    }

    public static func issueText(_ issues: JSON) -> String {
        let items = issues.arrayValue ?? [issues]
        if items.isEmpty { return "(no issues given)" }
        return items.map { $0.stringValue ?? $0.encoded() }.joined(separator: "; ")
    }

    /// {approved: bool, issues: [...]} or nil.
    public static func normalize(_ v: JSON) -> JSON? {
        guard case .object = v, let a = v["approved"]?.boolValue else { return nil }
        var issues = v["issues"] ?? .array([])
        if case .string = issues { issues = .array([issues]) }
        if case .null = issues { issues = .array([]) }
        if case .object(let p) = issues, p.isEmpty { issues = .array([]) }
        return v.setting("approved", .bool(a)).setting("issues", issues)
    }
}

public enum GateOutput {
    /// The last JSON object printed: tries each '{' from the end up to the last '}'.
    public static func lastObject(_ s: String) -> JSON? {
        let u = Array(s.utf8)
        guard let end = u.lastIndex(of: UInt8(ascii: "}")) else { return nil }
        var i = end
        while i >= 0 {
            if u[i] == UInt8(ascii: "{"), let v = try? JSON.parse(Array(u[i...end])), case .object = v { return v }
            i -= 1
        }
        return nil
    }
}

extension RunContext {
    /// Runs a gate: each iteration's decision journaled, until one approves (returned) or
    /// none is left (`PrimitiveError`, exit status 4). In a dry run, approved at once.
    public func gate(_ spec: GateSpec) throws -> GateDecision {
        let exec = GateExecution(spec: spec, context: self)
        try drive(exec)
        if let e = exec.error { throw e }
        guard let d = exec.last else { throw LoopInterrupted() }
        return d
    }
}

/// A gate as a loop task: its command runs as a sub-task; it stops for its caller to run
/// `check` and `onReject`.
final class GateExecution: CallerTask {
    enum Phase {
        case check(Int)
        case command(Int, CommandRun)
        case reject(Int)
        case finished
    }

    let spec: GateSpec
    unowned let context: RunContext
    var phase = Phase.finished
    private(set) var phaseNumber = 0
    private(set) var last: GateDecision?
    private(set) var error: PrimitiveError?
    var cancelled = false

    init(spec: GateSpec, context: RunContext) {
        self.spec = spec
        self.context = context
        start(1)
    }

    var label: WaitLabel { WaitLabel(.gate, spec.name) }
    var fds: [Int32] { [] }
    var heartbeatEvery: Double? { nil }
    var command: CommandRun? { if case let .command(_, c) = phase { return c }; return nil }
    var job: Job? { command?.job }
    var nextWake: Double? { command?.nextWake }
    var isFinished: Bool {
        if case .finished = phase { return true }
        return cancelled && command == nil
    }
    var needsCaller: Bool {
        switch phase {
        case .check, .reject: return !cancelled
        case .command, .finished: return false
        }
    }

    func cancel(force: Bool) {
        cancelled = true
        command?.cancel(force: force)
    }

    func interrupted() {}

    func start(_ iteration: Int) {
        if context.dryRun {
            return decided(iteration, .object([("approved", .bool(true)), ("issues", .array([]))]))
        }
        switch spec.decider {
        case .check:
            phase = .check(iteration)
        case let .command(cmd):
            var env = context.baseEnvironment
            for (k, v) in spec.env { env[k] = v }
            env["BATON_GATE"] = spec.name
            env["BATON_GATE_ITERATION"] = String(iteration)
            let run = CommandRun.start(cmd, cwd: spec.cwd, env: env, timeout: spec.timeout)
            phase = .command(iteration, run)
            phaseNumber += 1
            if run.isFinished { commandEnded(iteration, cmd, run.outcome) }
        }
    }

    func advance(now: Double) {
        guard case let .command(i, run) = phase, case let .command(cmd) = spec.decider else { return }
        run.advance(now: now)
        if run.isFinished { commandEnded(i, cmd, run.outcome) }
    }

    func commandEnded(_ i: Int, _ cmd: Command, _ o: CommandRun.Outcome) {
        phaseNumber += 1
        if o.interrupted { phase = .finished; return }
        if let d = GateOutput.lastObject(o.stdoutText).flatMap(GateDecision.normalize) {
            return decided(i, d)
        }
        if let f = spec.fallback, let d = GateDecision.normalize(f) {
            let note = o.ok ? "no JSON object with 'approved' in the command's output"
                : "the command failed: \(o.failureDescription)"
            return decided(i, d, fallbackUsed: true, note: note)
        }
        let how = o.ok ? "exit 0" : o.failureDescription
        error =
            PrimitiveError(message: "gate '\(spec.name)': '\(cmd.display)' printed no JSON object with 'approved' "
                    + "(\(how))"
                                   + " and no fallback is set", status: .failure, kind: "gate")
        phase = .finished
    }

    func callBack() throws {
        switch phase {
        case let .check(i):
            guard case let .check(check) = spec.decider else { return }
            let v = try check(i)
            if let v, let d = GateDecision.normalize(v) { return decided(i, d) }
            if let f = spec.fallback, let d = GateDecision.normalize(f) {
                return decided(i, d, fallbackUsed: true, note: "check returned no {approved = bool} table")
            }
            phase = .finished
            throw PrimitiveError(message: "gate '\(spec.name)': check must return a table like "
                                     + "{approved = true|false, issues = {...}}", status: .failure, kind: "gate")
        case let .reject(i):
            try spec.onReject?(last?.json ?? .object([]), i)
            start(i + 1)
        case .command, .finished:
            break
        }
    }

    func decided(_ i: Int, _ d: JSON, fallbackUsed: Bool = false, note: String? = nil) {
        let approved = d["approved"]?.boolValue ?? false
        let issues = d["issues"] ?? .array([])
        let max = spec.maxIterations
        context.record(.gate(GateRecord(name: spec.name, iteration: i, max: max, approved: approved, issues: issues,
                                        fallbackUsed: fallbackUsed, note: note)))
        phase = .finished
        if context.fatal != nil { return }
        let json = d.setting("iteration", .int(Int64(i))).setting("fallback_used", .bool(fallbackUsed))
        let decision = GateDecision(iteration: i, maxIterations: max, approved: approved, issues: issues, json: json)
        last = decision
        spec.onDecision?(decision)
        if approved { return }
        if i < max, spec.onReject != nil { phase = .reject(i); return }
        if i < max { return start(i + 1) }
        let issueText = GateDecision.issueText(json["issues"] ?? .array([]))
        error = PrimitiveError(message: "gate '\(spec.name)' rejected \(max) time\(max == 1 ? "" : "s"): \(issueText)",
                               status: .gateExhausted, kind: "gate", attachment: ("decision", json))
    }
}
