import Glibc

/// Everything `runs`, `status` and the shell's `:attach` say about one run, read from
/// its directory without taking its lock. Never throws: a damaged run is described,
/// with its problems listed.
public struct RunInfo {
    public enum State: String { case running, starting, orphaned, succeeded, failed, cancelled, dry_run }

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
    public var lastEvent: (type: String, at: Double)?
    public var events: [JSON] = []
    public var final: JSON?
    public var problems: [String] = []
    public var stageCount = 0
    public var alivePids: [Int32] = []

    public var duration: Double? {
        guard let s = startedAt else { return nil }
        return (endedAt ?? Clock.now()) - s
    }

    public var isLive: Bool { state == .running || state == .starting }

    public static func load(_ dir: RunDirectory, withEvents: Bool = true) -> RunInfo {
        var info = RunInfo(id: dir.id, dir: dir, state: .orphaned)
        let locked = FileLock.isHeld(dir.lock)
        var contents = JournalContents()
        if FileIO.exists(dir.journal) {
            do { contents = try JournalReader.read(dir.journal) } catch { info.problems.append("cannot read journal: \(error)") }
            info.problems.append(contentsOf: contents.problems)
        } else {
            info.problems.append("no journal.jsonl")
        }
        if FileIO.exists(dir.final) {
            if let f = dir.readFinal() { info.final = f } else { info.problems.append("final.json is not valid JSON (truncated?)") }
        }
        var open: [String: (kind: String, id: String, since: Double, pid: Int32?)] = [:]
        var order: [String] = []
        for e in contents.events {
            guard let type = e["type"]?.stringValue else { continue }
            let ts = e["ts"]?.stringValue.flatMap(Clock.parseRFC3339)
            if let ts { info.lastEvent = (type, ts) }
            switch type {
            case "run_started", "run_resumed":
                if info.recipe == nil || type == "run_resumed" { info.recipe = e["recipe"]?.stringValue }
                if info.startedAt == nil { info.startedAt = ts }
                info.runnerPid = e["pid"]?.intValue.map { Int32($0) }
                open.removeAll(); order.removeAll()
            case "stage_started":
                let key = "stage\u{1}\(e["id"]?.stringValue ?? "")\u{1}\(e["occurrence"]?.intValue ?? 0)"
                open[key] = ("stage", e["id"]?.stringValue ?? "?", ts ?? 0, e["pid"]?.intValue.map { Int32($0) })
                order.append(key)
            case "stage_finished":
                info.stageCount += e["final"]?.boolValue == false ? 0 : 1
                open["stage\u{1}\(e["id"]?.stringValue ?? "")\u{1}\(e["occurrence"]?.intValue ?? 0)"] = nil
            case "watch":
                let key = "watch\u{1}\(e["id"]?.stringValue ?? "")"
                let to = e["to"]?.stringValue ?? ""
                if ["completed", "failed", "blocked"].contains(to) { open[key] = nil } else if open[key] == nil {
                    open[key] = ("watch", e["id"]?.stringValue ?? "?", ts ?? 0, nil); order.append(key)
                }
            default: break
            }
        }
        if let k = order.last(where: { open[$0] != nil }), let c = open[k] {
            info.current = (c.kind, c.id, c.since)
            info.currentPid = c.pid
        }
        if withEvents { info.events = contents.events }
        let finalStatus = info.final?["status"]?.stringValue
        if locked {
            info.state = .running
            if let s = (try? FileIO.readString(dir.lock))?.trimmingWhitespace(), let p = Int32(s) { info.runnerPid = p }
        } else if let s = finalStatus, let st = State(rawValue: s), s != "running" {
            info.state = st
            info.current = nil
        } else if contents.events.isEmpty, let pid = dir.readPid(), kill(pid, 0) == 0 {
            info.state = .starting
            info.runnerPid = pid
        } else {
            info.state = .orphaned
        }
        if let f = info.final, info.state != .running {
            info.exitCode = f["exit_code"]?.intValue.map { Int($0) }
            info.reason = f["reason"]?.stringValue
            info.endedAt = f["ended_at"]?.stringValue.flatMap(Clock.parseRFC3339)
            if info.recipe == nil { info.recipe = f["recipe"]?.stringValue }
            if info.startedAt == nil { info.startedAt = f["started_at"]?.stringValue.flatMap(Clock.parseRFC3339) }
        }
        if info.state == .orphaned, info.endedAt == nil { info.endedAt = info.lastEvent?.at }
        if info.state == .running || info.state == .orphaned { info.alivePids = Survivors.find(runID: dir.id) }
        return info
    }

    public var json: JSON {
        var o: [(String, JSON)] = [
            ("id", .string(id)), ("dir", .string(dir.path)), ("state", .string(state.rawValue)),
            ("recipe", recipe.map(JSON.string) ?? .null),
            ("started_at", startedAt.map { .string(Clock.rfc3339($0)) } ?? .null),
            ("ended_at", endedAt.map { .string(Clock.rfc3339($0)) } ?? .null),
            ("duration_ms", duration.map { .int(Int64($0 * 1000)) } ?? .null),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null),
            ("reason", reason.map(JSON.string) ?? .null),
            ("runner_pid", runnerPid.map { .int(Int64($0)) } ?? .null),
            ("stages_finished", .int(Int64(stageCount))),
        ]
        if let c = current {
            o.append(("current", .object([("kind", .string(c.kind)), ("id", .string(c.id)),
                                          ("since", .string(Clock.rfc3339(c.since))),
                                          ("for_ms", .int(Int64((Clock.now() - c.since) * 1000))),
                                          ("pid", currentPid.map { .int(Int64($0)) } ?? .null)])))
        } else { o.append(("current", .null)) }
        if let l = lastEvent {
            o.append(("last_event", .object([("type", .string(l.type)), ("at", .string(Clock.rfc3339(l.at))),
                                             ("ago_ms", .int(Int64((Clock.now() - l.at) * 1000)))])))
        } else { o.append(("last_event", .null)) }
        o.append(("alive_pids", .array(alivePids.map { .int(Int64($0)) })))
        o.append(("problems", .array(problems.map(JSON.string))))
        return .object(o)
    }
}
