import CBatonSys
import Glibc

public struct StageSpec: Sendable {
    public var id: String
    public var command: Command
    public var cwd: String?
    public var env: [String: String] = [:]
    public var stdin: String?
    public var timeout: Double?
    public var grace: Double = 10
    public var retries: Int = 0
    public var retryOn: Set<FailureClass> = [.transient]
    public var backoff = Backoff()
    public var transient = TransientRules()
    public var breaker: Int?
    public var requireFiles: [String] = []
    public var allowFail = false

    public init(id: String, command: Command) { self.id = id; self.command = command }

    /// What resume compares: the command, cwd, env and stdin.
    public var fingerprint: String {
        var s = command.json.encoded() + "\u{1}" + (cwd ?? "") + "\u{1}"
        for k in env.keys.sorted() { s += k + "=" + env[k]! + "\u{2}" }
        s += "\u{1}" + (stdin ?? "")
        return FailureSignature.fnv1a(s)
    }
}

public enum StageStatus: String, Sendable {
    case passed, failed, timed_out, cancelled
}

public struct StageResult: Sendable {
    public var id: String
    public var occurrence: Int
    public var status: StageStatus
    public var exit: Int32?
    public var signal: Int32?
    public var attempts: Int
    public var duration: Double
    public var stdout: String
    public var stderr: String
    public var logs: (out: String, err: String)
    public var failureClass: FailureClass?
    public var signature: String?
    public var pid: Int32?
    public var replayed = false
    public var dry = false
    /// Why it failed, in one sentence (missing files, breaker, spawn error...).
    public var message: String?
    public var breakerOpen = false

    public var ok: Bool { status == .passed }

    public init(id: String, occurrence: Int, status: StageStatus, attempts: Int, duration: Double,
                logs: (out: String, err: String)) {
        self.id = id; self.occurrence = occurrence; self.status = status; self.attempts = attempts
        self.duration = duration; self.stdout = ""; self.stderr = ""; self.logs = logs
    }

    public var summary: String {
        if ok { return "stage '\(id)' passed" }
        var s = "stage '\(id)' \(status == .timed_out ? "timed out" : status.rawValue)"
        if let e = exit, status == .failed { s += " with exit code \(e)" }
        if let sig = signal { s += " (signal \(sig))" }
        if attempts > 1 { s += " after \(attempts) attempts" }
        if let m = message { s += ": \(m)" }
        else { let l = FailureSignature.lastNonEmptyLine(stderr); if !l.isEmpty { s += ": \(l.prefix(200))" } }
        return s
    }
}

/// Reads at most the last `limit` bytes of a file.
func readTail(_ path: String, limit: Int = 65536) -> String {
    if FileIO.size(path) == 0 { return "" }   // one stat instead of open+fstat+close
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return "" }
    defer { close(fd) }
    return readTail(fd: fd, limit: limit)
}

/// Reads at most the last `limit` bytes of an open file.
func readTail(fd: Int32, limit: Int = 65536) -> String {
    var st = stat()
    fstat(fd, &st)
    let size = Int(st.st_size)
    let start = max(0, size - limit)
    var buf = [UInt8](repeating: 0, count: size - start)
    var got = 0
    while got < buf.count {
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, $0.count - got, off_t(start + got)) }
        if n <= 0 { break }
        got += n
    }
    return String(decoding: buf[0..<got], as: UTF8.self)
}

/// One stage call: its attempts, retries and backoff, driven by the Reactor.
/// Output goes straight from the child into the log files (no copy through
/// Baton, so a stage that prints gigabytes costs no memory); the tail is read
/// back when the attempt ends.
public final class StageExecution {
    enum Phase {
        case waiting(until: Double)     // before the first attempt or in backoff
        case running
        case terminating(killAt: Double) // SIGTERM sent to the group
        case finished
    }

    public let spec: StageSpec
    public let occurrence: Int
    unowned let context: RunContext
    var phase: Phase
    public private(set) var attempt = 0
    public private(set) var pid: pid_t = 0
    var pidfd: Int32 = -1
    var attemptStart = 0.0
    var firstStart = 0.0
    var deadline: Double?
    var timedOut = false
    var cancelRequested = false
    public private(set) var result: StageResult?
    var logs: (out: String, err: String) = ("", "")
    /// The attempt's log files, open until the attempt ends (its tails are read from them).
    var outFD: Int32 = -1, errFD: Int32 = -1
    var lastResult: StageResult?
    public var onFinish: ((StageResult) -> Void)?

    init(spec: StageSpec, occurrence: Int, context: RunContext) {
        self.spec = spec
        self.occurrence = occurrence
        self.context = context
        self.phase = .waiting(until: 0)
    }

    public var isFinished: Bool { if case .finished = phase { return true }; return false }

    var pollFD: Int32? { if case .running = phase, pidfd >= 0 { return pidfd }; if case .terminating = phase, pidfd >= 0 { return pidfd }; return nil }

    var nextWake: Double? {
        switch phase {
        case let .waiting(until): return until
        case .running: return deadline
        case let .terminating(killAt): return pidfd >= 0 ? killAt : min(killAt, Clock.monotonic() + 0.02)
        case .finished: return nil
        }
    }

    /// Ends the stage: SIGTERM to its group now, SIGKILL after `grace` (or at once if already terminating).
    public func cancel(force: Bool = false) {
        cancelRequested = true
        switch phase {
        case .waiting:
            finish(with: makeResult(status: .cancelled, exit: nil, signal: nil, duration: 0, message: "cancelled before it started"))
        case .running:
            terminate(grace: force ? 0 : spec.grace)
        case .terminating:
            if force { kill(-pid, SIGKILL); phase = .terminating(killAt: 0) }
        case .finished: break
        }
    }

    func terminate(grace: Double) {
        kill(-pid, SIGTERM)
        kill(-pid, SIGCONT)
        phase = .terminating(killAt: Clock.monotonic() + grace)
    }

    /// Moves the state machine forward; never blocks.
    func advance(now: Double) {
        switch phase {
        case let .waiting(until):
            if now >= until { startAttempt() }
        case .running:
            if reapLeader() { return }
            if let d = deadline, now >= d {
                timedOut = true
                terminate(grace: spec.grace)
            }
        case let .terminating(killAt):
            if pidfd >= 0, reapLeader() { return }
            if now >= killAt { kill(-pid, SIGKILL) }
            if pidfd < 0, !groupAlive() { attemptEnded(exitStatus: lastStatus) }
        case .finished: break
        }
    }

    var lastStatus: Int32 = 0

    /// Reaps the group leader if it exited. Returns true when the attempt is over.
    func reapLeader() -> Bool {
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        guard r == pid else { return false }
        close(pidfd); pidfd = -1
        lastStatus = status
        // The leader is gone; anything left in its group goes too.
        if groupAlive() {
            if case .terminating = phase {} else { terminate(grace: min(spec.grace, 2)) }
            return false
        }
        attemptEnded(exitStatus: status)
        return true
    }

    /// Reaps our zombies in the group, then asks whether anyone is left.
    func groupAlive() -> Bool {
        var st: Int32 = 0
        while waitpid(-pid, &st, WNOHANG) > 0 {}
        return kill(-pid, 0) == 0
    }

    func startAttempt() {
        attempt += 1
        timedOut = false
        logs = context.dir.stageLogs(spec.id, attempt: context.nextLogNumber(spec.id))
        var fields: [(String, JSON)] = [("id", .string(spec.id)), ("occurrence", .int(Int64(occurrence))), ("attempt", .int(Int64(attempt)))]
        switch spec.command {
        case let .argv(a): fields.append(("argv", .array(a.map(JSON.string))))
        case let .shell(s): fields.append(("shell", .string(s)))
        }
        let cwd = spec.cwd.map(FileIO.absolute) ?? FileIO.currentDirectory()
        fields.append(("cwd", .string(cwd)))
        fields.append(("fingerprint", .string(spec.fingerprint)))
        fields.append(("logs", .object([("stdout", .string(logs.out)), ("stderr", .string(logs.err))])))
        attemptStart = Clock.monotonic()
        if attempt == 1 { firstStart = attemptStart }
        do {
            context.ensureStageDir(spec.id)
            outFD = open(logs.out, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if outFD < 0 { throw SystemError("open", logs.out) }
            errFD = open(logs.err, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if errFD < 0 { throw SystemError("open", logs.err) }
            var inFD: Int32 = -1
            if let text = spec.stdin {
                inFD = baton_memfd("baton-stdin")
                if inFD < 0 { throw SystemError("memfd_create", "stdin") }
                try Array(text.utf8).withUnsafeBytes { try FileIO.writeAll(inFD, $0, path: "stdin") }
                lseek(inFD, 0, SEEK_SET)
            }
            defer { if inFD >= 0 { close(inFD) } }
            var env = context.baseEnvironment
            for (k, v) in spec.env { env[k] = v }
            env["BATON_STAGE"] = spec.id
            pid = try Spawner.spawn(argv: spec.command.argv, env: env, cwd: cwd, stdin: inFD,
                                    stdout: outFD, stderr: errFD)
            pidfd = baton_pidfd_open(pid)
            context.spawnedAny = true   // (baton_spawn told the crash guard about the group)
            fields.append(("pid", .int(Int64(pid))))
            context.record("stage_started", fields)
            deadline = spec.timeout.map { attemptStart + $0 }
            phase = .running
        } catch {
            // Could not start: a deterministic failure (a missing command never gets better).
            closeLogs()
            context.record("stage_started", fields)
            let msg = "\(error)"
            _ = try? FileIO.appendLocked(logs.err, Array((msg + "\n").utf8))
            let code = (error as? SpawnError)?.exitCode ?? 127   // 126: found but not executable
            var r = makeResult(status: .failed, exit: code, signal: nil, duration: Clock.monotonic() - attemptStart, message: msg)
            r.failureClass = .deterministic
            r.signature = FailureSignature.make(.deterministic, exit: code, signal: nil, stderrTail: msg)
            concludeAttempt(r)
        }
    }

    func closeLogs() {
        if outFD >= 0 { close(outFD); outFD = -1 }
        if errFD >= 0 { close(errFD); errFD = -1 }
    }

    func makeResult(status: StageStatus, exit: Int32?, signal: Int32?, duration: Double, message: String?) -> StageResult {
        var r = StageResult(id: spec.id, occurrence: occurrence, status: status, attempts: attempt,
                            duration: duration, logs: logs)
        r.exit = exit; r.signal = signal; r.message = message; r.pid = pid == 0 ? nil : pid
        return r
    }

    func attemptEnded(exitStatus status: Int32) {
        baton_crash_guard_untrack(pid)
        let duration = Clock.monotonic() - attemptStart
        let exited = (status & 0x7f) == 0
        let exitCode: Int32? = exited ? (status >> 8) & 0xff : nil
        let sig: Int32? = exited ? nil : status & 0x7f
        var r = makeResult(status: .passed, exit: exitCode, signal: sig, duration: duration, message: nil)
        r.stdout = outFD >= 0 ? readTail(fd: outFD) : readTail(r.logs.out)
        r.stderr = errFD >= 0 ? readTail(fd: errFD) : readTail(r.logs.err)
        closeLogs()
        if cancelRequested && !timedOut {
            r.status = .cancelled
        } else if timedOut {
            r.status = .timed_out
            r.message = "timed out after \(Clock.human(spec.timeout ?? 0))"
        } else if exitCode != 0 {
            r.status = .failed
        } else {
            let missing = spec.requireFiles.filter { f in
                let p = f.hasPrefix("/") ? f : FileIO.join(spec.cwd.map(FileIO.absolute) ?? FileIO.currentDirectory(), f)
                return (FileIO.size(p) ?? 0) == 0
            }
            if !missing.isEmpty {
                r.status = .failed
                r.message = "required file\(missing.count > 1 ? "s" : "") missing or empty: \(missing.joined(separator: ", "))"
            }
        }
        if !r.ok {
            let cls = r.message != nil && r.status == .failed
                ? FailureClass.deterministic
                : spec.transient.classify(timedOut: timedOut || r.status == .cancelled, signal: sig, exit: exitCode, stderrTail: r.stderr)
            r.failureClass = cls
            r.signature = FailureSignature.make(cls, exit: exitCode, signal: sig,
                                                stderrTail: r.message.map { r.stderr + "\n" + $0 } ?? r.stderr)
        }
        concludeAttempt(r)
    }

    func concludeAttempt(_ r0: StageResult) {
        var r = r0
        var fields: [(String, JSON)] = [
            ("id", .string(spec.id)), ("occurrence", .int(Int64(occurrence))), ("attempt", .int(Int64(attempt))),
            ("exit", r.exit.map { .int(Int64($0)) } ?? .null), ("signal", r.signal.map { .int(Int64($0)) } ?? .null),
            ("status", .string(r.status.rawValue)),
            ("failure_class", r.failureClass.map { .string($0.rawValue) } ?? .null),
            ("signature", r.signature.map(JSON.string) ?? .null),
            ("duration_ms", .int(Int64(r.duration * 1000))),
            ("logs", .object([("stdout", .string(r.logs.out)), ("stderr", .string(r.logs.err))])),
            ("fingerprint", .string(spec.fingerprint)),
            ("replayed", .bool(false)),
        ]
        if let m = r.message { fields.append(("message", .string(m))) }
        var retry = false
        if !r.ok, r.status != .cancelled, let sig = r.signature, let cls = r.failureClass {
            let seen = context.countSignature(sig)
            if let b = spec.breaker, seen >= b {
                r.breakerOpen = true
                r.message = "circuit breaker open: the same failure (signature \(sig)) happened \(seen) times in this run" + (r.message.map { "; " + $0 } ?? "")
                fields.append(("breaker_open", .bool(true)))
            } else if attempt <= spec.retries, spec.retryOn.contains(cls), !context.interrupted {
                retry = true
            }
        }
        fields.append(("final", .bool(!retry)))
        context.record("stage_finished", fields)
        lastResult = r
        if retry {
            let delay = spec.backoff.delay(afterAttempt: attempt)
            context.record("log", [("level", .string("info")),
                                   ("message", .string("retrying stage '\(spec.id)' in \(Clock.human(delay)) (\(r.failureClass!.rawValue) failure, attempt \(attempt) of \(spec.retries + 1))")),
                                   ("fields", .object([("stage", .string(spec.id))]))], sync: false)
            phase = .waiting(until: Clock.monotonic() + delay)
        } else {
            r.duration = Clock.monotonic() - firstStart
            finish(with: r)
        }
    }

    func finish(with r: StageResult) {
        phase = .finished
        result = r
        context.stageConcluded(r)
        onFinish?(r)
    }
}
