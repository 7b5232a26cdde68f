import Foundation
import Testing

/// Run management like git and supervisorctl (issue 12 part 5): the runs directory found
/// from below, runs -n/--state, prune, wait, log --follow's outcome, nothing left behind by
/// a recipe that does not load or only prints its usage.
@Suite struct RunManagementTests {
    func json(_ s: String) -> Any? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) }

    /// Waits for `go` in the working directory (having printed `announce`, if given), then
    /// ends with `code` (0: success).
    static func gated(code: Int, announce: String? = nil) -> String {
        """
        runStage{id = "slow", cmd = "\(announce.map { "echo \($0); " } ?? "")while [ ! -f go ]; do sleep 0.05; done"}
        \(code == 0 ? "return {ok = true}" : "baton.fail('chosen', {code = \(code)})")
        """
    }

    /// Starts `recipe` detached; returns its id once its stage runs.
    func detached(_ d: String, _ recipe: String, id: String) throws -> String {
        let r = try Harness.run(["run", "--detach", "--run-id", id, recipe], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.waitFor(30) { Harness.read(d + "/.baton/runs/\(id)/journal.jsonl")?.contains("stage_started") == true })
        return id
    }

    /// A run whose runner died: a finished run with its final event and final.json taken away.
    func orphan(_ d: String, id: String) throws {
        Harness.write(d + "/ok.lua", "runStage{id = 'a', cmd = 'true'}")
        #expect(try Harness.run(["run", "--run-id", id, "ok.lua"], cwd: d).code == 0)
        let dir = d + "/.baton/runs/" + id
        try FileManager.default.removeItem(atPath: dir + "/final.json")
        let lines = (Harness.read(dir + "/journal.jsonl") ?? "").split(separator: "\n").filter { !$0.contains("\"type\":\"final\"") }
        Harness.write(dir + "/journal.jsonl", lines.joined(separator: "\n") + "\n")
    }

    @Test func runsDirectoryIsFoundFromBelow() throws {
        let d = Harness.tempDir("walkup")
        Harness.write(d + "/r.lua", "return {ok = true}")
        #expect(try Harness.run(["run", "--run-id", "top", "r.lua"], cwd: d).code == 0)
        let sub = d + "/sub/deeper"
        try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        let st = try Harness.run(["status", "--json"], cwd: sub)
        #expect((json(st.stdout) as? [String: Any])?["run"] as? String == "top", "stdout: \(st.stdout) stderr: \(st.stderr)")
        // A run started below goes to the same directory.
        Harness.write(sub + "/s.lua", "return {}")
        #expect(try Harness.run(["run", "--run-id", "below", "s.lua"], cwd: sub).code == 0)
        #expect(FileManager.default.fileExists(atPath: d + "/.baton/runs/below/final.json"))
        #expect(!FileManager.default.fileExists(atPath: sub + "/.baton"))
        // --runs-dir and BATON_RUNS_DIR still win.
        #expect(try Harness.run(["status"], cwd: sub, env: ["BATON_RUNS_DIR": d + "/none"]).code == 3)
        #expect(try Harness.run(["status", "--runs-dir", d + "/none"], cwd: sub).code == 3)
    }

    @Test func runsLimitAndState() throws {
        let d = Harness.tempDir("runs-n")
        Harness.write(d + "/ok.lua", "return {}")
        Harness.write(d + "/bad.lua", "baton.fail('no', {code = 6})")
        for (id, r) in [("r1", "ok.lua"), ("r2", "bad.lua"), ("r3", "ok.lua")] {
            _ = try Harness.run(["run", "--run-id", id, r], cwd: d)
        }
        let two = json(try Harness.run(["runs", "-n", "2", "--json"], cwd: d).stdout) as? [[String: Any]]
        #expect(two?.map { $0["run"] as? String } == ["r3", "r2"])
        let failed = json(try Harness.run(["runs", "--state", "failed", "--json"], cwd: d).stdout) as? [[String: Any]]
        #expect(failed?.map { $0["run"] as? String } == ["r2"])
        let text = try Harness.run(["runs", "--state", "succeeded", "-n", "1"], cwd: d)
        #expect(text.stdout.contains("r3") && !text.stdout.contains("r1") && !text.stdout.contains("r2"))
        let bogus = try Harness.run(["runs", "--state", "sucess"], cwd: d)
        #expect(bogus.code == 3 && bogus.stderr.contains("succeeded"), "\(bogus.stderr)")
    }

    @Test func pruneKeepsLiveAndOrphanedRuns() throws {
        let d = Harness.tempDir("prune")
        Harness.write(d + "/ok.lua", "return {}")
        for id in ["old1", "old2", "old3"] { #expect(try Harness.run(["run", "--run-id", id, "ok.lua"], cwd: d).code == 0) }
        try orphan(d, id: "dead")
        Harness.write(d + "/gated.lua", Self.gated(code: 0))
        let live = try detached(d, "gated.lua", id: "live")
        defer { Harness.write(d + "/go", "") }
        let runs = d + "/.baton/runs/"

        #expect(try Harness.run(["prune"], cwd: d).code == 3, "prune needs a limit")
        #expect(try Harness.run(["prune", "--older-than", "7x"], cwd: d).code == 3)
        let young = try Harness.run(["prune", "--older-than", "7d"], cwd: d)
        #expect(young.code == 0 && young.stdout.contains("nothing to prune"), "\(young.stdout)")
        let dry = try Harness.run(["prune", "--keep", "0", "--dry-run"], cwd: d)
        #expect(dry.stdout.contains("would prune old1") && FileManager.default.fileExists(atPath: runs + "old1"))

        let kept = try Harness.run(["prune", "--keep", "1", "--json"], cwd: d)
        let o = try #require(json(kept.stdout) as? [String: Any], "\(kept.stdout) \(kept.stderr)")
        let pruned = Set((o["pruned"] as? [[String: Any]] ?? []).compactMap { $0["run"] as? String })
        let skipped = Set((o["skipped"] as? [[String: Any]] ?? []).compactMap { $0["run"] as? String })
        // The newest is `live` (kept by --keep 1); the others ended, but for `dead`.
        #expect(pruned == ["old1", "old2", "old3"] && skipped == ["dead"], "\(o)")
        #expect(!FileManager.default.fileExists(atPath: runs + "old1") && FileManager.default.fileExists(atPath: runs + "dead"))

        let forced = try Harness.run(["prune", "--keep", "0", "--force"], cwd: d)
        #expect(forced.stdout.contains("pruned dead") && forced.stdout.contains("kept \(live): live"), "\(forced.stdout)")
        #expect(FileManager.default.fileExists(atPath: runs + live + "/journal.jsonl"))
        #expect(!FileManager.default.fileExists(atPath: runs + "dead"))
    }

    @Test func waitExitsWithTheRunsExitCode() throws {
        let d = Harness.tempDir("wait")
        Harness.write(d + "/gated.lua", Self.gated(code: 7))
        let id = try detached(d, "gated.lua", id: "w1")
        let (p, out, _) = try Harness.start(["wait", id], cwd: d)
        usleep(500_000)
        #expect(p.isRunning, "wait returned while the run is live")
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(30) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 7)
        #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("run w1 failed (exit 7)"))
        // Ended already: at once, with its code; orphaned: 1.
        let again = try Harness.run(["wait", "--json"], cwd: d)
        #expect(again.code == 7 && (json(again.stdout) as? [String: Any])?["exit_code"] as? Int == 7, "\(again.stdout)")
        try orphan(d, id: "gone")
        let o = try Harness.run(["wait", "gone"], cwd: d)
        #expect(o.code == 1 && o.stdout.contains("orphaned"), "\(o.stdout)")
        #expect(try Harness.run(["wait", "nosuch"], cwd: d).code == 3)
    }

    /// Starts `baton ARGS` following a gated run, waits until it has printed `shown` (so it
    /// follows live) and is still running, releases the run (`go`), and returns the
    /// follower's exit status and everything it printed.
    func followThenRelease(_ d: String, _ args: [String], shown: String) throws -> (status: Int32, text: String) {
        let (p, out, _) = try Harness.start(args, cwd: d)
        let followed = Harness.Output(out)
        #expect(Harness.waitFor(20) { followed.text.contains(shown) }, "the follower printed: \(followed.text)")
        #expect(p.isRunning, "the follower ended before the run did: \(followed.text)")
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(30) { !p.isRunning })
        p.waitUntilExit()
        return (p.terminationStatus, followed.all())
    }

    @Test func logFollowEndsWithTheOutcome() throws {
        let d = Harness.tempDir("follow")
        Harness.write(d + "/gated.lua", Self.gated(code: 5))
        let id = try detached(d, "gated.lua", id: "f1")
        // The run is released only once the follower follows it live: it has printed the
        // stage's start (and the run cannot end before `go`).
        let (status, text) = try followThenRelease(d, ["log", "--follow", id], shown: "stage_started slow")
        #expect(status == 5)
        #expect(text.split(separator: "\n").last?.hasPrefix("run f1 failed (exit 5)") == true, "\(text)")
        let j = try Harness.run(["log", "-f", "--json", id], cwd: d)
        let last = j.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(j.code == 5 && (json(last) as? [String: Any])?["state"] as? String == "failed", "\(last)")
        // A stage's output, followed: the same outcome at the end.
        try FileManager.default.removeItem(atPath: d + "/go")
        Harness.write(d + "/six.lua", Self.gated(code: 6, announce: "waiting for go"))
        let id2 = try detached(d, "six.lua", id: "f2")
        // Released only once the follower has printed the stage's first line.
        let (qstatus, qtext) = try followThenRelease(d, ["log", "--stage", "slow", "--follow", id2], shown: "waiting for go\n")
        #expect(qstatus == 6 && qtext.hasSuffix("run f2 failed (exit 6): six.lua:2: chosen\n"), "\(qtext)")
        try orphan(d, id: "gone")
        let o = try Harness.run(["log", "--follow", "gone"], cwd: d)
        #expect(o.code == 1 && o.stdout.split(separator: "\n").last?.contains("orphaned") == true, "\(o.stdout)")
    }

    @Test func usageOnlyLeavesNoRunDirectory() throws {
        let d = Harness.tempDir("usage-only")
        let recipe = Harness.packageRoot.appendingPathComponent("recipes/gap09.lua").path
        for word in ["help", "--help"] {
            let r = try Harness.run(["run", recipe, word], cwd: d)
            #expect(r.code == 0 && r.stdout.contains("usage:"), "\(r.stderr)")
        }
        #expect(Harness.runDirs(d).isEmpty)
        Harness.write(d + "/r.lua", "local x = = 1")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 3)
        #expect(Harness.runDirs(d).isEmpty)
    }
}
