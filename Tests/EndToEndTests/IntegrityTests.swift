import Foundation
import Testing

/// Issue 22: integrity and containment, each item held by the binary on real processes,
/// files and signals.
@Suite struct IntegrityTests {
    // MARK: 3. every fatal signal leaves a final record

    static let fatalSignals: [(Int32, String)] = [
        (SIGQUIT, "SIGQUIT"), (SIGUSR1, "SIGUSR1"), (SIGUSR2, "SIGUSR2"), (SIGXCPU, "SIGXCPU"),
        (SIGXFSZ, "SIGXFSZ"), (SIGVTALRM, "SIGVTALRM"), (SIGPROF, "SIGPROF"), (SIGALRM, "SIGALRM"),
    ]

    /// Each signal whose default action ends a process ends the run with a final.json naming
    /// it and exit 128+N. SIGALRM is tried with a budget in force too: it must not pass for
    /// the budget running out.
    @Test(arguments: fatalSignals.map { $0.0 }, [false, true])
    func everyFatalSignalLeavesAFinal(sig: Int32, withBudget: Bool) throws {
        let name = Self.fatalSignals.first { $0.0 == sig }!.1
        let d = Harness.tempDir("fatal\(sig)")
        Harness.write(d + "/r.lua", "baton.log('sleeping')\nbaton.sleep(60)\n")
        let (p, _, _) = try Harness.start(["run"] + (withBudget ? ["--budget", "1h"] : []) + ["r.lua"], cwd: d)
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("sleeping") == true })
        kill(p.processIdentifier, sig)
        #expect(Harness.waitFor(20) { !p.isRunning }, "\(name) did not end the run")
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(p.terminationReason == .exit, "baton died of \(name) instead of ending the run")
        #expect(p.terminationStatus == 128 + sig)
        let run = try #require(Harness.latestRun(d))
        _ = Harness.journal(run)
        let f = try #require(Harness.final(run), "no final.json after \(name)")
        #expect(f["status"] as? String == "cancelled")
        #expect(f["exit_code"] as? Int == Int(128 + sig))
        #expect((f["reason"] as? String)?.contains(name) == true, "reason: \(f["reason"] ?? "nil")")
    }

    /// The budget still ends a run as the budget (124), distinct from an outside SIGALRM.
    @Test func theBudgetIsStillTheBudget() throws {
        let d = Harness.tempDir("budget")
        Harness.write(d + "/r.lua", "baton.sleep(60)\n")
        let r = try Harness.run(["run", "--budget", "1s", "r.lua"], cwd: d, timeout: 30)
        #expect(r.code == 124, "stderr: \(r.stderr)")
        let f = try #require(Harness.latestRun(d).flatMap { Harness.final($0) })
        #expect((f["reason"] as? String)?.contains("run budget") == true)
    }

    // MARK: 5. one stage, one log folder

    /// Ids that the old mapping folded together each get their own folder; `log --stage`
    /// shows each its own output; a run written with the old layout still reads.
    @Test func oneStageOneLogFolder() throws {
        let d = Harness.tempDir("folders")
        let ids = ["train/1", "train_1", "train%2F1", "train 1", ".hidden", "..", "Train_1"]
        Harness.write(d + "/r.lua", ids.enumerated().map { i, id in
            "runStage{id = \(luaQuote(id)), cmd = {'echo', 'output-\(i)'}}" }.joined(separator: "\n") + "\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        let started = Harness.events(Harness.journal(run), type: "stage_started")
        let folders = started.compactMap { (($0["logs"] as? [String: Any])?["stdout"] as? String).map { ($0 as NSString).deletingLastPathComponent } }
        #expect(Set(folders).count == ids.count, "folders: \(folders)")
        for f in folders { #expect(f.hasPrefix(run + "/stages/") && !f.dropFirst(run.count + 8).contains("/"), "\(f)") }
        for (i, id) in ids.enumerated() {
            let l = try Harness.run(["log", "--stage", id], cwd: d)
            #expect(l.code == 0 && l.stdout == "output-\(i)\n", "log --stage \(id): \(l.stdout) \(l.stderr)")
        }
        // The old layout (every unsafe character as '_'): the journal's paths are followed.
        let old = run + "/stages/old_layout"
        try FileManager.default.moveItem(atPath: folders[0], toPath: old)
        let j = try #require(Harness.read(run + "/journal.jsonl"))
        try j.replacingOccurrences(of: folders[0], with: old).write(toFile: run + "/journal.jsonl", atomically: true, encoding: .utf8)
        let l = try Harness.run(["log", "--stage", ids[0]], cwd: d)
        #expect(l.code == 0 && l.stdout == "output-0\n", "\(l.stdout) \(l.stderr)")
    }
}

func luaQuote(_ s: String) -> String {
    "\"" + s.unicodeScalars.map { u -> String in
        if u == "\"" || u == "\\" { return "\\" + String(u) }
        if u.value < 0x20 || u.value == 0x7f { return "\\\(u.value)" }
        return String(u)
    }.joined() + "\""
}
