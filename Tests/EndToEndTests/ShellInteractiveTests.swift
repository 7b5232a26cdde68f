import Foundation
import Testing

/// The interactive shell, driven as a person drives it: the real binary in a tmux
/// pseudo-terminal (its own tmux server per test), keys in, screen out.
final class Pane {
    let dir: String
    let socket: String
    let name: String
    let state: String

    /// Starts `baton repl` (or `baton ARGS`) in `cwd` with HOME and XDG_STATE_HOME in the
    /// test's directory; NO_COLOR set unless `color`; waits for `prompt` (by default ">",
    /// except for `run` and `resume`, which show no prompt).
    init(_ tag: String, cwd: String? = nil, state: String? = nil, args: [String] = ["repl"], prompt: String? = nil,
         color: Bool = false) throws {
        let prompt = prompt ?? (["run", "resume", "status", "wait", "log"].contains(args.first ?? "") ? nil : ">")
        dir = Harness.tempDir("shell-\(tag)")
        socket = dir + "/tmux.sock"
        name = "baton-\(tag)-\(UUID().uuidString.prefix(6))"
        self.state = state ?? dir + "/state"
        let work = cwd ?? dir
        var env = ["HOME=\(dir)", "XDG_STATE_HOME=\(self.state)", "TERM=xterm-256color", "LANG=C.UTF-8",
                   "PATH=\(Harness.fixtures):/usr/local/bin:/usr/bin:/bin",
                   "BATON_CEILING_DIRS=\(FileManager.default.temporaryDirectory.path)"]
        if !color { env.append("NO_COLOR=1") }
        let command = "cd \(Pane.quote(work)) && env -u NO_COLOR \(env.map(Pane.quote).joined(separator: " ")) \(Pane.quote(Harness.binary)) "
            + args.map(Pane.quote).joined(separator: " ") + "; echo BATON-EXIT=$?; sleep 600"
        try tmux(["new-session", "-d", "-s", name, "-x", "160", "-y", "50", command])
        if let prompt { #expect(waitForPrompt(prompt), "no prompt: \(screen())") }
    }

    static func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// Runs tmux on this test's own server. Spawned directly, not with Foundation's
    /// Process: its children inherit a mask with the signals blocked, and a tmux
    /// server started that way could never be stopped. Only capture-pane's output
    /// is read (a server started by new-session keeps its stdout open).
    @discardableResult
    func tmux(_ args: [String]) throws -> String {
        let argv = ["tmux", "-S", socket] + args
        let capture = args.first == "capture-pane"
        var fds: [Int32] = [-1, -1]
        if capture { guard pipe(&fds) == 0 else { return "" } }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE] { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if capture {
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_addclose(&actions, fds[0])
        } else {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var cargs = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var pid: pid_t = 0
        let r = posix_spawnp(&pid, "tmux", &actions, &attr, &cargs, environ)
        var out = Data()
        if capture {
            close(fds[1])
            if r == 0 {
                var buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = read(fds[0], &buf, buf.count)
                    if n <= 0 { break }
                    out.append(contentsOf: buf[0..<n])
                }
            }
            close(fds[0])
        }
        guard r == 0 else { throw POSIXError(POSIXErrorCode(rawValue: r) ?? .EINVAL) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return String(decoding: out, as: UTF8.self)
    }

    /// Types text literally (no key names), then Enter.
    func send(_ text: String) {
        type(text)
        keys("Enter")
    }

    func type(_ text: String) { _ = try? tmux(["send-keys", "-t", name, "-l", text]) }
    func keys(_ k: String...) { _ = try? tmux(["send-keys", "-t", name] + k) }

    /// The pane and its scrollback, lines trimmed.
    func screen() -> String {
        let s = (try? tmux(["capture-pane", "-p", "-J", "-S", "-2000", "-t", name])) ?? ""
        return s.split(separator: "\n", omittingEmptySubsequences: false)
            .map { String($0.reversed().drop { $0 == " " }.reversed()) }
            .joined(separator: "\n").trimmingCharacters(in: .newlines)
    }

    /// The visible pane with its escape sequences (colours).
    func rawScreen() -> String { (try? tmux(["capture-pane", "-p", "-e", "-t", name])) ?? "" }

    /// Waits until the screen contains `needle` (after what was there at `since`).
    @discardableResult
    func waitFor(_ needle: String, after mark: Int = 0, timeout: Double = 15) -> Bool {
        Harness.waitFor(timeout) { screenSince(mark).contains(needle) }
    }

    /// A mark for waitFor: output after this point only.
    /// (The last line, where the prompt is, counts as after.)
    func mark() -> Int {
        let s = screen()
        return s.count - (s.split(separator: "\n", omittingEmptySubsequences: false).last?.count ?? 0)
    }

    func screenSince(_ mark: Int) -> String {
        let s = screen()
        return mark < s.count ? String(s.dropFirst(mark)) : ""
    }

    /// Sends a line and waits for `expect` in what follows it.
    func expectLine(_ text: String, _ expected: String, timeout: Double = 15, sourceLocation: SourceLocation = #_sourceLocation) {
        let m = mark()
        send(text)
        #expect(waitFor(expected, after: m, timeout: timeout), "after \(text) expected \(expected) in:\n\(screenSince(m))", sourceLocation: sourceLocation)
    }

    /// Waits until the last line of the screen is exactly this prompt (">" or ">>").
    @discardableResult
    func waitForPrompt(_ prompt: String, timeout: Double = 15) -> Bool {
        Harness.waitFor(timeout) { screen().split(separator: "\n").last.map(String.init) == prompt }
    }

    func kill() { _ = try? tmux(["kill-server"]) }
}

@Suite struct ShellInteractiveTests {
    @Test func expressionsTablesFunctionsAndErrors() throws {
        let p = try Pane("expr")
        defer { p.kill() }
        p.expectLine("1 + 2", "\n3\n")
        p.expectLine(#"{b = 2, a = {1, 2}, "x", s = "two\nlines"}"#, #"{"x", a = {1, 2}, b = 2, s = "two\nlines"}"#)
        p.expectLine("local t = {}; t.self = t; return t", "{self = <cycle>}")
        // an unfinished chunk goes on at >>
        p.send("function sq(x)")
        #expect(p.waitForPrompt(">>"), "\(p.screen())")
        p.send("return x * x")
        p.send("end")
        #expect(p.waitForPrompt(">"), "\(p.screen())")
        p.expectLine("sq(12)", "\n144\n")
        // errors print the message and where, and the shell goes on
        p.expectLine(#"error("boom")"#, "stdin:1: boom")
        p.expectLine("nosuch.field", "attempt to index a nil value (global 'nosuch')")
        p.expectLine("x = = 1", "unexpected symbol near '='")
        p.expectLine("2 * 21", "\n42\n")
        let m = p.mark()
        p.send(":quit")
        #expect(p.waitFor("BATON-EXIT=0", after: m), "\(p.screen())")
    }

    @Test func tabCompletesNamesFieldsCommandsAndRuns() throws {
        let d = Harness.tempDir("shell-tabruns")
        Harness.write(d + "/r.lua", "return 1")
        #expect(try Harness.run(["run", "--run-id", "20261122-181812-3f9a", "r.lua"], cwd: d).code == 0)
        let p = try Pane("tab", cwd: d)
        defer { p.kill() }
        var m = p.mark()
        p.type("baton.fs.ex")
        p.keys("Tab")
        #expect(p.waitFor("> baton.fs.exists(", after: m), "\(p.screen())")
        p.send("\".\")")
        #expect(p.waitFor("\ntrue\n", after: m), "\(p.screen())")
        // several candidates: listed
        m = p.mark()
        p.type("baton.j")
        p.keys("Tab")
        p.type("e")
        p.keys("Tab")
        #expect(p.waitFor("> baton.json.encode(", after: m), "\(p.screen())")
        p.keys("C-u")
        m = p.mark()
        p.type("string.")
        p.keys("Tab", "Tab")
        #expect(p.waitFor("string.format(", after: m), "\(p.screen())")
        p.keys("C-u")
        m = p.mark()
        p.type(":att")
        p.keys("Tab")
        p.type("2026")
        p.keys("Tab")
        #expect(p.waitFor("> :attach 20261122-181812-3f9a", after: m), "\(p.screen())")
        p.keys("Enter")
        #expect(p.waitFor("run = its state", after: m), "\(p.screen())")
    }

    @Test func aStageAtThePromptIsJournaledInTheShellsRun() throws {
        let p = try Pane("stage")
        defer { p.kill() }
        p.expectLine(#"r = runStage{id = "greet", cmd = {"echo", "hello from a stage"}}"#, "stage greet passed")
        p.expectLine("r.stdout", #""hello from a stage\n""#)
        p.expectLine("r", #"id = "greet""#)
        p.expectLine(#"runStage{id = "bad", cmd = "exit 3"}"#, "exit")
        p.expectLine("baton.run.id ~= nil", "true")
        // 'latest' is never the shell's own run; with no other run, it says so and names it.
        p.expectLine(":status", "but this shell's own, which 'latest' never means: name it (:status ")
        let m = p.mark()
        p.send(":quit")
        #expect(p.waitFor("BATON-EXIT=0", after: m), "\(p.screen())")
        let run = try #require(Harness.latestRun(p.dir))
        let events = Harness.journal(run)
        #expect(events.first?["recipe"] as? String == "<shell>")
        let finished = Harness.events(events, type: "stage_finished")
        #expect(finished.map { $0["id"] as? String } == ["greet", "bad"])
        #expect(finished.map { $0["status"] as? String } == ["passed", "failed"])
        let f = try #require(Harness.final(run))
        #expect(f["status"] as? String == "succeeded")
        #expect(f["recipe"] as? String == "<shell>")
    }

    @Test func ctrlCInterruptsLuaAndStagesButNotTheShell() throws {
        let p = try Pane("ctrlc")
        defer { p.kill() }
        // Lua in a loop, and baton.sleep
        var m = p.mark()
        p.send(#"print("spinning"); while true do end"#)
        #expect(p.waitFor("spinning", after: m))
        p.keys("C-c")
        #expect(p.waitFor("interrupted", after: m, timeout: 5), "\(p.screen())")
        m = p.mark()
        let began = Date()
        p.send(#"print("sleeping"); baton.sleep(60)"#)
        #expect(p.waitFor("sleeping", after: m))
        p.keys("C-c")
        #expect(p.waitFor("interrupted", after: m, timeout: 5), "\(p.screen())")
        #expect(Date().timeIntervalSince(began) < 30)
        // a long stage: its whole process group ends
        let marker = "SHELLTEST_MARK=\(UUID().uuidString)"
        let kv = marker.split(separator: "=")
        m = p.mark()
        p.send(#"runStage{id = "long", cmd = "sleep 60 & sleep 60; wait", env = {\#(kv[0]) = "\#(kv[1])"}}"#)
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: marker).count >= 2 }, "the stage did not start")
        p.keys("C-c")
        #expect(p.waitFor("interrupted", after: m, timeout: 15), "\(p.screen())")
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: marker).isEmpty }, "left behind: \(Harness.processes(withEnv: marker))")
        // still alive, and a second Ctrl-C at an empty prompt does not leave
        p.expectLine("6 * 7", "\n42\n")
        m = p.mark()
        p.keys("C-c")
        #expect(p.waitFor("^C", after: m))
        p.keys("C-c")
        p.expectLine("1 + 1", "\n2\n")
        // Ctrl-D leaves with 0
        m = p.mark()
        p.keys("C-d")
        #expect(p.waitFor("BATON-EXIT=0", after: m), "\(p.screen())")
        let run = try #require(Harness.latestRun(p.dir))
        let long = Harness.events(Harness.journal(run), type: "stage_finished").first { $0["id"] as? String == "long" }
        #expect(long?["status"] as? String == "cancelled")
    }

    @Test func historyIsKeptAcrossStartsAndRecalledWithUp() throws {
        let state = Harness.tempDir("shell-hist-state")
        do {
            let p = try Pane("hist1", state: state)
            defer { p.kill() }
            p.send("x_from_first = 41")
            p.send("for i = 1, 2 do")
            #expect(p.waitForPrompt(">>"), "\(p.screen())")
            p.send(#"print("loop" .. i)"#)
            p.expectLine("end", "loop2")
            let m = p.mark()
            p.keys("C-d")
            #expect(p.waitFor("BATON-EXIT=0", after: m), "\(p.screen())")
        }
        let file = try #require(Harness.read(state + "/baton/history"))
        #expect(file.hasPrefix("_HiStOrY_V2_\n"), "libedit's header: \(file)")
        let entries = file.split(separator: "\n").dropFirst()
        #expect(entries.count == 2, "the multi-line chunk is one entry: \(entries)")
        let p = try Pane("hist2", state: state)
        defer { p.kill() }
        var m = p.mark()
        p.keys("Up")
        #expect(p.waitFor("> for i = 1, 2 do", after: m), "\(p.screen())")
        p.keys("Up")
        #expect(p.waitFor("> x_from_first = 41", after: m), "\(p.screen())")
        p.keys("Enter")
        p.expectLine("x_from_first + 1", "\n42\n")
        m = p.mark()
        p.send(":quit")
        #expect(p.waitFor("BATON-EXIT=0", after: m))
    }

    /// `:tail RUN STAGE` and `baton log --stage STAGE RUN` are one code path (RunView): on
    /// the same terminal, what `:tail` shows of a stage (its latest attempt) is exactly the
    /// end of what `log --stage` shows (every attempt), headers and stderr included.
    @Test func tailIsTheEndOfLogStage() throws {
        let d = Harness.tempDir("shell-tail-log")
        Harness.write(d + "/r.lua", #"""
            runStage{id = "s", retries = 1, retryOn = {"deterministic"}, backoff = {initial = 0.01},
                     cmd = "if [ -f again ]; then echo second; echo out; echo 'err two' >&2; "
                        .. "else touch again; echo first; echo 'err one' >&2; exit 1; fi"}
            """#)
        let id = "20261101-000000-0007"
        #expect(try Harness.run(["run", "--run-id", id, "r.lua"], cwd: d).code == 0)
        let log = try Pane("log", cwd: d, args: ["log", "--stage", "s", id])
        defer { log.kill() }
        #expect(log.waitFor("BATON-EXIT=0"), "\(log.screen())")
        let shown = log.screen().components(separatedBy: "\nBATON-EXIT=0")[0]
        #expect(shown.contains("==> s attempt 1") && shown.contains("err one"), "\(shown)")

        let p = try Pane("tail", cwd: d)
        defer { p.kill() }
        let m = p.mark()
        p.send(":tail \(id) s")
        #expect(p.waitFor("err two", after: m), "\(p.screen())")
        #expect(p.waitForPrompt(">"), "\(p.screen())")
        var lines = p.screenSince(m).components(separatedBy: "\n")
        lines.removeFirst()   // the command
        lines.removeLast()    // the prompt
        let tail = lines.joined(separator: "\n")
        #expect(tail.hasPrefix("==> s attempt 2") && tail.contains("second\nout\n--- stderr ---\nerr two"), "\(tail)")
        #expect(shown.hasSuffix("\n" + tail), "log --stage:\n\(shown)\n:tail:\n\(tail)")
    }

    @Test func attachToAFinishedAndAnOrphanedRun() throws {
        let d = Harness.tempDir("shell-attach")
        Harness.write(d + "/done.lua", #"runStage{id = "build", cmd = {"echo", "built"}}; return {ok = true}"#)
        #expect(try Harness.run(["run", "--run-id", "20261101-000000-0001", "done.lua"], cwd: d).code == 0)
        // an orphan: its runner killed with SIGKILL in the middle of a stage
        Harness.write(d + "/stuck.lua", #"runStage{id = "prepare", cmd = "true"}; runStage{id = "train", cmd = "sleep 60"}"#)
        let (runner, _, _) = try Harness.start(["run", "--run-id", "20261101-000000-0002", "stuck.lua"], cwd: d)
        let orphanDir = d + "/.baton/runs/20261101-000000-0002"
        #expect(Harness.waitFor(15) { (Harness.read(orphanDir + "/journal.jsonl") ?? "").contains(#""id":"train""#) })
        kill(runner.processIdentifier, SIGKILL)
        runner.waitUntilExit()

        let p = try Pane("attach", cwd: d)
        defer { p.kill() }
        #expect(p.waitFor("ORPHANED  20261101-000000-0002  stuck.lua"), "banner: \(p.screen())")
        p.expectLine(":attach 20261101-000000-0001", "run 20261101-000000-0001  succeeded")
        p.expectLine("{run.stages[1].status, run.stages[1].exit}", #"{"passed", 0}"#)
        p.expectLine("run.final.result.ok", "true")
        p.expectLine(":tail 20261101-000000-0001 build", "built")
        p.expectLine(":attach 20261101-000000-0002", "ORPHANED")
        p.expectLine("run.state", #""orphaned""#)
        p.expectLine("{run.stages[#run.stages].id, run.stages[#run.stages].status}", #"{"train", "unfinished"}"#)
        p.expectLine(":status", "stages   1 finished")
        p.expectLine(":cancel 20261101-000000-0002", "run 20261101-000000-0002 cancelled")
        p.expectLine(":attach", "cancelled")
        p.expectLine(":runs", "RUN")
        p.expectLine(":nosuch", "unknown command :nosuch")
        let m = p.mark()
        p.send(":quit")
        #expect(p.waitFor("BATON-EXIT=0", after: m))
    }

    @Test func pipedStdinIsOneChunkWithNoPrompts() throws {
        let d = Harness.tempDir("shell-piped")
        let ok = try Harness.run(["repl"], cwd: d, env: ["XDG_STATE_HOME": d + "/state"], stdin: "local x = 40\nprint(x + 2)\nreturn {n = 1}\n")
        #expect(ok.code == 0, "\(ok.stderr)")
        #expect(ok.stdout == "42\n")
        #expect(!ok.stdout.contains("> "))
        #expect(!FileManager.default.fileExists(atPath: d + "/state/baton/history"), "no history when piped")
        let bad = try Harness.run(["repl"], cwd: d, stdin: "print('before')\nerror('broken')\n")
        #expect(bad.code == 1)
        #expect(bad.stdout == "before\n")
        #expect(bad.stderr.contains("broken"))
        let failed = try Harness.run(["repl"], cwd: d, stdin: "baton.fail('no', {code = 7})")
        #expect(failed.code == 7)
    }
}
