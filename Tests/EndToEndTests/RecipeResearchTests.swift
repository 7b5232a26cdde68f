import Foundation
import Testing

/// recipes/research_callback.lua end to end, with the stand-in job Tests/Fixtures/research-job.sh:
/// late, missing and cancelled artifacts, failed jobs, duplicate run ids, concurrent registry appends.
@Suite struct RecipeResearchTests {
    static let recipe = Harness.packageRoot.appendingPathComponent("recipes/research_callback.lua").path

    struct Run {
        var r: Harness.Result
        var runDir: String
        var final: [String: Any]
        var result: [String: Any] { final["result"] as? [String: Any] ?? [:] }
    }

    static func words(_ out: String, _ id: String, job: String = "research-job.sh 0", _ extra: [String]) -> [String] {
        [recipe, "job=\(job)", "out=\(out)", "run_id=\(id)", "poll=0.05", "ready_timeout=5"] + extra
    }

    func research(_ d: String, out: String = "runs/a", id: String = "a", job: String = "research-job.sh 0", _ extra: [String] = [],
                  env: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> Run {
        let before = Set(Harness.runDirs(d))
        let r = try Harness.run(["run"] + Self.words(out, id, job: job, extra), cwd: d, env: env, timeout: 60)
        let run = try #require(Harness.runDirs(d).first { !before.contains($0) }, sourceLocation: sourceLocation)
        _ = Harness.journal(run, sourceLocation: sourceLocation)
        let f = try #require(Harness.final(run), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        return Run(r: r, runDir: run, final: f)
    }

    static func json(_ path: String) -> [String: Any]? {
        guard let d = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
    }

    static func registry(_ path: String) -> [[String: Any]] {
        (Harness.read(path) ?? "").split(separator: "\n").map {
            let o = try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            #expect(o != nil, "registry line is not JSON: \($0)")
            return o ?? [:]
        }
    }

    static func watchStates(_ run: String) -> [String] {
        Harness.events(Harness.journal(run), type: "watch").compactMap { $0["to"] as? String }
    }

    // MARK: modules and usage

    @Test func modulesTemplateRegistryWrapper() throws {
        let d = Harness.tempDir("rc-mod")
        Harness.write(d + "/r.lua", """
            local t = require("kit.template")
            local s, unknown = t.render("{{ run_id }}: {{metrics.score}} {{best.run_id}} {{nope}} {{m}} {{n}}",
              {run_id = "x", metrics = {score = 0.75}, best = {}, m = {1, 2}, n = 3.0})
            assert(s == "x: 0.75   [1,2] 3", s)
            assert(#unknown == 2 and unknown[1] == "best.run_id" and unknown[2] == "nope")
            local reg = require("research.registry")
            local e = {{run_id = "a", status = "succeeded", metrics = {acc = 0.5}}, {run_id = "b", status = "succeeded", metrics = {acc = 0.9}},
                       {run_id = "c", status = "failed", metrics = {acc = 1.0}}, {run_id = "d", status = "succeeded", metrics = {}}}
            assert(reg.best(e, "acc", "max").run_id == "b")
            assert(reg.best(e, "acc", "min").run_id == "a")
            assert(reg.best(e, "acc").candidates == 2, "failed runs and runs without the metric are not candidates")
            assert(reg.best(e, "nothing") == nil)
            local sum = reg.summary(e)
            assert(sum.runs == 4 and sum.succeeded == 3 and sum.failed == 1)
            assert(reg.append("reg.jsonl", {run_id = "r.1", status = "succeeded"}) == "appended")
            assert(reg.append("reg.jsonl", {run_id = "r.1", status = "failed"}) == "duplicate")
            assert(reg.find("reg.jsonl", "r.1").status == "succeeded" and reg.find("reg.jsonl", "r") == nil)
            assert(reg.append("reg.jsonl", {run_id = "rx1", status = "failed"}) == "appended", "'.' is not a wildcard")
            baton.fs.append("reg.jsonl", '{"run_id": "torn", "sta')
            assert(reg.append("reg.jsonl", {run_id = "after", status = "succeeded"}) == "appended")
            local all, bad = reg.read("reg.jsonl")
            assert(#all == 3 and #bad == 1 and bad[1] == 3, #all .. " " .. #bad)
            assert(reg.append("reg.jsonl", {run_id = "r.1", status = "failed"}, {replace = true}) == "replaced")
            all, bad = reg.read("reg.jsonl")
            assert(#all == 3 and #bad == 1 and all[3].run_id == "r.1" and all[3].status == "failed", "replaced, torn line kept")
            local w = require("research.wrapper")
            assert(w.pattern("run.7") == "[r]esearch-job:run\\\\.7( |$)", w.pattern("run.7"))
            assert(w.command("o", "id", "job")[4] == "research-job:id")
            assert(w.env({A = "1"}).A == "1" and w.env().RESEARCH_WRAPPER:find("trap"))
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func helpAndBadOptions() throws {
        let d = Harness.tempDir("rc-usage")
        let h = try Harness.run(["run", Self.recipe, "help"], cwd: d)
        #expect(h.code == 0 && h.stdout.contains("usage:") && h.stdout.contains("on_missing="), "stdout: \(h.stdout)")
        let missing = try Harness.run(["run", Self.recipe, "out=x", "run_id=a"], cwd: d)
        #expect(missing.code == 3 && missing.stderr.contains("job=..."), "stderr: \(missing.stderr)")
        let bad = try Harness.run(["run", Self.recipe, "job=true", "out=x", "run_id=a", "on_missing=ignore"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("on_missing"), "stderr: \(bad.stderr)")
        let id = try Harness.run(["run", Self.recipe, "job=true", "out=x", "run_id=a b"], cwd: d)
        #expect(id.code == 3 && id.stderr.contains("run_id"))
        #expect(!bad.stderr.contains("traceback") && !missing.stderr.contains("stack"))
    }

    @Test func dryRunStartsNothing() throws {
        let d = Harness.tempDir("rc-dry")
        let r = try Harness.run(["run", "--dry-run"] + Self.words("runs/a", "dry-1", []), cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("dry run: 1 stage would run:") && r.stdout.contains("research-job:dry-1"), "stdout: \(r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: d + "/runs"), "nothing is created in a dry run")
    }

    // MARK: golden path

    @Test func goldenPathCallbackRegistrySummaryBestReport() throws {
        let d = Harness.tempDir("rc-gold")
        Harness.write(d + "/tpl.md", "Run {{run_id}} {{status}} score={{metrics.score}} best={{best.run_id}}:{{best.value}} runs={{registry.runs}}\n")
        let x = try research(d, id: "gold-1", ["metric=score", "template=tpl.md",
                                               "callback=cp {out}/status.json {out}/seen-by-callback.json; echo $RUN_ID $BATON_OUT > {out}/cb-env", "tag=inc-42,gpu"],
                             env: ["JOB_SCORE": "0.8"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let metrics = try #require(Self.json(d + "/runs/a/metrics.json"))
        #expect(metrics["score"] as? Double == 0.8 && metrics["status"] == nil, "the job's metrics.json is the job's alone: \(metrics)")
        let status = try #require(Self.json(d + "/runs/a/status.json"))
        #expect(status["status"] as? String == "succeeded" && status["run_id"] as? String == "gold-1" && status["exit_code"] as? Int == 0)
        #expect(Self.json(d + "/runs/a/seen-by-callback.json")?["status"] as? String == "succeeded", "the callback runs after the status is final")
        #expect(Harness.read(d + "/runs/a/cb-env") == "gold-1 runs/a\n")
        let reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 1 && reg.first?["run_id"] as? String == "gold-1" && reg.first?["status"] as? String == "succeeded")
        #expect(reg.first?["tags"] as? [String] == ["inc-42", "gpu"], "incident tags go into the registry")
        #expect(Harness.read(d + "/runs/a/report.md") == "Run gold-1 succeeded score=0.8 best=gold-1:0.8 runs=1\n")
        let summary = try #require(Self.json(d + "/runs/a/summary.json"))
        #expect((summary["runs"] as? [String: Any])?["runs"] as? Int == 1)
        let best = try #require(x.result["best"] as? [String: Any])
        #expect(best["run_id"] as? String == "gold-1" && best["value"] as? Double == 0.8 && best["mode"] as? String == "max")
        #expect(x.result["status"] as? String == "succeeded" && x.result["state"] as? String == "completed")
        #expect(Self.watchStates(x.runDir) == ["queued", "running", "exited", "awaiting_artifacts", "callback_queued", "callback_running", "completed"])
        let pre = try #require(Harness.events(Harness.journal(x.runDir), type: "preflight").first)
        #expect((pre["checks"] as? [[String: Any]])?.map { $0["kind"] as? String } == ["check", "check", "pgrep", "check", "check", "check"])
        // The default template renders too.
        let y = try research(d, out: "runs/b", id: "gold-2", ["metric=score", "mode=min"], env: ["JOB_SCORE": "0.3"])
        #expect(y.r.code == 0, "stderr: \(y.r.stderr)")
        #expect(Harness.read(d + "/runs/b/report.md")?.contains("# Research run gold-2") == true)
        #expect(Harness.read(d + "/runs/b/report.md")?.contains("incident tags: none") == true)
        #expect(Harness.read(d + "/runs/a/summary.json")?.contains("inc-42") == true)
        #expect((y.result["best"] as? [String: Any])?["run_id"] as? String == "gold-2", "min picks the lower score")
        #expect(y.r.stdout.contains("BEST by score (min): gold-2 = 0.3"))
    }

    // MARK: artifacts: late, missing, cancelled, failed, invalid

    @Test func lateArtifactIsNoticedAsItAppears() throws {
        let d = Harness.tempDir("rc-late")
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", "late", ["require=metrics.json,late.bin", "poll=30", "ready_timeout=30"]), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) {
            Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("\"to\":\"awaiting_artifacts\"") == true
        })
        usleep(200_000)
        #expect(FileManager.default.fileExists(atPath: d + "/runs/a/metrics.json"))
        let dropped = Date()
        Harness.write(d + "/runs/a/late.bin", "weights")
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(Date().timeIntervalSince(dropped) < 10, "noticed at once, not at the next 30 s poll")
        let f = try #require(Harness.final(Harness.latestRun(d)!))
        #expect((f["result"] as? [String: Any])?["status"] as? String == "succeeded")
        #expect(Self.registry(d + "/runs/registry.jsonl").count == 1)
    }

    @Test func missingArtifactFailBlockOrCallbackAllRecorded() throws {
        let d = Harness.tempDir("rc-missing")
        let fail = try research(d, out: "runs/f", id: "m-fail", ["require=metrics.json,model.bin", "ready_timeout=0.3"])
        #expect(fail.r.code == 1, "stderr: \(fail.r.stderr)")
        #expect(fail.r.stderr.contains("model.bin"))
        #expect(Self.watchStates(fail.runDir).last == "failed")
        var reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 1 && reg[0]["status"] as? String == "failed" && (reg[0]["reason"] as? String)?.contains("model.bin") == true,
                "a run whose artifacts are missing is recorded as failed: \(reg)")

        let block = try research(d, out: "runs/b", id: "m-block", ["require=model.bin", "ready_timeout=0.3", "on_missing=block"])
        #expect(block.r.code == 6, "stderr: \(block.r.stderr)")
        #expect(Self.watchStates(block.runDir).last == "blocked")
        #expect(block.result["state"] as? String == "blocked")
        reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 2 && reg[1]["run_id"] as? String == "m-block" && reg[1]["status"] as? String == "blocked")

        let cb = try research(d, out: "runs/c", id: "m-cb", ["require=metrics.json,model.bin", "ready_timeout=0.3", "on_missing=callback",
                                                             "callback=echo \"$BATON_MISSING\" > {out}/missing.txt"])
        #expect(cb.r.code == 1, "the callback runs, but a run without its artifacts has not succeeded; stderr: \(cb.r.stderr)")
        #expect(Harness.read(d + "/runs/c/missing.txt")?.contains("model.bin") == true)
        reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 3 && (reg[2]["missing"] as? [String])?.first?.hasSuffix("model.bin") == true && reg[2]["status"] as? String == "failed")
        #expect(Self.watchStates(cb.runDir).suffix(3) == ["callback_queued", "callback_running", "completed"])
    }

    /// The wrapper's status file does not satisfy the artifact gate: a job that exits 0
    /// without its metrics, or without the ranking metric, has failed.
    @Test func jobThatForgetsItsMetricsFails() throws {
        let d = Harness.tempDir("rc-forget")
        let none = try research(d, out: "runs/n", id: "forget-1", ["ready_timeout=0.3"], env: ["JOB_NO_METRICS": "1"])
        #expect(none.r.code == 1, "stderr: \(none.r.stderr)")
        #expect(Self.json(d + "/runs/n/status.json")?["status"] as? String == "succeeded", "the job itself exited 0")
        #expect(!FileManager.default.fileExists(atPath: d + "/runs/n/metrics.json"), "the wrapper writes no metrics.json of its own")
        #expect(Self.watchStates(none.runDir).last == "failed", "on_missing=fail fires")
        #expect(none.result["status"] as? String == "failed")

        let noScore = try research(d, out: "runs/s", id: "forget-2", ["metric=score"], env: ["JOB_NO_SCORE": "1"])
        #expect(noScore.r.code == 1, "stderr: \(noScore.r.stderr)")
        #expect(noScore.r.stderr.contains("metric 'score' missing"), "stderr: \(noScore.r.stderr)")
        #expect((noScore.result["best"] as? [String: Any]) == nil)
        let reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.map { $0["status"] as? String } == ["failed", "failed"], "\(reg)")

        let good = try research(d, out: "runs/g", id: "forget-3", ["metric=score"])
        #expect(good.r.code == 0, "stderr: \(good.r.stderr)")
        #expect((good.result["best"] as? [String: Any])?["run_id"] as? String == "forget-3", "failed runs are never the best")
    }

    @Test func cancelledRunLeavesValidMetrics() throws {
        let d = Harness.tempDir("rc-cancel")
        let marker = "cancel-\(UUID().uuidString.prefix(8))"
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", marker, job: "research-job.sh 30 \(marker)", ["tag=oom"]), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/runs/a/started") })
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        let m = try #require(Self.json(d + "/runs/a/status.json"), "status.json must be valid JSON")
        #expect(m["status"] as? String == "cancelled", "\(m)")
        #expect(m["run_id"] as? String == marker)
        // The cancelled run is in the registry too (the wrapper records it: no Lua runs after a cancel).
        #expect(Harness.waitFor(10) { Self.registry(d + "/runs/registry.jsonl").contains { $0["run_id"] as? String == marker } })
        let entry = Self.registry(d + "/runs/registry.jsonl").first { $0["run_id"] as? String == marker }
        #expect(entry?["status"] as? String == "cancelled" && entry?["tags"] as? [String] == ["oom"], "\(String(describing: entry))")
        #expect(Harness.waitFor(10) { Harness.processes(matching: marker).isEmpty }, "the job must not outlive the run")
        #expect(Harness.final(Harness.latestRun(d)!)?["status"] as? String == "cancelled")
    }

    @Test func failedJobStillLeavesStatusAndIsRecorded() throws {
        let d = Harness.tempDir("rc-failed")
        let x = try research(d, id: "f-1", ["metric=score"], env: ["JOB_FAIL": "3"])
        #expect(x.r.code == 1, "stderr: \(x.r.stderr)")
        let st = try #require(Self.json(d + "/runs/a/status.json"))
        #expect(st["status"] as? String == "failed" && st["exit_code"] as? Int == 3)
        #expect(Self.json(d + "/runs/a/metrics.json")?["score"] as? Double == 0.5, "the job's partial metrics are kept")
        let reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 1 && reg[0]["status"] as? String == "failed" && reg[0]["exit_code"] as? Int == 3)
        #expect((x.result["best"] as? [String: Any]) == nil, "a failed run is never the best")
        #expect(x.result.keys.contains("best"))

        // No metrics at all, and invalid metrics: the wrapper still leaves a valid status file.
        let n = try research(d, out: "runs/n", id: "f-2", ["ready_timeout=0.3"], env: ["JOB_NO_METRICS": "1", "JOB_FAIL": "2"])
        #expect(n.r.code == 1)
        #expect(Self.json(d + "/runs/n/status.json")?["status"] as? String == "failed")
        let bad = try research(d, out: "runs/i", id: "f-3", ["ready_timeout=0.3"], env: ["JOB_BAD_METRICS": "1"])
        #expect(bad.r.code == 1, "invalid metrics are no metrics; stderr: \(bad.r.stderr)")
        let bm = try #require(Self.json(d + "/runs/i/status.json"))
        #expect(bm["status"] as? String == "succeeded" && bm["metrics_error"] is String)
        #expect(FileManager.default.fileExists(atPath: d + "/runs/i/metrics.json.invalid"))
        #expect(Self.registry(d + "/runs/registry.jsonl").map { $0["status"] as? String } == ["failed", "failed", "failed"])
    }

    // MARK: registry

    @Test func duplicateRunIdRefusedBeforeTheJobRunsRerunAppends() throws {
        let d = Harness.tempDir("rc-dup")
        let a = try research(d, out: "runs/a", id: "same", env: ["JOB_SCORE": "0.7"])
        #expect(a.r.code == 0, "stderr: \(a.r.stderr)")
        let before = Harness.read(d + "/runs/a/metrics.json")
        // Same run_id, another out: refused by the preflight, the job never starts.
        let b = try research(d, out: "runs/b", id: "same")
        #expect(b.r.code == 4 && b.r.stderr.contains("already in") && b.r.stderr.contains("rerun=1"), "stderr: \(b.r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/runs/b/started"), "the job never started")
        // Same run_id, same out: refused, the earlier artifacts untouched.
        let c = try research(d, out: "runs/a", id: "same", env: ["JOB_SCORE": "0.1"])
        #expect(c.r.code == 4)
        #expect(Harness.read(d + "/runs/a/metrics.json") == before, "the earlier run's artifacts are untouched")
        #expect(Self.registry(d + "/runs/registry.jsonl").count == 1)
        // Another run_id in an out that holds a run: refused too.
        let o = try research(d, out: "runs/a", id: "other")
        #expect(o.r.code == 4 && o.r.stderr.contains("holds run same"), "stderr: \(o.r.stderr)")
        // rerun=1: runs again as attempt 2; the earlier entry is kept.
        let r = try research(d, out: "runs/a", id: "same", ["rerun=1", "metric=score"], env: ["JOB_SCORE": "0.3"])
        #expect(r.r.code == 0, "stderr: \(r.r.stderr)")
        #expect(r.r.stdout.contains("(attempt 2; 1 runs)"), "stdout: \(r.r.stdout)")
        let reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.count == 2 && (reg[1]["metrics"] as? [String: Any])?["score"] as? Double == 0.3 && reg[1]["attempt"] as? Int == 2)
        #expect(FileManager.default.fileExists(atPath: d + "/runs/a/.previous-\((r.runDir as NSString).lastPathComponent)/metrics.json"),
                "the earlier artifacts are set aside, not taken for this run's")
    }

    @Test func sixRunsAppendToOneRegistryAtOnce() throws {
        let d = Harness.tempDir("rc-six")
        var procs: [(Process, Pipe, Pipe)] = []
        for i in 1...6 {
            procs.append(try Harness.start(["run"] + Self.words("runs/r\(i)", "six-\(i)", ["registry=shared/registry.jsonl", "metric=score"]), cwd: d,
                                           env: ["JOB_SCORE": "0.\(i)"]))
        }
        for (p, _, _) in procs { p.waitUntilExit() }
        #expect(procs.allSatisfy { $0.0.terminationStatus == 0 })
        let reg = Self.registry(d + "/shared/registry.jsonl")
        #expect(reg.count == 6)
        #expect(Set(reg.compactMap { $0["run_id"] as? String }) == Set((1...6).map { "six-\($0)" }))
        // A seventh run sees all six when picking the best.
        let x = try research(d, out: "runs/r7", id: "six-7", ["registry=shared/registry.jsonl", "metric=score"], env: ["JOB_SCORE": "0.05"])
        #expect(x.r.code == 0)
        #expect((x.result["best"] as? [String: Any])?["run_id"] as? String == "six-6")
        #expect((x.result["best"] as? [String: Any])?["candidates"] as? Int == 7)
    }

    // MARK: visibility

    @Test func startupAndPeriodicHeartbeatsInStatusAndJournal() throws {
        let d = Harness.tempDir("rc-hb")
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", "hb-1", job: "research-job.sh 6", ["heartbeat=0.2"]), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        func journalText() -> String { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") } ?? "" }
        #expect(Harness.waitFor(20) { journalText().contains("\"heartbeat\":\"startup\"") }, "a startup heartbeat")
        #expect(Harness.waitFor(20) { journalText().components(separatedBy: "\"type\":\"heartbeat\"").count > 3 }, "periodic heartbeats")
        // While the job runs, status shows it is waiting on the job and its last heartbeat.
        let st = try Harness.run(["status"], cwd: d)
        #expect(p.isRunning, "the job is still running")
        #expect(st.stdout.contains("current  watch artifacts") && st.stdout.contains("last     heartbeat"), "status: \(st.stdout)")
        #expect(Harness.waitFor(30) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let events = Harness.journal(Harness.latestRun(d)!)
        let startup = Harness.events(events, type: "log").first { (($0["fields"] as? [String: Any])?["heartbeat"] as? String) == "startup" }
        #expect((startup?["fields"] as? [String: Any])?["pid"] as? Int != nil)
        #expect(Harness.events(events, type: "heartbeat").count >= 5, "every 0.2 s over 6 s")
    }

    // MARK: preflight

    @Test func preflightFailsClosed() throws {
        let d = Harness.tempDir("rc-pre")
        Harness.write(d + "/afile", "not a directory")
        let parent = try research(d, out: "afile/out", id: "p1")
        #expect(parent.r.code == 4 && parent.r.stderr.contains("not a writable directory"), "stderr: \(parent.r.stderr)")
        let prog = try research(d, id: "p2", job: "no-such-trainer --epochs 3")
        #expect(prog.r.code == 4 && prog.r.stderr.contains("no-such-trainer: not found"), "stderr: \(prog.r.stderr)")
        // A run with the same id already running is refused.
        let other = Process()
        // One process whose command line carries the wrapper's marker (SIGKILL: Foundation's
        // children start with SIGTERM blocked).
        other.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        other.arguments = ["python3", "-c", "import time; time.sleep(30)", "research-job:p3"]
        try other.run()
        defer { kill(other.processIdentifier, SIGKILL); other.waitUntilExit() }
        #expect(Harness.waitFor(10) { !Harness.processes(matching: "research-job:p3").isEmpty })
        let dup = try research(d, id: "p3")
        #expect(dup.r.code == 4 && dup.r.stderr.contains("already running"), "stderr: \(dup.r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: d + "/runs/a/started"), "the job never started")
    }

    // MARK: issue 21: fail-closed records

    /// The wrapper's own files can never be the artifacts the gate waits for.
    @Test func requireMayNotNameTheWrappersOwnFiles() throws {
        let d = Harness.tempDir("rc-own")
        for f in ["status.json", "./summary.json", "report.md", "sub/../status.json"] {
            let r = try Harness.run(["run"] + Self.words("runs/a", "own", ["require=metrics.json,\(f)"]), cwd: d)
            #expect(r.code == 3, "require=\(f): stderr: \(r.stderr)")
            #expect(r.stderr.contains("require=") && r.stderr.contains("written by Baton"), "stderr: \(r.stderr)")
            #expect(!r.stderr.contains("traceback") && !r.stderr.contains("stack"))
        }
        #expect(!FileManager.default.fileExists(atPath: d + "/runs"), "refused before anything starts")
    }

    /// A cancel while the callback runs (the job has ended) still records the run: status.json and the registry say cancelled.
    @Test func cancelDuringCallbackIsRecordedCancelled() throws {
        let d = Harness.tempDir("rc-cbcancel")
        let marker = "cbcancel-\(UUID().uuidString.prefix(8))"
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", marker, ["callback=touch {out}/cb-started; sleep 30; : \(marker)"]), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/runs/a/cb-started") }, "the callback started")
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        let st = try #require(Self.json(d + "/runs/a/status.json"))
        #expect(st["status"] as? String == "cancelled" && (st["reason"] as? String)?.contains("callback") == true, "\(st)")
        let entries = Self.registry(d + "/runs/registry.jsonl").filter { $0["run_id"] as? String == marker }
        #expect(entries.count == 1 && entries.first?["status"] as? String == "cancelled", "\(entries)")
        #expect(Harness.waitFor(10) { Harness.processes(matching: marker).isEmpty }, "the callback must not outlive the run")
        #expect(Harness.final(Harness.latestRun(d)!)?["status"] as? String == "cancelled")
    }

    /// A runner killed with SIGKILL records nothing itself: the next run (or a resume) that
    /// sees its registry entry records it as orphaned, and its id is not silently reusable.
    @Test func killedRunnerIsRecordedOrphanedAndItsIdIsNotReusable() throws {
        let d = Harness.tempDir("rc-orphan")
        let marker = "orph-\(UUID().uuidString.prefix(8))"
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", marker, job: "research-job.sh 30 \(marker)", []), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/runs/a/started") })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.waitFor(10) { Harness.processes(matching: marker).isEmpty })
        // The next run of another id sees it.
        let next = try research(d, out: "runs/b", id: "next")
        #expect(next.r.code == 0, "stderr: \(next.r.stderr)")
        #expect(next.r.stdout.contains("ORPHANED: \(marker)"), "stdout: \(next.r.stdout)")
        var mine = Self.registry(d + "/runs/registry.jsonl").filter { $0["run_id"] as? String == marker }
        #expect(mine.map { $0["status"] as? String } == ["orphaned"], "\(mine)")
        // Its id is refused without rerun=1 ...
        let again = try research(d, out: "runs/c", id: marker)
        #expect(again.r.code == 4 && again.r.stderr.contains("orphaned") && again.r.stderr.contains("rerun=1"), "stderr: \(again.r.stderr)")
        // ... and runs as attempt 2 with it.
        let rerun = try research(d, out: "runs/c", id: marker, ["rerun=1"])
        #expect(rerun.r.code == 0, "stderr: \(rerun.r.stderr)")
        mine = Self.registry(d + "/runs/registry.jsonl").filter { $0["run_id"] as? String == marker }
        #expect(mine.map { $0["status"] as? String } == ["orphaned", "succeeded"] && mine.map { $0["attempt"] as? Int } == [1, 2], "\(mine)")

        // A resume of a killed run records the killed attempt as orphaned, then runs again.
        let m2 = "orph2-\(UUID().uuidString.prefix(8))"
        let (q, _, _) = try Harness.start(["run"] + Self.words("runs/e", m2, job: "research-job.sh 30 \(m2)", []), cwd: d)
        defer { if q.isRunning { kill(q.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/runs/e/started") })
        let killedRun = try #require(Harness.latestRun(d))
        kill(q.processIdentifier, SIGKILL)
        q.waitUntilExit()
        #expect(Harness.waitFor(10) { Harness.processes(matching: m2).isEmpty })
        try FileManager.default.removeItem(atPath: d + "/runs/e/started")
        let resumed = try Harness.run(["resume", (killedRun as NSString).lastPathComponent], cwd: d, env: ["JOB_SCORE": "0.4"], timeout: 60)
        #expect(resumed.code == 0, "stdout: \(resumed.stdout)\nstderr: \(resumed.stderr)")
        let e2 = Self.registry(d + "/runs/registry.jsonl").filter { $0["run_id"] as? String == m2 }
        #expect(e2.map { $0["status"] as? String } == ["orphaned", "succeeded"], "\(e2)")
    }

    /// rerun=1 keeps every attempt; the best run and the summary look at the latest entry of each run id, and say so.
    @Test func rerunAppendsAttemptsAndBestUsesTheLatest() throws {
        let d = Harness.tempDir("rc-rerun")
        #expect(try research(d, out: "runs/a", id: "same", ["metric=score"], env: ["JOB_SCORE": "0.9"]).r.code == 0)
        #expect(try research(d, out: "runs/b", id: "other", ["metric=score"], env: ["JOB_SCORE": "0.5"]).r.code == 0)
        let r = try research(d, out: "runs/a", id: "same", ["rerun=1", "metric=score"], env: ["JOB_SCORE": "0.2"])
        #expect(r.r.code == 0, "stderr: \(r.r.stderr)")
        let reg = Self.registry(d + "/runs/registry.jsonl")
        #expect(reg.map { $0["run_id"] as? String } == ["same", "other", "same"] && reg.map { $0["attempt"] as? Int } == [1, 1, 2], "\(reg)")
        let best = try #require(r.result["best"] as? [String: Any])
        #expect(best["run_id"] as? String == "other" && best["value"] as? Double == 0.5, "same's latest attempt scored 0.2: \(best)")
        #expect(best["candidates"] as? Int == 2)
        #expect(r.r.stdout.contains("latest entry of each run id"), "stdout: \(r.r.stdout)")
        let summary = try #require(Self.json(d + "/runs/a/summary.json"))
        let runs = try #require(summary["runs"] as? [String: Any])
        #expect(runs["runs"] as? Int == 2 && runs["entries"] as? Int == 3 && (runs["basis"] as? String)?.contains("latest entry of each run id") == true, "\(runs)")
        #expect(summary["attempt"] as? Int == 2)
    }

    /// A launcher job: its real work runs on in the background after it exits, and the
    /// stage (waitFor = "group") waits for the whole process group.
    @Test func launcherJobsBackgroundWorkPassesTheArtifactGate() throws {
        let d = Harness.tempDir("rc-launch")
        let x = try research(d, id: "launch-1", job: "research-launcher.sh 2", ["metric=score"], env: ["JOB_SCORE": "0.7"])
        #expect(x.r.code == 0, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        #expect(Self.json(d + "/runs/a/metrics.json")?["by"] as? String == "background work")
        #expect(x.result["status"] as? String == "succeeded")
    }

    /// waitFor = "group" keeps the stage's timeout and cancel on the whole group, and leaves no process behind.
    @Test func waitForGroupKeepsTimeoutOnTheGroup() throws {
        let d = Harness.tempDir("rc-group")
        let marker = "grp-\(UUID().uuidString.prefix(8))"
        Harness.write(d + "/r.lua", """
            local r = runStage{id = "l", cmd = "(sleep 30; : \(marker)) & exit 0", waitFor = "group", timeout = 1, grace = 1, allowFail = true}
            assert(r.status == "timed_out", r.status)
            local ok = runStage{id = "m", cmd = "(sleep 0.5; echo late > late.txt) & exit 0", waitFor = "group"}
            assert(ok.ok and baton.fs.read("late.txt") == "late\\n", "the group's work finished before the stage ended")
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.waitFor(10) { Harness.processes(matching: marker).isEmpty }, "no process of the group survives its timeout")
        Harness.write(d + "/bad.lua", "runStage{id = 'x', cmd = 'true', waitFor = 'children'}\n")
        let bad = try Harness.run(["run", "bad.lua"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("waitFor"), "stderr: \(bad.stderr)")
    }

    /// A cancel while Baton waits for the artifacts (no recipe code runs after it, the
    /// wrapper has exited) leaves the attempt `running`; the next run records it `cancelled`.
    @Test func cancelWhileAwaitingArtifactsIsRecordedByTheNextRun() throws {
        let d = Harness.tempDir("rc-awaitcancel")
        let (p, _, _) = try Harness.start(["run"] + Self.words("runs/a", "await-1", ["require=metrics.json,never.bin", "ready_timeout=60", "poll=30"]), cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(20) {
            Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("\"to\":\"awaiting_artifacts\"") == true
        })
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        let next = try research(d, out: "runs/b", id: "await-2")
        #expect(next.r.code == 0, "stderr: \(next.r.stderr)")
        let e = Self.registry(d + "/runs/registry.jsonl").filter { $0["run_id"] as? String == "await-1" }
        #expect(e.map { $0["status"] as? String } == ["cancelled"], "\(e)")
        #expect(next.r.stdout.contains("CANCELLED: await-1"), "stdout: \(next.r.stdout)")
    }
}
