import Foundation
import Testing

/// Issue 11: the guarantees of the one event loop, nothing a recipe starts escaping, and the
/// bugs found by trying Baton as a new user would. Each ran on 0.1 and failed there.
@Suite struct CoreRedesignTests {
    func json(_ s: String) -> [String: Any]? { try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any] }

    func ts(_ e: [String: Any]) -> Double {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: e["ts"] as? String ?? "")?.timeIntervalSince1970 ?? 0
    }

    func statusJSON(_ d: String, _ run: String = "latest") throws -> [String: Any] {
        let r = try Harness.run(["status", run, "--json"], cwd: d)
        return try #require(json(r.stdout), "status --json: \(r.stdout) \(r.stderr)")
    }

    // MARK: one loop

    /// While the recipe waits on one thing (a baton.sh command, a gate command, a preflight
    /// command), a background stage's timeout still fires and heartbeats keep coming.
    @Test(arguments: ["baton.sh(\"sleep 4\")",
                      "gate{name = \"g\", cmd = \"sleep 4; echo '{\\\"approved\\\": true}'\"}",
                      "preflight{name = \"p\", checks = {{cmd = \"sleep 4\"}}}"])
    func aBackgroundStageTimesOutWhileTheRecipeWaitsOnACommand(_ wait: String) throws {
        let d = Harness.tempDir("loop")
        Harness.write(d + "/r.lua", """
            local h = runStage{id = "bg", cmd = {"sleep", "30"}, timeout = 1, grace = 0.5, background = true, allowFail = true}
            \(wait)
            local r = h:wait()
            return {bg = r.status}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_HEARTBEAT_SEC": "1"])
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        let events = Harness.journal(run)
        let started = try #require(Harness.events(events, type: "stage_started").first)
        let finished = try #require(Harness.events(events, type: "stage_finished").first)
        #expect(finished["status"] as? String == "timed_out")
        #expect(ts(finished) - ts(started) < 2.0, "the timeout fired \(ts(finished) - ts(started))s after the start")
        // It ended while the command still ran: its stage_finished comes before the wait ended.
        let waitEnd = events.firstIndex { ["command", "gate", "preflight"].contains($0["type"] as? String ?? "") } ?? 0
        let bgEnd = events.firstIndex { $0["type"] as? String == "stage_finished" } ?? Int.max
        #expect(bgEnd < waitEnd, "the background stage ended only after the command")
        let beats = Harness.events(events, type: "heartbeat").filter { ts($0) < ts(events[waitEnd]) }
        #expect(beats.count >= 2, "heartbeats while the recipe waited: \(beats)")
        #expect((Harness.final(run)?["result"] as? [String: Any])?["bg"] as? String == "timed_out")
    }

    // MARK: nothing escapes

    @Test func osExecuteRunsInItsOwnGroupAndEndsOnCancel() throws {
        let d = Harness.tempDir("osexec")
        let marker = "osexec-gc-\(UUID().uuidString.prefix(8))"
        Harness.write(d + "/r.lua", """
            local ok, how, code = os.execute("exit 3")
            baton.log("exit3", {ok = ok == true, how = how, code = code})
            os.execute("sh -c 'sleep 300; : \(marker)' & sleep 300; : \(marker)")
            """)
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        #expect(start.code == 0, "stderr: \(start.stderr)")
        let run = String(start.stdout.split(separator: "\n")[1])
        let id = String(start.stdout.split(separator: "\n")[0])
        #expect(Harness.waitFor(20) { Harness.processes(matching: marker).count >= 2 }, "the grandchild started")
        // Both shells and both `sleep 300`s (which lack the marker) carry the run's id.
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").count >= 4 },
                "\(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        let c = try Harness.run(["cancel"], cwd: d)
        #expect(c.code == 0, "stderr: \(c.stderr)")
        #expect(Harness.waitFor(5) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                "a process os.execute started survived the cancel: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
        let events = Harness.journal(run)
        let cmds = Harness.events(events, type: "command")
        #expect(cmds.count == 2 && cmds.allSatisfy { $0["via"] as? String == "os.execute" })
        #expect(cmds.first?["exit"] as? Int == 3 && cmds.first?["shell"] as? String == "exit 3")
        let logged = Harness.events(events, type: "log").first { $0["message"] as? String == "exit3" }?["fields"] as? [String: Any]
        #expect(logged?["ok"] as? Bool == false && logged?["how"] as? String == "exit" && logged?["code"] as? Int == 3)
        #expect(Harness.final(run)?["status"] as? String == "cancelled")
    }

    @Test func ioPopenIsRefusedWithAPointerToBatonSh() throws {
        let d = Harness.tempDir("popen")
        Harness.write(d + "/r.lua", "local f = io.popen('ls')\nreturn {}\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 3)
        #expect(r.stderr.contains("r.lua:1:") && r.stderr.contains("io.popen") && r.stderr.contains("baton.sh"), "stderr: \(r.stderr)")
    }

    // MARK: bugs

    @Test func latestIsTheRunThatStartedLast() throws {
        let d = Harness.tempDir("latest")
        Harness.write(d + "/a.lua", "return {}\n")
        #expect(try Harness.run(["run", "--run-id", "nightly", "a.lua"], cwd: d).code == 0)
        #expect(try Harness.run(["run", "a.lua"], cwd: d).code == 0)
        let st = try statusJSON(d)
        #expect(st["run"] as? String != "nightly", "latest is the second run, not the id that sorts last")
        let runs = try Harness.run(["runs", "--json"], cwd: d)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(runs.stdout.utf8)) as? [[String: Any]])
        #expect(list.map { $0["run"] as? String == "nightly" } == [false, true], "newest first: \(list.map { $0["run"] ?? "" })")
    }

    @Test func stageOutputIsTheExactBytes() throws {
        let d = Harness.tempDir("bytes")
        Harness.write(d + "/r.lua", #"""
            local r = runStage{id = "b", cmd = [[printf '\377\376A']]}
            local big = runStage{id = "big", cmd = [[head -c 70000 /dev/zero | tr '\0' '\303']]}
            return {bytes = {r.stdout:byte(1, -1)}, n = #big.stdout}
            """#)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = Harness.final(try #require(Harness.latestRun(d)))?["result"] as? [String: Any]
        #expect(result?["bytes"] as? [Int] == [255, 254, 65])
        #expect(result?["n"] as? Int == 65536, "the tail cap counts bytes")
    }

    /// After a resume, final.json's start is the original one, its duration covers the whole
    /// run, and it has one entry per stage call; status agrees with it.
    @Test func aResumedRunsFinalCoversTheWholeRun() throws {
        let d = Harness.tempDir("resumefinal")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "echo a"}
            runStage{id = "b", cmd = "test -f ok", retries = 1, retryOn = {"deterministic"}, backoff = {initial = 0.01}}
            runStage{id = "a", cmd = "echo a again"}
            return {}
            """)
        let first = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(first.code == 1)
        let run = try #require(Harness.latestRun(d))
        let before = try #require(Harness.final(run))
        Harness.write(d + "/ok", "")
        let again = try Harness.run(["resume"], cwd: d)
        #expect(again.code == 0, "stderr: \(again.stderr)")
        let f = try #require(Harness.final(run))
        #expect(f["started_at"] as? String == before["started_at"] as? String, "started_at is the original start")
        let firstTS = ts(try #require(Harness.journal(run).first))
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let ended = fmt.date(from: f["ended_at"] as? String ?? "")?.timeIntervalSince1970 ?? 0
        #expect(abs(Double(f["duration_ms"] as? Int ?? 0) / 1000 - (ended - firstTS)) < 0.01, "duration covers the whole run")
        let stages = try #require(f["stages"] as? [[String: Any]])
        #expect(stages.map { "\($0["id"]!)#\($0["occurrence"] ?? 1)" } == ["a#1", "b#1", "a#2"], "one entry per call: \(stages)")
        #expect(stages[0]["replayed"] as? Bool == true && stages[1]["status"] as? String == "passed")
        let st = try statusJSON(d)
        #expect(st["stages_finished"] as? Int == 3)
        #expect(st["started_at"] as? String == f["started_at"] as? String)
        #expect(st["duration_ms"] as? Int == f["duration_ms"] as? Int)
    }

    /// Many replays in a row are said in one line (log --why lists each); a call that runs is said alone.
    @Test func manyReplaysAreSaidInOneLine() throws {
        let d = Harness.tempDir("replaysline")
        Harness.write(d + "/r.lua", "for i = 1, 8 do runStage{id = 's' .. i, cmd = 'true'} end\nrunStage{id = 'last', cmd = 'test -f ok'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 1)
        Harness.write(d + "/ok", "")
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("resume: 8 stage calls replayed: passed before, unchanged (s1 … s8;"), "stderr: \(r.stderr)")
        #expect(r.stderr.contains("resume: stage last: runs: did not pass before"), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("resume: stage s3"), "stderr: \(r.stderr)")
    }

    @Test func anOrphansDurationEndsAtItsLastEvent() throws {
        let d = Harness.tempDir("orphandur")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\nrunStage{id = 'hang', cmd = {'sleep', '300'}}\n")
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        let run = String(start.stdout.split(separator: "\n")[1])
        #expect(Harness.waitFor(20) {
            (Harness.read(run + "/journal.jsonl") ?? "").components(separatedBy: "\"stage_started\"").count == 3
        })
        let pid = Int32(Harness.read(run + "/run.pid")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        kill(pid, SIGKILL)
        #expect(Harness.waitFor(10) { (try? self.statusJSON(d))?["state"] as? String == "orphaned" })
        let st = try statusJSON(d)
        let last = try #require(st["last_event"] as? [String: Any])
        let fmt = ISO8601DateFormatter()
        fmt.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let t0 = fmt.date(from: st["started_at"] as? String ?? "")!.timeIntervalSince1970
        let t1 = fmt.date(from: last["ts"] as? String ?? "")!.timeIntervalSince1970
        #expect(abs(Double(st["duration_ms"] as? Int ?? -1) / 1000 - (t1 - t0)) < 0.01, "status: \(st)")
        #expect((st["current"] as? [String: Any])?["id"] as? String == "hang", "where it died")
        _ = try Harness.run(["cancel"], cwd: d)
    }

    /// A dry run journals what a real run journals (same stage fields), and does not act:
    /// baton.sh, os.execute and baton.fs.write/append are journaled as not run.
    @Test func aDryRunHasTheRealSchemaAndDoesNothing() throws {
        let d = Harness.tempDir("dryschema")
        Harness.write(d + "/r.lua", """
            runStage{id = "s", cmd = {"touch", "stage-ran"}}
            local out = baton.sh("touch sh-ran; echo hi")
            os.execute("touch exec-ran")
            baton.fs.write("written.txt", "x")
            baton.fs.append("appended.txt", "x")
            local here = baton.sh("echo read-only", {readOnly = true})
            return {sh = out, here = here}
            """)
        let dry = try Harness.run(["run", "--dry-run", "r.lua"], cwd: d)
        #expect(dry.code == 0, "stderr: \(dry.stderr)")
        for f in ["stage-ran", "sh-ran", "exec-ran", "written.txt", "appended.txt"] {
            #expect(!FileManager.default.fileExists(atPath: d + "/" + f), "\(f) was created in a dry run")
        }
        let dryEvents = Harness.journal(try #require(Harness.latestRun(d)))
        #expect(Harness.events(dryEvents, type: "not_run").compactMap { $0["via"] as? String }
                == ["baton.sh", "os.execute", "baton.fs.write", "baton.fs.append"])
        #expect(dry.stdout.contains("baton.sh touch sh-ran; echo hi (not run)"), "the plan lists it: \(dry.stdout)")
        // A command the recipe declares read-only runs in a dry run too, and is journaled.
        #expect(Harness.events(dryEvents, type: "command").compactMap { $0["shell"] as? String } == ["echo read-only"])
        let dryResult = Harness.final(try #require(Harness.latestRun(d)))?["result"] as? [String: Any]
        #expect(dryResult?["here"] as? String == "read-only\n" && dryResult?["sh"] as? String == "")
        let real = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(real.code == 0, "stderr: \(real.stderr)")
        let realEvents = Harness.journal(try #require(Harness.latestRun(d)))
        for type in ["stage_started", "stage_finished"] {
            let k1 = Set(Harness.events(dryEvents, type: type).first?.keys.map { $0 } ?? []).subtracting(["pid", "dry", "seq", "ts", "run"])
            let k2 = Set(Harness.events(realEvents, type: type).first?.keys.map { $0 } ?? []).subtracting(["pid", "dry", "seq", "ts", "run"])
            #expect(k1 == k2 && !k1.isEmpty, "\(type): dry \(k1.sorted()) vs real \(k2.sorted())")
        }
    }

    @Test func syncPolicyIsAnOption() throws {
        let d = Harness.tempDir("sync")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\n")
        #expect(try Harness.run(["run", "--sync", "always", "r.lua"], cwd: d).code == 0)
        let bad = try Harness.run(["run", "--sync", "sometimes", "r.lua"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("--sync"))
    }
}
