import Foundation
import Testing

/// `baton check` as a linter (issue 12 part 2): undefined globals with the recipe
/// environment's globals known, misspelt fields and wrongly typed literals in literal
/// primitive tables, syntax errors in required modules; file:line:column, --json, exit 3.
@Suite struct CheckTests {
    static let bad = """
        local args = require("kit.args")
        local t = {risk = 1, [2] = "x"}
        for i, v in ipairs(t) do print(i, v) end
        runStag{id = "a", cmd = "true"}
        runStage{id = "b", cmd = "true", retrys = 2, timeout = "10"}
        baton.runStage({id = "c", cmd = {"true"}, backof = {}})
        preflight{name = "p", polcy = "warn", checks = {{env = "X"}}}
        watch{id = "w", file = "f", callback = "nope"}
        gate{name = "g", maxIterations = "2", check = function(i) return {approved = i > 0} end}
        if t.risk then local z = 1; print(z) else print(zz) end
        """

    @Test func findingsWithPositionsAndDidYouMean() throws {
        let d = Harness.tempDir("check-lint")
        Harness.write(d + "/bad.lua", Self.bad)
        let r = try Harness.run(["check", "bad.lua"], cwd: d)
        #expect(r.code == 3)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        for expected in [
            "bad.lua:4:1: undefined global 'runStag' (did you mean 'runStage'?) [undefined-global]",
            "bad.lua:5:34: runStage: unknown field 'retrys' (did you mean 'retries'?)",
            "bad.lua:5:56: runStage: field 'timeout' must be a number, got a string [field-type]",
            "bad.lua:6:43: runStage: unknown field 'backof' (did you mean 'backoff'?)",
            "bad.lua:7:23: preflight: unknown field 'polcy' (did you mean 'policy'?)",
            "bad.lua:8:40: watch: field 'callback' must be a function, got a string [field-type]",
            "bad.lua:9:34: gate: field 'maxIterations' must be a number, got a string [field-type]",
            "bad.lua:10:49: undefined global 'zz' [undefined-global]",
        ] {
            #expect(lines.contains { $0.hasPrefix(expected) }, "\(expected) in:\n\(r.stderr)")
        }
        #expect(lines.count == 8, "nothing else (locals, loop variables, table keys, known globals): \(r.stderr)")

        let j = try Harness.run(["check", "--json", "bad.lua"], cwd: d)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        let findings = try #require(doc["findings"] as? [[String: Any]])
        #expect(j.code == 3 && doc["ok"] as? Bool == false && findings.count == 8)
        let first = findings[0]
        #expect(first["file"] as? String == "bad.lua" && first["line"] as? Int == 4 && first["column"] as? Int == 1
                && first["code"] as? String == "undefined-global" && (first["message"] as? String)?.contains("runStag") == true, "\(first)")
    }

    /// Issue 23 item 7: what `baton run --no-check` refuses, `check` refuses too (both read the
    /// one declaration): an option of parallel, a field of a preflight check, a retryOn class,
    /// a watch's onMissing; the run's own pre-run check stops each before the first stage.
    @Test func checkRefusesWhatTheRuntimeRefuses() throws {
        let d = Harness.tempDir("check-decl")
        let cases: [(String, String, String)] = [
            ("parallel({1, 2}, function(i) return i end, {maxConcurency = 2})\n",
             "r.lua:2:45: parallel's options: unknown field 'maxConcurency' (did you mean 'maxConcurrency'?)",
             "parallel: unknown option 'maxConcurency'"),
            ("preflight{checks = {{cmd = \"true\", timout = 3}}}\n",
             "r.lua:2:36: preflight: checks[1]: unknown field 'timout' (did you mean 'timeout'?)",
             "preflight: checks[1]: unknown field 'timout'"),
            ("runStage{id = \"b\", cmd = \"true\", retries = 1, retryOn = {\"transiant\"}}\n",
             "r.lua:2:58: runStage: field 'retryOn'[1] must be one of 'transient', 'deterministic', 'stalled', got 'transiant' (did you mean 'transient'?) [field-value]",
             "runStage: field 'retryOn'[1] must be 'transient', 'deterministic' or 'stalled', got 'transiant'"),
            ("watch{id = \"w\", file = \"f\", onMissing = \"explode\"}\n",
             "r.lua:2:41: watch: field 'onMissing' must be one of 'fail', 'block', 'callback', got 'explode' [field-value]",
             "watch: field 'onMissing' must be one of 'fail', 'block', 'callback', got 'explode'"),
        ]
        for (line, checkSays, runSays) in cases {
            let recipe = "runStage{id = 'a', cmd = {'touch', 'ran'}}\n" + line
            Harness.write(d + "/r.lua", recipe)
            try? FileManager.default.removeItem(atPath: d + "/ran")
            let c = try Harness.run(["check", "r.lua"], cwd: d)
            #expect(c.code == 3 && c.stderr.contains(checkSays), "\(line)-> \(c.code): \(c.stderr)")
            // baton run stops before the first stage ...
            let r = try Harness.run(["run", "r.lua"], cwd: d)
            #expect(r.code == 3 && r.stderr.contains(checkSays) && !FileManager.default.fileExists(atPath: d + "/ran"), "\(r.stderr)")
            // ... and without the check, the runtime refuses it when it gets there, in its own words.
            let nc = try Harness.run(["run", "--no-check", "r.lua"], cwd: d)
            #expect(nc.code == 3 && nc.stderr.contains(runSays) && FileManager.default.fileExists(atPath: d + "/ran"), "\(nc.stderr)")
        }
        // Every legal value and option still passes.
        Harness.write(d + "/ok.lua", """
            parallel({1}, function(i) return i end, {maxConcurrency = 2, onFailure = "drain", maxFailures = 1})
            preflight{policy = "warn", checks = {{cmd = "true", timeout = 3, cwd = "."}, {path = ".", dir = true}, {env = "PATH", name = "p"}}}
            runStage{id = "b", cmd = "true", retryOn = {"transient", "deterministic", "stalled"}, transient = {exit = {75}, stderr = {"x"}}}
            runStage{id = "c", cmd = "true", retryOn = "stalled", waitFor = "group", executor = "local"}
            watch{id = "w", file = "ok.lua", onMissing = "callback", callback = function() end}
            baton.sh("true", {cwd = ".", readOnly = true})
            persistFinal({a = 1}, {stdout = false})
            """)
        let ok = try Harness.run(["check", "ok.lua"], cwd: d)
        #expect(ok.code == 0, "\(ok.stderr)")
        #expect(try Harness.run(["run", "ok.lua"], cwd: d).code == 0)
    }

    /// An executor's table is checked by the options its kind declares (the runtime's list).
    @Test func anExecutorsTableIsCheckedByItsDeclaredOptions() throws {
        let d = Harness.tempDir("check-executor")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "true", executor = "slurm", slurm = {partiton = "gpu", poll = 2, time = "10"}}
            baton.executor("slurm", {partition = "cpu", poll = 2})
            """)
        let r = try Harness.run(["check", "r.lua"], cwd: d)
        #expect(r.code == 3)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("r.lua:1:63: runStage: field 'slurm': unknown field 'partiton' (did you mean 'partition'?)") },
                "\(r.stderr)")
        // `poll` is the run's setting (baton.executor), not a stage's.
        #expect(lines.contains { $0.hasPrefix("r.lua:1:81: runStage: field 'slurm': unknown field 'poll'") }, "\(r.stderr)")
        #expect(lines.count == 2, "\(r.stderr)")
    }

    @Test func syntaxErrorsInRequiredModulesAndCleanRecipes() throws {
        let d = Harness.tempDir("check-modules")
        Harness.write(d + "/lib/helper.lua", "local M = {}\nfunction M.f()\n  return = 1\nend\nreturn M\n")
        Harness.write(d + "/r.lua", "local h = require('lib.helper')\nrunStage{id = 'a', cmd = 'true'}\n")
        let r = try Harness.run(["check", "r.lua"], cwd: d)
        #expect(r.code == 3 && r.stderr.contains("lib/helper.lua:3:10:") && r.stderr.contains("[syntax]"), "\(r.stderr)")
        // Every field with the type it takes, globals defined by the file, methods, labels: clean.
        Harness.write(d + "/ok.lua", """
            local h = {}
            function h:go(x) return self, x end
            counter = 0
            function bump() counter = counter + 1 end
            preflight{name = "p", policy = "warn", timeout = 5, checks = {{path = "."}}}
            local s = runStage{id = "a", cmd = {"true"}, cwd = ".", env = {A = "1"}, stdin = "x", timeout = 5, grace = 1, retries = 1,
              retryOn = {"transient"}, backoff = {initial = 1}, transient = {exit = {75}}, breaker = 2, requireFiles = {},
              background = false, allowFail = true}
            watch{id = "w", pid = 1, readyTimeoutSec = 1, readyPollSec = 1, onMissing = "block", timeoutSec = 1, heartbeatSec = 1,
              callback = function(info) return info.id end, cwd = ".", allowFail = true, requireFiles = {}}
            gate{name = "g", maxIterations = 2, cmd = "true", cwd = ".", env = {}, timeout = 1, fallback = {approved = true},
              onReject = function() bump() end}
            for i = 1, 3 do
              if i == 2 then goto skip end
              h:go(i)
              ::skip::
            end
            return {ok = s.ok, n = counter, arg0 = arg[0]}
            """)
        let ok = try Harness.run(["check", "ok.lua"], cwd: d)
        #expect(ok.code == 0 && ok.stdout.contains("ok.lua: ok"), "\(ok.stderr)")
        // The recipes that ship with Baton are clean.
        for recipe in ["gap09.lua", "wo_rebuild.lua", "research_callback.lua"] {
            let path = Harness.packageRoot.appendingPathComponent("recipes/" + recipe).path
            let c = try Harness.run(["check", path], cwd: Harness.packageRoot.path)
            #expect(c.code == 0, "\(recipe): \(c.stderr)")
        }
    }

    /// Issue 23 item 9: several files and directories; a directory's modules are checked
    /// with the recipes that require them, not as recipes; findings sorted by file and line.
    @Test func severalFilesAndDirectories() throws {
        let d = Harness.tempDir("check-many")
        Harness.write(d + "/b.lua", "runStage{id = 'b', cmd = 'true', retrys = 1}\nrunStag{id = 'x'}\n")
        Harness.write(d + "/a.lua", "local m = require('lib.mod')\nprint(zz1)\nprint(m)\n")
        Harness.write(d + "/lib/mod.lua", "local M = {}\nreturn M\n")   // a module: not a recipe
        Harness.write(d + "/sub/c.lua", "print(qq)\n")
        Harness.write(d + "/.baton/x.lua", "this is not lua\n")              // hidden: skipped
        let r = try Harness.run(["check", "."], cwd: d)
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(r.code == 3 && lines.count == 4, "\(r.stderr)")
        #expect(lines.map { String($0.prefix(while: { $0 != " " })) } == ["a.lua:2:7:", "b.lua:1:34:", "b.lua:2:1:", "sub/c.lua:1:7:"], "\(r.stderr)")
        #expect(!r.stdout.contains("mod.lua") && !r.stderr.contains("mod.lua"), "\(r.stdout)")
        let two = try Harness.run(["check", "sub", "b.lua"], cwd: d)
        #expect(two.code == 3 && two.stderr.split(separator: "\n").first?.hasPrefix("b.lua:1:") == true, "\(two.stderr)")
        let j = try Harness.run(["check", "--json", ".", "b.lua"], cwd: d)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        #expect(doc["recipes"] as? [String] == ["a.lua", "b.lua", "sub/c.lua"] && (doc["findings"] as? [Any])?.count == 4, "\(j.stdout)")
        Harness.write(d + "/ok/r.lua", "runStage{id = 'a', cmd = 'true'}\n")
        let ok = try Harness.run(["check", "ok"], cwd: d)
        #expect(ok.code == 0 && ok.stdout.contains("ok/r.lua: ok"), "\(ok.stdout) \(ok.stderr)")
        let dot = try Harness.run(["check", "."], cwd: d + "/ok")
        #expect(dot.code == 0 && dot.stdout.contains("r.lua: ok"), "\(dot.stdout) \(dot.stderr)")
        let none = try Harness.run(["check", "lib/.."], cwd: Harness.tempDir("check-none"))
        #expect(none.code == 3)
        // The shipped recipes and fixtures, as a directory.
        let shipped = try Harness.run(["check", "recipes", "Tests/Fixtures"], cwd: Harness.packageRoot.path)
        #expect(shipped.code == 0, "\(shipped.stderr)")
    }

    /// Every finding code `check` can print is documented in docs/cli.md.
    @Test func everyFindingCodeIsDocumented() throws {
        let root = Harness.packageRoot.path
        let swift = Harness.read(root + "/Sources/BatonLua/Check.swift") ?? ""
        let lint = Harness.read(root + "/scripts-lua/kit/lint.lua") ?? ""
        let docs = Harness.read(root + "/docs/cli.md") ?? ""
        var codes = Set<String>()
        for (text, pattern) in [(swift, #"code: "([a-z-]+)""#), (lint, #"add\([^,]+, "([a-z-]+)""#)] {
            let re = try NSRegularExpression(pattern: pattern)
            for m in re.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                codes.insert(String(text[Range(m.range(at: 1), in: text)!]))
            }
        }
        #expect(codes.count >= 8 && codes.contains("undefined-global") && codes.contains("syntax"), "\(codes)")
        for c in codes { #expect(docs.contains("| `\(c)` |"), "finding code '\(c)' is not in docs/cli.md") }
    }

    /// Issue 23 item 8: `baton run` checks the whole recipe before the first stage: a
    /// certain error stops it with exit 3 and file:line:col, before any stage or run
    /// directory; `--no-check` skips it; no false positives on what is legal.
    @Test func runChecksTheWholeRecipeFirst() throws {
        let d = Harness.tempDir("check-run")
        let cases: [(String, String)] = [
            ("runStage{id = 'a', cmd = {'touch', 'ran'}}\nrunstage{id = 'b', cmd = 'true'}\n", "r.lua:2:1: undefined global 'runstage' (did you mean 'runStage'?) [undefined-global]"),
            ("runStage{id = 'a', cmd = {'touch', 'ran'}}\nlocal function later()\n  runStage{id = 'b', cmd = 'true', retrys = 2}\nend\nlater()\n", "r.lua:3:36: runStage: unknown field 'retrys'"),
            ("runStage{id = 'a', cmd = {'touch', 'ran'}}\nwatch{id = 'w', file = 'f', onMissing = 'explode'}\n", "r.lua:2:41: watch: field 'onMissing' must be one of"),
            ("runStage{id = 'a', cmd = {'touch', 'ran'}}\nparallel({1, 2})\n", "r.lua:2:1: parallel takes 2 or 3 arguments, given 1 [arg-count]"),
            ("runStage{id = 'a', cmd = {'touch', 'ran'}}\nrunStage({id = 'b', cmd = 'true'}, {retries = 1})\n", "r.lua:2:1: runStage takes 1 argument, given 2 [arg-count]"),
        ]
        for (recipe, says) in cases {
            Harness.write(d + "/r.lua", recipe)
            let r = try Harness.run(["run", "r.lua"], cwd: d)
            #expect(r.code == 3 && r.stderr.contains(says), "\(recipe)\n-> \(r.code): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: d + "/ran"), "no stage ran")
            #expect(Harness.runDirs(d).isEmpty, "no run directory")
            let j = try Harness.run(["run", "--json", "r.lua"], cwd: d)
            #expect(j.code == 3 && j.stdout.contains("exit_code"), "\(j.stdout)")
            let det = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
            #expect(det.code == 3 && det.stderr.contains(says) && Harness.runDirs(d).isEmpty, "--detach: \(det.stderr)")
        }
        // --no-check: the first stage runs, the runtime meets the error.
        Harness.write(d + "/r.lua", cases[0].0)
        let nc = try Harness.run(["run", "--no-check", "r.lua"], cwd: d)
        #expect(nc.code == 1 && FileManager.default.fileExists(atPath: d + "/ran") && Harness.runDirs(d).count == 1, "\(nc.stderr)")

        // Legal Lua is never stopped: a bare read of an unknown global (feature detection),
        // globals made by a module it requires, through _G or load, a pcall'd call, methods.
        let e = Harness.tempDir("check-run-ok")
        Harness.write(e + "/lib/helpers.lua", "function shout(s) return s:upper() end\nreturn {}\n")
        Harness.write(e + "/ok.lua", """
            require("lib.helpers")
            if jit then print("luajit") end
            local x = shout("a")
            _G.made = function() return 1 end
            made()
            local ok = pcall(function() return nosuchthing end)
            local t = {runstage = 1}; print(t.runstage, x, ok)
            runStage{id = "a", cmd = {"true"}, retries = 0, allowFail = true}
            local items = {1, 2}
            parallel(items, function(i) return i end, {maxConcurrency = 2})
            persistFinal{done = true}
            persistFinal({step = 2}, {cancelled = {status = "cancelled"}, stdout = true})
            -- A function in a literal table: its body's `a, b = ...` are no fields.
            preflight{checks = {{name = "n", check = function() local ok, why = true, "fine"; return ok, why end}}}
            """)
        let ok = try Harness.run(["run", "ok.lua"], cwd: e)
        #expect(ok.code == 0, "\(ok.stderr)")
    }
}
