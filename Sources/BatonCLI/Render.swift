import BatonBase
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
        case .running: return info.paused != nil ? "PAUSED" : "running"
        case .starting: return "starting"
        case .orphaned: return "ORPHANED"
        case .succeeded, .failed, .cancelled, .dry_run: return info.state.rawValue
        }
    }

    public static func runsTable(_ infos: [RunInfo]) -> String {
        var rows = [["RUN", "STATE", "RECIPE", "STARTED", "DURATION", "CURRENT"]]
        for i in infos {
            var cur = "-"
            if let c = i.current { cur = "\(c.kind) \(c.id) (\(Clock.human(Clock.now() - c.since)))" }
            else if i.state == .failed || i.state == .cancelled, let r = i.reason { cur = String(r.prefix(50)) }
            rows.append([i.id, stateText(i) + (i.exitCode.map { $0 != 0 ? " (\($0))" : "" } ?? ""),
                         i.recipe.map(FileIO.basename) ?? "?",
                         i.startedAt.map(shortTime) ?? "?", i.duration.map(Clock.human) ?? "-", cur])
        }
        return table(rows)
    }

    static func table(_ rows: [[String]]) -> String {
        let rows = rows.map { $0.map(SafeText.line) }
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
            lines.append("         its runner died without writing final.json; 'baton resume \(i.id)' continues it, "
                    + "'baton cancel \(i.id)' ends it")
        }
        lines.append("recipe   \(i.recipe ?? "?")")
        if let s = i.startedAt { lines.append("started  \(shortTime(s)) UTC (\(ago(s)))") }
        if let d = i.duration { lines.append("duration \(Clock.human(d))\(i.isLive ? " so far" : "")") }
        if let c = i.current {
            var s = "current  \(c.kind) \(c.id) for \(Clock.human(Clock.now() - c.since))"
            if c.kind == "stage", let t = i.history.stages.last(where: { $0.key.id == c.id && $0.isOpen })?.timeoutSec {
                s += " of \(Clock.human(t))"
            }
            if let p = i.currentPid { s += ", pid \(p)" }
            if let b = i.running.first(where: { $0.stage.key.id == c.id })?.stage.batchText { s += ", " + b }
            lines.append(s)
        }
        if let p = i.paused {
            lines.append("PAUSED   \(p.record.text) for \(Clock.human(max(0, Clock.now() - p.since))); baton attach "
                    + "\(i.id) opens its prompt there")
        } else if let b = i.blockedIn { lines.append("blocked  \(b.text)") }
        if !i.running.isEmpty {
            lines.append("running  \(i.running.count) stage\(i.running.count == 1 ? "" : "s")")
            for r in i.running {
                var s = "  \(r.stage.key)  attempt \(r.stage.attempt)"
                if let p = r.stage.pid { s += "  pid \(p)" }
                if let b = r.stage.batchText { s += "  \(b)" }
                // The current attempt's time, against its limit.
                if let t = r.stage.attemptStartedAt ?? r.stage.startedAt {
                    s += "  for \(Clock.human(Clock.now() - t))"
                        + (r.stage.timeoutSec.map { " of \(Clock.human($0))" } ?? "")
                }
                s += r.stage.stalled != nil
                    ? "  STALLED (no output for \(Clock.human(r.silent)))"
                    : "  last output \(Clock.human(r.silent)) ago"
                if let c = r.stage.command { s += "  \(c.display.prefix(60))" }
                lines.append(s)
                if let l = RunInfo.lastLine(r.stage.logs) { lines.append("    last line: \(l.prefix(100))") }
                for p in r.stage.pid.map(StageProcess.of) ?? [] {
                    lines.append("    \(p.role) \(p.pid): \(p.command.prefix(80))")
                }
            }
        }
        if let l = i.lastEvent { lines.append("last     \(l.type) \(ago(l.ts))") }
        if i.runnerLooksHung, let l = i.lastEvent {
            lines.append("WARNING  the runner itself looks hung: no journal event for "
                    + "\(Clock.human(Clock.now() - l.ts)) (heartbeats come every " +
                        "\(Clock.human(i.history.latestStart?.began.heartbeatSec ?? 30)) while it waits)")
        }
        if !i.alivePids.isEmpty {
            lines.append("alive    pids \(i.alivePids.map(String.init).joined(separator: ", "))")
        }
        lines.append("stages   \(i.stageCount) finished")
        let cached = i.cachedStages
        if !cached.isEmpty {
            lines.append("cached   \(cached.count) from the cache: "
                         + cached.prefix(5).map {
                             "\($0.key) (\($0.finished!.cachedFrom!.text))"
                         }.joined(separator: ", ")
                         + (cached.count > 5 ? ", ..." : ""))
        }
        if let r = i.reason { lines.append("reason   \(r)") }
        for p in i.problems { lines.append("problem  \(p)") }
        lines.append("dir      \(i.dir.path)")
        return lines.map(SafeText.line).joined(separator: "\n")
    }

    /// One journal event as a readable line.
    public static func event(_ e: JournalEvent) -> String {
        let stamp = Clock.rfc3339(e.ts)
        let ts = String(Array(stamp)[11..<23])
        var detail = ""
        switch e.body {
        case let .runStarted(b), let .runResumed(b):
            detail = "\(b.recipe) pid \(b.pid)"
            if !b.args.isEmpty { detail += " args " + b.args.joined(separator: " ") }
            if b.dryRun { detail += " (dry run)" }
        case let .stageStarted(s):
            detail = "\(s.key.id) attempt \(s.attempt)" + (s.pid.map { " pid \($0)" } ?? "")
                + ": \(s.command.display.prefix(120))"
            if s.dry { detail += " (dry run)" }
        case let .stageFinished(f):
            detail = "\(f.key.id) \(f.status.rawValue)"
            if let x = f.exit, x != 0 { detail += " exit \(x)" }
            if let s = f.signal { detail += " signal \(s)" }
            detail += " in \(Clock.human(Double(f.durationMs) / 1000))"
            if f.replayed { detail += " (replayed)" }
            if let c = f.cachedFrom { detail += " (cached: \(c.text))" }
            if f.dry { detail += " (dry run)" }
            if let c = f.failureClass { detail += " [\(c.rawValue)]" }
            if let m = f.message { detail += ": \(m)" }
        case let .stageQueued(q):
            detail = "\(q.key.id) attempt \(q.attempt): job \(q.nativeID) \(q.state)"
                + (q.node.map { " on \($0)" } ?? "")
                + (q.reason.map { " (\($0))" } ?? "")
        case let .stageStalled(s):
            detail = "\(s.key.id) attempt \(s.attempt): no output for \(Clock.human(Double(s.silentMs) / 1000))"
                + (s.ending ? " (noOutputTimeout: ending it)" : "")
        case let .preflight(p):
            detail = "\(p.name) \(p.ok ? "ok" : "FAILED") (policy \(p.policy.rawValue))"
            for c in p.checks where !c.ok { detail += "; \(c.kind) \(c.target): \(c.detail)" }
        case let .watch(w):
            detail = "\(w.id) \(w.from?.rawValue ?? "-") -> \(w.to.rawValue): \(w.reason)"
        case let .gate(g):
            detail = "\(g.name) iteration \(g.iteration)/\(g.max) " + (g.approved ? "approved" : "rejected")
            if g.fallbackUsed { detail += " (fallback)" }
            if let issues = g.issues.arrayValue, !issues.isEmpty {
                detail += (g.approved ? " (notes: " : ": ") + issues.map {
                    $0.stringValue ?? $0.encoded()
                }.joined(separator: "; ")
                    + (g.approved ? ")" : "")
            }
        case let .heartbeat(h):
            detail = "waiting on \(h.waitingOn) \(h.id) for \(Clock.human(Double(h.forMs) / 1000))"
        case let .log(l):
            detail = "[\(l.level)] \(l.message)"
            if case let .object(p) = l.fields, !p.isEmpty, l.message != "traceback" {
                detail += " " + l.fields.encoded()
            }
        case let .command(c):
            detail = "\(c.via) \(c.command.display.prefix(120))"
            if c.timedOut { detail += " timed out" } else if let s = c.signal { detail += " signal \(s)" } else {
                detail += " exit \(c.exit ?? -1)"
            }
            detail += " in \(Clock.human(Double(c.durationMs) / 1000))"
        case let .notRun(n):
            detail = "\(n.via) \(n.target.prefix(120)) (\(n.reason))"
        case let .control(c):
            detail =
                "\(c.op.rawValue) \(c.target.prefix(80).split(separator: "\n").joined(separator: " ⏎ ")) by "
                    + "\(c.user) (uid \(c.uid), pid \(c.pid)): \(c.ok ? "" : "FAILED ")\(c.result.prefix(120))"
        case let .paused(p):
            detail = p.text
        case let .resumedFromPause(r):
            detail = "\(r.how) after \(Clock.human(Double(r.pausedMs) / 1000))"
        case let .final(f):
            detail = "\(f.status) exit \(f.exitCode)"
            if let r = f.reason { detail += ": \(r)" }
        case let .unknown(_, j):
            detail = j["id"]?.stringValue ?? ""
        }
        return SafeText.line("\(ts) #\(e.seq) \(e.type) \(detail)")
    }
}
