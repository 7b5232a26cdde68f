import Foundation
import Testing

/// The bugs found by trying Baton as a new user would (issue 11), each on the built binary.
@Suite struct NewUserBugTests {
    func run(_ name: String, _ recipe: String, args: [String] = [], env: [String: String] = [:], timeout: Double = 60) throws -> (Harness.Result, String, String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let r = try Harness.run(["run"] + args + ["r.lua"], cwd: d, env: env, timeout: timeout)
        return (r, d, Harness.latestRun(d) ?? "")
    }

    // MARK: 1. backoff as a list

    @Test func backoffListFormIsTheDocumentedDefault() throws {
        // Three attempts with {0.2, 2, 0.3}: waits 0.2 then 0.3 (capped), so at least 0.5 s.
        let (r, _, run) = try run("backoff-list", """
            local t0 = baton.now()
            local a = runStage{id = "a", cmd = "exit 1", retries = 2, retryOn = {"deterministic"}, backoff = {0.2, 2, 0.3}, allowFail = true}
            assert(a.attempts == 3, "attempts " .. a.attempts)
            assert(baton.now() - t0 >= 0.45, "the list's delays were not used: " .. (baton.now() - t0))
            local b = runStage{id = "b", cmd = "true", backoff = {initial = 1, factor = 2, max = 60}}
            local c = runStage{id = "c", cmd = "true", backoff = {0.5}}
            assert(b.ok and c.ok)
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    @Test(arguments: [
        ("{1, \"x\"}", "field 'backoff[2]' (factor) must be a number, got string"),
        ("{initial = -1}", "field 'backoff.initial' must be at least 0, got -1"),
        ("{1, 2, max = 60}", "not a mix of both"),
        ("{1, 2, 60, 4}", "has 4 items; at most 3"),
        ("{initail = 1}", "unknown field 'initail' (did you mean 'initial'?)"),
        ("{1, 0.5}", "field 'backoff[2]' (factor) must be at least 1"),
        ("'fast'", "field 'backoff' must be a list {initial, factor, max} or a table"),
    ])
    func malformedBackoffIsAFieldErrorWithFileAndLine(value: String, message: String) throws {
        let recipe = "local x = 1\nrunStage{id = 'a', cmd = 'true', backoff = \(value)}\n"
        let (r, d, run) = try run("backoff-bad", recipe, args: ["--no-check"])   // the runtime's own check
        #expect(r.code == 3, "\(value) -> \(r.code): \(r.stderr)")
        let reason = (Harness.final(run)?["reason"] as? String) ?? ""
        #expect(reason.contains("r.lua:2:") && reason.contains("runStage:") && reason.contains(message), "reason: \(reason)")
        #expect(!reason.contains("invalid key to 'next'") && !r.stderr.contains("invalid key to 'next'"))
        #expect(!FileManager.default.fileExists(atPath: run + "/stages/a"), "the stage must not run")

        let dry = try Harness.run(["run", "--dry-run", "--no-check", "r.lua"], cwd: d)
        #expect(dry.code == 3, "--dry-run \(value) -> \(dry.code): \(dry.stderr)")
        #expect(dry.stderr.contains(message), "--dry-run: \(dry.stderr)")

        // check is static: it reads the literal table in the recipe text.
        let check = try Harness.run(["check", "r.lua"], cwd: d)
        #expect(check.code == 3, "check \(value) -> \(check.code): \(check.stdout) \(check.stderr)")
        #expect((check.stdout + check.stderr).contains("r.lua:2:1: runStage: ") && (check.stdout + check.stderr).contains(message),
                "check: \(check.stdout) \(check.stderr)")
    }

    @Test func checkLeavesComputedAndCommentedBackoffAlone() throws {
        let d = Harness.tempDir("backoff-check")
        Harness.write(d + "/r.lua", """
            local b = {1, 2, 60}
            -- backoff = {1, "x"} in a comment is not code
            runStage{id = "a", cmd = "true", backoff = b}
            runStage{id = "b", cmd = "true", backoff = {initial = 0.5, max = 4}}
            runStage{id = "c", cmd = "true", backoff = {1, 2, 60}}
            """)
        let check = try Harness.run(["check", "r.lua"], cwd: d)
        #expect(check.code == 0, "\(check.stdout) \(check.stderr)")
    }

    @Test func aListItemInASpecIsRefusedNotSkipped() throws {
        let (r, _, run) = try run("positional", "runStage{'build', id = 'a', cmd = 'true'}\n")
        #expect(r.code == 3, "stderr: \(r.stderr)")
        let reason = (Harness.final(run)?["reason"] as? String) ?? ""
        #expect(reason.contains("r.lua:1: runStage: unexpected list item [1]"), "reason: \(reason)")
    }

    // MARK: 2. a command that is there but not executable

    @Test func aCommandWithoutTheExecuteBitIsPermissionDenied126() throws {
        let d = Harness.tempDir("noexec")
        Harness.write(d + "/tool.sh", "#!/bin/sh\necho hi\n", mode: 0o644)
        Harness.write(d + "/bin/onpath-tool", "#!/bin/sh\necho hi\n", mode: 0o644)
        Harness.write(d + "/r.lua", """
            local a = runStage{id = "by-path", cmd = {"./tool.sh"}, allowFail = true}
            local b = runStage{id = "on-path", cmd = {"onpath-tool"}, allowFail = true}
            local c = runStage{id = "missing", cmd = {"no-such-tool-anywhere"}, allowFail = true}
            local g = baton.sh({"./tool.sh"}, {allowFail = true})
            persistFinal{a = {a.exit, a.message, a.failure_class, a.attempts},
                         b = {b.exit, b.message}, c = {c.exit, c.message}}
            """)
        let path = d + "/bin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["PATH": path])
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try #require(Harness.final(Harness.latestRun(d) ?? "")?["result"] as? [String: Any])
        let a = try #require(result["a"] as? [Any]), b = try #require(result["b"] as? [Any]), c = try #require(result["c"] as? [Any])
        #expect(a[0] as? Int == 126 && (a[1] as? String)?.contains("permission denied") == true, "\(a)")
        #expect(a[2] as? String == "deterministic" && a[3] as? Int == 1, "\(a)")
        #expect(b[0] as? Int == 126 && (b[1] as? String)?.contains("permission denied") == true, "\(b)")
        #expect(c[0] as? Int == 127 && (c[1] as? String)?.contains("command not found") == true, "\(c)")
    }

    /// Found and executable, but the kernel will not run it: the stage starts without waiting
    /// for its exec, so the child itself reports the failure, as a shell would (126, a line
    /// on its stderr naming the file and the reason), and the stage is not retried.
    @Test func anExecutableTheKernelCannotRunIs126WithTheReason() throws {
        let d = Harness.tempDir("enoexec")
        Harness.write(d + "/garbage", "\u{7f}ELF not really an ELF file", mode: 0o755)
        Harness.write(d + "/r.lua", """
            local a = runStage{id = "garbage", cmd = {"./garbage"}, allowFail = true, retries = 2}
            persistFinal{a = {a.exit, a.stderr, a.attempts}}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try #require(Harness.final(Harness.latestRun(d) ?? "")?["result"] as? [String: Any])
        let a = try #require(result["a"] as? [Any])
        #expect(a[0] as? Int == 126, "\(a)")
        #expect((a[1] as? String)?.contains("cannot start") == true && (a[1] as? String)?.contains("garbage: Exec format error") == true, "\(a)")
        #expect(a[2] as? Int == 1, "a deterministic failure is not retried: \(a)")
    }

    // MARK: 3. watch with nothing to watch

    @Test func aWatchWithNothingToWatchIsAUsageError() throws {
        // The runtime's own error (--no-check: the check before the run finds it first, below).
        let (r, _, run) = try run("watch-nothing", "local x = 1\nwatch{id = 'w'}\n", args: ["--no-check"])
        #expect(r.code == 3, "stderr: \(r.stderr)")
        let reason = (Harness.final(run)?["reason"] as? String) ?? ""
        #expect(reason.contains("r.lua:2:"), "\(reason)")
        for f in ["handle", "pid", "pattern", "file", "requireFiles"] { #expect(reason.contains(f), "\(f) not named: \(reason)") }
        let (c, _, none) = try self.run("watch-nothing-checked", "local x = 1\nwatch{id = 'w'}\n")
        #expect(c.code == 3 && none.isEmpty, "stopped before a run directory: \(c.stderr)")
        for f in ["handle", "pid", "pattern", "file", "requireFiles"] { #expect(c.stderr.contains(f), "\(f) not named: \(c.stderr)") }
    }

    @Test func aFileWatchThatTimesOutSaysTheFileDidNotAppear() throws {
        let (r, _, run) = try run("watch-file", """
            local w = watch{id = "w", file = "never.flag", timeoutSec = 0.3, readyPollSec = 0.1, allowFail = true}
            assert(w.state == "failed" and not w.ok)
            persistFinal{reason = w.reason}
            watch{id = "w2", file = "never.flag", timeoutSec = 0.2, readyPollSec = 0.1}
            """)
        #expect(r.code == 1, "stderr: \(r.stderr)")
        let f = try #require(Harness.final(run))
        let why = ((f["result"] as? [String: Any])?["reason"] as? String) ?? ""
        #expect(why.contains("never.flag did not appear"), "\(why)")
        #expect(!why.contains("still running"), "\(why)")
        #expect((f["reason"] as? String)?.contains("never.flag did not appear") == true, "\(f["reason"] ?? "")")
    }

    // MARK: 4. watch on a failed background stage

    @Test func aWatchOnAFailedStageFailsAtOnce() throws {
        let (r, _, run) = try run("watch-failed", """
            local h = runStage{id = "job", cmd = "sleep 0.2; exit 3", background = true}
            local t0 = baton.now()
            local ok, e = pcall(watch, {id = "w", handle = h, requireFiles = {"out/metrics.json"}, readyTimeoutSec = 60})
            assert(not ok, "the watch did not fail")
            assert(baton.now() - t0 < 20, "waited for files a failed job will never write")
            assert(e.outcome.state == "failed", e.outcome.state)
            persistFinal{message = tostring(e), waited = baton.now() - t0}
            """, timeout: 90)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let result = try #require(Harness.final(run)?["result"] as? [String: Any])
        let msg = result["message"] as? String ?? ""
        #expect(msg.contains("stage job failed") && msg.contains("exit code 3"), "\(msg)")
        #expect((result["waited"] as? Double ?? 99) < 20)
        let watches = Harness.events(Harness.journal(run), type: "watch")
        #expect(watches.last?["to"] as? String == "failed")
        #expect(!watches.contains { $0["to"] as? String == "awaiting_artifacts" }, "it waited for artifacts")
    }

    @Test func onMissingCallbackCallsTheCallbackAtOnceAndBlockBlocksAtOnce() throws {
        let (r, _, run) = try run("watch-failed-cb", """
            local h = runStage{id = "job", cmd = "exit 4", background = true}
            local seen
            local w = watch{id = "cb", handle = h, requireFiles = {"m.json"}, readyTimeoutSec = 60, onMissing = "callback",
                            callback = function(info) seen = info; return "called" end}
            assert(seen and seen.status == "failed" and seen.exit == 4 and seen.missing[1]:find("m.json"), "callback info")
            assert(w.state == "completed" and w.ok == false and w.callback_result == "called", w.state)
            local b = watch{id = "blk", handle = h, requireFiles = {"m.json"}, readyTimeoutSec = 60, onMissing = "block"}
            assert(b.state == "blocked" and b.reason:find("exit code 4"), b.reason)
            -- a failed job that left every required file is handled as usual (its callback sees the failure)
            local h2 = runStage{id = "job2", cmd = "echo '{}' > m2.json; exit 5", background = true}
            local w2 = watch{id = "left", handle = h2, requireFiles = {"m2.json"}, callback = function(info) return info.exit end}
            assert(w2.state == "completed" and w2.callback_result == 5 and w2.ok == false)
            -- ... but with no callback to handle it, the failure is the watch's
            local ok, e = pcall(watch, {id = "nocb", handle = h2, requireFiles = {"m2.json"}})
            assert(not ok and e.outcome.state == "failed" and tostring(e):find("stage job2 failed with exit code 5"), tostring(e))
            local n = watch{id = "plain", handle = h2, allowFail = true}
            assert(n.state == "failed" and n.ok == false)
            """, timeout: 90)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    // MARK: 5. an approved gate with notes

    @Test func anApprovedGateWithIssuesReadsAsApproved() throws {
        let (r, _, _) = try run("gate-notes", """
            local d = gate{name = "review", check = function() return {approved = true, issues = {"style nit"}} end}
            assert(d.approved)
            pcall(gate, {name = "strict", check = function() return {approved = false, issues = {"broken build"}} end})
            """)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let approved = r.stderr.split(separator: "\n").first { $0.contains("gate review") } ?? ""
        #expect(approved.contains("approved (notes: style nit)"), "\(approved)")
        #expect(!approved.contains("approved style nit"), "\(approved)")
        let rejected = r.stderr.split(separator: "\n").first { $0.contains("gate strict") } ?? ""
        #expect(rejected.contains("rejected: broken build"), "\(rejected)")
    }
}

/// 6. Hostile metatables on _G and on strings: Swift never calls a Lua API function that
/// can run a metamethod outside a protected call (a Lua panic would abort the shell).
@Suite struct HostileMetatableTests {
    static let hostile = """
        local err = error; getmetatable("").__index = function() err("hostile string index") end; \
        setmetatable(_G, {__index = function(_, k) err("hostile global read " .. k) end, \
        __newindex = function(_, k) err("hostile global write " .. k) end})
        """

    static let primitives = """
        local r = runStage{id = "s", cmd = {"echo", "hi"}}; \
        local p = preflight{checks = {{path = "."}}}; \
        local w = watch{id = "w", file = "."}; \
        local g = gate{name = "g", check = function() return {approved = true, issues = {"note"}} end}; \
        persistFinal{ok = r.ok}; \
        local out = baton.sh({"echo", "sh"}); \
        local j = baton.json.decode('{"a": [1, 2]}'); \
        print("PRIMS " .. tostring(r.ok) .. " " .. tostring(p.ok) .. " " .. w.state .. " " .. tostring(g.approved) .. " " .. out .. " " .. j.a[2])
        """

    /// `baton` with the chunk on stdin: it must not die by a signal, and the primitives ran.
    func piped(_ tag: String, _ chunk: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> Harness.Result {
        let d = Harness.tempDir(tag)
        let r = try Harness.run([], cwd: d, env: ["XDG_STATE_HOME": d + "/state"], stdin: chunk)
        #expect(!r.signaled, "baton died by a signal: \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stdout.contains("PRIMS true true completed true sh\n 2"), "stdout: \(r.stdout)", sourceLocation: sourceLocation)
        return r
    }

    @Test func pipedChunkSurvivesHostileMetatables() throws {
        let r = try piped("hostile-piped", HostileMetatableTests.hostile + "\n" + HostileMetatableTests.primitives + "\nundefined_global = 1\n")
        #expect(r.code == 1, "the hostile __newindex error ends the chunk as an error: \(r.code) \(r.stderr)")
        #expect(r.stderr.contains("hostile global write undefined_global"), "stderr: \(r.stderr)")
    }

    /// The registry is reachable through `debug`: metatables Baton keeps there may be
    /// replaced by anything, and the registry itself given a hostile metatable.
    @Test func pipedChunkSurvivesATamperedRegistry() throws {
        let r = try piped("hostile-registry", """
            local reg = debug.getregistry()
            reg["baton.stage_result"] = 1; reg["baton.json.array_mt"] = "x"; reg["baton.error_mt"] = false
            reg["baton.stage_handle"] = true
            setmetatable(reg, {__index = function() error("hostile registry read") end,
                               __newindex = function() error("hostile registry write") end})
            local h = runStage{id = "bg", cmd = {"true"}, background = true}
            assert(h:wait().ok)
            \(HostileMetatableTests.primitives)
            print(baton.json.encode(baton.json.array()))
            local ok, e = pcall(runStage, {id = "f", cmd = "exit 2"})
            print("CAUGHT " .. tostring(ok) .. " " .. tostring(e.code))
            """)
        #expect(r.code == 0, "\(r.code) \(r.stderr)")
        #expect(r.stdout.contains("CAUGHT false 1"), "stdout: \(r.stdout)")
    }

    @Test func everyMetaCommandAndPrimitiveSurvivesHostileMetatables() throws {
        let d = Harness.tempDir("hostile-shell")
        Harness.write(d + "/done.lua", #"runStage{id = "build", cmd = {"echo", "built"}}; return {ok = true}"#)
        #expect(try Harness.run(["run", "--run-id", "20261101-000000-0001", "done.lua"], cwd: d).code == 0)
        Harness.write(d + "/load.lua", #"local r = runStage{id = "loaded", cmd = {"echo", "loaded"}}; print("LOADED " .. tostring(r.ok) .. " " .. arg[1])"#)
        let p = try Pane("hostile", cwd: d)
        defer { p.kill() }
        func step(_ line: String, expect: String? = nil, timeout: Double = 30, sourceLocation: SourceLocation = #_sourceLocation) {
            let m = p.mark()
            p.send(line)
            if let e = expect {
                #expect(p.waitFor(e, after: m, timeout: timeout), "after \(line) expected \(e) in:\n\(p.screenSince(m))", sourceLocation: sourceLocation)
            }
            #expect(p.waitForPrompt(">", timeout: timeout), "no prompt after \(line):\n\(p.screenSince(m))", sourceLocation: sourceLocation)
            #expect(!p.screen().contains("BATON-EXIT="), "the shell ended after \(line):\n\(p.screenSince(m))", sourceLocation: sourceLocation)
        }
        step(HostileMetatableTests.hostile)
        step("x = 1", expect: "hostile global write x")
        step("print(#y)", expect: "hostile global read y")
        step(":help", expect: ":attach")
        step(":runs", expect: "20261101-000000-0001")
        step(":status", expect: "20261101-000000-0001")
        step(":attach latest", expect: "succeeded")
        step(":tail latest", expect: "run_started")
        step(":tail 20261101-000000-0001 build", expect: "built")
        step(":cancel 20261101-000000-0001", expect: "20261101-000000-0001")
        step(":resume 20261101-000000-0001")
        step(":load load.lua word", expect: "LOADED true word")
        step(HostileMetatableTests.primitives, expect: "PRIMS true true completed true sh")
        step("return runStage{id = 'v', cmd = {'echo', 'v'}}")
        step("return baton.json.decode('[1, {\"k\": \"v\"}]')")
        step("error(setmetatable({}, {__tostring = function() error('no tostring') end}))")
        let m = p.mark()
        p.send(":quit")
        #expect(p.waitFor("BATON-EXIT=", after: m), "\(p.screenSince(m))")
        #expect(p.screenSince(m).contains("BATON-EXIT=0"), "\(p.screenSince(m))")
    }
}

/// 8. The build the README tells users to make is the one scripts/demo runs and
/// scripts/bench measures, and it builds baton-yaml beside baton (without it every YAML
/// work order of a WO rebuild is "invalid YAML").
@Suite struct BuildScriptsAgreeTests {
    func text(_ path: String) throws -> String {
        try #require(Harness.read(Harness.packageRoot.appendingPathComponent(path).path), "no \(path)")
    }

    @Test func readmeDemoAndBenchMakeTheSameBuildWithBothProducts() throws {
        let build = try text("scripts/build")
        let flagsLine = try #require(build.split(separator: "\n").first { $0.hasPrefix("flags=(") }, "scripts/build has no flags=(...) line")
        let flags = String(flagsLine.dropFirst("flags=(".count).dropLast())
        #expect(flags.contains("-c release"), "\(flags)")
        #expect(!build.contains("--product"), "scripts/build must build every product")
        #expect(build.contains("baton baton-yaml"), "scripts/build must check both binaries")
        #expect(FileManager.default.isExecutableFile(atPath: Harness.packageRoot.appendingPathComponent("scripts/build").path))

        let readme = try text("README.md")
        let byHand = try #require(readme.range(of: "## Building by hand").map { String(readme[$0.upperBound...]) })
        let section = byHand.components(separatedBy: "\n## ").first ?? byHand
        #expect(section.contains("`swift build \(flags)`"), "README's build is not scripts/build's: \(section)")
        #expect(section.contains("scripts/build"))

        for script in ["scripts/demo", "scripts/bench"] {
            let s = try text(script)
            #expect(s.contains("scripts/build") || s.contains("\"scripts\", \"build\""), "\(script) does not use scripts/build")
            let ownReleaseBuild = s.split(separator: "\n").filter { $0.contains("swift build -c release") || $0.contains("\"-c\", \"release\"") }
            #expect(ownReleaseBuild.isEmpty, "\(script) makes its own release build: \(ownReleaseBuild)")
        }
        let demo = try text("scripts/demo")
        #expect(demo.contains("baton-yaml") && demo.contains("baton.yaml.decode"), "scripts/demo must check baton-yaml is there")
    }
}
