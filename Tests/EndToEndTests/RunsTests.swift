import Foundation
import Testing

/// Runs you can leave, find, inspect, cancel and resume (spec sections 1, 2, 4).
@Suite struct RunsTests {
    /// A recipe whose stages append their id to ran.txt; `slow` waits for a file that
    /// the test creates (or for ever), so the test decides when the run moves on.
    static let recipe = """
        runStage{id = "a", cmd = "echo a >> ran.txt"}
        runStage{id = "b", cmd = "echo b >> ran.txt"}
        runStage{id = "slow", cmd = "echo slow-start >> ran.txt; while [ ! -f go ]; do sleep 0.05; done; echo slow >> ran.txt"}
        runStage{id = "c", cmd = "echo c >> ran.txt"}
        return {done = true}
        """

    func ran(_ d: String) -> [String] {
        (Harness.read(d + "/ran.txt") ?? "").split(separator: "\n").map(String.init)
    }

    func json(_ s: String) -> [String: Any]? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] }

    /// Starts the recipe detached and waits until `slow` is running.
    func startDetached(_ d: String) throws -> (id: String, runDir: String, pid: Int32) {
        Harness.write(d + "/r.lua", RunsTests.recipe)
        let t0 = Date()
        let r = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Date().timeIntervalSince(t0) < 5, "--detach must return at once")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let id = lines.first ?? ""
        let runDir = lines.count > 1 ? lines[1] : ""
        #expect(runDir.hasSuffix(id) && FileManager.default.fileExists(atPath: runDir))
        #expect(Harness.waitFor(30) { self.ran(d).contains("slow-start") })
        let pid = Int32(Harness.read(runDir + "/run.pid")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        #expect(pid > 0)
        return (id, runDir, pid)
    }

    func killAndWait(_ pid: Int32) {
        kill(pid, SIGKILL)
        Harness.waitFor(10) { kill(pid, 0) != 0 }
    }

    @Test func detachStatusOfALiveAndFinishedRun() throws {
        let d = Harness.tempDir("detach")
        let (id, runDir, pid) = try startDetached(d)
        let live = try Harness.run(["status", "--json"], cwd: d)
        let s = try #require(json(live.stdout))
        #expect(s["state"] as? String == "running")
        #expect(s["runner_pid"] as? Int == Int(pid))
        #expect((s["current"] as? [String: Any])?["id"] as? String == "slow")
        let human = try Harness.run(["status", String(id.prefix(12))], cwd: d)
        #expect(human.stdout.contains("running") && human.stdout.contains("stage slow"), "\(human.stdout)")
        let runs = try Harness.run(["runs"], cwd: d)
        #expect(runs.stdout.contains(id) && runs.stdout.contains("running"))
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(30) { Harness.final(runDir)?["status"] as? String == "succeeded" })
        #expect(Harness.waitFor(10) { kill(pid, 0) != 0 })
        let done = try #require(json(try Harness.run(["status", "--json", "latest"], cwd: d).stdout))
        #expect(done["state"] as? String == "succeeded" && done["exit_code"] as? Int == 0)
        #expect(ran(d) == ["a", "b", "slow-start", "slow", "c"])
        #expect(FileManager.default.fileExists(atPath: runDir + "/run.out"))
        let list = try JSONSerialization.jsonObject(with: Data(try Harness.run(["runs", "--json"], cwd: d).stdout.utf8)) as? [[String: Any]]
        #expect(list?.first?["run"] as? String == id)
    }

    @Test func orphanedRunIsReportedAndResumedWithoutRedoingWhatPassed() throws {
        let d = Harness.tempDir("orphan")
        let (id, runDir, pid) = try startDetached(d)
        killAndWait(pid)
        let s = try #require(json(try Harness.run(["status", "--json"], cwd: d).stdout))
        #expect(s["state"] as? String == "orphaned")
        #expect(!FileManager.default.fileExists(atPath: runDir + "/final.json"))
        let human = try Harness.run(["status"], cwd: d)
        #expect(human.stdout.contains("ORPHANED") && human.stdout.contains("baton resume"))
        Harness.write(d + "/go", "")
        let r = try Harness.run(["resume", id], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(ran(d) == ["a", "b", "slow-start", "slow-start", "slow", "c"], "a and b must not run again: \(ran(d))")
        let events = Harness.journal(runDir)
        #expect(Harness.events(events, type: "run_resumed").count == 1)
        let replayed = Harness.events(events, type: "stage_finished").filter { $0["replayed"] as? Bool == true }.compactMap { $0["id"] as? String }
        #expect(replayed == ["a", "b"])
        #expect(Harness.final(runDir)?["status"] as? String == "succeeded")
        #expect(Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty)
        // A finished run may be resumed again: everything replays.
        let again = try Harness.run(["resume", id], cwd: d)
        #expect(again.code == 0)
        #expect(ran(d).count == 6, "a resume of a finished run ran something")
    }

    @Test func cancelALiveRun() throws {
        let d = Harness.tempDir("cancel-live")
        let (id, runDir, pid) = try startDetached(d)
        let r = try Harness.run(["cancel", id], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(kill(pid, 0) != 0 || Harness.waitFor(10) { kill(pid, 0) != 0 })
        let f = try #require(Harness.final(runDir))
        #expect(f["status"] as? String == "cancelled")
        #expect(f["exit_code"] as? Int == 143)
        #expect(Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty, "a stage outlived the cancel")
        let status = try #require(json(try Harness.run(["status", "--json"], cwd: d).stdout))
        #expect(status["state"] as? String == "cancelled")
    }

    @Test func cancelAnOrphanedRunEndsWhatItLeft() throws {
        let d = Harness.tempDir("cancel-orphan")
        let (id, runDir, pid) = try startDetached(d)
        killAndWait(pid)
        let r = try Harness.run(["cancel"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty)
        let f = try #require(Harness.final(runDir))
        #expect(f["status"] as? String == "cancelled")
        let events = Harness.journal(runDir)
        #expect(events.last?["type"] as? String == "final")
    }

    @Test func resumeAfterAnEditRunsFromTheChangedStage() throws {
        let d = Harness.tempDir("edit")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo a >> ran.txt'}\nrunStage{id = 'b', cmd = 'echo b >> ran.txt'}\nrunStage{id = 'c', cmd = 'echo c >> ran.txt'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let runDir = try #require(Harness.latestRun(d))
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo a >> ran.txt'}\nrunStage{id = 'b', cmd = 'echo B >> ran.txt'}\nrunStage{id = 'c', cmd = 'echo c >> ran.txt'}\n")
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(ran(d) == ["a", "b", "c", "B", "c"], "\(ran(d))")
        let events = Harness.journal(runDir)
        let shas = Set((Harness.events(events, type: "run_started") + Harness.events(events, type: "run_resumed")).compactMap { $0["recipe_sha256"] as? String })
        #expect(shas.count == 2, "the edited recipe's sha256 is journaled")
    }

    @Test func resumeCutsATornTail() throws {
        let d = Harness.tempDir("torn")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo a >> ran.txt'}\nrunStage{id = 'b', cmd = 'echo b >> ran.txt'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let runDir = try #require(Harness.latestRun(d))
        // Simulate a crash mid-write: no final, a half line at the end.
        try FileManager.default.removeItem(atPath: runDir + "/final.json")
        let h = try #require(FileHandle(forWritingAtPath: runDir + "/journal.jsonl"))
        h.seekToEndOfFile()
        h.write(Data("{\"v\":1,\"seq\":99,\"type\":\"stage_sta".utf8))
        try h.close()
        let st = try #require(json(try Harness.run(["status", "--json"], cwd: d).stdout))
        #expect(st["state"] as? String == "orphaned")
        #expect((st["problems"] as? [String])?.contains { $0.contains("torn") } == true)
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let events = Harness.journal(runDir)   // asserts every line is valid and seq is 1..n
        #expect(Harness.events(events, type: "run_resumed").first?["torn_tail_truncated"] as? Bool == true)
        #expect(ran(d) == ["a", "b"])
    }

    @Test func twoSimultaneousResumesOneWins() throws {
        let d = Harness.tempDir("race")
        let (id, runDir, pid) = try startDetached(d)
        killAndWait(pid)
        let (p1, o1, e1) = try Harness.start(["resume", id], cwd: d)
        let (p2, o2, e2) = try Harness.start(["resume", id], cwd: d)
        // One of them holds the lock and waits in `slow`; the other refuses at once.
        var loser: (Process, Pipe)? = nil
        #expect(Harness.waitFor(30) {
            if !p1.isRunning { loser = (p1, e1) } else if !p2.isRunning { loser = (p2, e2) }
            return loser != nil
        })
        let (lp, lerr) = try #require(loser)
        lp.waitUntilExit()
        #expect(lp.terminationStatus == 3)
        let msg = String(decoding: lerr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(msg.contains("live") && msg.contains("pid"), "refusal says live and by which pid: \(msg)")
        Harness.write(d + "/go", "")
        let winner = lp === p1 ? p2 : p1
        #expect(Harness.waitFor(30) { !winner.isRunning })
        #expect(winner.terminationStatus == 0)
        _ = (o1, o2)
        #expect(Harness.events(Harness.journal(runDir), type: "run_resumed").count == 1)
        #expect(ran(d).filter { $0 == "c" }.count == 1)
    }

    @Test func resumeRefusesALiveRun() throws {
        let d = Harness.tempDir("live-resume")
        let (id, runDir, pid) = try startDetached(d)
        let r = try Harness.run(["resume", id], cwd: d)
        #expect(r.code == 3)
        #expect(r.stderr.contains("live") && r.stderr.contains("\(pid)"), "\(r.stderr)")
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(30) { Harness.final(runDir) != nil })
    }

    @Test func logAndItsForms() throws {
        let d = Harness.tempDir("log")
        Harness.write(d + "/r.lua", "runStage{id = 'hello', cmd = 'echo out-text; echo err-text >&2'}\nbaton.log('note', {k = 1})\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let log = try Harness.run(["log"], cwd: d)
        #expect(log.stdout.contains("stage_started hello") && log.stdout.contains("stage_finished hello passed") && log.stdout.contains("note"))
        let lines = try Harness.run(["log", "--json"], cwd: d).stdout.split(separator: "\n")
        #expect(lines.allSatisfy { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) != nil })
        #expect(lines.count >= 4)
        let stage = try Harness.run(["log", "--stage", "hello"], cwd: d)
        #expect(stage.stdout.contains("out-text") && stage.stdout.contains("err-text"))
        let missing = try Harness.run(["log", "--stage", "nope"], cwd: d)
        #expect(missing.code == 3)
        #expect(try Harness.run(["status", "no-such-run"], cwd: d).code == 3)
    }

    @Test func logFollowEndsWithTheRun() throws {
        let d = Harness.tempDir("follow")
        let (_, _, _) = try startDetached(d)
        let (p, out, _) = try Harness.start(["log", "--follow"], cwd: d)
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(30) { !p.isRunning }, "log --follow must stop when the run ends")
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("stage_finished c passed") && text.contains("final succeeded"))
    }

    @Test func checkLoadsWithoutRunning() throws {
        let d = Harness.tempDir("check")
        Harness.write(d + "/ok.lua", "local m = require('kit.args')\nrunStage{id = 'x', cmd = {'touch', 'ran'}}\n")
        Harness.write(d + "/syntax.lua", "local a = 1\nlocal = 2\n")
        Harness.write(d + "/req.lua", "local m = require('no.such.module')\n")
        let ok = try Harness.run(["check", "ok.lua"], cwd: d)
        #expect(ok.code == 0 && ok.stdout.contains("ok.lua: ok"), "stderr: \(ok.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/ran"), "check ran the recipe")
        #expect(Harness.runDirs(d).isEmpty, "check created a run")
        let syntax = try Harness.run(["check", "syntax.lua"], cwd: d)
        #expect(syntax.code == 3 && syntax.stderr.contains("syntax.lua:2:"), "\(syntax.stderr)")
        let req = try Harness.run(["check", "req.lua"], cwd: d)
        #expect(req.code == 3 && req.stderr.contains("no.such.module"), "\(req.stderr)")
        let json = try Harness.run(["check", "--json", "syntax.lua"], cwd: d)
        let doc = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(doc?["ok"] as? Bool == false && (doc?["errors"] as? [String])?.count == 1)
        #expect(try Harness.run(["check", "missing.lua"], cwd: d).code == 3)
    }

    @Test func heartbeatsWhileAStageRuns() throws {
        let d = Harness.tempDir("heartbeat")
        Harness.write(d + "/r.lua", "runStage{id = 'slow', cmd = {'sleep', '0.6'}}\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_HEARTBEAT_SEC": "0.1"])
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let beats = Harness.events(Harness.journal(Harness.latestRun(d) ?? ""), type: "heartbeat")
        #expect(beats.count >= 3, "\(beats.count) heartbeats in 0.6 s at 0.1 s")
        #expect(beats.allSatisfy { $0["waiting_on"] as? String == "stage" && $0["id"] as? String == "slow" })
        let st = try Harness.run(["status"], cwd: d)
        #expect(st.code == 0)
    }
}
