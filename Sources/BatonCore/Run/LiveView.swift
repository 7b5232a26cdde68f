import BatonBase
import Glibc

/// The lines of the live view: one per thing in flight (a running stage, parallel items and
/// background stages included; a watch; what the recipe waits in when it is a gate, a
/// sleep, a preflight or a command), oldest first, the rest as "+N more running". Built
/// from a run's history, so the runner (`run`, `resume`: its own history) and a reader
/// (`status --watch`: the journal) draw the same thing.
public enum LiveView {
    /// What the recipe waits in besides stages and watches: (kind, id, seconds so far).
    public typealias Waiting = (kind: String, id: String, elapsed: Double)

    /// `room`: how many lines may be drawn; `width`: the terminal's columns.
    public static func lines(_ h: RunHistory, now: Double = Clock.now(), waiting: Waiting? = nil,
                             width: Int, room: Int, frame: Int = 0) -> [String] {
        var items: [(since: Double, text: () -> String)] = []
        let stages = h.running
        let idWidth = min(24, stages.map { $0.key.description.count }.max() ?? 0)
        let spinner = ["|", "/", "-", "\\"][frame % 4]
        for r in stages {
            let since = r.attemptStartedAt ?? r.startedAt ?? now
            items.append((since, {
                var s =
                    "\(spinner) \(pad(r.key.description, idWidth))  attempt \(r.attempt)  "
                        + "\(Clock.human(max(0, now - since)))"
                if let t = r.timeoutSec { s += " of \(Clock.human(t))" }
                if let b = r.batchText { s += "  \(b)" }
                if r.stalled != nil { s += "  STALLED" }
                if let l = RunInfo.lastLine(r.logs) { s += "  " + l.filter { $0 != "\r" && $0 != "\u{1B}" } }
                return s
            }))
        }
        for w in h.watches where !w.state.isTerminal {
            items.append((w.since, {
                var s = "\(spinner) watch \(w.id)  \(w.state.rawValue)"
                let limit = w.limit
                if w.state == .awaiting_artifacts {
                    let missing = w.missingNow
                    if !missing.isEmpty { s += "  waiting for " + missing.joined(separator: ", ") }
                }
                s += "  \(Clock.human(max(0, now - w.since)))" + (limit.map { " of \(Clock.human($0))" } ?? "")
                return s
            }))
        }
        var out: [String] = []
        if let w = waiting, !["stage", "parallel", "watch"].contains(w.kind) {
            out.append("\(spinner) \(w.kind) \(w.id)  \(Clock.human(w.elapsed))")
        }
        items.sort { $0.since < $1.since }
        let fit = max(1, room - out.count)
        let shown = items.count > fit ? fit - 1 : items.count
        out += items.prefix(shown).map { $0.text() }
        if items.count > shown { out.append("  +\(items.count - shown) more running") }
        return out.map { clip($0, width - 1) }
    }

    public static func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }

    /// At most `n` characters (a line that wraps would break the redraw).
    public static func clip(_ s: String, _ n: Int) -> String {
        guard s.count > n else { return s }
        return n <= 3 ? String(s.prefix(max(0, n))) : String(s.prefix(n - 3)) + "..."
    }

    /// The terminal's rows (24 when it cannot be asked).
    public static func rows(_ fd: Int32 = 2) -> Int {
        var ws = winsize()
        if ioctl(fd, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_row > 0 { return Int(ws.ws_row) }
        return 24
    }

    /// How many lines the view may take: a few, never most of the screen.
    public static func room(_ fd: Int32 = 2) -> Int { max(2, min(10, rows(fd) / 2 - 1)) }

    /// Erases `n` lines drawn by the view, the cursor ending where the first one began.
    public static func erase(_ n: Int) -> String {
        guard n > 0 else { return "" }
        return "\r\u{1B}[2K" + String(repeating: "\u{1B}[1A\u{1B}[2K", count: n - 1)
    }
}
