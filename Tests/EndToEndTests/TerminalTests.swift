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
        // The status line: stage id, attempt, elapsed time, its last output line; redrawn.
        #expect(p.waitFor("stage slow attempt 1"), "\(p.screen())")
        #expect(p.waitFor(": step-2"), "the last output line follows the stage: \(p.screen())")
        let first = p.screen()
        #expect(Harness.waitFor(3) { p.screen() != first }, "redrawn at least once a second")
        #expect(p.waitFor("BATON-EXIT=0", timeout: 30), "\(p.screen())")
        let screen = p.screen()
        #expect(!screen.contains("attempt 1"), "erased when the stage ended: \(screen)")
        #expect(screen.contains("ok   stage slow passed"))
        // FAIL shows the last 5 lines of stderr, not 1.
        #expect(screen.contains("FAIL stage bad failed") && (3...7).allSatisfy { screen.contains("| err-\($0)") } && !screen.contains("| err-2"), "\(screen)")
        let raw = p.rawScreen()
        #expect(raw.contains("\u{1B}[32mok"), "ok in green: \(raw.debugDescription)")
        #expect(raw.contains("\u{1B}[1m\u{1B}[31mFAIL") || raw.contains("\u{1B}[1;31mFAIL"), "FAIL in red: \(raw.debugDescription)")
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
        #expect(s.stdout.contains("step-1\nstep-2\nstep-3\nstep-4") && s.stderr.contains("err-1"), "\(s.stdout)")
    }
}
