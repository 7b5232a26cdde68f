import Foundation
import Testing

/// Issue 22, items 2 and 4: every ending is true. A run stuck inside a C call still ends on
/// the budget, a signal or cancel; attach cannot fake an ending.
extension IntegrityTests {
    // MARK: 2. cancel, budget and signals end a run stuck inside a C call

    static let stuckRecipe = """
        runStage{id = 'bg', cmd = {'sleep', '600'}, background = true}
        baton.log('stuck now')
        local s = string.rep("a", 3000)
        s:find(string.rep("a*", 12) .. "b")
        """

    enum Ender: String, CaseIterable, Sendable { case budget, sigint, sigterm, cancel }

    /// Lua's pattern matcher runs for hours where no hook fires: each way of ending the run
    /// ends it within a few seconds, with a true final.json and nothing left alive.
    @Test(arguments: Ender.allCases)
    func aRunStuckInACCallStillEnds(how: Ender) throws {
        let d = Harness.tempDir("stuck-\(how.rawValue)")
        Harness.write(d + "/r.lua", Self.stuckRecipe)
        let args = ["run"] + (how == .budget ? ["--budget", "2s"] : []) + ["r.lua"]
        let (p, _, errPipe) = try Harness.start(args, cwd: d)
        let err = Harness.Output(errPipe)
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("stuck now") == true })
        let run = try #require(Harness.latestRun(d))
        let mark = "BATON_RUN_ID=" + (run as NSString).lastPathComponent
        #expect(Harness.waitFor(5) { !Harness.processes(withEnv: mark).isEmpty }, "the background stage never started")
        usleep(300_000)   // well inside the C call
        let asked = Date()
        switch how {
        case .budget: break
        case .sigint: kill(p.processIdentifier, SIGINT)
        case .sigterm: kill(p.processIdentifier, SIGTERM)
        case .cancel:
            let c = try Harness.run(["cancel", (run as NSString).lastPathComponent], cwd: d, timeout: 30)
            #expect(c.code == 0, "cancel: \(c.stdout) \(c.stderr)")
        }
        // grace (the stage dies at SIGTERM) + 2 s; the budget's own 2 s counted from the start
        let limit = how == .budget ? 6.0 : 4.0
        let ended = Harness.waitFor(20) { !p.isRunning }
        let took = Date().timeIntervalSince(asked)
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(ended && took <= limit, "\(how): the run took \(took) s to end (limit \(limit)); stderr: \(err.text)")
        let f = try #require(Harness.final(run), "no final.json after \(how)")
        #expect(f["status"] as? String == "cancelled")
        let reason = f["reason"] as? String ?? ""
        switch how {
        case .budget:
            #expect(p.terminationStatus == 124 && f["exit_code"] as? Int == 124)
            #expect(reason.contains("run budget of 2s exceeded"), "reason: \(reason)")
        case .sigint:
            #expect(p.terminationStatus == 130 && f["exit_code"] as? Int == 130)
            #expect(reason.contains("SIGINT"), "reason: \(reason)")
        case .sigterm, .cancel:
            #expect(p.terminationStatus == 143 && f["exit_code"] as? Int == 143)
            #expect(reason.contains("SIGTERM"), "reason: \(reason)")
        }
        #expect(f["ended_at"] is String && f["duration_ms"] is Int, "\(f)")
        #expect(Harness.waitFor(3) { Harness.processes(withEnv: mark).isEmpty }, "left alive: \(Harness.processes(withEnv: mark))")
        let s = try Harness.run(["status", (run as NSString).lastPathComponent], cwd: d)
        #expect(s.stdout.contains("cancelled"), "status: \(s.stdout) \(s.stderr)")
    }
}
