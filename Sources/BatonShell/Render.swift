import BatonCore
import Glibc

/// Human text for runs, a run's status and journal events (CLI and shell alike).
public enum Render {
    static func ago(_ t: Double) -> String { Clock.human(max(0, Clock.now() - t)) + " ago" }

    static func shortTime(_ t: Double) -> String {
        let s = Clock.rfc3339(t) // 2026-11-22T18:18:12.345Z
        let u = Array(s)
        return String(u[0..<10]) + " " + String(u[11..<19])
    }

    public static func stateText(_ info: RunInfo) -> String {
        switch info.state {
        case .running: return "running"
        case .starting: return "starting"
        case .orphaned: return "ORPHANED"
        default: return info.state.rawValue
        }
    }

    public static func runsTable(_ infos: [RunInfo]) -> String {
        var rows = [["RUN", "STATE", "RECIPE", "STARTED", "DURATION", "CURRENT"]]
        for i in infos {
            var cur = "-"
            if let c = i.current { cur = "\(c.kind) \(c.id) (\(Clock.human(Clock.now() - c.since)))" }
            else if i.state == .failed || i.state == .cancelled, let r = i.reason { cur = String(r.prefix(50)) }
            rows.append([i.id, stateText(i) + (i.exitCode.map { $0 != 0 ? " (\($0))" : "" } ?? ""), i.recipe.map(FileIO.basename) ?? "?",
                         i.startedAt.map(shortTime) ?? "?", i.duration.map(Clock.human) ?? "-", cur])
        }
        return table(rows)
    }

    static func table(_ rows: [[String]]) -> String {
        var widths = [Int](repeating: 0, count: rows[0].count)
        for r in rows { for (k, c) in r.enumerated() { widths[k] = max(widths[k], c.count) } }
        return rows.map { r in
            r.enumerated().map { k, c in k == r.count - 1 ? c : c + String(repeating: " ", count: widths[k] - c.count) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }

    public static func status(_ i: RunInfo) -> String {
        var lines: [String] = []
        var head = "run \(i.id)  \(stateText(i))"
        if i.isLive, let p = i.runnerPid { head += " (runner pid \(p))" }
        if let c = i.exitCode, !i.isLive { head += "  exit \(c)" }
        lines.append(head)
        if i.state == .orphaned {
            lines.append("         its runner died without writing final.json; 'baton resume \(i.id)' continues it, 'baton cancel \(i.id)' ends it")
        }
        lines.append("recipe   \(i.recipe ?? "?")")
        if let s = i.startedAt { lines.append("started  \(shortTime(s)) UTC (\(ago(s)))") }
        if let d = i.duration { lines.append("duration \(Clock.human(d))\(i.isLive ? " so far" : "")") }
        if let c = i.current {
            var s = "current  \(c.kind) \(c.id) for \(Clock.human(Clock.now() - c.since))"
            if let p = i.currentPid { s += ", pid \(p)" }
            lines.append(s)
        }
        if let l = i.lastEvent { lines.append("last     \(l.type) \(ago(l.at))") }
        if !i.alivePids.isEmpty { lines.append("alive    pids \(i.alivePids.map(String.init).joined(separator: ", "))") }
        lines.append("stages   \(i.stageCount) finished")
        if let r = i.reason { lines.append("reason   \(r)") }
        for p in i.problems { lines.append("problem  \(p)") }
        lines.append("dir      \(i.dir.path)")
        return lines.joined(separator: "\n")
    }

    /// One journal event as a readable line.
    public static func event(_ e: JSON) -> String {
        let ts = e["ts"]?.stringValue.map { s -> String in let u = Array(s); return u.count >= 23 ? String(u[11..<23]) : s } ?? "?"
        let seq = e["seq"]?.intValue.map { "#\($0)" } ?? "#?"
        let type = e["type"]?.stringValue ?? "?"
        let id = e["id"]?.stringValue ?? ""
        var detail = ""
        switch type {
        case "run_started", "run_resumed":
            detail = "\(e["recipe"]?.stringValue ?? "?") pid \(e["pid"]?.intValue ?? 0)"
            if let a = e["args"]?.arrayValue, !a.isEmpty { detail += " args " + a.compactMap(\.stringValue).joined(separator: " ") }
            if e["dry_run"]?.boolValue == true { detail += " (dry run)" }
        case "stage_started":
            let cmd = e["shell"]?.stringValue ?? e["argv"]?.arrayValue?.compactMap(\.stringValue).joined(separator: " ") ?? ""
            detail = "\(id) attempt \(e["attempt"]?.intValue ?? 1) pid \(e["pid"]?.intValue ?? 0): \(cmd.prefix(120))"
        case "stage_finished":
            detail = "\(id) \(e["status"]?.stringValue ?? "?")"
            if let x = e["exit"]?.intValue, x != 0 { detail += " exit \(x)" }
            if let s = e["signal"]?.intValue { detail += " signal \(s)" }
            if let d = e["duration_ms"]?.intValue { detail += " in \(Clock.human(Double(d) / 1000))" }
            if e["replayed"]?.boolValue == true { detail += " (replayed)" }
            if e["dry"]?.boolValue == true { detail += " (dry run)" }
            if let c = e["failure_class"]?.stringValue { detail += " [\(c)]" }
            if let m = e["message"]?.stringValue { detail += ": \(m)" }
        case "preflight":
            detail = "\(e["name"]?.stringValue ?? "") \(e["ok"]?.boolValue == true ? "ok" : "FAILED") (policy \(e["policy"]?.stringValue ?? "fail"))"
            for c in e["checks"]?.arrayValue ?? [] where c["ok"]?.boolValue == false {
                detail += "; \(c["kind"]?.stringValue ?? "") \(c["target"]?.stringValue ?? ""): \(c["detail"]?.stringValue ?? "")"
            }
        case "watch":
            detail = "\(id) \(e["from"]?.stringValue ?? "-") -> \(e["to"]?.stringValue ?? "?"): \(e["reason"]?.stringValue ?? "")"
        case "gate":
            detail = "\(e["name"]?.stringValue ?? "") iteration \(e["iteration"]?.intValue ?? 0)/\(e["max"]?.intValue ?? 0) "
                + (e["approved"]?.boolValue == true ? "approved" : "rejected")
            if e["fallback_used"]?.boolValue == true { detail += " (fallback)" }
            if let issues = e["issues"]?.arrayValue, !issues.isEmpty { detail += ": " + issues.map { $0.stringValue ?? $0.encoded() }.joined(separator: "; ") }
        case "heartbeat":
            detail = "waiting on \(e["waiting_on"]?.stringValue ?? "") \(id) for \(Clock.human(Double(e["for_ms"]?.intValue ?? 0) / 1000))"
        case "log":
            detail = "[\(e["level"]?.stringValue ?? "info")] \(e["message"]?.stringValue ?? "")"
            if let f = e["fields"], case let .object(p) = f, !p.isEmpty, e["message"]?.stringValue != "traceback" { detail += " " + f.encoded() }
        case "final":
            detail = "\(e["status"]?.stringValue ?? "?") exit \(e["exit_code"]?.intValue ?? 0)"
            if let r = e["reason"]?.stringValue { detail += ": \(r)" }
        default:
            detail = id
        }
        return "\(ts) \(seq) \(type) \(detail)"
    }
}
