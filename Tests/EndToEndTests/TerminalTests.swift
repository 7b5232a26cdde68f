import Foundation
import Testing

/// A terminal a person likes to watch (issue 12 part 4), driven through tmux as the shell
/// is: colour marks, a status line while a stage runs (erased when it ends), --stream, and
/// FAIL lines with the last 5 lines of stderr.
@Suite struct TerminalTests {
    static let recipe = """
        runStage{id = "slow", cmd = "for i in 1 2 3 4; do echo step-$i; sleep 0.7; done"}
        runStage{id = "bad", cmd = "for i in 1 2 3 4 5 6 7; do echo err-$i >&2; done; exit 2", allowFail = true}
        preflight{name = "soft", policy = "warn", checks = {{env = "BATON_SURELY_UNSET_VAR"}}}
        """

    func work(_ tag: String) -> String {
        let d = Harness.tempDir("term-\(tag)")
        Harness.write(d + "/r.lua", Self.recipe)
        return d
    }

    @Test func statusLineWhileAStageRunsThenColouredMarks() throws {
        let d = work("status")
        let p = try Pane("status", cwd: d, args: ["run", "r.lua"], color: true)
        defer { p.kill() }
        // The live view's line: stage id, attempt, elapsed time, its last output line; redrawn.
        #expect(p.waitFor("slow  attempt 1"), "\(p.screen())")
        #expect(p.waitFor("s  step-2"), "the last output line follows the stage: \(p.screen())")
        let first = p.screen()
        #expect(Harness.waitFor(3) { p.screen() != first }, "redrawn at least once a second")
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        let screen = p.screen()
        #expect(!screen.contains("attempt 1"), "erased when the stage ended: \(screen)")
        #expect(screen.contains("ok   stage slow passed"))
        // A failure shows the last 5 lines of stderr, not 1; allowFail accepts this one: not a red FAIL.
        #expect(screen.contains("fail stage bad failed") && screen.contains("(allowed failure: allowFail)")
                && (3...7).allSatisfy { screen.contains("| err-\($0)") } && !screen.contains("| err-2"), "\(screen)")
        let raw = p.rawScreen()
        #expect(raw.contains("\u{1B}[32mok"), "ok in green: \(raw.debugDescription)")
        #expect(raw.contains("\u{1B}[33mfail") && !raw.contains("31mFAIL"), "an allowed failure in yellow: \(raw.debugDescription)")
        #expect(raw.contains("\u{1B}[33mwarning"), "warn in yellow: \(raw.debugDescription)")
    }

    @Test func noColourWithNoColorAndStreamEchoesOutputLive() throws {
        let d = work("stream")
        let p = try Pane("stream", cwd: d, args: ["run", "--stream", "r.lua"])
        defer { p.kill() }
        // Echoed while the stage still runs (its status line below the output).
        #expect(p.waitFor("step-2"), "\(p.screen())")
        #expect(!p.screen().contains("ok   stage slow"), "the stage is still running: \(p.screen())")
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        let screen = p.screen()
        #expect(screen.contains("step-4\n") && screen.contains("err-1"), "\(screen)")
        #expect(!p.rawScreen().contains("\u{1B}[3"), "NO_COLOR: no colour")
    }

    @Test func replayedStagesAreSaid() throws {
        let d = Harness.tempDir("term-replay")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "true"}
            runStage{id = "b", cmd = "true"}
            runStage{id = "c", cmd = "test -f go"}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 1)
        Harness.write(d + "/go", "")
        let p = try Pane("replay", cwd: d, args: ["resume"], color: true)
        defer { p.kill() }
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        #expect(p.screen().contains("resume: stage a: replayed: passed before, unchanged")
                && p.screen().contains("resume: stage b: replayed: passed before, unchanged"), "\(p.screen())")
        #expect(p.rawScreen().contains("\u{1B}[36mreplayed"))
    }

    /// Not a terminal: no status line, no colour, and the FAIL line's 5 lines all the same.
    @Test func pipedOutputIsPlain() throws {
        let d = work("piped")
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["NO_COLOR": ""])
        #expect(r.code == 0)
        #expect(!r.stderr.contains("\u{1B}") && !r.stderr.contains("attempt 1"), "\(r.stderr)")
        #expect(r.stderr.contains("| err-3") && r.stderr.contains("| err-7") && !r.stdout.contains("step-1"))
        let s = try Harness.run(["run", "-v", "r.lua"], cwd: d)
        #expect(s.stdout.contains("slow | step-1\nslow | step-2\nslow | step-3\nslow | step-4") && s.stderr.contains("bad  | err-1"), "\(s.stdout)")
    }

    /// The screen as it is now (no scrollback), lines without trailing blanks.
    func visible(_ p: Pane) -> [String] {
        ((try? p.tmux(["capture-pane", "-p", "-t", p.name])) ?? "").split(separator: "\n", omittingEmptySubsequences: false)
            .map { String($0.reversed().drop { $0 == " " }.reversed()) }
    }

    /// Issue 23 item 1: one line per stage in flight during a fan-out of 20 with at most 4
    /// at a time (id, attempt, elapsed of timeout, last output line), the finished ones as
    /// permanent lines above it, erased at the end.
    @Test func liveViewShowsEveryStageInFlight() throws {
        let d = Harness.tempDir("term-live")
        Harness.write(d + "/fan.lua", """
            local items = {}
            for i = 1, 20 do items[i] = i end
            parallel(items, function(i)
              runStage{id = "item-" .. i, cmd = "echo working-" .. i .. "; sleep 1.2", timeout = 90}
            end, {maxConcurrency = 4})
            """)
        let p = try Pane("live", cwd: d, args: ["run", "fan.lua"], color: true)
        defer { p.kill() }
        let running = #/^. (item-\d+) +attempt 1  [0-9.]+m?s of 1m30s  working-(\d+)$/#
        var seen: [String] = []
        let shown = Harness.waitFor(30) {
            let lines = visible(p)
            let live = lines.compactMap { l in (try? running.wholeMatch(in: l)).map { ($0.1, $0.2) } }
            let passed = lines.filter { $0.hasPrefix("ok   stage item-") }.count
            // Four in flight, each its own last line, below at least one permanent line.
            guard live.count == 4, live.allSatisfy({ $0.0 == "item-" + $0.1 }), passed >= 4,
                  let firstLive = lines.firstIndex(where: { $0.contains("attempt 1") }),
                  let lastOk = lines.lastIndex(where: { $0.hasPrefix("ok   stage") }), lastOk < firstLive else { return false }
            seen = lines
            return true
        }
        #expect(shown, "four running lines below the finished ones: \(visible(p).joined(separator: "\n"))")
        #expect(!seen.contains { $0.contains("more running") }, "\(seen)")
        #expect(p.waitFor("BATON-EXIT=0", timeout: 40), "\(p.screen())")
        let end = p.screen()
        #expect(!end.contains("attempt 1"), "the view is erased at the end: \(end)")
        #expect(end.components(separatedBy: "ok   stage item-").count == 21, "one permanent line per stage: \(end)")
    }

    /// More in flight than fit: the oldest few and "+N more running"; the view follows the
    /// terminal's width; Ctrl-C erases it.
    @Test func liveViewFitsTheTerminalAndClearsOnCtrlC() throws {
        let d = Harness.tempDir("term-fit")
        Harness.write(d + "/wide.lua", """
            local items = {}
            for i = 1, 20 do items[i] = i end
            parallel(items, function(i)
              runStage{id = "item-" .. i, cmd = "echo line-" .. i .. "-" .. string.rep("x", 150) .. "; sleep 60"}
            end, {maxConcurrency = 20})
            """)
        let p = try Pane("fit", cwd: d, args: ["run", "wide.lua"], color: true)
        defer { p.kill() }
        _ = try p.tmux(["resize-window", "-t", p.name, "-x", "60", "-y", "16"])
        // 16 rows: 6 stage lines and the rest counted.
        #expect(Harness.waitFor(20) {
            let l = visible(p)
            return l.contains("  +14 more running") && l.filter { $0.contains("attempt 1") }.count == 6
        }, "\(visible(p).joined(separator: "\n"))")
        #expect(visible(p).allSatisfy { $0.count <= 60 }, "clipped to 60 columns: \(visible(p).joined(separator: "\n"))")
        _ = try p.tmux(["resize-window", "-t", p.name, "-x", "140", "-y", "16"])
        #expect(Harness.waitFor(10) { visible(p).contains { $0.contains("attempt 1") && $0.count > 100 && $0.count < 140 } },
                "redrawn at the new width: \(visible(p).joined(separator: "\n"))")
        _ = try p.tmux(["send-keys", "-t", p.name, "C-c"])
        #expect(p.waitFor("BATON-EXIT=130", timeout: 30), "\(p.screen())")
        let end = visible(p).joined(separator: "\n")
        #expect(!end.contains("attempt 1") && !end.contains("more running") && end.contains("interrupted by SIGINT (Ctrl-C)"), "\(end)")
    }

    /// Issue 23 item 2: --stream echoes every stage's output, parallel and background ones
    /// included, each line prefixed with its stage id, aligned.
    @Test func streamPrefixesEveryStagesLines() throws {
        let d = Harness.tempDir("term-prefix")
        Harness.write(d + "/r.lua", """
            local bg = runStage{id = "background", cmd = "echo from-bg; echo bg-err >&2", background = true}
            parallel({1, 2, 3}, function(i) runStage{id = "p" .. i, cmd = "echo item-" .. i .. "; printf partial-" .. i} end,
                     {maxConcurrency = 3})
            bg:wait()
            runStage{id = "fg", cmd = "echo one; echo two"}
            """)
        let s = try Harness.run(["run", "-v", "r.lua"], cwd: d)
        #expect(s.code == 0, "\(s.stderr)")
        let out = s.stdout.split(separator: "\n").map(String.init)
        for i in 1...3 {
            #expect(out.contains("p\(i)         | item-\(i)") && out.contains("p\(i)         | partial-\(i)"), "\(s.stdout)")
        }
        #expect(out.contains("background | from-bg") && s.stderr.contains("background | bg-err"), "\(s.stdout) \(s.stderr)")
        #expect(out.contains("fg         | one") && out.contains("fg         | two"), "\(s.stdout)")
        // Colour per id on a terminal.
        let p = try Pane("prefix", cwd: d, args: ["run", "--stream", "r.lua"], color: true)
        defer { p.kill() }
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        #expect(p.screen().contains("fg         | two"), "\(p.screen())")
        #expect(p.rawScreen().contains("\u{1B}[") && p.rawScreen().range(of: "\u{1B}\\[[0-9;]*mfg ", options: .regularExpression) != nil,
                "\(p.rawScreen().debugDescription)")
    }

    /// Issue 23 item 3 (and `wait`): the same live view of a detached run, from another terminal.
    @Test func statusWatchShowsADetachedRunLive() throws {
        let d = Harness.tempDir("term-watch")
        Harness.write(d + "/fan.lua", """
            local items = {}
            for i = 1, 8 do items[i] = i end
            parallel(items, function(i)
              runStage{id = "item-" .. i, cmd = "echo working-" .. i .. "; sleep 1.5", timeout = 90}
            end, {maxConcurrency = 4})
            """)
        for (tag, command) in [("status", ["status", "-w", "dw"]), ("wait", ["wait", "dw"])] {
            _ = try? FileManager.default.removeItem(atPath: d + "/.baton")
            let det = try Harness.run(["run", "--detach", "--run-id", "dw", "fan.lua"], cwd: d)
            #expect(det.code == 0, "\(det.stderr)")
            let p = try Pane("watch-\(tag)", cwd: d, args: command, color: true)
            defer { p.kill() }
            let running = #/^. (item-\d) +attempt 1  [0-9.]+m?s of 1m30s  working-\d$/#
            #expect(Harness.waitFor(20) { visible(p).filter { (try? running.wholeMatch(in: $0)) != nil }.count == 4 },
                    "\(tag): \(visible(p).joined(separator: "\n"))")
            if tag == "status" { #expect(visible(p).contains { $0.hasPrefix("run dw running (runner pid ") }) }
            #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
            let end = visible(p).joined(separator: "\n")
            #expect(end.contains("run dw succeeded (exit 0)") && !end.contains("attempt 1"), "\(tag): \(end)")
        }
    }

    /// The live view shows what else the recipe waits in: a watch (with the background stage
    /// it watches), a sleep, a gate.
    @Test func liveViewShowsWatchesSleepsAndGates() throws {
        let d = Harness.tempDir("term-waits")
        Harness.write(d + "/r.lua", """
            local bg = runStage{id = "train", cmd = "echo training; sleep 2; echo 1 > m.json; sleep 2", background = true}
            watch{id = "w", handle = bg, requireFiles = {"m.json"}, readyTimeoutSec = 600}
            baton.sleep(2)
            gate{name = "verify", maxIterations = 1, cmd = "sleep 2; echo '{\\"approved\\": true}'"}
            """)
        let p = try Pane("waits", cwd: d, args: ["run", "r.lua"], color: true)
        defer { p.kill() }
        func shows(_ pattern: String) -> Bool {
            Harness.waitFor(15) { visible(p).contains { $0.range(of: pattern, options: .regularExpression) != nil } }
        }
        #expect(shows(#"^. train +attempt 1  [0-9.]+m?s  training$"#), "\(visible(p))")
        #expect(shows(#"^. watch w  running  [0-9.]+m?s of 24h00m$"#), "\(visible(p))")
        #expect(shows(#"^. sleep 2\.0s  [0-9.]+m?s$"#), "\(visible(p))")
        #expect(shows(#"^. gate verify  [0-9.]+m?s$"#), "\(visible(p))")
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        #expect(!visible(p).contains { $0.contains("gate verify  ") }, "erased at the end")
    }
}
