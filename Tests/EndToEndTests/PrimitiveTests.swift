import Foundation
import Testing

/// The five primitives on real processes (spec section 3).
@Suite struct PrimitiveTests {
    func run(_ name: String, _ recipe: String, args: [String] = [], env: [String: String] = [:], timeout: Double = 60) throws -> (Harness.Result, String, String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let r = try Harness.run(["run", "r.lua"] + args, cwd: d, env: env, timeout: timeout)
        return (r, d, Harness.latestRun(d) ?? "")
    }

    // MARK: runStage

    @Test func timeoutEndsTheWholeProcessGroup() throws {
        let marker = "baton-timeout-\(UUID().uuidString.prefix(8))"
        let (r, _, run) = try run("timeout", """
            local ok, e = pcall(runStage, {id = "slow", cmd = {"forker.sh", "\(marker)"}, timeout = 0.5, grace = 0.5})
            assert(not ok and e.result.status == "timed_out" and e.result.failure_class == "transient", tostring(e))
            assert(e.code == 1)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.processes(matching: marker).isEmpty, "a grandchild survived its stage")
        let finished = Harness.events(Harness.journal(run), type: "stage_finished")
        #expect(finished.first?["status"] as? String == "timed_out")
    }

    @Test func sigkillAfterGraceForAStageThatIgnoresSigterm() throws {
        let (r, _, _) = try run("grace", """
            local t0 = baton.now()
            local res = runStage{id = "stubborn", cmd = {"ignore-term.sh"}, timeout = 0.3, grace = 0.3, allowFail = true}
            assert(res.status == "timed_out" and res.signal == 9, "status " .. res.status .. " signal " .. tostring(res.signal))
            assert(baton.now() - t0 < 10)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.processes(matching: "ignore-term.sh").isEmpty)
    }

    @Test func aSignalGivesStagesTheirGrace() throws {
        let d = Harness.tempDir("grace-signal")
        Harness.write(d + "/r.lua", """
            baton.log("starting")
            runStage{id = "s", cmd = {"sh", "-c", "trap 'sleep 0.3; echo graceful > graceful.txt; exit 0' TERM; echo up > up.txt; sleep 30 & wait"}, grace = 5}
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/up.txt") })
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        #expect(Harness.read(d + "/graceful.txt") == "graceful\n", "the stage was killed before its grace period")
    }

    @Test func errorsThroughPcallStillNameTheLine() throws {
        let (r, _, _) = try run("where", """
            local ok, e = pcall(gate, {name = "g", check = function() return {approved = false, issues = {"x"}} end})
            assert(not ok and tostring(e):find("^r.lua:1: gate 'g' rejected"), tostring(e))
            local function tail() return preflight{checks = {{path = "nope"}}} end
            local ok2, e2 = pcall(tail)
            assert(not ok2 and tostring(e2):find("^r.lua:%d+: preflight"), tostring(e2))
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func cancelOfABackgroundStageLeavesNothing() throws {
        let marker = "baton-cancel-\(UUID().uuidString.prefix(8))"
        let (r, _, run) = try run("cancel", """
            local h = runStage{id = "bg", cmd = {"forker.sh", "\(marker)"}, background = true, grace = 1}
            assert(type(h:pid()) == "number")
            baton.sleep(0.3)
            h:cancel()
            local res = h:wait()
            """)
        #expect(r.code == 1, "a cancelled stage is a failure unless allowFail")
        #expect(Harness.processes(matching: marker).isEmpty)
        #expect(Harness.events(Harness.journal(run), type: "stage_finished").first?["status"] as? String == "cancelled")
    }

    @Test func leftoverChildrenEndWithTheirStage() throws {
        let marker = "baton-leftover-\(UUID().uuidString.prefix(8))"
        let (r, _, _) = try run("leftover", """
            local res = runStage{id = "quick", cmd = {"forker.sh", "\(marker)", "exit"}}
            assert(res.ok)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.processes(matching: marker).isEmpty, "a background child outlived its stage")
    }

    @Test func transientRetriesSucceed() throws {
        let (r, _, run) = try run("retry", """
            local res = runStage{id = "flaky", cmd = {"flaky.sh", "2", "75"}, retries = 3,
                                 transient = {exit = {75}}, backoff = {initial = 0.01, factor = 2, max = 0.05}}
            assert(res.ok and res.attempts == 3, "attempts " .. res.attempts)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let events = Harness.journal(run)
        let finished = Harness.events(events, type: "stage_finished")
        #expect(finished.map { $0["status"] as? String } == ["failed", "failed", "passed"])
        #expect(finished.compactMap { $0["failure_class"] as? String } == ["transient", "transient"])
        #expect(FileManager.default.fileExists(atPath: run + "/stages/flaky/3.out"))
        #expect(Harness.read(run + "/stages/flaky/1.err")?.contains("rate limit") == true)
    }

    @Test func stderrPatternMakesAFailureTransient() throws {
        let (r, _, _) = try run("pattern", """
            local res = runStage{id = "flaky", cmd = {"flaky.sh", "1", "1"}, retries = 1,
                                 transient = {stderr = {"rate limit"}}, backoff = {initial = 0.01}}
            assert(res.ok and res.attempts == 2)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func deterministicFailureIsNeverRetried() throws {
        let (r, d, run) = try run("determ", """
            runStage{id = "broken", cmd = {"flaky.sh", "5", "2"}, retries = 3, backoff = {initial = 0.01}}
            """)
        #expect(r.code == 1)
        #expect(Harness.read(d + "/flaky.count")?.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "ran more than once")
        let f = try #require(Harness.final(run))
        #expect((f["reason"] as? String)?.contains("r.lua:1:") == true)
        #expect((f["reason"] as? String)?.contains("exit code 2") == true)
        #expect((f["stages"] as? [[String: Any]])?.first?["attempts"] as? Int == 1)
    }

    @Test func retryOnDeterministicIsOptIn() throws {
        let (r, d, _) = try run("optin", """
            local res = runStage{id = "b", cmd = {"flaky.sh", "1", "2"}, retries = 1, retryOn = {"transient", "deterministic"}, backoff = {initial = 0.01}}
            assert(res.ok and res.attempts == 2)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.read(d + "/flaky.count")?.hasPrefix("2") == true)
    }

    @Test func breakerStopsTheSameFailure() throws {
        let (r, d, run) = try run("breaker", """
            local res = runStage{id = "loop", cmd = {"flaky.sh", "99", "75"}, retries = 10, breaker = 3,
                                 transient = {exit = {75}}, backoff = {initial = 0.01, max = 0.01}, allowFail = true}
            assert(not res.ok and res.breaker_open and res.attempts == 3, "attempts " .. res.attempts)
            assert(res.message:find("circuit breaker"))
            -- the breaker counts across the run: the next identical failure stops at once
            local again = runStage{id = "loop2", cmd = {"flaky.sh", "99", "75"}, retries = 10, breaker = 3,
                                   transient = {exit = {75}}, backoff = {initial = 0.01}, allowFail = true}
            assert(again.attempts == 1 and again.breaker_open)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.read(d + "/flaky.count")?.hasPrefix("4") == true)
        let sigs = Set(Harness.events(Harness.journal(run), type: "stage_finished").compactMap { $0["signature"] as? String })
        #expect(sigs.count == 1, "the signature folds the changing hex/pid: \(sigs)")
    }

    @Test func requireFilesAfterZeroExit() throws {
        let (r, _, _) = try run("require", """
            local res = runStage{id = "make", cmd = "touch empty.bin; echo data > full.bin", requireFiles = {"full.bin", "empty.bin"}, allowFail = true}
            assert(not res.ok and res.failure_class == "deterministic" and res.message:find("empty.bin"), res.message)
            assert(not res.message:find("full.bin"))
            local ok = runStage{id = "make2", cmd = "echo x > a.bin", requireFiles = {"a.bin"}}
            assert(ok.ok)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func stdinEnvCwdAndShell() throws {
        let (r, _, _) = try run("io", """
            baton.fs.mkdir("sub")
            local a = runStage{id = "cat", cmd = {"cat"}, stdin = "hello\\nworld\\n"}
            assert(a.stdout == "hello\\nworld\\n")
            local b = runStage{id = "env", cmd = "echo $GREETING $BATON_STAGE; pwd", env = {GREETING = "hi"}, cwd = "sub"}
            assert(b.stdout:find("hi env") and b.stdout:find("/sub\\n"), b.stdout)
            local c = runStage{id = "missing", cmd = {"no-such-command-xyz"}, allowFail = true}
            assert(not c.ok and c.exit == 127 and c.message:find("not found"))
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func outputTailIsBoundedAndLogsAreComplete() throws {
        let (r, _, run) = try run("tail", """
            local res = runStage{id = "big", cmd = "head -c 1000000 /dev/zero | tr '\\\\0' 'x'"}
            assert(#res.stdout == 65536, #res.stdout)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let size = (try? FileManager.default.attributesOfItem(atPath: run + "/stages/big/1.out")[.size] as? Int) ?? 0
        #expect(size == 1_000_000)
    }

    @Test func parallelBackgroundStages() throws {
        let (r, _, _) = try run("parallel", """
            local t0 = baton.now()
            local hs = {}
            for i = 1, 4 do hs[i] = runStage{id = "p" .. i, cmd = {"sleep", "0.5"}, background = true} end
            for i = 1, 4 do assert(hs[i]:wait().ok) end
            assert(baton.now() - t0 < 1.8, "stages did not run in parallel")
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func sameIdRunsAgainAsTheNextOccurrence() throws {
        let (r, _, run) = try run("occ", """
            assert(runStage{id = "s", cmd = "echo 1"}.occurrence == 1)
            assert(runStage{id = "s", cmd = "echo 2"}.occurrence == 2)
            """)
        #expect(r.code == 0)
        let occ = Harness.events(Harness.journal(run), type: "stage_finished").compactMap { $0["occurrence"] as? Int }
        #expect(occ == [1, 2])
        #expect(Harness.read(run + "/stages/s/2.out") == "2\n")
    }

    // MARK: preflight

    @Test func preflightFailPolicyExitsFourNamingEachCheck() throws {
        let (r, _, run) = try run("pf", """
            preflight{name = "before-verify", checks = {
              {path = "r.lua"}, {path = "scripts/core.py"}, {cmd = {"sh", "-c", "exit 3"}},
              {env = "BATON_TEST_SECRET"}, {env = "BATON_TEST_UNSET"}, {pgrep = "python train.py"},
              {check = function() return false, "disk nearly full" end},
            }}
            """, env: ["BATON_TEST_SECRET": "s3cret-value"])
        #expect(r.code == 4)
        let reason = (Harness.final(run)?["reason"] as? String) ?? ""
        for part in ["scripts/core.py", "exit code 3", "BATON_TEST_UNSET", "python train.py", "disk nearly full"] {
            #expect(reason.contains(part), "reason lacks \(part): \(reason)")
        }
        #expect(!reason.contains("r.lua: missing"))
        let journal = Harness.read(run + "/journal.jsonl") ?? ""
        #expect(!journal.contains("s3cret-value"), "an env value was journaled")
        #expect(!r.stderr.contains("s3cret-value"))
        let pf = try #require(Harness.events(Harness.journal(run), type: "preflight").first)
        let checks = pf["checks"] as? [[String: Any]] ?? []
        #expect(checks.count == 7)
        #expect(checks.map { $0["ok"] as? Bool } == [true, false, false, true, false, false, false])
        #expect(checks.compactMap { $0["kind"] as? String } == ["path", "path", "cmd", "env", "env", "pgrep", "check"])
    }

    @Test func preflightWarnGoesOnAndGuardedPatternPasses() throws {
        let (r, _, _) = try run("pfwarn", """
            local rep = preflight{name = "soft", policy = "warn", checks = {{path = "nope.txt"}, {pgrep = "[p]ython train.py"}}}
            assert(rep.ok == false and rep.checks[1].ok == false and rep.checks[2].ok == true)
            return {went_on = true}
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("nope.txt"))
    }

    @Test func preflightCmdTimeout() throws {
        let (r, _, _) = try run("pftimeout", """
            local ok, e = pcall(preflight, {checks = {{cmd = {"sleep", "10.123"}, timeout = 0.2}}})
            assert(not ok and e.code == 4 and tostring(e):find("timed out"), tostring(e))
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.processes(matching: "sleep 10.123").isEmpty)
    }

    // MARK: watch

    @Test func watchAHandleWithLateArtifacts() throws {
        let d = Harness.tempDir("watch-late")
        Harness.write(d + "/r.lua", """
            local job = runStage{id = "job", cmd = "mkdir -p out; sleep 0.2", background = true}
            local w = watch{id = "train", handle = job, requireFiles = {"out/metrics.json"},
                            readyTimeoutSec = 30, readyPollSec = 5, heartbeatSec = 0.1,
                            callback = function(info) return {saw = baton.fs.read("out/metrics.json")} end}
            assert(w.state == "completed" and w.callback_result.saw == "{}\\n", baton.json.encode(w))
            return {waited = w.duration}
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        // Write the artifact only once Baton is waiting for it; it must be noticed at once (inotify), not at the next 5 s poll.
        #expect(Harness.waitFor(30) { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("\"to\":\"awaiting_artifacts\"") == true })
        let t0 = Date()
        Harness.write(d + "/out/metrics.json", "{}\n")
        #expect(Harness.waitFor(30) { !p.isRunning })
        let latency = Date().timeIntervalSince(t0)
        #expect(p.terminationStatus == 0)
        #expect(latency < 3, "artifact noticed after \(latency)s with readyPollSec = 5")
        let events = Harness.journal(Harness.latestRun(d)!)
        let states = Harness.events(events, type: "watch").compactMap { $0["to"] as? String }
        #expect(states == ["queued", "running", "exited", "awaiting_artifacts", "callback_queued", "callback_running", "completed"])
        #expect(Harness.events(events, type: "watch").allSatisfy { ($0["reason"] as? String)?.isEmpty == false })
    }

    @Test(arguments: ["fail", "block", "callback"])
    func watchOnMissing(mode: String) throws {
        let (r, _, run) = try run("onmissing-\(mode)", """
            local called = false
            local w = watch{id = "w", file = "r.lua", requireFiles = {"never.json"}, readyTimeoutSec = 0.3, readyPollSec = 0.1,
                            onMissing = "\(mode)", callback = function(info) called = #info.missing == 1 end}
            return {state = w.state, called = called}
            """)
        let f = Harness.final(run)
        let states = Harness.events(Harness.journal(run), type: "watch").compactMap { $0["to"] as? String }
        switch mode {
        case "fail":
            #expect(r.code == 1)
            #expect((f?["reason"] as? String)?.contains("never.json") == true)
            #expect(states.last == "failed")
        case "block":
            #expect(r.code == 0)
            #expect((f?["result"] as? [String: Any])?["state"] as? String == "blocked")
            #expect(states.last == "blocked")
        default:
            #expect(r.code == 0)
            #expect((f?["result"] as? [String: Any])?["called"] as? Bool == true)
            #expect(states.contains("callback_running") && states.last == "completed")
        }
    }

    @Test func watchAPidAPatternAndHeartbeats() throws {
        let marker = "baton-watched-\(UUID().uuidString.prefix(8))"
        let d = Harness.tempDir("watch-pid")
        let sleeper = Process()
        sleeper.executableURL = URL(fileURLWithPath: "/bin/sh")
        sleeper.arguments = ["-c", "sleep 0.8 # \(marker)"]
        try sleeper.run()
        Harness.write(d + "/r.lua", """
            local a = watch{id = "by-pid", pid = \(sleeper.processIdentifier), heartbeatSec = 0.1}
            assert(a.state == "completed")
            local b = watch{id = "by-pattern", pattern = "\(marker)"}
            assert(b.state == "completed")
            local c = watch{id = "never", pattern = "[n]o-such-process-\(marker)"}
            assert(c.state == "completed")
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        sleeper.waitUntilExit()
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let events = Harness.journal(Harness.latestRun(d)!)
        let beats = Harness.events(events, type: "heartbeat")
        #expect(beats.count >= 2, "expected heartbeats while waiting")
        #expect(beats.first?["waiting_on"] as? String == "watch")
    }

    @Test func watchTimeoutFails() throws {
        let marker = "baton-watch-timeout-\(UUID().uuidString.prefix(8))"
        let (r, _, run) = try run("watch-timeout", """
            local h = runStage{id = "long", cmd = {"forker.sh", "\(marker)"}, background = true}
            watch{id = "w", handle = h, timeoutSec = 0.3}
            """)
        #expect(r.code == 1)
        #expect((Harness.final(run)?["reason"] as? String)?.contains("still running") == true)
        #expect(Harness.processes(matching: marker).isEmpty, "the run's end must end its background stage")
    }

    // MARK: gate

    @Test func gateRejectThenApprove() throws {
        let (r, _, run) = try run("gate", """
            local reworked = 0
            local d = gate{name = "verification", maxIterations = 2,
              check = function(i) return {approved = i == 2, issues = i == 1 and {"tests fail"} or {}} end,
              onReject = function(decision, i) reworked = reworked + 1; assert(decision.issues[1] == "tests fail") end}
            assert(d.approved and d.iteration == 2 and reworked == 1)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let gates = Harness.events(Harness.journal(run), type: "gate")
        #expect(gates.map { $0["approved"] as? Bool } == [false, true])
        #expect(gates.map { $0["iteration"] as? Int } == [1, 2])
    }

    @Test func gateExhaustionExitsTwoWithTheIssues() throws {
        let (r, _, run) = try run("gate-exhaust", """
            gate{name = "verification", maxIterations = 2, check = function(i) return {approved = false, issues = {"lint: E501 line too long"}} end}
            """)
        #expect(r.code == 2)
        #expect((Harness.final(run)?["reason"] as? String)?.contains("E501") == true)
    }

    @Test func gateCommandAndFallback() throws {
        let (r, _, run) = try run("gate-cmd", """
            local a = gate{name = "json", cmd = "echo 'log line'; echo '{\\"approved\\": true, \\"issues\\": []}'"}
            assert(a.approved)
            local b = gate{name = "garbage", cmd = "echo not json", fallback = {approved = false, issues = {"verifier output was not valid JSON"}}, maxIterations = 1}
            """)
        #expect(r.code == 2)
        let gates = Harness.events(Harness.journal(run), type: "gate")
        #expect(gates.map { $0["fallback_used"] as? Bool } == [false, true])
        #expect((Harness.final(run)?["reason"] as? String)?.contains("not valid JSON") == true)
    }

    // MARK: bad input

    @Test(arguments: [
        ("runStage{id = 'x', cmd = 'true', retrys = 2}", "unknown field 'retrys'", "retries"),
        ("runStage{id = 'x', cmd = 'true', timeout = 'soon'}", "field 'timeout' must be a number", nil),
        ("runStage{cmd = 'true'}", "field 'id' is required", nil),
        ("runStage{id = 'x', cmd = {}}", "empty argv", nil),
        ("preflight{checks = {{paht = 'x'}}}", "unknown field 'paht'", "path"),
        ("preflight{policy = 'maybe', checks = {{path = 'x'}}}", "field 'policy' must be one of", nil),
        ("watch{id = 'w', file = 'x', onMissing = 'ignore'}", "field 'onMissing' must be one of", nil),
        ("watch{id = 'w', file = 'x', readyTimeoutSecs = 3}", "unknown field 'readyTimeoutSecs'", "readyTimeoutSec"),
        ("gate{name = 'g', check = function() end, maxIteration = 2}", "unknown field 'maxIteration'", "maxIterations"),
        ("gate{name = 'g', maxIterations = 'two', check = function() end}", "field 'maxIterations' must be an integer", nil),
        ("persistFinal('x')", "persistFinal expects a table", nil),
        ("persistFinal({}, {cancelld = {status = 'cancelled'}})", "unknown field 'cancelld'", "cancelled"),
    ] as [(String, String, String?)])
    func badFieldsNameTheFieldAndLine(code: String, message: String, suggestion: String?) throws {
        // The runtime's own checks: `--no-check` (the check before the first stage finds
        // most of these first, and CheckTests holds it).
        let d = Harness.tempDir("bad")
        Harness.write(d + "/r.lua", "local x = 1\n\(code)\n")
        let r = try Harness.run(["run", "--no-check", "r.lua"], cwd: d)
        let run = Harness.latestRun(d) ?? ""
        #expect(r.code == 3, "\(code) -> \(r.code): \(r.stderr)")
        let reason = (Harness.final(run)?["reason"] as? String) ?? ""
        #expect(reason.contains("r.lua:2:"), "no file:line in: \(reason)")
        #expect(reason.contains(message), "reason: \(reason)")
        if let s = suggestion { #expect(reason.contains("did you mean '\(s)'"), "reason: \(reason)") }
        #expect(!r.stderr.contains("stack traceback"))
    }

    // MARK: dry run

    @Test func dryRunPlansWithoutExecuting() throws {
        let d = Harness.tempDir("dry")
        Harness.write(d + "/r.lua", """
            preflight{checks = {{path = "missing-file"}}}
            runStage{id = "build", cmd = {"touch", "built"}}
            gate{name = "g", check = function() error("must not be called") end}
            runStage{id = "ship", cmd = "touch shipped"}
            """)
        let dry = try Harness.run(["run", "--dry-run", "r.lua"], cwd: d)
        #expect(dry.code == 0, "stderr: \(dry.stderr)")
        #expect(dry.stdout.contains("1. build: touch built") && dry.stdout.contains("ship: touch shipped"), "\(dry.stdout)")
        #expect(!FileManager.default.fileExists(atPath: d + "/built"))
        #expect(!FileManager.default.fileExists(atPath: d + "/shipped"))
        let f = try #require(Harness.final(Harness.latestRun(d) ?? ""))
        #expect(f["status"] as? String == "dry_run")
    }

    @Test func persistFinalRegistersWhatACancelledRunSays() throws {
        // No Lua code runs after a cancel: the result a cancel should leave is registered before.
        let d = Harness.tempDir("persist-cancel")
        Harness.write(d + "/r.lua", """
            persistFinal({step = 1}, {cancelled = {status = "cancelled", at = "first"}})
            persistFinal({}, {cancelled = {status = "cancelled", at = "sleep"}, stdout = true})
            baton.fs.write("ready", "1")
            runStage{id = "sleep", cmd = "sleep 30"}
            """)
        let (p, out, _) = try Harness.start(["run", "r.lua"], cwd: d)
        let stdout = Harness.Output(out)
        #expect(Harness.waitFor(20) { FileManager.default.fileExists(atPath: d + "/ready") })
        #expect(Harness.waitFor(20) {
            Harness.read((Harness.latestRun(d) ?? d) + "/journal.jsonl")?.contains(#""type":"stage_started""#) == true
        }, "the stage started")
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 143)
        let f = try #require(Harness.final(Harness.latestRun(d) ?? ""))
        let res = f["result"] as? [String: Any] ?? [:]
        #expect(f["status"] as? String == "cancelled" && res["status"] as? String == "cancelled" && res["at"] as? String == "sleep"
                && res["step"] as? Int == 1, "\(f)")
        let printed = try? JSONSerialization.jsonObject(with: Data(stdout.all().utf8)) as? [String: Any]
        #expect(printed?["at"] as? String == "sleep", "stdout: \(stdout.text)")
        // A run that is not cancelled keeps its own result.
        let (r, _, run) = try run("persist-not-cancelled", "persistFinal({}, {cancelled = {status = 'cancelled'}, stdout = true})\nreturn {status = 'done'}\n")
        #expect(r.code == 0 && r.stdout.isEmpty, "\(r.stdout)")
        #expect((Harness.final(run)?["result"] as? [String: Any])?["status"] as? String == "done")
    }
}
