import Foundation
import Testing

/// Guarantees that no other test would see lost: a kill -9 of a resume while its replays
/// are still buffered, the run budget ending each kind of wait, and no process (grandchildren
/// included) left behind by a stall or by `:kill` through `baton attach`.
@Suite struct GuaranteeTests {
    func json(_ s: String) -> [String: Any]? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] }

    func lines(_ path: String) -> [String] {
        (Harness.read(path) ?? "").split(separator: "\n").map(String.init)
    }

    /// Journal events as a dead runner left them: lines that do not parse (a torn tail) skipped.
    func lenientEvents(_ run: String) -> [[String: Any]] {
        (Harness.read(run + "/journal.jsonl") ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func runID(_ run: String) -> String { (run as NSString).lastPathComponent }

    // MARK: 1. kill -9 of a resume while its replays are buffered

    static let stageCount = 2000

    /// 2000 trivial stages, each appending its id to ran.txt (the stages' own record of every
    /// time they ran), then `last`, which fails until the file `go` exists. With the file
    /// `pace`, the recipe also records in progress.txt each stage call it got past (from Lua,
    /// not the journal) and spins ~0.5 ms after it: a resume's replays (~0.05 ms each
    /// otherwise) take long enough for the test to kill it between two group writes.
    static let manyStages = """
        local pace = baton.fs.exists("pace")
        for i = 1, \(stageCount) do
          runStage{id = "s" .. i, cmd = "echo s" .. i .. " >> ran.txt"}
          if pace then
            baton.fs.append("progress.txt", i .. "\\n")
            local t = baton.now()
            while baton.now() - t < 0.0005 do end
          end
        end
        runStage{id = "last", cmd = "test -f go && echo last >> ran.txt"}
        return {n = \(stageCount)}
        """

    @Test func killNineOfAResumeWithBufferedReplaysThenResumeAgain() throws {
        let d = Harness.tempDir("resume-kill9")
        Harness.write(d + "/r.lua", Self.manyStages)
        let first = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(first.code == 1 && first.stderr.contains("stage 'last' failed"), "stderr: \(first.stderr.suffix(500))")
        let run = try #require(Harness.latestRun(d))
        #expect(lines(d + "/ran.txt").count == Self.stageCount)
        let sizeBefore = (try FileManager.default.attributesOfItem(atPath: run + "/journal.jsonl")[.size] as? Int) ?? 0

        // The first resume: killed once at least one group of replays is in the journal and
        // the recipe has got past 100 more stage calls whose replays are still buffered.
        Harness.write(d + "/pace", "")
        let (p, _, _) = try Harness.start(["resume"], cwd: d)
        var replayedInFile = 0
        let groupWritten = Harness.waitFor(30) {
            let size = (try? FileManager.default.attributesOfItem(atPath: run + "/journal.jsonl")[.size] as? Int) ?? 0
            guard size > sizeBefore + 100_000 else { return false }
            replayedInFile = self.lenientEvents(run).filter { $0["replayed"] as? Bool == true }.count
            return replayedInFile > 0
        }
        #expect(groupWritten, "no group of replays was ever written")
        let pastMore = Harness.waitFor(30) { self.lines(d + "/progress.txt").count >= replayedInFile + 100 }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(pastMore && p.terminationReason == .uncaughtSignal, "the resume ended before the kill")

        // Where the kill landed: replays were written (a group) and more were lost with the
        // runner (the recipe had got past them; the journal does not have them).
        let afterKill = lenientEvents(run)
        let resumedAt = try #require(afterKill.lastIndex { $0["type"] as? String == "run_resumed" })
        let sinceResume = Array(afterKill[(resumedAt + 1)...])
        let written = sinceResume.filter { $0["type"] as? String == "stage_finished" && $0["replayed"] as? Bool == true }.count
        let gotPast = lines(d + "/progress.txt").count
        #expect(written > 0 && written < gotPast && gotPast < Self.stageCount,
                "the kill did not land while replays were buffered: \(written) replays written, \(gotPast) stage calls passed")
        #expect(!sinceResume.contains { $0["type"] as? String == "stage_started" }, "a replay ran a stage")
        #expect(lines(d + "/ran.txt").count == Self.stageCount, "a stage ran during the killed resume")
        // (status says `failed` here, the first run's ending, not `orphaned`: see
        // aResumeKilledByKillNineIsOrphaned below.)
        figure("guarantees: resume killed after \(written) replays written, \(gotPast) stage calls passed")

        // The second resume finishes the run and runs nothing that had passed.
        try FileManager.default.removeItem(atPath: d + "/pace")
        Harness.write(d + "/go", "")
        let again = try Harness.run(["resume"], cwd: d)
        #expect(again.code == 0, "stderr: \(again.stderr.suffix(800))")
        var counts: [String: Int] = [:]
        for l in lines(d + "/ran.txt") { counts[l, default: 0] += 1 }
        let expected = Set((1...Self.stageCount).map { "s\($0)" } + ["last"])
        #expect(Set(counts.keys) == expected, "ran.txt has \(counts.count) distinct ids")
        let twice = counts.filter { $0.value != 1 }.keys.sorted()
        #expect(twice.isEmpty, "ran more than once: \(twice.prefix(10)) (\(twice.count))")

        // Every line whole and valid, seq 1..n (Harness.journal), strictly increasing.
        let events = Harness.journal(run)
        let seqs = events.compactMap { $0["seq"] as? Int }
        #expect(seqs.count == events.count && zip(seqs, seqs.dropFirst()).allSatisfy { $0 < $1 })
        let resumes = Harness.events(events, type: "run_resumed")
        #expect(resumes.count == 2)
        if let second = resumes.last, let at = events.firstIndex(where: { $0["seq"] as? Int == second["seq"] as? Int }) {
            #expect(second["resumes_after"] as? Int == (second["seq"] as? Int ?? 0) - 1)
            #expect((second["corrupt_lines"] as? [Any] ?? []).isEmpty, "\(second)")
            let tail = Array(events[(at + 1)...])
            #expect(Harness.events(tail, type: "stage_started").compactMap { $0["id"] as? String } == ["last"])
            #expect(Harness.events(tail, type: "stage_finished").filter { $0["replayed"] as? Bool == true }.count == Self.stageCount)
        }

        // status agrees with final.json.
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "succeeded" && f["exit_code"] as? Int == 0)
        let stages = f["stages"] as? [[String: Any]] ?? []
        #expect(stages.count == Self.stageCount + 1 && stages.allSatisfy { $0["status"] as? String == "passed" })
        let status = try #require(json(try Harness.run(["status", "--json"], cwd: d).stdout))
        #expect(status["state"] as? String == f["status"] as? String)
        #expect(status["exit_code"] as? Int == f["exit_code"] as? Int)
        #expect(status["reason"] is NSNull && f["reason"] is NSNull, "status \(status["reason"] ?? "-"), final \(f["reason"] ?? "-")")
        #expect(status["started_at"] as? String == f["started_at"] as? String)
        #expect(status["ended_at"] as? String == f["ended_at"] as? String)
        #expect(status["duration_ms"] as? Int == f["duration_ms"] as? Int)
        #expect(status["stages_finished"] as? Int == stages.count)
        #expect(Harness.processes(withEnv: "BATON_RUN_ID=\(runID(run))").isEmpty)
    }

    // MARK: 2. the run budget ends every kind of wait

    /// What the recipe is doing when its budget runs out: a fan-out of four long stages (each
    /// with a grandchild), pure Lua, baton.sleep. The baton.log before it proves it got there.
    static func budgetBody(_ shape: String, pcall: Bool) -> String {
        switch shape {
        case "fan-out":
            let item = "function(_, i) runStage{id = \"w\" .. i, cmd = \"(sleep 60; true) & sleep 60 & wait\"} end"
            let call = "parallel({1, 2, 3, 4}, \(item), {maxConcurrency = 4})"
            return "baton.log('fanning out')\n" + (pcall ? "while true do pcall(function() \(call) end) end\n" : call + "\n")
        case "busy Lua":
            return "baton.log('spinning')\n" + (pcall ? "while true do pcall(function() while true do end end) end\n" : "while true do end\n")
        default:
            return "baton.log('sleeping')\n" + (pcall ? "while true do pcall(baton.sleep, 60) end\n" : "baton.sleep(60)\n")
        }
    }

    /// `--budget 2s` with the recipe as is; `baton.budget("2s")` with the wait inside pcall,
    /// which must not catch the budget's ending either.
    @Test(arguments: ["fan-out", "busy Lua", "baton.sleep"], ["--budget", "baton.budget"])
    func theRunBudgetEndsTheRunWhateverItWaitsOn(_ shape: String, _ how: String) throws {
        let d = Harness.tempDir("budget-\(how)")
        let inRecipe = how == "baton.budget"
        Harness.write(d + "/r.lua", (inRecipe ? "baton.budget(\"2s\")\n" : "") + Self.budgetBody(shape, pcall: inRecipe)
                      + "baton.log('after')\nreturn {done = true}\n")
        let t0 = Date()
        let r = try Harness.run(inRecipe ? ["run", "r.lua"] : ["run", "--budget", "2s", "r.lua"], cwd: d, timeout: 60)
        let took = Date().timeIntervalSince(t0)
        figure("guarantees: budget 2s (\(how), \(shape)) ended the run after \(String(format: "%.2f", took)) s")
        #expect(r.code == 124 && !r.signaled, "\(shape) \(how): exit \(r.code), stderr: \(r.stderr.suffix(500))")
        #expect(took >= 1.9 && took < 5, "\(shape) \(how): took \(took) s")
        #expect(r.stderr.contains("run budget of 2s exceeded"), "stderr: \(r.stderr.suffix(500))")
        let run = try #require(Harness.latestRun(d))
        let f = try #require(Harness.final(run), "no final.json")
        #expect(f["status"] as? String == "cancelled" && f["exit_code"] as? Int == 124, "\(f)")
        #expect(f["reason"] as? String == "run budget of 2s exceeded", "\(f["reason"] ?? "-")")
        let events = Harness.journal(run)
        let logs = Harness.events(events, type: "log").compactMap { $0["message"] as? String }
        #expect(logs.contains(["fan-out": "fanning out", "busy Lua": "spinning"][shape] ?? "sleeping") && !logs.contains("after"), "\(logs)")
        let fin = Harness.events(events, type: "final").last
        #expect(fin?["status"] as? String == "cancelled" && fin?["exit_code"] as? Int == 124, "\(fin ?? [:])")
        if shape == "fan-out" {
            // All four were running when the budget ran out, and each was ended by it.
            #expect(Set(Harness.events(events, type: "stage_started").compactMap { $0["id"] as? String }) == ["w1", "w2", "w3", "w4"])
            let ends = Harness.events(events, type: "stage_finished")
            #expect(ends.count == 4 && ends.allSatisfy { $0["status"] as? String == "cancelled" }, "\(ends.map { $0["status"] ?? "-" })")
            #expect(Set((f["stages"] as? [[String: Any]] ?? []).compactMap { $0["status"] as? String }) == ["cancelled"])
        }
        let id = runID(run)
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "alive after the budget ended the run: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
    }

    // MARK: 3. nothing left behind by a stall or by :kill

    /// A stage whose shell leaves a grandchild (a subshell's `sleep`) and a child, then waits;
    /// after it the recipe waits for the file `go`, so the run is still live (its end-of-run
    /// sweep has not happened) when the test looks for survivors.
    static func stageThenWait(_ stage: String) -> String {
        """
        runStage{\(stage), allowFail = true}
        baton.log("after the stage")
        while not baton.fs.exists("go") do baton.sleep(0.05) end
        return {done = true}
        """
    }

    /// The stage's processes (shell, subshell, sleeps) all carry the run's id: wait for them.
    func awaitStageProcesses(_ id: String, atLeast n: Int = 3) -> [Int32] {
        var pids: [Int32] = []
        #expect(Harness.waitFor(20) { pids = Harness.processes(withEnv: "BATON_RUN_ID=\(id)"); return pids.count >= n },
                "the stage's processes never showed: \(pids)")
        return pids
    }

    /// With the run still live, nothing of the ended stage is alive.
    func expectNothingLeftWhileLive(_ run: String, _ before: [Int32], isLive: () -> Bool,
                                    sourceLocation: SourceLocation = #_sourceLocation) {
        let id = runID(run)
        let gone = Harness.waitFor(3) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty }
        let left = Harness.processes(withEnv: "BATON_RUN_ID=\(id)")
        let cmds = left.map { (Harness.read("/proc/\($0)/cmdline") ?? "").replacingOccurrences(of: "\u{0}", with: " ") }
        #expect(gone, "alive after the stage ended: \(left) \(cmds)", sourceLocation: sourceLocation)
        #expect(before.allSatisfy { kill($0, 0) != 0 || Harness.processes(withEnv: "BATON_RUN_ID=\(id)").contains($0) == false },
                "a process of the stage lives on", sourceLocation: sourceLocation)
        // The check above saw the stage's own ending, not the end-of-run sweep.
        #expect(isLive() && Harness.final(run) == nil, "the run ended before the check", sourceLocation: sourceLocation)
    }

    @Test func aStalledStageLeavesNoProcessBehind() throws {
        let d = Harness.tempDir("stall-gc")
        Harness.write(d + "/r.lua", Self.stageThenWait(
            "id = \"quiet\", cmd = \"echo started; (sleep 60; true) & sleep 60 & wait\", noOutputTimeout = 1, grace = 0.3"))
        let t0 = Date()
        let (p, _, err) = try Harness.start(["run", "r.lua"], cwd: d)
        let stderr = Harness.Output(err)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(10) { Harness.latestRun(d) != nil })
        let run = try #require(Harness.latestRun(d))
        let before = awaitStageProcesses(runID(run))
        // Ended as stalled...
        #expect(Harness.waitFor(10) { Harness.events(self.lenientEvents(run), type: "log").contains { $0["message"] as? String == "after the stage" } },
                "the stall was never ended: \(stderr.text)")
        let events = Harness.journal(run)
        let end = Harness.events(events, type: "stage_finished").last { $0["id"] as? String == "quiet" }
        #expect(end?["failure_class"] as? String == "stalled" && end?["status"] as? String == "failed"
                && (end?["message"] as? String)?.contains("no output") == true, "\(end ?? [:])")
        figure("guarantees: stall ended after \(String(format: "%.2f", Date().timeIntervalSince(t0))) s")
        // ...with its child and grandchild.
        expectNothingLeftWhileLive(run, before) { p.isRunning }
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "stderr: \(stderr.all())")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    @Test func killThroughAttachLeavesNoProcessBehind() throws {
        let (d, run) = try AttachTests.detached("attach-kill-gc", Self.stageThenWait(
            "id = \"hung\", cmd = \"echo try; (sleep 300; true) & sleep 300 & wait\", grace = 1")) {
            AttachTests.running($0, "hung", child: "sleep 300", lastLine: "try")
        }
        defer { AttachTests.finish(d, run) }
        let before = awaitStageProcesses(runID(run))
        let k = try AttachTests.attach(d, ":kill hung\n")
        #expect(k.code == 0 && k.stdout.contains("ending attempt 1 of stage 'hung'") && k.stdout.contains("it has no retries"), "\(k)")
        #expect(Harness.waitFor(10) { Harness.events(self.lenientEvents(run), type: "log").contains { $0["message"] as? String == "after the stage" } },
                "the recipe never went on: \(Harness.read(run + "/run.out") ?? "")")
        let end = Harness.events(Harness.journal(run), type: "stage_finished").last { $0["id"] as? String == "hung" }
        #expect(end?["status"] as? String == "failed" && end?["signal"] as? Int == 15 && end?["final"] as? Bool == true, "\(end ?? [:])")
        #expect(AttachTests.controls(run).contains { $0["op"] as? String == "kill" && $0["target"] as? String == "hung" && $0["ok"] as? Bool == true })
        expectNothingLeftWhileLive(run, before) {
            json((try? Harness.run(["status", "--json"], cwd: d))?.stdout ?? "")?["state"] as? String == "running"
        }
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(20) { Harness.final(run)?["status"] as? String == "succeeded" }, "\(Harness.read(run + "/run.out") ?? "")")
    }

    /// A run whose resume died by kill -9 is orphaned (resumable, kept by prune), whatever
    /// final.json its earlier ending left.
    @Test
    func aResumeKilledByKillNineIsOrphaned() throws {
        let d = Harness.tempDir("resume-orphan")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "echo a >> ran.txt"}
            runStage{id = "b", cmd = "test -f started || { touch started; exit 1; }; sleep 300"}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 1)
        let run = try #require(Harness.latestRun(d))
        let (p, _, _) = try Harness.start(["resume"], cwd: d)
        #expect(Harness.waitFor(20) { Harness.processes(matching: "sleep 300").contains { pid in
            (Harness.read("/proc/\(pid)/environ") ?? "").contains("BATON_RUN_ID=\(self.runID(run))") } })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.waitFor(5) { Harness.processes(withEnv: "BATON_RUN_ID=\(self.runID(run))").isEmpty })
        let st = try #require(json(try Harness.run(["status", "--json"], cwd: d).stdout))
        #expect(st["state"] as? String == "orphaned", "\(st)")
        let pr = try Harness.run(["prune", "--keep", "0"], cwd: d)
        #expect(FileManager.default.fileExists(atPath: run), "prune deleted a run whose resume died: \(pr.stdout)")
    }
}
