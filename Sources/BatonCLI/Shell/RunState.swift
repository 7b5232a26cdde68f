import BatonBase
import BatonCore

/// What `:attach` puts in the Lua value `run`: everything `status --json` says, plus
/// final.json, every journal event, and the stage calls with their results (a call still
/// running has status "running" and its age), all read from the run's one history.
enum RunState {
    static func json(_ info: RunInfo, now: Double = Clock.now()) -> JSON {
        // A run whose runner is gone: its life ended, as the fold decides (RunHistory.endLife).
        var history = info.history
        if !info.isLive { history.endLife(failingWatches: false) }
        let stages: [JSON] = history.stages.map { r in
            var s: [(String, JSON)] = [("id", .string(r.key.id)), ("occurrence", .int(Int64(r.key.occurrence))),
                                       ("attempt", .int(Int64(r.attempt)))]
            s.append(("status", .string(r.status.rawValue)))
            if let c = r.command { s.append(("cmd", c.json)) }
            if let p = r.pid { s.append(("pid", .int(Int64(p)))) }
            s += r.batchFields
            if let c = r.cwd { s.append(("cwd", .string(c))) }
            s.append(("logs", .object([("stdout", .string(r.logs.stdout)), ("stderr", .string(r.logs.stderr))])))
            if let t = r.startedAt { s.append(("started_at", .string(Clock.rfc3339(t)))) }
            if let f = r.finished, r.isOver {
                if let x = f.exit { s.append(("exit", .int(Int64(x)))) }
                if let g = f.signal { s.append(("signal", .int(Int64(g)))) }
                s.append(("duration_ms", .int(r.durationMs)))
                if let c = f.failureClass { s.append(("failure_class", .string(c.rawValue))) }
                if let g = f.signature { s.append(("signature", .string(g))) }
                if let m = f.message { s.append(("message", .string(m))) }
                s.append(("replayed", .bool(f.replayed)))
                if let t = r.endedAt { s.append(("ended_at", .string(Clock.rfc3339(t)))) }
            } else if r.isOpen, info.isLive, let t = r.startedAt {
                s.append(("age_s", .double(((now - t) * 10).rounded() / 10)))
            }
            return .object(s)
        }
        var o = info.json.objectValue ?? []
        o.append(("live", .bool(info.isLive)))
        o.append(("stages", .array(stages)))
        o.append(("events", .array(info.events.map(\.json))))
        o.append(("final", info.final?.json ?? .null))
        return .object(o)
    }
}
