import BatonBase
import Glibc

/// `journal.snapshot`: the fold (`RunHistory`, abridged) of a journal's first `offset` bytes,
/// written beside it by the runner, so that `status`, `runs` and the live view fold only the
/// journal's tail instead of all of it. It is the fold's state serialized, never a second
/// fold: a reader puts the history back and folds the tail with `RunHistory.apply`.
///
/// The journal wins: a snapshot is used only when its checksum holds (a torn one is not),
/// when it names the same run, when the journal is at least `offset` bytes long with a line
/// ending there, and when the journal's first and last 4 KiB before `offset` hash as they did
/// when it was written (a journal replaced, cut short or rewritten is not the one it folded).
/// Otherwise, or when the tail has a corrupt line, the whole journal is read.
///
/// Text: a header line (JSON: run, offset, the two hashes), the fold's small parts (JSON:
/// starts, final, pause, watches, calls in flight, the cache's answers), then one line per
/// run of calls, `<state> <first occurrence> <count> <id as a JSON string>`, and last
/// `end <SHA-256 of every byte before>`.
public enum HistorySnapshot {
    public static let fileName = "journal.snapshot"
    static let format = 1
    /// The bytes of the journal hashed at each end of the folded part.
    static let window = 4096

    /// Where the snapshot stands in its journal.
    public struct Mark: Equatable, Sendable {
        public var run: String
        public var offset: Int
        public var head: String
        public var tail: String
    }

    /// The hashes of `journal`'s first and last `window` bytes before `offset`, read through
    /// `fd` (nil when the file is shorter, or no line ends at `offset`).
    static func mark(run: String, fd: Int32, offset: Int) -> Mark? {
        guard offset > 0 else { return nil }
        func hash(_ from: Int, _ n: Int) -> (String, UInt8)? {
            var b = [UInt8](repeating: 0, count: n)
            let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(from)) }
            guard got == n else { return nil }
            return (SHA256.hex(b), b[n - 1])
        }
        let n = min(window, offset)
        guard let (head, _) = hash(0, n), let (tail, last) = hash(offset - n, n), last == 10 else { return nil }
        return Mark(run: run, offset: offset, head: head, tail: tail)
    }

    // MARK: writing

    /// The snapshot of `h`, the fold of the journal up to `mark.offset`. Log paths inside
    /// `runDir` are written relative to it, as the journal writes them.
    public static func encode(_ a: RunHistory, mark: Mark, runDir: String) -> [UInt8] {
        // What `abridged()` keeps, read from the records in place (the runner's are whole:
        // abridging 100,000 of them first would copy each).
        var out: [UInt8] = []
        out.reserveCapacity(4096 + a.stages.count * 24)
        func line(_ j: JSON) { j.encode(into: &out, pretty: false, indent: 0); out.append(10) }
        line(.object([("snapshot", .int(Int64(format))), ("run", .string(mark.run)),
                      ("offset", .int(Int64(mark.offset))),
                      ("head", .string(mark.head)), ("tail", .string(mark.tail))]))
        line(parts(a, runDir: runDir))
        let stages = a.stages
        var i = 0
        while i < stages.count {
            let (key, status) = (stages[i].key, stages[i].status)
            var n = 1
            while i + n < stages.count, stages[i + n].key.id == key.id, stages[i + n].status == status,
                  stages[i + n].key.occurrence == key.occurrence + n { n += 1 }
            out.append(contentsOf: "\(status.rawValue) \(key.occurrence) \(n) ".utf8)
            JSON.encodeString(key.id, into: &out)
            out.append(10)
            i += n
        }
        out.append(contentsOf: "end \(SHA256.hex(out))\n".utf8)
        return out
    }

    private static func parts(_ h: RunHistory, runDir: String) -> JSON {
        func event(_ ts: Double, _ body: EventBody) -> JSON {
            JournalEvent(seq: 0, ts: ts, run: h.runID, body: body).json
        }
        var o: [(String, JSON)] = [("run", .string(h.runID)), ("lives", .int(Int64(h.lives))),
                                   ("last_seq", .int(h.lastSeq))]
        if let s = h.firstStart { o.append(("first", event(s.ts, .runStarted(s.began)))) }
        if let s = h.latestStart {
            o.append(("latest", event(s.ts, s.resumed ? .runResumed(s.began) : .runStarted(s.began))))
        }
        if let l = h.lastEvent { o.append(("last_event", .object([("type", .string(l.type)), ("ts", stamp(l.ts))]))) }
        if let f = h.final { o.append(("final", event(f.ts, .final(f.event)))) }
        if let p = h.paused { o.append(("paused", event(p.ts, .paused(p.record)))) }
        let numbers = h.logNumbers.sorted { $0.key < $1.key }
        o.append(("log_numbers", .object(numbers.map { ($0.key, .int(Int64($0.value))) })))
        o.append(("watches", .array(h.watches.map(\.snapshotJSON))))
        var open: [JSON] = [], cached: [JSON] = []
        for i in h.stages.indices where h.stages[i].isOpen || h.stages[i].finished?.cachedFrom != nil {
            let r = h.stages[i].abridged
            if r.isOpen { open.append(r.snapshotJSON(slot: i, runDir: runDir)) } else if let f = r.finished {
                cached.append(.object([("slot", .int(Int64(i)))] + f.withLogs { $0.relative(to: runDir) }.fields.pairs))
            }
        }
        o += [("open", .array(open)), ("cached", .array(cached))]
        return .object(o)
    }

    static func stamp(_ t: Double) -> JSON { .string(Clock.rfc3339(t)) }
    static func stamp(_ j: JSON?) -> Double? { j?.stringValue.flatMap(Clock.parseRFC3339) }

    // MARK: reading

    /// The history a snapshot holds and where it stands; nil when it is torn or not one.
    public static func decode(_ bytes: [UInt8], runDir: String) -> (history: RunHistory, mark: Mark)? {
        bytes.withUnsafeBufferPointer { buf -> (RunHistory, Mark)? in
            // The last line: `end <hash of everything before it>`.
            guard buf.count > 69, buf[buf.count - 1] == 10 else { return nil }
            let endAt = buf.count - 69   // "end " + 64 hex digits + "\n"
            let trailer = String(decoding: UnsafeBufferPointer(rebasing: buf[endAt...]), as: UTF8.self)
            let sum = SHA256.hex(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: buf[0..<endAt])))
            guard trailer == "end \(sum)\n" else { return nil }
            var lines = LineReader(buf: buf, end: endAt)
            guard let head = lines.json(), head["snapshot"]?.intValue == Int64(format),
                  let run = head["run"]?.stringValue, let offset = head["offset"]?.intValue,
                  let hh = head["head"]?.stringValue, let th = head["tail"]?.stringValue,
                  let parts = lines.json() else { return nil }
            var stages: [StageRecord] = []
            while let (state, first, count, id) = lines.calls() {
                for k in 0..<count {
                    stages.append(StageRecord(status: state, key: StageKey(id: id, occurrence: first + k)))
                }
            }
            guard lines.atEnd, let h = history(parts, stages: &stages, runDir: runDir) else { return nil }
            return (h, Mark(run: run, offset: Int(offset), head: hh, tail: th))
        }
    }

    /// (`stages` in place: a copy of the array would copy every record.)
    private static func history(_ p: JSON, stages: inout [StageRecord], runDir: String) -> RunHistory? {
        func event(_ k: String) -> JournalEvent? { p[k].flatMap(JournalEvent.init) }
        for j in p["open"]?.arrayValue ?? [] {
            guard let i = j["slot"]?.intValue.map(Int.init), stages.indices.contains(i),
                  let r = StageRecord(snapshot: j, key: stages[i].key, runDir: runDir) else { return nil }
            stages[i] = r
        }
        for j in p["cached"]?.arrayValue ?? [] {
            guard let i = j["slot"]?.intValue.map(Int.init), stages.indices.contains(i) else { return nil }
            var f = Fields<StageFinished.Key>(j)
            stages[i].finished = StageFinished(&f).withLogs { $0.resolved(in: runDir) }
        }
        var first: (ts: Double, began: RunBegan)?
        if let e = event("first"), let (b, _) = e.body.began { first = (e.ts, b) }
        var latest: (ts: Double, began: RunBegan, resumed: Bool)?
        if let e = event("latest"), let (b, r) = e.body.began { latest = (e.ts, b, r) }
        var final: (event: FinalEvent, ts: Double)?
        if let e = event("final"), case let .final(f) = e.body { final = (f, e.ts) }
        var paused: (record: PauseRecord, ts: Double)?
        if let e = event("paused"), case let .paused(r) = e.body { paused = (r, e.ts) }
        var last: (type: String, ts: Double)?
        if let t = p["last_event"]?["type"]?.stringValue, let ts = stamp(p["last_event"]?["ts"]) { last = (t, ts) }
        var logNumbers: [String: Int] = [:]
        for (k, v) in p["log_numbers"]?.objectValue ?? [] { logNumbers[k] = v.intValue.map(Int.init) }
        let watches = (p["watches"]?.arrayValue ?? []).compactMap(WatchRecord.init(snapshot:))
        return RunHistory(runID: p["run"]?.stringValue ?? "", firstStart: first, latestStart: latest,
                          lives: Int(p["lives"]?.intValue ?? 0), stages: stages, watches: watches, lastEvent: last,
                          final: final, paused: paused, lastSeq: p["last_seq"]?.intValue ?? 0, logNumbers: logNumbers)
    }

    /// The lines of a snapshot's body.
    private struct LineReader {
        let buf: UnsafeBufferPointer<UInt8>
        let end: Int
        var i = 0
        init(buf: UnsafeBufferPointer<UInt8>, end: Int) { self.buf = buf; self.end = end }
        var atEnd: Bool { i >= end }

        mutating func next() -> UnsafeBufferPointer<UInt8>? {
            guard i < end else { return nil }
            var j = i
            while j < end, buf[j] != 10 { j += 1 }
            defer { i = j + 1 }
            return UnsafeBufferPointer(rebasing: buf[i..<j])
        }

        mutating func json() -> JSON? { next().flatMap { try? JSON.parse($0, maxDepth: 128) } }

        /// `<state> <first occurrence> <count> <id>`.
        mutating func calls() -> (CallState, Int, Int, String)? {
            guard let l = next() else { return nil }
            func text(_ a: Int, _ b: Int) -> String {
                String(decoding: UnsafeBufferPointer(rebasing: l[a..<b]), as: UTF8.self)
            }
            var words: [String] = [], from = 0, k = 0
            while words.count < 3, k < l.count {
                if l[k] == 32 { words.append(text(from, k)); from = k + 1 }
                k += 1
            }
            guard words.count == 3, let state = CallState(rawValue: words[0]), let first = Int(words[1]),
                  let count = Int(words[2]), count > 0, l.count - from >= 2, l[from] == 34, l[l.count - 1] == 34
            else { return nil }
            let quoted = UnsafeBufferPointer(rebasing: l[from..<l.count])
            // An id with no escape is its bytes between the quotes (the common case, and fast).
            if !quoted.contains(92) { return (state, first, count, text(from + 1, l.count - 1)) }
            guard let id = (try? JSON.parse(quoted))?.stringValue else { return nil }
            return (state, first, count, id)
        }
    }
}

extension StageFinished {
    func withLogs(_ f: (StageLogs) -> StageLogs) -> StageFinished {
        var c = self
        c.logs = f(logs)
        return c
    }
}

extension StageRecord {
    /// A call in flight in a snapshot: its keys, stated once for the encoder and the decoder.
    enum SnapshotKey: String, JournalKeys, CommandKeyed, LogsKeyed {
        case slot, status, fingerprint, attempt, logs, argv, shell, cwd, pid
        case startedAt = "started_at", attemptStartedAt = "attempt_started_at", endedAt = "ended_at"
        case timeoutSec = "timeout_sec", finished, stalled, executor, nativeID = "native_id", phase, queue, node
        case queueReason = "queue_reason"
    }

    /// A call in flight, every field (`RunHistory.abridged` keeps them all); times as the journal writes them.
    func snapshotJSON(slot: Int, runDir: String) -> JSON {
        var o: FieldList<SnapshotKey> = [(.slot, .int(Int64(slot))), (.status, .string(status.rawValue)),
                                         (.fingerprint, .string(fingerprint)), (.attempt, .int(Int64(attempt))),
                                         (.logs, logs.relative(to: runDir).json)]
        if let c = command { let (k, v) = c.journalField(SnapshotKey.self); o.add(k, v) }
        if let c = cwd { o.add(.cwd, .string(c)) }
        if let p = pid { o.add(.pid, .int(Int64(p))) }
        for (k, t) in [(SnapshotKey.startedAt, startedAt), (.attemptStartedAt, attemptStartedAt), (.endedAt, endedAt)] {
            if let t { o.add(k, HistorySnapshot.stamp(t)) }
        }
        if let t = timeoutSec { o.add(.timeoutSec, .double(t)) }
        if let f = finished { o.add(.finished, .object(f.withLogs { $0.relative(to: runDir) }.fields.pairs)) }
        if let s = stalled { o.add(.stalled, .object(s.fields.pairs)) }
        for (k, v) in [(SnapshotKey.executor, executor), (.nativeID, nativeID), (.phase, phase?.rawValue),
                       (.queue, queue), (.node, node), (.queueReason, queueReason)] {
            if let v { o.add(k, .string(v)) }
        }
        return .object(o.pairs)
    }

    init?(snapshot j: JSON, key: StageKey, runDir: String) {
        var f = Fields<SnapshotKey>(j)
        guard let s = f.string(.status).flatMap(CallState.init(rawValue:)) else { return nil }
        self.init(status: s, key: key)
        fingerprint = f.string(.fingerprint) ?? ""
        attempt = Int(f.int(.attempt) ?? 0)
        logs = f.logs().resolved(in: runDir)
        command = f.command()
        cwd = f.string(.cwd)
        pid = f.int32(.pid)
        startedAt = HistorySnapshot.stamp(f[.startedAt])
        attemptStartedAt = HistorySnapshot.stamp(f[.attemptStartedAt])
        endedAt = HistorySnapshot.stamp(f[.endedAt])
        timeoutSec = f.double(.timeoutSec)
        if let fj = f[.finished] {
            var ff = Fields<StageFinished.Key>(fj)
            finished = StageFinished(&ff).withLogs { $0.resolved(in: runDir) }
        }
        if let sj = f[.stalled] { var sf = Fields<StageStalled.Key>(sj); stalled = StageStalled(&sf) }
        executor = f.string(.executor)
        nativeID = f.string(.nativeID)
        phase = f.string(.phase).flatMap(QueuePhase.init(rawValue:))
        queue = f.string(.queue)
        node = f.string(.node)
        queueReason = f.string(.queueReason)
    }
}

extension WatchRecord {
    enum SnapshotKey: String, JournalKeys { case id, state, since, reason, details, queued }

    var snapshotJSON: JSON {
        let o: FieldList<SnapshotKey> = [(.id, .string(id)), (.state, .string(state.rawValue)),
                                         (.since, HistorySnapshot.stamp(since)), (.reason, .string(reason)),
                                         (.details, details.json), (.queued, queued.json)]
        return .object(o.pairs)
    }

    init?(snapshot j: JSON) {
        var f = Fields<SnapshotKey>(j)
        guard let id = f.string(.id), let state = f.string(.state).flatMap(WatchState.init(rawValue:)),
              let since = HistorySnapshot.stamp(f[.since]) else { return nil }
        self.init(id: id, state: state, since: since, reason: f.string(.reason) ?? "",
                  details: WatchDetails(f[.details]), queued: WatchDetails(f[.queued]))
    }
}

extension HistorySnapshot {
    /// Writes the snapshot of `h`, the fold of every event `journal` was given (the pending
    /// ones are written first), to a temp file renamed over the old one: a reader sees the
    /// old snapshot or the new one. Not flushed: after a power loss a torn or stale snapshot
    /// fails its checks and readers fold the whole journal. A failure costs readers only time.
    public static func write(_ h: RunHistory, journal: JournalWriter, dir: RunDirectory) {
        let reader = open(journal.path, O_RDONLY | O_CLOEXEC)   // (the writer's descriptor is write-only)
        guard reader >= 0 else { return }
        defer { close(reader) }
        guard let bytes = try? journal.withAllWritten({ size in
            mark(run: h.runID, fd: reader, offset: size).map { encode(h, mark: $0, runDir: dir.path) }
        }) ?? nil else { return }
        let tmp = dir.path + "/." + fileName + ".tmp"
        let fd = RunDirectory.openFile(tmp, O_WRONLY | O_TRUNC)
        guard fd >= 0 else { return }
        let ok = (try? bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: tmp) }) != nil
        close(fd)
        if !ok || rename(tmp, dir.snapshot) != 0 { unlink(tmp) }
    }
}

extension RunDirectory {
    /// `journal.snapshot`: the fold of the journal's first bytes (HistorySnapshot).
    public var snapshot: String { path + "/" + HistorySnapshot.fileName }

    /// The fold as `status`, `runs` and the live view read it: the snapshot's history with
    /// the journal's tail after it folded in (`contents` holds the tail's events and
    /// problems), when the snapshot holds for this journal; else the whole journal folded.
    /// At least what `RunHistory.abridged` keeps is there (HistorySnapshotTests).
    public func readAbridgedHistory() throws -> (history: RunHistory, contents: JournalContents) {
        if let r = readFromSnapshot() { return r }
        let c = try readJournal()
        return (RunHistory(c.events), c)
    }

    private func readFromSnapshot() -> (history: RunHistory, contents: JournalContents)? {
        guard let bytes = try? FileIO.readFile(snapshot, limit: 1 << 30),
              let (folded, mark) = HistorySnapshot.decode(bytes, runDir: path), mark.run == folded.runID
        else { return nil }
        let fd = open(journal, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard HistorySnapshot.mark(run: mark.run, fd: fd, offset: mark.offset) == mark else { return nil }
        // The tail, to the end of the file as it is now (as `readJournal` reads it).
        var tail: [UInt8] = []
        guard FileIO.readChunks(fd, from: mark.offset, { tail.append(contentsOf: $0) }) != nil else { return nil }
        var c = JournalReader.parse(tail)
        // A corrupt line is reported with its line number, which only the whole journal knows.
        guard c.corrupt.isEmpty else { return nil }
        c.validLength += mark.offset
        c.byteCount += mark.offset
        c.resolveLogs(in: path)
        var h = folded
        for e in c.events { h.apply(e) }
        return (h, c)
    }
}
