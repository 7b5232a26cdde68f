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
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo secret'}\nrunStage{id = 'b/c', cmd = 'echo x >&2'}\nerror(string.rep('e', 5000))\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: setting.isEmpty ? [:] : ["BATON_RUNS_MODE": setting])
        #expect(r.code == 1, "\(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        #expect(try Harness.run(["report"], cwd: d, env: setting.isEmpty ? [:] : ["BATON_RUNS_MODE": setting]).code == 0)
        let paths = Self.tree(run)
        #expect(paths.contains(run + "/report.html") && paths.contains(run + "/reason.txt") && paths.contains(run + "/stages/a/1.out"), "\(paths)")
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
