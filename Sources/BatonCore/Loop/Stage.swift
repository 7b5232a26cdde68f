import BatonBase
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
    /// A named pool (`baton.pool`) that limits how many stages run at once across the run.
    public var pool: String?
    /// Seconds without a byte on stdout or stderr (or a touch of `heartbeatFile`) that end
    /// the stage as `stalled`.
    public var noOutputTimeout: Double?
    public var heartbeatFile: String?
    /// Seconds of silence after which one `stage_stalled` event is journaled (nil: the run's default).
    public var stallWarnSec: Double?
    /// Where it runs: an executor's name (nil: the run's default executor).
    public var executor: String?
    /// Executors' options given with the stage (`runStage{<name> = {...}}`), by executor name;
    /// the one it runs on takes its own, over the run's defaults (`baton.executor(name, {...})`).
    public var executorOptions: [String: ExecutorOptions] = [:]
    /// The stage ends when its whole process group is empty, not when its leader exits
    /// (`waitFor = "group"`: a launcher that leaves its real work in the background).
    /// Timeout and cancel still end the whole group.
    public var waitForGroup = false
    /// Declared inputs and outputs (globs relative to the cwd; Cache/StageFiles.swift), whether
    /// the cache may answer (nil: `run --cache` decides), and the inputs as resolved.
    public var inputs: [String] = []
    public var outputs: [String] = []
    public var cache: Bool?
    public var inputSet: FileSet?

    public init(id: String, command: Command) { self.id = id; self.command = command }

    /// What resume compares: the command, cwd, env and stdin, and the declared inputs' content
    /// and outputs when there are any.
    public var fingerprint: String { FailureSignature.fnv1a(fingerprintText) }

    /// The text the fingerprint (and the cache's key, its SHA-256) hashes.
    public var fingerprintText: String {
        var s = command.json.encoded() + "\u{1}" + (cwd ?? "") + "\u{1}" + envText + "\u{1}" + (stdin ?? "")
        if let i = inputSet { s += "\u{1}inputs=" + i.digest }
        if !outputs.isEmpty { s += "\u{1}outputs=" + outputs.joined(separator: "\u{2}") }
        return s
    }

    /// The env table as the fingerprint (and its per-input part) hashes it: sorted `k=v` pairs.
    var envText: String {
        var e = ""
        for k in env.keys.sorted() { e += k + "=" + env[k]! + "\u{2}" }
        return e
    }

    /// Where the stage runs: its `cwd` made absolute, else the runner's.
    public var resolvedCwd: String { cwd.map(FileIO.absolute) ?? FileIO.currentDirectory() }
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
    /// The last 64 KiB the stage wrote, byte for byte (invalid UTF-8 kept).
    public var stdout: [UInt8] = []
    public var stderr: [UInt8] = []
    public var logs: StageLogs
    public var failureClass: FailureClass?
    public var signature: String?
    public var pid: Int32?
    public var replayed = false
    public var dry = false
    /// Why it failed, in one sentence (missing files, breaker, spawn error...).
    public var message: String?
    public var breakerOpen = false
    /// Declared outputs after a pass: relative path -> content hash.
    public var outputs: [(String, String)] = []
    /// Answered by the cache: the run and stage call that made the outputs.
    public var cachedFrom: CachedFrom?

    public var ok: Bool { status == .passed }
    public var key: StageKey { StageKey(id: id, occurrence: occurrence) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    public init(id: String, occurrence: Int, status: StageStatus, attempts: Int, duration: Double, logs: StageLogs) {
        self.id = id; self.occurrence = occurrence; self.status = status; self.attempts = attempts
        self.duration = duration; self.logs = logs
    }

    /// A replayed call, from its journaled `stage_finished`. Its output tails are not read
    /// here (a resume of thousands of stages would stat every log file): `readTails()`, or
    /// the Lua result's first access to `stdout`/`stderr`, reads them.
    init(replaying f: StageFinished) {
        self.init(id: f.key.id, occurrence: f.key.occurrence, status: .passed, attempts: f.attempt,
                  duration: Double(f.durationMs) / 1000, logs: f.logs)
        exit = 0
        replayed = true
        outputs = f.outputs
        cachedFrom = f.cachedFrom
    }

    /// Fills `stdout`/`stderr` from the log files (for a replayed result).
    public mutating func readTails() {
        stdout = readTail(logs.stdout)
        stderr = readTail(logs.stderr)
    }

    /// What happened, in one line: how it ended and stderr's last line (final.json's reason).
    public var summary: String {
        var s = headline
        if ok || message != nil { return s }
        let l = FailureSignature.lastNonEmptyLine(stderrText)
        if !l.isEmpty { s += ": \(l.prefix(200))" }
        return s
    }

    /// How it ended, without its output.
    public var headline: String {
        if ok { return "stage '\(id)' passed" }
        var s = "stage '\(id)' \(status == .timed_out ? "timed out" : status.rawValue)"
        if let e = exit, status == .failed { s += " with exit code \(e)" }
        if let sig = signal { s += " (signal \(sig))" }
        if attempts > 1 { s += " after \(attempts) attempts" }
        if let m = message { s += ": \(m)" }
        return s
    }
}

/// Reads at most the last `limit` bytes of a file.
public func readTail(_ path: String, limit: Int = 65536) -> [UInt8] {
    if path.isEmpty || FileIO.size(path) ?? 0 == 0 { return [] }   // one stat instead of open+fstat+close
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return [] }
    defer { close(fd) }
    return readTail(fd: fd, limit: limit)
}

/// Reads at most the last `limit` bytes of an open file.
func readTail(fd: Int32, limit: Int = 65536) -> [UInt8] {
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
    return got == buf.count ? buf : Array(buf[0..<got])
}

/// One stage call: its attempts, retries and backoff, a task of the run's event loop.
/// Where an attempt runs is its executor's business; output goes straight from the job
/// into the log files (no copy through Baton, so a stage that prints gigabytes costs no
/// memory), and the tail is read back when the attempt ends.
public final class StageExecution: LoopTask {
    enum Phase {
        case waiting(until: Double)     // before the first attempt or in backoff
        case running
        /// Exited 0; its declared outputs are being hashed aside (`checkOutputs`).
        case checking
        case finished
    }

    public let spec: StageSpec
    public let key: StageKey
    unowned let context: RunContext
    let executor: Executor
    var phase: Phase
    public private(set) var attempt = 0
    public private(set) var job: Job?
    /// The latest attempt's local pid (0 before the first attempt).
    public private(set) var pid: pid_t = 0
    var attemptStart = 0.0
    var firstStart = 0.0
    var deadline: Double?
    var timedOut = false
    var cancelRequested = false
    public private(set) var result: StageResult?
    var logs = StageLogs(stdout: "", stderr: "")
    /// The attempt's log files, open until the attempt ends (its tails are read from them).
    var outFD: Int32 = -1, errFD: Int32 = -1
    public private(set) var lastResult: StageResult?
    public var onFinish: ((StageResult) -> Void)?
    /// In a resume: why this call replayed or runs (journaled on its first attempt).
    public internal(set) var why: ResumeWhy?
    lazy var fingerprintParts = FingerprintParts(spec)
    /// With the cache on for this call: its answer (a miss, journaled on the first attempt).
    public internal(set) var cacheDecision: CacheDecision?
    /// The declared outputs as hashed after the pass (what the cache stores).
    var outputSnapshots: [OutputSnapshot] = []

    init(spec: StageSpec, key: StageKey, context: RunContext, executor: Executor) {
        self.spec = spec
        self.key = key
        self.context = context
        self.executor = executor
        self.phase = .waiting(until: 0)
    }

    public var occurrence: Int { key.occurrence }
    /// The current attempt's log files and when it started (monotonic), for the terminal.
    public var currentLogs: StageLogs { logs }
    public var isRunning: Bool { if case .running = phase { return true }; return false }
    public var isFinished: Bool { if case .finished = phase { return true }; return false }

    /// Waiting for a free slot in its pool (woken when another stage's attempt ends).
    var blockedOnPool = false
    var holdsPoolSlot = false
    /// Silence watch: when output (or the heartbeat file) last changed, and what was seen.
    var lastOutputAt = 0.0
    var seenOutput: (Int, Int, Double) = (0, 0, 0)
    var nextSilenceCheck = Double.infinity
    var stallWarned = false
    var stalled = false

    public var nextWake: Double? {
        switch phase {
        case let .waiting(until): return blockedOnPool ? nil : until
        case .running: return min(deadline ?? .infinity, nextSilenceCheck)
        case .checking, .finished: return nil
        }
    }

    /// Ends the call: SIGTERM to its job now, SIGKILL after `grace` (`force`: at once).
    public func cancel(force: Bool = false) {
        cancelRequested = true
        switch phase {
        case .waiting:
            finish(with: makeResult(status: .cancelled,
                                    termination: nil,
                                    duration: 0,
                                    message: "cancelled before it started"))
        case .running:
            if force { job?.kill() } else { job?.terminate(grace: spec.grace) }
        case .checking, .finished: break
        }
    }

    /// Moves the state machine forward; never blocks.
    public func advance(now: Double) {
        switch phase {
        case let .waiting(until):
            guard now >= until else { return }
            if let p = spec.pool {
                blockedOnPool = !context.takePoolSlot(p)
                if blockedOnPool { return }
                holdsPoolSlot = true
            }
            startAttempt()
        case .running:
            guard let j = job else { return }
            journalStartOnceItHasAnID(j)
            if case let .done(t) = j.state {
                if unjournaledStart != nil { neverStarted(j, t) } else { attemptEnded(t, note: j.note) }
                return
            }
            noteQueue(j)
            // A batch job's timeout counts from when it runs, not from when it was queued.
            if j.note.queued, let t = spec.timeout { deadline = now + t }
            if let d = deadline, now >= d, !timedOut {
                timedOut = true
                deadline = nil
                j.terminate(grace: spec.grace)
            }
            if now >= nextSilenceCheck { checkSilence(now: now, job: j) }
        case .checking, .finished: break
        }
    }

    func startAttempt() {
        attempt += 1
        timedOut = false
        logs = context.dir.stageLogs(spec.id, attempt: context.nextLogNumber(spec.id))
        let cwd = spec.resolvedCwd
        var started = StageStarted(key: key, attempt: attempt, command: spec.command, cwd: cwd,
                                   fingerprint: spec.fingerprint, logs: logs)
        started.fingerprintParts = fingerprintParts
        started.timeoutSec = spec.timeout
        if attempt == 1 { started.why = why; started.cache = cacheDecision }
        started.inputs = spec.inputSet.map(InputsRecord.init)
        attemptStart = Clock.monotonic()
        if attempt == 1 { firstStart = attemptStart }
        do {
            let js = try jobSpec(cwd: cwd)
            defer { if js.stdin >= 0 { close(js.stdin) } }
            context.spawnedAny = true   // before the start: the watchdog watches from the first process on
            let j = try executor.start(js)
            job = j
            pid = j.pid ?? 0
            started.pid = j.pid
            journaledQueue = nil
            if executor.jobsOutliveRunner {
                started.executor = executor.name
                // A job that outlives the runner is journaled at once with its id (a resume
                // needs it to take the job up); one still being submitted, when it gets one.
                unjournaledStart = started
                journalStartOnceItHasAnID(j)
            } else {
                // Written with the next event or before the loop next blocks (in a fan-out, one
                // write for every stage a turn starts): a runner killed before then loses only
                // this line, and its process died with it.
                context.record(.stageStarted(started), deferred: true)
            }
            deadline = spec.timeout.map { attemptStart + $0 }
            lastOutputAt = attemptStart
            seenOutput = (0, 0, 0)
            stallWarned = false
            stalled = false
            nextSilenceCheck = attemptStart
                + min(1, (spec.stallWarnSec ?? context.stallWarnSec) / 4, (spec.noOutputTimeout ?? 4) / 4)
            phase = .running
        } catch {
            failedToStart(error, started)
        }
    }

    /// The attempt's job: its log files opened, its stdin (a memfd, closed by the caller once
    /// the job has started), its environment and options.
    func jobSpec(cwd: String) throws -> JobSpec {
        context.ensureStageDir(spec.id)
        outFD = RunDirectory.openFile(logs.stdout, O_RDWR | O_TRUNC)   // O_NOFOLLOW, the runs' mode
        if outFD < 0 { throw SystemError("open", logs.stdout) }
        errFD = RunDirectory.openFile(logs.stderr, O_RDWR | O_TRUNC)
        if errFD < 0 { throw SystemError("open", logs.stderr) }
        var inFD: Int32 = -1
        if let text = spec.stdin {
            inFD = baton_memfd("baton-stdin")
            if inFD < 0 { throw SystemError("memfd_create", "stdin") }
            do { try Array(text.utf8).withUnsafeBytes { try FileIO.writeAll(inFD, $0, path: "stdin") } } catch {
                close(inFD)
                throw error
            }
            lseek(inFD, 0, SEEK_SET)
        }
        var env = context.baseEnvironment
        for (k, v) in spec.env { env[k] = v }
        env["BATON_STAGE"] = spec.id
        var js = JobSpec(argv: spec.command.argv, env: env, cwd: cwd)
        js.stdin = inFD
        js.stdout = outFD
        js.stderr = errFD
        js.leftoverGrace = min(spec.grace, 2)
        js.waitForGroup = spec.waitForGroup
        js.logs = logs
        js.stdinText = spec.stdin
        js.name = "baton-\(context.dir.id)-\(spec.id)"
        js.timeout = spec.timeout
        js.grace = spec.grace
        js.options = (spec.executorOptions[executor.name] ?? ExecutorOptions())
            .over(context.executorDefaults[executor.name] ?? ExecutorOptions())
        return js
    }

    /// The attempt could not start: a deterministic failure (a missing command never gets better).
    func failedToStart(_ error: Error, _ started: StageStarted) {
        closeLogs()
        context.record(.stageStarted(started))
        let msg = "\(error)"
        let code = (error as? SpawnError)?.exitCode ?? Termination.notFound
        _ = try? FileIO.appendLocked(logs.stderr, Array((msg + "\n").utf8))
        var r = makeResult(status: .failed,
                           termination: .exited(code),
                           duration: Clock.monotonic() - attemptStart,
                           message: msg)
        r.failureClass = .deterministic
        r.signature = FailureSignature.make(.deterministic, exit: code, signal: nil, stderrTail: msg)
        concludeAttempt(r)
    }

    /// The `stage_started` of an attempt whose job has no native id yet (its submission is
    /// under way): journaled, with the id, as soon as the executor has given it one.
    var unjournaledStart: StageStarted?

    func journalStartOnceItHasAnID(_ j: Job) {
        guard var started = unjournaledStart, !j.nativeID.isEmpty else { return }
        unjournaledStart = nil
        started.nativeID = j.nativeID
        context.record(.stageStarted(started))
    }

    /// A job that ended without ever having an id: its executor could not start it (a refused
    /// submission, said in its note), or it was cancelled before it had one.
    func neverStarted(_ j: Job, _ t: Termination) {
        let started = unjournaledStart!
        unjournaledStart = nil
        context.record(.stageStarted(started))
        // Ended on request (a cancel, a timeout, `baton attach`'s kill) before it had an id.
        if cancelRequested || t.signal != nil { return attemptEnded(t, note: j.note) }
        job = nil
        closeLogs()
        let msg = j.note.reason ?? "\(executor.name) could not start the job"
        _ = try? FileIO.appendLocked(logs.stderr, Array((msg + "\n").utf8))
        let code = t.exitCode ?? 1
        let took = Clock.monotonic() - attemptStart
        var r = makeResult(status: .failed, termination: .exited(code), duration: took, message: msg)
        r.failureClass = .deterministic
        r.signature = FailureSignature.make(.deterministic, exit: code, signal: nil, stderrTail: msg)
        concludeAttempt(r)
    }

    /// Takes up a batch job a previous runner of this run submitted (resume): same attempt,
    /// same log files, no new submission.
    func reattach(_ j: Job, attempt n: Int, logs l: StageLogs) {
        attempt = n
        logs = l
        attemptStart = Clock.monotonic()
        firstStart = attemptStart
        outFD = RunDirectory.openFile(l.stdout, O_RDWR)
        errFD = RunDirectory.openFile(l.stderr, O_RDWR)
        job = j
        let cwd = spec.resolvedCwd
        var started = StageStarted(key: key,
                                   attempt: n,
                                   command: spec.command,
                                   cwd: cwd,
                                   fingerprint: spec.fingerprint,
                                   logs: l)
        started.executor = executor.name
        started.nativeID = j.nativeID
        started.reattached = true
        started.timeoutSec = spec.timeout
        context.record(.stageStarted(started))
        context.log(.info, "resume: stage '\(spec.id)' re-attached to \(executor.describe(j)) (not submitted again)")
        deadline = spec.timeout.map { attemptStart + $0 }
        lastOutputAt = attemptStart
        nextSilenceCheck = attemptStart + 1
        phase = .running
    }

    /// How long the stage has been silent: its log files' sizes and the heartbeat file's
    /// mtime, checked about once a second. Journals `stage_stalled` once after
    /// `stallWarnSec`; ends the attempt as stalled after `noOutputTimeout`.
    func checkSilence(now: Double, job j: Job) {
        var a = stat(), b = stat(), h = stat()
        fstat(outFD, &a)
        fstat(errFD, &b)
        var beat = seenOutput.2
        if let f = spec.heartbeatFile, stat(f, &h) == 0 { beat = h.mtime }
        let seen = (Int(a.st_size), Int(b.st_size), beat)
        if seen != seenOutput { seenOutput = seen; lastOutputAt = now }
        let silent = now - lastOutputAt
        let warnAfter = spec.stallWarnSec ?? context.stallWarnSec
        if !stallWarned, silent >= warnAfter {
            stallWarned = true
            context.record(.stageStalled(StageStalled(key: key, attempt: attempt, silentMs: Int64(silent * 1000),
                                                      ending: spec.noOutputTimeout.map { silent >= $0 } ?? false)))
        }
        if let t = spec.noOutputTimeout, silent >= t, !stalled, !timedOut, !cancelRequested {
            stalled = true
            j.terminate(grace: spec.grace)
        }
        nextSilenceCheck = now + min(1, warnAfter / 4, (spec.noOutputTimeout ?? 4) / 4)
    }

    func closeLogs() {
        if outFD >= 0 { close(outFD); outFD = -1 }
        if errFD >= 0 { close(errFD); errFD = -1 }
    }

    func makeResult(status: StageStatus,
                    termination t: Termination?,
                    duration: Double,
                    message: String?) -> StageResult {
        var r = StageResult(id: spec.id,
                            occurrence: occurrence,
                            status: status,
                            attempts: attempt,
                            duration: duration,
                            logs: logs)
        r.exit = t?.exitCode; r.signal = t?.signal; r.message = message; r.pid = pid == 0 ? nil : pid
        return r
    }

    /// The latest queue state journaled for this attempt (in its scheduler's word).
    var journaledQueue: String?

    /// Journals a batch job's move between queue states (pending time is visible in the journal):
    /// each new word the scheduler has for it once it is in the queue.
    func noteQueue(_ j: Job) {
        let n = j.note
        guard let p = n.phase, p != .submitting, p != .submitted, let q = n.state, q != journaledQueue else { return }
        journaledQueue = q
        var e = StageQueued(key: key, attempt: attempt, nativeID: j.nativeID, state: q)
        e.phase = p
        e.node = n.node
        e.reason = n.schedulerReason
        context.record(.stageQueued(e))
    }

    func attemptEnded(_ t: Termination, note: JobNote = JobNote()) {
        job = nil
        var r = makeResult(status: .passed, termination: t, duration: Clock.monotonic() - attemptStart, message: nil)
        r.stdout = outFD >= 0 ? readTail(fd: outFD) : readTail(r.logs.stdout)
        r.stderr = errFD >= 0 ? readTail(fd: errFD) : readTail(r.logs.stderr)
        closeLogs()
        if cancelRequested && !timedOut {
            r.status = .cancelled
        } else if stalled {
            r.status = .failed
            r.message = "stalled: no output for \(Clock.human(spec.noOutputTimeout ?? 0)) (noOutputTimeout)"
        } else if timedOut {
            r.status = .timed_out
            r.message = "timed out after \(Clock.human(spec.timeout ?? 0))"
        } else if note.timedOut {
            r.status = .timed_out
            r.message = note.reason
        } else if t != .exited(0) {
            r.status = .failed
            r.message = note.reason
        } else {
            let base = spec.resolvedCwd
            let missing = spec.requireFiles.filter { (FileIO.size(FileIO.join(base, $0)) ?? 0) == 0 }
            if !missing.isEmpty {
                r.status = .failed
                r.message =
                    "required file\(missing.count > 1 ? "s" : "") missing or empty: \(missing.joined(separator: ", "))"
            }
            if r.ok && !spec.outputs.isEmpty {
                checkOutputs(r) { self.classifyAndConclude($0, t, note) }
                return
            }
        }
        classifyAndConclude(r, t, note)
    }

    /// An ended attempt's failure class and signature (when it did not pass), then its conclusion.
    func classifyAndConclude(_ r0: StageResult, _ t: Termination, _ note: JobNote) {
        var r = r0
        if !r.ok {
            let tail = r.stderrText
            let cls = stalled ? FailureClass.stalled : note.transient || note.timedOut ? FailureClass.transient
                : r.message != nil && r.status == .failed
                ? FailureClass.deterministic
                : spec.transient.classify(timedOut: timedOut || r.status == .cancelled,
                                          signal: t.signal,
                                          exit: t.exitCode,
                                          stderrTail: tail)
            r.failureClass = cls
            r.signature = FailureSignature.make(cls, exit: t.exitCode, signal: t.signal,
                                                stderrTail: r.message.map { tail + "\n" + $0 } ?? tail)
        }
        concludeAttempt(r)
    }

    func releasePoolSlot() {
        if holdsPoolSlot, let p = spec.pool { context.releasePoolSlot(p) }
        holdsPoolSlot = false
    }

    func concludeAttempt(_ r0: StageResult) {
        releasePoolSlot()
        var r = r0
        var f = StageFinished(key: key, attempt: attempt, status: r.status, durationMs: Int64(r.duration * 1000),
                              logs: r.logs, fingerprint: spec.fingerprint)
        f.exit = r.exit
        f.signal = r.signal
        f.failureClass = r.failureClass
        f.signature = r.signature
        f.message = r.message
        f.outputs = r.outputs
        var retry = false
        if !r.ok, r.status != .cancelled, let sig = r.signature, let cls = r.failureClass {
            let seen = context.countSignature(sig)
            if let b = spec.breaker, seen >= b {
                r.breakerOpen = true
                r.message =
                    "circuit breaker open: the same failure (signature \(sig)) happened \(seen) times in this run"
                        + (r.message.map { "; " + $0 } ?? "")
                f.breakerOpen = true
            } else if attempt <= spec.retries, spec.retryOn.contains(cls), !context.interrupted {
                retry = true
            }
        }
        f.final = !retry
        context.record(.stageFinished(f))
        lastResult = r
        if retry {
            let delay = spec.backoff.delay(afterAttempt: attempt)
            context.log(.info,
                        "retrying stage '\(spec.id)' in \(Clock.human(delay)) (\(r.failureClass!.rawValue) failure, "
                            + "attempt \(attempt) of \(spec.retries + 1))",
                        .object([("stage", .string(spec.id))]))
            phase = .waiting(until: Clock.monotonic() + delay)
        } else {
            r.duration = Clock.monotonic() - firstStart
            if r.ok { context.storeInCache(self, r) }
            finish(with: r)
        }
    }

    func finish(with r: StageResult) {
        phase = .finished
        result = r
        onFinish?(r)
    }
}
