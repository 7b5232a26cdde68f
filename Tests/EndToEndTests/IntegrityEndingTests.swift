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

extension IntegrityTests {
    // MARK: 4. attach cannot fake an ending

    /// `os.exit` typed at attach is refused (pointing to :cancel and :kill) and the run goes
    /// on; `:cancel` cancels it, and final.json names the client that did in `ended_by`.
    @Test func attachCannotFakeAnEnding() throws {
        let d = Harness.tempDir("attach-exit")
        Harness.write(d + "/r.lua", "runStage{id = 'bg', cmd = {'sleep', '600'}, background = true}\nbaton.log('waiting')\nbaton.sleep(600)\nreturn {done = true}\n")
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.latestRun(d).map { FileManager.default.fileExists(atPath: $0 + "/control.sock") } == true })
        let run = try #require(Harness.latestRun(d))
        for line in ["os.exit(0)", "os.exit(true)", "local e = os.exit; e(0)", "pcall(os.exit, 0)"] {
            let a = try Harness.run(["attach"], cwd: d, stdin: line + "\n", timeout: 30)
            #expect(a.stdout.contains(":cancel") || a.stderr.contains(":cancel"), "\(line): \(a.stdout) \(a.stderr)")
            #expect(a.stdout.contains("refused") || a.stderr.contains("refused"), "\(line): \(a.stdout) \(a.stderr)")
        }
        usleep(300_000)
        #expect(p.isRunning && Harness.final(run) == nil, "os.exit at attach ended the run: \(Harness.final(run) ?? [:])")
        // :cancel ends it, as baton cancel would, and says who
        let (c, cout, cerr) = try Harness.start(["attach"], cwd: d, stdin: ":cancel\n")
        let client = c.processIdentifier
        let out = Harness.Output(cout), err = Harness.Output(cerr)
        #expect(Harness.waitFor(20) { !c.isRunning }, "attach did not return after :cancel")
        #expect(Harness.waitFor(20) { !p.isRunning }, "the run did not end after :cancel: \(out.text) \(err.text)")
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "cancelled", "\(f)")
        let by = f["ended_by"] as? [String: Any]
        #expect(by?["uid"] as? Int == Int(getuid()) && by?["pid"] as? Int == Int(client), "ended_by: \(by ?? [:]), client \(client)")
        #expect((f["reason"] as? String)?.contains("baton attach") == true, "\(f["reason"] ?? "")")
        let mark = "BATON_RUN_ID=" + (run as NSString).lastPathComponent
        #expect(Harness.waitFor(3) { Harness.processes(withEnv: mark).isEmpty })
        // every control event is journaled: the refusals and the cancel
        let controls = Harness.events(Harness.journal(run), type: "control")
        #expect(controls.filter { $0["op"] as? String == "eval" }.count == 4, "\(controls)")
        #expect(controls.filter { ($0["result"] as? String)?.contains("os.exit is refused") == true }.count == 4, "\(controls)")
        #expect(controls.contains { $0["op"] as? String == "cancel" && $0["pid"] as? Int == Int(client) }, "\(controls)")
    }
}
