import Foundation
import Testing

/// `baton run`: exit codes, the journal and final.json on every way a recipe ends.
@Suite struct RunTests {
    @Test func successWritesJournalAndFinal() throws {
        let d = Harness.tempDir("ok")
        Harness.write(d + "/r.lua", """
            baton.log("hello", {n = 1})
            persistFinal{kept = "yes"}
            assert(arg[0] == "r.lua" and arg[1] == "one" and arg[2] == "k=v")
            assert(baton.args.k == "v" and select("#", ...) == 2)
            assert(baton.run.id and baton.run.dir and baton.run.dry_run == false)
            return {answer = 42, list = {1, 2}}
            """)
        let r = try Harness.run(["run", "r.lua", "one", "k=v"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        let events = Harness.journal(run)
        #expect(Harness.events(events, type: "log").first?["message"] as? String == "hello")
        #expect(events.last?["type"] as? String == "final")
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "succeeded")
        #expect(f["exit_code"] as? Int == 0)
        let result = try #require(f["result"] as? [String: Any])
        #expect(result["answer"] as? Int == 42)
        #expect(result["kept"] as? String == "yes")
        #expect(result["list"] as? [Int] == [1, 2])
        for k in ["v", "run", "recipe", "status", "exit_code", "reason", "started_at", "ended_at", "duration_ms", "stages", "result"] {
            #expect(f.keys.contains(k), "final.json lacks \(k)")
        }
        #expect(!FileManager.default.fileExists(atPath: run + "/final.json.tmp"))
    }

    @Test func luaErrorExitsOneWithFileLine() throws {
        let d = Harness.tempDir("err")
        Harness.write(d + "/r.lua", "local x = 1\nlocal t = nil\nprint(t.field)\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1)
        #expect(r.stderr.contains("r.lua:3:"), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("stack traceback"), "no stack trace for a user mistake")
        let run = try #require(Harness.latestRun(d))
        _ = Harness.journal(run)
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "failed")
        #expect((f["reason"] as? String)?.contains("r.lua:3:") == true)
    }

    @Test func batonFailChoosesTheExitCode() throws {
        let d = Harness.tempDir("fail")
        Harness.write(d + "/r.lua", "persistFinal{before = 1}\nbaton.fail('risk could not be assessed', {code = 5})\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 5)
        let f = try #require(Harness.final(Harness.latestRun(d) ?? ""))
        #expect(f["exit_code"] as? Int == 5)
        #expect((f["reason"] as? String)?.contains("r.lua:2: risk could not be assessed") == true)
        #expect((f["result"] as? [String: Any])?["before"] as? Int == 1, "persistFinal survives a later error")
    }

    @Test func osExitEndsThroughTheNormalPath() throws {
        let d = Harness.tempDir("exit")
        // pcall cannot swallow os.exit.
        Harness.write(d + "/r.lua", "pcall(os.exit, 6)\nprint('not reached')\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 6)
        #expect(!r.stdout.contains("not reached"))
        let f = try #require(Harness.final(Harness.latestRun(d) ?? ""))
        #expect(f["status"] as? String == "failed" && f["exit_code"] as? Int == 6)

        Harness.write(d + "/z.lua", "os.exit(true)")
        let z = try Harness.run(["run", "z.lua"], cwd: d)
        #expect(z.code == 0)
        #expect(Harness.final(Harness.latestRun(d) ?? "")?["status"] as? String == "succeeded")
    }

    @Test(arguments: [
        ("syntax", "local x = = 1\n", "bad.lua:1:"),
        ("binary", "\u{1B}Lua\u{54}\u{00}garbage", "binary"),
        ("missing", "", "cannot read recipe"),
    ])
    func recipesThatDoNotLoadExitThree(kind: String, text: String, expected: String) throws {
        let d = Harness.tempDir("load-\(kind)")
        if kind != "missing" { Harness.write(d + "/bad.lua", text) }
        let r = try Harness.run(["run", "bad.lua"], cwd: d)
        #expect(r.code == 3, "stderr: \(r.stderr)")
        #expect(r.stderr.contains(expected), "stderr: \(r.stderr)")
        #expect(!r.stderr.contains("traceback"))
        #expect(Harness.runDirs(d).isEmpty, "nothing ran: no run directory")
        // With --json the error is an object on stdout.
        let j = try Harness.run(["run", "--json", "bad.lua"], cwd: d)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any], "stdout: \(j.stdout)")
        #expect(j.code == 3 && o["exit_code"] as? Int == 3 && (o["error"] as? String ?? "").contains(expected))
        // --detach says so at once, before it returns.
        let det = try Harness.run(["run", "--detach", "bad.lua"], cwd: d)
        #expect(det.code == 3 && det.stderr.contains(expected) && Harness.runDirs(d).isEmpty, "stderr: \(det.stderr)")
    }

    @Test func realBytecodeIsRefused() throws {
        let d = Harness.tempDir("bytecode")
        Harness.write(d + "/make.lua", "baton.fs.write('code.luac', string.dump(function() return 1 end))")
        #expect(try Harness.run(["run", "make.lua"], cwd: d).code == 0)
        let r = try Harness.run(["run", "code.luac"], cwd: d)
        #expect(r.code == 3)
        // Nor through load() inside a recipe.
        Harness.write(d + "/inner.lua", "local f, err = load(baton.fs.read('code.luac'))\nassert(f == nil and err:find('binary'), err)\n")
        let i = try Harness.run(["run", "inner.lua"], cwd: d)
        #expect(i.code == 0, "stderr: \(i.stderr)")
    }

    @Test func nativeModulesCannotLoad() throws {
        let d = Harness.tempDir("native")
        Harness.write(d + "/r.lua", """
            assert(package.loadlib == nil)
            assert(package.cpath == "")
            local ok, err = pcall(require, "definitely_not_a_module")
            assert(not ok and not tostring(err):find("%.so"), err)
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test(arguments: [(SIGTERM, Int32(143)), (SIGINT, Int32(130)), (SIGHUP, Int32(129))])
    func signalsWriteFinalJSON(sig: Int32, code: Int32) throws {
        let d = Harness.tempDir("sig")
        Harness.write(d + "/r.lua", "baton.log('sleeping')\nbaton.sleep(60)\n")
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("sleeping") == true })
        kill(p.processIdentifier, sig)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationReason == .exit, "baton must exit, not die of the signal")
        #expect(p.terminationStatus == code)
        let run = try #require(Harness.latestRun(d))
        _ = Harness.journal(run)
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "cancelled")
        #expect(f["exit_code"] as? Int == Int(code))
    }

    @Test func jsonOutputIsOneDocument() throws {
        let d = Harness.tempDir("json")
        Harness.write(d + "/r.lua", "print('for people')\nreturn {x = 1}")
        let r = try Harness.run(["run", "--json", "r.lua"], cwd: d)
        #expect(r.code == 0)
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(obj?["status"] as? String == "succeeded")
        #expect(r.stderr.contains("for people"))
    }

    @Test func runIdAndRunsDir() throws {
        let d = Harness.tempDir("ids")
        Harness.write(d + "/r.lua", "return {id = baton.run.id}")
        let r = try Harness.run(["run", "--runs-dir", "elsewhere", "--run-id", "my-run-1", "r.lua"], cwd: d)
        #expect(r.code == 0)
        #expect(Harness.final(d + "/elsewhere/my-run-1")?["run"] as? String == "my-run-1")
        let again = try Harness.run(["run", "--runs-dir", "elsewhere", "--run-id", "my-run-1", "r.lua"], cwd: d)
        #expect(again.code == 3 && again.stderr.contains("already exists"))
        let env = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_RUNS_DIR": d + "/viaenv"])
        #expect(env.code == 0)
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: d + "/viaenv")) ?? []).count == 1)
    }

    @Test func usageErrorsExitThree() throws {
        let d = Harness.tempDir("usage")
        #expect(try Harness.run(["run"], cwd: d).code == 3)
        #expect(try Harness.run(["frobnicate"], cwd: d).code == 3)
        #expect(try Harness.run(["run", "--nope", "r.lua"], cwd: d).code == 3)
    }

    @Test func helpers() throws {
        let d = Harness.tempDir("helpers")
        Harness.write(d + "/r.lua", """
            local j = baton.json.decode('{"a": [1, 2.5, null, "x"], "b": {"c": true}, "e": []}')
            assert(j.a[1] == 1 and math.type(j.a[1]) == "integer" and j.a[2] == 2.5 and j.a[3] == baton.json.null)
            assert(j.b.c == true)
            assert(baton.json.encode(j.e) == "[]" and baton.json.encode({}) == "{}")
            assert(baton.json.encode({3, 2, 1}) == "[3,2,1]")
            assert(baton.json.encode({b = 1, a = 2}) == '{"a":2,"b":1}')
            local cyc = {}; cyc.self = cyc
            local ok, err = pcall(baton.json.encode, cyc)
            assert(not ok and tostring(err):find("cycle"), tostring(err))
            local y = baton.yaml.decode("wo_id: WO-1\\nfiles:\\n  - path: a.sh\\n    mode: '0755'\\n")
            assert(y.wo_id == "WO-1" and y.files[1].path == "a.sh" and y.files[1].mode == "0755")
            baton.fs.mkdir("d/e")
            baton.fs.write("d/e/f.txt", "one")
            baton.fs.append("d/log.jsonl", "a\\n"); baton.fs.append("d/log.jsonl", "b\\n")
            assert(baton.fs.read("d/log.jsonl") == "a\\nb\\n")
            assert(baton.fs.exists("d/e/f.txt") and not baton.fs.exists("nope"))
            local g = baton.fs.glob("d/e/*.txt"); assert(#g == 1 and g[1] == "d/e/f.txt")
            assert(baton.sh("echo hi") == "hi\\n")
            local ok2, e2 = pcall(baton.sh, "exit 4")
            assert(not ok2 and tostring(e2):find("exit code 4"))
            assert(baton.env("HOME") ~= nil and baton.env("BATON_SURELY_UNSET") == nil)
            local t0 = baton.now(); baton.sleep(0.05); assert(baton.now() - t0 >= 0.04)
            assert(math.type(baton.now()) == "float")
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }
}
