import Foundation
import Testing

/// recipes/gap09.lua end to end: the real binary, a stand-in agent (Tests/Fixtures/gap09-agent.sh),
/// GAP-09's golden paths and every row of its failure matrix.
@Suite struct RecipeGap09Tests {
    static let recipe = Harness.packageRoot.appendingPathComponent("recipes/gap09.lua").path

    struct Run {
        var r: Harness.Result
        var dir: String
        var final: [String: Any]
        var result: [String: Any] { final["result"] as? [String: Any] ?? [:] }
        var stages: [[String: Any]] { result["stages"] as? [[String: Any]] ?? [] }
        /// ("stage", "session") for every agent call, in order.
        var calls: [(String, String)] {
            (Harness.read(dir + "/agent.log") ?? "").split(separator: "\n").map {
                let p = $0.split(separator: " ")
                return (String(p[0]), p.count > 1 ? String(p[1]) : "")
            }
        }
        var callStages: [String] { calls.map(\.0) }
    }

    /// Runs gap09 in a fresh directory, the agent working in ./work.
    func gap09(_ words: [String], options: [String] = [], env: [String: String] = [:], agent: Bool = true,
               preflight: String? = "true;true", sourceLocation: SourceLocation = #_sourceLocation) throws -> Run {
        let d = Harness.tempDir("gap09")
        try FileManager.default.createDirectory(atPath: d + "/work", withIntermediateDirectories: true)
        var w = words + ["cwd=work", "timeout=5"]
        if agent { w.append("agent=gap09-agent.sh") }
        if let p = preflight { w.append("preflight=\(p)") }
        var e = env
        if e["GAP09_AGENT"] == nil { e["GAP09_AGENT"] = "" }
        e["AGENT_STATE"] = d
        let r = try Harness.run(["run"] + options + [Self.recipe] + w, cwd: d, env: e, timeout: 60)
        // Words kit.args refuses are a usage error that leaves no run (issue 23 item 10).
        if r.code == 3, Harness.latestRun(d) == nil { return Run(r: r, dir: d, final: [:]) }
        let run = try #require(Harness.latestRun(d), sourceLocation: sourceLocation)
        _ = Harness.journal(run, sourceLocation: sourceLocation)
        let f = try #require(Harness.final(run), "no final.json; stderr: \(r.stderr)", sourceLocation: sourceLocation)
        return Run(r: r, dir: d, final: f)
    }

    // MARK: the modules

    @Test func riskKeywordTableAndHelpers() throws {
        let d = Harness.tempDir("gap09-mod")
        Harness.write(d + "/r.lua", """
            local risk = require("gap09.risk")
            local function level(t) return (risk.assess(t)) end
            assert(level("Fix typo in README.md: change 'teh' to 'the'") == "low")
            assert(level("Add authentication endpoint with JWT tokens") == "high")
            assert(level("Add JWT authentication endpoint") == "high")
            assert(level("Refactor the caching module") == "medium")
            assert(level("Test task") == "medium", "no keyword: medium by default")
            assert(level("AUTHORIZE users") == "high", "prefix keywords, case-insensitive")
            assert(level("Fix the docs typo in the database schema") == "high", "the highest level wins")
            local l, kws, why = risk.assess("Add JWT authentication")
            assert(why:find("jwt") and why:find("auth"), why)
            assert(risk.assess("") == nil and risk.assess("   ") == nil)
            local none, reason = risk.assess("")
            assert(reason == "Task description required", reason)
            -- The table is policy: a recipe may extend it.
            table.insert(risk.keywords.high, "billing report")
            assert(level("regenerate the billing report") == "high")
            assert(#risk.route.low == 1 and risk.route.high[1] == "discovery" and risk.route.medium[1] == "planning")

            local p = require("gap09.pipeline")
            assert(p.verdict('{"approved": true, "issues": []}').approved == true)
            local v = p.verdict('thinking...\\n{"approved": false, "issues": ["x"]}\\ntrailing {not json}')
            assert(v and v.approved == false and p.issues(v)[1] == "x")
            assert(p.verdict("no json here") == nil)
            assert(p.verdict('{"issues": []}') == nil, "approved is required")
            assert(p.SESSION_SLOT.discovery == p.SESSION_SLOT.planning)
            assert(p.SESSION_SLOT.execution ~= p.SESSION_SLOT.verification)
            assert(p.failureKind({status = "failed", stderr = "Error: model 'x' not found"}) == "model")
            assert(p.failureKind({status = "failed", stderr = "session abc not found"}) == "session")
            assert(p.failureKind({status = "timed_out"}) == "timeout")
            assert(p.failureKind({status = "failed", stderr = "boom"}) == "stage")

            local args = require("kit.args")
            local o = args.parse({positional = "task", options = {risk = {choices = {"low", "high"}}, n = {number = true, default = "2"}}},
              {"Fix", "the", "risk=low", "typo"})
            assert(o.task == "Fix the typo" and o.risk == "low" and o.n == 2)
            local ok, err = pcall(args.parse, {options = {risk = {}}}, {"rsk=1"})
            assert(not ok and err.code == 3 and err.message:find("did you mean 'risk'"), tostring(err))
            ok, err = pcall(args.parse, {options = {risk = {choices = {"low"}}}}, {"risk=huge"})
            assert(not ok and err.code == 3 and err.message:find("risk"), tostring(err))
            local s = args.split(" a ; b;;c ", ";")
            assert(#s == 3 and s[1] == "a" and s[3] == "c")
            assert(args.shquote("it's") == [['it'\\''s']])
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    // MARK: usage and dry run

    @Test func helpPrintsUsage() throws {
        let d = Harness.tempDir("gap09-help")
        let r = try Harness.run(["run", Self.recipe, "help"], cwd: d)
        #expect(r.code == 0)
        #expect(r.stdout.contains("usage: baton run") && r.stdout.contains("agent=") && r.stdout.contains("exit codes"))
    }

    @Test func dryRunListsTheStagesAndCallsNoAgent() throws {
        // The agent is configured but must not be called.
        let x = try gap09(["Test task"], options: ["--dry-run"], env: ["GAP09_AGENT": "gap09-agent.sh"], agent: false, preflight: nil)
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("dry run: 4 stages would run:"), "stdout: \(x.r.stdout)")
        #expect(x.r.stdout.contains(". preflight pre-verify (fail-closed): ruff check .; mypy ."), "the plan has the pre-verify preflight: \(x.r.stdout)")
        for s in ["planning", "execution", "verification", "ship"] {
            #expect(x.r.stdout.contains(". \(s): "), "the plan lacks \(s): \(x.r.stdout)")
        }
        #expect(!x.r.stdout.contains(". discovery:"), "medium risk starts at planning")
        #expect(x.calls.isEmpty, "no agent may run in a dry run")
        #expect(x.final["status"] as? String == "dry_run")
        #expect(x.result["status"] as? String == "dry_run" && x.result["dry_run"] as? Bool == true)
        #expect(!x.stages.contains { $0["status"] as? String == "pass" }, "a dry run claims no passes: \(x.stages)")
        #expect((x.result["metrics"] as? [String: Any])?["total_tokens"] as? Int == 0, "and no tokens")

        // Without any agent, a dry run still works.
        let y = try gap09(["Test task"], options: ["--dry-run"], agent: false, preflight: nil)
        #expect(y.r.code == 0, "stderr: \(y.r.stderr)")
    }

    // MARK: golden paths

    @Test func goldenPathLowRiskJSON() throws {
        let x = try gap09(["Fix typo in README.md: change 'teh' to 'the'"], options: ["--json"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(x.r.stdout.utf8)) as? [String: Any], "stdout: \(x.r.stdout)")
        let result = try #require(doc["result"] as? [String: Any])
        #expect(result["version"] as? String == "1.0.0")
        #expect(result["task"] as? String == "Fix typo in README.md: change 'teh' to 'the'")
        #expect(result["risk"] as? String == "low")
        #expect(result["status"] as? String == "success")
        #expect(x.callStages == ["execution", "verification", "ship"])
        let stages = try #require(result["stages"] as? [[String: Any]])
        #expect(stages.map { $0["stage"] as? String } == ["discovery", "planning", "execution", "verification", "ship"])
        #expect(stages.map { $0["status"] as? String } == ["skip", "skip", "pass", "pass", "pass"])
        let verify = stages[3]
        #expect(verify["iteration"] as? Int == 1)
        #expect((verify["output"] as? String)?.contains("\"approved\": true") == true)
        for s in stages[2...] {
            for k in ["started_at", "ended_at", "session_id", "output", "tokens_estimated"] { #expect(s[k] != nil, "stage lacks \(k): \(s)") }
        }
        let metrics = try #require(result["metrics"] as? [String: Any])
        #expect(metrics["verification_iterations"] as? Int == 1)
        #expect(metrics["stages_executed"] as? Int == 3)
        #expect(metrics["stages_skipped"] as? Int == 2)
        #expect(metrics["total_time_seconds"] is Double || metrics["total_time_seconds"] is Int)
        #expect((metrics["total_tokens_estimated"] as? Int ?? 0) > 0)
        // Sessions: execution, verification and ship each in a session of their own.
        let sessions = x.calls.map(\.1)
        #expect(Set(sessions).count == 3)
        #expect(stages[2]["session_id"] as? String == sessions[0])
        #expect(FileManager.default.fileExists(atPath: x.dir + "/work/work.txt"), "the agent works in cwd")
        #expect(Harness.read(x.dir + "/prompts/execution.1.txt")?.contains("TASK: Fix typo in README.md") == true, "the prompt is on stdin")
    }

    @Test func goldenPathHighRisk() throws {
        let x = try gap09(["Add", "authentication", "endpoint", "with", "JWT", "tokens"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let lines = x.r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.prefix(3) == ["PIPELINE: Add authentication endpoint with JWT tokens",
                                    "RISK: HIGH (keywords: auth, jwt, token)", "STARTING: Stage 1"], "stdout: \(x.r.stdout)")
        for l in ["STAGE 1 DISCOVERY: PASS", "STAGE 2 PLANNING: PASS", "STAGE 3 EXECUTION: PASS",
                  "STAGE 4 VERIFICATION: PASS (iteration 1/2)", "STAGE 5 SHIP: PASS", "RESULT: SUCCESS"] {
            #expect(lines.contains(l), "stdout lacks '\(l)': \(x.r.stdout)")
        }
        #expect(x.callStages == ["discovery", "planning", "execution", "verification", "ship"])
        let s = Dictionary(x.calls.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        #expect(s["discovery"] == s["planning"], "discovery and planning share a session")
        #expect(Set([s["planning"], s["execution"], s["verification"], s["ship"]]).count == 4, "sessions: \(s)")
        #expect(Harness.read(x.dir + "/prompts/planning.1.txt")?.contains("discovery notes") == true, "planning sees discovery's output")
        #expect(x.result["risk"] as? String == "high")
        #expect((x.result["metrics"] as? [String: Any])?["stages_executed"] as? Int == 5)
        #expect(x.final["status"] as? String == "succeeded")
    }

    @Test func riskOverrideRoutesMediumToPlanning() throws {
        let x = try gap09(["Fix typo in README.md", "risk=medium"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["planning", "execution", "verification", "ship"])
        #expect(x.r.stdout.contains("STAGE 1 DISCOVERY: SKIP") && x.r.stdout.contains("STARTING: Stage 2"))
        let bad = try gap09(["Fix typo", "risk=extreme"])
        #expect(bad.r.code == 3 && bad.r.stderr.contains("risk"), "stderr: \(bad.r.stderr)")
    }

    @Test func rejectedOnceGoesBackToExecutionWithTheIssues() throws {
        let x = try gap09(["Fix typo in README.md"], env: ["AGENT_REJECT": "1"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["execution", "verification", "execution", "verification", "ship"])
        #expect(x.calls[0].1 == x.calls[2].1, "rework stays in the execution session")
        #expect(x.calls[1].1 == x.calls[3].1 && x.calls[1].1 != x.calls[0].1, "verification has its own session")
        #expect(Harness.read(x.dir + "/prompts/execution.2.txt")?.contains("missing test for change 1") == true,
                "the rework prompt carries the verifier's issues")
        #expect(x.r.stdout.contains("STAGE 4 VERIFICATION: FAIL (iteration 1/2)"))
        #expect(x.r.stdout.contains("STAGE 4 VERIFICATION: PASS (iteration 2/2)"))
        #expect((x.result["metrics"] as? [String: Any])?["verification_iterations"] as? Int == 2)
        // The journal has the gate's two decisions and a preflight before each verification.
        let events = Harness.journal(Harness.latestRun(x.dir)!)
        let order = events.compactMap { e -> String? in
            switch e["type"] as? String {
            case "preflight": return "preflight"
            case "stage_started": return e["id"] as? String
            case "gate": return "gate"
            default: return nil
            }
        }
        #expect(order == ["execution", "preflight", "verification", "gate", "execution", "preflight", "verification", "gate", "ship"], "\(order)")
    }

    // MARK: the failure matrix

    @Test func failurePreflightFailsExitFour() throws {
        let x = try gap09(["Fix typo"], preflight: "true;false")
        #expect(x.r.code == 4, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["execution"], "verification must not run after a failed preflight")
        #expect(x.result["status"] as? String == "failure")
        #expect(x.r.stdout.contains("RESULT: FAILURE"))
    }

    @Test func failureMissingToolExitFour() throws {
        let x = try gap09(["Fix typo"], preflight: "true;mypy-not-installed-anywhere .")
        #expect(x.r.code == 4, "stderr: \(x.r.stderr)")
        #expect(x.r.stderr.contains("mypy-not-installed-anywhere not installed - required tool missing"), "stderr: \(x.r.stderr)")
        #expect(!x.callStages.contains("verification"))
    }

    @Test func failureRejectedTwiceExitTwo() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_REJECT": "2"])
        #expect(x.r.code == 2, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["execution", "verification", "execution", "verification"], "no third verification, no ship")
        #expect(x.r.stderr.contains("escalate to human"))
        #expect(x.result["status"] as? String == "failure")
        #expect(x.final["exit_code"] as? Int == 2)
    }

    @Test func verifierOutputThatIsNotJSONIsARejection() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_GARBAGE": "1"])
        #expect(x.r.code == 2, "stderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("not a JSON object"), "stdout: \(x.r.stdout)")
    }

    @Test func failureModelNotAvailableExitThree() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_MODEL_MISSING": "verification"])
        #expect(x.r.code == 3, "stderr: \(x.r.stderr)")
        #expect(x.r.stderr.contains("model not available") && x.r.stderr.contains("available: swe-1-5"), "stderr: \(x.r.stderr)")
        #expect(x.result["status"] as? String == "failure")
    }

    @Test func failureInvalidSessionStartsANewOne() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_BAD_SESSION": "execution"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["execution", "execution", "verification", "ship"])
        #expect(x.calls[1].1 == x.calls[0].1 + "-r1", "a new session: \(x.calls)")
        #expect(x.r.stderr.contains("not found; starting a new session"))
        let stages = x.stages.filter { $0["stage"] as? String == "execution" }
        #expect(stages.count == 1 && stages[0]["session_id"] as? String == x.calls[1].1)
    }

    @Test func failureExecutionFailsExitOne() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_FAIL_STAGE": "execution"])
        #expect(x.r.code == 1, "stderr: \(x.r.stderr)")
        #expect(x.callStages == ["execution"])
        #expect(x.r.stdout.contains("STAGE 3 EXECUTION: FAIL"))
        let exec = try #require(x.stages.first { $0["stage"] as? String == "execution" })
        #expect(exec["status"] as? String == "fail")
        #expect((exec["error"] as? String)?.contains("tests broke") == true)
    }

    @Test func failureStageTimeoutExitOne() throws {
        let d0 = Date()
        let x = try gap09(["Add JWT auth"], env: ["AGENT_SLEEP_STAGE": "discovery"])
        #expect(x.r.code == 1, "stderr: \(x.r.stderr)")
        #expect(x.r.stderr.contains("timed out"), "stderr: \(x.r.stderr)")
        #expect(Date().timeIntervalSince(d0) < 25, "the agent is killed at the timeout")
        #expect(x.callStages == ["discovery"])
    }

    @Test func failureEmptyTaskExitFive() throws {
        for words in [[], [""], ["   "]] {
            let x = try gap09(words)
            #expect(x.r.code == 5, "words \(words): stderr: \(x.r.stderr)")
            #expect(x.r.stderr.contains("Task description required"))
            #expect(x.calls.isEmpty)
        }
    }

    @Test func noAgentIsAConfigurationError() throws {
        let x = try gap09(["Fix typo"], agent: false)
        #expect(x.r.code == 3, "stderr: \(x.r.stderr)")
        #expect(x.r.stderr.contains("agent=CMD") && x.r.stderr.contains("GAP09_AGENT"), "stderr: \(x.r.stderr)")
        #expect(!x.r.stderr.contains("traceback"))
        // GAP09_AGENT is enough.
        let y = try gap09(["Fix typo"], env: ["GAP09_AGENT": "gap09-agent.sh"], agent: false)
        #expect(y.r.code == 0, "stderr: \(y.r.stderr)")
        // An agent that is not installed is a configuration error too.
        let z = try gap09(["Fix typo"], env: ["GAP09_AGENT": "no-such-agent-cli"], agent: false)
        #expect(z.r.code == 3 && z.r.stderr.contains("no-such-agent-cli"), "stderr: \(z.r.stderr)")
    }
    // MARK: issue 16: the seed's command line, agents per stage, the step report, fail closed, ship when needed

    static func git(_ dir: String, _ args: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "git -c user.email=t@t -c user.name=t " + args]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        try? p.run()
        p.waitUntilExit()
    }

    static func json(_ s: String) -> [String: Any]? {
        try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any]
    }

    @Test func seedCommandLineOptionsAfterTheTask() throws {
        // "Fix typo" --risk high --stage verification --json: options, not task text.
        let x = try gap09(["Fix typo", "--risk", "high", "--stage", "verification", "--json"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let doc = try #require(Self.json(x.r.stdout), "stdout is the PipelineResult itself: \(x.r.stdout)")
        #expect(doc["task"] as? String == "Fix typo" && doc["risk"] as? String == "high" && doc["version"] as? String == "1.0.0")
        #expect(doc["start_stage"] as? String == "verification")
        #expect(x.callStages == ["verification", "ship"], "starts at verification: \(x.calls)")
        #expect(x.r.stderr.contains("STAGE 4 VERIFICATION: PASS"), "the human report goes to stderr with --json")
        let statuses = (doc["stages"] as? [[String: Any]] ?? []).map { $0["status"] as? String }
        #expect(statuses == ["skip", "skip", "skip", "pass", "pass"], "\(statuses)")
        // --cwd DIR and --name=value forms; the seed's `run` subcommand.
        let y = try gap09(["run", "Fix typo in README.md", "--cwd=work", "--risk", "low"])
        #expect(y.r.code == 0, "stderr: \(y.r.stderr)")
        #expect(y.result["task"] as? String == "Fix typo in README.md")
        // The seed's `stage` form: that one stage.
        let z = try gap09(["stage", "verification", "Fix typo"])
        #expect(z.r.code == 0, "stderr: \(z.r.stderr)")
        #expect(z.callStages == ["verification"] && z.result["single_stage"] as? String == "verification")
        let bad = try gap09(["Fix typo", "--stage", "deploy"])
        #expect(bad.r.code == 3 && bad.r.stderr.contains("stage"), "stderr: \(bad.r.stderr)")
        let unknown = try gap09(["Fix typo", "--rsik", "high"])
        #expect(unknown.r.code == 3 && unknown.r.stderr.contains("did you mean '--risk'"), "stderr: \(unknown.r.stderr)")
        #expect(unknown.calls.isEmpty)
    }

    @Test func honestDryRunAfterTheTask() throws {
        let x = try gap09(["Add JWT auth", "--dry-run", "--json"], preflight: "ruff check .;mypy .")
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.calls.isEmpty, "no agent runs")
        let doc = try #require(Self.json(x.r.stdout), "stdout: \(x.r.stdout)")
        #expect(doc["status"] as? String == "dry_run" && doc["dry_run"] as? Bool == true)
        let stages = doc["stages"] as? [[String: Any]] ?? []
        #expect(stages.allSatisfy { ["planned", "skip"].contains($0["status"] as? String) }, "no passes: \(stages)")
        #expect(stages.filter { $0["status"] as? String == "planned" }.count == 5)
        let m = doc["metrics"] as? [String: Any] ?? [:]
        #expect(m["total_tokens"] as? Int == 0 && m["total_tokens_estimated"] as? Int == 0 && m["stages_executed"] as? Int == 0)
        let plan = (doc["plan"] as? [String]) ?? []
        #expect(plan.count == 6 && plan[3] == "preflight pre-verify (fail-closed): ruff check .; mypy .", "\(plan)")
        #expect(x.r.stderr.contains("RESULT: DRY RUN") && x.r.stderr.contains("TOKENS: 0 (dry run)"))
        // The seed's canonical gate, as written: --help && --dry-run "Test task" (no agent needed).
        let d = Harness.tempDir("gap09-gate")
        let help = try Harness.run(["run", Self.recipe, "--help"], cwd: d, env: ["GAP09_AGENT": ""])
        let gate = try Harness.run(["run", Self.recipe, "--dry-run", "Test task"], cwd: d, env: ["GAP09_AGENT": ""])
        #expect(help.code == 0 && gate.code == 0 && gate.stdout.contains("RESULT: DRY RUN"), "stderr: \(gate.stderr)")
    }

    @Test func perStageAgentsAndModels() throws {
        let d = Harness.tempDir("gap09-models")
        try FileManager.default.createDirectory(atPath: d + "/work", withIntermediateDirectories: true)
        Harness.write(d + "/work/gap09.yaml", """
            agent: gap09-agent.sh
            model: base-model
            stages:
              discovery: {models: [disc-a, disc-b]}
              verification: {agent: "env VERIFIER=1 gap09-agent.sh", model: verify-model}
            """)
        let r = try Harness.run(["run", Self.recipe, "Add JWT auth", "cwd=work", "timeout=5", "preflight=true", "model_ship=docs-model"],
                                cwd: d, env: ["AGENT_STATE": d, "GAP09_AGENT": ""], timeout: 60)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let models = (Harness.read(d + "/models.log") ?? "").split(separator: "\n").map(String.init)
        #expect(models == ["discovery disc-a", "discovery disc-b", "planning base-model", "execution base-model",
                           "verification verify-model", "ship docs-model"], "\(models)")
        let run = try #require(Harness.latestRun(d))
        let f = try #require(Harness.final(run))
        let stages = ((f["result"] as? [String: Any])?["stages"] as? [[String: Any]]) ?? []
        #expect(stages.map { $0["model"] as? String } == ["disc-a", "disc-b", "base-model", "base-model", "verify-model", "docs-model"])
        #expect(stages.first { $0["stage"] as? String == "verification" }?["agent"] as? String == "env VERIFIER=1 gap09-agent.sh")
        #expect(Harness.read(d + "/prompts/planning.1.txt")?.contains("### disc-b") == true, "planning sees both discoveries")
        // A bad config is a configuration error.
        Harness.write(d + "/work/gap09.yaml", "stages:\n  deploy: {model: x}\n")
        let bad = try Harness.run(["run", Self.recipe, "Fix typo", "cwd=work"], cwd: d, env: ["AGENT_STATE": d], timeout: 60)
        #expect(bad.code == 3 && bad.stderr.contains("stages.deploy"), "stderr: \(bad.stderr)")
    }

    @Test func stepReportChangedFilesChecksTokens() throws {
        let d = Harness.tempDir("gap09-report")
        Harness.write(d + "/work/README.md", "# x\n")
        Harness.write(d + "/work/src/a.py", "x = 1\n")
        Self.git(d + "/work", "init -q && git -c user.email=t@t -c user.name=t add -A && git -c user.email=t@t -c user.name=t commit -qm init")
        let r = try Harness.run(["run", Self.recipe, "Fix typo", "cwd=work", "timeout=5", "agent=gap09-agent.sh", "preflight=true;seq 1 7"],
                                cwd: d, env: ["AGENT_STATE": d, "AGENT_EDITS": "src/a.py src/new.py", "AGENT_USAGE": "execution"], timeout: 60)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("  changed files: src/a.py, src/new.py"), "stdout: \(r.stdout)")
        #expect(r.stdout.contains("  tokens: 120 (reported by the agent)"))
        #expect(r.stdout.contains("tokens: ~") && r.stdout.contains("(estimated: the agent reported none)"))
        #expect(r.stdout.contains("  pre-flight gates:") && r.stdout.contains("    - seq 1 7: PASS"))
        #expect(r.stdout.contains("      | 3") && r.stdout.contains("      | 7") && !r.stdout.contains("      | 2"), "the last 5 lines")
        #expect(r.stdout.contains("  re-verify count: 1/2") && r.stdout.contains("  verification: PASS"))
        let run = try #require(Harness.latestRun(d))
        let f = try #require(Harness.final(run))
        let res = try #require(f["result"] as? [String: Any])
        let stages = res["stages"] as? [[String: Any]] ?? []
        let exec = try #require(stages.first { $0["stage"] as? String == "execution" })
        #expect(exec["changed_files"] as? [String] == ["src/a.py", "src/new.py"] && exec["tokens_source"] as? String == "reported")
        let ver = try #require(stages.first { $0["stage"] as? String == "verification" })
        #expect(ver["tokens_source"] as? String == "estimated" && (ver["checks"] as? [[String: Any]])?.count == 2)
        #expect((res["metrics"] as? [String: Any])?["total_tokens_reported"] as? Int == 120)
        #expect(r.stdout.contains("TOKENS: ") && r.stdout.contains("120 reported"))
        // A failing check shows FAIL and its last lines.
        let x = try gap09(["Fix typo"], preflight: "true;seq 1 7 && false")
        #expect(x.r.code == 4)
        #expect(x.r.stdout.contains("    - seq 1 7 && false: FAIL (exit 1)") && x.r.stdout.contains("      | 7") && x.r.stdout.contains("    - true: PASS"), "stdout: \(x.r.stdout)")
    }

    @Test func exhaustedVerificationRevertsTheWorkTree() throws {
        // Run from inside the work tree (outside git): the runs directory, ./.baton/runs, is
        // in the tree the snapshot copies and the revert compares; it must survive both.
        let d = Harness.tempDir("gap09-revert")
        let work = d + "/work"
        Harness.write(work + "/keep.txt", "orig\n")
        Harness.write(work + "/gone.txt", "still here\n")
        try FileManager.default.createDirectory(atPath: work + "/.baton", withIntermediateDirectories: true)
        let before = Self.manifest(work)
        let r = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=rm -f gone.txt; gap09-agent.sh", "preflight=true"],
                                cwd: work, env: ["AGENT_STATE": d, "AGENT_EDITS": "keep.txt new/n.txt", "AGENT_REJECT": "2"], timeout: 60)
        #expect(r.code == 2, "stderr: \(r.stderr)")
        #expect(Self.manifest(work) == before, "the tree as before: \(Self.manifest(work).keys.sorted())")
        #expect(Harness.read(work + "/keep.txt") == "orig\n", "modified file restored")
        #expect(!FileManager.default.fileExists(atPath: work + "/new"), "added file removed, and the directory made for it")
        #expect(Harness.read(work + "/gone.txt") == "still here\n", "deleted file brought back")
        #expect(r.stdout.contains("REVERTED: the work tree is back as it was before execution: 1 file restored, 1 created file removed, "
                                  + "1 deleted file brought back, 1 created directory removed"), "stdout: \(r.stdout)")
        #expect(r.stdout.contains("  restored: keep.txt") && r.stdout.contains("removed (added by the pipeline): new/n.txt"))
        let run = try #require(Harness.latestRun(work), "the run directory survived the revert")
        _ = Harness.journal(run)
        #expect(FileManager.default.fileExists(atPath: run + "/stages/execution/1.out"), "stage logs survive the revert")
        let f = try #require(Harness.final(run))
        let rev = try #require((f["result"] as? [String: Any])?["reverted"] as? [String: Any])
        #expect(rev["modified"] as? [String] == ["keep.txt"] && rev["added"] as? [String] == ["new/n.txt"] && rev["deleted"] as? [String] == ["gone.txt"])
        #expect(r.stderr.contains("work tree reverted: 1 file restored"), "stderr: \(r.stderr)")
    }

    @Test func shipOnlyWhenDocumentationIsAffected() throws {
        let docs = try gap09(["Fix typo in README.md"], env: ["AGENT_EDITS": "README.md"])
        #expect(docs.r.code == 0, "stderr: \(docs.r.stderr)")
        #expect(docs.callStages == ["execution", "verification"], "no ship: \(docs.calls)")
        #expect(docs.r.stdout.contains("STAGE 5 SHIP: SKIP (the change is documentation only (README.md): nothing more to document)"), "stdout: \(docs.r.stdout)")
        let ship = try #require(docs.stages.last)
        #expect(ship["stage"] as? String == "ship" && ship["status"] as? String == "skip" && (ship["reason"] as? String)?.contains("documentation only") == true)
        let none = try gap09(["Fix typo"], env: ["AGENT_EDITS": "-"])
        #expect(none.r.code == 0 && none.r.stdout.contains("SHIP: SKIP (no files changed"), "stdout: \(none.r.stdout)")
        let said = try gap09(["Fix typo"], env: ["AGENT_NO_DOCS": "1"])
        #expect(said.r.stdout.contains("SHIP: SKIP (the verifier says no documentation is affected)"))
        let code = try gap09(["Fix typo"], env: ["AGENT_EDITS": "src/x.py"])
        #expect(code.callStages.last == "ship", "code changed: ship runs")
        let always = try gap09(["Fix typo", "ship=always"], env: ["AGENT_EDITS": "-"])
        #expect(always.callStages.last == "ship")
    }
}
