import BatonBase
import Glibc
/// final.json: one type for every writer (the runner at exit and at persistFinal, the
/// crash guard's prepared document, `cancel` finishing an orphaned run) and every reader.
public struct FinalRecord: Sendable {
    public struct Stage: Sendable, Equatable {
        public var id: String
        public var occurrence: Int
        public var status: CallState
        public var attempts: Int
        public var durationMs: Int64
        public var replayed: Bool

        public var json: JSON {
            var o: [(String, JSON)] = [("id", .string(id)), ("status", .string(status.rawValue)),
                                       ("attempts", .int(Int64(attempts))), ("duration_ms", .int(durationMs))]
            if occurrence > 1 { o.append(("occurrence", .int(Int64(occurrence)))) }
            if replayed { o.append(("replayed", .bool(true))) }
            return .object(o)
        }
    }

    public var run: String
    public var recipe: String
    public var status: RunOutcome
    public var exitCode: Int32?
    public var reason: String?
    public var startedAt: Double
    public var endedAt: Double?
    public var stages: [Stage]
    public var result: JSON
    /// Written by the crash guard.
    public var crashed = false
    /// A reason longer than RunContext.reasonLimit was cut; its whole text is in this file
    /// (relative to the run directory).
    public var reasonFile: String?
    /// Who ended the run from its control socket (`baton attach`'s `:cancel`).
    public var endedBy: EndedBy?

    public struct EndedBy: Sendable, Equatable {
        public var uid: Int64, pid: Int64, user: String
        public init(uid: Int64, pid: Int64, user: String) { self.uid = uid; self.pid = pid; self.user = user }
        var json: JSON { .object([("uid", .int(uid)), ("pid", .int(pid)), ("user", .string(user))]) }
    }

    public static let fieldNames = ["v", "run", "recipe", "status", "exit_code", "reason", "reason_file", "started_at",
                                    "ended_at",
                                    "duration_ms", "ended_by", "stages", "crashed", "result"]

    public init(run: String, recipe: String, status: RunOutcome, exitCode: Int32?, reason: String?,
                startedAt: Double, endedAt: Double?, stages: [Stage], result: JSON) {
        self.run = run; self.recipe = recipe; self.status = status; self.exitCode = exitCode; self.reason = reason
        self.startedAt = startedAt; self.endedAt = endedAt; self.stages = stages; self.result = result
    }

    /// From a run's history: its original start, one entry per stage call that is over.
    public init(history h: RunHistory,
                status: RunOutcome,
                exitCode: Int32?,
                reason: String?,
                endedAt: Double?,
                result: JSON,
                stages withStages: Bool = true) {
        let start = h.firstStart?.ts ?? h.latestStart?.ts ?? endedAt ?? Clock.now()
        self.init(run: h.runID, recipe: h.latestStart?.began.recipe ?? "?", status: status, exitCode: exitCode,
                  reason: reason, startedAt: start, endedAt: endedAt,
                  stages: !withStages ? [] : Array(h.concluded.map { r in
                      Stage(id: r.key.id, occurrence: r.key.occurrence, status: r.status,
                            attempts: r.finished?.attempt ?? r.attempt, durationMs: r.durationMs, replayed: r.replayed)
                  }),
                  result: result)
    }

    /// From the two stamps as written, so a reader that subtracts them gets the same number.
    public var durationMs: Int64? { endedAt.map { Clock.millis($0) - Clock.millis(startedAt) } }

    var pairs: [(String, JSON)] { pairs(stages: .array(stages.map(\.json))) }

    /// Its fields, with `stages` as given.
    private func pairs(stages: JSON) -> [(String, JSON)] {
        var o: [(String, JSON)] = [
            ("v", .int(1)), ("run", .string(run)), ("recipe", .string(recipe)), ("status", .string(status.rawValue)),
            ("exit_code", exitCode.map { .int(Int64($0)) } ?? .null), ("reason", reason.map(JSON.string) ?? .null),
        ]
        if let f = reasonFile { o.append(("reason_file", .string(f))) }
        o += [
            ("started_at", .string(Clock.rfc3339(startedAt))),
            ("ended_at", endedAt.map { .string(Clock.rfc3339($0)) } ?? .null),
            ("duration_ms", durationMs.map(JSON.int) ?? .null),
        ]
        if let e = endedBy { o.append(("ended_by", e.json)) }
        o.append(("stages", stages))
        if crashed { o.append(("crashed", .bool(true))) }
        o.append(("result", result))
        return o
    }

    public var json: JSON { .object(pairs) }

    public func encoded() -> [UInt8] {
        // Into one buffer (a 10,000-stage document is a megabyte: no String and Array copies of
        // it), each stage encoded as it comes (not all built as JSON values first: 100,000 stages).
        var out: [UInt8] = []
        out.reserveCapacity(512 + 96 * stages.count)
        let all = pairs(stages: .null)
        JSON.encodeObject(keys: all.map(\.0), into: &out, pretty: true, indent: 0) { i, out, indent in
            guard all[i].0 == "stages" else { return all[i].1.encode(into: &out, pretty: true, indent: indent) }
            JSON.encodeArray(count: stages.count, into: &out, pretty: true, indent: indent) {
                stages[$0].json.encode(into: &$1, pretty: true, indent: $2)
            }
        }
        out.append(10)
        return out
    }

    public init?(json j: JSON) {
        guard case .object = j, let run = j["run"]?.stringValue, let status = j["status"]?.stringValue else {
            return nil
        }
        self.run = run
        recipe = j["recipe"]?.stringValue ?? "?"
        self.status = RunOutcome(reading: status)
        exitCode = j["exit_code"]?.intValue.map { Int32(truncatingIfNeeded: $0) }
        reason = j["reason"]?.stringValue
        startedAt = j["started_at"]?.stringValue.flatMap(Clock.parseRFC3339) ?? 0
        endedAt = j["ended_at"]?.stringValue.flatMap(Clock.parseRFC3339)
        stages = (j["stages"]?.arrayValue ?? []).map {
            Stage(id: $0["id"]?.stringValue ?? "", occurrence: Int($0["occurrence"]?.intValue ?? 1),
                  status: $0["status"]?.stringValue.flatMap(CallState.init(rawValue:))
                      ?? .unfinished, attempts: Int($0["attempts"]?.intValue ?? 0),
                  durationMs: $0["duration_ms"]?.intValue ?? 0, replayed: $0["replayed"]?.boolValue ?? false)
        }
        result = j["result"] ?? .object([])
        crashed = j["crashed"]?.boolValue ?? false
        reasonFile = j["reason_file"]?.stringValue
        if let e = j["ended_by"], let uid = e["uid"]?.intValue, let pid = e["pid"]?.intValue {
            endedBy = EndedBy(uid: uid, pid: pid, user: e["user"]?.stringValue ?? String(uid))
        }
    }

    public static func read(_ dir: RunDirectory) -> FinalRecord? { dir.readFinal().flatMap { FinalRecord(json: $0) } }

    /// final.json without its stage list and what follows it (not read: a 100,000-stage run's
    /// file is 15 MB), which is all `status` and `runs` say of it: the fields before `stages`
    /// from the file's first MiB, when the file ends as a whole document does (its top-level
    /// `}` alone on the last line); otherwise the whole file, parsed.
    public static func readWithoutStages(_ dir: RunDirectory) -> FinalRecord? {
        let fd = open(dir.final, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        let head = 1 << 20
        guard fstat(fd, &st) == 0, Int(st.st_size) > head else { return read(dir) }
        var bytes = [UInt8](repeating: 0, count: head), end = [UInt8](repeating: 0, count: 3)
        guard bytes.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, head, 0) }) == head,
              end.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, 3, off_t(st.st_size) - 3) }) == 3,
              end == Array("\n}\n".utf8),
              let pairs = (try? JSON.topLevelPairs(before: "stages", in: bytes)) ?? nil else { return read(dir) }
        return FinalRecord(json: .object(pairs))
    }

    public func write(to dir: RunDirectory) throws {
        try FileIO.writeAtomically(dir.final, encoded(), mode: RunDirectory.fileMode)
    }

    /// The document the stuck guard writes (see CBatonSys): cancelled, cut around the fields
    /// its thread fills in (exit code, reason, started_at, ended_at, duration_ms).
    public func stuckGuardParts() -> (head: String, tail: String) {
        var doc = self
        doc.status = .cancelled
        doc.crashed = false
        doc.reasonFile = nil
        doc.endedBy = nil
        let all = doc.pairs
        let cut = all.firstIndex { $0.0 == "exit_code" }!
        let rest = all.firstIndex { $0.0 == "stages" }!
        func encode(_ p: ArraySlice<(String, JSON)>) -> String {
            p.map { JSON.object([$0]).encoded(pretty: false).dropFirst().dropLast() }.joined(separator: ", ")
        }
        return ("{" + encode(all[..<cut]) + ", ", ", " + encode(all[rest...]) + "}\n")
    }

    /// The document the crash guard writes, cut around the exit code and reason that its
    /// signal handler fills in (`"exit_code": N, "reason": "..."`).
    public func crashGuardParts() -> (head: String, tail: String) {
        var doc = self
        doc.status = .failed
        doc.crashed = true
        doc.endedAt = nil
        let all = doc.pairs
        let cut = all.firstIndex { $0.0 == "exit_code" }!
        func encode(_ p: ArraySlice<(String, JSON)>) -> String {
            p.map { JSON.object([$0]).encoded(pretty: false).dropFirst().dropLast() }.joined(separator: ", ")
        }
        return ("{" + encode(all[..<cut]) + ", ", ", " + encode(all[(cut + 2)...]) + "}\n")
    }
}
