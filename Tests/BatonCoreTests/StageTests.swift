import BatonBase
import BatonCore
import Foundation
import Glibc
import Testing

/// Stages, the journal and final.json through BatonCore alone: no Lua involved.
@Suite struct StageTests {
    func context() throws -> (RunContext, RunStore) {
        let store = RunStore(root: tempDir())
        let ctx = try RunContext.start(store: store, id: nil, recipe: "core-test", recipeText: [], args: [], dryRun: false)
        return (ctx, store)
    }

    func alive(_ marker: String) -> Bool {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let d = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { continue }
            if String(decoding: d, as: UTF8.self).contains(marker) { return true }
        }
        return false
    }

    @Test func passingStageIsJournaledAndInFinal() throws {
        let (ctx, _) = try context()
        let r = ctx.runStage(StageSpec(id: "echo", command: .argv(["echo", "hi"])))
        #expect(r.ok && r.stdout == Array("hi\n".utf8) && r.exit == 0)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
        let c = try JournalReader.read(ctx.dir.journal)
        #expect(c.events.map(\.type) == ["run_started", "stage_started", "stage_finished", "final"])
        let f = try #require(ctx.dir.readFinal())
        #expect(f["status"] == .string("succeeded"))
        #expect(f["stages"]?.arrayValue?.first?["id"] == .string("echo"))
        #expect(!FileLock.isHeld(ctx.dir.lock))
    }

    @Test func timeoutKillsTheGroupIncludingGrandchildren() throws {
        let (ctx, _) = try context()
        let marker = "core-gc-\(UUID().uuidString.prefix(8))"
        var spec = StageSpec(id: "slow", command: .shell("sh -c 'sleep 300; : \(marker)' & sleep 300"))
        spec.timeout = 0.3
        spec.grace = 0.3
        let r = ctx.runStage(spec)
        #expect(r.status == .timed_out && r.failureClass == .transient)
        #expect(!alive(marker))
        ctx.finish(status: .failed, exitCode: 1, reason: "x")
    }

    @Test func finishEndsBackgroundStagesAndWritesFinal() throws {
        let (ctx, _) = try context()
        let marker = "core-bg-\(UUID().uuidString.prefix(8))"
        let e = ctx.startStage(StageSpec(id: "bg", command: .shell("sleep 300; : \(marker)")))
        #expect(!e.isFinished)
        // vfork returns once the child has let go of our memory inside execve, a moment
        // before the kernel sets its new command line: wait for it, with a deadline.
        let deadline = Clock.monotonic() + 10
        while !alive(marker), Clock.monotonic() < deadline { usleep(5_000) }
        #expect(alive(marker))
        ctx.finish(status: .cancelled, exitCode: 143, reason: "test")
        #expect(!alive(marker))
        let f = try #require(ctx.dir.readFinal())
        #expect(f["status"] == .string("cancelled") && f["exit_code"] == .int(143))
        let last = try JournalReader.read(ctx.dir.journal).events.last
        #expect(last?.type == "final")
    }

    @Test func persistFinalFieldsSurviveTheEnd() throws {
        let (ctx, _) = try context()
        try ctx.persistFinal([("metric", .double(0.93))])
        #expect(ctx.dir.readFinal()?["status"] == .string("running"))
        ctx.finish(status: .failed, exitCode: 1, reason: "later error")
        #expect(ctx.dir.readFinal()?["result"]?["metric"] == .double(0.93))
    }

    @Test func resumeReplaysWhatPassedWithTheSameFingerprint() throws {
        let (ctx, store) = try context()
        let dir = ctx.dir
        _ = ctx.runStage(StageSpec(id: "a", command: .argv(["echo", "one"])))
        var failing = StageSpec(id: "b", command: .shell("exit 3"))
        failing.allowFail = true
        _ = ctx.runStage(failing)
        ctx.finish(status: .failed, exitCode: 1, reason: "b failed")
        _ = store
        let again = try RunContext.resume(dir: dir, recipe: "core-test", recipeText: [], args: [])
        let a = again.runStage(StageSpec(id: "a", command: .argv(["echo", "one"])))
        #expect(a.replayed && a.stdout == Array("one\n".utf8))
        let b = again.runStage(StageSpec(id: "b", command: .shell("exit 0")))
        #expect(!b.replayed && b.ok)
        // After the first stage that ran for real, nothing replays.
        let a2 = again.runStage(StageSpec(id: "a", command: .argv(["echo", "one"])))
        #expect(!a2.replayed && a2.occurrence == 2)
        again.finish(status: .succeeded, exitCode: 0, reason: nil)
        let seqs = try JournalReader.read(dir.journal).events.map(\.seq)
        #expect(seqs == Array(1...Int64(seqs.count)))
    }

    /// The runner keeps only a summary of each call that is over (RunHistory.keepSummaries);
    /// the final.json it writes lists what a whole fold of its journal lists, in every life.
    @Test func finalJsonIsTheWholeFoldOfTheJournal() throws {
        let (ctx, _) = try context()
        let dir = ctx.dir
        func sameAsTheJournal(_ c: RunContext) throws {
            let whole = RunHistory(try JournalReader.read(dir.journal).events)
            let written = try #require(FinalRecord.read(dir))
            let folded = FinalRecord(history: whole, status: written.status, exitCode: written.exitCode, reason: written.reason,
                                     endedAt: written.endedAt, result: written.result)
            #expect(written.stages.count == 5 && written.stages == folded.stages, "\(written.stages) vs \(folded.stages)")
            // (final.json's stages are encoded one by one, as the whole document's tree would be.)
            let bytes = try FileIO.readFile(dir.final)
            #expect(String(decoding: bytes, as: UTF8.self) == (try JSON.parse(bytes)).encoded(pretty: true) + "\n")
            // The snapshot the runner wrote at its end is the one a whole fold gives.
            let snap = try FileIO.readFile(dir.snapshot)
            let mark = try #require(HistorySnapshot.decode(snap, runDir: dir.path)).mark
            #expect(HistorySnapshot.encode(whole, mark: mark, runDir: dir.path) == snap)
            #expect(c.history.concluded.allSatisfy { $0.command == nil && $0.finished == nil }, "whole records kept")
        }
        var flaky = StageSpec(id: "b", command: .shell("sleep 0.01; exit 3"))
        flaky.allowFail = true
        flaky.retries = 1
        flaky.retryOn = Set(FailureClass.allCases)
        flaky.backoff = Backoff(initial: 0.01, max: 0.01)
        func runAll(_ c: RunContext, last: String) -> [StageResult] {
            let specs = [StageSpec(id: "a", command: .argv(["echo", "one"])), flaky, StageSpec(id: "a", command: .argv(["echo", "one"])),
                         StageSpec(id: "c", command: .shell("sleep 0.02")), StageSpec(id: "d", command: .shell(last))]
            let results = specs.map { c.runStage($0) }
            c.finish(status: .failed, exitCode: 1, reason: "b failed")
            return results
        }
        _ = runAll(ctx, last: "exit 0")
        try sameAsTheJournal(ctx)
        // A resume: a replays; b did not pass, so it and everything after it run again.
        let again = try RunContext.resume(dir: dir, recipe: "core-test", recipeText: [], args: [])
        #expect(runAll(again, last: "exit 0; :").map(\.replayed) == [true, false, false, false, false])
        try sameAsTheJournal(again)
    }

    @Test func aSecondRunnerCannotTakeALiveRun() throws {
        let (ctx, _) = try context()
        #expect(throws: RunStartError.self) { _ = try RunContext.resume(dir: ctx.dir, recipe: "x", recipeText: [], args: []) }
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
        let again = try RunContext.resume(dir: ctx.dir, recipe: "x", recipeText: [], args: [])
        again.finish(status: .succeeded, exitCode: 0, reason: nil)
    }
}
