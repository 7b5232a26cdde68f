import Foundation
import Testing

/// The one-node cluster of scripts/slurm-dev, started once for the test process.
enum SlurmCluster {
    /// SLURM_CONF of the running cluster, or nil (with the reason printed) where it cannot start.
    static let conf: String? = {
        let script = Harness.packageRoot.appendingPathComponent("scripts/slurm-dev").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: script)
        p.arguments = ["up"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        do { try p.run() } catch {
            print("slurm: tests skipped: cannot run scripts/slurm-dev (\(error))")
            return nil
        }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0, let line = text.split(separator: "\n").first(where: { $0.hasPrefix("export SLURM_CONF=") }) else {
            print("slurm: tests skipped: Slurm cannot start here: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
            return nil
        }
        return String(line.dropFirst("export SLURM_CONF=".count))
    }()

    static var available: Bool { conf != nil }

    /// The environment a Slurm test runs baton with: the cluster, a short poll interval.
    static func env(_ extra: [String: String] = [:]) -> [String: String] {
        var e = ["SLURM_CONF": conf ?? "", "BATON_SLURM_POLL_SEC": "0.5"]
        for (k, v) in extra { e[k] = v }
        return e
    }

    /// Output of a Slurm command against the test cluster.
    static func tool(_ args: [String]) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["SLURM_CONF"] = conf
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try? p.run()
        let d = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: d, as: UTF8.self)
    }

    /// Jobs of a run the controller knows (any state): job names carry the run id.
    static func jobs(run: String, states: String = "all") -> [(id: String, state: String)] {
        tool(["squeue", "--noheader", "--states=\(states)", "--format=%i|%T|%j"]).split(separator: "\n").compactMap { l in
            let f = l.split(separator: "|").map(String.init)
            guard f.count == 3, f[2].hasPrefix("baton-\(run)-") else { return nil }
            return (f[0], f[1])
        }
    }

    static let live: Set<String> = ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"]
}

@Suite(.enabled(if: SlurmCluster.available, "Slurm cannot start here (see the printed reason)"))
struct SlurmTests {
    func runRecipe(_ lua: String, name: String, args: [String] = [], env: [String: String] = [:],
                   timeout: Double = 120) throws -> (Harness.Result, String, String) {
        let dir = Harness.tempDir(name)
        Harness.write(dir + "/r.lua", lua)
        let r = try Harness.run(["run"] + args + ["r.lua"], cwd: dir, env: SlurmCluster.env(env), timeout: timeout)
        return (r, dir, Harness.latestRun(dir) ?? "")
    }

    @Test func aStagePassesWithItsOutputInTheStageLogsAndItsJobIdJournaled() throws {
        let (r, _, run) = try runRecipe("""
            local r = runStage{id = "hello", cmd = {"sh", "-c", "echo out-$BATON_STAGE; echo err-line >&2"}, executor = "slurm",
                               slurm = {time = "5", mem = 100, cpus = 1}}
            assert(r.ok and r.exit == 0, "not ok")
            assert(r.stdout:find("out-hello", 1, true), "stdout: " .. r.stdout)
            assert(r.stderr:find("err-line", 1, true), "stderr: " .. r.stderr)
            """, name: "slurm-ok")
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Harness.read(run + "/stages/hello/1.out")?.contains("out-hello") == true)
        let ev = Harness.journal(run)
        let started = Harness.events(ev, type: "stage_started").first
        #expect(started?["executor"] as? String == "slurm")
        let id = started?["native_id"] as? String ?? ""
        #expect(!id.isEmpty)
        #expect(Harness.events(ev, type: "stage_queued").allSatisfy { $0["native_id"] as? String == id })
        let script = Harness.read(run + "/stages/hello/1.sh") ?? ""
        #expect(script.contains("#SBATCH --no-requeue") && script.contains("#SBATCH --time=5") && script.contains("#SBATCH --mem=100M"))
    }

    @Test func aFailingExitCodeIsReportedAndRetriesApply() throws {
        let (r, _, run) = try runRecipe("""
            baton.executor("slurm")
            local r = runStage{id = "bad", cmd = "echo boom >&2; exit 7", retries = 1, retryOn = {"deterministic"},
                               backoff = {0.1, 1, 0.1}, allowFail = true}
            assert(r.status == "failed" and r.exit == 7 and r.attempts == 2, r.status .. " " .. tostring(r.exit))
            assert(r.stderr:find("boom"))
            """, name: "slurm-fail")
        #expect(r.code == 0, "\(r.stderr)")
        let ids = Set(Harness.events(Harness.journal(run), type: "stage_started").compactMap { $0["native_id"] as? String })
        #expect(ids.count == 2, "two attempts, two jobs")
    }

    @Test func runExecutorOptionMovesAnUneditedRecipeToTheCluster() throws {
        let (r, _, run) = try runRecipe("""
            local r = runStage{id = "plain", cmd = {"true"}}
            """, name: "slurm-flag", args: ["--executor", "slurm"])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Harness.events(Harness.journal(run), type: "stage_started").first?["executor"] as? String == "slurm")
    }

    @Test func anUnknownExecutorIsAUsageError() throws {
        let dir = Harness.tempDir("slurm-unknown")
        Harness.write(dir + "/r.lua", "runStage{id = 'a', cmd = {'true'}, executor = 'slurmm'}\n")
        let r = try Harness.run(["run", "r.lua"], cwd: dir)
        #expect(r.code == 3 && r.stderr.contains("did you mean 'slurm'"), "\(r.stderr)")
        let f = try Harness.run(["run", "--executor", "pbs", "r.lua"], cwd: dir)
        #expect(f.code == 3 && f.stderr.contains("unknown executor 'pbs'"), "\(f.stderr)")
    }

    @Test func aRejectedSubmissionFailsTheStageAtOnceWithSlurmsMessage() throws {
        let (r, _, run) = try runRecipe("""
            runStage{id = "nowhere", cmd = {"true"}, executor = "slurm", slurm = {partition = "no-such-partition"}}
            """, name: "slurm-reject")
        #expect(r.code == 1)
        #expect(r.stderr.contains("Invalid partition name specified"), "\(r.stderr)")
        let fin = Harness.events(Harness.journal(run), type: "stage_finished")
        #expect(fin.count == 1 && fin.first?["failure_class"] as? String == "deterministic")
    }

    @Test func aTransientSubmissionFailureIsTriedAgain() throws {
        let dir = Harness.tempDir("slurm-transient")
        // An sbatch that times out once, as a busy controller does, then works.
        Harness.write(dir + "/bin/sbatch", """
            #!/bin/sh
            if [ ! -e \(dir)/failed-once ]; then
              touch \(dir)/failed-once
              echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
              exit 1
            fi
            exec /usr/bin/sbatch "$@"
            """, mode: 0o755)
        Harness.write(dir + "/r.lua", "runStage{id = 'a', cmd = {'true'}, executor = 'slurm'}\n")
        let path = dir + "/bin:" + Harness.fixtures + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = try Harness.run(["run", "r.lua"], cwd: dir, env: SlurmCluster.env(["PATH": path]))
        #expect(r.code == 0, "\(r.stderr)")
        let warned = Harness.events(Harness.journal(Harness.latestRun(dir) ?? ""), type: "log")
            .contains { ($0["message"] as? String ?? "").contains("Socket timed out") }
        #expect(warned, "the retry is journaled")
    }

    @Test func aJobKilledWithoutAnExitFileFailsWithAReasonInsteadOfHanging() throws {
        let dir = Harness.tempDir("slurm-lost")
        Harness.write(dir + "/r.lua", "runStage{id = 'lost', cmd = {'sleep', '300'}, executor = 'slurm'}\n")
        let (p, out, err) = try Harness.start(["run", "r.lua"], cwd: dir, env: SlurmCluster.env(["BATON_SLURM_EXIT_WAIT_SEC": "1"]))
        var id = ""
        #expect(Harness.waitFor(60) {
            let run = Harness.latestRun(dir) ?? ""
            guard (Harness.read(run + "/journal.jsonl") ?? "").contains("\"state\":\"RUNNING\"") else { return false }
            id = SlurmCluster.jobs(run: (run as NSString).lastPathComponent).first?.id ?? ""
            return !id.isEmpty
        })
        // SIGKILL to the job script (as the OOM killer or a dying node would): it cannot write the exit file.
        let script = Harness.processes(matching: "job\(String(repeating: "0", count: max(0, 5 - id.count)))\(id)/slurm_script")
        #expect(!script.isEmpty, "the job script runs on this node")
        for pid in script { kill(pid, SIGKILL) }
        let ended = Harness.waitFor(30) { !p.isRunning }
        #expect(ended, "the run ends instead of waiting forever")
        if !ended { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile() + err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus == 1)
        #expect(text.contains("without an exit status file"), "\(text)")
    }

    @Test func aMinJobAgeShorterThanThreePollsIsWarnedAbout() throws {
        let (r, _, run) = try runRecipe("runStage{id = 'a', cmd = {'true'}, executor = 'slurm'}\n", name: "slurm-minjobage",
                                        env: ["BATON_SLURM_POLL_SEC": "200"])
        #expect(r.code == 0, "\(r.stderr)")
        let warned = Harness.events(Harness.journal(run), type: "log").contains { ($0["message"] as? String ?? "").contains("MinJobAge") }
        #expect(warned)
    }

    @Test func ctrlCScancelsEveryJobOfTheRun() throws {
        let dir = Harness.tempDir("slurm-sigint")
        Harness.write(dir + "/r.lua", """
            baton.executor("slurm")
            parallel({1, 2, 3}, function(i) runStage{id = "s" .. i, cmd = {"sleep", "300"}} end, {maxConcurrency = 3})
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: dir, env: SlurmCluster.env())
        var runID = ""
        #expect(Harness.waitFor(60) {
            runID = ((Harness.latestRun(dir) ?? "") as NSString).lastPathComponent
            return SlurmCluster.jobs(run: runID).filter { $0.state == "RUNNING" }.count == 3
        })
        kill(p.processIdentifier, SIGINT)
        #expect(Harness.waitFor(30) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        // The runner has scancelled them; Slurm may still show them COMPLETING for a moment.
        // (Non-empty: an squeue that failed or forgot them would prove nothing.)
        #expect(Harness.waitFor(20) {
            let jobs = SlurmCluster.jobs(run: runID)
            return jobs.count == 3 && jobs.allSatisfy { !SlurmCluster.live.contains($0.state) }
        }, "\(SlurmCluster.jobs(run: runID))")
    }

    @Test func aStageTimeoutScancelsTheJob() throws {
        let (r, _, run) = try runRecipe("""
            local r = runStage{id = "slow", cmd = {"sleep", "300"}, executor = "slurm", timeout = 2, grace = 1, allowFail = true}
            assert(r.status == "timed_out", r.status)
            """, name: "slurm-timeout")
        #expect(r.code == 0, "\(r.stderr)")
        let runID = (run as NSString).lastPathComponent
        #expect(Harness.waitFor(20) { SlurmCluster.jobs(run: runID).allSatisfy { !SlurmCluster.live.contains($0.state) } })
    }

    @Test func aJobKilledByItsWalltimeIsTimedOut() throws {
        // Slurm's smallest walltime is a minute, and it checks limits every 30 s or so.
        let (r, _, run) = try runRecipe("""
            local r = runStage{id = "wall", cmd = {"sleep", "600"}, executor = "slurm", slurm = {time = "1"}, allowFail = true}
            assert(r.status == "timed_out", r.status .. ": " .. tostring(r.message))
            print("walltime:", r.message)
            """, name: "slurm-walltime", timeout: 240)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("walltime"))
        #expect(Harness.events(Harness.journal(run), type: "stage_finished").first?["status"] as? String == "timed_out")
    }

    @Test func aFanOutOfTwentyJobsRunsTogether() throws {
        let (r, _, run) = try runRecipe("""
            local items = {}
            for i = 1, 20 do items[i] = i end
            local out = parallel(items, function(i)
              return runStage{id = "fan-" .. i, cmd = {"sh", "-c", "sleep 2; echo $0", tostring(i)}, executor = "slurm"}.stdout
            end, {maxConcurrency = 20})
            for i = 1, 20 do assert(out[i]:find(tostring(i)), "item " .. i) end
            """, name: "slurm-fan", timeout: 180)
        #expect(r.code == 0, "\(r.stderr)")
        let ev = Harness.journal(run)
        #expect(Set(Harness.events(ev, type: "stage_started").compactMap { $0["native_id"] as? String }).count == 20)
        // Polling stayed at one query per interval: not one per job.
        #expect(Harness.events(ev, type: "stage_finished").count == 20)
    }

    @Test func cancelOfARunWithPendingAndRunningJobsLeavesNothingInTheQueue() throws {
        let dir = Harness.tempDir("slurm-cancel")
        Harness.write(dir + "/r.lua", """
            baton.executor("slurm")
            local a = runStage{id = "running", cmd = {"sleep", "300"}, background = true}
            local b = runStage{id = "pending", cmd = {"sleep", "300"}, background = true, slurm = {extra = {"--begin=now+600"}}}
            a:wait()
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: dir, env: SlurmCluster.env())
        var runID = ""
        let both = Harness.waitFor(60) {
            guard let run = Harness.latestRun(dir) else { return false }
            runID = (run as NSString).lastPathComponent
            let states = Dictionary(SlurmCluster.jobs(run: runID).map { ($0.state, 1) }, uniquingKeysWith: +)
            return states["RUNNING"] == 1 && states["PENDING"] == 1
        }
        #expect(both, "one running and one pending job")
        // status shows each job's id, queue state and node (once the runner has journaled both states).
        var shown = ""
        let seen = Harness.waitFor(20) {
            shown = (try? Harness.run(["status", runID], cwd: dir))?.stdout ?? ""
            return shown.range(of: "slurm job [0-9]+ RUNNING on localnode", options: .regularExpression) != nil
                && shown.range(of: "slurm job [0-9]+ PENDING \\(BeginTime\\)", options: .regularExpression) != nil
        }
        #expect(seen, "status: \(shown)")
        let st = try Harness.run(["status", "--json", runID], cwd: dir).stdout
        #expect(st.contains("\"native_id\"") && st.range(of: "\"queue\" ?: ?\"PENDING\"", options: .regularExpression) != nil, "\(st)")
        let c = try Harness.run(["cancel", runID], cwd: dir)
        #expect(c.code == 0, "\(c.stderr)")
        p.waitUntilExit()
        #expect(Harness.waitFor(20) { SlurmCluster.jobs(run: runID).allSatisfy { !SlurmCluster.live.contains($0.state) } },
                "nothing of the run left in squeue: \(SlurmCluster.jobs(run: runID))")
        #expect(Harness.final(dir + "/.baton/runs/" + runID)?["status"] as? String == "cancelled")
    }

    @Test func resumeAfterKill9ReattachesInsteadOfSubmittingAgain() throws {
        let dir = Harness.tempDir("slurm-resume")
        Harness.write(dir + "/r.lua", """
            baton.executor("slurm")
            parallel({"quick", "slow"}, function(name)
              runStage{id = name, cmd = {"sh", "-c", name == "quick" and "sleep 1; echo quick-done" or "sleep 6; echo slow-done"}}
            end)
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: dir, env: SlurmCluster.env())
        var run = ""
        let started = Harness.waitFor(60) {
            guard let r = Harness.latestRun(dir) else { return false }
            run = r
            return Harness.read(r + "/journal.jsonl")?.components(separatedBy: "\"state\":\"RUNNING\"").count ?? 0 >= 3
        }
        #expect(started, "both jobs running")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let runID = (run as NSString).lastPathComponent
        // The quick one finishes while no runner is there; the slow one is still running.
        #expect(Harness.waitFor(30) { FileManager.default.fileExists(atPath: run + "/stages/quick/1.exit") })
        #expect(SlurmCluster.jobs(run: runID).contains { $0.state == "RUNNING" }, "the slow job survived the runner")
        let r = try Harness.run(["resume", runID], cwd: dir, env: SlurmCluster.env(), timeout: 90)
        #expect(r.code == 0, "\(r.stdout)\(r.stderr)")
        #expect(SlurmCluster.jobs(run: runID).count == 2, "no job submitted again: \(SlurmCluster.jobs(run: runID))")
        let reattached = Harness.events(Harness.journal(run), type: "stage_started").filter { $0["reattached"] as? Bool == true }
        #expect(Set(reattached.compactMap { $0["id"] as? String }) == ["quick", "slow"])
        #expect(Harness.read(run + "/stages/slow/1.out")?.contains("slow-done") == true)
    }

    @Test func cancelOfAnOrphanedRunScancelsItsJobs() throws {
        let dir = Harness.tempDir("slurm-orphan")
        Harness.write(dir + "/r.lua", "runStage{id = 'long', cmd = {'sleep', '300'}, executor = 'slurm'}\n")
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: dir, env: SlurmCluster.env())
        var run = ""
        #expect(Harness.waitFor(60) {
            run = Harness.latestRun(dir) ?? ""
            return (Harness.read(run + "/journal.jsonl") ?? "").contains("\"state\":\"RUNNING\"")
        })
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let runID = (run as NSString).lastPathComponent
        #expect(SlurmCluster.jobs(run: runID).contains { $0.state == "RUNNING" }, "the job outlives its runner")
        let c = try Harness.run(["cancel", runID], cwd: dir, env: SlurmCluster.env())
        #expect(c.code == 0, "\(c.stderr)")
        #expect(Harness.waitFor(20) { SlurmCluster.jobs(run: runID).allSatisfy { !SlurmCluster.live.contains($0.state) } })
    }

    /// A directory with counting wrappers of the Slurm status commands, first on PATH.
    static func countingWrappers(_ dir: String) -> String {
        let bin = dir + "/counting-bin"
        for tool in ["squeue", "sacct", "scontrol", "sbatch"] {
            Harness.write(bin + "/" + tool, """
                #!/bin/sh
                echo "$*" >> \(dir)/\(tool).calls
                exec /usr/bin/\(tool) "$@"
                """, mode: 0o755)
        }
        return bin
    }

    @Test func hundredJobsInFlightCostOneStatusQueryPerPollInterval() throws {
        let dir = Harness.tempDir("slurm-load")
        let bin = Self.countingWrappers(dir)
        Harness.write(dir + "/r.lua", """
            local items = {}
            for i = 1, 100 do items[i] = i end
            local t0 = baton.now()
            parallel(items, function(i)
              runStage{id = "load-" .. i, cmd = {"sleep", "4"}, executor = "slurm"}
            end, {maxConcurrency = 100})
            baton.fs.write("elapsed", tostring(baton.now() - t0))
            """)
        let path = bin + ":" + Harness.fixtures + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = try Harness.run(["run", "r.lua"], cwd: dir, env: SlurmCluster.env(["PATH": path]), timeout: 240)
        #expect(r.code == 0, "\(r.stderr)")
        let elapsed = Double(Harness.read(dir + "/elapsed") ?? "") ?? 0
        let queries = (Harness.read(dir + "/squeue.calls") ?? "").split(separator: "\n")
        let submits = (Harness.read(dir + "/sbatch.calls") ?? "").split(separator: "\n").count
        let interval = 0.5
        // One query per interval (plus the first and a last one), never one per job.
        let allowed = Int((elapsed / interval).rounded(.up)) + 2
        print("slurm: 100 jobs in \(String(format: "%.1f", elapsed)) s: \(queries.count) squeue queries (at most \(allowed) allowed), \(submits) sbatch")
        #expect(submits == 100)
        #expect(queries.count <= allowed, "\(queries.count) queries in \(elapsed) s")
        // The jobs were in flight together: one query asked about (nearly) all of them at once.
        let widest = queries.map { q in q.split(separator: ",").count }.max() ?? 0
        #expect(widest >= 90, "the widest query named \(widest) jobs")
        #expect((Harness.read(dir + "/sacct.calls") ?? "").isEmpty, "no accounting here: sacct is never asked")
    }
}
