import Foundation
import Testing

/// Fault injection: whatever happens to Baton, its stages or the disk, no journaled event is
/// lost, no process is left behind, a final.json exists or the run is visibly orphaned and
/// resumable, and bad input gets a clear error. Randomized tests print their seed; set
/// BATON_FAULT_SEED to replay one.
@Suite struct ReliabilityTests {
    static func seed(_ name: String) -> UInt64 {
        if let s = ProcessInfo.processInfo.environment["BATON_FAULT_SEED"], let v = UInt64(s) { return v }
        let v = UInt64.random(in: 1...UInt64(UInt32.max))
        figure("reliability: \(name) seed \(v) (BATON_FAULT_SEED=\(v) replays it)")
        return v
    }

    struct RNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 { state &+= 0x9E3779B97F4A7C15; var z = state; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return z ^ (z >> 31) }
    }

    /// Each stage starts a grandchild that would live 60 s (its shell ends it when the stage
    /// ends normally): after a kill -9 of the runner the shell dies with it (parent-death
    /// signal) but the grandchild does not, so only the watchdog explains its absence 2 s
    /// later. The stage's last act appends its id to ran.txt: evidence of every time it ran,
    /// written by the stage itself rather than read from baton's journal.
    static let stageCmd = """
        local function cmd(id, secs)
          return "sleep 60 & bg=$!; sleep " .. secs .. "; kill $bg; wait $bg; echo " .. id .. " >> ran.txt"
        end
        """

    static let multiStage = stageCmd + """

        for i = 1, 12 do
          runStage{id = "s" .. i, cmd = cmd("s" .. i, "0." .. (i % 3 + 2))}
          baton.log("after " .. i)
        end
        return {done = true}
        """

    /// The same under concurrency: items finish in any order, a kill lands mid-fan-out.
    static let fanOut = stageCmd + """

        parallel({1, 2, 3, 4, 5, 6, 7, 8}, function(_, i)
          runStage{id = "a" .. i, cmd = cmd("a" .. i, "0." .. (i % 3 + 2))}
          runStage{id = "b" .. i, cmd = cmd("b" .. i, "0.2")}
        end, {maxConcurrency = 3})
        return {done = true}
        """

    /// Every stage_started for an id after that id passed for real is a re-run of passed work.
    func rerunsOfPassedStages(_ events: [[String: Any]]) -> [String] {
        var passed = Set<String>()
        var reruns: [String] = []
        for e in events {
            guard let id = e["id"] as? String else { continue }
            let key = "\(id)#\(e["occurrence"] as? Int ?? 0)"
            if e["type"] as? String == "stage_started", passed.contains(key) { reruns.append(key) }
            if e["type"] as? String == "stage_finished", e["status"] as? String == "passed" { passed.insert(key) }
        }
        return reruns
    }

    /// Ids of stages with a `passed` stage_finished in these events.
    func passedIds(_ events: [[String: Any]]) -> Set<String> {
        Set(Harness.events(events, type: "stage_finished").filter { $0["status"] as? String == "passed" }
            .compactMap { $0["id"] as? String })
    }

    /// Stages the last runner started and did not finish (events since its run_started or
    /// run_resumed).
    func inFlight(_ events: [[String: Any]]) -> Set<String> {
        let from = events.lastIndex { ["run_started", "run_resumed"].contains($0["type"] as? String ?? "") } ?? 0
        var running = Set<String>()
        for e in events[from...] {
            guard let id = e["id"] as? String else { continue }
            if e["type"] as? String == "stage_started" { running.insert(id) }
            if e["type"] as? String == "stage_finished" { running.remove(id) }
        }
        return running
    }

    /// How many times each stage ran to its end, by its own record in ran.txt.
    func ranCounts(_ d: String) -> [String: Int] {
        var n: [String: Int] = [:]
        for l in (Harness.read(d + "/ran.txt") ?? "").split(separator: "\n") { n[String(l), default: 0] += 1 }
        return n
    }

    @Test(arguments: ["sequential", "fan-out"])
    func killNineAtRandomPointsThenResume(_ shape: String) throws {
        var rng = RNG(state: Self.seed("kill -9 (\(shape))"))
        let d = Harness.tempDir("kill9")
        Harness.write(d + "/r.lua", shape == "fan-out" ? Self.fanOut : Self.multiStage)
        let allIds = shape == "fan-out" ? (1...8).flatMap { ["a\($0)", "b\($0)"] } : (1...12).map { "s\($0)" }
        var kills = 0
        var killsInsideAStage = 0
        var started = false
        // For each stage seen passed in the journal after a kill: how many times ran.txt said
        // it had run then. It must never grow: a passed stage does not run again.
        var ranWhenPassed: [String: Int] = [:]
        for round in 0..<10 {
            let args = started ? ["resume"] : ["run", "r.lua"]
            let (p, _, _) = try Harness.start(args, cwd: d)
            started = true
            // The run holds ~3.6 s of stages: kills at 0.02-0.6 s land inside it most rounds.
            usleep(UInt32(Double.random(in: 0.02...0.6, using: &rng) * 1_000_000))
            if p.isRunning { kill(p.processIdentifier, SIGKILL); kills += 1 }
            p.waitUntilExit()
            guard let run = Harness.latestRun(d) else { continue }
            let id = (run as NSString).lastPathComponent
            // What the dead runner journaled (nothing more will be written to it). Read
            // leniently: the kill may land before the first line; the final check is strict.
            let events = (Harness.read(run + "/journal.jsonl") ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
            if !inFlight(events).isEmpty { killsInsideAStage += 1 }
            // The watchdog ends whatever the dead runner started, within 2 s, with no resume:
            // a stage in flight left a 60 s grandchild behind.
            #expect(Harness.waitFor(2) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty },
                    "round \(round): alive 2 s after kill -9: \(Harness.processes(withEnv: "BATON_RUN_ID=\(id)"))")
            // Nothing of the run is alive now: ran.txt is complete for what has run so far.
            let ran = ranCounts(d)
            for s in passedIds(events) where ranWhenPassed[s] == nil {
                #expect(ran[s, default: 0] >= 1, "round \(round): \(s) passed per the journal but never wrote ran.txt")
                ranWhenPassed[s] = ran[s, default: 0]
            }
            // Nothing the dead runner started may keep running... once resume or cancel has looked.
            if round == 4, Harness.final(run) == nil {
                let st = try Harness.run(["status", "--json"], cwd: d)
                #expect(st.stdout.contains("\"orphaned\"") || st.stdout.contains("\"succeeded\""), "\(st.stdout)")
            }
        }
        #expect(kills >= 3, "the kills did not land inside runs")
        #expect(killsInsideAStage >= 1, "no kill landed inside a stage: the watchdog check had nothing to end")
        let last = try Harness.run(["resume"], cwd: d)
        #expect(last.code == 0, "seed replay needed; stderr: \(last.stderr)")
        let run = try #require(Harness.latestRun(d))
        let events = Harness.journal(run)   // every line valid, seq 1..n, run_started first
        #expect(rerunsOfPassedStages(events).isEmpty, "passed stages ran again: \(rerunsOfPassedStages(events))")
        // The stages' own record agrees: each ran to its end, and none that had passed
        // before a kill ran again (whatever the journal says now).
        let ran = ranCounts(d)
        #expect(Set(ran.keys) == Set(allIds), "ran.txt: \(ran)")
        let again = ranWhenPassed.filter { ran[$0.key, default: 0] != $0.value }.keys.sorted()
        #expect(again.isEmpty, "passed before a kill, then ran again: \(again.map { "\($0) \(ranWhenPassed[$0]!) -> \(ran[$0, default: 0])" })")
        let lost = Set(ranWhenPassed.keys).subtracting(passedIds(events))
        #expect(lost.isEmpty, "stage_finished (passed) events journaled before a kill are gone: \(lost.sorted())")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
        let id = (run as NSString).lastPathComponent
        #expect(Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty)
        figure("reliability: kill -9 (\(shape)) survived \(kills) kills (\(killsInsideAStage) inside a stage), \(Harness.events(events, type: "run_resumed").count) resumes")
    }

    @Test func aFullDiskIsReportedAndResumable() throws {
        let d = Harness.tempDir("fsize")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\nfor i = 1, 400 do baton.log(('x'):rep(100), {i = i}) end\nreturn {done = true}\n")
        // 16 KiB per file: the journal outgrows it, final.json still fits.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", "ulimit -f 16; exec \"$0\" run r.lua", Harness.binary]
        p.currentDirectoryURL = URL(fileURLWithPath: d)
        p.environment = Harness.environment([:])
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationReason == .exit, "baton died of a signal (SIGXFSZ?)")
        #expect(p.terminationStatus != 0)
        #expect(msg.contains("file size limit") || msg.contains("no space"), "stderr: \(msg)")
        let run = try #require(Harness.latestRun(d))
        let events = Harness.journal(run)
        #expect(events.count > 10, "earlier events are kept")
        #expect((Harness.final(run)?["reason"] as? String)?.contains("journal") == true)
        // Space is back: resume finishes the run.
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        _ = Harness.journal(run)
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    /// Signals at random moments of a run that passes through every phase: loading, a stage,
    /// a watch, a gate callback, busy Lua code, baton.sleep and the end.
    @Test func signalsAtEveryPhase() throws {
        var rng = RNG(state: Self.seed("signals"))
        let recipe = """
            local x = 0
            for i = 1, 2e5 do x = x + i end
            runStage{id = "stage", cmd = {"forker.sh", "rel-sig-MARK"}, timeout = 0.3, allowFail = true}
            local h = runStage{id = "job", cmd = "sleep 0.1", background = true}
            watch{id = "w", handle = h, heartbeatSec = 0.05}
            gate{name = "g", maxIterations = 2, check = function(i) baton.sleep(0.1); return {approved = i == 2} end}
            for i = 1, 3e5 do x = x + i end
            baton.sleep(0.1)
            return {x = x}
            """
        var tried = 0
        var outcomes: [String: Int] = [:]
        for k in 0..<12 {
            let d = Harness.tempDir("sig\(k)")
            let marker = "rel-sig-\(UUID().uuidString.prefix(8))"
            Harness.write(d + "/r.lua", recipe.replacingOccurrences(of: "rel-sig-MARK", with: marker))
            let sig = [SIGINT, SIGTERM, SIGHUP][k % 3]
            let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
            // Wait until the run exists, then a random moment within its ~1 s life.
            Harness.waitFor(10) { Harness.latestRun(d) != nil }
            usleep(UInt32(Double.random(in: 0...1.0, using: &rng) * 1_000_000))
            kill(p.processIdentifier, sig)
            tried += 1
            #expect(Harness.waitFor(30) { !p.isRunning })
            p.waitUntilExit()
            #expect(p.terminationReason == .exit, "baton died of signal \(sig)")
            let code = p.terminationStatus
            let run = try #require(Harness.latestRun(d))
            let f = try #require(Harness.final(run), "no final.json after signal \(sig)")
            let status = f["status"] as? String
            outcomes[status ?? "?", default: 0] += 1
            if status == "cancelled" { #expect(Int(code) == 128 + Int(sig)) } else { #expect(status == "succeeded" && code == 0) }
            #expect(f["exit_code"] as? Int == Int(code))
            _ = Harness.journal(run)
            #expect(Harness.processes(matching: marker).isEmpty, "a stage process survived signal \(sig)")
            #expect(Harness.processes(withEnv: "BATON_RUN_ID=\((run as NSString).lastPathComponent)").isEmpty)
        }
        figure("reliability: \(tried) signals tried: \(outcomes)")
    }

    /// Baton itself crashing (a segfault, a Swift trap, abort) still leaves a record: the
    /// crash guard ends the stages' groups and writes final.json, and resume finishes the run.
    /// Both with Swift's backtracer off and in a user's default environment (no
    /// SWIFT_BACKTRACE: the backtracer is chained to, and returns from a signal that was
    /// sent; the guard must still end the process).
    @Test(arguments: [SIGSEGV, SIGABRT, SIGBUS], [true, false])
    func aCrashOfBatonItselfLeavesAFinalAndNoProcess(sig: Int32, backtracerOff: Bool) throws {
        let d = Harness.tempDir("crash")
        let marker = "rel-crash-\(UUID().uuidString.prefix(8))"
        Harness.write(d + "/r.lua", """
            persistFinal{kept = true}
            runStage{id = "a", cmd = "echo a >> ran.txt"}
            runStage{id = "long", cmd = {"forker.sh", "\(marker)"}}
            """)
        let (p, _, errPipe) = try Harness.start(["run", "r.lua"], cwd: d, env: backtracerOff ? ["SWIFT_BACKTRACE": "enable=no"] : [:],
                                                unset: backtracerOff ? [] : ["SWIFT_BACKTRACE"])
        // Read stderr all along: the backtracer's output must not fill the pipe and block.
        final class Box: @unchecked Sendable { var data = Data() }
        let errBox = Box(), read = DispatchGroup()
        read.enter(); DispatchQueue.global().async { errBox.data = errPipe.fileHandleForReading.readDataToEndOfFile(); read.leave() }
        #expect(Harness.waitFor(20) { !Harness.processes(matching: marker).isEmpty })
        kill(p.processIdentifier, sig)
        #expect(Harness.waitFor(60) { !p.isRunning }, "baton survived signal \(sig)")
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        _ = read.wait(timeout: .now() + 30)
        let stderr = String(decoding: errBox.data, as: UTF8.self)
        let diedBySignal = p.terminationReason == .uncaughtSignal && p.terminationStatus == sig
        let exitedWithCode = p.terminationReason == .exit && p.terminationStatus == 128 + sig
        #expect(diedBySignal || exitedWithCode, "the crash is re-raised, not hidden: \(p.terminationReason) \(p.terminationStatus); \(stderr.suffix(800))")
        #expect(!stderr.contains("FAIL stage long"), "the recipe went on after the crash: \(stderr.suffix(800))")
        #expect(Harness.waitFor(10) { Harness.processes(matching: marker).isEmpty }, "a stage outlived the crash")
        let run = try #require(Harness.latestRun(d))
        let f = try #require(Harness.final(run), "no final.json after a crash")
        #expect(f["status"] as? String == "failed")
        #expect(f["crashed"] as? Bool == true, "final.json: \(f)")
        #expect(f["exit_code"] as? Int == 128 + Int(sig))
        #expect((f["reason"] as? String)?.contains("crashed (signal \(sig))") == true)
        #expect((f["result"] as? [String: Any])?["kept"] as? Bool == true, "persistFinal fields survive the crash")
        _ = Harness.journal(run, allowTornTail: true)
        // The journal is intact: resume replays what passed and finishes the rest.
        Harness.write(d + "/r.lua", "persistFinal{kept = true}\nrunStage{id = 'a', cmd = 'echo a >> ran.txt'}\nrunStage{id = 'long', cmd = 'true'}\n")
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.read(d + "/ran.txt") == "a\n")
        #expect(Harness.final(run)?["status"] as? String == "succeeded")
    }

    @Test func concurrentAppendersLoseNothing() throws {
        let d = Harness.tempDir("append")
        Harness.write(d + "/r.lua", "local w = arg[1]\nfor i = 1, 150 do baton.fs.append('registry.jsonl', baton.json.encode({w = w, i = i, pad = ('p'):rep(i * 13 % 300)}) .. '\\n') end\n")
        let procs = try (1...6).map { w in try Harness.start(["run", "r.lua", "w\(w)"], cwd: d) }
        for (p, _, _) in procs { p.waitUntilExit(); #expect(p.terminationStatus == 0) }
        let lines = (Harness.read(d + "/registry.jsonl") ?? "").split(separator: "\n")
        #expect(lines.count == 900)
        var seen = Set<String>()
        for l in lines {
            let o = try #require(try? JSONSerialization.jsonObject(with: Data(l.utf8)) as? [String: Any], "torn record: \(l.prefix(80))")
            seen.insert("\(o["w"]!)-\(o["i"]!)")
        }
        #expect(seen.count == 900, "lost or duplicated records")
    }

    @Test func lockedSectionsExcludeEachOther() throws {
        let d = Harness.tempDir("locked")
        // Read-modify-write: each process appends the next number. Without mutual
        // exclusion two writers read the same last number and a number repeats.
        Harness.write(d + "/r.lua", """
            for i = 1, 40 do
              local got = baton.fs.locked("counter.txt", function()
                local text = baton.fs.exists("counter.txt") and baton.fs.read("counter.txt") or ""
                local last = tonumber(text:match("(%d+)\\n$") or "0")
                baton.fs.append("counter.txt", (last + 1) .. "\\n")
                return last + 1, "second"
              end)
              assert(type(got) == "number")
            end
            """)
        let procs = try (1...6).map { _ in try Harness.start(["run", "r.lua"], cwd: d) }
        for (p, _, e) in procs {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "\(String(decoding: e.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))")
        }
        let numbers = (Harness.read(d + "/counter.txt") ?? "").split(separator: "\n").compactMap { Int($0) }
        #expect(numbers == Array(1...240), "lost or repeated numbers: \(numbers.count) lines")

        // An error inside releases the lock; a torn last line is closed before appending.
        Harness.write(d + "/torn.jsonl", "{\"partial\": ")
        Harness.write(d + "/e.lua", """
            local ok, err = pcall(baton.fs.locked, "torn.jsonl", function() error("inside") end)
            assert(not ok and tostring(err):find("inside"))
            local a, b = baton.fs.locked("torn.jsonl", function() baton.fs.append("torn.jsonl", "{}\\n"); return 1, 2 end, {timeout = 5})
            assert(a == 1 and b == 2)
            """)
        let r = try Harness.run(["run", "e.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.read(d + "/torn.jsonl") == "{\"partial\": \n{}\n")
    }

    @Test(arguments: [
        ("empty", "", Int32(0)),
        ("random", "\u{7}\u{1}garbage \u{2}{{(", Int32(3)),
        ("nested-table", "return " + String(repeating: "{", count: 5000) + String(repeating: "}", count: 5000), Int32(3)),
        ("recursion", "local function f() return 1 + f() end\nf()", Int32(1)),
        ("coroutine-recursion", "local function f(n) return coroutine.wrap(function() return f(n + 1) end)() end\nf(1)", Int32(1)),
        ("allocation", "local t = {}\nfor i = 1, 1e12 do t[i] = ('x'):rep(1000) .. i end", Int32(1)),
        ("huge-retries", "runStage{id = 'x', cmd = 'true', retries = 1e12}", Int32(3)),
        ("huge-id", "runStage{id = ('x'):rep(100000), cmd = 'true'}", Int32(0)),
        ("error-object", "error(setmetatable({}, {__tostring = function() error('nested') end}))", Int32(1)),
        ("json-cycle-return", "local t = {}; t.t = t; return t", Int32(1)),
        ("watch-nothing", "watch{id = 'w', pid = 'x'}", Int32(3)),
    ] as [(String, String, Int32)])
    func badRecipesGetAClearErrorAndAFinal(name: String, text: String, code: Int32) throws {
        let d = Harness.tempDir("bad-\(name)")
        Harness.write(d + "/r.lua", text)
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_LUA_MEMORY_MB": "64"], timeout: 120)
        #expect(!r.signaled, "\(name): baton crashed")
        #expect(r.code == code, "\(name): exit \(r.code), stderr: \(r.stderr.prefix(500))")
        #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Program crashed"), "\(name): \(r.stderr.prefix(500))")
        if ["random", "nested-table", "watch-nothing"].contains(name) {
            // It does not compile, or it is certainly wrong (a literal of the wrong type,
            // found before the first stage, issue 23): nothing ran, no run directory (issue 12).
            #expect(Harness.runDirs(d).isEmpty && !r.stderr.isEmpty, "\(name): \(r.stderr.prefix(500))")
            return
        }
        let run = try #require(Harness.latestRun(d))
        let f = try #require(Harness.final(run), "\(name): no final.json")
        #expect(f["exit_code"] as? Int == Int(code))
        if code != 0 { #expect(((f["reason"] as? String) ?? "").isEmpty == false) }
        if name == "allocation" { #expect((f["reason"] as? String)?.contains("memory") == true) }
        _ = Harness.journal(run)
    }

    @Test func corruptStateIsReportedNotFatal() throws {
        let d = Harness.tempDir("corrupt")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo a >> ran.txt'}\nrunStage{id = 'b', cmd = 'echo b >> ran.txt'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let run = try #require(Harness.latestRun(d))
        // Garbage in the middle of the journal, a truncated final.json, a stale lock file.
        var lines = (Harness.read(run + "/journal.jsonl") ?? "").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.insert("\u{0}\u{1}not json at all", at: 2)
        Harness.write(run + "/journal.jsonl", lines.joined(separator: "\n"))
        let final = Harness.read(run + "/final.json") ?? ""
        Harness.write(run + "/final.json", String(final.prefix(40)))
        for cmd in [["runs"], ["runs", "--json"], ["status"], ["status", "--json"], ["log"], ["log", "--json"]] {
            let r = try Harness.run(cmd, cwd: d)
            #expect(r.code == 0 && !r.signaled, "\(cmd): \(r.stderr)")
        }
        let st = try Harness.run(["status"], cwd: d)
        #expect(st.stdout.contains("line 3") && st.stdout.contains("final.json"), "\(st.stdout)")
        let r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect((Harness.read(d + "/ran.txt") ?? "") == "a\nb\n", "resume re-ran passed stages")
        // A run directory with nothing in it.
        try FileManager.default.createDirectory(atPath: d + "/.baton/runs/29990101-000000-0000", withIntermediateDirectories: true)
        for cmd in [["runs"], ["status"], ["log"], ["status", "--json"]] {
            let r2 = try Harness.run(cmd, cwd: d)
            #expect(!r2.signaled && r2.code == 0, "\(cmd) on an empty run dir: \(r2.stderr)")
        }
        let empty = try Harness.run(["resume"], cwd: d)
        #expect(empty.code == 3 && empty.stderr.contains("nothing to resume"))
    }
}

/// Prints a figure of the fault suite and flushes at once: the test runner may exit
/// without flushing a piped stdout.
func figure(_ s: String) {
    print(s)
    fflush(nil)  // all streams: no reference to the stdout global
}
