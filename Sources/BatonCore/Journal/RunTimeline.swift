import BatonBase
/// A run's journal over time: every stage attempt with its start and end, the replays and
/// decisions of each resume, watch phases, gate iterations, preflights, heartbeats, lives and
/// stalls, for the report, the trace, the TSV and `log --why`. It is a view of the one fold:
/// each event goes through `RunHistory` first (kept as `history`), and what state a call is
/// in, when a life ends and what it left unfinished are the fold's answers; this only adds
/// when each thing happened.
public struct RunTimeline: Sendable {
    public struct Attempt: Sendable {
        public var key: StageKey
        /// Which life of the run (0: the first run, 1: the first resume, ...).
        public var life: Int
        public var attempt: Int
        public var start: Double
        public var end: Double?
        /// passed, failed, timed_out, cancelled; `running` (live) or `unfinished` (its runner died).
        public var status: CallState
        public var finished: StageFinished?
        public var pid: Int32?
        public var logs: StageLogs
        public var command: Command?
        /// false when another attempt of the same call follows (a retry).
        public var final: Bool { finished?.final ?? true }
    }

    /// A stage call a resume replayed, or a decision a resume made about a call.
    public struct Decision: Sendable {
        public var key: StageKey
        public var life: Int
        public var ts: Double
        public var why: ResumeWhy
    }

    public struct WatchPhase: Sendable {
        public var id: String
        public var state: WatchState
        public var start: Double
        public var end: Double?
        public var reason: String
    }

    public struct Mark<T: Sendable>: Sendable {
        public var ts: Double
        public var record: T
    }

    public struct Life: Sendable {
        public var start: Double
        public var began: RunBegan
        public var resumed: Bool
        /// The last event this life wrote.
        public var last: Double
    }

    public struct Span: Sendable {
        public var start: Double
        public var end: Double
    }

    /// The fold this timeline is a view of.
    public private(set) var history = RunHistory()
    public private(set) var runID = ""
    public private(set) var attempts: [Attempt] = []
    public private(set) var decisions: [Decision] = []
    public private(set) var watchPhases: [WatchPhase] = []
    public private(set) var gates: [Mark<GateRecord>] = []
    public private(set) var preflights: [Mark<PreflightRecord>] = []
    public private(set) var heartbeats: [Mark<Heartbeat>] = []
    /// Commands run outside stages (baton.sh, os.execute, gate and preflight commands),
    /// stamped when they ended.
    public private(set) var commands: [Mark<CommandRecord>] = []
    public private(set) var lives: [Life] = []
    public private(set) var final: Mark<FinalEvent>?
    /// Gaps with no journal event, longer than three heartbeat intervals (the runner was
    /// stopped, suspended or dead); the last one may run up to now for a live run.
    public private(set) var stalls: [Span] = []
    /// Lane of each attempt (same index as `attempts`): a call's attempts share a lane,
    /// and no two calls on one lane overlap in time.
    public private(set) var lanes: [Int] = []
    public private(set) var laneCount = 0
    public private(set) var firstTs: Double = 0
    public private(set) var lastTs: Double = 0

    private var open: [StageKey: Int] = [:]
    private var openWatch: [String: Int] = [:]
    private var gaps: [Span] = []

    /// Folds `events`; `now` closes what is still open: a live run's attempts run to `now`,
    /// an ended or orphaned run's end where its runner last wrote.
    public init<S: Sequence>(_ events: S, live: Bool, now: Double = Clock.now()) where S.Element == JournalEvent {
        self.init(folding: events)
        close(live: live, now: now)
    }

    /// Folds `events`, leaving what is open open until `close(live:now:)`: for a caller that
    /// learns whether the run is live from the fold itself (the report's `RunInfo` reads
    /// `history`, so the journal is folded once).
    public init<S: Sequence>(folding events: S) where S.Element == JournalEvent {
        for e in events {
            history.apply(e)
            apply(e)
        }
    }

    private var life: Int { max(0, lives.count - 1) }

    private mutating func apply(_ e: JournalEvent) {
        if runID.isEmpty { runID = e.run; firstTs = e.ts }
        // Candidates for stalls (the shortest threshold is 3 × 50 ms); `close` keeps the real ones.
        if e.ts - lastTs > 0.15, lastTs > 0 { gaps.append(Span(start: lastTs, end: e.ts)) }
        lastTs = max(lastTs, e.ts)
        if let (b, resumed) = e.body.began {
            // What the fold found the previous life left unfinished ended when its runner last wrote.
            closeFromHistory(at: lives.last?.last ?? e.ts)
            lives.append(Life(start: e.ts, began: b, resumed: resumed, last: e.ts))
            return
        }
        let previous = lives.last?.last ?? e.ts
        if !lives.isEmpty { lives[lives.count - 1].last = e.ts }
        switch e.body {
        case let .stageStarted(s):
            if let w = s.why { decisions.append(Decision(key: s.key, life: life, ts: e.ts, why: w)) }
            open[s.key] = attempts.count
            attempts.append(Attempt(key: s.key, life: life, attempt: s.attempt, start: e.ts, status: .running,
                                    pid: s.pid, logs: s.logs, command: s.command))
        case let .stageFinished(f):
            if f.replayed {
                decisions.append(Decision(key: f.key, life: life, ts: e.ts, why: ResumeWhy(reason: .unchanged)))
                return
            }
            let i: Int
            if let o = open.removeValue(forKey: f.key) { i = o } else {   // 0.1 journals: no stage_started
                i = attempts.count
                attempts.append(Attempt(key: f.key,
                                        life: life,
                                        attempt: f.attempt,
                                        start: e.ts - Double(f.durationMs) / 1000,
                                        status: .running, logs: f.logs))
            }
            attempts[i].end = e.ts
            attempts[i].status = .ended(f.status)
            attempts[i].finished = f
        case let .watch(w):
            if let i = openWatch.removeValue(forKey: w.id) { watchPhases[i].end = e.ts }
            watchPhases.append(WatchPhase(id: w.id,
                                          state: w.to,
                                          start: e.ts,
                                          end: w.to.isTerminal ? e.ts : nil,
                                          reason: w.reason))
            if !w.to.isTerminal { openWatch[w.id] = watchPhases.count - 1 }
        case let .gate(g): gates.append(Mark(ts: e.ts, record: g))
        case let .preflight(p): preflights.append(Mark(ts: e.ts, record: p))
        case let .heartbeat(h): heartbeats.append(Mark(ts: e.ts, record: h))
        case let .command(c): commands.append(Mark(ts: e.ts, record: c))
        case let .final(f):
            final = Mark(ts: e.ts, record: f)
            // Left open only when the runner died (`cancel` finished the orphan): it ended
            // when the runner last wrote.
            closeFromHistory(at: previous)
        case .runStarted, .runResumed:
            break   // (a life: above)
        case .stageStalled, .stageQueued, .log, .notRun, .control, .paused, .resumedFromPause, .unknown:
            break   // (not drawn over time)
        }
    }

    /// Ends the open attempts whose call the fold has closed (`RunHistory.endLife`: the
    /// one place a call becomes unfinished), with the fold's state, at `ts`; open watch
    /// phases end there too.
    private mutating func closeFromHistory(at ts: Double) {
        for (key, i) in open {
            guard let state = history.stage(key)?.status, !state.isOpen else { continue }
            attempts[i].end = ts
            attempts[i].status = state
            open[key] = nil
        }
        for (_, i) in openWatch { watchPhases[i].end = ts }
        openWatch = [:]
    }

    /// Ends what the fold left open: a live run's attempts run to `now`; an ended or orphaned
    /// run's end where its runner last wrote.
    public mutating func close(live: Bool, now: Double = Clock.now()) {
        if live {
            for (_, i) in open { attempts[i].status = .running }
            lastTs = max(lastTs, now)
        } else {
            // The runner is gone: its life ends here, in the fold first.
            history.endLife(failingWatches: false)
            closeFromHistory(at: lastTs)
        }
        // Stalls: gaps within one life longer than three heartbeat intervals (30 s unless
        // the heartbeats say otherwise); between lives the run was simply not running.
        let threshold = 3 * heartbeatInterval
        let lifeStarts = Set(lives.map(\.start))
        stalls = gaps.filter { $0.end - $0.start > threshold && !lifeStarts.contains($0.end) }
        if live, let last = lives.last?.last, now - last > threshold { stalls.append(Span(start: last, end: now)) }
        assignLanes()
    }

    /// The interval between heartbeats of one wait, as journaled (30 s by default).
    public var heartbeatInterval: Double {
        var best = Double.infinity
        for (a, b) in zip(heartbeats, heartbeats.dropFirst()) where a.record.id == b.record.id
            && b.record.forMs > a.record.forMs {
            best = min(best, Double(b.record.forMs - a.record.forMs) / 1000)
        }
        return best.isFinite ? max(best, 0.05) : 30
    }

    /// The end used for drawing: an open attempt runs to the end of the timeline.
    public func end(of a: Attempt) -> Double { a.end ?? lastTs }

    /// Greedy interval partitioning over calls (a call: the attempts of one (id, occurrence)
    /// in one life), in order of start: the first lane free at the call's start.
    private mutating func assignLanes() {
        lanes = Array(repeating: 0, count: attempts.count)
        var callOf: [String: [Int]] = [:]
        var order: [String] = []
        for (i, a) in attempts.enumerated() {
            let k = "\(a.life)\u{1}\(a.key.id)\u{1}\(a.key.occurrence)"
            if callOf[k] == nil { order.append(k) }
            callOf[k, default: []].append(i)
        }
        var laneEnds: [Double] = []
        for k in order {
            let idx = callOf[k]!
            let start = attempts[idx[0]].start
            let end = idx.map { self.end(of: attempts[$0]) }.max() ?? start
            // The lowest free lane: most runs are sequential and need one.
            let lane = laneEnds.firstIndex { $0 <= start } ?? laneEnds.count
            if lane == laneEnds.count { laneEnds.append(end) } else { laneEnds[lane] = end }
            for i in idx { lanes[i] = lane }
        }
        laneCount = laneEnds.count
    }

    /// Decisions of each resume (life ≥ 1), in the order they were made.
    public func decisions(inLife l: Int) -> [Decision] { decisions.filter { $0.life == l } }
}
