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
