import Glibc

/// Processes that outlived their stage: every stage carries BATON_RUN_ID in its
/// environment, so after a runner died by SIGKILL (its stages' leaders die with it
/// through the parent-death signal, but their children may not) `cancel` and
/// `resume` find the rest by that mark in /proc and end them.
public enum Survivors {
    /// Pids (not ours) whose environment has BATON_RUN_ID=runID.
    public static func find(runID: String) -> [pid_t] {
        let me = getpid()
        let mark = Array("BATON_RUN_ID=\(runID)".utf8)
        var found: [pid_t] = []
        for name in FileIO.list("/proc") {
            guard let pid = pid_t(name), pid != me, pid > 1 else { continue }
            guard let env = try? FileIO.readFile("/proc/\(name)/environ", limit: 1 << 20) else { continue }
            var start = 0
            for i in 0...env.count where i == env.count || env[i] == 0 {
                if i - start == mark.count, env[start..<i].elementsEqual(mark) { found.append(pid); break }
                start = i + 1
            }
        }
        return found.filter { !isZombie($0) }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let s = try? FileIO.readString("/proc/\(pid)/stat"), let close = s.lastIndex(of: ")") else { return false }
        let rest = String(s[s.index(after: close)...]).trimmingWhitespace()
        return rest.hasPrefix("Z") || rest.hasPrefix("X")
    }

    /// SIGTERM, up to `grace` seconds, then SIGKILL. Returns the pids that were found.
    @discardableResult
    public static func kill(runID: String, grace: Double = 2) -> [pid_t] {
        let pids = find(runID: runID)
        guard !pids.isEmpty else { return [] }
        for p in pids { Glibc.kill(p, SIGTERM) }
        let until = Clock.monotonic() + grace
        var alive = pids
        while !alive.isEmpty, Clock.monotonic() < until {
            var st: Int32 = 0
            while waitpid(-1, &st, WNOHANG) > 0 {}
            alive = alive.filter { Glibc.kill($0, 0) == 0 && !isZombie($0) }
            if !alive.isEmpty { usleep(20_000) }
        }
        for p in alive { Glibc.kill(p, SIGKILL) }
        var st: Int32 = 0
        while waitpid(-1, &st, WNOHANG) > 0 {}
        return pids
    }
}

/// What a previous life of a run passed, for resume: (stage id, occurrence) of every
/// stage whose final attempt passed, with its fingerprint and result.
struct ReplayIndex {
    struct Entry { var fingerprint: String; var result: StageResult }
    var passed: [String: Entry] = [:]
    var logNumbers: [String: Int] = [:]

    init(_ events: [JSON]) {
        for e in events {
            guard let type = e["type"]?.stringValue, type == "stage_finished" || type == "stage_started",
                  let id = e["id"]?.stringValue else { continue }
            if let out = e["logs"]?["stdout"]?.stringValue, let n = Int(FileIO.basename(out).split(separator: ".").first ?? "") {
                logNumbers[id] = max(logNumbers[id] ?? 0, n)
            }
            guard type == "stage_finished", e["dry"]?.boolValue != true,
                  let occ = e["occurrence"]?.intValue, let fp = e["fingerprint"]?.stringValue else { continue }
            let key = "\(id)\u{1}\(occ)"
            if e["status"]?.stringValue == "passed" {
                let logs = (e["logs"]?["stdout"]?.stringValue ?? "", e["logs"]?["stderr"]?.stringValue ?? "")
                var r = StageResult(id: id, occurrence: Int(occ), status: .passed,
                                    attempts: Int(e["attempt"]?.intValue ?? 1),
                                    duration: Double(e["duration_ms"]?.intValue ?? 0) / 1000, logs: logs)
                r.exit = 0
                r.replayed = true
                passed[key] = Entry(fingerprint: fp, result: r)
            } else if e["final"]?.boolValue != false {
                passed[key] = nil
            }
        }
    }

    func passed(id: String, occurrence: Int, fingerprint: String) -> StageResult? {
        guard let e = passed["\(id)\u{1}\(occurrence)"], e.fingerprint == fingerprint else { return nil }
        var r = e.result
        r.stdout = readTail(r.logs.out)
        r.stderr = readTail(r.logs.err)
        return r
    }
}
