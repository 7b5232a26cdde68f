import Foundation
import Testing

/// Issue 13: fan-out with limits, pools, stall detection, run budgets, nothing left after kill -9.
@Suite struct ConcurrencyTests {
    func json(_ s: String) -> [String: Any]? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] }

    func latest(_ d: String) throws -> String { try #require(Harness.latestRun(d)) }

    func result(_ d: String) throws -> [String: Any] {
        let f = try #require(Harness.final(try latest(d)))
        return try #require(f["result"] as? [String: Any])
    }

    func started(_ events: [[String: Any]]) -> [String] {
        Harness.events(events, type: "stage_started").compactMap { $0["id"] as? String }
    }

    func finished(_ events: [[String: Any]], _ id: String) -> [String: Any]? {
        Harness.events(events, type: "stage_finished").last { $0["id"] as? String == id }
    }

    /// Item 2 fails at once, item 1 is slow, items 3.. are pending (maxConcurrency 2).
    static func failingFanOut(_ policy: String) -> String {
        """
        local res, out = parallel({"slow", "bad", "c", "d"}, function(x, i)
          if x == "slow" then runStage{id = "slow", cmd = "sleep 1.5; echo done > slow.done"} end
          if x == "bad" then runStage{id = "bad", cmd = "exit 3"} end
          if x == "c" or x == "d" then runStage{id = x, cmd = "true"} end
          return x .. "!"
        end, {maxConcurrency = 2, onFailure = "\(policy)"})
        local oks = {}
        for i = 1, 4 do oks[i] = out[i].ok end
        return {res = res, oks = oks}
        """
    }

    @Test func onFailureCancelEndsRunningItemsAndStartsNoMore() throws {
        let d = Harness.tempDir("par-cancel")
        Harness.write(d + "/r.lua", Self.failingFanOut("cancel"))
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("r.lua:1:") && r.stderr.contains("item 2") && r.stderr.contains("exit code 3"), "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/slow.done"), "the slow item was ended, not waited for")
        let run = try latest(d)
        let events = Harness.journal(run)
        #expect(finished(events, "slow")?["status"] as? String == "cancelled")
        #expect(!started(events).contains("c") && !started(events).contains("d"), "pending items never start")
        // Ended, not left running: nothing of the run is alive...
        let id = (run as NSString).lastPathComponent
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "alive after the run: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        // ...and slow.done never appears, up to well past the time the slow item, left
        // running, would have written it (1.5 s after it started).
        let slowStart = try #require(Harness.events(events, type: "stage_started").first { $0["id"] as? String == "slow" })
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let startedAt = try #require(fmt.date(from: slowStart["ts"] as? String ?? ""))
        let until = startedAt.addingTimeInterval(1.5 + 0.5).timeIntervalSinceNow
        #expect(!Harness.waitFor(max(0, until)) { FileManager.default.fileExists(atPath: d + "/slow.done") },
                "the slow item went on after the cancel and wrote slow.done")
    }

    @Test func onFailureDrainLetsRunningItemsFinish() throws {
        let d = Harness.tempDir("par-drain")
        Harness.write(d + "/r.lua", Self.failingFanOut("drain"))
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1, "stderr: \(r.stderr)")
        let events = Harness.journal(try latest(d))
        #expect(finished(events, "slow")?["status"] as? String == "passed")
        #expect(!started(events).contains("c") && !started(events).contains("d"))
    }

    @Test func onFailureContinueRunsEverythingAndReportsEachOutcome() throws {
        let d = Harness.tempDir("par-continue")
        Harness.write(d + "/r.lua", Self.failingFanOut("continue"))
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try result(d)
        #expect(result["oks"] as? [Bool] == [true, false, true, true])
        // Results in input order; the failed item has none.
        let res = try #require(result["res"] as? [String: Any])
        #expect(res["1"] as? String == "slow!" && res["3"] as? String == "c!" && res["4"] as? String == "d!" && res["2"] == nil)
    }

    @Test func resultsComeInInputOrderAndItemsRunAtOnce() throws {
        let d = Harness.tempDir("par-order")
        Harness.write(d + "/r.lua", """
            local t0 = baton.now()
            local res = parallel({0.6, 0.1, 0.3, 0.2}, function(s, i)
              return runStage{id = "s" .. i, cmd = "sleep " .. s .. "; echo " .. i}.stdout
            end, {maxConcurrency = 4})
            return {res = res, took = baton.now() - t0}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try result(d)
        #expect(result["res"] as? [String] == ["1\n", "2\n", "3\n", "4\n"])
        // All four ran at once: every start comes before the first end.
        let events = Harness.journal(try latest(d))
        let firstEnd = events.firstIndex { $0["type"] as? String == "stage_finished" } ?? 0
        #expect(Harness.events(Array(events[..<firstEnd]), type: "stage_started").count == 4)
    }

    /// baton.sleep inside an item lets the other items go on (it yields in Lua).
    @Test func sleepingItemsSleepTogether() throws {
        let d = Harness.tempDir("par-sleep")
        Harness.write(d + "/r.lua", """
            local t0 = baton.now()
            local spans = {}
            local res = parallel({1, 2, 3}, function(_, i)
              local a = baton.now()
              baton.sleep(0.6)
              spans[i] = {a, baton.now()}
              return runStage{id = "after" .. i, cmd = "echo " .. i}.stdout
            end, {maxConcurrency = 3})
            baton.sleep(0.05)
            return {res = res, spans = spans}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try result(d)
        #expect(result["res"] as? [String] == ["1\n", "2\n", "3\n"])
        // The three sleeps overlap: the last one began before the first one ended.
        let spans = try #require(result["spans"] as? [[Double]])
        #expect(spans.count == 3 && spans.map { $0[0] }.max()! < spans.map { $0[1] }.min()!, "spans: \(spans)")
    }

    @Test func aPoolOfOneNeverRunsTwoAtOnce() throws {
        let d = Harness.tempDir("pool")
        Harness.write(d + "/r.lua", """
            baton.pool("gpu", 1)
            parallel({1, 2, 3, 4}, function(_, i)
              runStage{id = "g" .. i, pool = "gpu", cmd = "echo start $(date +%s.%N) >> times; sleep 0.15; echo end $(date +%s.%N) >> times"}
            end, {maxConcurrency = 4})
            runStage{id = "outside", pool = "gpu", cmd = "echo start $(date +%s.%N) >> times; sleep 0.1; echo end $(date +%s.%N) >> times"}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let lines = (Harness.read(d + "/times") ?? "").split(separator: "\n").map { $0.split(separator: " ") }
        #expect(lines.count == 10)
        var running = 0, most = 0
        for l in lines.sorted(by: { Double($0[1])! < Double($1[1])! }) {
            running += l[0] == "start" ? 1 : -1
            most = max(most, running)
        }
        #expect(most == 1, "two stages of a pool of 1 overlapped")
        Harness.write(d + "/bad.lua", "runStage{id = 'x', cmd = 'true', pool = 'cpu'}\n")
        let bad = try Harness.run(["run", "bad.lua"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("bad.lua:1:") && bad.stderr.contains("baton.pool('cpu'"), "stderr: \(bad.stderr)")
    }

    @Test func twoItemsWithTheSameStageIdIsAnErrorNamingBoth() throws {
        let d = Harness.tempDir("par-sameid")
        Harness.write(d + "/r.lua", """
            parallel({1, 2}, function(_, i) runStage{id = "fetch", cmd = "true"} end, {maxConcurrency = 1})
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 3, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("items 1 and 2") && r.stderr.contains("'fetch'") && r.stderr.contains("r.lua:1:"), "stderr: \(r.stderr)")
        Harness.write(d + "/n.lua", "parallel({1}, function() parallel({2}, function() end) end)\n")
        let n = try Harness.run(["run", "n.lua"], cwd: d)
        #expect(n.code == 3 && n.stderr.contains("inside a parallel item"), "stderr: \(n.stderr)")
    }

    @Test func gateWatchAndPreflightWorkInsideItems() throws {
        let d = Harness.tempDir("par-prims")
        Harness.write(d + "/r.lua", """
            local res = parallel({1, 2}, function(_, i)
              preflight{name = "p" .. i, checks = {{cmd = {"true"}}}}
              local h = runStage{id = "job" .. i, cmd = "echo x > out" .. i, background = true}
              local w = watch{id = "w" .. i, handle = h, requireFiles = {"out" .. i}, readyTimeoutSec = 5}
              local g = gate{name = "g" .. i, check = function() return {approved = true} end}
              return w.state .. "/" .. tostring(g.approved)
            end)
            return {res = res}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result: [String: Any]? = try result(d)
        #expect(result?["res"] as? [String] == ["completed/true", "completed/true"])
    }

    /// A stage silent past noOutputTimeout is ended as `stalled` while a chatty sibling runs on.
    @Test func aStallIsEndedWhileAChattySiblingKeepsRunning() throws {
        let d = Harness.tempDir("stall")
        Harness.write(d + "/r.lua", """
            local res, out = parallel({"quiet", "chatty"}, function(x)
              local cmd = x == "quiet" and "sleep 30" or "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.2; done"
              return runStage{id = x, cmd = cmd, noOutputTimeout = 1, grace = 0.2}.status
            end, {onFailure = "continue"})
            return {res = res, quietOk = out[1].ok}
            """)
        let t0 = Date()
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_STALL_WARN_SEC": "0.5"])
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Date().timeIntervalSince(t0) < 10)
        let events = Harness.journal(try latest(d))
        let quiet = try #require(finished(events, "quiet"))
        #expect(quiet["failure_class"] as? String == "stalled" && (quiet["message"] as? String)?.contains("no output") == true)
        #expect(finished(events, "chatty")?["status"] as? String == "passed")
        let stalls = Harness.events(events, type: "stage_stalled")
        #expect(stalls.contains { $0["id"] as? String == "quiet" } && !stalls.contains { $0["id"] as? String == "chatty" })
        // Retryable when listed.
        Harness.write(d + "/retry.lua", "runStage{id = 'q', cmd = 'sleep 30', noOutputTimeout = 0.5, grace = 0.1, retries = 1, retryOn = {'stalled'}, backoff = {initial = 0.01}, allowFail = true}\n")
        #expect(try Harness.run(["run", "retry.lua"], cwd: d).code == 0)
        let attempts = Harness.events(Harness.journal(try latest(d)), type: "stage_finished")
        #expect(attempts.count == 2 && attempts.allSatisfy { $0["failure_class"] as? String == "stalled" })
    }

    @Test func aRunBudgetEndsTheRunLikeACancel() throws {
        let d = Harness.tempDir("budget")
        let marker = "budget-\(UUID().uuidString.prefix(8))"
        Harness.write(d + "/r.lua", "runStage{id = 'long', cmd = \"sleep 30; : \(marker)\", grace = 0.5}\n")
        let t0 = Date()
        let r = try Harness.run(["run", "--budget", "1s", "r.lua"], cwd: d)
        #expect(r.code == 124, "stderr: \(r.stderr)")
        #expect(Date().timeIntervalSince(t0) < 5)
        let f = try #require(Harness.final(try latest(d)))
        #expect(f["status"] as? String == "cancelled" && f["reason"] as? String == "run budget of 1s exceeded")
        // Nothing of the run lives on: not the stage's shell (it has the marker), nor its
        // `sleep 30` child (it has not; like every process of the run, it has the run's id).
        let id = (try latest(d) as NSString).lastPathComponent
        #expect(Harness.processes(matching: marker).isEmpty)
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "alive after the budget ended the run: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        Harness.write(d + "/in.lua", "baton.budget('0.5s')\nrunStage{id = 'long', cmd = 'sleep 30'}\n")
        let inRecipe = try Harness.run(["run", "in.lua"], cwd: d)
        #expect(inRecipe.code == 124 && inRecipe.stderr.contains("run budget of 0.5s exceeded"), "stderr: \(inRecipe.stderr)")
        let id2 = (try latest(d) as NSString).lastPathComponent
        #expect(id2 != id)
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id2)").isEmpty },
                "alive after the budget ended the run: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id2)"))")
    }

    /// kill -9 of the runner inside a fan-out: within 2 s nothing the run started is alive;
    /// status says orphaned; resume runs what did not pass and nothing that passed.
    @Test func killNineInsideAFanOutLeavesNothingAndResumeRedoesNothingThatPassed() throws {
        let d = Harness.tempDir("par-kill")
        Harness.write(d + "/r.lua", """
            parallel({1, 2, 3, 4, 5, 6}, function(_, i)
              runStage{id = "fast" .. i, cmd = "echo fast" .. i .. " >> ran.txt"}
              runStage{id = "slow" .. i, cmd = "sh -c 'while [ ! -f go ]; do sleep 0.05; done' & wait; echo slow" .. i .. " >> ran.txt"}
            end, {maxConcurrency = 3})
            return {done = true}
            """)
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        let runDir = String(start.stdout.split(separator: "\n")[1])
        let id = String(start.stdout.split(separator: "\n")[0])
        // Kill when three slow stages are running: their fast stages have then passed and been
        // journaled (a slow stage starts after its fast one's result). Waiting on ran.txt instead
        // raced: a fast stage that had written its line but not yet been reaped was run again.
        func slowStarted() -> Int {
            guard FileManager.default.fileExists(atPath: runDir + "/journal.jsonl") else { return 0 }
            return Harness.events(Harness.journal(runDir), type: "stage_started")
                .filter { ($0["id"] as? String)?.hasPrefix("slow") == true }.count
        }
        #expect(Harness.waitFor(20) { slowStarted() >= 3 })
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").count >= 3 })
        let pid = Int32(Harness.read(runDir + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!
        kill(pid, SIGKILL)
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "alive 2 s after kill -9: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        let st = try Harness.run(["status", "--json"], cwd: d)
        #expect(json(st.stdout)?["state"] as? String == "orphaned")
        let passedBefore = Set(Harness.events(Harness.journal(runDir), type: "stage_finished")
            .filter { $0["status"] as? String == "passed" }.compactMap { $0["id"] as? String })
        Harness.write(d + "/go", "")
        let again = try Harness.run(["resume"], cwd: d)
        #expect(again.code == 0, "stderr: \(again.stderr)")
        let events = Harness.journal(runDir)
        let resumedAt = events.firstIndex { $0["type"] as? String == "run_resumed" } ?? 0
        let rerun = Set(Harness.events(Array(events[resumedAt...]), type: "stage_started").compactMap { $0["id"] as? String })
        #expect(rerun.isDisjoint(with: passedBefore), "ran again after passing: \(rerun.intersection(passedBefore))")
        let ran = (Harness.read(d + "/ran.txt") ?? "").split(separator: "\n")
        for i in 1...6 { #expect(ran.filter { $0 == "fast\(i)" }.count == 1, "fast\(i) ran \(ran.filter { $0 == "fast\(i)" }.count) times") }
        #expect(Harness.final(runDir)?["status"] as? String == "succeeded")
    }

    /// status lists every running stage; a cancel stops them all within their grace.
    @Test func statusListsEveryRunningStageAndCancelStopsThemAll() throws {
        let d = Harness.tempDir("par-status")
        let marker = "parstatus-\(UUID().uuidString.prefix(8))"
        Harness.write(d + "/r.lua", """
            parallel({1, 2, 3}, function(_, i) runStage{id = "w" .. i, cmd = "sleep 30; : \(marker)", grace = 1} end, {maxConcurrency = 3})
            """)
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        let runDir = String(start.stdout.split(separator: "\n")[1])
        let id = String(start.stdout.split(separator: "\n")[0])
        #expect(Harness.waitFor(20) { Harness.processes(matching: marker).count == 3 })
        // Each stage's shell and its `sleep 30` child carry the run's id: the check after the
        // cancel sees both.
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").count == 6 },
                "\(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        let stOut = try Harness.run(["status", "--json"], cwd: d).stdout
        let st = try #require(json(stOut))
        let running = try #require(st["running"] as? [[String: Any]])
        #expect(Set(running.compactMap { $0["id"] as? String }) == ["w1", "w2", "w3"])
        #expect(st["runner_looks_hung"] as? Bool == false)
        let text = try Harness.run(["status"], cwd: d).stdout
        #expect(text.contains("running  3 stages"), "status: \(text)")
        let t0 = Date()
        #expect(try Harness.run(["cancel"], cwd: d).code == 0)
        #expect(Date().timeIntervalSince(t0) < 5)
        #expect(Harness.processes(matching: marker).isEmpty)
        #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "alive after the cancel: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        let ends = Harness.events(Harness.journal(runDir), type: "stage_finished")
        #expect(ends.count == 3 && ends.allSatisfy { $0["status"] as? String == "cancelled" })
        let seqs = Harness.journal(runDir).compactMap { $0["seq"] as? Int }
        #expect(seqs == Array(1...seqs.count))
    }
}
