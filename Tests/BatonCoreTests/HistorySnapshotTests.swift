import BatonBase
@testable import BatonCore
import Foundation
import Glibc
import Testing

/// `journal.snapshot` is the fold's state serialized, never a second fold: a snapshot of any
/// prefix of a journal, put back and with the rest folded in, is the whole journal's fold
/// (abridged); a snapshot that is torn, stale, of another journal or missing falls back to
/// the whole journal, and the journal wins.
@Suite struct HistorySnapshotTests {
    /// A run directory with a journal that has every kind of state the fold keeps: retries,
    /// a batch job's queue phase, a stall, a watch, a pause, a life ended by a resume (open
    /// calls become unfinished), replays, a cache hit, the same call in a later life, final.
    static func journal() throws -> (dir: RunDirectory, ends: [Int]) {
        let root = NSTemporaryDirectory() + "snapshot-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileIO.makeDirectories(root + "/stages/a")
        let dir = RunDirectory(id: "r", path: root)
        let w = try JournalWriter(path: dir.journal, runID: "r", policy: .never)
        var ends: [Int] = []
        var t = 1_800_000_000.0
        func add(_ b: EventBody) throws { t += 0.25; try w.append(b, at: t); ends.append(w.writtenBytes) }
        let logs = StageLogs(stdout: root + "/stages/a/1.out", stderr: root + "/stages/a/1.err")
        func key(_ id: String, _ n: Int = 1) -> StageKey { StageKey(id: id, occurrence: n) }
        func started(_ k: StageKey, _ attempt: Int = 1) -> EventBody {
            var s = StageStarted(key: k, attempt: attempt, command: .argv(["true", k.id]), cwd: "/", fingerprint: "f" + k.id, logs: logs)
            s.pid = 100
            s.timeoutSec = 60
            return .stageStarted(s)
        }
        func finished(_ k: StageKey, _ st: StageStatus = .passed, attempt: Int = 1, final: Bool = true,
                      edit: (inout StageFinished) -> Void = { _ in }) -> EventBody {
            var f = StageFinished(key: k, attempt: attempt, status: st, durationMs: 250, logs: logs, fingerprint: "f" + k.id)
            f.final = final
            edit(&f)
            return .stageFinished(f)
        }
        var b = RunBegan(recipe: "r.lua", recipeSHA256: "x", args: ["1"], pid: 1, host: "h", dryRun: false, cwd: "/")
        try add(.runStarted(b))
        for n in 1...3 { try add(started(key("a", n))); try add(finished(key("a", n))) }
        var batch = StageStarted(key: key("b"), attempt: 1, command: .shell("sleep 9"), cwd: "/", fingerprint: "fb", logs: logs)
        batch.executor = "fake"
        batch.nativeID = "12"
        try add(.stageStarted(batch))
        var q = StageQueued(key: key("b"), attempt: 1, nativeID: "12", state: "PENDING")
        q.phase = .queued
        q.reason = "Priority"
        try add(.stageQueued(q))
        try add(started(key("c")))
        try add(finished(key("c"), .failed, final: false))
        try add(.stageStalled(StageStalled(key: key("b"), attempt: 1, silentMs: 9000, ending: false)))
        try add(started(key("c"), 2))
        try add(.watch(WatchTransition(id: "w", from: nil, to: .queued, reason: "", details: WatchDetails(.object([("timeout_sec", .int(9))])))))
        try add(.watch(WatchTransition(id: "w", from: .queued, to: .running, reason: "up", details: .none)))
        try add(.paused(PauseRecord(at: "r.lua:3", why: "breakpoint", stage: "c", line: "x()")))
        try add(.heartbeat(Heartbeat(waitingOn: "stage", id: "c", forMs: 30000)))
        // The runner dies; a resume: b, c and w were open.
        b.pid = 2
        b.resumesAfter = Int64(ends.count)
        try add(.runResumed(b))
        for n in 1...3 { try add(finished(key("a", n)) { $0.replayed = true }) }
        try add(finished(key("e")) { $0.cachedFrom = CachedFrom(run: "old", id: "e", occurrence: 1) })
        try add(started(key("c")))
        try add(started(key("d")))
        try add(.log(LogRecord(level: .info, message: "hello", fields: .object([]))))
        try add(finished(key("c"), .timed_out))
        try add(.final(FinalEvent(status: .failed, exitCode: 1, reason: "c timed out")))
        return (dir, ends)
    }

    /// The whole journal's first `n` bytes, folded.
    static func fold(_ dir: RunDirectory, upTo n: Int) throws -> RunHistory {
        var c = JournalReader.parse(Array(try FileIO.readFile(dir.journal).prefix(n)))
        c.resolveLogs(in: dir.path)
        return RunHistory(c.events)
    }

    /// Everything an abridged history holds, in a form two folds can be compared by (`dump`
    /// shows every stored field, so a field the snapshot forgets shows here).
    static func shown(_ h: RunHistory) -> String {
        let a = h.abridged()
        var s = ""
        dump((a.runID, a.lives, a.lastSeq, a.lastEvent.map { "\($0)" }, a.firstStart.map { "\($0)" }), to: &s)
        dump((a.latestStart.map { "\($0)" }, a.final.map { "\($0)" }, a.paused.map { "\($0)" }), to: &s)
        dump(a.logNumbers.sorted { $0.key < $1.key }.map { "\($0)" }, to: &s)
        dump(a.stages, to: &s)
        dump(a.watches, to: &s)
        dump((a.concluded.count, a.running.map(\.key), a.current.map { "\($0)" }, a.stageIDs), to: &s)
        return s
    }

    static func writeSnapshot(_ dir: RunDirectory, upTo n: Int, of h: RunHistory) throws {
        let fd = open(dir.journal, O_RDONLY)
        defer { close(fd) }
        let mark = try #require(HistorySnapshot.mark(run: "r", fd: fd, offset: n))
        try FileIO.writeAtomically(dir.snapshot, HistorySnapshot.encode(h, mark: mark, runDir: dir.path))
    }

    @Test func aSnapshotOfAnyPrefixWithTheTailFoldedInIsTheWholeFold() throws {
        let (dir, ends) = try Self.journal()
        defer { try? FileIO.removeTree(dir.path) }
        let whole = try Self.fold(dir, upTo: Int.max)
        #expect(whole.stages.contains { $0.status == .unfinished } && whole.stages.contains { $0.finished?.cachedFrom != nil })
        let bytes = try FileIO.readFile(dir.journal)
        // The journal as it stood after each line (j), with a snapshot after each earlier line (i).
        for (j, end) in ends.enumerated() {
            try FileIO.writeAtomically(dir.journal, Array(bytes.prefix(end)))
            let expected = Self.shown(try Self.fold(dir, upTo: end))
            for (i, n) in ends.enumerated() where i <= j {
                try Self.writeSnapshot(dir, upTo: n, of: try Self.fold(dir, upTo: n))
                let (h, tail) = try dir.readAbridgedHistory()
                #expect(tail.events.count == j - i, "the snapshot at line \(i + 1) was used: only the tail was read")
                #expect(Self.shown(h) == expected, "snapshot at line \(i + 1), journal to line \(j + 1)")
            }
        }
    }

    @Test func aSnapshotOfALiveRunHoldsItsCallsInFlightWhole() throws {
        let (dir, ends) = try Self.journal()
        defer { try? FileIO.removeTree(dir.path) }
        // Before the resume (after the heartbeat): b (a batch job, queued, stalled), c (retrying) and w are open.
        let n = ends[15]
        let prefix = try Self.fold(dir, upTo: n)
        #expect(prefix.running.count == 2 && prefix.paused != nil)
        try Self.writeSnapshot(dir, upTo: n, of: prefix)
        let bytes = try FileIO.readFile(dir.snapshot)
        let back = try #require(HistorySnapshot.decode(bytes, runDir: dir.path)).history
        #expect(Self.shown(back) == Self.shown(prefix))
        let b = try #require(back.stage(StageKey(id: "b", occurrence: 1)))
        #expect(b.batchText == "fake job 12 PENDING (Priority)" && b.stalled?.silentMs == 9000 && b.logs == prefix.running[0].logs)
    }

    @Test func aTornStaleForeignOrMissingSnapshotFallsBackToTheWholeJournal() throws {
        let (dir, ends) = try Self.journal()
        defer { try? FileIO.removeTree(dir.path) }
        let whole = try Self.fold(dir, upTo: Int.max)
        func readsWhole(_ why: String) throws {
            let (h, c) = try dir.readAbridgedHistory()
            #expect(c.events.count == ends.count, "\(why): the whole journal was read")
            #expect(Self.shown(h) == Self.shown(whole), "\(why)")
        }
        try readsWhole("no snapshot")
        let n = ends[20]
        try Self.writeSnapshot(dir, upTo: n, of: try Self.fold(dir, upTo: n))
        let good = try FileIO.readFile(dir.snapshot)
        // Torn: every cut of the file, and a flipped byte.
        for cut in stride(from: 0, to: good.count, by: max(1, good.count / 40)) {
            try FileIO.writeAtomically(dir.snapshot, Array(good.prefix(cut)))
            try readsWhole("torn at \(cut)")
        }
        var flipped = good
        flipped[good.count / 2] ^= 1
        try FileIO.writeAtomically(dir.snapshot, flipped)
        try readsWhole("a flipped byte")
        // Of another journal: the same run's events rewritten (a different first line).
        try FileIO.writeAtomically(dir.snapshot, good)
        let original = try FileIO.readFile(dir.journal)
        var other = original
        other[30] = other[30] == 0x31 ? 0x32 : 0x31   // a digit of the first line's timestamp
        try FileIO.writeAtomically(dir.journal, other)
        let (h, c) = try dir.readAbridgedHistory()
        #expect(c.events.count == ends.count && h.firstStart?.ts != whole.firstStart?.ts, "another journal: read whole")
        // Cut back before the snapshot's offset (a power loss): read whole.
        try FileIO.writeAtomically(dir.journal, Array(original.prefix(ends[10])))
        let (cut, cc) = try dir.readAbridgedHistory()
        let cutWhole = try Self.fold(dir, upTo: Int.max)
        #expect(cc.events.count == 11 && Self.shown(cut) == Self.shown(cutWhole))
        // Cut back and written again past the offset (a resume after a power loss): the bytes
        // before the offset differ, so the snapshot does not hold.
        var rewritten = Array(original.prefix(ends[10]))
        rewritten += Array(original[ends[11]...])
        try FileIO.writeAtomically(dir.journal, rewritten)
        let (h2, c2) = try dir.readAbridgedHistory()
        let rewrittenWhole = try Self.fold(dir, upTo: Int.max)
        #expect(c2.events.count == ends.count - 1 && Self.shown(h2) == Self.shown(rewrittenWhole))
    }

    @Test func aTornTailAfterTheSnapshotIsSkippedAndACorruptLineIsReportedFromTheWholeJournal() throws {
        let (dir, ends) = try Self.journal()
        defer { try? FileIO.removeTree(dir.path) }
        try Self.writeSnapshot(dir, upTo: ends[20], of: try Self.fold(dir, upTo: ends[20]))
        let original = try FileIO.readFile(dir.journal)
        // kill -9 mid-write: half a line at the end.
        try FileIO.writeAtomically(dir.journal, original + Array("{\"v\":1,\"seq\":99,\"ts\"".utf8))
        let (h, c) = try dir.readAbridgedHistory()
        #expect(c.tornTail && c.problems == ["last line is torn (skipped)"] && c.validLength == original.count)
        let untorn = try Self.fold(dir, upTo: original.count)
        #expect(c.events.count == ends.count - 21 && Self.shown(h) == Self.shown(untorn))
        // A corrupt line in the tail: its number is the whole journal's.
        var bad = original
        bad.insert(contentsOf: Array("not json\n".utf8), at: ends[22])
        try FileIO.writeAtomically(dir.journal, bad)
        let (_, c2) = try dir.readAbridgedHistory()
        #expect(c2.corrupt.map(\.line) == [24])
        #expect(c2.events.count == ends.count)
    }
}
