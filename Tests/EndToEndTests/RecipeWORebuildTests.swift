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

    func wo(_ d: String, _ words: [String], dry: Bool = false, env: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> Run {
        let before = Set(Harness.runDirs(d))
        let r = try Harness.run(["run"] + (dry ? ["--dry-run"] : []) + [Self.recipe] + words, cwd: d, env: env, timeout: 60)
        // Words kit.args refuses are a usage error that leaves no run (issue 23 item 10).
        if r.code == 3, Harness.runDirs(d).allSatisfy(before.contains) { return Run(r: r, runDir: "", final: [:]) }
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
        let x = try wo(d, ["base=base", "phase=all", "strict=1"], dry: true)
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
        #expect(drift.r.code == 0, "the seed's guardrail records the alert and exits 0; stderr: \(drift.r.stderr)")
        let alerts = (Harness.read(base + "/logs/guardrail_alerts.log") ?? "").split(separator: "\n").map(String.init)
        #expect(alerts.count == 2 && alerts[0].hasSuffix("] ALERT: Missing or not executable: tools/b.zsh")
                && alerts[1].hasSuffix("] ALERT: Missing directory: bridge/inbox/CLC"), "\(alerts)")
        let strict = try wo(d, words + ["strict=1"])
        #expect(strict.r.code == 1, "strict mode exits non-zero on drift")
        #expect(strict.r.stderr.contains("2 items missing: tools/b.zsh, bridge/inbox/CLC"))
        #expect(Self.events(base, "guardrail_heartbeat").count == 3, "a heartbeat every run, healthy or not")
        let lines = Self.events(base, "wo_pipeline_drift")
        #expect(lines.compactMap { $0["missing"] as? String } == ["tools/b.zsh", "bridge/inbox/CLC", "tools/b.zsh", "bridge/inbox/CLC"])
        #expect(lines.allSatisfy { $0["ok"] as? Bool == false && $0["agent"] as? String == "guardrail" })
        #expect((lines.first?["detail"] as? String)?.contains("not executable") == true)
        #expect(Self.events(base, "wo_pipeline_healthy").count == 1, "no healthy line on drift")
        let logs = Harness.events(Harness.journal(drift.runDir), type: "log").compactMap { $0["message"] as? String }
        #expect(logs.filter { $0.hasPrefix("wo_pipeline_drift") }.count == 2)
        #expect(logs.contains("heartbeat: guardrail ran"))
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
        let logs = try #require(findings["launchagent_failures"] as? [[String: Any]], "the seed's key: \(findings.keys)")
        #expect(logs.count == 1 && logs[0]["line"] as? Int == 2 && (logs[0]["file"] as? String)?.hasSuffix("apply_patch_processor.err") == true)
        #expect(report["recommendation"] as? String == "rebuild")
        #expect(report["time_window"] as? String == "2025-11-13 01:00 - 22:43", "as the seed writes it")
        #expect(findings["rollback_scripts"] is [Any])

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
    // MARK: issue 16: the seed's own rebuild order, rollback, post_verify, the guardrail's schedule, history

    static func sh(_ cmd: String, cwd: String, env: [String: String] = [:]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", cmd]
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.environment = Harness.environment(env)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try? p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// An environment with no user service manager: the tests never touch the real one.
    static func isolated(_ d: String, _ extra: [String: String] = [:]) -> [String: String] {
        var e = ["HOME": d, "XDG_RUNTIME_DIR": d + "/no-runtime-dir", "DBUS_SESSION_BUS_ADDRESS": "unix:path=" + d + "/no-bus"]
        for (k, v) in extra { e[k] = v }
        return e
    }

    static func state(_ base: String, _ id: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: base + "/g/followup/state/\(id).json")))) as? [String: Any] ?? [:]
    }

    @Test func seedRebuildOrderAppliesWithSystemdUserUnits() throws {
        let d = Harness.tempDir("wo-seed")
        let base = d + "/02luka", inbox = base + "/bridge/inbox/CLC", units = d + "/.config/systemd/user"
        let id = "WO-20251113-WO-PIPELINE-REBUILD"
        try FileManager.default.createDirectory(atPath: base + "/bridge/inbox/ENTRY", withIntermediateDirectories: true)
        Harness.write(inbox + "/\(id).yaml", Harness.read(Harness.fixtures + "/\(id).yaml")!)
        let env = Self.isolated(d)   // the seed's ~/02luka is base; no user service manager
        // 1. Outside base without an allow-list: refused, naming the allow-list; nothing written.
        let refused = try wo(d, ["base=02luka", "phase=rebuild"], env: env)
        #expect(refused.r.code == 1)
        #expect(refused.r.stdout.contains("is a LaunchAgent; on Linux it becomes com.02luka.apply_patch_processor.service in \(units)")
                && refused.r.stdout.contains("allow=DIR") && refused.r.stdout.contains("(allow-list: none)"), "stdout: \(refused.r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: base + "/agents"))
        // 2. Allowed, but its "Canary WO test" finds no canary: the order is rolled back.
        let rolled = try wo(d, ["base=02luka", "phase=rebuild", "allow=\(units)"], env: env)
        #expect(rolled.r.code == 1, "stderr: \(rolled.r.stderr)")
        #expect(rolled.r.stdout.contains("WO \(id): ROLLED BACK (test 'Canary WO test' failed"), "stdout: \(rolled.r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: base + "/agents/apply_patch_processor/apply_patch_processor.zsh"), "its files are removed")
        #expect(!FileManager.default.fileExists(atPath: units + "/com.02luka.apply_patch_processor.timer"), "its units too")
        #expect(Self.state(base, id)["status"] as? String == "rolled_back")
        #expect((Self.state(base, id)["removed"] as? [String])?.count == 6)
        // 3. With the canary processed first (the seed's test looks for WO-CANARY-TEST.json), it applies,
        //    but without a user service manager its service checks are skipped: UNVERIFIED (exit 6), not COMPLETED.
        Harness.write(inbox + "/0-canary.yaml", Harness.read(Harness.fixtures + "/WO-CANARY-20251113-TEST.yaml")!
            .replacingOccurrences(of: "wo_id: WO-CANARY-20251113-TEST", with: "wo_id: WO-CANARY-TEST"))
        let x = try wo(d, ["base=02luka", "phase=rebuild", "allow=\(units)"], env: env)
        #expect(x.r.code == 6, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("WO \(id): UNVERIFIED (7 checks skipped"), "stdout: \(x.r.stdout)")
        #expect(Self.state(base, id)["status"] as? String == "unverified")
        #expect(Self.mode(base + "/agents/wo_executor/wo_executor.zsh") == 0o755)
        let service = try #require(Harness.read(units + "/com.02luka.apply_patch_processor.service"))
        let timer = try #require(Harness.read(units + "/com.02luka.apply_patch_processor.timer"))
        let real = URL(fileURLWithPath: base).resolvingSymlinksInPath().path
        #expect(service.contains("ExecStart=/bin/zsh -l -c \(real)/agents/apply_patch_processor/apply_patch_processor.zsh"), "\(service)")
        #expect(service.contains("Environment=LUKA_SOT=\(real)") && service.contains("StandardError=append:\(real)/logs/apply_patch_processor.err"))
        #expect(timer.contains("OnUnitActiveSec=15s") && timer.contains("OnActiveSec=0") && timer.contains("Unit=com.02luka.apply_patch_processor.service"))
        let verify = Self.sh("systemd-analyze verify com.02luka.apply_patch_processor.service com.02luka.apply_patch_processor.timer", cwd: units)
        #expect(verify.0 == 0, "systemd-analyze verify: \(verify.1)")
        #expect((Self.state(base, id)["units_verified"] as? String) == "systemd-analyze verify: ok")
        // post_verify: every step reported; service steps through systemctl --user, or skipped with the reason.
        let post = try #require(Self.state(base, id)["post_verify"] as? [[String: Any]])
        #expect(post.count == 7, "no step silently dropped: \(post)")
        #expect(post[4]["status"] as? String == "PASS" && post[4]["command"] as? String == "mkdir -p ~/02luka/g/followup/state")
        #expect((post[0]["linux"] as? String)?.contains("systemctl --user daemon-reload && systemctl --user enable --now com.02luka.apply_patch_processor.timer") == true)
        for i in [0, 1, 2, 3, 6] {
            #expect(post[i]["status"] as? String == "SKIPPED" && (post[i]["reason"] as? String)?.contains("systemctl --user is not available") == true, "\(post[i])")
        }
        #expect(post[5]["status"] as? String == "SKIPPED" && (post[5]["reason"] as? String)?.contains("waits for services") == true, "sleep 20 is not slept for nothing")
        let tests = try #require(Self.state(base, id)["test_results"] as? [[String: Any]])
        #expect(tests.map { $0["status"] as? String }.suffix(2) == ["PASS", "PASS"], "\(tests)")
        // The deployment report with the rollback plan.
        let reportPath = try #require((x.result["rebuild"] as? [String: Any])?["deployment_report"] as? String)
        let report = try #require(Harness.read(d + "/" + reportPath))
        #expect(report.contains("## Components installed") && report.contains("systemd user unit `com.02luka.apply_patch_processor.timer`"))
        #expect(report.contains("## Rollback procedure") && report.contains("`systemctl --user disable --now com.02luka.apply_patch_processor.timer`"))
        #expect(report.contains("manifest.json") && report.contains("## Known issues") && report.contains("is UNVERIFIED"))
        // 4. Where a user service manager answers (the stand-in), the checks run and can fail: the
        //    order defines one LaunchAgent of four, so loading the second fails and it is rolled
        //    back, its started timer stopped and disabled.
        let svcEnv = Self.withStandInSystemctl(d, units: units).merging(["XDG_RUNTIME_DIR": d + "/no-runtime-dir"]) { a, _ in a }
        let real4 = try wo(d, ["base=02luka", "phase=rebuild", "allow=\(units),\(d)/svc"], env: svcEnv)
        #expect(real4.r.code == 1, "stdout: \(real4.r.stdout)\nstderr: \(real4.r.stderr)")
        #expect(real4.r.stdout.contains("WO \(id): ROLLED BACK (post_verify 'launchctl load ~/Library/LaunchAgents/com.02luka.json_wo_processor.plist' failed"),
                "stdout: \(real4.r.stdout)")
        let calls = Harness.read(d + "/svc/calls.log") ?? ""
        #expect(calls.contains("--user enable --now com.02luka.apply_patch_processor.timer") && calls.contains("--user disable --now com.02luka.apply_patch_processor.timer"),
                "calls: \(calls)")
        #expect((Harness.read(d + "/svc/enabled") ?? "x").isEmpty)
        // 5. allow_unverified=1 accepts it without a user service manager, and says so.
        let allowed = try wo(d, ["base=02luka", "phase=rebuild", "allow=\(units)", "allow_unverified=1"], env: env)
        #expect(allowed.r.code == 0, "stdout: \(allowed.r.stdout)\nstderr: \(allowed.r.stderr)")
        #expect(allowed.r.stdout.contains("WO \(id): COMPLETED (unverified: 7 checks skipped; allowed by allow_unverified=1)"), "stdout: \(allowed.r.stdout)")
        #expect(Self.state(base, id)["status"] as? String == "completed")
    }

    @Test func failedWorkOrderIsRolledBackFromItsSnapshot() throws {
        let d = Harness.tempDir("wo-rollback")
        let base = d + "/base"
        Harness.write(base + "/agents/x.zsh", "#!/bin/sh\necho old\n", mode: 0o755)
        Harness.write(base + "/bridge/inbox/CLC/WO-RB.yaml", """
            wo_id: WO-RB
            files:
              - path: agents/x.zsh
                mode: "0755"
                content: "#!/bin/sh\\necho new\\n"
              - path: agents/y.zsh
                content: "new file\\n"
            post_verify:
              - {command: "agents/x.zsh", expected: "new"}
              - "true"
            tests:
              - name: "y is executable"
                command: "test -x agents/y.zsh && echo yes"
                expected: "yes"
            """)
        let x = try wo(d, ["base=base", "phase=rebuild"])
        #expect(x.r.code == 1)
        #expect(Harness.read(base + "/agents/x.zsh") == "#!/bin/sh\necho old\n", "the replaced file is restored")
        #expect(Self.mode(base + "/agents/x.zsh") == 0o755)
        #expect(!FileManager.default.fileExists(atPath: base + "/agents/y.zsh"), "the new file is removed")
        let st = Self.state(base, "WO-RB")
        #expect(st["status"] as? String == "rolled_back" && st["restored"] as? [String] == ["agents/x.zsh"] && st["removed"] as? [String] == ["agents/y.zsh"])
        let backup = try #require(st["backup"] as? String)
        #expect(FileManager.default.fileExists(atPath: d + "/" + backup + "/manifest.json"))
        #expect(Harness.read(d + "/" + backup + "/1/x.zsh") == "#!/bin/sh\necho old\n", "the snapshot was taken before writing")
        #expect((st["post_verify"] as? [[String: Any]])?.map { $0["status"] as? String } == ["PASS", "PASS"])
        #expect(x.r.stdout.contains("post_verify agents/x.zsh: PASS") && x.r.stdout.contains("test y is executable: FAIL"))
        #expect(Self.events(base, "wo_failed").first?["rolled_back"] as? Bool == true)
        // A failing post_verify step (with its expected result) rolls back too.
        Harness.write(base + "/bridge/inbox/CLC/WO-RB.yaml", "wo_id: WO-RB2\nfiles:\n  - path: z.txt\n    content: z\npost_verify:\n  - {command: \"echo no\", expected: \"yes\"}\n")
        let y = try wo(d, ["base=base", "phase=rebuild"])
        #expect(y.r.code == 1 && y.r.stdout.contains("post_verify 'echo no' failed: expected \"yes\", got \"no\""), "stdout: \(y.r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: base + "/z.txt"))
    }

    @Test func guardrailScheduleAndHeartbeats() throws {
        let d = Harness.tempDir("wo-sched")
        let base = d + "/base", units = d + "/units"
        for f in ["agents/a.zsh"] { Harness.write(base + "/" + f, "#!/bin/sh\n", mode: 0o755) }
        let words = ["base=base", "critical=agents/a.zsh", "dirs=agents"]
        let x = try wo(d, words + ["phase=schedule", "units=\(units)"], env: Self.isolated(d))
        #expect(x.r.code == 0, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        let timer = try #require(Harness.read(units + "/baton-wo-guardrail.timer"))
        let service = try #require(Harness.read(units + "/baton-wo-guardrail.service"))
        #expect(timer.contains("OnUnitActiveSec=300s"), "every 5 minutes: \(timer)")
        #expect(service.contains("ExecStart=\(Harness.binary) run ") || service.contains("/baton run "), "\(service)")
        #expect(service.contains("phase=guardrail") && service.contains("critical=agents/a.zsh"))
        let sched = try #require(x.result["schedule"] as? [String: Any])
        #expect(sched["verified"] as? Bool == true, "systemd-analyze verify: \(sched)")
        #expect(Self.sh("systemd-analyze verify baton-wo-guardrail.service baton-wo-guardrail.timer", cwd: units).0 == 0)
        let cron = try #require(Harness.read(base + "/g/reports/wo_pipeline_guardrail.cron"))
        #expect(cron.contains("*/5 * * * * cd ") && cron.contains("phase=guardrail"), "\(cron)")
        #expect(x.r.stdout.contains("NOT ENABLED (skipped: systemctl --user is not available"), "stdout: \(x.r.stdout)")
        // What the timer runs is one guardrail run, with one heartbeat.
        let exec = try #require(service.split(separator: "\n").first { $0.hasPrefix("ExecStart=") }).dropFirst("ExecStart=".count)
        #expect(Self.sh(String(exec), cwd: base).0 == 0)
        #expect(Self.events(base, "guardrail_heartbeat").count == 1)
        #expect(try wo(d, words + ["phase=guardrail"]).r.code == 0)
        // Heartbeats over a window: 0.25 h at 300 s is 3 expected.
        // Two runs a moment ago are not a quarter of an hour of heartbeats (their spread is
        // judged, test heartbeatGapsAndRepeatsAreAlerts).
        let short = try wo(d, words + ["phase=heartbeats", "hours=0.25"])
        #expect(short.r.code == 1 && short.r.stdout.contains("HEARTBEATS: 2 in the last 0.25h (expected 3, one every 300s): ")
                && short.r.stdout.contains("ALERT: no heartbeat for"), "stdout: \(short.r.stdout)")
        #expect((short.result["heartbeats"] as? [String: Any])?["count"] as? Int == 2)
        let day = try wo(d, words + ["phase=heartbeats"])
        #expect(day.r.stdout.contains("(expected 288, one every 300s)"), "a day is 288 heartbeats: \(day.r.stdout)")
    }

    @Test func historyRecentCommitsRollbackScriptsAndBroken() throws {
        let d = Harness.tempDir("wo-hist2")
        let base = try gitBase(d)
        Harness.write(base + "/tools/rollback_phase6_week1_20251113.zsh", "#!/bin/zsh\nrm -rf ~/02luka/agents/apply_patch_processor\n", mode: 0o755)
        let h = try wo(d, ["base=repo", "phase=history", "component=agents/apply_patch_processor", "hours=200000"])
        #expect(h.r.code == 0, "stderr: \(h.r.stderr)")
        let hist = try #require(h.result["history"] as? [String: Any])
        #expect((hist["recent_commits"] as? [[String: Any]])?.compactMap { $0["subject"] as? String }
                == ["rollback phase6 week1", "fix absolute paths in processor", "add apply_patch_processor"])
        #expect((hist["rollback_mentions"] as? [[String: Any]])?.first?["file"] as? String == base + "/tools/rollback_phase6_week1_20251113.zsh"
                || ((hist["rollback_mentions"] as? [[String: Any]])?.first?["file"] as? String)?.hasSuffix("tools/rollback_phase6_week1_20251113.zsh") == true)
        #expect(h.r.stdout.contains("was working at 2025-11-13T01:50:00") && h.r.stdout.contains("vanished at 2025-11-13T12:00:00")
                && h.r.stdout.contains("named by rollback script"), "stdout: \(h.r.stdout)")
        // The default window is the seed's 24 hours: these 2025 commits are not recent.
        let recent = try wo(d, ["base=repo", "phase=history", "component=agents/apply_patch_processor"])
        #expect(((recent.result["history"] as? [String: Any])?["recent_commits"] as? [Any])?.isEmpty == true)
        // Exists but broken, besides removed and never existed.
        Harness.write(base + "/tools/broken.zsh", "#!/bin/sh\necho x\n", mode: 0o644)
        let broken = try wo(d, ["base=repo", "phase=history", "component=tools/broken.zsh"])
        #expect((broken.result["history"] as? [String: Any])?["state"] as? String == "broken")
        #expect(broken.r.stdout.contains("exists but is broken (a script that is not executable)"), "stdout: \(broken.r.stdout)")
        Harness.write(base + "/tools/syntax.sh", "#!/bin/sh\nif then fi (\n", mode: 0o755)
        let syntax = try wo(d, ["base=repo", "phase=history", "component=tools/syntax.sh"])
        #expect((syntax.result["history"] as? [String: Any])?["state"] as? String == "broken")
        // Forensics: the rollback scripts are in the report, the default window is the last 24 hours.
        let f = try wo(d, ["base=repo", "phase=forensics"])
        let path = try #require((f.result["forensics"] as? [String: Any])?["report"] as? String)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: d + "/" + path))) as? [String: Any])
        let findings = try #require(report["findings"] as? [String: Any])
        #expect((findings["rollback_scripts"] as? [[String: Any]])?.count == 1, "\(findings)")
        #expect((report["window"] as? [String: Any])?["hours"] as? Int == 24)
        #expect((report["time_window"] as? String)?.range(of: #"^\d{4}-\d\d-\d\d \d\d:\d\d - "#, options: .regularExpression) != nil)
        #expect((findings["likely_cause"] as? String)?.contains("rollback script") == true, "no commit in the last 24 h: the script is the evidence")
    }
    /// Where a user service manager answers, launchctl steps run as systemctl --user steps
    /// (a stand-in systemctl records the calls).
    @Test func serviceStepsRunThroughSystemctlUser() throws {
        let d = Harness.tempDir("wo-systemctl")
        let base = d + "/base", units = d + "/units"
        Harness.write(base + "/bridge/inbox/CLC/WO-SVC.yaml", """
            wo_id: WO-SVC
            files:
              - path: agents/x.zsh
                mode: "0755"
                content: "#!/bin/sh\\n"
              - path: ../Library/LaunchAgents/com.02luka.x.plist
                content: |
                  <?xml version="1.0" encoding="UTF-8"?>
                  <plist version="1.0"><dict>
                    <key>Label</key><string>com.02luka.x</string>
                    <key>ProgramArguments</key><array><string>/bin/sh</string><string>-c</string><string>/Users/me/02luka/agents/x.zsh</string></array>
                    <key>StartInterval</key><integer>15</integer>
                    <key>EnvironmentVariables</key><dict><key>LUKA_SOT</key><string>/Users/me/02luka</string></dict>
                  </dict></plist>
            post_verify:
              - launchctl load ~/Library/LaunchAgents/com.02luka.x.plist
            tests:
              - name: "running"
                command: "launchctl list | grep -c 'com.02luka'"
                expected: "1"
            """)
        let env = Self.withStandInSystemctl(d, units: units)
        let x = try wo(d, ["base=base", "phase=rebuild", "allow=\(units),\(d)/svc", "units=\(units)"], env: env)
        #expect(x.r.code == 0, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        let calls = Harness.read(d + "/svc/calls.log") ?? ""
        #expect(calls.contains("--user daemon-reload") && calls.contains("--user enable --now com.02luka.x.timer"), "calls: \(calls)")
        #expect(calls.contains("--user list-units --all --plain --no-legend"))
        #expect(x.r.stdout.contains("post_verify launchctl load ~/Library/LaunchAgents/com.02luka.x.plist: PASS"), "stdout: \(x.r.stdout)")
        #expect(x.r.stdout.contains("test running: PASS"))
        let real = URL(fileURLWithPath: base).resolvingSymlinksInPath().path
        #expect(Harness.read(units + "/com.02luka.x.service")?.contains("ExecStart=/bin/sh -c \(real)/agents/x.zsh") == true)
    }

    // MARK: issue 21: fail-closed work orders

    /// An environment with the stand-in systemctl (Tests/Fixtures/systemctl-standin) as the
    /// user service manager; its state (calls.log, enabled) in `d/svc`, which the caller
    /// puts in the allow-list (steps run read-only outside it).
    static func withStandInSystemctl(_ d: String, units: String) -> [String: String] {
        try? FileManager.default.createDirectory(atPath: d + "/svc", withIntermediateDirectories: true)
        Harness.write(d + "/svc/calls.log", "")
        Harness.write(d + "/svc/enabled", "")
        return ["HOME": d, "SYSTEMCTL_STATE": d + "/svc", "SYSTEMCTL_UNITS": units,
                "PATH": Harness.fixtures + "/systemctl-standin:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
    }

    static func plist(_ label: String) -> String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <plist version="1.0"><dict>
          <key>Label</key><string>\(label)</string>
          <key>ProgramArguments</key><array><string>/bin/sh</string><string>-c</string><string>/Users/me/02luka/agents/x.zsh</string></array>
          <key>StartInterval</key><integer>15</integer>
        </dict></plist>
        """.split(separator: "\n").map { "          " + $0 }.joined(separator: "\n")
    }

    /// Rollback undoes everything the work order did: units it started are stopped and
    /// disabled, files and directories it (or its steps) created are removed, empty ones
    /// too, files it replaced are restored.
    @Test func rollbackUndoesUnitsFilesAndDirectories() throws {
        let d = Harness.tempDir("wo-rball")
        let base = d + "/base", units = d + "/.config/systemd/user"
        Harness.write(base + "/agents/x.zsh", "#!/bin/sh\necho old\n", mode: 0o755)
        Harness.write(base + "/conf/settings.txt", "original\n")
        Harness.write(base + "/keep.txt", "keep me\n")
        Harness.write(base + "/bridge/inbox/CLC/WO-RBALL.yaml", """
            wo_id: WO-RBALL
            files:
              - path: agents/x.zsh
                mode: "0755"
                content: "#!/bin/sh\\necho new\\n"
              - path: new/deep/dir/y.txt
                content: "new\\n"
              - path: ../Library/LaunchAgents/com.02luka.rb.plist
                content: |
            \(Self.plist("com.02luka.rb"))
            post_verify:
              - launchctl load ~/Library/LaunchAgents/com.02luka.rb.plist
              - mkdir -p made/by/step && echo z > made/by/step/f.txt
              - echo changed > conf/settings.txt && rm keep.txt
            tests:
              - name: "fails"
                command: "echo no"
                expected: "yes"
            """)
        let env = Self.withStandInSystemctl(d, units: units)
        let x = try wo(d, ["base=base", "phase=rebuild", "allow=\(units),\(d)/svc"], env: env)
        #expect(x.r.code == 1, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("WO WO-RBALL: ROLLED BACK (test 'fails' failed"), "stdout: \(x.r.stdout)")
        let calls = Harness.read(d + "/svc/calls.log") ?? ""
        #expect(calls.contains("--user enable --now com.02luka.rb.timer"), "the order started its timer: \(calls)")
        #expect(calls.contains("--user disable --now com.02luka.rb.timer"), "the rollback stops and disables it: \(calls)")
        #expect((Harness.read(d + "/svc/enabled") ?? "x").isEmpty, "nothing the order enabled stays enabled")
        #expect(Harness.read(base + "/agents/x.zsh") == "#!/bin/sh\necho old\n" && Self.mode(base + "/agents/x.zsh") == 0o755)
        #expect(Harness.read(base + "/conf/settings.txt") == "original\n", "a file a step changed is restored")
        #expect(Harness.read(base + "/keep.txt") == "keep me\n", "a file a step deleted is brought back")
        for gone in [base + "/new", base + "/made", units + "/com.02luka.rb.service", d + "/.config"] {
            #expect(!FileManager.default.fileExists(atPath: gone), "\(gone) was created by the order and must be gone")
        }
        let st = Self.state(base, "WO-RBALL")
        #expect(st["status"] as? String == "rolled_back")
        #expect((st["units_stopped"] as? [String])?.contains("com.02luka.rb.timer") == true, "\(st)")
        #expect((st["removed_dirs"] as? [String])?.contains { $0.hasSuffix("/base/new/deep/dir") } == true, "\(st)")
    }

    /// A unit file the work order writes itself is verified like a generated one.
    @Test func directlyWrittenUnitFilesAreVerified() throws {
        let d = Harness.tempDir("wo-unitverify")
        let base = d + "/base", units = d + "/units"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        Harness.write(base + "/bridge/inbox/CLC/1-bad.yaml", """
            wo_id: WO-BADUNIT
            files:
              - path: \(units)/bad.service
                content: "[Unit]\\nDescription=bad\\n[Service]\\nType=oneshot\\nExecStart=relative/path\\n"
            """)
        Harness.write(base + "/bridge/inbox/CLC/2-good.yaml", """
            wo_id: WO-GOODUNIT
            files:
              - path: \(units)/good.service
                content: "[Unit]\\nDescription=good\\n[Service]\\nType=oneshot\\nExecStart=/bin/true\\n"
            """)
        let x = try wo(d, ["base=base", "phase=rebuild", "allow=\(units)"], env: Self.isolated(d))
        #expect(x.r.code == 1, "stdout: \(x.r.stdout)")
        #expect(x.r.stdout.contains("WO WO-BADUNIT: ROLLED BACK") && x.r.stdout.contains("systemd-analyze verify failed"), "stdout: \(x.r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: units + "/bad.service"))
        #expect(Self.state(base, "WO-GOODUNIT")["units_verified"] as? String == "systemd-analyze verify: ok")
        #expect(Self.state(base, "WO-GOODUNIT")["status"] as? String == "completed")
    }

    /// Skipped checks are not passes: UNVERIFIED (exit 6), unless allow_unverified=1.
    @Test func skippedChecksAreUnverifiedNotCompleted() throws {
        let d = Harness.tempDir("wo-unverified")
        let base = d + "/base", units = d + "/units"
        Harness.write(base + "/bridge/inbox/CLC/WO-UNV.yaml", """
            wo_id: WO-UNV
            files:
              - path: agents/x.zsh
                mode: "0755"
                content: "#!/bin/sh\\n"
              - path: ../Library/LaunchAgents/com.02luka.unv.plist
                content: |
            \(Self.plist("com.02luka.unv"))
            post_verify:
              - launchctl load ~/Library/LaunchAgents/com.02luka.unv.plist
              - launchctl kickstart -k gui/501/com.02luka.unv
            tests:
              - name: "exists"
                command: "test -x agents/x.zsh && echo yes"
                expected: "yes"
            """)
        let words = ["base=base", "phase=rebuild", "allow=\(units)", "units=\(units)"]
        let x = try wo(d, words, env: Self.isolated(d))
        #expect(x.r.code == 6, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        #expect(x.r.stdout.contains("WO WO-UNV: UNVERIFIED (2 checks skipped"), "stdout: \(x.r.stdout)")
        #expect(!x.r.stdout.contains("COMPLETED"))
        #expect(x.final["exit_code"] as? Int == 6)
        #expect(Self.state(base, "WO-UNV")["status"] as? String == "unverified")
        #expect(Self.events(base, "wo_completed").isEmpty && Self.events(base, "wo_unverified").count == 1)
        let y = try wo(d, words + ["allow_unverified=1"], env: Self.isolated(d))
        #expect(y.r.code == 0, "stdout: \(y.r.stdout)\nstderr: \(y.r.stderr)")
        #expect(y.r.stdout.contains("WO WO-UNV: COMPLETED (unverified: 2 checks skipped; allowed by allow_unverified=1)"), "stdout: \(y.r.stdout)")
        #expect(Self.state(base, "WO-UNV")["status"] as? String == "completed" && Self.state(base, "WO-UNV")["unverified_allowed"] as? Bool == true)
    }

    /// post_verify and tests write only inside base and the allow-list (bwrap); where
    /// that cannot be set up they are refused unless unconfined=1.
    @Test func stepsRunReadOnlyOutsideTheAllowList() throws {
        let d = Harness.tempDir("wo-bwrap")
        let base = d + "/base", outside = d + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let order = """
            wo_id: WO-CONF
            files:
              - path: a.txt
                content: "a\\n"
            post_verify:
              - "echo in > inbase.txt"
              - "echo t > \\"$TMPDIR/t\\" && cat \\"$TMPDIR/t\\""
              - "echo escaped > \(outside)/escape.txt"
            """
        Harness.write(base + "/bridge/inbox/CLC/WO-CONF.yaml", order)
        let x = try wo(d, ["base=base", "phase=rebuild"], env: Self.isolated(d))
        #expect(x.r.code == 1, "stdout: \(x.r.stdout)\nstderr: \(x.r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: outside + "/escape.txt"), "a step wrote outside base and the allow-list")
        let post = Self.state(base, "WO-CONF")["post_verify"] as? [[String: Any]] ?? []
        #expect(post.map { $0["status"] as? String } == ["PASS", "PASS", "FAIL"], "\(post)")
        #expect((post.last?["reason"] as? String)?.contains("Read-only file system") == true, "\(post)")
        #expect(!FileManager.default.fileExists(atPath: base + "/a.txt") && !FileManager.default.fileExists(atPath: base + "/inbase.txt"), "rolled back")

        // Where bwrap cannot set up its sandbox: refused before anything is written, saying why.
        let broken = Self.isolated(d, ["PATH": Harness.fixtures + "/bwrap-broken:" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")])
        Harness.write(base + "/bridge/inbox/CLC/WO-CONF.yaml", order.replacingOccurrences(of: "WO-CONF", with: "WO-CONF2")
            .replacingOccurrences(of: "  - \"echo escaped > \(outside)/escape.txt\"\n", with: ""))
        Harness.write(base + "/bridge/inbox/CLC/WO-NOSTEPS.yaml", "wo_id: WO-NOSTEPS\nfiles:\n  - path: plain.txt\n    content: p\n")
        let y = try wo(d, ["base=base", "phase=rebuild"], env: broken)
        #expect(y.r.code == 1, "stdout: \(y.r.stdout)")
        #expect(y.r.stdout.contains("WO WO-CONF2: FAILED (") && y.r.stdout.contains("bwrap") && y.r.stdout.contains("unconfined=1")
                && y.r.stdout.contains("No permissions to creating new namespace"), "stdout: \(y.r.stdout)")
        #expect(!FileManager.default.fileExists(atPath: base + "/a.txt"), "nothing written")
        #expect(Harness.read(base + "/plain.txt") == "p", "an order without steps needs no sandbox")
        #expect(!y.r.stderr.contains("traceback"))
        let z = try wo(d, ["base=base", "phase=rebuild", "unconfined=1"], env: broken)
        #expect(z.r.code == 0, "stdout: \(z.r.stdout)\nstderr: \(z.r.stderr)")
        #expect(z.r.stdout.contains("unconfined"), "stdout: \(z.r.stdout)")
        #expect(Self.state(base, "WO-CONF2")["status"] as? String == "completed")
    }

    /// Heartbeats are judged by their spread: a gap longer than twice the period, or a
    /// repeated timestamp, is an alert; 288 in a burst are not a day of heartbeats.
    @Test func heartbeatGapsAndRepeatsAreAlerts() throws {
        let d = Harness.tempDir("wo-hbgaps")
        let base = d + "/base"
        let iso = ISO8601DateFormatter()
        let now = Date()
        func write(_ times: [Date]) {
            Harness.write(base + "/g/telemetry/unified.jsonl", times.sorted().map {
                "{\"ts\":\"\(iso.string(from: $0))\",\"agent\":\"guardrail\",\"event\":\"guardrail_heartbeat\",\"ok\":true,\"drift\":0}\n"
            }.joined())
        }
        let words = ["base=base", "phase=heartbeats"]
        // 288 spread over the day: OK.
        write((0..<288).map { now.addingTimeInterval(-Double($0) * 300 - 5) })
        let ok = try wo(d, words)
        #expect(ok.r.code == 0, "stdout: \(ok.r.stdout)")
        #expect(ok.r.stdout.contains("HEARTBEATS: 288 in the last 24h") && ok.r.stdout.contains(": OK"), "stdout: \(ok.r.stdout)")
        // 288 in the last hour: counted right, spread wrong.
        write((0..<288).map { now.addingTimeInterval(-Double($0) * 12 - 5) })
        let burst = try wo(d, words)
        #expect(burst.r.code == 1, "stdout: \(burst.r.stdout)")
        #expect(burst.r.stdout.contains("ALERT: no heartbeat for"), "stdout: \(burst.r.stdout)")
        // A gap of 20 minutes in the day, and a repeated timestamp.
        var times = (0..<288).map { now.addingTimeInterval(-Double($0) * 300 - 5) }.filter { !(100...102).contains(Int((now.timeIntervalSince($0) - 5) / 300)) }
        times.append(times[10])
        times.append(contentsOf: [now.addingTimeInterval(-300 * 1000), now.addingTimeInterval(-300 * 1001)])  // older than the window: not counted
        write(times)
        let gap = try wo(d, words)
        #expect(gap.r.code == 1, "stdout: \(gap.r.stdout)")
        #expect(gap.r.stdout.contains("ALERT: no heartbeat for 1200s") && gap.r.stdout.contains("ALERT: repeated timestamp"), "stdout: \(gap.r.stdout)")
        let hb = try #require(gap.result["heartbeats"] as? [String: Any])
        #expect((hb["alerts"] as? [String])?.count == 2, "\(hb)")
    }

    /// wo_id is a plain name; the dry run says what it would record.
    @Test func woIdIsAPlainNameAndTheDryRunSaysWouldRecord() throws {
        let d = Harness.tempDir("wo-ids")
        let base = d + "/base"
        Harness.write(base + "/bridge/inbox/CLC/1-dotdot.yaml", "wo_id: \"..\"\nfiles:\n  - path: a.txt\n    content: a\n")
        Harness.write(base + "/bridge/inbox/CLC/2-dot.yaml", "wo_id: \".\"\nfiles:\n  - path: b.txt\n    content: b\n")
        Harness.write(base + "/bridge/inbox/CLC/3-ok.yaml", "wo_id: WO-OK.1_x\nfiles:\n  - path: c.txt\n    content: c\n")
        let dry = try wo(d, ["base=base", "phase=all", "critical=c.txt", "dirs=g"], dry: true)
        #expect(dry.r.code == 0, "stderr: \(dry.r.stderr)")
        #expect(!dry.r.stdout.contains("alerts recorded in") && !dry.r.stdout.contains("alert recorded in"), "a dry run records nothing: \(dry.r.stdout)")
        #expect(dry.r.stdout.contains("would be recorded in"), "stdout: \(dry.r.stdout)")
        #expect(dry.r.stdout.contains("WO WO-OK.1_x: WOULD APPLY (1 file; would record") , "stdout: \(dry.r.stdout)")
        let x = try wo(d, ["base=base", "phase=rebuild"])
        #expect(x.r.code == 1)
        for f in ["1-dotdot", "2-dot"] {
            #expect(x.r.stdout.contains("WO \(f): FAILED (") && x.r.stdout.contains("field 'wo_id'"), "stdout: \(x.r.stdout)")
        }
        #expect(!FileManager.default.fileExists(atPath: base + "/a.txt") && !FileManager.default.fileExists(atPath: base + "/b.txt"))
        let top = Set((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
        #expect(top == ["bridge", "g", "backups", "c.txt"], "no state or backup outside its directory: \(top)")
        #expect(Set((try? FileManager.default.contentsOfDirectory(atPath: base + "/backups")) ?? []) == ["WO-OK.1_x"])
    }
}
