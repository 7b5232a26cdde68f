import Foundation
import Testing

/// Debugging a stuck run from inside (issue 17): `status` says why a live run waits; the
/// control socket; `baton attach`; control events.
@Suite(.serialized) struct AttachTests {
    /// Starts `recipe` detached in a fresh directory and waits until `ready` holds on `status --json`.
    static func detached(_ name: String, _ recipe: String, env: [String: String] = [:],
                         until ready: @escaping (String) -> Bool) throws -> (dir: String, run: String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d, env: env)
        #expect(start.code == 0, "\(start.stderr)")
        let run = Harness.latestRun(d)!
        let ok = Harness.waitFor(20) {
            let s = (try? Harness.run(["status", "--json"], cwd: d))?.stdout ?? ""
            return ready(s)
        }
        #expect(ok, "the run never got ready: \(Harness.read(run + "/run.out") ?? "")")
        return (d, run)
    }

    /// Whether `status --json` output shows stage `id` running (attempt `attempt`) with its
    /// process `child` alive and, when given, `lastLine` as its last output line.
    static func running(_ status: String, _ id: String, attempt: Int = 1, child: String, lastLine: String? = nil) -> Bool {
        guard let j = try? JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any],
              let running = j["running"] as? [[String: Any]] else { return false }
        return running.contains { r in
            r["id"] as? String == id && r["attempt"] as? Int == attempt && r["status"] as? String == "running"
                && (lastLine == nil || r["last_line"] as? String == lastLine)
                && (r["processes"] as? [[String: Any]] ?? []).contains { $0["role"] as? String == "child" && $0["cmd"] as? String == child }
        }
    }

    static func finish(_ d: String, _ run: String) {
        _ = try? Harness.run(["cancel"], cwd: d)
        Harness.waitFor(10) { Harness.final(run) != nil }
    }

    static let stuckWatch = """
        myvar = "set by the recipe"
        local h = runStage{id = "train", cmd = "echo epoch 1; echo epoch 2", background = true}
        local function go(limit)
          local attempts_left = limit
          return watch{id = "train", handle = h, requireFiles = {"out/metrics.json"}, readyTimeoutSec = 600,
                       readyPollSec = 0.2, onMissing = "block"}
        end
        local r = go(3)
        persistFinal{watch_state = r.state}
        """

    @Test func statusNamesTheWatchAndTheMissingFile() throws {
        let (d, run) = try Self.detached("status-watch", Self.stuckWatch) { $0.contains("awaiting_artifacts") }
        defer { Self.finish(d, run) }
        let text = try Harness.run(["status"], cwd: d).stdout
        #expect(text.contains("blocked  watch 'train' awaiting_artifacts: missing out/metrics.json,"), "\(text)")
        #expect(text.contains(" of 600"), "\(text)")
        let j = try JSONSerialization.jsonObject(with: Data(try Harness.run(["status", "--json"], cwd: d).stdout.utf8)) as! [String: Any]
        let b = j["blocked_in"] as! [String: Any]
        #expect(b["kind"] as? String == "watch" && b["id"] as? String == "train" && b["state"] as? String == "awaiting_artifacts")
        #expect((b["missing"] as? [String])?.first?.hasSuffix("out/metrics.json") == true)
        #expect(b["limit_s"] as? Double == 600)
    }

    @Test func statusShowsARunningStagesProcessesAndLastLine() throws {
        let (d, run) = try Self.detached("status-stage", """
            runStage{id = "hang", cmd = "echo warming up; echo still going; sleep 300 & wait"}
            """) { Self.running($0, "hang", child: "sleep 300", lastLine: "still going") }
        defer { Self.finish(d, run) }
        let text = try Harness.run(["status"], cwd: d).stdout
        #expect(text.contains("blocked  stage 'hang' running:"), "\(text)")
        #expect(text.contains("last line: still going"), "\(text)")
        #expect(text.contains("stage leader "), "\(text)")
        #expect(text.contains("child ") && text.contains("sleep 300"), "\(text)")
        let j = try JSONSerialization.jsonObject(with: Data(try Harness.run(["status", "--json"], cwd: d).stdout.utf8)) as! [String: Any]
        let r = (j["running"] as! [[String: Any]])[0]
        #expect(r["last_line"] as? String == "still going")
        let roles = (r["processes"] as! [[String: Any]]).compactMap { $0["role"] as? String }
        #expect(roles.first == "stage leader" && roles.contains("child"), "\(roles)")
        #expect((r["for_ms"] as? Int ?? -1) < 60_000)
    }

    static func attach(_ d: String, _ input: String) throws -> Harness.Result {
        try Harness.run(["attach"], cwd: d, stdin: input, timeout: 60)
    }

    static func controls(_ run: String) -> [[String: Any]] { Harness.events(Harness.journal(run), type: "control") }

    @Test func pipedAttachReadsAGlobalAndALocalOfTheBlockedFrameAndSkipsTheWatch() throws {
        let (d, run) = try Self.detached("attach-eval", Self.stuckWatch, env: ["BATON_ATTACH_LINE_SEC": "0.3"]) { $0.contains("awaiting_artifacts") }
        defer { Self.finish(d, run) }
        let r = try Self.attach(d, "return myvar\n")
        #expect(r.code == 0 && r.stdout == "\"set by the recipe\"\n", "\(r)")
        // The locals of the frame the recipe is blocked in (go's), read and written back.
        let l = try Self.attach(d, "return attempts_left, limit\nattempts_left = attempts_left + 4\nreturn attempts_left\nfunction twice(x)\n  return 2 * x\nend\nreturn twice(21)\n")
        #expect(l.stdout == "3\t3\n7\n42\n", "\(l)")
        // ...and its function's upvalues.
        let u = try Self.attach(d, "return h.id\n")
        #expect(u.stdout == "\"train\"\n", "\(u)")
        let e = try Self.attach(d, "error('boom')\n")
        #expect(e.code == 1 && e.stderr.contains("boom"), "\(e)")
        // A line that spins is stopped (the run waits meanwhile); the next one runs.
        let spin = try Self.attach(d, "while true do end\nreturn myvar\n")
        #expect(spin.stderr.contains("stopped: the line ran for more than 0.3 s of CPU") && spin.stdout == "\"set by the recipe\"\n", "\(spin)")
        // :skip ends the waiting watch as blocked and the run finishes.
        let s = try Self.attach(d, ":skip train\n")
        #expect(s.code == 0 && s.stdout.contains("watch 'train' ends as blocked"), "\(s)")
        #expect(Harness.waitFor(20) { Harness.final(run)?["status"] as? String == "succeeded" }, "\(Harness.read(run + "/run.out") ?? "")")
        #expect((Harness.final(run)?["result"] as? [String: Any])?["watch_state"] as? String == "blocked")
        #expect(!FileManager.default.fileExists(atPath: run + "/control.sock"), "the socket is removed when the run ends")
        let c = Self.controls(run)
        #expect(c.contains { $0["op"] as? String == "eval" && $0["target"] as? String == "return myvar" && $0["ok"] as? Bool == true
            && $0["result"] as? String == "\"set by the recipe\"" && $0["user"] as? String == "root" && $0["uid"] as? Int == 0
            && ($0["pid"] as? Int ?? 0) > 0 })
        #expect(c.contains { $0["op"] as? String == "eval" && $0["ok"] as? Bool == false })
        #expect(c.contains { $0["op"] as? String == "skip" && $0["target"] as? String == "train" && $0["ok"] as? Bool == true })
        let log = try Harness.run(["log"], cwd: d).stdout
        #expect(log.contains("control skip train by root (uid 0, pid "), "\(log)")
        // A finished run: the journal view, and it says so.
        let after = try Self.attach(d, "return 1\n")
        #expect(after.code == 0 && after.stderr.contains("is not live (succeeded)") && after.stdout.contains("succeeded  exit 0"), "\(after)")
    }

    @Test func killEndsTheAttemptAndItsRetryRuns() throws {
        let (d, run) = try Self.detached("attach-kill", """
            runStage{id = "hung", cmd = "echo try; sleep 300", retries = 1, backoff = {initial = 0.01}, grace = 1, allowFail = true}
            """) { Self.running($0, "hung", attempt: 1, child: "sleep 300", lastLine: "try") }
        defer { Self.finish(d, run) }
        #expect(Harness.waitFor(10) { (Harness.read(run + "/journal.jsonl") ?? "").contains("stage_started") })
        let k = try Self.attach(d, ":kill hung\n")
        #expect(k.code == 0 && k.stdout.contains("its retry policy applies"), "\(k)")
        #expect(Harness.waitFor(15) { Harness.events(Harness.journal(run), type: "stage_started").count == 2 })
        let f = Harness.events(Harness.journal(run), type: "stage_finished")
        #expect(f.first?["attempt"] as? Int == 1 && f.first?["final"] as? Bool == false && f.first?["signal"] as? Int == 15, "\(f)")
        #expect(Self.controls(run).contains { $0["op"] as? String == "kill" && $0["target"] as? String == "hung" && $0["ok"] as? Bool == true })
        let none = try Self.attach(d, ":kill nope\n")
        #expect(none.code == 1 && none.stderr.contains("no stage 'nope' is running (running: hung)"), "\(none)")
    }

    @Test func extendKeepsAStageAlivePastItsOldTimeout() throws {
        let (d, run) = try Self.detached("attach-extend", """
            local r = runStage{id = "slow", cmd = "sleep 3; echo done", timeout = 2}
            return {out = r.stdout}
            """) { Self.running($0, "slow", child: "sleep 3") }
        defer { Self.finish(d, run) }
        #expect(Harness.waitFor(10) { (Harness.read(run + "/journal.jsonl") ?? "").contains("stage_started") })
        let x = try Self.attach(d, ":extend slow 5\n:stages\n")
        #expect(x.code == 0 && x.stdout.contains("timeout moved 5.0s later"), "\(x)")
        #expect(x.stdout.contains("running  slow  attempt 1"), "\(x)")
        #expect(Harness.waitFor(20) { Harness.final(run) != nil })
        #expect(Harness.final(run)?["status"] as? String == "succeeded", "\(Harness.read(run + "/run.out") ?? "")")
        #expect(Self.controls(run).contains { $0["op"] as? String == "extend" && $0["target"] as? String == "slow 5.0" && $0["ok"] as? Bool == true })
    }

    @Test func theSocketIsTheOwnersOnly() throws {
        // Runs shared with other users (BATON_RUNS_MODE): the socket itself must still refuse them.
        let (d, run) = try Self.detached("attach-uid", Self.stuckWatch, env: ["BATON_RUNS_MODE": "0755"]) { $0.contains("awaiting_artifacts") }
        defer { Self.finish(d, run) }
        let sock = run + "/control.sock"
        var st = stat()
        #expect(stat(sock, &st) == 0 && st.st_mode & 0o777 == 0o600 && (st.st_mode & S_IFMT) == S_IFSOCK)
        // Another uid cannot even connect (mode 0600)...
        let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", Harness.binary, "attach", "--runs-dir", d + "/.baton/runs"]
        let a = try Self.shell(nobody, cwd: d, input: "return myvar\n")
        #expect(a.code == 1 && a.stderr.contains("cannot attach") && a.stderr.contains("ermission denied") && !a.stdout.contains("set by"), "\(a)")
        // ...and with the mode opened, the peer-credential check refuses it.
        chmod(sock, 0o666)
        let b = try Self.shell(nobody, cwd: d, input: "return myvar\n")
        #expect(b.code == 1 && b.stderr.contains("refused: uid 65534 is not the run's owner (uid 0)") && !b.stdout.contains("set by"), "\(b)")
        #expect(Self.controls(run).contains { $0["op"] as? String == "refused" && $0["uid"] as? Int == 65534 && $0["ok"] as? Bool == false })
    }

    @Test func attachAtATerminalThenDetachLeavesTheRunRunning() throws {
        let (d, run) = try Self.detached("attach-tty", Self.stuckWatch) { $0.contains("awaiting_artifacts") }
        defer { Self.finish(d, run) }
        let id = (run as NSString).lastPathComponent
        let p = try Pane("attach-tty", cwd: d, args: ["attach"], prompt: id + ">")
        defer { p.kill() }
        #expect(p.screen().contains("blocked in watch 'train' awaiting_artifacts: missing out/metrics.json"), "\(p.screen())")
        #expect(p.screen().contains("its locals and upvalues: limit, attempts_left, h"), "\(p.screen())")
        p.expectLine("return myvar", "\"set by the recipe\"")
        p.expectLine("attempts_left", "\n3\n")
        // Tab completes the run's own globals.
        let m = p.mark()
        p.type("myv")
        p.keys("Tab")
        #expect(p.waitFor("myvar", after: m), "\(p.screenSince(m))")
        p.keys("C-u")
        p.expectLine("for i = 1, 2 do", ">>")
        p.expectLine("print(i) end", "1\n2")
        p.expectLine(":stages", "passed  train  attempts 1")
        p.expectLine(":detach", "BATON-EXIT=0")
        #expect(try Harness.run(["status"], cwd: d).stdout.contains("running (runner pid"))
    }

    @Test func theShellsAttachOfALiveRunUsesTheControlSocket() throws {
        let (d, run) = try Self.detached("attach-shell", Self.stuckWatch) { $0.contains("awaiting_artifacts") }
        defer { Self.finish(d, run) }
        let id = (run as NSString).lastPathComponent
        let p = try Pane("attach-shell", cwd: d)
        defer { p.kill() }
        p.expectLine(":attach latest", "blocked in watch 'train'")
        #expect(p.waitForPrompt(id + ">"), "\(p.screen())")
        p.expectLine("return myvar", "\"set by the recipe\"")
        // Ctrl-D while attached comes back to the shell; the run goes on.
        let m = p.mark()
        p.keys("C-d")
        #expect(p.waitFor("detached from run \(id): it goes on", after: m), "\(p.screenSince(m))")
        #expect(p.waitForPrompt(">"), "\(p.screen())")
        p.expectLine(":attach", "blocked in watch 'train'")
        #expect(p.waitForPrompt(id + ">"), "\(p.screen())")
        p.expectLine(":skip train", "watch 'train' ends as blocked")
        p.expectLine(":detach", "detached from run \(id): it goes on")
        #expect(p.waitForPrompt(">"), "\(p.screen())")
        p.expectLine("1 + 1", "\n2\n")
        #expect(Harness.waitFor(20) { Harness.final(run)?["status"] as? String == "succeeded" })
        p.expectLine(":attach " + id, "succeeded  exit 0")
    }

    @Test func anOrphanedRunOpensTheJournalViewAndSaysSo() throws {
        let (d, run) = try Self.detached("attach-orphan", Self.stuckWatch) { $0.contains("awaiting_artifacts") }
        defer { _ = try? Harness.run(["cancel"], cwd: d) }
        kill(Int32(Harness.read(run + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        #expect(Harness.waitFor(10) { (try? Harness.run(["status", "--json"], cwd: d))?.stdout.contains("orphaned") == true })
        let piped = try Self.attach(d, "return myvar\n")
        #expect(piped.code == 0 && piped.stderr.contains("is not live (ORPHANED)") && piped.stdout.contains("ORPHANED"), "\(piped)")
        let p = try Pane("attach-orphan", cwd: d, args: ["attach"])
        defer { p.kill() }
        #expect(p.screen().contains("is not live (ORPHANED): this is its journal view (as the shell's :attach)"), "\(p.screen())")
        p.expectLine("run.state", "\"orphaned\"")
    }

    /// Runs argv (a helper that drops to another uid, then baton) with stdin.
    static func shell(_ argv: [String], cwd: String, input: String) throws -> Harness.Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/" + argv[0])
        p.arguments = Array(argv.dropFirst())
        p.currentDirectoryURL = URL(fileURLWithPath: "/")
        p.environment = Harness.environment([:])
        let out = Pipe(), err = Pipe(), inp = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = inp
        try p.run()
        inp.fileHandleForWriting.write(input.data(using: .utf8)!)
        try inp.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Harness.Result(code: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                              stderr: String(decoding: e, as: UTF8.self), signaled: false)
    }
}
