import Foundation
import Testing

/// Issue 22, item 8: run directories are Baton's alone.
extension IntegrityTests {
    static func mode(_ path: String) -> Int {
        var st = stat()
        return lstat(path, &st) == 0 ? Int(st.st_mode & 0o777) : -1
    }

    /// Every file and folder of a run, its own path first.
    static func tree(_ run: String) -> [String] {
        var out = [run]
        let e = FileManager.default.enumerator(atPath: run)
        while let p = e?.nextObject() as? String { out.append(run + "/" + p) }
        return out
    }

    /// Run directories 0700 and their files 0600 by default; BATON_RUNS_MODE=0750 gives a
    /// group read access (0750 / 0640).
    @Test(arguments: [("", 0o700), ("0750", 0o750)])
    func runDirectoriesArePrivate(setting: String, dirMode: Int) throws {
        let d = Harness.tempDir("modes")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo secret', inputs = {'r.lua'}}\nrunStage{id = 'b/c', cmd = 'echo x >&2'}\nerror(string.rep('e', 5000))\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: setting.isEmpty ? [:] : ["BATON_RUNS_MODE": setting])
        #expect(r.code == 1, "\(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        #expect(try Harness.run(["report"], cwd: d, env: setting.isEmpty ? [:] : ["BATON_RUNS_MODE": setting]).code == 0)
        let paths = Self.tree(run)
        #expect(paths.contains(run + "/report.html") && paths.contains(run + "/reason.txt") && paths.contains(run + "/stages/a/1.out")
                && paths.contains(run + "/recipe.lua") && paths.contains { $0.hasPrefix(run + "/inputs/") }, "\(paths)")
        for p in paths {
            var isDir: ObjCBool = false
            FileManager.default.fileExists(atPath: p, isDirectory: &isDir)
            let want = isDir.boolValue ? dirMode : dirMode & 0o666
            #expect(Self.mode(p) == want, "\(p): \(String(Self.mode(p), radix: 8)), want \(String(want, radix: 8))")
        }
    }

    /// A runs-directory entry that is a symbolic link, or a run whose files are, is never
    /// written through: cancel, resume, prune and report refuse it and say why.
    @Test func symlinkedRunsAreNeverWrittenThrough() throws {
        let d = Harness.tempDir("links")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo hi'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let run = try #require(Harness.latestRun(d))
        // elsewhere: a copy of a run (someone else's files), linked into the runs directory
        let victim = Harness.tempDir("victim") + "/run"
        try FileManager.default.copyItem(atPath: run, toPath: victim)
        try FileManager.default.removeItem(atPath: victim + "/final.json")   // looks orphaned: cancel would finish it
        let before = Self.tree(victim).map { ($0, Harness.read($0)) }
        let linked = d + "/.baton/runs/20990101-000000-link"
        symlink(victim, linked)
        for args in [["cancel", "20990101-000000-link"], ["resume", "20990101-000000-link"], ["report", "20990101-000000-link"]] {
            let r = try Harness.run(args, cwd: d, timeout: 60)
            #expect(r.code == 1 && r.stderr.contains("symbolic link"), "\(args): \(r.code) \(r.stdout) \(r.stderr)")
        }
        let p = try Harness.run(["prune", "--keep", "0", "--force"], cwd: d)
        #expect(p.stdout.contains("kept 20990101-000000-link") && p.stdout.contains("symbolic link"), "\(p.stdout) \(p.stderr)")
        #expect(FileManager.default.fileExists(atPath: victim + "/journal.jsonl"))
        let after = Self.tree(victim).map { ($0, Harness.read($0)) }
        #expect(after.map(\.0) == before.map(\.0) && zip(after, before).allSatisfy { $0.1 == $1.1 }, "the linked run was written: \(after.map(\.0))")
        // a run of our own whose final.json is a link to someone's file
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let own = try #require(Harness.runDirs(d).filter { !$0.hasSuffix("-link") }.last)
        let target = Harness.tempDir("target") + "/precious"
        Harness.write(target, "precious\n")
        try FileManager.default.removeItem(atPath: own + "/final.json")
        symlink(target, own + "/final.json")
        for args in [["cancel", (own as NSString).lastPathComponent], ["resume", (own as NSString).lastPathComponent],
                     ["report", (own as NSString).lastPathComponent]] {
            let r = try Harness.run(args, cwd: d, timeout: 60)
            #expect(r.code == 1 && r.stderr.contains("final.json is a symbolic link"), "\(args): \(r.code) \(r.stdout) \(r.stderr)")
        }
        #expect(Harness.read(target) == "precious\n")
    }

    /// A stage log planted as a symbolic link while the run goes on is not followed (O_NOFOLLOW):
    /// the stage fails to start, the link's target is untouched.
    @Test func aPlantedStageLogLinkIsNotFollowed() throws {
        let d = Harness.tempDir("planted")
        Harness.write(d + "/r.lua", """
            runStage{id = 'a', cmd = 'true'}
            while not baton.fs.exists('go') do baton.sleep(0.05) end
            runStage{id = 'b', cmd = 'echo OVERWRITTEN'}
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.latestRun(d).map { FileManager.default.fileExists(atPath: $0 + "/stages/a/1.out") } == true })
        let run = try #require(Harness.latestRun(d))
        let target = Harness.tempDir("planted-target") + "/precious"
        Harness.write(target, "precious\n")
        try FileManager.default.createDirectory(atPath: run + "/stages/b", withIntermediateDirectories: true)
        symlink(target, run + "/stages/b/1.out")
        Harness.write(d + "/go", "")
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus != 0)
        #expect(Harness.read(target) == "precious\n", "the planted link was followed")
    }
}

extension IntegrityTests {
    // MARK: 6. moving a project keeps its runs whole

    /// After `mv proj proj2`: `log --stage`, `report` (its links), `resume` and `attach` work;
    /// the journal names stage logs relative to the run directory; a run whose journal holds
    /// the old absolute paths still reads after the move.
    @Test func movingAProjectKeepsItsRunsWhole() throws {
        let base = Harness.tempDir("move")
        let d = base + "/proj"
        try FileManager.default.createDirectory(atPath: d + "/.baton", withIntermediateDirectories: true)
        Harness.write(d + "/r.lua", """
            runStage{id = 'a', cmd = 'echo hello-a'}
            runStage{id = 'b', cmd = 'test -f ok && echo hello-b'}
            if baton.fs.exists('wait') then baton.log('waiting'); baton.sleep(600) end
            return {ok = true}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code != 0)
        let oldRun = try #require(Harness.latestRun(d))
        let id = (oldRun as NSString).lastPathComponent
        let started = Harness.events(Harness.journal(oldRun), type: "stage_started")
        let logs = started.compactMap { ($0["logs"] as? [String: Any])?["stdout"] as? String }
        #expect(logs == ["stages/a/1.out", "stages/b/1.out"], "journaled: \(logs)")
        // a second run, its journal rewritten with absolute paths, as versions before wrote it
        #expect(try Harness.run(["run", "--run-id", "oldstyle", "r.lua"], cwd: d).code != 0)
        let os = d + "/.baton/runs/oldstyle"
        let j = try #require(Harness.read(os + "/journal.jsonl"))
        try j.replacingOccurrences(of: "\"stages/", with: "\"" + os + "/stages/").write(toFile: os + "/journal.jsonl", atomically: true, encoding: .utf8)

        let d2 = base + "/proj2"
        try FileManager.default.moveItem(atPath: d, toPath: d2)
        let run = d2 + "/.baton/runs/" + id
        for r in [id, "oldstyle"] {
            let l = try Harness.run(["log", "--stage", "a", r], cwd: d2)
            #expect(l.code == 0 && l.stdout == "hello-a\n", "log --stage a \(r): \(l.stdout) \(l.stderr)")
        }
        let js = try Harness.run(["log", "--stage", "a", "--json", id], cwd: d2)
        #expect(js.stdout.contains("hello-a"), "\(js.stdout) \(js.stderr)")
        // the report's links are relative to it and lead to the logs
        #expect(try Harness.run(["report", id], cwd: d2).code == 0)
        let html = try #require(Harness.read(run + "/report.html"))
        #expect(html.contains("href=\"stages/a/1.out\"") && !html.contains(d + "/"), "report links: \(html.components(separatedBy: "href=").dropFirst().prefix(3))")
        #expect(FileManager.default.fileExists(atPath: run + "/stages/a/1.out"))
        // resume: replays a, runs b, then waits: attach reaches it
        Harness.write(d2 + "/ok", "")
        Harness.write(d2 + "/wait", "")
        let (p, _, errPipe) = try Harness.start(["resume", id], cwd: d2)
        let err = Harness.Output(errPipe)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.read(run + "/journal.jsonl")?.contains("waiting") == true }, "resume: \(err.text)")
        let a = try Harness.run(["attach", id], cwd: d2, stdin: "return 40 + 2\n", timeout: 30)
        #expect(a.stdout.contains("42"), "attach: \(a.stdout) \(a.stderr)")
        try FileManager.default.removeItem(atPath: d2 + "/wait")
        let c = try Harness.run(["attach", id], cwd: d2, stdin: ":cancel\n", timeout: 30)
        #expect(Harness.waitFor(20) { !p.isRunning }, "\(c.stdout) \(c.stderr)")
        let r2 = try Harness.run(["resume", id], cwd: d2, timeout: 60)
        #expect(r2.code == 0, "resume after the move: \(r2.stdout) \(r2.stderr)")
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "succeeded")
        let aRuns = Harness.events(Harness.journal(run), type: "stage_started").filter { $0["id"] as? String == "a" }
        #expect(aRuns.count == 1, "stage a ran again after the move")
        #expect(Harness.read(run + "/stages/b/2.out") == "hello-b\n" || Harness.read(run + "/stages/b/3.out") == "hello-b\n")
    }
}
