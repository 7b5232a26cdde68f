import BatonBase
import Glibc

/// One process of a live stage, as /proc shows it: the stage's leader, or a child in its
/// process group.
public struct StageProcess: Sendable {
    public var pid: Int32
    public var role: String
    public var command: String

    public var json: JSON { .object([("pid", .int(Int64(pid))), ("role", .string(role)), ("cmd", .string(command))]) }

    /// The leader and every process in its group (a stage runs in a group of its own).
    public static func of(leader: Int32) -> [StageProcess] {
        var out: [StageProcess] = []
        for name in FileIO.list("/proc") {
            guard let pid = Int32(name), let p = ProcStat.read(pid), !p.isDead, pid == leader || p.pgrp == leader else {
                continue
            }
            let cmd = ProcessTable.commandLine(pid) ?? p.name
            out.append(StageProcess(pid: pid,
                                    role: pid == leader ? "stage leader" : "child",
                                    command: String(cmd.prefix(200))))
        }
        return out.sorted { ($0.role == "stage leader" ? 0 : 1, $0.pid) < ($1.role == "stage leader" ? 0 : 1, $1.pid) }
    }
}

/// What a live run is blocked in and what its stages are doing, for `status`.
extension RunInfo {
    /// The primitive the recipe waits in now: its kind, id, state, what it waits for, and
    /// for how long of its limit, e.g. `watch 'train' awaiting_artifacts: missing
    /// out/metrics.json, 42 s of 600`.
    public var blockedIn: (text: String, json: JSON)? {
        guard isLive, let c = current else { return nil }
        let now = Clock.now()
        let cwd = history.latestStart?.began.cwd ?? ""
        func shown(_ p: String) -> String {
            !cwd.isEmpty && p.hasPrefix(cwd + "/") ? String(p.dropFirst(cwd.count + 1)) : p
        }
        if c.kind == "watch", let w = history.watches.last(where: { $0.id == c.id && !$0.state.isTerminal }) {
            let forS = Int(max(0, now - w.since))
            var waitingFor = w.reason
            var missing: [String] = []
            let limit = w.limit
            if w.state == .awaiting_artifacts {
                missing = w.missingNow
                waitingFor = missing.isEmpty
                    ? "all required files are there"
                    : "missing " + missing.map(shown).joined(separator: ", ")
            }
            let of = limit.map { " of \(Int($0))" } ?? ""
            let text = "watch '\(w.id)' \(w.state.rawValue): \(waitingFor), \(forS) s\(of)"
            return (text,
                    .object([("kind", .string("watch")), ("id", .string(w.id)), ("state", .string(w.state.rawValue)),
                                   ("waiting_for", .string(waitingFor)), ("missing", .array(missing.map(JSON.string))),
                                   ("for_s", .int(Int64(forS))), ("limit_s", limit.map { .double($0) } ?? .null),
                                   ("text", .string(text))]))
        }
        let forS = Int(max(0, now - c.since))
        let rec = history.running.last(where: { $0.key.id == c.id })
        let cmd = rec?.command?.display ?? ""
        let limit = rec?.timeoutSec
        let text = "\(c.kind) '\(c.id)' running: \(cmd.prefix(80)), \(forS) s" + (limit.map { " of \(Int($0))" } ?? "")
        return (text, .object([("kind", .string(c.kind)), ("id", .string(c.id)), ("state", .string("running")),
                               ("waiting_for", .string(String(cmd.prefix(200)))), ("for_s", .int(Int64(forS))),
                               ("limit_s", limit.map { .double($0) } ?? .null), ("text", .string(text))]))
    }

    /// The last non-empty line a stage attempt wrote (stdout or stderr, whichever was written last).
    public static func lastLine(_ logs: StageLogs) -> String? {
        var newest: (String, Double)? = nil
        for p in [logs.stdout, logs.stderr] where !p.isEmpty {
            var st = stat()
            guard stat(p, &st) == 0, st.st_size > 0 else { continue }
            if newest == nil || st.mtime > newest!.1 { newest = (p, st.mtime) }
        }
        guard let p = newest?.0 else { return nil }
        let text = String(decoding: readTail(p, limit: 4096), as: UTF8.self)
        return text.split(separator: "\n").last(where: { !$0.trimmingWhitespace().isEmpty }).map {
            String($0.prefix(200))
        }
    }

    /// The live fields of a running stage: its last output line and its processes.
    public static func liveFields(_ r: StageRecord) -> [(String, JSON)] {
        [("last_line", lastLine(r.logs).map(JSON.string) ?? .null),
         ("processes", .array(r.pid.map { StageProcess.of(leader: $0).map(\.json) } ?? []))]
    }
}
