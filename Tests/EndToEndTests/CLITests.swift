import BatonBase
import Foundation
import Testing

/// The command line (issue 12 part 1): help per command, global options anywhere, did-you-mean,
/// the recipe's own words, completion scripts, and a runner that stays free of Foundation.
@Suite struct CLITests {
    @Test func helpPerCommand() throws {
        let d = Harness.tempDir("cli-help")
        let a = try Harness.run(["run", "--help"], cwd: d)
        let b = try Harness.run(["help", "run"], cwd: d)
        #expect(a.code == 0 && b.code == 0, "stderr: \(a.stderr) \(b.stderr)")
        for h in [a.stdout, b.stdout] {
            #expect(h.contains("--dry-run") && h.contains("--detach") && h.contains("--run-id") && h.contains("--sync"), "help: \(h)")
            #expect(!h.contains("--existing-run"), "the hidden option stays hidden")
        }
        let top = try Harness.run(["--help"], cwd: d)
        #expect(top.code == 0)
        for c in ["run", "runs", "status", "log", "cancel", "resume", "check", "repl"] { #expect(top.stdout.contains(c)) }
        let log = try Harness.run(["log", "--help"], cwd: d)
        #expect(log.code == 0 && log.stdout.contains("--follow") && log.stdout.contains("--stage"))
        #expect(try Harness.run(["--version"], cwd: d).stdout.hasPrefix("baton "))
        #expect(try Harness.run(["version"], cwd: d).stdout.hasPrefix("baton "))
        // Nothing of this leaves a run directory behind.
        #expect(Harness.runDirs(d).isEmpty)
    }

    @Test func runsDirBeforeOrAfterTheCommand() throws {
        let d = Harness.tempDir("cli-global")
        Harness.write(d + "/r.lua", "return {ok = true}")
        #expect(try Harness.run(["--runs-dir", "elsewhere", "run", "r.lua"], cwd: d).code == 0)
        let before = try Harness.run(["--runs-dir", "elsewhere", "runs", "--json"], cwd: d)
        let after = try Harness.run(["runs", "--runs-dir", "elsewhere", "--json"], cwd: d)
        let inline = try Harness.run(["runs", "--runs-dir=elsewhere", "--json"], cwd: d)
        for r in [before, after, inline] {
            let list = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]
            #expect(r.code == 0 && list?.count == 1, "stdout: \(r.stdout) stderr: \(r.stderr)")
        }
        #expect(try Harness.run(["--runs-dir", "elsewhere", "status"], cwd: d).stdout.contains("succeeded"))
        #expect(Harness.runDirs(d).isEmpty, "nothing under .baton/runs")
    }

    @Test func didYouMeanAndUsageErrorsExitThree() throws {
        let d = Harness.tempDir("cli-dym")
        Harness.write(d + "/r.lua", "return {ok = true}")
        let o = try Harness.run(["run", "--dryrun", "r.lua"], cwd: d)
        #expect(o.code == 3 && o.stderr.contains("--dryrun") && o.stderr.contains("Did you mean '--dry-run'"), "stderr: \(o.stderr)")
        let c = try Harness.run(["stauts"], cwd: d)
        #expect(c.code == 3 && c.stderr.contains("did you mean 'status'"), "stderr: \(c.stderr)")
        let s = try Harness.run(["run", "--sync", "never", "r.lua"], cwd: d)
        #expect(s.code == 3 && s.stderr.contains("--sync must be"), "stderr: \(s.stderr)")
        #expect(try Harness.run(["status", "a", "b"], cwd: d).code == 3)
        #expect(try Harness.run(["log", "--stage"], cwd: d).code == 3)
        #expect(Harness.runDirs(d).isEmpty)
    }

    /// Issue 23 item 11: the small things a new user trips on.
    @Test func helpTopicsSuggestionsAndRunCounts() throws {
        let d = Harness.tempDir("cli-help")
        let h = try Harness.run(["help", "nosuch"], cwd: d)
        // A usage error (3, the spec's code for bad arguments), as `baton nosuch` is; 2 is a gate's.
        #expect(h.code == 3 && h.stderr.contains("unknown command 'nosuch'") && h.stdout.isEmpty, "help nosuch: \(h.code) \(h.stderr)")
        let hs = try Harness.run(["help", "stauts"], cwd: d)
        #expect(hs.code == 3 && hs.stderr.contains("did you mean 'status'"), "\(hs.stderr)")
        #expect(try Harness.run(["help", "runs"], cwd: d).code == 0)
        let w = try Harness.run(["help", "__watchdog"], cwd: d)
        #expect(w.code == 3 && !w.stderr.contains(", __watchdog"), "\(w.stderr)")
        let overview = try Harness.run(["help"], cwd: d)
        #expect(overview.code == 0 && !overview.stdout.contains("watchdog"))
        // The exit codes --help lists are ExitStatus's table (the guide's).
        #expect(overview.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            .contains("Exit codes: " + ExitStatus.summary), "\(overview.stdout)")
        let r = try Harness.run(["rnus"], cwd: d)
        #expect(r.code == 3 && r.stderr.contains("did you mean 'runs'?") && !r.stderr.contains("watchdog"), "\(r.stderr)")
        let w2 = try Harness.run(["__watchdo"], cwd: d)
        #expect(w2.code == 3 && !w2.stderr.contains("watchdog'?"), "\(w2.stderr)")
        Harness.write(d + "/r.lua", "return {ok = true}")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        let zero = try Harness.run(["runs", "-n", "0"], cwd: d)
        #expect(zero.code == 0 && zero.stdout.isEmpty && zero.stderr.isEmpty, "\(zero.stdout)\(zero.stderr)")
        let e = Harness.tempDir("cli-help-empty")
        let zeroEmpty = try Harness.run(["runs", "-n", "0"], cwd: e)
        #expect(zeroEmpty.code == 0 && zeroEmpty.stdout.isEmpty, "\(zeroEmpty.stdout)")
        let neg = try Harness.run(["runs", "-n", "-1"], cwd: d)
        #expect(neg.code == 3 && neg.stderr.contains("-n must be 0 or more, not -1"), "\(neg.stderr)")
    }

    @Test func everythingAfterTheRecipeIsTheRecipes() throws {
        let d = Harness.tempDir("cli-words")
        Harness.write(d + "/r.lua", """
            local words = table.concat({...}, " ")
            baton.fs.write("words.txt", words .. "|" .. tostring(baton.args.x))
            return {ok = true}
            """)
        let r = try Harness.run(["run", "--json", "r.lua", "--json", "x=1", "--help", "--dry-run"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Harness.read(d + "/words.txt") == "--json x=1 --help --dry-run|1")
        #expect(r.stdout.contains("\"status\""), "run's own --json printed final.json")
        let dd = try Harness.run(["run", "--", "r.lua", "a"], cwd: d)
        #expect(dd.code == 0 && Harness.read(d + "/words.txt") == "a|nil", "stderr: \(dd.stderr)")
    }

    /// Part 7: a recipe's parameters, declared once in kit.args, documented by
    /// `baton run R.lua --help` (no run directory left behind).
    @Test func recipeParametersDocumentedByHelp() throws {
        let d = Harness.tempDir("cli-params")
        Harness.write(d + "/r.lua", """
            local o = require("kit.args").parse{
              description = "Deploys TASK carefully.", positional = "task",
              options = {
                risk = {choices = {"low", "medium", "high"}, default = "low", help = "how careful to be"},
                count = {number = true, min = 1, required = true, help = "how many replicas"},
                dry_rehearsal = {flag = true, help = "rehearse first"},
              },
            }
            if o.help then return end
            print(o.risk, o.count, o.task)
            """)
        for word in ["--help", "-h", "help"] {
            let r = try Harness.run(["run", "r.lua", word], cwd: d)
            #expect(r.code == 0, "\(r.stderr)")
            #expect(r.stdout.contains("usage: baton run r.lua [options] [task]") && r.stdout.contains("Deploys TASK carefully."), "\(r.stdout)")
            #expect(r.stdout.contains("--risk=low|medium|high") && r.stdout.contains("how careful to be (default low)"))
            #expect(r.stdout.contains("--count=N") && r.stdout.contains("(required; at least 1)") && r.stdout.contains("--dry-rehearsal"))
        }
        #expect(Harness.runDirs(d).isEmpty)
        let ok = try Harness.run(["run", "r.lua", "--count", "2", "ship", "it"], cwd: d)
        #expect(ok.code == 0 && ok.stdout.contains("low\t2\tship it"), "\(ok.stdout) \(ok.stderr)")
        let bad = try Harness.run(["run", "r.lua", "--risk", "hgih", "count=1"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("low|medium|high"), "\(bad.stderr)")
    }

    /// Issue 23 item 10: kit.args refusing the recipe's words leaves no failed run behind.
    @Test func recipeArgumentErrorsLeaveNoRun() throws {
        let d = Harness.tempDir("cli-argerr")
        Harness.write(d + "/r.lua", """
            local o = require("kit.args").parse{
              options = {risk = {choices = {"low", "high"}, default = "low"}, count = {number = true, min = 1, required = true}},
            }
            runStage{id = "s", cmd = {"true"}}
            """)
        for (words, says) in [(["--risk", "hgih", "count=1"], "low|high"), (["risk=low"], "'count=...' is required"),
                              (["count=abc"], "must be a number"), (["--cuont", "2"], "did you mean '--count'")] {
            let r = try Harness.run(["run", "r.lua"] + words, cwd: d)
            #expect(r.code == 3 && r.stderr.contains(says), "\(words): \(r.code) \(r.stderr)")
            let j = try Harness.run(["run", "--json", "r.lua"] + words, cwd: d)
            #expect(j.code == 3 && j.stdout.contains("\"exit_code\": 3"), "\(j.stdout)")
            // Detached too: the command waits for the runner's word before it prints an id.
            let det = try Harness.run(["run", "--detach", "r.lua"] + words, cwd: d)
            #expect(det.code == 3 && det.stderr.contains(says) && det.stdout.isEmpty, "--detach \(words): \(det.code) \(det.stderr)")
            let dj = try Harness.run(["run", "--detach", "--json", "r.lua"] + words, cwd: d)
            #expect(dj.code == 3 && dj.stdout.contains("\"exit_code\": 3"), "--detach --json \(words): \(dj.stdout)")
        }
        #expect(Harness.runDirs(d).isEmpty, "no failed run left behind: \(Harness.runDirs(d))")
        #expect(try Harness.run(["run", "r.lua", "count=2"], cwd: d).code == 0)
        #expect(Harness.runDirs(d).count == 1)
    }

    /// Issue 23 item 10, detached: the command prints the run's id only once the runner is
    /// under way (its first wait); a refusal before that is printed by the command, with what
    /// the recipe printed (its usage), and leaves no run; `help` prints the usage and no id.
    @Test func detachedRunnerSaysWhenItIsUnderWay() throws {
        let d = Harness.tempDir("cli-detach-args")
        Harness.write(d + "/r.lua", """
            local o = require("kit.args").parse{usage = "usage: r.lua count=N", options = {count = {number = true, required = true}}}
            if o.help then return end
            runStage{id = "s", cmd = {"sleep", "30"}}
            """)
        let bad = try Harness.run(["run", "--detach", "r.lua", "count=x"], cwd: d)
        #expect(bad.code == 3 && bad.stderr.contains("usage: r.lua count=N") && bad.stderr.contains("must be a number"), "\(bad.stderr)")
        let help = try Harness.run(["run", "--detach", "r.lua", "--help"], cwd: d)
        #expect(help.code == 0 && help.stdout == "usage: r.lua count=N\n", "\(help.stdout) \(help.stderr)")
        #expect(Harness.runDirs(d).isEmpty, "\(Harness.runDirs(d))")
        // Words it takes: the id once the stage runs, and the run goes on without the command.
        let ok = try Harness.run(["run", "--detach", "r.lua", "count=1"], cwd: d, timeout: 20)
        let id = ok.stdout.split(separator: "\n").first.map(String.init) ?? ""
        #expect(ok.code == 0 && Harness.runDirs(d) == [d + "/.baton/runs/" + id], "\(ok.stdout) \(ok.stderr)")
        #expect(Harness.journal(d + "/.baton/runs/" + id, allowTornTail: true).contains { $0["type"] as? String == "stage_started" }, "under way")
        #expect(try Harness.run(["cancel", id], cwd: d).code == 0)
        // A refusal after the first wait: the id was printed, so the run is kept (failed).
        Harness.write(d + "/late.lua", """
            baton.sleep(0.05)
            require("kit.args").parse{options = {count = {number = true}}}
            """)
        let late = try Harness.run(["run", "--detach", "late.lua", "count=x"], cwd: d)
        let lateID = late.stdout.split(separator: "\n").first.map(String.init) ?? ""
        #expect(late.code == 0 && !lateID.isEmpty, "\(late.stdout) \(late.stderr)")
        #expect(Harness.waitFor { Harness.final(d + "/.baton/runs/" + lateID)?["status"] as? String == "failed" }, "the late refusal is a failed run")
    }

    /// Issue 23 item 4: a failure allowFail accepts is not a run-ending FAIL; the cancel
    /// reason says who cancelled.
    @Test func allowedFailuresAndWhoCancelled() throws {
        let d = Harness.tempDir("cli-allowed")
        Harness.write(d + "/r.lua", """
            runStage{id = "flaky", cmd = "echo nope >&2; exit 3", allowFail = true}
            runStage{id = "hard", cmd = "exit 4"}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 1)
        #expect(r.stderr.contains("fail stage flaky failed in") && r.stderr.contains("(allowed failure: allowFail)"), "\(r.stderr)")
        #expect(!r.stderr.contains("FAIL stage flaky") && r.stderr.contains("FAIL stage hard"), "\(r.stderr)")

        Harness.write(d + "/long.lua", "runStage{id = 'sleep', cmd = {'sleep', '60'}}\n")
        let det = try Harness.run(["run", "--detach", "--run-id", "c1", "long.lua"], cwd: d)
        #expect(det.code == 0, "\(det.stderr)")
        let run = d + "/.baton/runs/c1"
        #expect(Harness.waitFor(20) { (Harness.read(run + "/journal.jsonl") ?? "").contains("stage_started") })
        let c = try Harness.run(["cancel", "c1"], cwd: d)
        #expect(c.code == 0, "\(c.stderr)")
        let reason = Harness.final(run)?["reason"] as? String ?? ""
        #expect(reason.contains("interrupted by SIGTERM") && reason.contains("cancelled by `baton cancel` from pid"), "\(reason)")

        let (p, _, err) = try Harness.start(["run", "--run-id", "c2", "long.lua"], cwd: d)
        let errOut = Harness.Output(err)
        let run2 = d + "/.baton/runs/c2"
        #expect(Harness.waitFor(20) { (Harness.read(run2 + "/journal.jsonl") ?? "").contains("stage_started") })
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        let reason2 = Harness.final(run2)?["reason"] as? String ?? ""
        #expect(p.terminationStatus == 143 && reason2.contains("interrupted by SIGTERM from pid \(getpid())"), "\(reason2) \(errOut.all())")
    }

    /// Issue 23 item 5: status counts from the current attempt and says its limit; after a
    /// resume, `log --stage` names the life of each attempt.
    @Test func statusCountsTheCurrentAttemptAndLogNamesLives() throws {
        let d = Harness.tempDir("cli-attempt")
        Harness.write(d + "/r.lua", """
            runStage{id = "slow", timeout = 90, retries = 1, transient = {exit = {75}}, backoff = {initial = 0.01},
                     cmd = "if [ -f second ]; then echo second; sleep 60; else touch second; sleep 3; exit 75; fi"}
            """)
        let det = try Harness.run(["run", "--detach", "--run-id", "a1", "r.lua"], cwd: d)
        #expect(det.code == 0, "\(det.stderr)")
        let run = d + "/.baton/runs/a1"
        #expect(Harness.waitFor(30) { (Harness.read(run + "/journal.jsonl") ?? "").components(separatedBy: "stage_started").count == 3 })
        let j = try Harness.run(["status", "--json", "a1"], cwd: d)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        let forMs = (doc["current"] as? [String: Any])?["for_ms"] as? Int ?? -1
        #expect(forMs >= 0 && forMs < 2500, "counted from attempt 2, not from attempt 1 (3 s before): \(forMs)")
        let st = try Harness.run(["status", "a1"], cwd: d)
        #expect(st.stdout.contains("attempt 2") && st.stdout.contains(" of 1m30s"), "\(st.stdout)")
        #expect(st.stdout.contains("blocked  stage 'slow' running:") && st.stdout.contains(" s of 90"), "\(st.stdout)")
        _ = try Harness.run(["cancel", "a1"], cwd: d)
        Harness.write(d + "/r.lua", "runStage{id = 'slow', cmd = 'echo resumed'}\n")
        let r = try Harness.run(["resume", "a1"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        let log = try Harness.run(["log", "a1", "--stage", "slow"], cwd: d)
        #expect(log.stdout.contains("==> slow attempt 1, original run") && log.stdout.contains("==> slow attempt 2, original run")
                && log.stdout.contains("==> slow attempt 1, resume 1"), "\(log.stdout)")
        let lj = try Harness.run(["log", "a1", "--stage", "slow", "--json"], cwd: d)
        #expect(lj.stdout.contains("\"life\" : 2") || lj.stdout.contains("\"life\": 2"), "\(lj.stdout)")
    }

    @Test func noArgumentsReadsPipedLua() throws {
        let d = Harness.tempDir("cli-pipe")
        let r = try Harness.run([], cwd: d, stdin: "print('piped', 40 + 2)\n")
        #expect(r.code == 0 && r.stdout.contains("piped\t42"), "stdout: \(r.stdout) stderr: \(r.stderr)")
    }

    /// The runner must not load Foundation (cold start): FoundationEssentials only.
    @Test func noFoundationInTheRunner() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/ldd")
        p.arguments = [Harness.binary]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(!text.contains("libFoundation.so") && !text.contains("libFoundationInternationalization"), "ldd: \(text)")
    }

    // MARK: JSON

    /// One vocabulary: the run id is `run` in every command's JSON (as in the journal and
    /// final.json), and errors under --json are `{"error", "exit_code"}` on stdout.
    @Test func oneJSONVocabulary() throws {
        let d = Harness.tempDir("cli-json")
        func object(_ r: Harness.Result) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Any] ?? [:]
        }
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\nreturn {}")
        Harness.write(d + "/slow.lua", "runStage{id = 'w', cmd = 'while [ ! -f go ]; do sleep 0.05; done'}")
        let run = object(try Harness.run(["run", "--json", "--run-id", "j1", "r.lua"], cwd: d))
        #expect(run["run"] as? String == "j1", "final.json: \(run)")
        let det = object(try Harness.run(["run", "--detach", "--json", "--run-id", "j2", "slow.lua"], cwd: d))
        #expect(det["run"] as? String == "j2" && (det["dir"] as? String)?.hasSuffix("/j2") == true, "\(det)")
        Harness.write(d + "/go", "")
        let waited = object(try Harness.run(["wait", "--json", "j2"], cwd: d))
        #expect(waited["run"] as? String == "j2" && waited["exit_code"] as? Int == 0 && waited["state"] as? String == "succeeded", "\(waited)")
        let st = object(try Harness.run(["status", "--json", "j1"], cwd: d))
        #expect(st["run"] as? String == "j1" && st["id"] == nil && st["dir"] as? String != nil)
        #expect(((st["last_event"] as? [String: Any])?["ts"] as? String)?.hasSuffix("Z") == true)
        let list = (try? JSONSerialization.jsonObject(with: Data(try Harness.run(["runs", "--json"], cwd: d).stdout.utf8))) as? [[String: Any]]
        #expect(Set(list?.compactMap { $0["run"] as? String } ?? []) == ["j1", "j2"])
        let cancelled = object(try Harness.run(["cancel", "--json", "j1"], cwd: d))
        #expect(cancelled["run"] as? String == "j1")
        let pruned = object(try Harness.run(["prune", "--keep", "1", "--json"], cwd: d))
        #expect((pruned["pruned"] as? [[String: Any]])?.first?["run"] as? String == "j1", "\(pruned)")
        let stage = (try? JSONSerialization.jsonObject(with: Data(try Harness.run(["log", "--stage", "w", "--json"], cwd: d).stdout.utf8))) as? [[String: Any]]
        #expect(stage?.first?["id"] as? String == "w")

        // Errors: an object on stdout, the exit code in it and as the process's.
        for args in [["status", "--json", "nosuch"], ["log", "--json", "--stage", "nosuch"], ["run", "--json", "missing.lua"],
                     ["status", "--json", "--bogus"], ["frobnicate", "--json"], ["prune", "--json"], ["resume", "--json", "nosuch"]] {
            let r = try Harness.run(args, cwd: d)
            let e = object(r)
            #expect(r.code == 3 && e["exit_code"] as? Int == 3 && (e["error"] as? String)?.isEmpty == false,
                    "\(args): \(r.stdout) \(r.stderr)")
        }
    }

    // MARK: completion

    /// Sources the generated bash script, sets COMP_WORDS/COMP_CWORD for `words` (the last
    /// one is being completed) and returns COMPREPLY, and how long the completion took.
    static func complete(
        _ script: String, _ words: [String], cwd: String, trace: String? = nil
    ) throws -> (reply: [String], seconds: Double) {
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let line = words.joined(separator: " ")
        let program = """
            source \(q(script))
            COMP_WORDS=(\(words.map(q).joined(separator: " "))); COMP_CWORD=\(words.count - 1)
            COMP_LINE=\(q(line)); COMP_POINT=${#COMP_LINE}
            s=$(date +%s%N)
            _baton baton \(q(words.last!)) \(q(words.count > 1 ? words[words.count - 2] : ""))
            e=$(date +%s%N)
            echo "ns=$((e - s))"
            printf '%s\\n' "${COMPREPLY[@]}"
            """
        let p = Process()
        if let trace {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/strace")
            p.arguments = ["-f", "-qq", "-e", "trace=open,openat,openat2", "-o", trace, "/bin/bash", "-c", program]
        } else {
            p.executableURL = URL(fileURLWithPath: "/bin/bash")
            p.arguments = ["-c", program]
        }
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        var env = Harness.environment([:])
        env["PATH"] = URL(fileURLWithPath: Harness.binary).deletingLastPathComponent().path + ":" + (env["PATH"] ?? "")
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let ns = Double(lines.first?.dropFirst(3) ?? "") ?? .infinity
        lines.removeFirst()
        return (lines.filter { !$0.isEmpty }, ns / 1e9)
    }

    static func bashScript(_ d: String) throws -> String {
        let r = try Harness.run(["--generate-completion-script", "bash"], cwd: d)
        #expect(r.code == 0 && r.stdout.contains("complete"))
        Harness.write(d + "/baton.bash", r.stdout)
        return d + "/baton.bash"
    }

    @Test func bashCompletesCommandsOptionsRecipesAndRunIDs() throws {
        let d = Harness.tempDir("cli-comp")
        let script = try Self.bashScript(d)
        for shell in ["zsh", "fish"] {
            let r = try Harness.run(["--generate-completion-script", shell], cwd: d)
            #expect(r.code == 0 && r.stdout.contains("baton"))
        }
        Harness.write(d + "/build.lua", "return {}")
        Harness.write(d + "/notes.txt", "")
        #expect(try Harness.run(["run", "--run-id", "nightly-1", "build.lua"], cwd: d).code == 0)
        #expect(try Harness.run(["--runs-dir", "other", "run", "--run-id", "elsewhere-1", "build.lua"], cwd: d).code == 0)

        #expect(try Self.complete(script, ["baton", "st"], cwd: d).reply == ["status"])
        let commands = try Self.complete(script, ["baton", ""], cwd: d).reply
        #expect(["run", "runs", "status", "log", "cancel", "resume", "check", "help"].allSatisfy(commands.contains), "\(commands)")
        #expect(Set(try Self.complete(script, ["baton", "run", "--d"], cwd: d).reply) == ["--dry-run", "--detach"])
        let recipes = try Self.complete(script, ["baton", "run", ""], cwd: d).reply
        #expect(recipes.contains("build.lua") && !recipes.contains("notes.txt"), "\(recipes)")
        #expect(try Self.complete(script, ["baton", "check", "bu"], cwd: d).reply == ["build.lua"])
        #expect(try Self.complete(script, ["baton", "status", "ni"], cwd: d).reply == ["nightly-1"])
        #expect(try Self.complete(script, ["baton", "log", "--follow", ""], cwd: d).reply.contains("latest"))
        #expect(try Self.complete(script, ["baton", "--runs-dir", "other", "cancel", "e"], cwd: d).reply == ["elsewhere-1"])
        #expect(try Self.complete(script, ["baton", "resume", "--runs-dir", "other", "e"], cwd: d).reply == ["elsewhere-1"])
        #expect(Set(try Self.complete(script, ["baton", "run", "--sync", ""], cwd: d).reply) == ["batched", "always"])
    }

    /// A Tab on a RUN with 1,000 runs in the directory answers within 50 ms.
    /// Tab on a RUN reads the runs directory's entries only: no journal is opened, and the files the
    /// completion opens do not grow with the number of runs. (Its time, ~11 ms with 1,000 runs, is a
    /// figure in docs/performance.md, not a timed test: the machines are shared.)
    @Test func runIDCompletionReadsOnlyTheDirectoryWithAThousandRuns() throws {
        let d = Harness.tempDir("cli-comp-1000")
        let script = try Self.bashScript(d)
        let root = d + "/.baton/runs"
        func opened(_ runs: Int) throws -> [String] {
            for i in 0..<runs {
                let dir = root + String(format: "/20261123-%06d-%04x", i, i)
                let line = "{\"seq\":1,\"ts\":\"2026-11-23T10:00:00Z\",\"type\":\"run_started\"}\n"
                if !FileManager.default.fileExists(atPath: dir) { Harness.write(dir + "/journal.jsonl", line) }
            }
            let trace = d + "/trace-\(runs)"
            let r = try Self.complete(script, ["baton", "status", "2026"], cwd: d, trace: trace)
            #expect(r.reply.count == runs)
            let text = (try? String(contentsOfFile: trace, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").map(String.init).filter { $0.contains("open") && $0.contains(root) }
        }
        let ten = try opened(10)
        let thousand = try opened(1000)
        #expect(!ten.isEmpty, "strace saw the completion open nothing under the runs directory: is it traced?")
        #expect(thousand.allSatisfy { !$0.contains("journal.jsonl") }, "\(thousand.prefix(5))")
        #expect(thousand.count == ten.count, "opens under the runs directory: 10 runs \(ten.count), 1000 runs \(thousand.count)")
    }
}
