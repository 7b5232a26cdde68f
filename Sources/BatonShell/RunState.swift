import BatonCore

/// What `:attach` puts in the Lua value `run`: everything `status --json` says, plus
/// final.json, every journal event, and the stages with their results (a stage still
/// running has status "running" and its age).
enum RunState {
    static func json(_ info: RunInfo, now: Double = Clock.now()) -> JSON {
        var stages: [[(String, JSON)]] = []
        var index: [String: Int] = [:]
        for e in info.events {
            let type = e["type"]?.stringValue ?? ""
            guard type == "stage_started" || type == "stage_finished", let id = e["id"]?.stringValue else { continue }
            let key = "\(id)\u{1}\(e["occurrence"]?.intValue ?? 1)"
            if type == "stage_started" {
                var s: [(String, JSON)] = [("id", .string(id)), ("occurrence", .int(e["occurrence"]?.intValue ?? 1)),
                                           ("attempt", .int(e["attempt"]?.intValue ?? 1)), ("status", .string("running"))]
                if let c = e["shell"] ?? e["argv"] { s.append(("cmd", c)) }
                for k in ["pid", "cwd", "logs"] { if let v = e[k] { s.append((k, v)) } }
                if let ts = e["ts"] { s.append(("started_at", ts)) }
                if let i = index[key] { stages[i] = s } else { index[key] = stages.count; stages.append(s) }
            } else {
                let i = index[key] ?? { stages.append([("id", .string(id))]); index[key] = stages.count - 1; return stages.count - 1 }()
                var s = stages[i].filter { $0.0 != "status" && $0.0 != "attempt" }
                for k in ["status", "attempt", "exit", "signal", "duration_ms", "failure_class", "signature", "message", "replayed", "logs"] {
                    if let v = e[k] { s.removeAll { $0.0 == k }; s.append((k, v)) }
                }
                if let ts = e["ts"] { s.append(("ended_at", ts)) }
                stages[i] = s
            }
        }
        // A stage still "running" in a run that is not live never finished.
        for i in stages.indices where stages[i].contains(where: { $0.0 == "status" && $0.1 == .string("running") }) {
            if !info.isLive {
                stages[i] = stages[i].map { $0.0 == "status" ? ("status", .string("unfinished")) : $0 }
            } else if let t = stages[i].first(where: { $0.0 == "started_at" })?.1.stringValue.flatMap(Clock.parseRFC3339) {
                stages[i].append(("age_s", .double(((now - t) * 10).rounded() / 10)))
            }
        }
        var o = info.json.objectValue ?? []
        o.append(("live", .bool(info.isLive)))
        o.append(("stages", .array(stages.map { .object($0) })))
        o.append(("events", .array(info.events)))
        o.append(("final", info.final ?? .null))
        return .object(o)
    }
}
