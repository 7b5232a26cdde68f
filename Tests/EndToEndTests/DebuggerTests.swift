import Foundation
import Testing

/// Breakpoints in a live run, and the replay debugger (issue 26): the real binary, piped
/// stdin and a tmux terminal.
@Suite(.serialized) struct BreakpointTests {
    static let deploy = """
        local target = "staging"
        runStage{id = "build", cmd = "echo build"}
        runStage{id = "deploy", cmd = "echo deploying"}
        return {target = target}
        """

    /// Starts `recipe` detached with `flags` and waits until `status --json` says paused.
    static func paused(_ name: String, _ recipe: String, _ flags: [String]) throws -> (dir: String, run: String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let start = try Harness.run(["run", "--detach"] + flags + ["r.lua"], cwd: d)
        #expect(start.code == 0, "\(start.stderr)")
        let run = Harness.latestRun(d)!
        #expect(waitPaused(d), "never paused: \(Harness.read(run + "/run.out") ?? "")")
        return (d, run)
    }

    static func waitPaused(_ d: String) -> Bool {
        Harness.waitFor(20) {
            let s = (try? Harness.run(["status", "--json"], cwd: d))?.stdout ?? ""
            guard let j = try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] else { return false }
            return j["paused"] is [String: Any]
        }
    }

    static func result(_ run: String) -> [String: Any] {
        #expect(Harness.waitFor(20) { Harness.final(run)?["status"] as? String != "running" && Harness.final(run) != nil })
        return Harness.final(run)?["result"] as? [String: Any] ?? [:]
    }

    @Test func pausedBeforeDeployALocalChangedAtThePromptIsWhatTheRecipeReturns() throws {
        let (d, run) = try Self.paused("brk-deploy", Self.deploy, ["--break", "dep*"])
        let status = try Harness.run(["status"], cwd: d).stdout
        #expect(status.contains("PAUSED   before stage deploy (--break dep*) at r.lua:3 for "), "\(status)")
        let runs = try Harness.run(["runs"], cwd: d).stdout
        #expect(runs.contains(" PAUSED "), "\(runs)")
        let a = try Harness.run(["attach"], cwd: d, stdin: "return target, baton.paused.where\ntarget = \"prod\"\nbaton.paused.spec.cmd = \"echo deploying to prod > where.txt\"\n:continue\n")
        #expect(a.code == 0, "\(a.stderr)")
        #expect(a.stdout.contains("\"staging\"\t\"before stage deploy\""), "\(a.stdout)")
        #expect(Self.result(run)["target"] as? String == "prod")
        #expect(Harness.read(d + "/where.txt") == "deploying to prod\n")
        let events = Harness.journal(run)
        let p = Harness.events(events, type: "paused")
        #expect(p.count == 1 && p[0]["where"] as? String == "before stage deploy" && p[0]["stage"] as? String == "deploy"
                && p[0]["line"] as? String == "r.lua:3", "\(p)")
        let r = Harness.events(events, type: "resumed_from_pause")
        #expect(r.count == 1 && r[0]["how"] as? String == "continue", "\(r)")
        let ops = Harness.events(events, type: "control").compactMap { $0["op"] as? String }
        #expect(ops == ["eval", "eval", "eval", "continue"], "\(ops)")
        #expect(Harness.events(events, type: "stage_finished").compactMap { $0["id"] as? String } == ["build", "deploy"])
    }

    @Test func stepRunsOneStageAtATimeAndSkipSkipsTheStage() throws {
        let (d, run) = try Self.paused("brk-step", """
            local n = 0
            runStage{id = "a", cmd = "echo a"}
            n = n + 1
            runStage{id = "b", cmd = "echo b"}
            n = n + 1
            local d = runStage{id = "deploy", cmd = "echo deploy >> side.txt"}
            return {n = n, skipped = d.skipped == true, id = d.id}
            """, ["--break", "a", "--break", "deploy"])
        let a = try Harness.run(["attach"], cwd: d, stdin: ":step\nreturn n\n:step\nreturn n\n:where\n:continue\n")
        #expect(a.code == 0, "\(a.stderr)")
        #expect(a.stdout.contains("paused after runStage 'a' (:step) at r.lua:2\n0\n"), "\(a.stdout)")
        #expect(a.stdout.contains("paused after runStage 'b' (:step) at r.lua:4\n1\n"), "\(a.stdout)")
        #expect(a.stdout.contains("r.lua:4: in main chunk"), "\(a.stdout)")
        #expect(Self.waitPaused(d))
        let s = try Harness.run(["attach"], cwd: d, stdin: ":skip\n")
        #expect(s.code == 0 && s.stdout.contains("stage 'deploy' is skipped"), "\(s.stdout) \(s.stderr)")
        let result = Self.result(run)
        #expect(result["n"] as? Int == 2 && result["skipped"] as? Bool == true && result["id"] as? String == "deploy", "\(result)")
        #expect(!FileManager.default.fileExists(atPath: d + "/side.txt"))
        let events = Harness.journal(run)
        #expect(Harness.events(events, type: "resumed_from_pause").compactMap { $0["how"] as? String } == ["step", "step", "continue", "skip"])
        #expect(Harness.events(events, type: "not_run").contains { $0["via"] as? String == "runStage" && $0["target"] as? String == "deploy" })
        #expect(Harness.events(events, type: "control").compactMap { $0["op"] as? String }.contains("skip_stage"))
    }

    @Test func breakpointFunctionAndBreaksChangedAtThePrompt() throws {
        let (d, run) = try Self.paused("brk-fn", """
            local ready = false
            mode = "rehearsal"
            baton.breakpoint("check the inputs")
            runStage{id = "b1", cmd = "true"}
            runStage{id = "b2", cmd = "true"}
            return {ready = ready, mode = mode}
            """, [])
        let status = try Harness.run(["status"], cwd: d).stdout
        #expect(status.contains("PAUSED   baton.breakpoint (check the inputs) at r.lua:3"), "\(status)")
        let a = try Harness.run(["attach"], cwd: d, stdin: ":break b*\n:breaks\n:unbreak nope\nready = true\nmode = 'for real'\nreturn runStage{id = 'b0', cmd = 'echo typed'}.stdout\n:continue\n")
        #expect(a.stdout.contains("breakpoints: b*"), "\(a.stdout)")
        #expect(a.stdout.contains("\"typed\\n\""), "a stage typed at the prompt runs, never pauses: \(a.stdout)")
        #expect(a.stderr.contains("no breakpoint 'nope'"), "\(a.stderr)")
        #expect(Self.waitPaused(d))
        let b = try Harness.run(["attach"], cwd: d, stdin: ":unbreak b*\n:continue\n")
        #expect(b.code == 0, "\(b.stderr)")
        let result = Self.result(run)
        #expect(result["ready"] as? Bool == true && result["mode"] as? String == "for real", "\(result)")
        let p = Harness.events(Harness.journal(run), type: "paused").compactMap { $0["where"] as? String }
        #expect(p == ["baton.breakpoint", "before stage b1"], "\(p)")
    }

    @Test func anUpvalueChangedAtAPauseInsideAFunction() throws {
        let (d, run) = try Self.paused("brk-upvalue", """
            local count = 1
            local function go(step)
              baton.breakpoint("in go")
              return count + step
            end
            return {total = go(10)}
            """, [])
        let a = try Harness.run(["attach"], cwd: d, stdin: "return count, step\ncount = 5\n:where\n:continue\n")
        #expect(a.stdout.contains("1\t10"), "\(a.stdout)")
        #expect(a.stdout.contains("r.lua:3: in local 'go'") || a.stdout.contains("r.lua:3: in upvalue 'go'") || a.stdout.contains("r.lua:3: in function"), "\(a.stdout)")
        #expect(Self.result(run)["total"] as? Int == 15)
    }

    @Test func nobodyAttachedTheBreakTimeoutLetsItGoOnAndTheBudgetDoesNotCountThePause() throws {
        let d = Harness.tempDir("brk-timeout")
        Harness.write(d + "/r.lua", Self.deploy)
        let r = try Harness.run(["run", "--break", "deploy", "--break-timeout", "3s", "--budget", "2s", "r.lua"], cwd: d,
                                env: ["BATON_HEARTBEAT_SEC": "0.5"], stdin: "")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stderr.contains("paused before stage deploy (--break deploy) at r.lua:3"), "\(r.stderr)")
        #expect(r.stderr.contains("nobody attached within --break-timeout 3.0s: it goes on"), "\(r.stderr)")
        let run = Harness.latestRun(d)!
        let resumed = Harness.events(Harness.journal(run), type: "resumed_from_pause")
        #expect(resumed.count == 1 && resumed[0]["how"] as? String == "timeout" && (resumed[0]["paused_ms"] as? Int ?? 0) >= 2900, "\(resumed)")
        let beats = Harness.events(Harness.journal(run), type: "heartbeat").filter { $0["waiting_on"] as? String == "pause" }
        #expect(beats.count >= 3 && beats[0]["id"] as? String == "before stage deploy", "\(beats)")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    @Test func aParallelItemPausesAndCannotBeSkippedAndADryRunNeverPauses() throws {
        let recipe = """
            local out = parallel({"x", "y"}, function(c) return runStage{id = "t-" .. c, cmd = "echo " .. c}.stdout end)
            return {out = out}
            """
        let (d, run) = try Self.paused("brk-par", recipe, ["--break", "t-*"])
        let a = try Harness.run(["attach"], cwd: d, stdin: ":skip\n:continue\n")
        #expect(a.stderr.contains("stage 't-x' is a background stage (or a parallel item's): it cannot be skipped"), "\(a.stderr)")
        #expect(Self.waitPaused(d))
        _ = try Harness.run(["attach"], cwd: d, stdin: ":continue\n")
        #expect(Self.result(run)["out"] as? [String] == ["x\n", "y\n"])
        let dry = try Harness.run(["run", "--dry-run", "--break", "t-*", "r.lua"], cwd: d, stdin: "")
        #expect(dry.code == 0 && !dry.stderr.contains("paused"), "\(dry.stderr)")
    }

    @Test func aRunningStagesTimeoutKeepsTickingWhileTheRunIsPaused() throws {
        let d = Harness.tempDir("brk-ticking")
        Harness.write(d + "/r.lua", """
            local h = runStage{id = "bg", cmd = "sleep 30", timeout = 0.5, grace = 0.2, background = true, allowFail = true}
            baton.breakpoint("while bg runs")
            return {status = h:wait().status}
            """)
        let r = try Harness.run(["run", "--break-timeout", "2s", "r.lua"], cwd: d, stdin: "")
        #expect(r.code == 0, "\(r.stderr)")
        let run = Harness.latestRun(d)!
        #expect((Harness.final(run)?["result"] as? [String: Any])?["status"] as? String == "timed_out")
        let events = Harness.journal(run)
        let finished = events.first { $0["type"] as? String == "stage_finished" && $0["id"] as? String == "bg" }?["seq"] as? Int ?? 0
        let resumed = events.first { $0["type"] as? String == "resumed_from_pause" }?["seq"] as? Int ?? 0
        #expect(finished > 0 && finished < resumed, "the stage ended at #\(finished), the pause at #\(resumed)")
    }

    @Test func aPausedRunIsCancelled() throws {
        let (d, run) = try Self.paused("brk-cancel", Self.deploy, ["--break", "deploy"])
        let c = try Harness.run(["cancel"], cwd: d)
        #expect(c.code == 0, "\(c.stderr)")
        #expect(Harness.waitFor(10) { Harness.final(run)?["status"] as? String == "cancelled" })
        #expect(!Harness.events(Harness.journal(run), type: "stage_finished").contains { $0["id"] as? String == "deploy" })
    }

    @Test func onATerminalThePromptOpensByItself() throws {
        let d = Harness.tempDir("brk-tty")
        Harness.write(d + "/r.lua", Self.deploy)
        let pane = try Pane("brk-tty", cwd: d, args: ["run", "--break", "deploy", "r.lua"])
        defer { pane.kill() }
        #expect(pane.waitFor("PAUSED before stage deploy (--break deploy) at r.lua:3"), "\(pane.screen())")
        #expect(pane.waitFor("its locals and upvalues: target"), "\(pane.screen())")
        let id = URL(fileURLWithPath: Harness.latestRun(d)!).lastPathComponent
        #expect(pane.waitForPrompt("\(id)>"), "\(pane.screen())")
        pane.send("target = \"prod\"")
        pane.expectLine("return target", "\"prod\"")
        pane.keys("C-c")   // at the prompt: drops the line, the run goes on waiting
        pane.type(":continue")
        pane.keys("Enter")
        #expect(pane.waitFor("BATON-EXIT=0"), "\(pane.screen())")
        #expect(pane.screen().contains("ok   stage deploy passed"), "\(pane.screen())")
        let run = Harness.latestRun(d)!
        #expect((Harness.final(run)?["result"] as? [String: Any])?["target"] as? String == "prod")
    }
}

@Suite(.serialized) struct ReplayDebuggerTests {
    /// A recipe whose every stage appends to side.txt, and whose deploy fails.
    static let failing = """
        local env = "prod"
        local version = baton.sh("echo 1.2.3 >> side.txt; echo 1.2.3"):gsub("\\n", "")
        runStage{id = "build", cmd = "echo build >> side.txt"}
        local tries = 3
        runStage{id = "deploy", cmd = "echo deploy >> side.txt; echo 'connection refused' >&2; exit 7"}
        return {ok = true}
        """

    static func failedRun(_ name: String, _ recipe: String = failing) throws -> (dir: String, run: String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1, "\(r.stderr)")
        return (d, Harness.latestRun(d)!)
    }

    @Test func aFailedRunStopsAtTheFailingCallWithItsLocalsAndNothingRuns() throws {
        let (d, run) = try Self.failedRun("dbg-failed")
        let before = Harness.read(d + "/side.txt")
        #expect(before == "1.2.3\nbuild\ndeploy\n")
        let r = try Harness.run(["debug"], cwd: d, stdin: "return env, version, tries\n:where\n:stages\nrunStage{id = 'x', cmd = 'echo x >> side.txt'}\nbaton.sh('echo y >> side.txt')\n:continue\n")
        #expect(r.code == 1, "two lines failed: \(r.stderr)")
        #expect(r.stderr.contains("runStage: nothing runs at the replay's prompt"), "\(r.stderr)")
        #expect(r.stderr.contains("baton.sh: nothing runs at the replay's prompt"), "\(r.stderr)")
        #expect(r.stdout.contains("stopped at the failing call runStage 'deploy' at r.lua:5: stage 'deploy' failed with exit code 7: connection refused"), "\(r.stdout)")
        #expect(r.stdout.contains("its locals and upvalues: env, version, tries"), "\(r.stdout)")
        #expect(r.stdout.contains("\"prod\"\t\"1.2.3\"\t3"), "\(r.stdout)")
        #expect(r.stdout.contains("r.lua:5: in main chunk"), "\(r.stdout)")
        #expect(r.stdout.contains("passed  build"), "\(r.stdout)")
        #expect(r.stderr.contains("replay of run \(URL(fileURLWithPath: run).lastPathComponent) ended: runStage 'deploy' at r.lua:5 failed in the run"), "\(r.stderr)")
        #expect(Harness.read(d + "/side.txt") == before, "a replay appended to side.txt")
        #expect(Harness.runDirs(d).count == 1)
    }

    @Test func aChangedRecipeFileIsSaidAndTheKeptTextAndModulesAreReplayed() throws {
        let d = Harness.tempDir("dbg-changed")
        Harness.write(d + "/lib.lua", "return {name = 'old-lib'}")
        Harness.write(d + "/r.lua", """
            local lib = require("lib")
            local label = "as it ran"
            runStage{id = "one", cmd = "echo one >> side.txt"}
            runStage{id = "two", cmd = "echo two >> side.txt"}
            baton.fs.write("written.txt", "x")
            return {label = label}
            """)
        let r0 = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r0.code == 0, "\(r0.stderr)")
        let run = Harness.latestRun(d)!
        #expect(Harness.read(run + "/recipe.lua")?.contains("as it ran") == true)
        #expect(Harness.read(run + "/modules/lib.lua") == "return {name = 'old-lib'}")
        Harness.write(d + "/r.lua", "local label = 'edited since'\nrunStage{id = 'other', cmd = 'true'}\n")
        Harness.write(d + "/lib.lua", "return {name = 'new-lib'}")
        try? FileManager.default.removeItem(atPath: d + "/written.txt")
        let before = Harness.read(d + "/side.txt")
        let r = try Harness.run(["debug", "--at", "one"], cwd: d, stdin: "return label, lib.name\n:next\n:stages\n:next\nreturn 1 + 1\n:continue\n")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stderr.contains("note: r.lua has changed since the run; the replay uses the text the run ran"), "\(r.stderr)")
        #expect(r.stdout.contains("stopped before runStage 'one' at r.lua:3 (it passed in the run)"), "\(r.stdout)")
        #expect(r.stdout.contains("stopped before runStage 'two' at r.lua:4 (it passed in the run)"), "\(r.stdout)")
        #expect(r.stdout.contains("replayed so far:\n  passed  one\n"), "\(r.stdout)")
        #expect(r.stdout.contains("\"as it ran\"\t\"old-lib\""), "\(r.stdout)")
        #expect(r.stdout.contains("at the end of the recipe (it returned)"), "\(r.stdout)")
        #expect(r.stdout.contains("\n2\n"), "\(r.stdout)")
        #expect(Harness.read(d + "/side.txt") == before)
        #expect(!FileManager.default.fileExists(atPath: d + "/written.txt"))
    }

    @Test func aCallTheJournalLacksStopsTheReplay() throws {
        let d = Harness.tempDir("dbg-missing")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "true"}
            if baton.fs.exists("flag") then runStage{id = "extra", cmd = "echo extra >> side.txt"} end
            return {}
            """)
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        Harness.write(d + "/flag", "")
        let r = try Harness.run(["debug"], cwd: d, stdin: ":continue\n")
        #expect(r.stdout.contains("stopped and the replay ends here: the journal has no call runStage 'extra' at r.lua:2"), "\(r.stdout)")
        #expect(r.stderr.contains("ended: the journal has no call runStage 'extra'"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/side.txt"))
    }

    @Test func preflightGateAndWatchAnswerFromTheJournal() throws {
        let d = Harness.tempDir("dbg-prims")
        Harness.write(d + "/r.lua", """
            local rep = preflight{name = "tools", checks = {{path = "r.lua"}}}
            local g = gate{name = "g", cmd = "echo ran >> side.txt; echo '{\\"approved\\": true, \\"issues\\": []}'"}
            runStage{id = "mk", cmd = "touch ready.txt"}
            local w = watch{id = "w", file = "ready.txt", timeoutSec = 5}
            local code = os.execute("echo ran >> side.txt")
            runStage{id = "last", cmd = "exit 3"}
            """)
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let before = Harness.read(d + "/side.txt")
        #expect(before == "ran\nran\n")
        let r = try Harness.run(["debug"], cwd: d, stdin: "return rep.ok, g.approved, w.state, code\n:continue\n")
        #expect(r.stdout.contains("stopped at the failing call runStage 'last' at r.lua:6"), "\(r.stdout)")
        #expect(r.stdout.contains("true\ttrue\t\"completed\"\ttrue"), "\(r.stdout)")
        #expect(Harness.read(d + "/side.txt") == before)
    }

    @Test func anOrphanedRunStopsAtTheCallThatNeverFinished() throws {
        let d = Harness.tempDir("dbg-orphan")
        Harness.write(d + "/r.lua", "local step = 'one'\nrunStage{id = 'a', cmd = 'true'}\nstep = 'two'\nrunStage{id = 'hang', cmd = 'sleep 300'}\n")
        let o = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        let run = String(o.stdout.split(separator: "\n")[1])
        #expect(Harness.waitFor(20) { (Harness.read(run + "/journal.jsonl") ?? "").contains("\"id\":\"hang\"") })
        kill(Int32(Harness.read(run + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        #expect(Harness.waitFor(10) { (try? Harness.run(["status", "--json"], cwd: d))?.stdout.contains("orphaned") == true })
        let r = try Harness.run(["debug"], cwd: d, stdin: "return step\n:continue\n")
        #expect(r.stdout.contains("runStage 'hang' at r.lua:4 never finished in the run (unfinished"), "\(r.stdout)")
        #expect(r.stdout.contains("\"two\""), "\(r.stdout)")
        _ = try Harness.run(["cancel"], cwd: d)
    }

    @Test func backgroundStagesAndParallelAreReplayedToo() throws {
        let d = Harness.tempDir("dbg-bg")
        Harness.write(d + "/r.lua", """
            local h = runStage{id = "bg", cmd = "echo bg >> side.txt; echo background-out", background = true}
            local out = parallel({"x", "y", "z"}, function(c)
              return runStage{id = "t-" .. c, cmd = "echo " .. c .. " >> side.txt; echo " .. c}.stdout
            end)
            local r = h:wait()
            local bad = runStage{id = "bad", cmd = "echo bad >> side.txt; exit 4", background = true}
            local joined = table.concat(out)
            bad:wait()
            """)
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let before = Harness.read(d + "/side.txt")
        let r = try Harness.run(["debug"], cwd: d, stdin: "return joined, r.stdout\n:stages\n:continue\n")
        #expect(r.stdout.contains("stopped at the failing call (the wait for runStage 'bad' at r.lua:6) at r.lua:8"), "\(r.stdout)")
        #expect(r.stdout.contains("\"x\\ny\\nz\\n\"\t\"background-out\\n\""), "\(r.stdout)")
        #expect(r.stdout.contains("passed  t-z"), "\(r.stdout)")
        #expect(Harness.read(d + "/side.txt") == before)
    }

    @Test func aLiveRunIsNotReplayed() throws {
        let (d, run) = try BreakpointTests.paused("dbg-live", BreakpointTests.deploy, ["--break", "deploy"])
        defer { _ = try? Harness.run(["cancel"], cwd: d); _ = Harness.waitFor(10) { Harness.final(run) != nil } }
        let r = try Harness.run(["debug"], cwd: d, stdin: "")
        #expect(r.code == 1 && r.stderr.contains("is live: 'baton attach"), "\(r.stderr)")
    }

    @Test func onATerminalAndInTheShell() throws {
        let (d, run) = try Self.failedRun("dbg-tty")
        let id = URL(fileURLWithPath: run).lastPathComponent
        let pane = try Pane("dbg-tty", cwd: d, args: ["debug"], prompt: "debug \(id)>")
        defer { pane.kill() }
        pane.expectLine("tries * 2", "6")
        pane.send(":continue")
        #expect(pane.waitFor("BATON-EXIT=0"), "\(pane.screen())")
        let shell = try Pane("dbg-shell", cwd: d)
        defer { shell.kill() }
        shell.send(":debug \(id)")
        #expect(shell.waitForPrompt("debug \(id)>"), "\(shell.screen())")
        shell.expectLine("return env", "\"prod\"")
        shell.send(":continue")
        #expect(shell.waitFor("ended: runStage 'deploy' at r.lua:5 failed in the run"), "\(shell.screen())")
        shell.expectLine("1 + 1", "2")
        #expect(Harness.read(d + "/side.txt") == "1.2.3\nbuild\ndeploy\n")
    }
}
