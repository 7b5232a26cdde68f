import BatonBase
import BatonCore

/// `baton report`: one self-contained HTML file (inline CSS and SVG, a few lines of inline
/// JavaScript that only checks what was drawn; no network, no external files).
public struct ReportHTML {
    let info: RunInfo
    let t: RunTimeline
    /// Past this many rows the stage table is cut (the timeline never is).
    static let tableLimit = 10_000

    static let labelW = 150.0, plotW = 1100.0, rowH = 18.0, barH = 12.0
    /// Where marker labels already are, per row: a label never covers another.
    private let labels = LabelSpace()

    /// The folder the report is written in when it is the run directory: log links are then
    /// relative (they keep working when the project is moved).
    var linkBase: String?

    public init(info: RunInfo, timeline: RunTimeline, linkBase: String? = nil) {
        self.info = info
        self.t = timeline
        self.linkBase = linkBase
    }

    var t0: Double { t.firstTs }
    var span: Double { max(t.lastTs - t.firstTs, 0.001) }
    func x(_ ts: Double) -> Double { ReportHTML.labelW + (ts - t0) / span * ReportHTML.plotW }

    public func render() -> String {
        var h = ""
        h.reserveCapacity(4096 + t.attempts.count * 420 + info.history.stages.count * 300)
        h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        h += "<meta name=\"viewport\" content=\"width=device-width\"><title>baton run \(esc(info.id))</title>"
        h += "<style>\(ReportHTML.css)</style></head><body>\n"
        h += "<h1>baton run <code>\(esc(info.id))</code> <span class=\"badge "
            + "st-\(info.state.rawValue)\">\(esc(stateWord))</span></h1>\n"
        summary(&h)
        h += "<h2>Timeline</h2>\n"
        legend(&h)
        timeline(&h)
        resumes(&h)
        stageTable(&h)
        result(&h)
        h += "<p class=\"foot\">Written by baton \(BatonVersion.string) at \(Clock.rfc3339(Clock.now()))"
        h += info.isLive
            ? " (a snapshot: the run is still going; run <code>baton report</code> again for more).</p>"
            : ".</p>"
        h += "<pre id=\"render-check\" hidden></pre>\n<script>\(ReportHTML.script)</script>\n</body></html>\n"
        return h
    }

    var stateWord: String { info.state == .orphaned ? "orphaned" : info.state.rawValue }

    // MARK: summary

    func summary(_ h: inout String) {
        let began = info.history.latestStart?.began
        var rows: [(String, String)] = [("status", "<b class=\"st-\(info.state.rawValue)\">\(esc(stateWord))</b>")]
        if let c = info.exitCode { rows.append(("exit code", "\(c)")) }
        if let r = info.reason { rows.append(("reason", "<span class=\"reason\">\(esc(r))</span>")) }
        if info.state == .orphaned {
            rows.append(("note",
                         "its runner died without writing final.json: <code>baton resume \(esc(info.id))</code> "
                             + "continues it"))
        }
        rows.append(("recipe", "<code>\(esc(info.recipe ?? "?"))</code>"))
        if let b = began {
            rows.append(("recipe sha256", "<code>\(esc(b.recipeSHA256))</code>"))
            rows.append(("args",
                         b.args.isEmpty ? "<i>none</i>" : b.args.map {
                             "<code>\(esc($0))</code>"
                         }.joined(separator: " ")))
            rows.append(("host", esc(b.host) + " (pid \(b.pid), baton \(esc(b.batonVersion)))"))
            rows.append(("cwd", "<code>\(esc(b.cwd))</code>"))
        }
        if let s = info.startedAt { rows.append(("started", Clock.rfc3339(s))) }
        if let d = info.duration { rows.append(("duration", Clock.human(d) + (info.isLive ? " so far" : ""))) }
        if t.lives.count > 1 { rows.append(("lives", "\(t.lives.count) (resumed \(t.lives.count - 1)×)")) }
        let attemptsN = t.attempts.count
        rows.append(("stages", "\(info.history.stages.count) calls, \(attemptsN) attempts"))
        h += "<table class=\"summary\">"
        for (k, v) in rows { h += "<tr><th>\(k)</th><td>\(v)</td></tr>" }
        h += "</table>\n"
    }

    func legend(_ h: inout String) {
        let items = [("s-passed", "passed"), ("s-failed", "failed"), ("s-failed retried", "failed, retried"),
                     ("s-timed_out", "timed out"), ("s-cancelled", "cancelled"), ("s-running", "running"),
                     ("s-unfinished", "unfinished (runner died)"), ("replay", "replayed on resume"),
                     ("w-running", "watch: running"), ("w-awaiting_artifacts", "watch: awaiting artifacts"),
                     ("w-callback_running", "watch: callback"), ("stall", "stall (no events)")]
        h += "<div class=\"legend\">"
        for (c, l) in items {
            h += "<span><svg width=\"14\" height=\"10\"><rect class=\"\(c)\" width=\"14\" "
                + "height=\"10\"/></svg>\(l)</span>"
        }
        h += "<span>◆ gate (green approved, red rejected) ● preflight ╎ heartbeat ⇢ backoff; commands: baton.sh, "
            + "os.execute,"
        h += " gate and preflight commands (grey, red when they failed)</span></div>\n"
    }

    // MARK: timeline

    func timeline(_ h: inout String) {
        let rowH = ReportHTML.rowH
        var rows: [String] = ["run"]
        let pfRow = t.preflights.isEmpty ? -1 : rows.count
        if pfRow >= 0 { rows.append("preflight") }
        let gateRow = t.gates.isEmpty ? -1 : rows.count
        if gateRow >= 0 { rows.append("gates") }
        var watchRow: [String: Int] = [:]
        for p in t.watchPhases where watchRow[p.id] == nil { watchRow[p.id] = rows.count; rows.append("watch " + p.id) }
        let cmdRow = t.commands.isEmpty ? -1 : rows.count
        if cmdRow >= 0 { rows.append("commands") }
        let hbRow = t.heartbeats.isEmpty ? -1 : rows.count
        if hbRow >= 0 { rows.append("heartbeats") }
        let laneBase = rows.count
        for l in 0..<t.laneCount { rows.append(t.laneCount == 1 ? "stages" : "stages \(l + 1)") }
        let top = 22.0
        let height = top + Double(rows.count) * rowH + 6
        let width = ReportHTML.labelW + ReportHTML.plotW + 20
        h += "<div class=\"zoom\">zoom <button type=\"button\" onclick=\"batonZoom(2)\">+</button>"
        h += "<button type=\"button\" onclick=\"batonZoom(0.5)\">&minus;</button>"
        h += "<button type=\"button\" onclick=\"batonZoom(0)\">fit</button> <span id=\"zoom-level\">1×</span>"
        h += " <span class=\"hint\">(or add #zoom=8 to the address; hover for details)</span></div>\n"
        h += "<div class=\"tl\"><svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\""
        h += " width=\"\(n(width))\" height=\"\(n(height))\">"
        // Row backgrounds and labels (outside the plot: zooming leaves them be).
        for (i, r) in rows.enumerated() {
            let y = top + Double(i) * rowH
            if i % 2 == 1 { h += "<rect class=\"row\" x=\"0\" y=\"\(n(y))\" width=\"100%\" height=\"\(n(rowH))\"/>" }
            text(&h, "lbl", x: 4, y: y + 13, r)
        }
        h += "<g id=\"plot\">"
        axis(&h, top: top, bottom: height - 6)
        func yBar(_ row: Int) -> Double { top + Double(row) * rowH + (rowH - ReportHTML.barH) / 2 }
        let barH = ReportHTML.barH
        runRow(&h, y: yBar(0), bottom: height - 6)
        for m in t.preflights {
            let p = m.record
            let detail = p.checks.map {
                "\($0.ok ? "ok" : "FAIL") \($0.kind) \($0.target)\($0.detail.isEmpty ? "" : ": " + $0.detail)"
            }
            h += "<circle class=\"mark pf \(p.ok ? "p-ok" : "p-fail")\" cx=\"\(n(x(m.ts)))\" "
                + "cy=\"\(n(yBar(pfRow) + 6))\" r=\"5\""
            close(&h, "circle", "preflight \(p.name) (\(p.policy.rawValue)): \(p.ok ? "ok" : "FAILED")\n"
                      + detail.joined(separator: "\n"))
        }
        gates(&h, y: yBar(gateRow))
        for p in t.watchPhases {
            let y = yBar(watchRow[p.id]!)
            let end = p.end ?? t.lastTs
            let tip = "watch \(p.id): \(p.state.rawValue) "
                + "\(Clock.human(end - p.start))\(p.reason.isEmpty ? "" : ": " + p.reason)"
            if p.state.isTerminal {
                rect(&h, "wmark w-\(p.state.rawValue)", x0: x(p.start) - 1.5, x1: x(p.start) + 1.5, y: y - 2,
                     height: barH + 4, tip: tip)
            } else {
                rect(&h, "phase w-\(p.state.rawValue)", x0: x(p.start), x1: x(end), y: y, height: barH, tip: tip)
            }
        }
        for m in t.commands {
            let c = m.record
            let ok = c.exit == 0 && !c.timedOut
            let how = c.timedOut ? "timed out" : c.exit.map { "exit \($0)" } ?? "signal \(c.signal ?? 0)"
            let tip = "\(c.via): \(c.command.display)\n\(how), \(Clock.human(Double(c.durationMs) / 1000))"
            rect(&h, "cmd \(ok ? "c-ok" : "c-fail")", x0: x(m.ts - Double(c.durationMs) / 1000), x1: x(m.ts),
                 y: yBar(cmdRow) + 2, height: barH - 4, tip: tip)
        }
        for m in t.heartbeats {
            let hb = m.record
            line(&h, "hb", x1: x(m.ts), x2: x(m.ts), y1: yBar(hbRow), y2: yBar(hbRow) + barH,
                 tip: "heartbeat: waiting on \(hb.waitingOn) \(hb.id) for \(Clock.human(Double(hb.forMs) / 1000))")
        }
        attempts(&h, y: { yBar(laneBase + $0) })
        h += "</g></svg></div>\n"
    }

    func axis(_ h: inout String, top: Double, bottom: Double) {
        let steps: [Double] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300,
                               600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400]
        let step = steps.first { span / $0 <= 10 } ?? 86400 * (span / 86400 / 10).rounded(.up)
        var v = 0.0
        while v <= span + step * 0.001 {
            let xx = x(t0 + v)
            line(&h, "tick", x1: xx, x2: xx, y1: top - 4, y2: bottom)
            text(&h, "axis", x: xx + 2, y: top - 8, "+" + (v == 0 ? "0" : Clock.human(v)))
            v += step
        }
    }

    /// Lives, the time between them, resume and final markers, replays and stalls.
    func runRow(_ h: inout String, y: Double, bottom: Double) {
        let barH = ReportHTML.barH
        var resumeLabels: [(Double, String)] = []
        for (i, l) in t.lives.enumerated() {
            let end = i + 1 < t.lives.count ? l.last : t.lastTs
            rect(&h, "life", x0: x(l.start), x1: x(end), y: y, height: barH,
                 tip: "\(l.resumed ? "resume \(i)" : "run") by pid \(l.began.pid) on \(l.began.host) at "
                     + "\(Clock.rfc3339(l.start))")
            if i + 1 < t.lives.count {
                let next = t.lives[i + 1].start
                rect(&h, "down", x0: x(l.last), x1: x(next), y: y, height: barH,
                     tip: "not running for \(Clock.human(next - l.last)): the runner ended or died, then baton resume")
            }
            guard l.resumed else { continue }
            line(&h, "resume-line", x1: x(l.start), x2: x(l.start), y1: y - 6, y2: bottom,
                 tip: "resume \(i) at \(Clock.rfc3339(l.start)) by pid \(l.began.pid)")
            resumeLabels.append((x(l.start), "resume \(i)"))
            let reps = t.decisions(inLife: i).filter(\.why.replayed)
            if let a = reps.first, let b = reps.last {
                rect(&h,
                     "replay",
                     x0: x(a.ts),
                     x1: x(b.ts),
                     y: y + ReportHTML.rowH,
                     height: bottom - y - ReportHTML.rowH,
                     minW: 4,
                     tip: "resume \(i) replayed \(reps.count) stage call\(reps.count == 1 ? "" : "s") (passed "
                         + "before, unchanged)")
            }
        }
        for s in t.stalls {
            rect(&h, "stall", x0: x(s.start), x1: x(s.end), y: y, height: bottom - y, minW: 2,
                 tip: "stall: no journal event for \(Clock.human(s.end - s.start)) (heartbeats every "
                     + "\(Clock.human(t.heartbeatInterval)))")
        }
        // The end's label first (it matters most), then each resume's where it fits.
        if let f = t.final {
            let what = "\(f.record.status) (exit \(f.record.exitCode))"
            line(&h,
                 "final-line",
                 x1: x(f.ts),
                 x2: x(f.ts),
                 y1: y - 6,
                 y2: bottom,
                 tip: what + " at " + Clock.rfc3339(f.ts))
            label(&h, x: x(f.ts), y: y + 10, what, preferBefore: true)
        }
        for (xx, s) in resumeLabels { label(&h, x: xx, y: y + 10, s) }
    }

    /// A marker's label after the mark (or before it, `preferBefore`), else on the other
    /// side, else not at all (the mark keeps its tooltip): labels never cover each other.
    func label(_ h: inout String, x: Double, y: Double, _ s: String, preferBefore: Bool = false, gap: Double = 3) {
        let w = LabelSpace.width(s)
        let after = (x + gap, x + gap + w, false), before = (x - gap - w, x - gap, true)
        for (a, b, end) in preferBefore ? [before, after] : [after, before] {
            guard a >= ReportHTML.labelW, b <= ReportHTML.labelW + ReportHTML.plotW + 20, labels.take(y, a, b) else {
                continue
            }
            text(&h, "mlabel", x: end ? b : a, y: y, s, end: end)
            return
        }
    }

    func gates(_ h: inout String, y: Double) {
        var firstOf: [String: Double] = [:]
        for m in t.gates {
            if let f = firstOf[m.record.name] { line(&h, "gate-span", x1: x(f), x2: x(m.ts), y1: y + 6, y2: y + 6) }
            firstOf[m.record.name] = m.ts
        }
        for m in t.gates {
            let g = m.record
            let cx = x(m.ts), cy = y + 6
            let issues = (g.issues.arrayValue ?? []).map { $0.stringValue ?? $0.encoded() }
            var tip = "gate \(g.name) iteration \(g.iteration)/\(g.max): \(g.approved ? "approved" : "rejected")"
            if g.fallbackUsed { tip += " (fallback used)" }
            if !issues.isEmpty { tip += "\nissues: " + issues.joined(separator: "; ") }
            if let note = g.note { tip += "\n" + note }
            let points = [(cx, cy - 6), (cx + 6, cy), (cx, cy + 6), (cx - 6, cy)].map {
                "\(n($0)),\(n($1))"
            }.joined(separator: " ")
            h += "<polygon class=\"mark gate \(g.approved ? "g-approved" : "g-rejected")\" points=\"\(points)\""
            close(&h, "polygon", tip)
            label(&h, x: cx, y: cy + 4, "\(g.name) \(g.iteration)/\(g.max) \(g.approved ? "✓" : "✗")", gap: 7)
        }
    }

    func attempts(_ h: inout String, y: (Int) -> Double) {
        var lastOfCall: [String: Int] = [:]
        for (i, a) in t.attempts.enumerated() {
            let yy = y(t.lanes[i])
            let x0 = x(a.start), x1 = x(t.end(of: a))
            let callKey = "\(a.life)\u{1}\(a.key)"
            if let p = lastOfCall[callKey] {
                let prevEnd = t.end(of: t.attempts[p])
                line(&h, "backoff", x1: x(prevEnd), x2: x0, y1: yy + 6, y2: yy + 6,
                     tip: "backoff \(Clock.human(a.start - prevEnd)) before attempt \(a.attempt) of \(a.key)")
            }
            lastOfCall[callKey] = i
            // A hair between wide neighbours; an attempt that failed (retried or not) stays
            // visible however short it was (its tooltip says what it was).
            let minW = a.final && a.status == .ended(.passed) ? 0.6 : 3
            let w = max(x1 - x0 > 3 ? x1 - x0 - 0.8 : x1 - x0, minW)
            rect(&h,
                 "bar s-\(a.status)" + (a.final ? "" : " retried"),
                 x0: x0,
                 x1: x0 + w,
                 y: yy,
                 height: ReportHTML.barH,
                 minW: minW, tip: tip(a), attrs: " data-status=\"\(a.status)\"")
            if w > 40 { text(&h, "blabel", x: x0 + 3, y: yy + 10, String(a.key.description.prefix(Int(w / 6.5)))) }
        }
    }

    // MARK: SVG elements

    /// A `<rect>` from x0 to x1 (at least `minW` wide), with its tooltip.
    func rect(_ h: inout String, _ cls: String, x0: Double, x1: Double, y: Double, height: Double, minW: Double = 1,
              tip: String?, attrs: String = "") {
        h += "<rect class=\"\(cls)\"\(attrs) x=\"\(n(x0))\" y=\"\(n(y))\" width=\"\(n(max(x1 - x0, minW)))\" "
            + "height=\"\(n(height))\""
        close(&h, "rect", tip)
    }

    func line(_ h: inout String, _ cls: String, x1: Double, x2: Double, y1: Double, y2: Double, tip: String? = nil) {
        h += "<line class=\"\(cls)\" x1=\"\(n(x1))\" x2=\"\(n(x2))\" y1=\"\(n(y1))\" y2=\"\(n(y2))\""
        close(&h, "line", tip)
    }

    func text(_ h: inout String, _ cls: String, x: Double, y: Double, _ s: String, end: Bool = false) {
        h += "<text class=\"\(cls)\"\(end ? " text-anchor=\"end\"" : "") x=\"\(n(x))\" y=\"\(n(y))\">\(esc(s))</text>"
    }

    /// Ends an element's start tag: with its tooltip as a `<title>` child, or empty.
    func close(_ h: inout String, _ tag: String, _ tip: String?) {
        if let t = tip { h += "><title>\(esc(t))</title></\(tag)>" } else { h += "/>" }
    }

    func tip(_ a: RunTimeline.Attempt) -> String {
        var s = "\(a.key) attempt \(a.attempt)"
        if t.lives.count > 1 { s += " (\(a.life == 0 ? "first run" : "resume \(a.life)"))" }
        s += ": \(a.status.rawValue.replacingUnderscore)"
        if let f = a.finished {
            if let e = f.exit, f.status != .passed { s += ", exit \(e)" }
            if let sig = f.signal { s += ", signal \(sig)" }
            if let c = f.failureClass { s += " (\(c.rawValue))" }
            if !f.final { s += ", retried" }
            if f.breakerOpen { s += ", breaker open" }
        }
        s += ", \(Clock.human(t.end(of: a) - a.start))"
        if let m = a.finished?.message { s += "\n" + m }
        if a.status != .ended(.passed), a.status != .running {
            let last = FailureSignature.lastNonEmptyLine(String(decoding: readTail(a.logs.stderr).suffix(2048),
                                                                as: UTF8.self))
            if !last.isEmpty { s += "\nstderr: " + String(last.prefix(300)) }
        }
        if let c = a.command { s += "\n$ " + c.display }
        return s
    }

    // MARK: resumes, stage table, result

    func resumes(_ h: inout String) {
        guard t.lives.count > 1 else { return }
        h += "<h2>Resumes: why each stage ran or replayed</h2>\n<ul class=\"resumes\">"
        for l in 1..<t.lives.count {
            let ds = t.decisions(inLife: l)
            let replayed = ds.filter(\.why.replayed).count
            h += "<li><b>resume \(l)</b> at \(Clock.rfc3339(t.lives[l].start)): \(replayed) replayed, "
                + "\(ds.count - replayed) ran for real"
            if let first = ds.first(where: { !$0.why.replayed }) {
                h += "; the first to run: <code>\(esc(first.key.description))</code>: \(esc(first.why.sentence))"
            }
            h += "</li>"
        }
        h += "</ul>\n"
    }

    func stageTable(_ h: inout String) {
        let stages = info.history.stages
        var latestWhy: [StageKey: ResumeWhy] = [:]
        for d in t.decisions { latestWhy[d.key] = d.why }
        h += "<h2>Stages</h2>\n<table "
            + "class=\"stages\"><thead><tr><th>stage</th><th>occ</th><th>attempts</th><th>status</th>"
        h += "<th>failure class</th><th>exit</th><th>duration</th><th>logs</th><th>last stderr "
            + "lines</th><th>resume</th></tr></thead><tbody>\n"
        for r in stages.prefix(ReportHTML.tableLimit) {
            let f = r.finished
            let status = r.replayed ? "passed (replayed)" : f?.cachedFrom.map {
                "passed (cached: \($0.text))"
            } ?? r.status.rawValue
            let rowClass = r.replayed ? "replayed" : r.status.rawValue
            h += "<tr class=\"st-\(rowClass)\"><td><code>\(esc(r.key.id))</code></td><td>\(r.key.occurrence)</td>"
            h += "<td>\(f?.attempt ?? r.attempt)</td><td>\(esc(status.replacingUnderscore))</td>"
            h += "<td>\(f?.failureClass?.rawValue ?? "")</td>"
            let exit = f?.exit.map { String($0) } ?? (f?.signal.map { "signal \($0)" } ?? "")
            h += "<td>\(exit)</td><td>\(Clock.human(Double(r.durationMs) / 1000))</td>"
            h += "<td class=\"logs\">\(link(r.logs.stdout))<br>\(link(r.logs.stderr))</td>"
            var errText = ""
            if r.status != .ended(.passed) {
                let lines = String(decoding: readTail(r.logs.stderr).suffix(2048), as: UTF8.self)
                    .split(separator: "\n").suffix(3).joined(separator: "\n")
                errText = lines
                if let m = f?.message { errText += (errText.isEmpty ? "" : "\n") + m }
            }
            h += "<td><pre "
                + "class=\"err\">\(esc(errText))</pre></td><td>\(esc(latestWhy[r.key]?.sentence ?? ""))</td></tr>\n"
        }
        h += "</tbody></table>\n"
        if stages.count > ReportHTML.tableLimit {
            h += "<p class=\"note\" id=\"table-cut\">The table shows the first \(ReportHTML.tableLimit) of "
                + "\(stages.count) stage calls "
            h += "(the timeline shows all); <code>baton report --tsv FILE</code> lists every attempt.</p>\n"
        }
    }

    func link(_ path: String) -> String {
        guard !path.isEmpty else { return "" }
        let href: String
        if let b = linkBase, path.hasPrefix(b + "/") {
            href = ReportHTML.percentEncoded(String(path.dropFirst(b.count + 1)))
        }
        else { href = "file://" + ReportHTML.percentEncoded(path) }
        let name = FileIO.basename(FileIO.dirname(path)) + "/" + FileIO.basename(path)
        return "<a href=\"\(esc(href))\">\(esc(name))</a>"
    }

    func result(_ h: inout String) {
        h += "<h2>Final result</h2>\n"
        guard let f = info.final else {
            h += "<p>No final.json yet: "
                + "\(info.isLive ? "the run is still going" : "its runner died before writing it").</p>\n"
            return
        }
        let exit = f.exitCode.map { ", exit \($0)" } ?? ""
        h += "<p>final.json: <b>\(esc(f.status.rawValue))</b>\(exit)\(f.reason.map { ": " + esc($0) } ?? "")</p>"
        h += "<pre class=\"result\">\(esc(f.result.encoded(pretty: true)))</pre>\n"
    }

    // MARK: text

    /// A path as a URL path: the few characters a file name may hold that a URL reads otherwise.
    static func percentEncoded(_ path: String) -> String {
        substituting(path, ["%": "%25", " ": "%20", "#": "%23", "?": "%3F"])
    }

    /// A coordinate with one decimal.
    func n(_ v: Double) -> String {
        let i = Int((v * 10).rounded())
        let a = abs(i)
        return (i < 0 ? "-" : "") + String(a / 10) + (a % 10 == 0 ? "" : "." + String(a % 10))
    }

    static let css = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px;color:#1d2330;background:#fff}
        h1{font-size:20px}h2{font-size:16px;margin-top:24px}code{font:12px ui-monospace,monospace}
        .badge{font-size:13px;padding:2px 8px;border-radius:10px;color:#fff;background:#777;vertical-align:middle}
        .badge.st-succeeded{background:#2e8b57}.badge.st-failed{background:#c0392b}\
        .badge.st-cancelled{background:#7f8c8d}
        .badge.st-running{background:#2c6fbb}.badge.st-orphaned{background:#8e44ad}.badge.st-dry_run{background:#999}
        table.summary th{text-align:left;padding-right:16px;color:#555;font-weight:normal;vertical-align:top}
        .reason{color:#c0392b;font-weight:600}
        .legend{font-size:12px;color:#444;margin:6px 0}.legend span{margin-right:12px;white-space:nowrap}
        .legend svg{vertical-align:middle;margin-right:4px}
        .tl{overflow-x:auto;border:1px solid #ddd}
        svg text{font:11px system-ui,sans-serif}.lbl{fill:#333}.axis{fill:#777;font-size:10px}.mlabel{fill:#333;\
        font-size:10px}
        .blabel{fill:#fff;font-size:10px;pointer-events:none}
        .row{fill:#f5f6f8}.tick{stroke:#e2e2e2}
        .zoom{font-size:12px;margin:4px 0}.zoom button{margin-left:2px;min-width:26px}.hint{color:#888}
        .s-passed{fill:#2e8b57}.s-failed{fill:#c0392b}.s-failed.retried,.retried.s-timed_out{fill:#e8938a}
        .s-timed_out{fill:#e67e22}.s-cancelled{fill:#95a5a6}.s-running{fill:#2c6fbb}.s-unfinished{fill:#8e44ad}
        .life{fill:#c9d3e0}.down{fill:#eee;stroke:#bbb;stroke-dasharray:2 2}
        .replay{fill:#6c8ebf;opacity:.18}.stall{fill:#f1c40f;opacity:.3}
        .resume-line{stroke:#2c6fbb;stroke-dasharray:4 3}.final-line{stroke:#333}
        .w-queued{fill:#bdc3c7}.w-running{fill:#5dade2}.w-exited{fill:#aab7b8}.w-awaiting_artifacts{fill:#f4d03f}
        .w-callback_queued{fill:#d7bde2}.w-callback_running{fill:#9b59b6}.w-completed{fill:#2e8b57}\
        .w-blocked{fill:#e67e22}
        .w-failed{fill:#c0392b}
        .g-approved{fill:#2e8b57}.g-rejected{fill:#c0392b}.gate-span{stroke:#999;stroke-dasharray:3 2}
        .c-ok{fill:#7f8c8d}.c-fail{fill:#c0392b}.p-ok{fill:#2e8b57}.p-fail{fill:#c0392b}.hb{stroke:#7f8c8d}\
        .backoff{stroke:#c0392b;stroke-dasharray:2 2}
        table.stages{border-collapse:collapse;font-size:12px}table.stages th,table.stages td{border:1px solid #ddd;\
        padding:2px 6px;text-align:left;vertical-align:top}
        table.stages tr.st-failed td,table.stages tr.st-timed_out td{background:#fdecea}
        table.stages tr.st-unfinished td{background:#f4ecf7}table.stages tr.st-replayed td{color:#555}
        pre.err{margin:0;font-size:11px;white-space:pre-wrap;max-width:420px;color:#a93226}
        td.logs{font-size:11px}pre.result{background:#f7f7f7;padding:8px;overflow-x:auto}
        .note{color:#a04000}.foot{color:#888;font-size:12px;margin-top:24px}
        """

    /// Zoom (rescales the plot's x coordinates; `#zoom=N` in the address too), then checks what the
    /// browser drew and writes it into the page (tests read it back from the DOM).
    static let script = """
        var batonZ=1;
        function batonZoom(f){var L=\(Int(labelW)),W=\(Int(plotW));var nz=f===0?1:Math.max(1,Math.min(batonZ*f,4096)),\
        k=nz/batonZ;
        if(k===1)return;batonZ=nz;function sx(v){return L+(v-L)*k}
        var els=document.querySelectorAll('#plot *');
        for(var i=0;i<els.length;i++){var e=els[i];
        ['x','x1','x2','cx'].forEach(function(a){var v=e.getAttribute(a);if(v!==null)e.setAttribute(a,\
        sx(+v).toFixed(1))});
        if(e.tagName==='rect'&&!e.classList.contains('wmark')){e.setAttribute('width',\
        Math.max(+e.getAttribute('width')*k,0.6).toFixed(1))}
        if(e.tagName==='polygon'){var p=e.getAttribute('points').split(' ').map(function(q){return \
        q.split(',').map(Number)});
        var d=sx(p[0][0])-p[0][0];\
        e.setAttribute('points',p.map(function(q){return (q[0]+d).toFixed(1)+','+q[1]}).join(' '))}}
        document.getElementById('timeline').setAttribute('width',L+W*batonZ+20);
        document.getElementById('zoom-level').textContent=batonZ+'×'}
        (function(){var m=/zoom=([0-9.]+)/.exec(location.hash);if(m)batonZoom(+m[1]);
        var bars=document.querySelectorAll('#timeline rect.bar'),fills={};
        for(var i=0;i<bars.length;i++){var s=bars[i].getAttribute('data-status')+\
        (bars[i].classList.contains('retried')?'-retried':'');
        if(!(s in fills))fills[s]=getComputedStyle(bars[i]).fill;}
        document.getElementById('render-check').textContent=JSON.stringify({rendered:true,bars:bars.length,fills:fills,\
        zoom:batonZ});
        document.body.setAttribute('data-rendered','ok');})();
        """
}

/// Text for HTML (element content and quoted attributes).
func esc(_ s: String) -> String {
    var needs = false
    for c in s.utf8 where c == 38 || c == 60 || c == 62 || c == 34 || c == 39 { needs = true; break }
    return needs ? substituting(s, htmlEscapes) : s
}

let htmlEscapes: [Unicode.Scalar: String] = ["&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"]

/// `s` with each scalar of `table` replaced by its text.
func substituting(_ s: String, _ table: [Unicode.Scalar: String]) -> String {
    var o = ""
    o.reserveCapacity(s.utf8.count + 16)
    for ch in s.unicodeScalars {
        if let r = table[ch] { o += r } else { o.unicodeScalars.append(ch) }
    }
    return o
}

extension String {
    var replacingUnderscore: String { String(map { $0 == "_" ? " " : $0 }) }
}

/// The x ranges marker labels take on each row of the timeline.
final class LabelSpace {
    private var taken: [Double: [(Double, Double)]] = [:]

    /// A label's width in the timeline's 10 px font (generously: never an overlap).
    static func width(_ s: String) -> Double { Double(s.count) * 6.2 }

    /// Takes [a, b] on row `y` (with 4 px to spare) if nothing there overlaps it.
    func take(_ y: Double, _ a: Double, _ b: Double) -> Bool {
        if taken[y, default: []].contains(where: { a < $0.1 + 4 && $0.0 < b + 4 }) { return false }
        taken[y, default: []].append((a, b))
        return true
    }
}
