import Foundation
import Testing

/// Issue 21, GAP-09: fail closed in the layout a user has (runs under ./.baton of the work
/// tree), with commits, kills and resumes, a verifier that edits, configuration checked
/// before any agent runs, cancels, and the seed's step report.
extension RecipeGap09Tests {
    /// Every entry under `root` (files, directories, symlinks) but the excluded top-level
    /// names: "type mode content" by relative path. Two equal manifests are the same tree:
    /// same files, bytes, modes, no new files or directories.
    static func manifest(_ root: String, excluding: Set<String> = [".git", ".baton"]) -> [String: String] {
        var out: [String: String] = [:]
        let fm = FileManager.default
        func walk(_ rel: String) {
            let path = rel.isEmpty ? root : root + "/" + rel
            guard let names = try? fm.contentsOfDirectory(atPath: path) else { return }
            for n in names.sorted() {
                if rel.isEmpty && excluding.contains(n) { continue }
                let r = rel.isEmpty ? n : rel + "/" + n
                let full = root + "/" + r
                var st = stat()
                guard lstat(full, &st) == 0 else { continue }
                let mode = String(st.st_mode & 0o7777, radix: 8)
                switch st.st_mode & S_IFMT {
                case S_IFDIR: out[r] = "d \(mode)"; walk(r)
                case S_IFLNK: out[r] = "l " + ((try? fm.destinationOfSymbolicLink(atPath: full)) ?? "?")
                default: out[r] = "f \(mode) " + ((fm.contents(atPath: full)).map { $0.base64EncodedString() } ?? "?")
                }
            }
        }
        walk("")
        return out
    }

    static func gitOut(_ dir: String, _ args: String) -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "git -c user.email=t@t -c user.name=t " + args]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try? p.run()
        let d = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A repository as a user has it: committed files (one executable, one in a folder),
    /// .baton/ ignored, `baton init` run at its root.
    static func userRepo(_ name: String) throws -> String {
        let d = Harness.tempDir(name)
        Harness.write(d + "/keep.txt", "orig\n")
        Harness.write(d + "/gone.txt", "still here\n")
        Harness.write(d + "/run.sh", "#!/bin/sh\necho hi\n", mode: 0o755)
        Harness.write(d + "/src/a.py", "x = 1\n")
        Harness.write(d + "/.gitignore", ".baton/\n")
        let i = try Harness.run(["init"], cwd: d)
        #expect(i.code == 0, "init: \(i.stderr)")
        git(d, "init -q && git -c user.email=t@t -c user.name=t add -A && git -c user.email=t@t -c user.name=t commit -qm init")
        return d
    }

    /// The agent's state lives outside the work tree.
    static func agentState() -> String { Harness.tempDir("gap09-agent-state") }

    static func calls(_ state: String) -> [String] {
        (Harness.read(state + "/agent.log") ?? "").split(separator: "\n").map { String($0.split(separator: " ")[0]) }
    }

    // MARK: 1. revert in the default layout

    @Test func exhaustedVerificationRevertsInTheDefaultLayout() throws {
        for runsDir in [nil, "ci-runs"] {
            let d = try Self.userRepo("gap09-layout")
            let st = Self.agentState()
            let before = Self.manifest(d, excluding: [".git", ".baton", "ci-runs"])
            // The agent modifies, creates (in a new folder), deletes, changes a mode and makes an empty folder.
            let agent = "rm -f gone.txt; chmod 600 run.sh; mkdir -p empty/inner; gap09-agent.sh"
            var args = ["run"]
            if let r = runsDir { args += ["--runs-dir", d + "/" + r] }
            args += [Self.recipe, "Fix typo", "timeout=5", "agent=" + agent, "preflight=true"]
            let r = try Harness.run(args, cwd: d, env: ["AGENT_STATE": st, "AGENT_EDITS": "keep.txt new/n.txt", "AGENT_REJECT": "2",
                                                          "GAP09_AGENT": ""], timeout: 60)
            #expect(r.code == 2, "stderr: \(r.stderr)")
            let after = Self.manifest(d, excluding: [".git", ".baton", "ci-runs"])
            let diff = "\(Set(after.keys).symmetricDifference(before.keys)) \(after.filter { before[$0.key] != $0.value }.keys)"
            #expect(after == before, "runs dir \(runsDir ?? ".baton/runs"): the tree differs: \(diff)")
            #expect(r.stdout.contains("REVERTED: the work tree is back as it was before execution: 2 files restored, "
                                      + "1 created file removed, 1 deleted file brought back, 3 created directories removed"),
                    "stdout: \(r.stdout)")
            #expect(r.stdout.contains("  restored: keep.txt, run.sh"), "stdout: \(r.stdout)")
            #expect(r.stdout.contains("  brought back (deleted by the pipeline): gone.txt"))
            // The run's own records are untouched and the snapshot holds no copy of them.
            let root = runsDir.map { d + "/" + $0 } ?? d + "/.baton/runs"
            let ids = try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }
            let run = root + "/" + (try #require(ids.first))
            #expect(ids.count == 1)
            let logs = (try? FileManager.default.subpathsOfDirectory(atPath: run + "/stages")) ?? []
            #expect(logs.filter { $0.hasSuffix(".out") }.count == 4, "stage logs kept: \(logs)")
            _ = Harness.journal(run)
            let f = try #require(Harness.final(run))
            let rev = try #require((f["result"] as? [String: Any])?["reverted"] as? [String: Any])
            #expect(rev["modified"] as? [String] == ["keep.txt", "run.sh"] && rev["added"] as? [String] == ["new/n.txt"]
                    && rev["deleted"] as? [String] == ["gone.txt"], "\(rev)")
            let snap = try FileManager.default.subpathsOfDirectory(atPath: run + "/gap09-snapshot")
            #expect(snap.contains("tree/keep.txt") && !snap.contains { $0.hasPrefix("tree/.baton/runs") || $0.contains("ci-runs")
                || $0 == "tree/.git" || $0.hasPrefix("tree/.git/") }, "\(snap)")
        }
    }

    // MARK: 2. commits are undone and kept on a branch

    @Test func revertUndoesTheAgentsCommitsAndKeepsThemOnABranch() throws {
        let d = try Self.userRepo("gap09-commits")
        let st = Self.agentState()
        let head = Self.gitOut(d, "rev-parse HEAD")
        let before = Self.manifest(d)
        let r = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=gap09-agent.sh", "preflight=true"], cwd: d,
                                env: ["AGENT_STATE": st, "AGENT_EDITS": "keep.txt src/b.py", "AGENT_REJECT": "2", "AGENT_COMMIT": "1",
                                      "GAP09_AGENT": ""], timeout: 60)
        #expect(r.code == 2, "stderr: \(r.stderr)")
        #expect(Self.gitOut(d, "rev-parse HEAD") == head, "HEAD is back at the commit before execution")
        #expect(Self.manifest(d) == before)
        #expect(Self.gitOut(d, "status --porcelain") == "", "index and tree as before")
        let id = URL(fileURLWithPath: try #require(Harness.latestRun(d))).lastPathComponent
        let kept = Self.gitOut(d, "log --format=%s baton/rejected/\(id)")
        #expect(kept.hasPrefix("agent change 2\nagent change 1\ninit"), "the agent's commits are kept: \(kept)")
        #expect(r.stdout.contains("2 commits undone: HEAD back at \(head.prefix(12)); kept on branch baton/rejected/\(id)"),
                "stdout: \(r.stdout)")
        // The step report counts what a stage committed as changed by it.
        #expect(r.stdout.contains("  changed files: keep.txt, src/b.py"), "stdout: \(r.stdout)")
    }

    // MARK: 3. resume keeps fail-closed

    @Test func resumeAfterKillVerifiesAChangedTreeAgain() throws {
        let d = try Self.userRepo("gap09-resume")
        let st = Self.agentState()
        let before = Self.manifest(d)
        let env = ["AGENT_STATE": st, "AGENT_REJECT_IF": "broken.py", "GAP09_AGENT": ""]
        var e1 = env
        e1["AGENT_SLEEP_STAGE"] = "ship"
        let (p, _, _) = try Harness.start(["run", Self.recipe, "Fix typo", "timeout=60", "agent=gap09-agent.sh", "preflight=true"],
                                          cwd: d, env: e1)
        #expect(Harness.waitFor(30) { Self.calls(st).last == "ship" }, "ship started: \(Self.calls(st))")
        let run = try #require(Harness.latestRun(d))
        let id = URL(fileURLWithPath: run).lastPathComponent
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: "BATON_RUN_ID=\(id)").isEmpty }, "the agent outlived the runner")
        #expect(Self.calls(st) == ["execution", "verification", "ship"])
        // The tree changes while the run is dead.
        Harness.write(d + "/broken.py", "syntax error(\n")
        let r = try Harness.run(["resume"], cwd: d, env: env, timeout: 60)
        #expect(Self.calls(st) == ["execution", "verification", "ship", "verification", "execution", "verification"],
                "verification runs again on the changed tree: \(Self.calls(st))")
        #expect(r.code == 2, "the verifier's verdict, not the replayed approval: stderr: \(r.stderr)")
        #expect(r.stdout.contains("broken.py is broken"), "stdout: \(r.stdout)")
        // The verification's declared inputs say why it ran again (issue 25).
        let why = try Harness.run(["log", "--why", "verification"], cwd: d)
        #expect(why.stdout.contains("runs: inputs changed: broken.py added"), "\(why.stdout)")
        // The snapshot of the first run is reused: the tree is back as it was before the first execution.
        #expect(Self.manifest(d) == before, "reverted to the first snapshot: \(Self.manifest(d).keys.sorted())")
        let logs = Harness.events(Harness.journal(run), type: "log").compactMap { $0["message"] as? String }
        #expect(logs.filter { $0.hasPrefix("work tree snapshot before execution") }.count == 1, "\(logs)")
        #expect(logs.contains { $0.hasPrefix("work tree snapshot reused") }, "\(logs)")
        // Resumed again with the tree as verified (nothing changed since): the approval may replay.
    }

    @Test func resumeReplaysAnApprovalOnlyForTheVerifiedTree() throws {
        let d = try Self.userRepo("gap09-resume-same")
        let st = Self.agentState()
        var e1 = ["AGENT_STATE": st, "GAP09_AGENT": "", "AGENT_SLEEP_STAGE": "ship"]
        let (p, _, _) = try Harness.start(["run", Self.recipe, "Fix typo", "timeout=60", "agent=gap09-agent.sh", "preflight=true"],
                                          cwd: d, env: e1)
        #expect(Harness.waitFor(30) { Self.calls(st).last == "ship" })
        let run = try #require(Harness.latestRun(d))
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.waitFor(10) { Harness.processes(withEnv: "BATON_RUN_ID=\(URL(fileURLWithPath: run).lastPathComponent)").isEmpty })
        e1["AGENT_SLEEP_STAGE"] = nil
        let r = try Harness.run(["resume"], cwd: d, env: e1, timeout: 60)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Self.calls(st) == ["execution", "verification", "ship", "ship"], "the unchanged tree's approval replays: \(Self.calls(st))")
    }

    @Test func resumeOfARevertedRunDoesTheWorkAgain() throws {
        // The revert undid execution's work: a resume must not replay that execution's pass
        // and have the verifier look at the tree without it.
        let d = try Self.userRepo("gap09-resume-reverted")
        let st = Self.agentState()
        let first = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=gap09-agent.sh", "preflight=true"], cwd: d,
                                    env: ["AGENT_STATE": st, "AGENT_REJECT": "2", "GAP09_AGENT": ""], timeout: 60)
        #expect(first.code == 2 && !FileManager.default.fileExists(atPath: d + "/work.txt"), "stderr: \(first.stderr)")
        let r = try Harness.run(["resume"], cwd: d, env: ["AGENT_STATE": st, "GAP09_AGENT": ""], timeout: 60)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Self.calls(st) == ["execution", "verification", "execution", "verification", "execution", "verification", "ship"],
                "\(Self.calls(st))")
        #expect(Harness.read(d + "/work.txt") == "change 3\n", "the work is done again")
    }

    // MARK: 4. the verifier must not change the code

    @Test func aVerifierThatChangesFilesIsARejection() throws {
        let d = try Self.userRepo("gap09-verifier-edits")
        let st = Self.agentState()
        let r = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=gap09-agent.sh", "preflight=true"], cwd: d,
                                env: ["AGENT_STATE": st, "AGENT_EDITS": "src/a.py", "AGENT_VERIFY_EDITS": "src/a.py keep.txt", "GAP09_AGENT": ""],
                                timeout: 60)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(Self.calls(st) == ["execution", "verification", "execution", "verification", "ship"], "\(Self.calls(st))")
        #expect(r.stdout.contains("verification changed files: keep.txt, src/a.py"), "stdout: \(r.stdout)")
        #expect(r.stdout.contains("STAGE 4 VERIFICATION: FAIL (iteration 1/2)"), "an approval that edited is a rejection")
        #expect(Harness.read(d + "/src/a.py") == "x = 1\nchange 1\nchange 2\n", "the verifier's edit was reverted before the rework")
        #expect(Harness.read(d + "/keep.txt") == "orig\n")
        #expect(Harness.read(st + "/prompts/execution.2.txt")?.contains("verification changed files: keep.txt, src/a.py") == true)
        // What git ignores is not the code: a verifier's test run may write its caches.
        let c = try Self.userRepo("gap09-verifier-caches")
        let cst = Self.agentState()
        Harness.write(c + "/.gitignore", ".baton/\n__pycache__/\n")
        Self.git(c, "commit -qam ignore")
        Harness.write(c + "/__pycache__/a.pyc", "cache\n")
        let cache = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=gap09-agent.sh", "preflight=true"], cwd: c,
                                    env: ["AGENT_STATE": cst, "AGENT_VERIFY_EDITS": "__pycache__/a.pyc", "GAP09_AGENT": ""], timeout: 60)
        #expect(cache.code == 0 && Self.calls(cst) == ["execution", "verification", "ship"], "stdout: \(cache.stdout)")
    }

    // MARK: 5. configuration checked before any agent runs

    @Test func configurationIsCheckedBeforeAnyAgentRuns() throws {
        let d = try Self.userRepo("gap09-config")
        let st = Self.agentState()
        let before = Self.manifest(d)
        let cat = Self.agentState()
        Harness.write(cat + "/models.json", #"["gpt-5.3-codex", "swe-1-5", "claude-opus-4-5"]"#)
        Harness.write(cat + "/models.yaml", "gap09-agent.sh: [swe-1-5]\nother-agent: [gpt-5.3-codex]\n")
        func run(_ words: [String]) throws -> Harness.Result {
            try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "preflight=true"] + words, cwd: d,
                            env: ["AGENT_STATE": st, "GAP09_AGENT": "gap09-agent.sh"], timeout: 60)
        }
        let typo = try run(["catalog=" + cat + "/models.json", "model_verification=gpt-5.3-codx"])
        #expect(typo.code == 3, "stderr: \(typo.stderr)")
        #expect(typo.stderr.contains("model 'gpt-5.3-codx' (stage verification) is not in the catalog"), "stderr: \(typo.stderr)")
        #expect(typo.stderr.contains("available: claude-opus-4-5, gpt-5.3-codex, swe-1-5") && typo.stderr.contains("closest: gpt-5.3-codex"))
        // Per agent: the model must be in that agent's list.
        let other = try run(["catalog=" + cat + "/models.yaml", "model=gpt-5.3-codex"])
        #expect(other.code == 3 && other.stderr.contains("available: swe-1-5") && other.stderr.contains("closest: swe-1-5"),
                "stderr: \(other.stderr)")
        let fine = try run(["catalog=" + cat + "/models.yaml", "model=swe-1-5", "ship=never"])
        #expect(fine.code == 0, "stderr: \(fine.stderr)")
        #expect(Self.calls(st) == ["execution", "verification"], "only the good run called the agent: \(Self.calls(st))")
        Self.git(d, "checkout -q -- . && git clean -qfd")
        // The catalog key of gap09.yaml (inline, or a file).
        Harness.write(d + "/gap09.yaml", "catalog: [swe-1-5]\nmodel: swe-1-6\n")
        let key = try run([])
        #expect(key.code == 3 && key.stderr.contains("closest: swe-1-5"), "stderr: \(key.stderr)")
        try FileManager.default.removeItem(atPath: d + "/gap09.yaml")
        // A malformed preflight=, an agent that is not there, an unknown option: exit 3, before any stage.
        for (words, says) in [(["preflight=ruff check . &&"], "preflight"), (["preflight=;"], "preflight"),
                              (["preflight=echo 'unterminated"], "preflight"),
                              (["agent=env X=1 no-such-agent-cli"], "no-such-agent-cli"), (["--rsik", "high"], "did you mean '--risk'"),
                              (["catalog=" + cat + "/nope.json"], "nope.json")] {
            let b = try run(words)
            #expect(b.code == 3 && b.stderr.contains(says), "\(words): stderr: \(b.stderr)")
            #expect(!b.stderr.contains("traceback") && !b.stderr.contains("stack"), "\(words): \(b.stderr)")
        }
        #expect(Self.calls(st) == ["execution", "verification"], "no agent ran: \(Self.calls(st))")
        #expect(Self.manifest(d) == before, "tree untouched")
    }

    // MARK: 6. a crashed rework reverts; a cancelled run still has its PipelineResult

    @Test func aReworkThatCrashesAfterARejectionReverts() throws {
        let d = try Self.userRepo("gap09-rework-crash")
        let st = Self.agentState()
        let before = Self.manifest(d)
        let r = try Harness.run(["run", Self.recipe, "Fix typo", "timeout=5", "agent=gap09-agent.sh", "preflight=true"], cwd: d,
                                env: ["AGENT_STATE": st, "AGENT_EDITS": "keep.txt new/n.txt", "AGENT_REJECT": "1", "AGENT_FAIL_REWORK": "1",
                                      "GAP09_AGENT": ""], timeout: 60)
        #expect(r.code == 1, "stderr: \(r.stderr)")
        #expect(Self.calls(st) == ["execution", "verification", "execution"])
        #expect(Self.manifest(d) == before, "the rejected work is reverted")
        #expect(r.stdout.contains("REVERTED: the work tree is back as it was before execution: 1 file restored, 1 created file removed"),
                "stdout: \(r.stdout)")
    }

    @Test func aCancelledRunEndsWithACancelledPipelineResult() throws {
        for how in ["SIGINT", "SIGTERM", "cancel"] {
            let d = try Self.userRepo("gap09-cancel")
            let st = Self.agentState()
            let (p, out, _) = try Harness.start(["run", Self.recipe, "Fix typo", "timeout=60", "agent=gap09-agent.sh", "preflight=true",
                                                 "--json"], cwd: d, env: ["AGENT_STATE": st, "AGENT_SLEEP_STAGE": "verification", "GAP09_AGENT": ""])
            let stdout = Harness.Output(out)
            #expect(Harness.waitFor(30) { Self.calls(st).last == "verification" }, "\(how): verification started")
            switch how {
            case "SIGINT": kill(p.processIdentifier, SIGINT)
            case "SIGTERM": kill(p.processIdentifier, SIGTERM)
            default: _ = try Harness.run(["cancel"], cwd: d)
            }
            #expect(Harness.waitFor(30) { !p.isRunning }, "\(how): the run ended")
            p.waitUntilExit()
            let run = try #require(Harness.latestRun(d))
            let f = try #require(Harness.final(run))
            #expect(f["status"] as? String == "cancelled", "\(how): \(f)")
            let res = try #require(f["result"] as? [String: Any], "\(how): no result in final.json")
            #expect(res["status"] as? String == "cancelled" && res["version"] as? String == "1.0.0", "\(how): \(res)")
            let stages = res["stages"] as? [[String: Any]] ?? []
            #expect(stages.map { $0["stage"] as? String } == ["discovery", "planning", "execution", "verification"], "\(how): \(stages)")
            #expect(stages.last?["status"] as? String == "cancelled")
            let doc = try #require(Self.json(stdout.all()), "\(how): stdout is the PipelineResult: \(stdout.text)")
            #expect(doc["status"] as? String == "cancelled", "\(how)")
        }
    }

    // MARK: 7. the seed's step report

    @Test func stepReportHasTheSeedsStatusAndNextLines() throws {
        let x = try gap09(["Fix typo"], env: ["AGENT_REJECT": "1"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let out = x.r.stdout
        #expect(out.contains("STEP 3 STATUS: PASS") && out.contains("STEP 4 STATUS: FAIL") && out.contains("STEP 4 STATUS: PASS")
                && out.contains("STEP 5 STATUS: PASS"), "stdout: \(out)")
        #expect(out.contains("  Next:\n  - Proceed to Step 4 (pre-verify, verification)"), "stdout: \(out)")
        #expect(out.contains("  Next:\n  - Back to Step 3 (rework the verifier's issues, iteration 2/2)"), "stdout: \(out)")
        #expect(out.contains("  Next:\n  - Proceed to Step 5 (ship)"))
        #expect(out.contains("  Next:\n  - Done"))
        let stop = try gap09(["Fix typo"], env: ["AGENT_REJECT": "2"])
        #expect(stop.r.stdout.contains("  Next:\n  - STOP (verification rejected 2/2: the work tree is reverted; escalate to a human)"),
                "stdout: \(stop.r.stdout)")
        // `stage verification` has one iteration: the count says so.
        let one = try gap09(["stage", "verification", "Fix typo"])
        #expect(one.r.code == 0 && one.r.stdout.contains("re-verify count: 1/1") && one.r.stdout.contains("(iteration 1/1)"),
                "stdout: \(one.r.stdout)")
        #expect(!one.r.stdout.contains("/2"))
    }
}
