import Glibc

/// Finishing a run whose runner is gone (orphaned): end what it left alive and write
/// its final.json from the journal, under the run's lock.
public enum Recovery {
    public struct Outcome { public var killed: [pid_t]; public var final: JSON }

    public static func finishOrphan(_ dir: RunDirectory, status: RunStatus, exitCode: Int32, reason: String) throws -> Outcome? {
        guard let lock = try FileLock.tryAcquire(dir.lock) else { return nil }
        defer { lock.release() }
        let killed = Survivors.kill(runID: dir.id)
        var contents = JournalContents()
        if FileIO.exists(dir.journal) {
            contents = (try? JournalReader.read(dir.journal)) ?? JournalContents()
            if contents.tornTail { truncate(dir.journal, off_t(contents.validLength)) }
        }
        var recipe = "?"
        var started: String? = nil
        var stages: [JSON] = []
        for e in contents.events {
            switch e["type"]?.stringValue {
            case "run_started": recipe = e["recipe"]?.stringValue ?? recipe; started = started ?? e["ts"]?.stringValue
            case "run_resumed": recipe = e["recipe"]?.stringValue ?? recipe
            case "stage_finished" where e["final"]?.boolValue != false:
                stages.append(.object([("id", e["id"] ?? .null), ("status", e["status"] ?? .null),
                                       ("attempts", e["attempt"] ?? .int(1)), ("duration_ms", e["duration_ms"] ?? .int(0))]))
            default: break
            }
        }
        let prior = dir.readFinal()
        let now = Clock.now()
        let startT = started.flatMap(Clock.parseRFC3339) ?? now
        let doc: JSON = .object([
            ("v", .int(1)), ("run", .string(dir.id)), ("recipe", .string(recipe)), ("status", .string(status.rawValue)),
            ("exit_code", .int(Int64(exitCode))), ("reason", .string(reason)),
            ("started_at", .string(Clock.rfc3339(startT))), ("ended_at", .string(Clock.rfc3339(now))),
            ("duration_ms", .int(Int64((now - startT) * 1000))), ("stages", .array(stages)),
            ("result", prior?["result"] ?? .object([])),
        ])
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, lastSeq: contents.lastSeq)
        try journal.append("final", [("status", .string(status.rawValue)), ("exit_code", .int(Int64(exitCode))),
                                     ("reason", .string(reason)), ("killed_pids", .array(killed.map { .int(Int64($0)) }))])
        try FileIO.writeAtomically(dir.final, Array(doc.encoded(pretty: true).utf8) + [10])
        return Outcome(killed: killed, final: doc)
    }
}

extension Recovery {
    public enum CancelOutcome {
        /// The live runner ended its stages and wrote final.json itself.
        case stopped(runner: pid_t)
        /// It did not stop within the time allowed: SIGKILLed, then finished as an orphan.
        case killed(runner: pid_t, ended: [pid_t])
        /// No runner: what the run left alive was ended and final.json written.
        case finishedOrphan(ended: [pid_t])
        case alreadyEnded(RunInfo.State)
        /// `interrupted()` said to stop waiting; the runner is still ending its stages.
        case stoppedWaiting(runner: pid_t)
        case runnerUnknown
    }

    /// `baton cancel`: SIGTERM to a live runner (it ends its stages' groups and writes
    /// final.json `cancelled`), SIGKILL after `killAfter` seconds; an orphaned run is
    /// finished here.
    public static func cancel(_ dir: RunDirectory, killAfter: Double = 120,
                              interrupted: () -> Bool = { false },
                              signalled: (pid_t) -> Void = { _ in }) throws -> CancelOutcome {
        let info = RunInfo.load(dir, withEvents: false)
        switch info.state {
        case .running, .starting:
            guard let pid = info.runnerPid ?? dir.readPid(), pid > 0 else { return .runnerUnknown }
            kill(pid, SIGTERM)
            signalled(pid)
            let until = Clock.monotonic() + killAfter
            func live() -> Bool {
                FileLock.isHeld(dir.lock) || (kill(pid, 0) == 0 && RunInfo.load(dir, withEvents: false).state == .starting)
            }
            while live(), Clock.monotonic() < until {
                if interrupted() { return .stoppedWaiting(runner: pid) }
                usleep(50_000)
            }
            guard FileLock.isHeld(dir.lock) else { return .stopped(runner: pid) }
            kill(pid, SIGKILL)
            while FileLock.isHeld(dir.lock), Clock.monotonic() < until + 10 { usleep(20_000) }
            let o = try finishOrphan(dir, status: .cancelled, exitCode: 143,
                                     reason: "cancelled; its runner did not stop within \(Clock.human(killAfter)) and was killed")
            return .killed(runner: pid, ended: o?.killed ?? [])
        case .orphaned:
            guard let o = try finishOrphan(dir, status: .cancelled, exitCode: 143,
                                           reason: "cancelled after its runner died (orphaned run)") else {
                return try cancel(dir, killAfter: killAfter, interrupted: interrupted, signalled: signalled)   // live again
            }
            return .finishedOrphan(ended: o.killed)
        default:
            return .alreadyEnded(info.state)
        }
    }
}
