import Foundation
import Glibc
import Testing

/// Nothing an executor or the control socket does holds up the run's loop (issue 24, item 2).
/// No cluster needed: the stand-in sbatch (Tests/Fixtures/slow-sbatch) thinks for 5 s, then
/// refuses the job.
@Suite struct LoopNeverBlocksTests {
    /// A connection to a run's control socket that says nothing (a client stuck before its line).
    static func silentClient(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_un()
        a.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: a.sun_path) else { close(fd); return -1 }
        withUnsafeMutableBytes(of: &a.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        let r = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if r != 0 { close(fd); return -1 }
        return fd
    }

    @Test func aSlowSbatchHoldsUpNeitherALocalTimeoutNorAttach() throws {
        let dir = Harness.tempDir("slow-sbatch")
        Harness.write(dir + "/r.lua", """
            local t0 = baton.now()
            local q = runStage{id = "quick", cmd = {"sleep", "30"}, timeout = 1, grace = 0.5, allowFail = true, background = true}
            local b = runStage{id = "submitted", cmd = {"true"}, executor = "slurm", background = true, allowFail = true}
            local r = q:wait()
            baton.fs.write("timed-out-after", string.format("%s %.3f", r.status, baton.now() - t0))
            local s = b:wait()
            baton.fs.write("submitted", s.status .. ": " .. tostring(s.message))
            """)
        let done = dir + "/sbatch-answered"
        let path = Harness.fixtures + "/slow-sbatch:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let (p, out, err) = try Harness.start(["run", "r.lua"], cwd: dir, env: ["PATH": path, "BATON_SLOW_SBATCH_DONE": done])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        // The local background stage's 1 s timeout fires on time while sbatch thinks.
        #expect(Harness.waitFor(10) { Harness.read(dir + "/timed-out-after") != nil })
        let words = (Harness.read(dir + "/timed-out-after") ?? "").split(separator: " ")
        #expect(words.first == "timed_out", "\(words)")
        let after = Double(words.last ?? "") ?? .infinity
        #expect(after >= 1 && after < 2, "the 1 s timeout fired after \(after) s")
        #expect(!FileManager.default.fileExists(atPath: done), "sbatch was still thinking then")
        // attach answers meanwhile, even with a client connected that never says anything.
        let run = Harness.latestRun(dir) ?? ""
        #expect(Harness.waitFor(5) { FileManager.default.fileExists(atPath: run + "/control.sock") })
        let silent = Self.silentClient(run + "/control.sock")
        #expect(silent >= 0)
        defer { if silent >= 0 { close(silent) } }
        let a = try Harness.run(["attach"], cwd: dir, stdin: "return 1 + 1\n", timeout: 30)
        #expect(a.code == 0 && a.stdout == "2\n", "\(a)")
        // (Blocked, the runner would answer only after sbatch, and after the silent client's 5 s.)
        #expect(!FileManager.default.fileExists(atPath: done), "attach answered while sbatch was still thinking")
        // Then sbatch answers (a refusal): the stage fails with Slurm's words; the run goes on.
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile() + err.fileHandleForReading.readDataToEndOfFile(),
                          as: UTF8.self)
        #expect(p.terminationStatus == 0, "\(text)")
        let submitted = Harness.read(dir + "/submitted") ?? ""
        #expect(submitted.hasPrefix("failed: Slurm rejected the job: ") && submitted.contains("Invalid account"), "\(submitted)")
        let ev = Harness.journal(run)
        let started = Harness.events(ev, type: "stage_started").filter { $0["id"] as? String == "submitted" }
        #expect(started.count == 1 && started.first?["native_id"] == nil, "a job that never had an id: \(started)")
        let finished = Harness.events(ev, type: "stage_finished").filter { $0["id"] as? String == "submitted" }
        #expect(finished.first?["failure_class"] as? String == "deterministic")
    }

    /// Ctrl-C while sbatch thinks: its answer is awaited (the job may exist: it would be scancelled),
    /// then the stage ends as cancelled and the run as interrupted.
    @Test func ctrlCWhileSbatchThinksCancelsTheStageOnceItAnswers() throws {
        let dir = Harness.tempDir("slow-sbatch-sigint")
        Harness.write(dir + "/r.lua", "runStage{id = 'submitted', cmd = {'true'}, executor = 'slurm'}\n")
        let done = dir + "/sbatch-answered"
        let path = Harness.fixtures + "/slow-sbatch:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: dir, env: ["PATH": path, "BATON_SLOW_SBATCH_DONE": done])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(10) {
            Harness.processes(matching: "slow-sbatch/sbatch --parsable " + dir).count > 0 && Harness.latestRun(dir) != nil
        })
        kill(p.processIdentifier, SIGINT)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 130)
        #expect(FileManager.default.fileExists(atPath: done), "sbatch was let answer")
        let ev = Harness.journal(Harness.latestRun(dir) ?? "")
        #expect(Harness.events(ev, type: "stage_finished").first?["status"] as? String == "cancelled", "\(ev)")
    }

    /// Submissions run beside each other, but never more than 8 at once (a wide fan-out must not
    /// open all its connections to the controller at the same moment).
    @Test func aFanOutSubmitsAFewAtATime() throws {
        let dir = Harness.tempDir("counting-sbatch")
        let counts = dir + "/sbatch"
        try FileManager.default.createDirectory(atPath: counts, withIntermediateDirectories: true)
        Harness.write(dir + "/r.lua", """
            local items = {}
            for i = 1, 20 do items[i] = i end
            parallel(items, function(i)
              runStage{id = "s" .. i, cmd = {"true"}, executor = "slurm", allowFail = true}
            end, {maxConcurrency = 20})
            """)
        let path = Harness.fixtures + "/counting-sbatch:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = try Harness.run(["run", "r.lua"], cwd: dir, env: ["PATH": path, "BATON_SBATCH_COUNT_DIR": counts], timeout: 60)
        #expect(r.code == 0, "\(r.stderr)")
        let seen = (Harness.read(counts + "/counts") ?? "").split(separator: "\n").compactMap { Int($0) }
        #expect(seen.count == 20, "one sbatch per stage: \(seen)")
        #expect((seen.max() ?? 0) <= 8, "at most 8 under way at once: \(seen)")
        #expect((seen.max() ?? 0) >= 2, "beside each other, not one after another: \(seen)")
    }
}
