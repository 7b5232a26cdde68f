import Foundation
import Testing

/// recipes/wo_rebuild.lua end to end: work orders applied once with their modes, refusal of
/// escaping paths and malformed files, the canary, the guardrail, history and forensics
/// (on a repository made by Tests/Fixtures/wo-git-history.sh).
@Suite struct RecipeWORebuildTests {
    static let recipe = Harness.packageRoot.appendingPathComponent("recipes/wo_rebuild.lua").path

    struct Run {
        var r: Harness.Result
        var runDir: String
        var final: [String: Any]
        var result: [String: Any] { final["result"] as? [String: Any] ?? [:] }
    }

    func wo(_ d: String, _ words: [String], dry: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) throws -> Run {
        let before = Set(Harness.runDirs(d))
        let r = try Harness.run(["run"] + (dry ? ["--dry-run"] : []) + [Self.recipe] + words, cwd: d, timeout: 60)
        let run = try #require(Harness.runDirs(d).first { !before.contains($0) }, sourceLocation: sourceLocation)
        _ = Harness.journal(run, sourceLocation: sourceLocation)
        let f = try #require(Harness.final(run), "stderr: \(r.stderr)", sourceLocation: sourceLocation)
        return Run(r: r, runDir: run, final: f)
    }

    static func telemetry(_ base: String) -> [[String: Any]] {
        (Harness.read(base + "/g/telemetry/unified.jsonl") ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    static func events(_ base: String, _ event: String) -> [[String: Any]] { telemetry(base).filter { $0["event"] as? String == event } }

    static func mode(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int
    }

    static let rebuildWO = """
        wo_id: WO-20251113-WO-PIPELINE-REBUILD
        title: "WO Pipeline Complete Rebuild with Durability"
        priority: P0
        type: apply_patch
        files:
          - path: agents/apply_patch_processor/apply_patch_processor.zsh
            mode: "0755"
            content: |
              #!/bin/sh
              echo apply_patch_processor ok
          - path: agents/json_wo_processor/json_wo_processor.zsh
            mode: 0755
            content: "#!/bin/sh\\n"
          - path: agents/wo_executor/wo_executor.zsh
            mode: "0755"
            content: "#!/bin/sh\\n"
          - path: tools/followup_tracker_update.zsh
            mode: "0755"
            content: "#!/bin/sh\\n"
          - path: ./docs/../docs/README.md
            content: "plain file\\n"
        tests:
          - name: "processor runs"
            command: "agents/apply_patch_processor/apply_patch_processor.zsh"
            expected: "apply_patch_processor ok"
        """

    // MARK: modules and usage

    @Test func workOrderModule() throws {
        let d = Harness.tempDir("wo-mod")
        Harness.write(d + "/r.lua", """
            local w = require("wo.workorder")
            assert(w.mode("0755") == 493 and w.mode(755) == 493 and w.mode(493) == 493 and w.mode(nil) == 420)
            assert(w.mode("0o644") == 420 and w.mode("rwx") == nil and w.mode("0999") == nil)
            assert(w.normalize("a/./b/../c") == "a/c")
            assert(w.normalize("../x") == nil and w.normalize("a/../../x") == nil and w.normalize("/etc/passwd") == nil)
            assert(w.normalize(".") == nil and w.normalize("") == nil)
            local p = require("wo.pipeline")
            local wo = baton.yaml.decode(p.canary("WO-CANARY-X"))
            assert(wo.wo_id == "WO-CANARY-X" and wo.files[1].path == "tmp/canary_test.txt")
            local git = require("wo.git")
            assert(git.likelyCause({deletions = {}, destructive = {}}, {}):find("unknown"))
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
    }

    @Test func helpAndBadOptions() throws {
        let d = Harness.tempDir("wo-usage")
        let h = try Harness.run(["run", Self.recipe, "help"], cwd: d)
        #expect(h.code == 0 && h.stdout.contains("phase=") && h.stdout.contains("guardrail"))
        #expect(try wo(d, ["base=."]).r.code == 3)
        #expect(try wo(d, ["base=.", "phase=everything"]).r.code == 3)
        let nob = try wo(d, ["base=nowhere", "phase=rebuild"])
        #expect(nob.r.code == 3 && nob.r.stderr.contains("not a directory"))
        #expect(try wo(d, ["base=.", "phase=history"]).r.stderr.contains("component="))
    }

    // MARK: rebuild

    @Test func rebuildAppliesOnceWithModesStateAndTelemetry() throws {
        let d = Harness.tempDir("wo-rebuild")
        let base = d + "/base"
        Harness.write(base + "/bridge/inbox/CLC/WO-20251113-WO-PIPELINE-REBUILD.yaml", Self.rebuildWO)
        let x = try wo(d, ["base=base", "phase=rebuild"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let proc = base + "/agents/apply_patch_processor/apply_patch_processor.zsh"
        #expect(Harness.read(proc) == "#!/bin/sh\necho apply_patch_processor ok\n")
        #expect(Self.mode(proc) == 0o755)
        #expect(Self.mode(base + "/agents/json_wo_processor/json_wo_processor.zsh") == 0o755, "an unquoted 0755 is octal too")
        #expect(Self.mode(base + "/docs/README.md") == 0o644)
        let state = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath:
            base + "/g/followup/state/WO-20251113-WO-PIPELINE-REBUILD.json"))) as? [String: Any])
        #expect(state["status"] as? String == "completed" && (state["files"] as? [Any])?.count == 5)
        #expect(Self.events(base, "wo_started").count == 1 && Self.events(base, "wo_completed").count == 1)
        #expect(Self.events(base, "wo_completed").first?["wo_id"] as? String == "WO-20251113-WO-PIPELINE-REBUILD")

        // A completed work order is never applied twice.
        Harness.write(proc, "#!/bin/sh\necho changed by hand\n", mode: 0o755)
        let y = try wo(d, ["base=base", "phase=rebuild"])
        #expect(y.r.code == 0, "stderr: \(y.r.stderr)")
        #expect(Harness.read(proc) == "#!/bin/sh\necho changed by hand\n")
        #expect(Self.events(base, "wo_started").count == 1, "no second wo_started")
        #expect(y.r.stdout.contains("WO WO-20251113-WO-PIPELINE-REBUILD: SKIPPED"))
        #expect(((y.result["rebuild"] as? [String: Any])?["skipped"] as? [String]) == ["WO-20251113-WO-PIPELINE-REBUILD"])
    }

    @Test func escapingPathsAndMalformedFilesFailOnlyTheirWorkOrder() throws {
        let d = Harness.tempDir("wo-refuse")
        let base = d + "/base"
        let inbox = base + "/bridge/inbox/CLC"
        Harness.write(inbox + "/1-escape.yaml", "wo_id: WO-ESCAPE\nfiles:\n  - path: ../../outside.txt\n    content: nope\n")
        Harness.write(inbox + "/2-absolute.yaml", "wo_id: WO-ABS\nfiles:\n  - path: \(d)/abs.txt\n    content: nope\n")
        try FileManager.default.createSymbolicLink(atPath: base + "/link", withDestinationPath: d)
        Harness.write(inbox + "/3-symlink.yaml", "wo_id: WO-LINK\nfiles:\n  - path: ok-first.txt\n    content: a\n  - path: link/via-link.txt\n    content: nope\n")
        Harness.write(inbox + "/4-bad.yaml", "wo_id: [unclosed\nfiles: {\n")
        Harness.write(inbox + "/5-nofiles.yaml", "wo_id: WO-EMPTY\ntitle: nothing\n")
        Harness.write(inbox + "/6-good.yaml", "wo_id: WO-GOOD\nfiles:\n  - path: good/ok.txt\n    content: fine\n")
        Harness.write(inbox + "/7-test-fails.yaml", "wo_id: WO-TESTFAIL\nfiles:\n  - path: t.txt\n    content: x\ntests:\n  - name: check\n    command: echo bad\n    expected: good\n")
        let x = try wo(d, ["base=base", "phase=rebuild"])
        #expect(x.r.code == 1, "stderr: \(x.r.stderr)")
        #expect(!x.r.stderr.contains("traceback"))
        for f in ["/outside.txt", "/abs.txt", "/via-link.txt"] { #expect(!FileManager.default.fileExists(atPath: d + f), "\(f) written outside base") }
        #expect(!FileManager.default.fileExists(atPath: base + "/ok-first.txt"), "a refused work order writes none of its files")
        #expect(Harness.read(base + "/good/ok.txt") == "fine", "the others go on")
        let failed = Dictionary(Self.events(base, "wo_failed").map { ($0["wo_id"] as? String ?? "", $0["reason"] as? String ?? "") },
                                uniquingKeysWith: { a, _ in a })
        #expect(failed["WO-ESCAPE"]?.contains("1-escape.yaml: field 'files[1].path' refused: path ../../outside.txt leaves base") == true, "\(failed)")
        #expect(failed["WO-ABS"]?.contains("is absolute") == true)
        #expect(failed["WO-LINK"]?.contains("outside base") == true)
        let bad = try #require(failed["4-bad"], "a malformed file fails under its file name: \(failed)")
        #expect(bad.contains("4-bad.yaml: invalid YAML:") && bad.contains("2:"), "file and parser message with its position: \(bad)")
        #expect(failed["WO-EMPTY"]?.contains("field 'files'") == true)
        #expect(failed["WO-TESTFAIL"]?.contains("test 'check' failed: expected \"good\", got \"bad\"") == true)
        #expect(Self.events(base, "wo_completed").map { $0["wo_id"] as? String } == ["WO-GOOD"])
        let st = Harness.read(base + "/g/followup/state/4-bad.json") ?? ""
        #expect(st.contains("\"failed\""))
        #expect(x.final["exit_code"] as? Int == 1)
        #expect((x.final["reason"] as? String)?.contains("work order WO-ESCAPE failed") == true)
    }

    @Test func dryRunWritesNothing() throws {
        let d = Harness.tempDir("wo-dry")
        let base = d + "/base"
        Harness.write(base + "/bridge/inbox/CLC/WO-1.yaml", Self.rebuildWO)
        Harness.write(base + "/bridge/inbox/CLC/WO-2.yaml", "wo_id: WO-ESC\nfiles:\n  - path: ../x\n    content: x\n")
        let x = try wo(d, ["base=base", "phase=all"], dry: true)
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("WO WO-20251113-WO-PIPELINE-REBUILD: WOULD APPLY"))
        #expect(x.r.stdout.contains("WO WO-ESC: INVALID"))
        #expect(x.r.stdout.contains("DRY RUN: would fail: guardrail"))
        let files = FileManager.default.subpaths(atPath: base)?.filter { !$0.hasPrefix("bridge") } ?? []
        #expect(files.isEmpty, "a dry run writes nothing: \(files)")
        #expect(x.final["status"] as? String == "dry_run")
    }

    @Test func canaryProvesThePipeline() throws {
        let d = Harness.tempDir("wo-canary")
        try FileManager.default.createDirectory(atPath: d + "/base", withIntermediateDirectories: true)
        let x = try wo(d, ["base=base", "phase=canary"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let canary = try #require((x.result["canary"] as? [String: Any]))
        let id = try #require(canary["wo_id"] as? String)
        #expect(canary["ok"] as? Bool == true)
        #expect(Harness.read(d + "/base/tmp/canary_test.txt")?.contains("pipeline is working") == true)
        #expect(FileManager.default.fileExists(atPath: d + "/base/g/followup/state/\(id).json"))
        #expect(Self.events(d + "/base", "wo_started").count == 1 && Self.events(d + "/base", "wo_completed").count == 1)
        #expect(x.r.stdout.contains("CANARY \(id): PASS"))
        // A second canary is a new work order and passes again.
        #expect(try wo(d, ["base=base", "phase=canary"]).r.code == 0)
        #expect(Self.events(d + "/base", "wo_completed").count == 2)
    }

    // MARK: guardrail

    @Test func guardrailHealthyAndDrift() throws {
        let d = Harness.tempDir("wo-guard")
        let base = d + "/base"
        for f in ["agents/a.zsh", "tools/b.zsh"] { Harness.write(base + "/" + f, "#!/bin/sh\n", mode: 0o755) }
        for dir in ["g/followup/state", "bridge/inbox/CLC"] { try FileManager.default.createDirectory(atPath: base + "/" + dir, withIntermediateDirectories: true) }
        let words = ["base=base", "phase=guardrail", "critical=agents/a.zsh,tools/b.zsh", "dirs=g/followup/state,bridge/inbox/CLC"]
        let ok = try wo(d, words)
        #expect(ok.r.code == 0, "stderr: \(ok.r.stderr)")
        #expect(Self.events(base, "wo_pipeline_healthy").count == 1)
        #expect(Self.events(base, "wo_pipeline_drift").isEmpty)
        #expect(!Harness.events(Harness.journal(ok.runDir), type: "preflight").isEmpty, "the guardrail is journaled")

        chmod(base + "/tools/b.zsh", 0o644)
        try FileManager.default.removeItem(atPath: base + "/bridge/inbox/CLC")
        let drift = try wo(d, words)
        #expect(drift.r.code == 1, "stderr: \(drift.r.stderr)")
        let lines = Self.events(base, "wo_pipeline_drift")
        #expect(lines.compactMap { $0["missing"] as? String } == ["tools/b.zsh", "bridge/inbox/CLC"])
        #expect(lines.allSatisfy { $0["ok"] as? Bool == false && $0["agent"] as? String == "guardrail" })
        #expect((lines.first?["detail"] as? String)?.contains("not executable") == true)
        #expect(Self.events(base, "wo_pipeline_healthy").count == 1, "no healthy line on drift")
        #expect(drift.r.stderr.contains("2 items missing: tools/b.zsh, bridge/inbox/CLC"))
        let logs = Harness.events(Harness.journal(drift.runDir), type: "log").compactMap { $0["message"] as? String }
        #expect(logs.filter { $0.hasPrefix("wo_pipeline_drift") }.count == 2)
    }

    // MARK: history and forensics

    func gitBase(_ d: String) throws -> String {
        let base = d + "/repo"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Harness.fixtures + "/wo-git-history.sh")
        p.arguments = [base]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "wo-git-history.sh failed")
        return base
    }

    @Test func historySaysWhenAndWhichCommitRemovedIt() throws {
        let d = Harness.tempDir("wo-hist")
        let base = try gitBase(d)
        let removed = try wo(d, ["base=repo", "phase=history", "component=agents/apply_patch_processor"])
        #expect(removed.r.code == 0, "stderr: \(removed.r.stderr)")
        let h = try #require(removed.result["history"] as? [String: Any])
        #expect(h["state"] as? String == "removed")
        let by = try #require(h["removed_by"] as? [String: Any])
        #expect(by["subject"] as? String == "rollback phase6 week1" && (by["date"] as? String)?.hasPrefix("2025-11-13T12:00:00") == true)
        #expect((by["sha"] as? String)?.count ?? 0 >= 7)
        let last = try #require(h["last_present"] as? [String: Any])
        #expect(last["subject"] as? String == "fix absolute paths in processor" && (last["date"] as? String)?.hasPrefix("2025-11-13T01:50:00") == true)
        #expect(removed.r.stdout.contains("removed by \(by["sha"] as! String)"), "stdout: \(removed.r.stdout)")

        let never = try wo(d, ["base=repo", "phase=history", "component=agents/never_was.zsh"])
        #expect(never.r.code == 0 && never.r.stdout.contains("never existed"), "stdout: \(never.r.stdout)")
        #expect((never.result["history"] as? [String: Any])?["state"] as? String == "never_existed")

        let present = try wo(d, ["base=repo", "phase=history", "component=README.md"])
        #expect((present.result["history"] as? [String: Any])?["state"] as? String == "present")

        try FileManager.default.removeItem(atPath: base + "/README.md")
        let uncommitted = try wo(d, ["base=repo", "phase=history", "component=README.md"])
        #expect((uncommitted.result["history"] as? [String: Any])?["state"] as? String == "deleted_uncommitted")

        try FileManager.default.createDirectory(atPath: d + "/plain", withIntermediateDirectories: true)
        let nogit = try wo(d, ["base=plain", "phase=history", "component=x"])
        #expect(nogit.r.code == 3 && nogit.r.stderr.contains("not in a git repository"))
    }

    @Test func forensicsReportOverTheWindow() throws {
        let d = Harness.tempDir("wo-forensics")
        _ = try gitBase(d)
        let x = try wo(d, ["base=repo", "phase=forensics", "since=2025-11-13 01:00", "until=2025-11-13 22:43"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)")
        let path = try #require((x.result["forensics"] as? [String: Any])?["report"] as? String)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: d + "/" + path))) as? [String: Any])
        let findings = try #require(report["findings"] as? [String: Any])
        let events = try #require(findings["git_events"] as? [[String: Any]])
        #expect(events.compactMap { $0["subject"] as? String } == ["rollback phase6 week1", "fix absolute paths in processor"], "only the window")
        #expect((findings["deletions"] as? [[String: Any]])?.first?["path"] as? String == "agents/apply_patch_processor/apply_patch_processor.zsh")
        #expect((findings["likely_cause"] as? String)?.contains("rollback phase6 week1") == true)
        let logs = try #require(findings["log_matches"] as? [[String: Any]])
        #expect(logs.count == 1 && logs[0]["line"] as? Int == 2 && (logs[0]["file"] as? String)?.hasSuffix("apply_patch_processor.err") == true)
        #expect(report["recommendation"] as? String == "rebuild")
        #expect((report["time_window"] as? [String: Any])?["since"] as? String == "2025-11-13 01:00")

        // A window after the rollback: no deletion, the log is the evidence.
        let later = try wo(d, ["base=repo", "phase=forensics", "since=2025-11-13 22:00"])
        let cause = (later.result["forensics"] as? [String: Any])?["likely_cause"] as? String
        #expect(cause?.contains("logs show") == true, "cause: \(cause ?? "nil")")
    }

    @Test func allPhasesOnAFreshTree() throws {
        let d = Harness.tempDir("wo-all")
        let base = d + "/base"
        Harness.write(base + "/bridge/inbox/CLC/WO-20251113-WO-PIPELINE-REBUILD.yaml", Self.rebuildWO)
        try FileManager.default.createDirectory(atPath: base + "/bridge/inbox/ENTRY", withIntermediateDirectories: true)
        let x = try wo(d, ["base=base", "phase=all"])
        #expect(x.r.code == 0, "stderr: \(x.r.stderr)\nstdout: \(x.r.stdout)")
        for k in ["forensics", "rebuild", "canary", "guardrail"] { #expect(x.result[k] != nil, "result lacks \(k)") }
        #expect((x.result["guardrail"] as? [String: Any])?["healthy"] as? Bool == true)
        #expect((x.result["forensics"] as? [String: Any])?["likely_cause"] as? String != nil)
    }
}
