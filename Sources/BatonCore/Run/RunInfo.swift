import BatonBase
import Glibc

/// Everything `runs`, `status` and the shell's `:attach` say about one run, read from
/// its directory without taking its lock. Never throws: a damaged run is described,
/// with its problems listed.
public struct RunInfo {
    public enum State: String, CaseIterable, Sendable {
        case running, starting, orphaned, succeeded, failed, cancelled, dry_run

        /// The state of a run that ended with `outcome` (whose runner is gone).
        public init(_ outcome: RunOutcome) {
            switch outcome {
            case .succeeded: self = .succeeded
            case .failed: self = .failed
            case .cancelled: self = .cancelled
            case .dry_run: self = .dry_run
            case .running: self = .orphaned
            }
        }
    }

    public var id: String
    public var dir: RunDirectory
    public var state: State
    public var recipe: String?
    public var startedAt: Double?
    public var endedAt: Double?
    public var exitCode: Int?
    public var reason: String?
    public var runnerPid: Int32?
    /// The stage attempt or watch in progress: (kind, id, since).
    public var current: (kind: String, id: String, since: Double)?
    public var currentPid: Int32?
    /// A live run paused at a breakpoint: where, why, since when.
    public var paused: (record: PauseRecord, since: Double)?
    public var lastEvent: (type: String, ts: Double)?
    public var events: [JournalEvent] = []
    public var history = RunHistory()
    public var final: FinalRecord?
    public var problems: [String] = []
    public var stageCount = 0
    public var alivePids: [Int32] = []
    /// A live run's stages in flight, with how long each has been silent (its logs' mtimes).
    public var running: [(stage: StageRecord, silent: Double)] = []
    /// A live run whose last event is older than three heartbeat intervals.
    public var runnerLooksHung = false

    public var duration: Double? {
        guard let s = startedAt else { return nil }
        return (endedAt ?? Clock.now()) - s
    }

    public var isLive: Bool { state == .running || state == .starting }

    /// `withEvents: false`: without `events`, and with the history abridged when the journal
    /// has a snapshot (`RunDirectory.readAbridgedHistory`: its concluded calls as their state
    /// only, no attempt list), which is all `runs`, `status` and the live view read.
    /// `fold`: how to fold the events when the caller wants more than the `RunHistory` (the
    /// report's `RunTimeline`, whose history this describes): the journal is folded once.
    public static func load(_ dir: RunDirectory, withEvents: Bool = true,
                            fold: (([JournalEvent]) -> RunHistory)? = nil) -> RunInfo {
        var info = RunInfo(id: dir.id, dir: dir, state: .orphaned)
        let locked = FileLock.isHeld(dir.lock)
        let (h, contents) = info.read(withEvents: withEvents, fold: fold)
        info.history = h
        info.recipe = h.latestStart?.began.recipe
        info.startedAt = h.firstStart?.ts ?? h.latestStart?.ts
        info.runnerPid = h.latestStart?.began.pid
        info.lastEvent = h.lastEvent
        info.stageCount = h.concludedCount
        if let c = h.current {
            info.current = (c.kind, c.id, c.since)
            info.currentPid = c.pid
        }
        // A final.json that ended before the journal's latest life began is an earlier
        // life's (a resume that died by kill -9 never wrote its own): not this run's ending.
        // (The crash guard's has no ended_at; a finished life journals its `final`.)
        if h.final == nil, let e = info.final?.endedAt, let s = h.latestStart?.ts, e < s {
            info.final = nil
        }
        if withEvents { info.events = contents.events }
        if locked {
            info.state = .running
            if let p = h.paused { info.paused = (p.record, p.ts) }
            if let s = (try? FileIO.readString(dir.lock))?.trimmingWhitespace(), let p = Int32(s) { info.runnerPid = p }
        } else if let s = info.final?.status, s.isEnding {
            info.state = State(s)
            info.current = nil
        } else if h.lastEvent == nil, let pid = dir.readPid(), kill(pid, 0) == 0 {
            info.state = .starting
            info.runnerPid = pid
        } else {
            info.state = .orphaned
        }
        if let f = info.final, info.state != .running {
            info.exitCode = f.exitCode.map(Int.init)
            info.reason = f.reason
            info.endedAt = f.endedAt
            if info.recipe == nil { info.recipe = f.recipe }
            if info.startedAt == nil, f.startedAt > 0 { info.startedAt = f.startedAt }
        }
        // An orphaned run ended when its runner last wrote.
        if info.state == .orphaned, info.endedAt == nil || info.final?.status == .running {
            info.endedAt = info.lastEvent?.ts
        }
        if info.state == .running || info.state == .orphaned { info.alivePids = Survivors.find(runID: dir.id) }
        if info.isLive {
            let now = Clock.now()
            info.running = h.running.map { r in
                var last = r.startedAt ?? now
                for p in [r.logs.stdout, r.logs.stderr] {
                    var st = stat()
                    if !p.isEmpty, stat(p, &st) == 0, st.st_size > 0 {
                        last = max(last, st.mtime)
                    }
                }
                return (r, max(0, now - last))
            }
            let every = h.latestStart?.began.heartbeatSec ?? 30
            if let l = info.lastEvent, now - l.ts > 3 * every { info.runnerLooksHung = true }
        }
        return info
    }

    /// The journal folded and final.json, with what was wrong with them in `problems`.
    private mutating func read(withEvents: Bool, fold: (([JournalEvent]) -> RunHistory)?)
        -> (RunHistory, JournalContents) {
        var contents = JournalContents()
        var h = RunHistory()
        if FileIO.exists(dir.journal) {
            do {
                if !withEvents, fold == nil { (h, contents) = try dir.readAbridgedHistory() } else {
                    contents = try dir.readJournal()
                    h = fold?(contents.events) ?? RunHistory(contents.events)
                }
            } catch { problems.append("cannot read journal: \(error)") }
            problems.append(contentsOf: contents.problems)
        } else {
            problems.append("no journal.jsonl")
        }
        if FileIO.exists(dir.final) {
            // (Without events: without final.json's stage list, as the history is abridged.)
            let whole = withEvents || fold != nil
            if let f = whole ? FinalRecord.read(dir) : FinalRecord.readWithoutStages(dir) { final = f } else {
                problems.append("final.json is not valid JSON (truncated?)")
            }
        }
        return (h, contents)
    }

    public var json: JSON {
        var o: [(String, JSON)] = [
            ("run", .string(id)), ("dir", .string(dir.path)), ("state", .string(state.rawValue)),
            ("recipe", recipe.map(JSON.string) ?? .null),
            ("started_at", startedAt.map { .string(Clock.rfc3339($0)) } ?? .null),
            ("ended_at", endedAt.map { .string(Clock.rfc3339($0)) } ?? .null),
            ("duration_ms", startedAt.map { .int(Clock.millis(endedAt ?? Clock.now()) - Clock.millis($0)) } ?? .null),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null),
            ("reason", reason.map(JSON.string) ?? .null),
            ("runner_pid", runnerPid.map { .int(Int64($0)) } ?? .null),
            ("stages_finished", .int(Int64(stageCount))),
        ]
        let cached = cachedStages
        if !cached.isEmpty {
            o.append(("stages_cached", .array(cached.map { r in
                .object([("id", .string(r.key.id)), ("occurrence", .int(Int64(r.key.occurrence))),
                         ("cached_from", r.finished!.cachedFrom!.json)])
            })))
        }
        if let c = current {
            o.append(("current", .object([("kind", .string(c.kind)), ("id", .string(c.id)),
                                          ("since", .string(Clock.rfc3339(c.since))),
                                          ("for_ms", .int(Int64((Clock.now() - c.since) * 1000))),
                                          ("pid", currentPid.map { .int(Int64($0)) } ?? .null)])))
        } else { o.append(("current", .null)) }
        if let l = lastEvent {
            o.append(("last_event", .object([("type", .string(l.type)), ("ts", .string(Clock.rfc3339(l.ts))),
                                             ("ago_ms", .int(Int64((Clock.now() - l.ts) * 1000)))])))
        } else { o.append(("last_event", .null)) }
        o.append(("alive_pids", .array(alivePids.map { .int(Int64($0)) })))
        o.append(("running", .array(running.map { r in
            .object([("id", .string(r.stage.key.id)), ("occurrence", .int(Int64(r.stage.key.occurrence))),
                     ("attempt", .int(Int64(r.stage.attempt))), ("status", .string(r.stage.status.rawValue)),
                     ("pid", r.stage.pid.map { .int(Int64($0)) } ?? .null),
                     ("cmd", r.stage.command?.json ?? .null),
                     ("for_ms", .int(Int64((Clock.now() - (r.stage.startedAt ?? Clock.now())) * 1000))),
                     ("silent_ms", .int(Int64(r.silent * 1000))), ("stalled", .bool(r.stage.stalled != nil))]
                    + RunInfo.liveFields(r.stage) + r.stage.batchFields)
        })))
        o.append(("blocked_in", blockedIn?.json ?? .null))
        o.append(("paused", paused.map { p in .object([("where", .string(p.record.at)), ("why", .string(p.record.why)),
                                                      ("stage", p.record.stage.map(JSON.string) ?? .null),
                                                      ("line", .string(p.record.line)),
                                                      ("for_ms", .int(Int64((Clock.now() - p.since) * 1000)))]) }
                                                          ?? .null))
        o.append(("runner_looks_hung", .bool(runnerLooksHung)))
        o.append(("problems", .array(problems.map(JSON.string))))
        return .object(o)
    }
}

extension RunInfo {
    /// Stage calls the cache answered (their outputs restored from an earlier run's).
    public var cachedStages: [StageRecord] {
        history.stages.indices.filter { history.stages[$0].finished?.cachedFrom != nil }.map { history.stages[$0] }
    }
}
