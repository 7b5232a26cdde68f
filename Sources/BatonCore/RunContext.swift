import CBatonSys
import Glibc

/// Why a run could not start or resume.
public struct RunStartError: Error, CustomStringConvertible {
    public let message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// Terminal status of a run, as final.json spells it.
public enum RunStatus: String, Sendable {
    case succeeded, failed, cancelled, dry_run
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

    var signatureCounts: [String: Int] = [:]
    var occurrences: [String: Int] = [:]
    var logNumbers: [String: Int] = [:]
    /// What persistFinal and the recipe's return value put in final.json's `result`.
    public private(set) var result: JSON = .object([])
    /// A journal write that failed (a full disk): the run must end.
    public private(set) var fatal: SystemError?
    /// On resume: the calls that passed before, by (id, occurrence), until one differs.
    var replay: [StageKey: StageFinished]?
    /// On resume: the first call that ran for real (from then on everything runs).
    var ranFirst: StageKey?
    var finished = false

    public var interrupted: Bool { loop.interrupted }

    init(dir: RunDirectory, journal: JournalWriter, lock: FileLock, dryRun: Bool, recipe: String, history: RunHistory) {
        self.dir = dir
        self.journal = journal
        self.lock = lock
        self.dryRun = dryRun
        self.recipe = recipe
        self.history = history
        self.startedAt = history.firstStart?.ts ?? Clock.now()
        self.startedMonotonic = Clock.monotonic()
        var env = Spawner.currentEnvironment()
        env["BATON_RUN_ID"] = dir.id
        env["BATON_RUN_DIR"] = dir.path
        self.baseEnvironment = env
        if let s = env["BATON_HEARTBEAT_SEC"], let v = Double(s), v > 0 { loop.heartbeatInterval = v }
        loop.journal = journal
        loop.onHeartbeat = { [unowned self] hb in self.record(.heartbeat(hb)) }
        loop.mustStop = { [unowned self] in self.fatal != nil }
        loop.beforeWait = { [unowned self] in self.writePending() }
    }

    static func began(recipe: String, sha: String, args: [String], dryRun: Bool) -> RunBegan {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        return RunBegan(recipe: recipe, recipeSHA256: sha, args: args, pid: getpid(), host: String(cBuffer: host),
                        dryRun: dryRun, cwd: FileIO.currentDirectory())
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
        guard let lock = try FileLock.tryAcquire(dir.lock) else {
            throw RunStartError("run \(dir.id) is locked by another process")
        }
        lock.writeOwner("\(getpid())\n")
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, policy: sync)
        let first = try journal.append(.runStarted(began(recipe: recipe, sha: SHA256.hex(recipeText), args: args, dryRun: dryRun)))
        let ctx = RunContext(dir: dir, journal: journal, lock: lock, dryRun: dryRun, recipe: recipe, history: RunHistory([first]))
        ctx.armCrashGuard()
        return ctx
    }

    /// Re-opens a run to continue it: refuses a live one, cuts a torn tail, and replays
    /// what passed.
    public static func resume(dir: RunDirectory, recipe: String, recipeText: [UInt8], args: [String],
                              sync: SyncPolicy = .batched) throws -> RunContext {
        guard FileIO.isDirectory(dir.path) else { throw RunStartError("no run directory \(dir.path)") }
        guard let lock = try FileLock.tryAcquire(dir.lock) else {
            let owner = (try? FileIO.readString(dir.lock))?.trimmingWhitespace() ?? "?"
            throw RunStartError("run \(dir.id) is live (pid \(owner.isEmpty ? "?" : owner)): it holds its lock; use 'baton cancel \(dir.id)' to stop it")
        }
        lock.writeOwner("\(getpid())\n")
        Survivors.kill(runID: dir.id, loop: EventLoop())
        var contents = JournalContents()
        if FileIO.exists(dir.journal) {
            contents = try JournalReader.read(dir.journal)
            if contents.tornTail { truncate(dir.journal, off_t(contents.validLength)) }
        }
        var history = RunHistory(contents.events)
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, lastSeq: contents.lastSeq, policy: sync)
        var began = began(recipe: recipe, sha: SHA256.hex(recipeText), args: args, dryRun: false)
        began.resumesAfter = contents.lastSeq
        began.tornTailTruncated = contents.tornTail
        began.corruptLines = contents.corrupt.map(\.line)
        let replay = history.replayable
        let logNumbers = history.logNumbers
        history.apply(try journal.append(.runResumed(began)))
        let ctx = RunContext(dir: dir, journal: journal, lock: lock, dryRun: false, recipe: recipe, history: history)
        ctx.replay = replay
        ctx.logNumbers = logNumbers
        if let prior = FinalRecord.read(dir) { ctx.result = prior.result }
        ctx.armCrashGuard()
        return ctx
    }

    // MARK: journal

    /// Journals an event and folds it into the history. A write failure (full disk) is
    /// kept in `fatal`: the run ends at the next chance, and nothing written before is harmed.
    public func record(_ body: EventBody, deferred: Bool = false) {
        guard fatal == nil else { return }
        do { history.apply(try journal.append(body, deferred: deferred)) } catch let e as SystemError { fatal = e } catch {
            fatal = SystemError("write", journal.path, EIO)
        }
    }

    /// Writes journal events held back for a group commit (replays).
    public func writePending() {
        guard fatal == nil else { return }
        do { try journal.writePending() } catch let e as SystemError { fatal = e } catch {
            fatal = SystemError("write", journal.path, EIO)
        }
    }

    public func log(_ level: String, _ message: String, _ fields: JSON = .object([])) {
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
    /// Whether this runner started any process (then the end-of-run sweep is needed).
    public var spawnedAny = false

    /// mkdir -p of a stage's log directory, once per id.
    func ensureStageDir(_ id: String) {
        guard !madeStageDirs.contains(id) else { return }
        try? FileIO.makeDirectories(dir.stageDir(id))
        madeStageDirs.insert(id)
    }

    public func executor(named name: String?) throws -> Executor {
        let n = name ?? "local"
        guard let e = executors[n] else {
            throw RunStartError("unknown executor '\(n)' (known: \(executors.keys.sorted().joined(separator: ", ")))")
        }
        return e
    }

    // MARK: stages

    /// Starts a stage call on the loop (or replays it on resume, or plans it in a dry run).
    /// The returned execution is already finished when it was replayed or dry.
    public func startStage(_ spec: StageSpec) -> StageExecution {
        let occ = (occurrences[spec.id] ?? 0) + 1
        occurrences[spec.id] = occ
        let key = StageKey(id: spec.id, occurrence: occ)
        let exec = StageExecution(spec: spec, key: key, context: self, executor: executors["local"]!)
        if dryRun {
            let cwd = spec.cwd.map(FileIO.absolute) ?? FileIO.currentDirectory()
            let logs = dir.stageLogs(spec.id, attempt: nextLogNumber(spec.id))
            var started = StageStarted(key: key, attempt: 0, command: spec.command, cwd: cwd, fingerprint: spec.fingerprint, logs: logs)
            started.dry = true
            started.fingerprintParts = exec.fingerprintParts
            record(.stageStarted(started))
            var f = StageFinished(key: key, attempt: 0, status: .passed, durationMs: 0, logs: logs, fingerprint: spec.fingerprint)
            f.exit = 0
            f.dry = true
            f.fingerprintParts = exec.fingerprintParts
            record(.stageFinished(f))
            var r = StageResult(id: spec.id, occurrence: occ, status: .passed, attempts: 0, duration: 0, logs: logs)
            r.exit = 0
            r.dry = true
            exec.finish(with: r)
            return exec
        }
        if let rp = replay {
            let why = ResumeWhy.decide(key, fingerprint: spec.fingerprint, parts: { exec.fingerprintParts }, history: history,
                                       replay: rp, ranFirst: ranFirst)
            exec.why = why
            if why.replayed, let f = rp[key] {
                var again = f
                again.replayed = true
                again.final = true
                record(.stageFinished(again), deferred: true)
                exec.finish(with: StageResult(replaying: f))
                return exec
            }
            if ranFirst == nil {
                log("info", "resume: stage '\(spec.id)' (occurrence \(occ)) runs for real; everything after it runs too")
                ranFirst = key
            }
        }
        loop.add(exec)
        return exec
    }

    /// Runs a stage in the foreground until it ends (or the run is interrupted).
    public func runStage(_ spec: StageSpec) -> StageResult {
        let exec = startStage(spec)
        _ = wait(for: exec)
        var r = exec.result ?? exec.lastResult ?? StageResult(id: spec.id, occurrence: exec.occurrence, status: .cancelled,
                                                             attempts: exec.attempt, duration: 0, logs: exec.logs)
        if r.replayed { r.readTails() }
        return r
    }

    /// Waits for a stage call to end.
    public func wait(for exec: StageExecution) -> EventLoop.Outcome {
        if exec.isFinished { return .satisfied }
        return loop.wait(WaitLabel("stage", exec.spec.id)) { exec.isFinished }
    }

    /// Interruptible sleep. Returns false when interrupted.
    public func sleep(_ seconds: Double) -> Bool { loop.sleep(seconds, WaitLabel("sleep", Clock.human(seconds))) }

    // MARK: final.json

    /// The final.json of this run now, from its history.
    public func finalRecord(status: String, exitCode: Int32?, reason: String?, ended: Bool, stages: Bool = true) -> FinalRecord {
        FinalRecord(history: history, status: status, exitCode: exitCode, reason: reason,
                    endedAt: ended ? Clock.now() : nil, result: result, stages: stages)
    }

    /// Prepares the final.json a crash of Baton itself would leave (see CBatonSys's crash
    /// guard): failed, with the exit code and reason filled in by the signal handler.
    func armCrashGuard() {
        // Its stages list is empty: the journal has them, and a resume of thousands of stages
        // should not encode them all here.
        let parts = finalRecord(status: "failed", exitCode: nil, reason: nil, ended: false, stages: false).crashGuardParts()
        baton_crash_guard_install(dir.final, parts.head, parts.tail)
    }

    public func mergeResult(_ fields: [(String, JSON)]) {
        for (k, v) in fields { result = result.setting(k, v) }
    }

    /// persistFinal: writes final.json now, with status `running`, so the fields survive
    /// whatever happens next. The terminal status replaces it at exit.
    public func persistFinal(_ fields: [(String, JSON)]) throws {
        mergeResult(fields)
        armCrashGuard()
        try finalRecord(status: "running", exitCode: nil, reason: nil, ended: false).write(to: dir)
        log("info", "persistFinal", .object(fields))
    }

    /// Ends the run: ends every stage and command still alive (and any process that
    /// escaped its group but carries the run's id), journals `final`, writes final.json
    /// atomically, releases the lock. Safe to call once; later calls do nothing.
    @discardableResult
    public func finish(status: RunStatus, exitCode: Int32, reason: String?) -> [String] {
        guard !finished else { return [] }
        finished = true
        var problems: [String] = []
        loop.endAll()
        writePending()
        // Only processes this runner started can carry the mark (resume sweeps at its start).
        if spawnedAny { Survivors.kill(runID: dir.id, loop: loop) }
        let fatalBefore = fatal
        if fatal == nil { record(.final(FinalEvent(status: status.rawValue, exitCode: exitCode, reason: reason))) }
        do {
            try finalRecord(status: status.rawValue, exitCode: exitCode, reason: reason, ended: true).write(to: dir)
            baton_crash_guard_disarm()
        } catch {
            problems.append("cannot write final.json: \(error)")
        }
        if let f = fatal, fatalBefore == nil { problems.append("cannot journal the final event: \(f)") }
        lock.release()
        return problems
    }
}

public enum BatonVersion {
    public static let string = "0.2.0"
}
