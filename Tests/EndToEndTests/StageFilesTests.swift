import Foundation
import Testing

/// Issue 25: stages that know their files. Declared inputs in the fingerprint (an edited input
/// re-runs its stage on resume, `--why` names the file), declared outputs (missing: the stage
/// fails), the cache across runs (restores outputs byte for byte, safe under concurrent runs
/// and kill -9, kept under a size by gc). Each test runs the built `baton`.
@Suite struct StageFilesTests {
    /// A small project: sources, a test file the inputs exclude, data, and a recipe whose
    /// `prep` stage reads them and writes a file and a directory. Every real run of a stage
    /// appends its id to `ran.txt` (outside the inputs), so a test sees what ran.
    static func project(_ name: String) -> String {
        let d = Harness.tempDir(name)
        Harness.write(d + "/src/a.py", "print('a')\n")
        Harness.write(d + "/src/pkg/b.py", "print('b')\n")
        Harness.write(d + "/src/tests/test_a.py", "assert True\n")
        Harness.write(d + "/data/train.csv", "x,y\n1,2\n")
        Harness.write(d + "/r.lua", """
            local n = tonumber(baton.args.n or "1")
            for i = 1, n do
              local id = n == 1 and "prep" or ("prep-" .. i)
              local r = runStage{id = id, cmd = {"sh", "-c", "mkdir -p out-$1/reports && cat src/a.py src/pkg/b.py data/train.csv > out-$1/model.pt && head -c 200000 /dev/urandom > out-$1/reports/big.bin && echo report > out-$1/reports/r.txt && echo $1 >> ran.txt && echo made $1", "x", tostring(i)},
                inputs = {"src/**/*.py", "data/train.csv", "!src/tests/**", "?docs/**"},
                outputs = {"out-" .. i .. "/model.pt", "out-" .. i .. "/reports/"}}
              print("outputs", i, r.outputs["out-" .. i .. "/model.pt"], r.cached_from and r.cached_from.run or "-", r.stdout)
            end
            runStage{id = "train", cmd = {"sh", "-c", "echo train >> ran.txt"}, inputs = function() return {"out-1/model.pt"} end}
            """)
        return d
    }

    static func ran(_ d: String) -> [String] { (Harness.read(d + "/ran.txt") ?? "").split(separator: "\n").map(String.init) }

    static func finished(_ run: String) -> [[String: Any]] {
        Harness.events(Harness.journal(run), type: "stage_finished")
    }

    @Test func anEditedInputRerunsItsStageOnResumeAndWhyNamesIt() throws {
        let d = Self.project("inputs-resume")
        var r = try Harness.run(["run", "--run-id", "one", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "train"])
        let started = Harness.events(Harness.journal(d + "/.baton/runs/one"), type: "stage_started")
        let inputs = try #require(started.first?["inputs"] as? [String: Any])
        #expect(inputs["files"] as? Int == 3, "src/a.py, src/pkg/b.py, data/train.csv; not src/tests: \(inputs)")
        // An unchanged tree replays; so does an edit of an excluded file.
        Harness.write(d + "/src/tests/test_a.py", "assert False\n")
        r = try Harness.run(["resume", "one"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "train"], "nothing ran again")
        #expect(Self.finished(d + "/.baton/runs/one").suffix(2).allSatisfy { $0["replayed"] as? Bool == true })
        // An edited input runs the stage again, and what follows it.
        Harness.write(d + "/src/pkg/b.py", "print('b2')\n")
        Harness.write(d + "/data/new.csv", "not an input\n")
        r = try Harness.run(["resume", "one"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "train", "1", "train"])
        #expect(r.stderr.contains("resume: stage prep: runs: inputs changed: src/pkg/b.py changed"), "\(r.stderr)")
        let why = try Harness.run(["log", "one", "--why"], cwd: d)
        #expect(why.stdout.contains("prep: runs: inputs changed: src/pkg/b.py changed"), "\(why.stdout)")
        let json = try Harness.run(["log", "one", "--why", "--json"], cwd: d)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        let files = try #require(list.last { $0["id"] as? String == "prep" }?["files"] as? [String: Any])
        #expect(files["changed"] as? [String] == ["src/pkg/b.py"] && (files["added"] as? [String])?.isEmpty == true)
        // Added and removed files are named too, at most 10, then a count.
        for i in 0..<12 { Harness.write(d + "/src/gen/m\(i).py", "\(i)\n") }
        try FileManager.default.removeItem(atPath: d + "/src/a.py")
        r = try Harness.run(["resume", "one"], cwd: d)
        #expect(r.code != 0, "cat src/a.py fails now")
        #expect(r.stderr.contains("src/gen/m0.py added") && r.stderr.contains("and 3 more files"), "\(r.stderr)")
    }

    @Test func aGlobMatchingNothingIsAnErrorUnlessOptional() throws {
        let d = Harness.tempDir("inputs-none")
        Harness.write(d + "/r.lua", """
            local ok, e = pcall(runStage, {id = "a", cmd = "true", inputs = {"?nothing/**"}})
            print("optional", ok)
            runStage{id = "b", cmd = "true", inputs = {"missing/*.csv"}}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1)
        #expect(r.stdout.contains("optional\ttrue"), "\(r.stdout)")
        #expect(r.stderr.contains("input 'missing/*.csv' matches no file (write '?missing/*.csv' if it may be absent)"), "\(r.stderr)")
    }

    @Test func aMissingOutputFailsTheStage() throws {
        let d = Harness.tempDir("outputs-missing")
        Harness.write(d + "/r.lua", """
            local r = runStage{id = "a", cmd = "touch model.pt", outputs = {"model.pt", "reports/"}, allowFail = true}
            print(r.status, r.failure_class, r.message)
            runStage{id = "b", cmd = "true", outputs = {"model.pt"}}
            runStage{id = "c", cmd = "true", outputs = {"nope.bin"}}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1)
        #expect(r.stdout.contains("failed\tdeterministic\tdeclared output missing: reports/"), "\(r.stdout)")
        let run = try #require(Harness.latestRun(d))
        let fin = try #require(Harness.final(run))
        #expect((fin["reason"] as? String)?.contains("declared output missing: nope.bin") == true, "\(fin)")
        let f = Self.finished(run)
        let b = try #require(f.first { $0["id"] as? String == "b" })
        #expect((b["outputs"] as? [String: Any])?["model.pt"] as? String == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    static func tree(_ d: String) -> [String: Data] {
        var out: [String: Data] = [:]
        for name in (try? FileManager.default.subpathsOfDirectory(atPath: d)) ?? [] where name.hasPrefix("out-") {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: d + "/" + name, isDirectory: &isDir), !isDir.boolValue {
                out[name] = FileManager.default.contents(atPath: d + "/" + name)
            }
        }
        return out
    }

    @Test func aSecondRunWithCacheRunsNothingAndRestoresEveryOutput() throws {
        let d = Self.project("cache-hit")
        var r = try Harness.run(["run", "--cache", "--run-id", "first", "r.lua", "n=2"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "2", "train"])
        let before = Self.tree(d)
        #expect(before.count == 6)
        for i in 1...2 { try FileManager.default.removeItem(atPath: d + "/out-\(i)") }
        Harness.write(d + "/out-2/reports/stale.txt", "left from elsewhere\n")
        r = try Harness.run(["run", "--cache", "--run-id", "second", "r.lua", "n=2"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "2", "train", "train"], "the cached stages did not run (train has no outputs: not cached)")
        #expect(Self.tree(d) == before, "every output byte-identical, nothing stale left")
        #expect(r.stdout.contains("cached: run first, stage prep-1") || r.stderr.contains("cached: run first, stage prep-1"), "\(r.stderr)")
        #expect(r.stdout.contains("\tfirst\tmade 1"), "the result carries the cached stdout: \(r.stdout)")
        let f = Self.finished(d + "/.baton/runs/second")
        let p1 = try #require(f.first { $0["id"] as? String == "prep-1" })
        #expect((p1["cached_from"] as? [String: Any])?["run"] as? String == "first")
        // status and --why say so.
        let st = try Harness.run(["status", "second"], cwd: d)
        #expect(st.stdout.contains("cached   2 from the cache"), "\(st.stdout)")
        let why = try Harness.run(["log", "second", "--why"], cwd: d)
        #expect(why.stdout.contains("prep-1: cache hit: outputs restored from run first, stage prep-1"), "\(why.stdout)")
        let whyFirst = try Harness.run(["log", "first", "--why"], cwd: d)
        #expect(whyFirst.stdout.contains("prep-1: cache miss: no earlier pass with this fingerprint"), "\(whyFirst.stdout)")
        // An edited input is a miss; cache = false opts out of --cache.
        Harness.write(d + "/data/train.csv", "x,y\n3,4\n")
        r = try Harness.run(["run", "--cache", "r.lua"], cwd: d)
        #expect(Self.ran(d).suffix(2) == ["1", "train"])
        // The cache's files are read-only; a restored large output edited in place is found
        // out by the next hit, which is then a miss, not a wrong answer.
        let ls = try Harness.run(["cache", "ls", "--json"], cwd: d)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [String: Any])
        #expect((o["entries"] as? [Any])?.count == 3, "\(ls.stdout)")
    }

    @Test func aFailedStageIsNeverCachedAndCacheFalseOptsOut() throws {
        let d = Harness.tempDir("cache-fail")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "echo a >> ran.txt; echo x > o.txt; test -f pass", outputs = {"o.txt"}, cache = true, allowFail = true}
            runStage{id = "b", cmd = "echo b >> ran.txt; echo y > p.txt", outputs = {"p.txt"}, cache = false}
            """)
        for _ in 0..<2 { #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0) }
        #expect(Self.ran(d) == ["a", "b", "a", "b"])
        Harness.write(d + "/pass", "")
        for _ in 0..<2 { #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0) }
        #expect(Self.ran(d) == ["a", "b", "a", "b", "a", "b", "b"], "a passed once, then came from the cache; b never")
    }

    @Test func concurrentRunsFillingTheCacheLoseNothing() throws {
        // Four runs at once, each in its own copy of the project (two runs writing the same
        // output files at once would race whatever the cache does), one runs directory and
        // so one cache; each run its own stage ids (n differs), all sharing prep-1..prep-3.
        let parent = Harness.tempDir("cache-concurrent")
        let runs = parent + "/.baton/runs"
        var copies: [String] = []
        for i in 0..<5 {
            let d = Self.project("cc")
            let to = parent + "/p\(i)"
            try FileManager.default.moveItem(atPath: d, toPath: to)
            copies.append(to)
        }
        var procs: [Process] = []
        for i in 0..<4 {
            let (p, _, _) = try Harness.start(["run", "--runs-dir", runs, "--cache", "r.lua", "n=\(3 + i)"], cwd: copies[i])
            procs.append(p)
        }
        for p in procs { p.waitUntilExit(); #expect(p.terminationStatus == 0) }
        let ls = try Harness.run(["cache", "ls", "--json", "--runs-dir", runs], cwd: parent)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(ls.stdout.utf8)) as? [String: Any])
        let entries = try #require(o["entries"] as? [[String: Any]])
        #expect(Set(entries.compactMap { $0["id"] as? String }) == Set((1...6).map { "prep-\($0)" }), "\(ls.stdout)")
        // A fifth copy that never ran anything gets every output from the cache, byte for byte.
        let r = try Harness.run(["run", "--runs-dir", runs, "--cache", "r.lua", "n=6"], cwd: copies[4])
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(copies[4]) == ["train"], "only train ran: \(Self.ran(copies[4]))")
        let restored = Self.tree(copies[4])
        #expect(restored.count == 18, "\(restored.keys.sorted())")
        for (k, v) in restored {
            let made = (0..<4).compactMap { Self.tree(copies[$0])[k] }
            #expect(made.contains(v), "\(k) is what one of the runs made")
        }
    }

    @Test func aKillDuringAnInsertLeavesNoHit() throws {
        let d = Self.project("cache-kill")
        let pause = d + "/pausing"
        let (p, _, _) = try Harness.start(["run", "--cache", "r.lua"], cwd: d, env: ["BATON_TEST_CACHE_PAUSE": pause])
        #expect(Harness.waitFor(30) { FileManager.default.fileExists(atPath: pause) })
        // The run goes on while prep's outputs are stored (train runs); it is killed before the insert ends.
        #expect(Harness.waitFor(30) { Self.ran(d) == ["1", "train"] }, "\(Self.ran(d))")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        let r = try Harness.run(["run", "--cache", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(Self.ran(d) == ["1", "train", "1", "train"], "the interrupted insert was no hit: prep ran again")
        // ...and this time it was stored: a third run hits.
        #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0)
        #expect(Self.ran(d) == ["1", "train", "1", "train", "train"])
        // A corrupt entry is found by its checksum and ignored.
        let entries = d + "/.baton/cache/entries"
        for e in try FileManager.default.contentsOfDirectory(atPath: entries) {
            Harness.write(entries + "/" + e, (Harness.read(entries + "/" + e) ?? "").replacingOccurrences(of: "prep", with: "prop"))
        }
        let again = try Harness.run(["run", "--cache", "r.lua"], cwd: d)
        #expect(again.code == 0)
        #expect(Self.ran(d).suffix(2) == ["1", "train"], "corrupt entry: ran for real")
        let why = try Harness.run(["log", "--why"], cwd: d)
        #expect(why.stdout.contains("cache miss: entry is corrupt (entry does not match its checksum); removed"), "\(why.stdout)")
    }

    /// Storing an output in the cache (a copy and a hash: ~1 s per GiB) is work of its own
    /// beside the loop: a stage's timeout still fires on time while an insert is held up
    /// (BATON_TEST_CACHE_PAUSE holds it until its file is removed), and the run's end waits
    /// for the insert, so the entry is there after the run.
    @Test func anInsertDoesNotHoldUpTheRun() throws {
        let d = Harness.tempDir("cache-insert-aside")
        let pause = d + "/pausing"
        Harness.write(d + "/r.lua", """
            local slow = runStage{id = "slow", cmd = {"sleep", "30"}, timeout = 1, grace = 0.5,
                                  background = true, allowFail = true}
            runStage{id = "big", cmd = "head -c 300000 /dev/urandom > big.bin", outputs = {"big.bin"}, cache = true}
            print("slow", slow:wait().status)
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d, env: ["BATON_TEST_CACHE_PAUSE": pause])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(30) { FileManager.default.fileExists(atPath: pause) }, "the insert began")
        let run = try #require(Harness.latestRun(d))
        func slowEnded() -> [String: Any]? {
            Self.finished(run).first { ($0["id"] as? String) == "slow" }
        }
        #expect(Harness.waitFor(10) { slowEnded() != nil }, "the timeout fired while the insert was held up")
        let ended = try #require(slowEnded())
        #expect(ended["status"] as? String == "timed_out")
        #expect((ended["duration_ms"] as? Int ?? 99_999) < 5_000, "\(ended)")
        #expect(FileManager.default.fileExists(atPath: pause), "the insert was still held up meanwhile")
        #expect(p.isRunning, "the run waits for the insert before it ends")
        try FileManager.default.removeItem(atPath: pause)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let ls = try Harness.run(["cache", "ls", "--json"], cwd: d)
        #expect(ls.stdout.contains("\"id\": \"big\""), "the run's end waited for the insert: \(ls.stdout)")
    }

    /// A stage whose fingerprint is being stored by an earlier call of this run waits for that
    /// insert and is answered by it, rather than running again (inserts run beside the loop).
    @Test func aLookupWaitsForTheInsertOfTheSameWork() throws {
        let d = Harness.tempDir("cache-insert-awaited")
        let pause = d + "/pausing"
        Harness.write(d + "/r.lua", """
            runStage{id = "first", cmd = "echo x >> ran.txt; echo y > out.txt", outputs = {"out.txt"}, cache = true}
            local r = runStage{id = "again", cmd = "echo x >> ran.txt; echo y > out.txt", outputs = {"out.txt"},
                               cache = true}
            print("again", r.cached_from and r.cached_from.id or "ran")
            """)
        let (p, out, _) = try Harness.start(["run", "r.lua"], cwd: d, env: ["BATON_TEST_CACHE_PAUSE": pause])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(30) { FileManager.default.fileExists(atPath: pause) }, "the insert began")
        try FileManager.default.removeItem(atPath: pause)
        #expect(Harness.waitFor(20) { !p.isRunning })
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text.contains("again\tfirst") || text.contains("again first"), "\(text)")
        #expect(Harness.read(d + "/ran.txt") == "x\n", "the command ran once")
    }

    /// A signal while an insert is under way abandons it: the run ends at once, the journal
    /// says the stage was not stored, and nothing was (no hit later).
    @Test func aSignalAbandonsAnInsertAndSaysSo() throws {
        let d = Harness.tempDir("cache-insert-abandoned")
        let pause = d + "/pausing"
        Harness.write(d + "/r.lua", """
            runStage{id = "big", cmd = "head -c 300000 /dev/urandom > big.bin", outputs = {"big.bin"}, cache = true}
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d, env: ["BATON_TEST_CACHE_PAUSE": pause])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(30) { FileManager.default.fileExists(atPath: pause) }, "the insert began")
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(10) { !p.isRunning }, "the run did not wait out the held-up insert")
        let run = try #require(Harness.latestRun(d))
        let logs = Harness.events(Harness.journal(run), type: "log").compactMap { $0["message"] as? String }
        #expect(logs.contains("cache: stage 'big' passed but was not stored: the run ended before its insert did"), "\(logs)")
        let ls = try Harness.run(["cache", "ls", "--json"], cwd: d)
        #expect(!ls.stdout.contains("\"id\": \"big\""), "\(ls.stdout)")
    }

    /// A miss names what differs from the stage's latest stored pass: the input files that
    /// changed, were added or removed (as a resume does), or the command.
    @Test func aCacheMissNamesTheInputsThatChanged() throws {
        let d = Harness.tempDir("cache-miss-why")
        for i in 0..<13 { Harness.write(d + "/in/f\(i).txt", "\(i)\n") }
        Harness.write(d + "/r.lua", """
            runStage{id = "cat", cmd = "cat in/*.txt > out.txt", inputs = {"in/"}, outputs = {"out.txt"}, cache = true}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        var why = try Harness.run(["log", "--why"], cwd: d)
        #expect(why.stdout.contains("cat: cache miss: no earlier pass with this fingerprint"), "\(why.stdout)")
        #expect(!why.stdout.contains("since"), "no earlier pass of the stage: nothing to compare: \(why.stdout)")
        Harness.write(d + "/in/f3.txt", "three\n")
        Harness.write(d + "/in/new.txt", "new\n")
        try FileManager.default.removeItem(atPath: d + "/in/f5.txt")
        var r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        why = try Harness.run(["log", "--why"], cwd: d)
        #expect(why.stdout.contains("inputs changed: in/f3.txt changed, in/new.txt added, in/f5.txt removed"),
                "\(why.stdout)")
        let json = try Harness.run(["log", "--why", "--json"], cwd: d)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        let cache = try #require(list.first?["cache"] as? [String: Any])
        let files = try #require(cache["files"] as? [String: Any], "\(cache)")
        #expect(files["changed"] as? [String] == ["in/f3.txt"] && files["removed"] as? [String] == ["in/f5.txt"])
        // At most 10 files named, then a count; and a changed command is named.
        for i in 0..<13 { Harness.write(d + "/in/f\(i).txt", "v2 \(i)\n") }
        Harness.write(d + "/r.lua", """
            runStage{id = "cat", cmd = "cat in/*.txt > out.txt; true", inputs = {"in/"}, outputs = {"out.txt"}, cache = true}
            """)
        r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        why = try Harness.run(["log", "--why"], cwd: d)
        #expect(why.stdout.contains("command and inputs changed: in/f0.txt changed"), "\(why.stdout)")
        #expect(why.stdout.contains("and 3 more files"), "\(why.stdout)")
    }

    @Test func gcKeepsTheCacheUnderItsSize() throws {
        let d = Harness.tempDir("cache-gc")
        Harness.write(d + "/r.lua", """
            for i = 1, 5 do
              runStage{id = "s" .. i, cmd = "head -c 100000 /dev/urandom > o" .. i .. ".bin", outputs = {"o" .. i .. ".bin"}}
              baton.sleep(0.02)
            end
            """)
        #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0)
        func size() throws -> Int {
            let o = try JSONSerialization.jsonObject(with: Data(try Harness.run(["cache", "ls", "--json"], cwd: d).stdout.utf8)) as? [String: Any]
            return o?["size"] as? Int ?? -1
        }
        #expect(try size() >= 500_000)
        let gc = try Harness.run(["cache", "gc", "--max-size", "250K"], cwd: d)
        #expect(gc.code == 0, "\(gc.stderr)")
        #expect(gc.stdout.contains("removed 3 entries"), "\(gc.stdout)")
        #expect(try size() <= 250 * 1024)
        let ls = try Harness.run(["cache", "ls"], cwd: d)
        #expect(ls.stdout.contains("s5") && ls.stdout.contains("s4") && !ls.stdout.contains("s1 "), "least recently used went first: \(ls.stdout)")
        let clear = try Harness.run(["cache", "clear"], cwd: d)
        #expect(clear.stdout.contains("removed 2 entries"))
        #expect(try size() == 0)
    }
}

extension CheckTests {
    /// `baton check` knows runStage's inputs, outputs and cache: no finding for them, their
    /// literal types checked, a misspelling named.
    @Test func knowsInputsOutputsAndCache() throws {
        let d = Harness.tempDir("check-files")
        Harness.write(d + "/ok.lua", """
            runStage{id = "a", cmd = "true", inputs = {"src/**", "!src/tests/**"}, outputs = {"out/"}, cache = true}
            runStage{id = "b", cmd = "true", inputs = function() return {"x"} end, outputs = "y", cache = false}
            """)
        let ok = try Harness.run(["check", "ok.lua"], cwd: d)
        #expect(ok.code == 0, "\(ok.stderr)")
        Harness.write(d + "/bad.lua", """
            runStage{id = "a", cmd = "true", input = {"src/**"}}
            runStage{id = "b", cmd = "true", cache = "yes"}
            """)
        let bad = try Harness.run(["check", "bad.lua"], cwd: d)
        #expect(bad.code == 3)
        #expect(bad.stderr.contains("runStage: unknown field 'input' (did you mean 'inputs'?)"), "\(bad.stderr)")
        #expect(bad.stderr.contains("runStage: field 'cache' must be a boolean, got a string"), "\(bad.stderr)")
    }
}

extension TypesTests {
    /// `baton types` documents the new fields and result fields.
    @Test func knowsInputsOutputsAndCache() throws {
        let t = try Harness.run(["types"], cwd: Harness.tempDir("types-files")).stdout
        for f in ["---@field inputs? string[]|fun(): string[]", "---@field outputs? string[]", "---@field cache? boolean",
                  "---@field outputs? table<string, string>", "---@field cached_from? {run: string, id: string, occurrence: integer}"] {
            #expect(t.contains(f), "\(f)")
        }
    }
}

extension StageFilesTests {
    /// A large output restored as a hard link to the cache's read-only copy: a later real run
    /// of the stage rewrites it in place without touching the cache (issue 25: never a file
    /// the user could edit that changes the cache).
    @Test func aRestoredLinkIsUnsharedBeforeTheStageRunsAgain() throws {
        let d = Harness.tempDir("cache-unshare")
        Harness.write(d + "/in.txt", "one\n")
        Harness.write(d + "/r.lua", """
            runStage{id = "big", cmd = "head -c 2000000 /dev/zero > big.bin; cat in.txt >> big.bin", inputs = {"in.txt"}, outputs = {"big.bin"}}
            """)
        #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0)
        let first = try #require(FileManager.default.contents(atPath: d + "/big.bin"))
        try FileManager.default.removeItem(atPath: d + "/big.bin")
        #expect(try Harness.run(["run", "--cache", "r.lua"], cwd: d).code == 0)
        #expect(FileManager.default.contents(atPath: d + "/big.bin") == first)
        // The stage runs for real (an input changed) and writes big.bin in place (`>`).
        Harness.write(d + "/in.txt", "two\n")
        let r = try Harness.run(["run", "--cache", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        // Back to the first input: the first entry still hits, with the first bytes.
        Harness.write(d + "/in.txt", "one\n")
        try FileManager.default.removeItem(atPath: d + "/big.bin")
        let again = try Harness.run(["run", "--cache", "r.lua"], cwd: d)
        #expect(again.stderr.contains("cached: run"), "\(again.stderr)")
        #expect(FileManager.default.contents(atPath: d + "/big.bin") == first)
    }
}
