import BatonBase
import CBatonSys
import Glibc

/// Why a run could not start or resume.
public struct RunStartError: Error, CustomStringConvertible {
    public let message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// One live run: its directory, lock, journal, history, event loop and executors.
/// Everything a run guarantees (journal, final.json, no process left behind) lives
/// here, below the Lua layer.
public final class RunContext {
    public let dir: RunDirectory
    public let journal: JournalWriter
    let lock: FileLock
    public let dryRun: Bool
    public let recipe: String
    /// When the run first started (a resume keeps the original start).
    public let startedAt: Double
    /// When this runner started (for "succeeded in 1.2s").
    public let startedMonotonic: Double
    public var baseEnvironment: [String: String]
    /// The one loop every wait of this run goes through.
    public let loop = EventLoop()
    /// The journal folded: what final.json, status and resume read.
    public private(set) var history: RunHistory
    public var executors: [String: Executor] = ["local": LocalExecutor()]
    /// The executor of stages that name none: `baton.executor(...)`, else `run --executor`
    /// (BATON_EXECUTOR), else local.
    public var defaultExecutor = Settings.string(Settings.executor) ?? "local"
    /// The options every stage on an executor starts from, by executor name
    /// (`baton.executor(name, {...})`).
    public var executorDefaults: [String: ExecutorOptions] = [:]
    /// On resume: batch jobs the previous runner left queued or running, to re-attach to.
    var reattach: [StageKey: StageRecord] = [:]

    /// Seconds of silence after which a stage's `stage_stalled` event is journaled
    /// (its own `stallWarnSec`, else BATON_STALL_WARN_SEC, else 600).
    public var stallWarnSec: Double = 600
    /// Called once, the first time the loop is about to block (the control socket starts
    /// then: a run that never waits never pays for it).
    public var onFirstBlock: (() -> Void)?
    var signatureCounts: [String: Int] = [:]
    var occurrences: [String: Int] = [:]
    var logNumbers: [String: Int] = [:]
    /// What persistFinal and the recipe's return value put in final.json's `result`.
    public private(set) var result: JSON = .object([])
    /// A journal write that failed (a full disk): the run must end.
    public private(set) var fatal: SystemError?
    /// On resume: the calls that passed before, by (id, occurrence).
    var replay: [StageKey: StageFinished]?
    /// Replay goes on per lane until a call in that lane runs for real: the recipe's main
    /// line is lane "", each parallel item its own lane (so a fan-out killed midway replays
    /// every item that passed, whatever order they finished in).
    public var lane = ""
    /// Per lane: the first call of this resume that ran for real (from then on the lane runs everything).
    var ranFirst: [String: StageKey] = [:]
    /// The first call a fan-out's items ran for real: after the fan-out the main line runs everything.
    var fanOutRan: StageKey?
    var finished = false
    /// Watches a control client asked to end as blocked (`:skip`); a watch's waits check it.
    public var skipRequests: Set<String> = []
    /// Declared inputs and outputs, the stat cache and the cache across runs (Cache/).
    public lazy var files: StageFilesState = { filesUsed = true; return StageFilesState(runDir: dir) }()
    private(set) var filesUsed = false

    public var interrupted: Bool { loop.interrupted }

    init(dir: RunDirectory, journal: JournalWriter, lock: FileLock, dryRun: Bool, recipe: String, history: RunHistory) {
        self.dir = dir
        self.journal = journal
        self.lock = lock
        self.dryRun = dryRun
        self.recipe = recipe
        var history = history
        history.keepSummaries()   // (a record per call would grow with the run: see keepSummaries)
        self.history = history
        self.startedAt = history.firstStart?.ts ?? Clock.now()
        self.startedMonotonic = Clock.monotonic()
        var env = Spawner.currentEnvironment()
        env["BATON_RUN_ID"] = dir.id
        env["BATON_RUN_DIR"] = dir.path
        self.baseEnvironment = env
        if let v = RunContext.heartbeatOverride { loop.heartbeatInterval = v }
        if let v = Settings.positive(Settings.stallWarnSec) { stallWarnSec = v }
        loop.journal = journal
        loop.onHeartbeat = { [unowned self] hb in self.record(.heartbeat(hb)) }
        loop.mustStop = { [unowned self] in self.fatal != nil }
        loop.beforeBlocking = { [unowned self] in
            self.writePending()
            if let first = self.onFirstBlock { self.onFirstBlock = nil; first() }
        }
    }

    static func began(recipe: String, sha: String, args: [String], dryRun: Bool) -> RunBegan {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        var b = RunBegan(recipe: recipe, recipeSHA256: sha, args: args, pid: getpid(), host: String(cBuffer: host),
                         dryRun: dryRun, cwd: FileIO.currentDirectory())
        if let v = heartbeatOverride { b.heartbeatSec = v }
        return b
    }

    /// BATON_HEARTBEAT_SEC: how often heartbeats are written when not the default (and journaled as such).
    static var heartbeatOverride: Double? {
        Settings.positive(Settings.heartbeatSec)
    }

    /// Creates a run directory, takes its lock and journals `run_started`.
    public static func start(store: RunStore, id: String?, recipe: String, recipeText: [UInt8],
                             args: [String], dryRun: Bool, existing: Bool = false,
                             sync: SyncPolicy = .batched) throws -> RunContext {
        let dir: RunDirectory
        if existing, let id {
            dir = store.directory(id)
            guard FileIO.isDirectory(dir.path), !FileIO.exists(dir.journal) else {
                throw RunStartError("run directory \(dir.path) is not a fresh detached run")
            }
        } else {
            dir = try store.create(id: id)
        }
        guard let lock = try FileLock.tryAcquire(dir.lock, mode: RunDirectory.fileMode) else {
            throw RunStartError("run \(dir.id) is locked by another process")
        }
        lock.writeOwner("\(getpid())\n")
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, policy: sync)
        let first = try journal.append(.runStarted(began(recipe: recipe,
                                                         sha: SHA256.hex(recipeText),
                                                         args: args,
                                                         dryRun: dryRun)))
        let ctx = RunContext(dir: dir,
                             journal: journal,
                             lock: lock,
                             dryRun: dryRun,
                             recipe: recipe,
                             history: RunHistory([first]))
        ctx.armCrashGuard()
        return ctx
    }

    /// Re-opens a run to continue it: refuses a live one, cuts a torn tail, and replays
    /// what passed.
    /// `read`: the journal as the caller already read it (`baton resume` did, to find the
    /// recipe); used when the file has not changed since, so a long journal is parsed once.
    public static func resume(dir: RunDirectory, recipe: String, recipeText: [UInt8], args: [String],
                              sync: SyncPolicy = .batched,
                              read: (JournalContents, RunHistory)? = nil) throws -> RunContext {
        guard FileIO.isDirectory(dir.path) else { throw RunStartError("no run directory \(dir.path)") }
        guard let lock = try FileLock.tryAcquire(dir.lock, mode: RunDirectory.fileMode) else {
            let owner = (try? FileIO.readString(dir.lock))?.trimmingWhitespace() ?? "?"
            throw RunStartError("run \(dir.id) is live (pid \(owner.isEmpty ? "?" : owner)): it holds its lock; use "
                    + "'baton cancel \(dir.id)' to stop it")
        }
        lock.writeOwner("\(getpid())\n")
        Survivors.kill(runID: dir.id, loop: EventLoop())
        var contents = JournalContents()
        var folded: RunHistory? = nil
        if FileIO.exists(dir.journal) {
            // Now that the lock is ours nothing else writes it: what was read (and folded)
            // before is still right if the file kept its size.
            if let (r, h) = read, FileIO.size(dir.journal) == r.byteCount { contents = r; folded = h } else {
                contents = try dir.readJournal()
            }
            if contents.tornTail { truncate(dir.journal, off_t(contents.validLength)) }
        }
        // The previous life's snapshot goes: this life writes its own (none for a journal with
        // corrupt lines, which readers must read whole to report).
        unlink(dir.snapshot)
        var history = folded ?? RunHistory(contents.events)
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, lastSeq: contents.lastSeq, policy: sync)
        var began = began(recipe: recipe, sha: SHA256.hex(recipeText), args: args, dryRun: false)
        began.resumesAfter = contents.lastSeq
        began.tornTailTruncated = contents.tornTail
        began.corruptLines = contents.corrupt.map(\.line)
        let replay = history.replayable
        let reattach = history.reattachable
        let logNumbers = history.logNumbers
        history.apply(try journal.append(.runResumed(began)))
        let ctx = RunContext(dir: dir, journal: journal, lock: lock, dryRun: false, recipe: recipe, history: history)
        ctx.replay = replay
        ctx.reattach = reattach
        ctx.snapshots = contents.corrupt.isEmpty
        ctx.logNumbers = logNumbers
        // (Only the result is carried over: not the whole record, whose stages list is long.)
        if let prior = dir.readFinal("result"), case .object = prior { ctx.result = prior }
        ctx.armCrashGuard()
        return ctx
    }

    // MARK: journal

    /// Journals an event and folds it into the history. A write failure (full disk) is
    /// kept in `fatal`: the run ends at the next chance, and nothing written before is harmed.
    public func record(_ body: EventBody, deferred: Bool = false) {
        guard fatal == nil else { return }
        do { history.apply(try journal.append(body, deferred: deferred)) } catch let e as SystemError {
            fatal = e
        } catch {
            fatal = SystemError("write", journal.path, EIO)
        }
    }

    /// The attempts started since the last call (--stream echoes them); the first call
    /// forgets what earlier lives started, and from then on the history lists attempts.
    public func takeAttemptLogs() -> [AttemptLog] { history.takeAttemptLogs() }

    /// Writes journal events held back for a group commit (replays); then, when the journal
    /// has grown by `snapshotEvery` bytes since the last snapshot (and a second has passed),
    /// a new one, so a reader's tail stays short.
    public func writePending() {
        guard fatal == nil else { return }
        do { try journal.writePending() } catch let e as SystemError { fatal = e } catch {
            fatal = SystemError("write", journal.path, EIO)
        }
        let grown = journal.writtenBytes - snapshotAt.bytes
        if grown >= RunContext.snapshotEvery, Clock.monotonic() - snapshotAt.time >= 1 { writeSnapshot() }
    }

    /// Journal bytes between two snapshots written during a run (one is written at its end).
    nonisolated(unsafe) static var snapshotEvery = 1 << 20
    /// The journal's size and the monotonic time at the last snapshot.
    private var snapshotAt = (bytes: 0, time: 0.0)
    /// false when the journal this runner continued has corrupt lines: readers must read it
    /// all to report them, so no snapshot stands in for it.
    var snapshots = true

    /// `journal.snapshot` (HistorySnapshot): the fold of everything journaled so far.
    func writeSnapshot() {
        guard snapshots, fatal == nil else { return }
        HistorySnapshot.write(history, journal: journal, dir: dir)
        snapshotAt = (journal.writtenBytes, Clock.monotonic())
    }

    public func log(_ level: LogLevel, _ message: String, _ fields: JSON = .object([])) {
        record(.log(LogRecord(level: level, message: message, fields: fields)))
    }

    func countSignature(_ sig: String) -> Int {
        let n = (signatureCounts[sig] ?? 0) + 1
        signatureCounts[sig] = n
        return n
    }

    func nextLogNumber(_ id: String) -> Int {
        let n = (logNumbers[id] ?? 0) + 1
        logNumbers[id] = n
        return n
    }

    private var madeStageDirs: Set<String> = []
    /// Whether this runner started any process (then the end-of-run sweep is needed). The
    /// first one starts the watchdog.
    public var spawnedAny = false {
        didSet { if spawnedAny && watchdogPipe < 0 { startWatchdog() } }
    }
    /// The write end of the watchdog's pipe: it closes when this process ends, however it ends.
    private var watchdogPipe: Int32 = -1

    /// A `baton __watchdog` process in its own session that ends what the run left alive as
    /// soon as this runner is gone, even after a SIGKILL (see Survivors.watchdog).
    private func startWatchdog() {
        Containment.shared?.prepare()   // the run's cgroup, with its first stage
        // (Journaled once the watchdog runs: a SIGKILL before then leaves the stage unwatched.)
        defer {
            if let c = Containment.shared {
                log(.info, "containment: \(c.mechanism.rawValue)" + (c.runGroup.map { " (\($0))" } ?? ""))
            }
        }
        guard let p = FileIO.pipe() else { return }   // close-on-exec: stages must not hold it open
        let fds = [p.read, p.write]
        defer { close(fds[0]) }
        var env = Spawner.currentEnvironment()
        env["BATON_RUN_ID"] = nil
        do {
            // With the run's cgroup, which it kills after a SIGKILL of this runner.
            let args = [FileIO.selfExecutable(), "__watchdog", dir.id]
                + (Containment.shared?.runGroup.map { [$0] } ?? [])
            let pid = try Spawner.spawn(argv: args, env: env, cwd: "/",
                                        stdin: fds[0], stdout: -1, stderr: -1, newSession: true, dieWithParent: false)
            Containment.shared?.helpers.insert(pid)
            watchdogPipe = fds[1]
        } catch {
            close(fds[1])
            log(.warn,
                "cannot start the watchdog (\(error)): after a SIGKILL of this runner, its stages' children live on "
                    + "until 'baton resume' or 'baton cancel'")
        }
    }

    /// mkdir -p of a stage's log directory, once per id.
    func ensureStageDir(_ id: String) {
        guard !madeStageDirs.contains(id) else { return }
        // One mkdir in the common case (a fan-out makes one directory per item).
        let path = dir.stageDir(id)
        if RunDirectory.makeDirectory(path) != 0, errno == ENOENT {
            _ = RunDirectory.makeDirectory(dir.stagesDir)
            _ = RunDirectory.makeDirectory(path)
        }
        madeStageDirs.insert(id)
    }

    // MARK: the run budget

    /// The budget in force: its words ("2h") and when it runs out (monotonic).
    public private(set) var budget: (text: String, until: Double)?

    /// The reason a run ended by its budget gives: the runner's ending and the stuck guard's
    /// prepared final.json say the same words.
    public var budgetReason: String? { budget.map { "run budget of \($0.text) exceeded" } }

    /// Ends the whole run `seconds` after this runner started, the way a cancel does (SIGALRM,
    /// then every task ended within its grace); the run exits with ExitStatus.budgetExceeded.
    public func setBudget(_ seconds: Double, text: String) {
        let until = startedMonotonic + seconds
        budget = (text, until)
        _ = baton_budget_arm(max(0.000_001, until - Clock.monotonic()))
        // The stuck guard's reason (JSON string contents): the same words as the normal ending's.
        let why = JSON.string(budgetReason ?? "").encoded(pretty: false)
        baton_stuck_guard_budget(String(why.dropFirst().dropLast()), ExitStatus.budgetExceeded.rawValue)
        log(.info, "run budget: \(text) (ends at \(Clock.rfc3339(Clock.now() + until - Clock.monotonic())))")
    }

    /// A pause does not count against the budget: the timer stops (returns when it was
    /// stopped) and starts again with what was left, the end moved by the pause's length.
    public func suspendBudget() -> Double? {
        guard budget != nil else { return nil }
        _ = baton_budget_arm(0)
        return Clock.monotonic()
    }

    public func resumeBudget(suspendedAt: Double?) {
        guard let at = suspendedAt, let b = budget else { return }
        let until = b.until + (Clock.monotonic() - at)
        budget = (b.text, until)
        _ = baton_budget_arm(max(0.000_001, until - Clock.monotonic()))
    }

    // MARK: pools

    /// Named pools: (limit, stages running now).
    public private(set) var pools: [String: (limit: Int, running: Int)] = [:]

    /// `baton.pool(name, limit)`: declares a pool, or changes its limit.
    public func setPool(_ name: String, limit: Int) { pools[name] = (limit, pools[name]?.running ?? 0) }

    func takePoolSlot(_ name: String) -> Bool {
        guard let p = pools[name], p.running < p.limit else { return false }
        pools[name] = (p.limit, p.running + 1)
        return true
    }

    func releasePoolSlot(_ name: String) {
        if let p = pools[name] { pools[name] = (p.limit, max(0, p.running - 1)) }
        loop.poke()
    }

    public func executor(named name: String?) throws -> Executor {
        let n = name ?? defaultExecutor
        if let e = executors[n] { return e }
        guard let e = Executors.make(n,
                                     environment: baseEnvironment,
                                     warn: { [unowned self] m in self.log(.warn, m) }) else {
            throw RunStartError("unknown executor '\(n)' (known: \(Executors.names.joined(separator: ", ")))")
        }
        executors[n] = e
        return e
    }

    // MARK: stages

    /// Starts a stage call on the loop (or replays it on resume, or plans it in a dry run).
    /// The returned execution is already finished when it was replayed or dry.
    public func startStage(_ spec: StageSpec) -> StageExecution {
        let occ = (occurrences[spec.id] ?? 0) + 1
        occurrences[spec.id] = occ
        let key = StageKey(id: spec.id, occurrence: occ)
        let exec = StageExecution(spec: spec, key: key, context: self,
                                  executor: (try? executor(named: spec.executor)) ?? executors["local"]!)
        if dryRun {
            let cwd = spec.resolvedCwd
            let logs = dir.stageLogs(spec.id, attempt: nextLogNumber(spec.id))
            var started = StageStarted(key: key,
                                       attempt: 0,
                                       command: spec.command,
                                       cwd: cwd,
                                       fingerprint: spec.fingerprint,
                                       logs: logs)
            started.dry = true
            started.fingerprintParts = exec.fingerprintParts
            record(.stageStarted(started))
            var f = StageFinished(key: key,
                                  attempt: 0,
                                  status: .passed,
                                  durationMs: 0,
                                  logs: logs,
                                  fingerprint: spec.fingerprint)
            f.exit = 0
            f.dry = true
            record(.stageFinished(f))
            var r = StageResult(id: spec.id, occurrence: occ, status: .passed, attempts: 0, duration: 0, logs: logs)
            r.exit = 0
            r.dry = true
            exec.finish(with: r)
            return exec
        }
        if let rp = replay {
            let first = ranFirst[lane] ?? ranFirst[""]
            if first == nil, let r = reattach[key], r.fingerprint == spec.fingerprint, let name = r.executor,
               let id = r.nativeID,
               let ex = try? executor(named: name), let job = ex.reattach(nativeID: id, logs: r.logs) {
                // Its job is still the scheduler's (or finished meanwhile): take it up again.
                reattach[key] = nil
                exec.reattach(job, attempt: r.attempt, logs: r.logs)
                loop.add(exec)
                return exec
            }
            let why = ResumeWhy.decide(key,
                                       fingerprint: spec.fingerprint,
                                       parts: { exec.fingerprintParts },
                                       history: history,
                                       replay: rp, ranFirst: first)
            exec.why = inputChanges(why, exec, rp[key])
            if why.replayed, let f = rp[key] {
                var again = f
                again.replayed = true
                again.final = true
                record(.stageFinished(again), deferred: true)
                exec.finish(with: StageResult(replaying: f))
                return exec
            }
            if first == nil {
                log(.info, "resume: stage '\(spec.id)' (occurrence \(occ)) runs for real; everything after it"
                    + (lane.isEmpty ? "" : " in its parallel item (and after the fan-out)") + " runs too")
                ranFirst[lane] = key
                if !lane.isEmpty, fanOutRan == nil { fanOutRan = key }
            }
        }
        if answerFromCache(exec) { return exec }
        loop.add(exec)
        return exec
    }

    /// A fan-out has ended: if any of its items ran a stage for real, the main line stops
    /// replaying too (what follows may depend on what the items made).
    public func endFanOut() {
        if let k = fanOutRan, ranFirst[""] == nil { ranFirst[""] = k }
        fanOutRan = nil
    }

    /// Runs a stage in the foreground until it ends (or the run is interrupted).
    public func runStage(_ spec: StageSpec) -> StageResult {
        let exec = startStage(spec)
        _ = wait(for: exec)
        var r = exec.result
            ?? exec.lastResult
            ?? StageResult(id: spec.id, occurrence: exec.occurrence, status: .cancelled,
                                                             attempts: exec.attempt, duration: 0, logs: exec.logs)
        if r.replayed { r.readTails() }
        return r
    }

    /// Waits for a stage call to end.
    public func wait(for exec: StageExecution) -> EventLoop.Outcome {
        if exec.isFinished { return .satisfied }
        return loop.wait(WaitLabel(.stage, exec.spec.id)) { exec.isFinished }
    }

    /// Interruptible sleep. Returns false when interrupted.
    public func sleep(_ seconds: Double) -> Bool { loop.sleep(seconds, WaitLabel(.sleep, Clock.human(seconds))) }

    // MARK: final.json

    /// The final.json of this run now, from its history.
    public func finalRecord(status: RunOutcome,
                            exitCode: Int32?,
                            reason: String?,
                            ended: Bool,
                            stages: Bool = true) -> FinalRecord {
        var f = FinalRecord(history: history, status: status, exitCode: exitCode, reason: reason,
                            endedAt: ended ? Clock.now() : nil, result: result, stages: stages)
        f.reasonFile = reasonFile
        f.endedBy = endedBy
        return f
    }

    // MARK: bounded records

    /// The longest `reason` final.json and the journal's `final` event hold (bytes, the note
    /// of what was cut included).
    public static let reasonLimit = 4096
    /// Set when a control client (`baton attach`'s `:cancel`) ended the run.
    public var endedBy: FinalRecord.EndedBy?
    /// `reason.txt` (relative to the run directory) once a reason was cut: the whole text.
    public private(set) var reasonFile: String?

    /// A reason as recorded: a longer one is cut at a character boundary with a note of how
    /// much was cut, its whole text written to `reason.txt` in the run directory. A reason
    /// already within the limit is returned as it is (so this may be called twice).
    public func boundedReason(_ reason: String?) -> String? {
        guard let r = reason, r.utf8.count > RunContext.reasonLimit else { return reason }
        let name = "reason.txt"
        let saved = (try? FileIO.writeAtomically(dir.path + "/" + name,
                                                 Array(r.utf8),
                                                 mode: RunDirectory.fileMode)) != nil
        if saved { reasonFile = name }
        let total = r.utf8.count
        func note(_ kept: Int) -> String {
            " [... cut: \(total - kept) of \(total) bytes"
                + (saved ? "; the whole text is in \(name) in the run directory]" : "]")
        }
        let u = Array(r.utf8)
        var end = RunContext.reasonLimit - note(0).utf8.count
        while end > 0, u[end] & 0xC0 == 0x80 { end -= 1 }   // not inside a UTF-8 sequence
        let head = String(decoding: u[..<end], as: UTF8.self)
        return head + note(head.utf8.count)
    }

    /// Text longer than `keep` bytes as its first and last halves around a note.
    public static func cutMiddle(_ s: String, keep: Int) -> String {
        let u = Array(s.utf8)
        guard u.count > keep else { return s }
        let half = keep / 2
        return String(decoding: u[..<half], as: UTF8.self) + "\n[... \(u.count - keep) bytes cut ...]\n"
            + String(decoding: u[(u.count - half)...], as: UTF8.self)
    }

    /// Prepares the final.json a crash of Baton itself would leave (see CBatonSys's crash
    /// guard): failed, with the exit code and reason filled in by the signal handler.
    func armCrashGuard() {
        // Its stages list is empty: the journal has them, and a resume of thousands of stages
        // should not encode them all here.
        let parts = finalRecord(status: .failed,
                                exitCode: nil,
                                reason: nil,
                                ended: false,
                                stages: false).crashGuardParts()
        baton_crash_guard_install(dir.final, parts.head, parts.tail)
        let doc = finalRecord(status: .cancelled, exitCode: nil, reason: nil, ended: false, stages: false)
        let stuck = doc.stuckGuardParts()
        baton_stuck_guard_prepare(dir.final, stuck.head, stuck.tail, Clock.rfc3339(doc.startedAt), doc.startedAt)
    }

    public func mergeResult(_ fields: [(String, JSON)]) {
        for (k, v) in fields { result = result.setting(k, v) }
    }

    /// persistFinal: writes final.json now, with status `running`, so the fields survive
    /// whatever happens next. The terminal status replaces it at exit.
    public func persistFinal(_ fields: [(String, JSON)]) throws {
        mergeResult(fields)
        armCrashGuard()
        try finalRecord(status: .running, exitCode: nil, reason: nil, ended: false).write(to: dir)
        log(.info, "persistFinal", .object(fields))
    }

    /// Ends the run: ends every stage and command still alive (and any process that
    /// escaped its group but carries the run's id), journals `final`, writes final.json
    /// atomically, releases the lock. Safe to call once; later calls do nothing.
    @discardableResult
    public func finish(status: RunOutcome, exitCode: Int32, reason: String?) -> [String] {
        guard !finished else { return [] }
        finished = true
        var problems: [String] = []
        _ = baton_budget_arm(0)
        waitForInserts()
        loop.endAll()
        writePending()
        // Whatever left its stage's group and session (and perhaps its environment).
        Containment.shared?.endAll()
        // Only processes this runner started can carry the mark (resume sweeps at its start).
        if spawnedAny { Survivors.kill(runID: dir.id, loop: loop) }
        // Batch jobs of a previous life that this one did not take up (their stage changed or never ran).
        let leftover = Executors.cancelLeftovers(Array(reattach.values), environment: baseEnvironment)
        if !leftover.isEmpty {
            log(.info,
                "resume: cancelled the jobs the previous runner left and this one did not take up: "
                    + "\(leftover.joined(separator: ", "))")
        }
        if filesUsed { files.saveStatCache(force: true) }
        let fatalBefore = fatal
        let reason = boundedReason(reason)
        if fatal == nil {
            record(.final(FinalEvent(status: status, exitCode: exitCode, reason: reason)))
            writeSnapshot()
        }
        do {
            try finalRecord(status: status, exitCode: exitCode, reason: reason, ended: true).write(to: dir)
            baton_crash_guard_disarm()
            baton_stuck_guard_disarm()
        } catch {
            problems.append("cannot write final.json: \(error)")
        }
        if let f = fatal, fatalBefore == nil { problems.append("cannot journal the final event: \(f)") }
        if watchdogPipe >= 0 { close(watchdogPipe); watchdogPipe = -1 }
        lock.release()
        return problems
    }
}

public enum BatonVersion {
    public static let string = "0.2.0"
}
