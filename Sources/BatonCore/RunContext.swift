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

/// One live run: its directory, lock, journal, stages and the waits that drive them.
/// Everything a run guarantees (journal, final.json, no process left behind) lives
/// here, below the Lua layer.
public final class RunContext {
    public let dir: RunDirectory
    public let journal: JournalWriter
    let lock: FileLock
    public let dryRun: Bool
    public let recipe: String
    public let startedAt: Double
    public let startedMonotonic: Double
    public var baseEnvironment: [String: String]
    /// Seconds between heartbeats while a stage or watch is waited on.
    public var heartbeatInterval: Double = 30

    var signatureCounts: [String: Int] = [:]
    var occurrences: [String: Int] = [:]
    var logNumbers: [String: Int] = [:]
    var active: [StageExecution] = []
    public private(set) var stages: [StageResult] = []
    /// What persistFinal and the recipe's return value put in final.json's `result`.
    public private(set) var result: JSON = .object([])
    /// A journal write that failed (a full disk): the run must end.
    public private(set) var fatal: SystemError?
    var replay: ReplayIndex?
    var finished = false

    public var interrupted: Bool { baton_signal_pending() != 0 }

    init(dir: RunDirectory, journal: JournalWriter, lock: FileLock, dryRun: Bool, recipe: String) {
        self.dir = dir
        self.journal = journal
        self.lock = lock
        self.dryRun = dryRun
        self.recipe = recipe
        self.startedAt = Clock.now()
        self.startedMonotonic = Clock.monotonic()
        var env = Spawner.currentEnvironment()
        env["BATON_RUN_ID"] = dir.id
        env["BATON_RUN_DIR"] = dir.path
        self.baseEnvironment = env
        if let s = env["BATON_HEARTBEAT_SEC"], let v = Double(s), v > 0 { heartbeatInterval = v }
    }

    static func commonFields(recipe: String, sha: String, args: [String], dryRun: Bool) -> [(String, JSON)] {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        return [
            ("recipe", .string(recipe)), ("recipe_sha256", .string(sha)),
            ("args", .array(args.map(JSON.string))), ("pid", .int(Int64(getpid()))),
            ("host", .string(String(cBuffer: host))), ("baton_version", .string(BatonVersion.string)),
            ("dry_run", .bool(dryRun)), ("cwd", .string(FileIO.currentDirectory())),
        ]
    }

    /// Creates a run directory, takes its lock and journals `run_started`.
    public static func start(store: RunStore, id: String?, recipe: String, recipeText: [UInt8],
                             args: [String], dryRun: Bool, existing: Bool = false) throws -> RunContext {
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
        let journal = try JournalWriter(path: dir.journal, runID: dir.id)
        let ctx = RunContext(dir: dir, journal: journal, lock: lock, dryRun: dryRun, recipe: recipe)
        try journal.append("run_started", commonFields(recipe: recipe, sha: SHA256.hex(recipeText), args: args, dryRun: dryRun))
        ctx.armCrashGuard()
        return ctx
    }

    /// Re-opens a run to continue it: refuses a live one, cuts a torn tail, and replays
    /// what passed (see ReplayIndex).
    public static func resume(dir: RunDirectory, recipe: String, recipeText: [UInt8], args: [String]) throws -> RunContext {
        guard FileIO.isDirectory(dir.path) else { throw RunStartError("no run directory \(dir.path)") }
        guard let lock = try FileLock.tryAcquire(dir.lock) else {
            let owner = (try? FileIO.readString(dir.lock))?.trimmingWhitespace() ?? "?"
            throw RunStartError("run \(dir.id) is live (pid \(owner.isEmpty ? "?" : owner)): it holds its lock; use 'baton cancel \(dir.id)' to stop it")
        }
        lock.writeOwner("\(getpid())\n")
        Survivors.kill(runID: dir.id)
        var contents = JournalContents()
        if FileIO.exists(dir.journal) {
            contents = try JournalReader.read(dir.journal)
            if contents.tornTail { truncate(dir.journal, off_t(contents.validLength)) }
        }
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, lastSeq: contents.lastSeq)
        let ctx = RunContext(dir: dir, journal: journal, lock: lock, dryRun: false, recipe: recipe)
        ctx.replay = ReplayIndex(contents.events)
        ctx.logNumbers = ctx.replay!.logNumbers
        var fields = commonFields(recipe: recipe, sha: SHA256.hex(recipeText), args: args, dryRun: false)
        fields.append(("resumes_after", .int(contents.lastSeq)))
        if contents.tornTail { fields.append(("torn_tail_truncated", .bool(true))) }
        if !contents.corrupt.isEmpty { fields.append(("corrupt_lines", .array(contents.corrupt.map { .int(Int64($0.line)) }))) }
        try journal.append("run_resumed", fields)
        ctx.armCrashGuard()
        return ctx
    }

    // MARK: journal

    /// Journals an event. A write failure (full disk) is kept in `fatal`: the run ends
    /// at the next chance, and nothing written before is harmed.
    public func record(_ type: String, _ fields: [(String, JSON)], sync: Bool? = nil) {
        guard fatal == nil else { return }
        do { try journal.append(type, fields, sync: sync) } catch let e as SystemError { fatal = e } catch {
            fatal = SystemError("write", journal.path, EIO)
        }
    }

    public func log(_ level: String, _ message: String, _ fields: JSON = .object([])) {
        record("log", [("level", .string(level)), ("message", .string(message)), ("fields", fields)], sync: false)
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

    func stageConcluded(_ r: StageResult) { stages.append(r) }

    private var madeStageDirs: Set<String> = []
    /// Whether this runner started any stage (then the end-of-run sweep is needed).
    var spawnedAny = false

    /// mkdir -p of a stage's log directory, once per id.
    func ensureStageDir(_ id: String) {
        guard !madeStageDirs.contains(id) else { return }
        try? FileIO.makeDirectories(dir.stageDir(id))
        madeStageDirs.insert(id)
    }

    // MARK: stages

    /// Starts a stage (or replays it on resume, or fakes it in a dry run). The returned
    /// execution is already finished when it was replayed or dry.
    public func startStage(_ spec: StageSpec) -> StageExecution {
        let occ = (occurrences[spec.id] ?? 0) + 1
        occurrences[spec.id] = occ
        let exec = StageExecution(spec: spec, occurrence: occ, context: self)
        if dryRun {
            var r = StageResult(id: spec.id, occurrence: occ, status: .passed, attempts: 0, duration: 0, logs: ("", ""))
            r.exit = 0; r.dry = true
            record("stage_finished", [("id", .string(spec.id)), ("occurrence", .int(Int64(occ))), ("status", .string("passed")),
                                      ("dry", .bool(true)), ("argv", spec.command.json), ("replayed", .bool(false))], sync: false)
            exec.finish(with: r)
            return exec
        }
        if let rp = replay {
            if let r = rp.passed(id: spec.id, occurrence: occ, fingerprint: spec.fingerprint) {
                record("stage_finished", [("id", .string(spec.id)), ("occurrence", .int(Int64(occ))), ("attempt", .int(Int64(r.attempts))),
                                          ("exit", .int(0)), ("status", .string("passed")), ("duration_ms", .int(Int64(r.duration * 1000))),
                                          ("logs", .object([("stdout", .string(r.logs.out)), ("stderr", .string(r.logs.err))])),
                                          ("fingerprint", .string(spec.fingerprint)), ("replayed", .bool(true)), ("final", .bool(true))],
                       sync: false)
                exec.finish(with: r)
                return exec
            }
            log("info", "resume: stage '\(spec.id)' (occurrence \(occ)) runs for real; everything after it runs too")
            replay = nil
        }
        active.append(exec)
        exec.advance(now: Clock.monotonic())
        return exec
    }

    /// Runs a stage in the foreground until it ends (or the run is interrupted).
    public func runStage(_ spec: StageSpec) -> StageResult {
        let exec = startStage(spec)
        _ = waitUntil(heartbeat: ("stage", spec.id)) { exec.isFinished }
        return exec.result ?? exec.lastResult ?? StageResult(id: spec.id, occurrence: exec.occurrence, status: .cancelled,
                                                            attempts: exec.attempt, duration: 0, logs: ("", ""))
    }

    // MARK: waiting

    public enum WaitOutcome: Equatable { case satisfied, deadline, interrupted }

    /// The one place Baton blocks. Drives every stage's state machine (timeouts and
    /// retries of background stages keep working during any wait), wakes at once on a
    /// signal or when a watched descriptor becomes readable, and journals heartbeats.
    /// On a signal every stage is ended (SIGTERM, then SIGKILL after its grace; a
    /// second signal kills at once) before `.interrupted` is returned.
    public func waitUntil(deadline: Double? = nil, fds: [Int32] = [], heartbeat: (kind: String, what: String)? = nil,
                          heartbeatEvery: Double? = nil, pollEvery: Double? = nil,
                          onReadable: ((Int32) -> Void)? = nil, _ condition: () -> Bool) -> WaitOutcome {
        let began = Clock.monotonic()
        let hbEvery = heartbeatEvery ?? heartbeatInterval
        var nextHeartbeat = heartbeat != nil ? began + hbEvery : Double.infinity
        var cancelling = false
        var nextPoll = pollEvery.map { began + $0 } ?? Double.infinity
        while true {
            let now = Clock.monotonic()
            for e in active { e.advance(now: now) }
            active.removeAll { $0.isFinished }
            if interrupted {
                if !cancelling {
                    // The signal that got us here is still in the self-pipe: read it now, so
                    // that only a later signal counts as the second one (SIGKILL at once).
                    baton_signal_drain()
                    cancelling = true
                    for e in active { e.cancel() }
                    continue
                }
                if active.isEmpty { return .interrupted }
            } else {
                if condition() { return .satisfied }
                if let d = deadline, now >= d { return .deadline }
                if fatal != nil { return .interrupted }
            }
            if now >= nextHeartbeat, let hb = heartbeat {
                record("heartbeat", [("waiting_on", .string(hb.kind)), ("id", .string(hb.what)),
                                     ("for_ms", .int(Int64((now - began) * 1000)))], sync: false)
                nextHeartbeat = now + hbEvery
            }
            if now >= nextPoll { nextPoll = now + (pollEvery ?? 1); if condition() { continue } }
            var wake = min(nextHeartbeat, nextPoll)
            if let d = deadline { wake = min(wake, d) }
            for e in active { if let w = e.nextWake { wake = min(wake, w) } }
            var pfds: [pollfd] = [pollfd(fd: baton_signal_fd(), events: Int16(POLLIN), revents: 0)]
            for e in active { if let fd = e.pollFD { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) } }
            let firstExtra = pfds.count
            for fd in fds { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            let ms: Int32 = wake.isInfinite ? -1 : Int32(max(0, min(3_600_000, ((wake - now) * 1000).rounded(.up))))
            let n = poll(&pfds, nfds_t(pfds.count), ms)
            if n > 0 {
                if pfds[0].revents != 0 {
                    var buf = [UInt8](repeating: 0, count: 64)
                    let got = read(baton_signal_fd(), &buf, buf.count)
                    if cancelling, got > 0 { for e in active { e.cancel(force: true) } }
                }
                for i in firstExtra..<pfds.count where pfds[i].revents != 0 { onReadable?(pfds[i].fd) }
            }
        }
    }

    /// Interruptible sleep. Returns false when interrupted.
    public func sleep(_ seconds: Double) -> Bool {
        let until = Clock.monotonic() + seconds
        return waitUntil(deadline: until) { false } != .interrupted
    }

    // MARK: final.json

    /// Prepares the final.json a crash of Baton itself would leave (see CBatonSys's crash
    /// guard): failed, with the exit code and reason filled in by the signal handler.
    func armCrashGuard() {
        var head: [UInt8] = []
        var tail: [UInt8] = []
        head.append(contentsOf: "{\"v\": 1, \"run\": ".utf8); JSON.encodeString(dir.id, into: &head)
        head.append(contentsOf: ", \"recipe\": ".utf8); JSON.encodeString(recipe, into: &head)
        head.append(contentsOf: ", \"status\": \"failed\", ".utf8)
        tail.append(contentsOf: ", \"started_at\": ".utf8); JSON.encodeString(Clock.rfc3339(startedAt), into: &tail)
        tail.append(contentsOf: ", \"ended_at\": null, \"duration_ms\": null, \"stages\": [], \"crashed\": true, \"result\": ".utf8)
        result.encode(into: &tail, pretty: false, indent: 0)
        tail.append(contentsOf: "}\n".utf8)
        baton_crash_guard_install(dir.final, String(decoding: head, as: UTF8.self), String(decoding: tail, as: UTF8.self))
    }

    public func mergeResult(_ fields: [(String, JSON)]) {
        for (k, v) in fields { result = result.setting(k, v) }
    }

    func finalDocument(status: String, exitCode: Int32?, reason: String?) -> JSON {
        let now = Clock.now()
        return .object([
            ("v", .int(1)), ("run", .string(dir.id)), ("recipe", .string(recipe)), ("status", .string(status)),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null), ("reason", reason.map(JSON.string) ?? .null),
            ("started_at", .string(Clock.rfc3339(startedAt))), ("ended_at", status == "running" ? .null : .string(Clock.rfc3339(now))),
            ("duration_ms", .int(Int64((Clock.monotonic() - startedMonotonic) * 1000))),
            ("stages", .array(stages.map { r in
                var o: [(String, JSON)] = [("id", .string(r.id)), ("status", .string(r.status.rawValue)),
                                           ("attempts", .int(Int64(r.attempts))), ("duration_ms", .int(Int64(r.duration * 1000)))]
                if r.occurrence > 1 { o.append(("occurrence", .int(Int64(r.occurrence)))) }
                if r.replayed { o.append(("replayed", .bool(true))) }
                return .object(o)
            })),
            ("result", result),
        ])
    }

    /// persistFinal: writes final.json now, with status `running`, so the fields survive
    /// whatever happens next. The terminal status replaces it at exit.
    public func persistFinal(_ fields: [(String, JSON)]) throws {
        mergeResult(fields)
        armCrashGuard()
        try FileIO.writeAtomically(dir.final, finalDocument(status: "running", exitCode: nil, reason: nil).encodedBytes() + [10])
        record("log", [("level", .string("info")), ("message", .string("persistFinal")), ("fields", .object(fields))], sync: false)
    }

    /// Ends the run: ends every stage still alive (and any process that escaped its
    /// group but carries the run's id), journals `final`, writes final.json atomically,
    /// releases the lock. Safe to call once; later calls do nothing.
    @discardableResult
    public func finish(status: RunStatus, exitCode: Int32, reason: String?) -> [String] {
        guard !finished else { return [] }
        finished = true
        var problems: [String] = []
        if !active.isEmpty {
            for e in active { e.cancel() }
            let until = Clock.monotonic() + 30
            while !active.isEmpty, Clock.monotonic() < until {
                for e in active { e.advance(now: Clock.monotonic()) }
                active.removeAll { $0.isFinished }
                if !active.isEmpty { usleep(10_000) }
            }
            for e in active { e.cancel(force: true) }
        }
        // Only processes this runner started can carry the mark (resume sweeps at its start).
        if spawnedAny { Survivors.kill(runID: dir.id) }
        let doc = finalDocument(status: status.rawValue, exitCode: exitCode, reason: reason)
        let fatalBefore = fatal
        if fatal == nil {
            record("final", [("status", .string(status.rawValue)), ("exit_code", .int(Int64(exitCode))),
                             ("reason", reason.map(JSON.string) ?? .null)])
        }
        do {
            try FileIO.writeAtomically(dir.final, doc.encoded(pretty: true).utf8.map { $0 } + [10])
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
    public static let string = "0.1.0"
}
