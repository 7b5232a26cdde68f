import BatonBase
/// An immutable value on the heap (a record's large, optional parts).
final class Boxed<T: Sendable>: Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// What a journal says about one stage call (id, occurrence), folded from its events.
public struct StageRecord: Sendable {
    public var status: CallState
    public var key: StageKey
    public var command: Command?
    public var cwd: String?
    public var fingerprint: String = ""
    /// The latest attempt's number (counted within one life of the run).
    public var attempt = 0
    public var pid: Int32?
    /// When its first attempt in this life started, and when its last one ended.
    public var startedAt: Double?
    /// When its current (latest) attempt started, and that attempt's time limit.
    public var attemptStartedAt: Double?
    public var timeoutSec: Double?
    public var endedAt: Double?
    public var logs = StageLogs(stdout: "", stderr: "")
    /// The latest `stage_finished` (the final one once the call is over).
    public var finished: StageFinished? {
        get { boxedFinished?.value }
        set { boxedFinished = newValue.map(Boxed.init) }
    }
    /// Each fingerprint input hashed alone (from its stage_started, or a replay's stage_finished).
    public var fingerprintParts: FingerprintParts? {
        get { boxedParts?.value }
        set { boxedParts = newValue.map(Boxed.init) }
    }
    /// The current attempt has been silent past its stallWarnSec (a `stage_stalled` event).
    public var stalled: StageStalled? {
        get { boxedStalled?.value }
        set { boxedStalled = newValue.map(Boxed.init) }
    }
    // The large parts live on the heap, shared by copies: a run of 10,000 stage calls keeps
    // 10,000 records, and inline they made the array (and every copy of it) several times larger.
    private var boxedFinished: Boxed<StageFinished>?
    private var boxedParts: Boxed<FingerprintParts>?
    private var boxedStalled: Boxed<StageStalled>?

    init(status: CallState, key: StageKey) { self.status = status; self.key = key }
    /// Where the latest attempt runs when its jobs outlive the runner (a batch scheduler), its
    /// id there, and its latest queue phase, the scheduler's word for it and node. Boxed too:
    /// most stages run locally.
    public var executor: String? { get { batch?.value.executor } set { updateBatch { $0.executor = newValue } } }
    public var nativeID: String? { get { batch?.value.nativeID } set { updateBatch { $0.nativeID = newValue } } }
    public var phase: QueuePhase? { get { batch?.value.phase } set { updateBatch { $0.phase = newValue } } }
    /// The scheduler's word for where it stands (its job state).
    public var queue: String? { get { batch?.value.queue } set { updateBatch { $0.queue = newValue } } }
    public var node: String? { get { batch?.value.node } set { updateBatch { $0.node = newValue } } }
    public var queueReason: String? {
        get { batch?.value.queueReason } set { updateBatch { $0.queueReason = newValue } }
    }
    private struct BatchPlace: Sendable, Equatable {
        var executor, nativeID: String?
        var phase: QueuePhase?
        var queue, node, queueReason: String?
    }
    private var batch: Boxed<BatchPlace>?
    private mutating func updateBatch(_ change: (inout BatchPlace) -> Void) {
        var b = batch?.value ?? BatchPlace()
        change(&b)
        batch = b == BatchPlace() ? nil : Boxed(b)
    }

    /// Where a batch job stands, for people, in its scheduler's words: "<executor> job 12 RUNNING
    /// on node7", "<executor> job 13 PENDING (Priority)" (the reason while it waits).
    public var batchText: String? {
        guard let e = executor, let id = nativeID else { return nil }
        var s = "\(e) job \(id)"
        if let q = queue ?? phase?.rawValue { s += " \(q)" }
        if let n = node, !n.isEmpty { s += " on \(n)" }
        if let r = queueReason, phase?.waits ?? true { s += " (\(r))" }
        return s
    }

    /// Its batch job's fields for `status --json` and the shell (empty for a local stage).
    public var batchFields: [(String, JSON)] {
        guard let e = executor, let id = nativeID else { return [] }
        return [("executor", .string(e)), ("native_id", .string(id)),
                ("phase", phase.map { .string($0.rawValue) } ?? .null), ("queue", queue.map(JSON.string) ?? .null),
                ("node", node.map(JSON.string) ?? .null)]
    }

    public var isOpen: Bool { status.isOpen }
    public var isOver: Bool { status.ended != nil }
    public var replayed: Bool { finished?.replayed ?? summary?.replayed ?? false }
    public var dry: Bool { finished?.dry ?? summary?.dry ?? false }

    /// Its length for final.json and status: first start to last end, or the journaled
    /// duration for a replay or a call that never started.
    public var durationMs: Int64 {
        if let s = summary { return s.durationMs }
        if let f = finished, f.replayed || startedAt == nil { return f.durationMs }
        guard let s = startedAt else { return 0 }
        return Int64((((endedAt ?? s) - s) * 1000).rounded())
    }

    /// What a summarized record keeps of its last `stage_finished`.
    private struct Summary: Sendable {
        var durationMs: Int64
        var replayed, dry: Bool
    }
    private var summary: Summary?

    /// The record as the runner's history keeps a call that is over (RunHistory.keepSummaries):
    /// what a snapshot keeps of it (`abridged`: its state, and its `stage_finished` where the
    /// cache answered), its line of final.json (attempts, duration, replayed) and its times;
    /// not its command, logs, fingerprint or last `stage_finished`, which the journal has.
    func summarized() -> StageRecord {
        var r = abridged
        r.attempt = finished?.attempt ?? attempt
        r.startedAt = startedAt
        r.endedAt = endedAt
        r.summary = Summary(durationMs: durationMs, replayed: replayed, dry: dry)
        return r
    }
}

/// A watch's latest state.
public struct WatchRecord: Sendable {
    public var id: String
    public var state: WatchState
    public var since: Double
    public var reason: String
    public var details: WatchDetails
    /// The details of its `queued` transition (its settings).
    public var queued: WatchDetails = .none
}

/// One attempt of a stage, with its log files (every life of the run, oldest first).
public struct AttemptLog: Sendable {
    public var key: StageKey
    public var attempt: Int
    public var logs: StageLogs
    /// The life of the run it belongs to: 1 the original run, 2 its first resume, ...
    public var life = 1
    /// "original run", "resume 1", ...
    public var lifeName: String { life <= 1 ? "original run" : "resume \(life - 1)" }
}

/// A run's history: the fold of its journal that `runs`, `status`, `log`, `resume`,
/// `cancel`, final.json and the shell all read. The runner keeps one up to date as it
/// writes, so what it reports and what a reader reconstructs are the same thing.
public struct RunHistory: Sendable {
    public var runID: String = ""
    /// The first `run_started`, and the latest start (started or resumed).
    public private(set) var firstStart: (ts: Double, began: RunBegan)?
    public private(set) var latestStart: (ts: Double, began: RunBegan, resumed: Bool)?
    public private(set) var lives = 0
    public private(set) var stages: [StageRecord] = []
    private var stageIndex: [StageKey: Int] = [:]
    public private(set) var watches: [WatchRecord] = []
    private var watchIndex: [String: Int] = [:]
    public private(set) var attemptLogs: [AttemptLog] = []
    public private(set) var lastEvent: (type: String, ts: Double)?
    public private(set) var final: (event: FinalEvent, ts: Double)?
    /// The run is paused (a breakpoint): where, why, since when; nil once it goes on.
    public private(set) var paused: (record: PauseRecord, ts: Double)?
    public private(set) var lastSeq: Int64 = 0
    /// The highest log file number used per stage id (a resume continues from it).
    public private(set) var logNumbers: [String: Int] = [:]
    /// Whether a call that is over keeps its whole record (every reader of a journal) or
    /// only its summary (the runner: see keepSummaries).
    public private(set) var keepsWholeRecords = true
    /// Whether `attemptLogs` grows (always, unless keepSummaries; then from takeAttemptLogs on).
    private var keepsAttemptLogs = true

    public init() {}

    /// From now on a call that is over keeps only its summary (StageRecord.summarized), and
    /// attempts are not listed until asked for (takeAttemptLogs): what the runner keeps, so
    /// that its memory does not grow by a whole record per call (a run of 100,000 calls).
    /// The runner reads nothing else of a concluded call: final.json lists the summaries,
    /// and resume reads the prior lives' whole records before it calls this.
    public mutating func keepSummaries() {
        keepsWholeRecords = false
        keepsAttemptLogs = false
        attemptLogs = []
        for i in stages.indices where stages[i].isOver { stages[i] = stages[i].summarized() }
    }

    /// The attempts started since the last call (all of them, the first time), oldest first;
    /// a history that keeps summaries lists attempts from its first call on, and forgets
    /// what it returns.
    public mutating func takeAttemptLogs() -> [AttemptLog] {
        keepsAttemptLogs = true
        defer { if !keepsWholeRecords { attemptLogs = [] } }
        return attemptLogs
    }

    public init<S: Sequence>(_ events: S) where S.Element == JournalEvent {
        for e in events { apply(e) }
    }

    public mutating func apply(_ e: JournalEvent) {
        if runID.isEmpty { runID = e.run }
        lastSeq = max(lastSeq, e.seq)
        lastEvent = (e.type, e.ts)
        switch e.body {
        case let .runStarted(b):
            if firstStart == nil { firstStart = (e.ts, b) }
            begin(e.ts, b, resumed: false)
        case let .runResumed(b):
            begin(e.ts, b, resumed: true)
        case let .stageStarted(s):
            stageStarted(s, at: e.ts)
        case let .stageFinished(f):
            stageFinished(f, at: e.ts)
        case let .stageStalled(s):
            if let i = stageIndex[s.key] { stages[i].stalled = s }
        case let .stageQueued(q):
            if let i = stageIndex[q.key], stages[i].isOpen {
                stages[i].queue = q.state
                stages[i].phase = q.phase
                if let n = q.node { stages[i].node = n }
                stages[i].queueReason = q.reason
            }
        case let .watch(w):
            watchChanged(w, at: e.ts)
        case let .final(f):
            final = (f, e.ts)
            paused = nil
            endLife(failingWatches: false)
        case let .paused(p):
            paused = (p, e.ts)
        case .resumedFromPause:
            paused = nil
        case .preflight, .gate, .heartbeat, .log, .command, .notRun, .control, .unknown:
            break   // (a call's state, a watch's and the lives do not depend on these)
        }
    }

    /// A stage call's attempt started: the call's record is (re)opened and follows the attempt.
    private mutating func stageStarted(_ s: StageStarted, at ts: Double) {
        let i = slot(s.key)
        if !stages[i].isOpen {   // a new call (or the same call again in a later life)
            stages[i] = StageRecord(status: .running, key: s.key)
        }
        // (A new slot is already open: its start is set here, not by the reset above.)
        if stages[i].startedAt == nil { stages[i].startedAt = ts }
        // In place: a stage record is large, and a long resume folds thousands.
        stages[i].status = .running
        stages[i].command = s.command
        stages[i].cwd = s.cwd
        stages[i].fingerprint = s.fingerprint
        stages[i].attempt = s.attempt
        stages[i].attemptStartedAt = ts
        stages[i].timeoutSec = s.timeoutSec
        stages[i].pid = s.pid
        stages[i].logs = s.logs
        stages[i].fingerprintParts = s.fingerprintParts
        stages[i].stalled = nil
        stages[i].executor = s.executor
        stages[i].nativeID = s.nativeID
        stages[i].phase = s.nativeID == nil ? nil : .submitted
        stages[i].queue = nil
        stages[i].node = nil
        stages[i].queueReason = nil
        if keepsAttemptLogs {
            attemptLogs.append(AttemptLog(key: s.key, attempt: s.attempt, logs: s.logs, life: max(1, lives)))
        }
        noteLogNumber(s.key.id, s.logs)
    }

    /// A stage call's attempt ended: final, or waiting for its next attempt.
    private mutating func stageFinished(_ f: StageFinished, at ts: Double) {
        let i = slot(f.key)
        if !stages[i].isOpen {
            // A call again in a later life (a replay has no stage_started): its inputs' parts carry over.
            let parts = stages[i].fingerprintParts
            stages[i] = StageRecord(status: .running, key: f.key)
            stages[i].fingerprintParts = parts
        }
        if !f.fingerprint.isEmpty { stages[i].fingerprint = f.fingerprint }
        if !f.logs.stdout.isEmpty { stages[i].logs = f.logs }
        stages[i].attempt = f.attempt
        stages[i].status = f.final ? .ended(f.status) : .waiting
        stages[i].endedAt = ts
        if f.final { stages[i].pid = nil }
        stages[i].finished = f
        if let p = f.fingerprintParts { stages[i].fingerprintParts = p }
        if f.final, !keepsWholeRecords { stages[i] = stages[i].summarized() }
    }

    /// A watch's state changed: its record replaced, or a new one when the watch starts again.
    private mutating func watchChanged(_ w: WatchTransition, at ts: Double) {
        var rec = WatchRecord(id: w.id, state: w.to, since: ts, reason: w.reason, details: w.details)
        if w.to == .queued { rec.queued = w.details } else if let i = watchIndex[w.id] {
            rec.queued = watches[i].queued
        }
        if let i = watchIndex[w.id], !watches[i].state.isTerminal || w.from == nil { watches[i] = rec } else {
            watchIndex[w.id] = watches.count
            watches.append(rec)
        }
    }

    private mutating func begin(_ ts: Double, _ b: RunBegan, resumed: Bool) {
        latestStart = (ts, b, resumed)
        paused = nil
        lives += 1
        final = nil
        endLife(failingWatches: true)
    }

    /// The one place a call becomes `unfinished`: whatever is open when its life ends (a
    /// `final`, a later life's start, or a reader that knows the runner is gone) never
    /// finished; with `failingWatches`, an open watch failed.
    public mutating func endLife(failingWatches: Bool) {
        for i in stages.indices where stages[i].isOpen {
            stages[i].status = .unfinished
            if !keepsWholeRecords { stages[i] = stages[i].summarized() }
        }
        guard failingWatches else { return }
        for i in watches.indices where !watches[i].state.isTerminal { watches[i].state = .failed }
    }

    private mutating func slot(_ key: StageKey) -> Int {
        if let i = stageIndex[key] { return i }
        stageIndex[key] = stages.count
        stages.append(StageRecord(status: .new, key: key))   // (not open: the event that made it fills it in)
        return stages.count - 1
    }

    /// `.../<n>.out` → n (bytes, not Characters: this runs for every attempt of a long journal).
    private mutating func noteLogNumber(_ id: String, _ logs: StageLogs) {
        var n = 0, scale = 1, sawDigit = false
        var reachedDot = false
        for c in logs.stdout.utf8.reversed() {
            if !reachedDot { if c == UInt8(ascii: ".") { reachedDot = true }; continue }
            guard c >= 48, c <= 57 else { break }
            n += Int(c - 48) * scale
            scale *= 10
            sawDigit = true
        }
        if sawDigit, n > logNumbers[id] ?? 0 { logNumbers[id] = n }
    }

    public func stage(_ key: StageKey) -> StageRecord? { stageIndex[key].map { stages[$0] } }

    /// A call's status without copying its record (resume asks this of thousands).
    public func status(of key: StageKey) -> CallState? { stageIndex[key].map { stages[$0].status } }

    /// Stage calls that are over, one per (id, occurrence), in the order they were first seen.
    public var concluded: LazyFilterSequence<[StageRecord]> { stages.lazy.filter(\.isOver) }

    /// How many stage calls are over (`concluded.count`, without copying each record).
    public var concludedCount: Int { stages.indices.reduce(0) { $0 + (stages[$1].isOver ? 1 : 0) } }

    /// Stage calls in flight now (in a live run).
    public var running: [StageRecord] { stages.indices.filter { stages[$0].isOpen }.map { stages[$0] } }

    /// Stage ids in the order they first ran.
    public var stageIDs: [String] {
        var seen = Set<String>()
        return stages.compactMap { seen.insert($0.key.id).inserted ? $0.key.id : nil }
    }

    /// Every attempt of stage `id` (all occurrences, all lives), oldest first.
    public func attempts(of id: String) -> [AttemptLog] { attemptLogs.filter { $0.key.id == id } }

    /// What the recipe waits on now: the latest open stage or watch.
    public var current: (kind: String, id: String, since: Double, pid: Int32?)? {
        var best: (kind: String, id: String, since: Double, pid: Int32?)? = nil
        for i in stages.indices where stages[i].isOpen {   // (by index: no copy of 100,000 records)
            let r = stages[i]
            let since = r.attemptStartedAt ?? r.startedAt ?? 0   // the current attempt's time
            if best == nil || since >= best!.since { best = ("stage", r.key.id, since, r.pid) }
        }
        for w in watches where !w.state.isTerminal {
            if best == nil || w.since >= best!.since { best = ("watch", w.id, w.since, nil) }
        }
        return best
    }

    /// Batch jobs whose runner died while they were queued or running (not yet marked
    /// unfinished by a later life): resume re-attaches to them instead of submitting again.
    public var reattachable: [StageKey: StageRecord] {
        var out: [StageKey: StageRecord] = [:]
        for r in stages where (r.isOpen || r.status == .unfinished) && r.nativeID != nil && r.executor != nil {
            out[r.key] = r
        }
        return out
    }

    /// Passed calls resume may replay: (id, occurrence) → the final stage_finished.
    public var replayable: [StageKey: StageFinished] {
        var out: [StageKey: StageFinished] = [:]
        for r in stages where r.status == .ended(.passed) {
            guard var f = r.finished, !f.dry, !r.fingerprint.isEmpty else { continue }
            if f.fingerprintParts == nil { f.fingerprintParts = r.fingerprintParts }   // (from its stage_started)
            out[r.key] = f
        }
        return out
    }
}

// MARK: the fold's state, abridged, as a snapshot holds it (HistorySnapshot.swift)

extension RunHistory {
    /// The fold as `status`, `runs` and the live view read it, which is what a snapshot keeps:
    /// calls in flight (and their watches, starts, final, pause) in full; a call no longer in
    /// flight as its state only (and where the cache answered, its `stage_finished`); no
    /// attempt list; no fingerprint parts (resume's, read from the whole journal). Folding an
    /// event into an abridged history and abridging gives what folding it into the whole
    /// history and abridging gives (HistorySnapshotTests hold the two to it).
    public func abridged() -> RunHistory {
        var h = self
        h.attemptLogs = []
        for i in h.stages.indices { h.stages[i] = h.stages[i].abridged }
        return h
    }

    /// A history put back from its parts (a snapshot's); the indexes are derived.
    init(runID: String, firstStart: (ts: Double, began: RunBegan)?,
         latestStart: (ts: Double, began: RunBegan, resumed: Bool)?, lives: Int, stages: [StageRecord],
         watches: [WatchRecord], lastEvent: (type: String, ts: Double)?, final: (event: FinalEvent, ts: Double)?,
         paused: (record: PauseRecord, ts: Double)?, lastSeq: Int64, logNumbers: [String: Int]) {
        self.runID = runID
        self.firstStart = firstStart
        self.latestStart = latestStart
        self.lives = lives
        self.stages = stages
        self.watches = watches
        self.lastEvent = lastEvent
        self.final = final
        self.paused = paused
        self.lastSeq = lastSeq
        self.logNumbers = logNumbers
        stageIndex.reserveCapacity(stages.count)
        for i in stages.indices { stageIndex[stages[i].key] = i }   // (by index: no copy of each record)
        for (i, w) in watches.enumerated() { watchIndex[w.id] = i }
    }
}

extension StageRecord {
    /// What an abridged history keeps of this call (`RunHistory.abridged`).
    var abridged: StageRecord {
        var r = self
        r.fingerprintParts = nil
        r.finished?.fingerprintParts = nil
        guard !isOpen else { return r }
        var thin = StageRecord(status: status, key: key)
        if let f = r.finished, f.cachedFrom != nil { thin.finished = f }
        return thin
    }
}
