import BatonBase
import BatonCore

/// `baton report --trace`: Chrome Trace Event JSON (Perfetto, chrome://tracing). One
/// complete event (`ph: "X"`) per stage attempt, on one thread (`tid`) per lane of the
/// report's timeline; watch phases and backoff as complete events on their own threads;
/// gates, preflights and resumes as instant events; metadata events name the threads.
public struct ReportTrace {
    let t: RunTimeline

    public init(timeline: RunTimeline) { t = timeline }

    /// Thread ids: 1 run, 2 gates, preflights and commands, 3... watches, then 100 + lane.
    static let laneBase = 100

    func us(_ ts: Double) -> JSON { .int(Int64(((ts - t.firstTs) * 1_000_000).rounded())) }
    func dur(_ a: Double, _ b: Double) -> JSON { .int(max(0, Int64(((b - a) * 1_000_000).rounded()))) }

    public func json() -> JSON {
        let b = Events(self)
        b.meta("process_name", tid: nil, [("name", .string("baton run \(t.runID)"))])
        runThread(b)
        sideThread(b)
        watchThreads(b)
        stageThreads(b)
        return .object([("traceEvents", .array(b.ev)), ("displayTimeUnit", .string("ms")),
                        ("otherData",
                         .object([("run", .string(t.runID)), ("start", .string(Clock.rfc3339(t.firstTs)))]))])
    }

    /// The events as they are added.
    final class Events {
        let trace: ReportTrace
        var ev: [JSON] = []

        init(_ trace: ReportTrace) {
            self.trace = trace
            ev.reserveCapacity(trace.t.attempts.count + 64)
        }

        func meta(_ name: String, tid: Int?, _ args: [(String, JSON)]) {
            var o: [(String, JSON)] = [("name", .string(name)), ("ph", .string("M")), ("pid", .int(1))]
            if let tid { o.append(("tid", .int(Int64(tid)))) }
            o.append(("args", .object(args)))
            ev.append(.object(o))
        }

        func thread(_ tid: Int, _ name: String) {
            meta("thread_name", tid: tid, [("name", .string(name))])
            meta("thread_sort_index", tid: tid, [("sort_index", .int(Int64(tid)))])
        }

        func complete(_ name: String, cat: String, tid: Int, _ a: Double, _ b: Double, _ args: [(String, JSON)]) {
            ev.append(.object([("name", .string(name)), ("cat", .string(cat)), ("ph", .string("X")),
                               ("ts", trace.us(a)),
                               ("dur", trace.dur(a, b)), ("pid", .int(1)), ("tid", .int(Int64(tid))),
                               ("args", .object(args))]))
        }

        func instant(_ name: String, cat: String, tid: Int, _ ts: Double, _ args: [(String, JSON)]) {
            ev.append(.object([("name", .string(name)), ("cat", .string(cat)), ("ph", .string("i")),
                               ("s", .string("t")),
                               ("ts", trace.us(ts)), ("pid", .int(1)), ("tid", .int(Int64(tid))),
                               ("args", .object(args))]))
        }
    }

    /// Thread 1: each life of the run, its replays, stalls, the final event.
    func runThread(_ b: Events) {
        b.thread(1, "run")
        for (i, l) in t.lives.enumerated() {
            let end = i + 1 < t.lives.count ? l.last : t.lastTs
            b.complete(i == 0 ? "run" : "resume \(i)", cat: "life", tid: 1, l.start, end,
                       [("pid", .int(Int64(l.began.pid))), ("host", .string(l.began.host)),
                        ("recipe", .string(l.began.recipe))])
            let replays = t.decisions(inLife: i).filter(\.why.replayed)
            if !replays.isEmpty {
                b.instant("replayed \(replays.count) stage calls", cat: "resume", tid: 1, replays[0].ts,
                          [("count", .int(Int64(replays.count)))])
            }
        }
        for s in t.stalls { b.complete("stall", cat: "stall", tid: 1, s.start, s.end, []) }
        if let f = t.final {
            b.instant("final: \(f.record.status)", cat: "final", tid: 1, f.ts,
                      [("exit_code", .int(Int64(f.record.exitCode))),
                       ("reason", f.record.reason.map(JSON.string) ?? .null)])
        }
    }

    /// Thread 2: gates, preflights and commands.
    func sideThread(_ b: Events) {
        if !t.gates.isEmpty || !t.preflights.isEmpty || !t.commands.isEmpty {
            b.thread(2, "gates, preflights and commands")
        }
        for m in t.commands {
            let c = m.record
            b.complete(c.command.display, cat: "command," + c.via, tid: 2, m.ts - Double(c.durationMs) / 1000, m.ts,
                       [("exit", c.exit.map { .int(Int64($0)) } ?? .null), ("timed_out", .bool(c.timedOut))])
        }
        for m in t.gates {
            let g = m.record
            b.instant("gate \(g.name) \(g.iteration)/\(g.max) \(g.approved ? "approved" : "rejected")",
                      cat: "gate",
                      tid: 2,
                      m.ts,
                      [("approved", .bool(g.approved)), ("issues", g.issues), ("fallback_used", .bool(g.fallbackUsed))])
        }
        for m in t.preflights {
            b.instant("preflight \(m.record.name) \(m.record.ok ? "ok" : "failed")", cat: "preflight", tid: 2, m.ts,
                      [("policy", .string(m.record.policy.rawValue)), ("checks", .array(m.record.checks.map(\.json)))])
        }
    }

    /// Threads 3...: one per watch, its phases.
    func watchThreads(_ b: Events) {
        var watchTid: [String: Int] = [:]
        for p in t.watchPhases {
            let tid: Int
            if let w = watchTid[p.id] { tid = w } else {
                tid = 3 + watchTid.count
                watchTid[p.id] = tid
                b.thread(tid, "watch \(p.id)")
            }
            b.complete(p.state.rawValue,
                       cat: "watch",
                       tid: tid,
                       p.start,
                       p.end ?? t.lastTs,
                       [("reason", .string(p.reason))])
        }
    }

    /// Threads 100...: one per lane, its stage attempts and the backoff between them.
    func stageThreads(_ b: Events) {
        for l in 0..<t.laneCount { b.thread(ReportTrace.laneBase + l, "stages \(l + 1)") }
        var lastOfCall: [String: Int] = [:]
        for (i, a) in t.attempts.enumerated() {
            let tid = ReportTrace.laneBase + t.lanes[i]
            let callKey = "\(a.life)\u{1}\(a.key)"
            if let p = lastOfCall[callKey] {
                b.complete("backoff", cat: "backoff", tid: tid, t.end(of: t.attempts[p]), a.start,
                           [("before_attempt", .int(Int64(a.attempt)))])
            }
            lastOfCall[callKey] = i
            var args: [(String, JSON)] = [("id", .string(a.key.id)), ("occurrence", .int(Int64(a.key.occurrence))),
                                          ("attempt", .int(Int64(a.attempt))), ("status", .string(a.status.rawValue))]
            if let f = a.finished {
                args.append(("exit", f.exit.map { .int(Int64($0)) } ?? .null))
                if let c = f.failureClass { args.append(("failure_class", .string(c.rawValue))) }
                if let m = f.message { args.append(("message", .string(m))) }
            }
            if let p = a.pid { args.append(("pid", .int(Int64(p)))) }
            b.complete(a.key.description, cat: "stage," + a.status.rawValue, tid: tid, a.start, t.end(of: a), args)
        }
    }
}

/// `baton report --tsv`: one row per stage attempt (replays too), with Nextflow's trace
/// field names where they fit. Times are RFC 3339, durations in milliseconds.
public struct ReportTSV {
    let t: RunTimeline

    public init(timeline: RunTimeline) { t = timeline }

    public static let columns = ["task_id", "name", "status", "exit", "submit", "start", "complete", "duration",
                                 "realtime",
                                 "attempt", "native_id", "stage", "occurrence", "life", "baton_status", "failure_class",
                                 "stdout", "stderr", "why"]

    /// Nextflow's words for a task's state.
    static func status(_ s: CallState, replayed: Bool = false) -> String {
        if replayed { return "CACHED" }
        switch s {
        case .ended(.passed): return "COMPLETED"
        case .ended(.failed), .ended(.timed_out): return "FAILED"
        case .running, .waiting: return "RUNNING"
        case .ended(.cancelled), .unfinished, .new: return "ABORTED"
        }
    }

    static func cell(_ s: String) -> String {
        String(s.map { $0 == "\t" || $0 == "\n" || $0 == "\r" ? " " : $0 })
    }

    public func render() -> String {
        var out = ReportTSV.columns.joined(separator: "\t") + "\n"
        out.reserveCapacity(t.attempts.count * 200 + t.decisions.count * 120)
        var whyOf: [String: ResumeWhy] = [:]
        for d in t.decisions where !d.why.replayed { whyOf["\(d.life)\u{1}\(d.key)"] = d.why }
        var taskID = 0
        func row(_ cells: [String]) { out += cells.map(ReportTSV.cell).joined(separator: "\t") + "\n" }
        for a in t.attempts {
            taskID += 1
            let end = a.end
            let real = a.finished.map { String($0.durationMs) } ?? ""
            let exit: String = a.finished?.exit.map { String($0) } ?? ""
            let duration: String = end.map { String(Clock.millis($0) - Clock.millis(a.start)) } ?? ""
            let why: String = a.attempt == 1 ? whyOf["\(a.life)\u{1}\(a.key)"]?.sentence ?? "" : ""
            let started = Clock.rfc3339(a.start)
            var cells: [String] = [String(taskID), a.key.description, ReportTSV.status(a.status), exit, started,
                                   started]
            cells += [end.map(Clock.rfc3339) ?? "", duration, real, String(a.attempt), a.pid.map { String($0) } ?? ""]
            cells += [a.key.id, String(a.key.occurrence), String(a.life), a.status.rawValue]
            cells += [a.finished?.failureClass?.rawValue ?? "", a.logs.stdout, a.logs.stderr, why]
            row(cells)
        }
        for d in t.decisions where d.why.replayed {
            taskID += 1
            let ts = Clock.rfc3339(d.ts)
            row([String(taskID), d.key.description, "CACHED", "0", ts, ts, ts, "0", "0", "0", "", d.key.id,
                 String(d.key.occurrence), String(d.life), "replayed", "", "", "", d.why.sentence])
        }
        return out
    }
}
