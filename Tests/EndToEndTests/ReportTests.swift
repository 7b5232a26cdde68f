import Foundation
import Testing

/// `baton report` (HTML, Chrome trace, TSV), `log --why` and the shell's `:report`, on runs of
/// the real binary; the HTML is opened in headless Chromium and checked as rendered.
@Suite struct ReportTests {
    /// A run with a retry (transient exit 75, then success), a watch that waits for a file
    /// another stage writes, a gate rejected once with rework in between, and a failing stage.
    static let demoRecipe = """
        preflight{name = "tools", checks = {{path = "demo.lua"}, {cmd = {"true"}}}}
        runStage{id = "fetch", cmd = "sleep 0.3; echo fetched"}
        baton.sh("sleep 0.1")
        runStage{id = "build", retries = 2, transient = {exit = {75}}, backoff = {initial = 0.5},
          cmd = "n=$(cat .tries 2>/dev/null || echo 0); echo $((n+1)) > .tries; sleep 0.4; "
             .. "if [ $n -lt 1 ]; then echo 'rate limit exceeded' >&2; exit 75; fi; echo built"}
        local bg = runStage{id = "train", cmd = "sleep 0.8", background = true}
        runStage{id = "export", cmd = "sleep 1.6; echo '{\\"loss\\": 0.1}' > metrics.json", background = true}
        watch{id = "train-watch", handle = bg, requireFiles = {"metrics.json"}, readyTimeoutSec = 10, readyPollSec = 1,
          callback = function(info) runStage{id = "summarize", cmd = "sleep 0.2; cat metrics.json"} end}
        gate{name = "verify", maxIterations = 2,
          check = function(i)
            runStage{id = "verify", cmd = "sleep 0.3"}
            return {approved = i > 1, issues = i > 1 and {} or {"tests missing"}}
          end,
          onReject = function() runStage{id = "rework", cmd = "sleep 0.4"} end}
        runStage{id = "ship", cmd = "sleep 0.2; echo 'deploy failed: permission denied' >&2; exit 3"}
        """

    /// The demo run, made once for the tests that read it: (cwd, run directory).
    static let demo: (cwd: String, run: String) = {
        let d = Harness.tempDir("report-demo")
        Harness.write(d + "/demo.lua", demoRecipe)
        let r = try! Harness.run(["run", "demo.lua"], cwd: d, env: ["BATON_HEARTBEAT_SEC": "0.3"])
        precondition(r.code == 1, "the demo run should fail at ship: \(r.stderr)")
        return (d, Harness.latestRun(d)!)
    }()

    static func attempts(_ run: String) -> [[String: Any]] {
        Harness.events(Harness.journal(run), type: "stage_started").filter { $0["dry"] == nil }
    }

    // MARK: Chromium

    static let chromium: String? = {
        for c in ["chromium", "chromium-browser", "google-chrome"] {
            for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + c) {
                return dir + "/" + c
            }
        }
        return nil
    }()

    /// The DOM Chromium renders from the file after its scripts ran, and Chromium's stderr.
    static func render(_ file: String, fragment: String = "") throws -> (dom: String, log: String)? {
        guard let c = chromium else { return nil }
        let profile = Harness.tempDir("chromium")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: c)
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                       "--user-data-dir=" + profile, "--dump-dom", "file://" + file + fragment]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        let g = DispatchGroup()
        g.enter(); DispatchQueue.global().async { o.data = out.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        g.enter(); DispatchQueue.global().async { e.data = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        if !Harness.waitFor(90, { !p.isRunning }) { p.terminate() }
        p.waitUntilExit()
        g.wait()
        return (String(decoding: o.data, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
    }

    /// What the report's script measured in the browser (`#render-check`).
    static func renderCheck(_ dom: String) throws -> [String: Any] {
        let start = try #require(dom.range(of: "<pre id=\"render-check\" hidden=\"\">"), "no render-check in the DOM")
        let rest = dom[start.upperBound...]
        let end = try #require(rest.range(of: "</pre>"))
        let text = String(rest[..<end.lowerBound]).replacingOccurrences(of: "&quot;", with: "\"")
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func theHTMLReportIsSelfContainedAndRendersInChromium() throws {
        let (cwd, run) = Self.demo
        let r = try Harness.run(["report"], cwd: cwd)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let path = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(path == run + "/report.html")
        let html = try #require(Harness.read(path))
        // Self-contained: nothing fetched from anywhere.
        for bad in ["<script src", "<link", "@import", "url(", "src=\"http", "href=\"http"] {
            #expect(!html.contains(bad), "the report refers to an external resource: \(bad)")
        }
        for part in ["recipe sha256", "demo.lua", "Timeline", "Stages", "Final result", "gate verify iteration 1/2: rejected",
                     "watch train-watch: awaiting_artifacts", "preflight tools", "heartbeat: waiting on", "backoff",
                     "baton.sh: sleep 0.1", "stderr: rate limit exceeded"] {
            #expect(html.contains(part), "the report lacks \(part)")
        }
        let attempts = Self.attempts(run)
        #expect(attempts.count == 10)   // build twice, verify twice, the rest once

        guard let (dom, log) = try Self.render(path) else {
            print("ReportTests: skipped the Chromium check: no chromium on PATH (scripts/deps installs it)")
            return
        }
        #expect(!log.contains("Uncaught"), "console errors: \(log.split(separator: "\n").filter { $0.contains("CONSOLE") })")
        #expect(!log.contains(":CONSOLE("), "console output: \(log.split(separator: "\n").filter { $0.contains("CONSOLE") })")
        #expect(dom.contains("data-rendered=\"ok\""), "the report's script did not run to its end")
        let check = try Self.renderCheck(dom)
        #expect(check["bars"] as? Int == attempts.count, "one bar per attempt: \(check)")
        let fills = try #require(check["fills"] as? [String: String])
        #expect(fills["passed"] == "rgb(46, 139, 87)", "\(fills)")
        #expect(fills["failed"] == "rgb(192, 57, 43)", "\(fills)")
        #expect(fills["failed-retried"] == "rgb(232, 147, 138)", "\(fills)")
        #expect(Set(fills.values).count == fills.count, "outcomes share a colour: \(fills)")
        // The failure reason is on the page as rendered text.
        #expect(dom.contains("stage 'ship' failed with exit code 3: deploy failed: permission denied"))
        #expect(dom.contains("<pre class=\"err\">deploy failed: permission denied</pre>"))
        // Zoomed from the address: the plot is 4 times as wide, the bars with it.
        let (zoomed, zlog) = try #require(try Self.render(path, fragment: "#zoom=4"))
        #expect(try Self.renderCheck(zoomed)["zoom"] as? Int == 4 && !zlog.contains("Uncaught"))
        #expect(zoomed.contains("<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"4570\""))
    }

    @Test func theTraceIsChromeTraceEventJSON() throws {
        let (cwd, run) = Self.demo
        let file = Harness.tempDir("trace") + "/trace.json"
        let r = try Harness.run(["report", "--trace", file], cwd: cwd)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == file)
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any])
        let events = try #require(doc["traceEvents"] as? [[String: Any]])
        var threadNames: [Int: String] = [:]
        var stageEvents: [[String: Any]] = []
        for e in events {
            let ph = try #require(e["ph"] as? String, "event without ph: \(e)")
            #expect(e["name"] is String && e["pid"] is Int, "\(e)")
            switch ph {
            case "M":
                #expect((e["args"] as? [String: Any]) != nil, "\(e)")
                if e["name"] as? String == "thread_name" {
                    threadNames[try #require(e["tid"] as? Int)] = (e["args"] as? [String: Any])?["name"] as? String
                }
            case "X":
                let ts = try #require(e["ts"] as? Int), dur = try #require(e["dur"] as? Int), _ = try #require(e["tid"] as? Int)
                #expect(ts >= 0 && dur >= 0, "\(e)")
                if (e["cat"] as? String)?.hasPrefix("stage") == true { stageEvents.append(e) }
            case "i":
                #expect(e["ts"] is Int && e["tid"] is Int && ["t", "p", "g"].contains(e["s"] as? String ?? "t"), "\(e)")
            default:
                Issue.record("unexpected phase \(ph)")
            }
        }
        #expect(stageEvents.count == Self.attempts(run).count, "one complete event per attempt")
        // Every stage thread is named, and no two stage events on one thread overlap.
        var byTid: [Int: [(Int, Int)]] = [:]
        for e in stageEvents {
            let tid = e["tid"] as! Int
            #expect(threadNames[tid]?.hasPrefix("stages") == true, "tid \(tid) has no name")
            byTid[tid, default: []].append((e["ts"] as! Int, e["ts"] as! Int + (e["dur"] as! Int)))
        }
        #expect(byTid.count == 2, "train and export run beside the others: \(byTid.keys)")
        for (_, spans) in byTid {
            let sorted = spans.sorted { $0.0 < $1.0 }
            for (a, b) in zip(sorted, sorted.dropFirst()) { #expect(a.1 <= b.0, "overlap on a lane: \(a) \(b)") }
        }
        let names = events.compactMap { $0["name"] as? String }
        #expect(names.contains("awaiting_artifacts") && names.contains("backoff") && names.contains("gate verify 1/2 rejected"))
        #expect(events.contains { $0["cat"] as? String == "command,baton.sh" && $0["ph"] as? String == "X" })
    }

    @Test func theTSVHasOneRowPerAttemptWithNextflowFieldNames() throws {
        let (cwd, run) = Self.demo
        let file = Harness.tempDir("tsv") + "/trace.tsv"
        #expect(try Harness.run(["report", "--tsv", file], cwd: cwd).code == 0)
        let lines = try #require(Harness.read(file)).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        let header = try #require(lines.first)
        for c in ["task_id", "name", "status", "exit", "submit", "start", "complete", "duration", "realtime", "attempt", "native_id"] {
            #expect(header.contains(c), "no column \(c)")
        }
        let rows = lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0)) }
        #expect(lines.dropFirst().allSatisfy { $0.count == header.count })
        #expect(rows.count == Self.attempts(run).count)
        let build = rows.filter { $0["name"] == "build" }
        #expect(build.map { $0["status"] } == ["FAILED", "COMPLETED"] && build.map { $0["attempt"] } == ["1", "2"])
        #expect(build.first?["exit"] == "75" && build.first?["failure_class"] == "transient")
        let ship = try #require(rows.first { $0["name"] == "ship" })
        #expect(ship["status"] == "FAILED" && ship["exit"] == "3" && Int(ship["native_id"] ?? "") != nil)
        #expect(Int(ship["realtime"] ?? "") ?? 0 >= 200, "\(ship)")
        #expect(rows.map { $0["task_id"] } == (1...rows.count).map { String($0) })
    }

    // MARK: why it ran

    @Test func resumeSaysWhyEachStageReplayedOrRan() throws {
        let d = Harness.tempDir("why")
        Harness.write(d + "/r.lua", """
            runStage{id = "a", cmd = "echo a"}
            runStage{id = "b", cmd = {"echo", "b"}, env = {X = "1"}}
            runStage{id = "c", cmd = "echo c", stdin = "one"}
            runStage{id = "d", cmd = "exit 1"}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 1)
        let run = try #require(Harness.latestRun(d))
        // Unchanged: a, b, c replay; d did not pass before.
        var r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage a: replayed: passed before, unchanged"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage c: replayed"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage d: runs: did not pass before"), "\(r.stderr)")
        // The environment of b changes: b runs, and so does everything after it.
        Harness.write(d + "/r.lua", (Harness.read(d + "/r.lua") ?? "").replacingOccurrences(of: "X = \"1\"", with: "X = \"2\""))
        r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage b: runs: environment changed"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage c: runs because an earlier stage ran (b)"), "\(r.stderr)")
        // Journaled: a replay as its stage_finished (replayed), what ran with `why` on its first stage_started.
        let events = Harness.journal(run)
        let started = Harness.events(events, type: "stage_started")
        let bWhy = try #require(started.last { $0["id"] as? String == "b" }?["why"] as? [String: Any])
        #expect(bWhy["reason"] as? String == "changed" && bWhy["changed"] as? [String] == ["env"] && bWhy["replayed"] as? Bool == false)
        let aReplay = try #require(Harness.events(events, type: "stage_finished").last { $0["id"] as? String == "a" })
        #expect(aReplay["replayed"] as? Bool == true && aReplay["why"] == nil, "a replay is its stage_finished, replayed: true")
        #expect((started.last?["fingerprint_parts"] as? [String: Any])?.keys.sorted() == ["command", "cwd", "env", "stdin"])
        // The command and the stdin of c change together: c runs and says both.
        Harness.write(d + "/r.lua", (Harness.read(d + "/r.lua") ?? "")
            .replacingOccurrences(of: "\"echo c\", stdin = \"one\"", with: "\"echo C\", stdin = \"two\""))
        r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage b: replayed"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage c: runs: command and stdin changed"), "\(r.stderr)")
        // A stage that was not there before.
        Harness.write(d + "/r.lua", "runStage{id = \"new\", cmd = \"true\"}\n" + (Harness.read(d + "/r.lua") ?? ""))
        r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage new: runs: new, not in the earlier run"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage a: runs because an earlier stage ran (new)"), "\(r.stderr)")

        // log --why: each resume, each call; and one stage across resumes.
        let why = try Harness.run(["log", "--why"], cwd: d)
        #expect(why.code == 0)
        #expect(why.stdout.contains("resume 1 at ") && why.stdout.contains("resume 4 at "), "\(why.stdout)")
        #expect(why.stdout.contains("  d: runs: did not pass before"), "\(why.stdout)")
        let whyB = try Harness.run(["log", "--why", "b"], cwd: d)
        #expect(whyB.stdout.components(separatedBy: "  b: ").count == 5, "\(whyB.stdout)")
        #expect(!whyB.stdout.contains("  a: "), "\(whyB.stdout)")
        let json = try Harness.run(["log", "--why", "--json"], cwd: d)
        let list = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(list.contains { $0["id"] as? String == "b" && $0["changed"] as? [String] == ["env"] })

        // The report shows it.
        let rep = try Harness.run(["report"], cwd: d)
        let html = try #require(Harness.read(rep.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(html.contains("Resumes: why each stage ran or replayed") && html.contains("runs: environment changed"))
        #expect(html.contains("class=\"replay\""), "the timeline marks where a resume replayed")
        if let (dom, log) = try Self.render(rep.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) {
            #expect(dom.contains("data-rendered=\"ok\"") && !log.contains("Uncaught"))
            #expect(try Self.renderCheck(dom)["bars"] as? Int == Self.attempts(run).count, "replays are not attempts")
        }
    }

    @Test func whichInputChangedAndJournalsWithoutParts() throws {
        let d = Harness.tempDir("why-parts")
        Harness.write(d + "/r.lua", "runStage{id = 'x', cmd = 'echo one', stdin = 'a'}\nrunStage{id = 'y', cmd = 'true', cwd = '.'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        Harness.write(d + "/r.lua", "runStage{id = 'x', cmd = 'echo one', stdin = 'b'}\nrunStage{id = 'y', cmd = 'true', cwd = '.'}\n")
        var r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage x: runs: stdin changed"), "\(r.stderr)")
        // An older journal has no fingerprint_parts: resume can only say the fingerprint changed.
        let run = try #require(Harness.latestRun(d))
        let stripped = (Harness.read(run + "/journal.jsonl") ?? "").split(separator: "\n").map { line -> String in
            guard var o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return String(line) }
            o.removeValue(forKey: "fingerprint_parts")
            return String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
        }.joined(separator: "\n") + "\n"
        try stripped.write(toFile: run + "/journal.jsonl", atomically: true, encoding: .utf8)
        Harness.write(d + "/r.lua", "runStage{id = 'x', cmd = 'echo two', stdin = 'b'}\nrunStage{id = 'y', cmd = 'true', cwd = 'sub'}\n")
        try FileManager.default.createDirectory(atPath: d + "/sub", withIntermediateDirectories: true)
        r = try Harness.run(["resume"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage x: runs: fingerprint changed"), "\(r.stderr)")
        // Parts journaled again by that resume: the working directory change is named.
        Harness.write(d + "/r.lua", "runStage{id = 'x', cmd = 'echo two', stdin = 'b'}\nrunStage{id = 'y', cmd = 'true', cwd = '.'}\n")
        r = try Harness.run(["resume"], cwd: d)
        #expect(r.stderr.contains("resume: stage x: replayed"), "\(r.stderr)")
        #expect(r.stderr.contains("resume: stage y: runs: working directory changed"), "\(r.stderr)")
        let never = Harness.tempDir("why-never")
        Harness.write(never + "/r.lua", "runStage{id = 'x', cmd = 'true'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: never).code == 0)
        #expect(try Harness.run(["log", "--why"], cwd: never).stdout.contains("was never resumed"))
    }

    // MARK: live, orphaned, cancelled

    @Test func reportsOfALiveAnOrphanedAndACancelledRun() throws {
        let d = Harness.tempDir("report-live")
        Harness.write(d + "/slow.lua", "runStage{id = 'prep', cmd = 'true'}\nrunStage{id = 'long', cmd = {'sleep', '300'}}\n")
        let o = try Harness.run(["run", "--detach", "slow.lua"], cwd: d)
        let run = String(o.stdout.split(separator: "\n")[1])
        #expect(Harness.waitFor(20) { (Harness.read(run + "/journal.jsonl") ?? "").contains("\"id\":\"long\"") })
        var r = try Harness.run(["report"], cwd: d)
        var html = try #require(Harness.read(run + "/report.html"), "\(r.stderr)")
        #expect(html.contains("st-running") && html.contains("data-status=\"running\"") && html.contains("a snapshot"))
        #expect(html.contains("No final.json yet: the run is still going"))
        // The runner dies: the open attempt is unfinished where it last wrote.
        kill(Int32(Harness.read(run + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        #expect(Harness.waitFor(10) { (try? Harness.run(["status", "--json"], cwd: d))?.stdout.contains("orphaned") == true })
        r = try Harness.run(["report"], cwd: d)
        #expect(r.code == 0)
        html = try #require(Harness.read(run + "/report.html"))
        #expect(html.contains("st-orphaned") && html.contains("data-status=\"unfinished\"") && html.contains("its runner died"))
        #expect(try Harness.run(["cancel"], cwd: d).code == 0)
        #expect(try Harness.run(["report"], cwd: d).code == 0)
        html = try #require(Harness.read(run + "/report.html"))
        #expect(html.contains("st-cancelled") && html.contains("data-status=\"unfinished\""))
        if let (dom, log) = try Self.render(run + "/report.html") {
            #expect(dom.contains("data-rendered=\"ok\"") && !log.contains("Uncaught"))
        }
        #expect(try Harness.run(["report", "nosuchrun"], cwd: d).code == 3)
    }

    @Test func aStoppedRunnerShowsAsAStall() throws {
        let d = Harness.tempDir("report-stall")
        Harness.write(d + "/s.lua", "runStage{id = 'wait', cmd = {'sleep', '3'}}\n")
        let (p, _, _) = try Harness.start(["run", "s.lua"], cwd: d, env: ["BATON_HEARTBEAT_SEC": "0.2"])
        #expect(Harness.waitFor(20) { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("\"heartbeat\"") == true })
        // Stopped for 1.5 s (the stage runs on): no heartbeat for more than three intervals.
        kill(p.processIdentifier, SIGSTOP)
        usleep(1_500_000)
        kill(p.processIdentifier, SIGCONT)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let r = try Harness.run(["report"], cwd: d)
        let html = try #require(Harness.read(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(html.contains("<rect class=\"stall\"") && html.contains("stall: no journal event for 1."), "no stall drawn")
        #expect(html.components(separatedBy: "stall: no journal event").count == 2, "one stall, not one per heartbeat")
    }

    // MARK: size

    /// A 10,000-stage journal written directly (running 10,000 stages would take minutes here).
    static func syntheticRun(_ root: String, stages n: Int) -> String {
        let id = "20261101-000000-abcd"
        let dir = root + "/.baton/runs/" + id
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let t0 = 1_800_000_000.0
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        func ts(_ t: Double) -> String { f.string(from: Date(timeIntervalSince1970: t)) }
        var lines = [#"{"v":1,"seq":1,"ts":"\#(ts(t0))","run":"\#(id)","type":"run_started","recipe":"big.lua","recipe_sha256":"00","args":[],"pid":1,"host":"h","baton_version":"0.2.0","dry_run":false,"cwd":"/"}"#]
        var seq = 1
        for i in 0..<n {
            let s = t0 + Double(i) * 0.01
            seq += 1
            lines.append(#"{"v":1,"seq":\#(seq),"ts":"\#(ts(s))","run":"\#(id)","type":"stage_started","id":"s\#(i)","occurrence":1,"attempt":1,"argv":["/bin/true"],"cwd":"/","fingerprint":"f","logs":{"stdout":"\#(dir)/stages/s\#(i)/1.out","stderr":"\#(dir)/stages/s\#(i)/1.err"},"pid":\#(1000 + i)}"#)
            seq += 1
            lines.append(#"{"v":1,"seq":\#(seq),"ts":"\#(ts(s + 0.008))","run":"\#(id)","type":"stage_finished","id":"s\#(i)","occurrence":1,"attempt":1,"exit":0,"signal":null,"status":"passed","failure_class":null,"signature":null,"duration_ms":8,"logs":{"stdout":"","stderr":""},"fingerprint":"f","replayed":false,"final":true}"#)
        }
        seq += 1
        lines.append(#"{"v":1,"seq":\#(seq),"ts":"\#(ts(t0 + Double(n) * 0.01))","run":"\#(id)","type":"final","status":"succeeded","exit_code":0,"reason":null}"#)
        try! (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/journal.jsonl", atomically: true, encoding: .utf8)
        return dir
    }

    @Test func aTenThousandStageReportIsBoundedAndItsTableCut() throws {
        let d = Harness.tempDir("report-big")
        let run = Self.syntheticRun(d, stages: 10_001)
        let r = try Harness.run(["report"], cwd: d, timeout: 120)
        #expect(r.code == 0, "\(r.stderr)")
        let size = (try FileManager.default.attributesOfItem(atPath: run + "/report.html")[.size] as? Int) ?? 0
        #expect(size > 0 && size <= 20 << 20, "report.html is \(size) bytes")
        let html = try #require(Harness.read(run + "/report.html"))
        #expect(html.contains("id=\"table-cut\"") && html.contains("first 10000 of 10001 stage calls"))
        #expect(html.components(separatedBy: "<rect class=\"bar ").count - 1 == 10_001, "the timeline is not cut")
        #expect(html.components(separatedBy: "<tr class=\"st-").count - 1 == 10_000)
    }

    // MARK: shell

    @Test func theShellWritesTheReportOfTheAttachedOrLatestRun() throws {
        let d = Harness.tempDir("report-shell")
        Harness.write(d + "/one.lua", "runStage{id = 'x', cmd = 'true'}\n")
        #expect(try Harness.run(["run", "one.lua"], cwd: d).code == 0)
        #expect(try Harness.run(["run", "one.lua"], cwd: d).code == 0)
        let runs = Harness.runDirs(d).map { ($0 as NSString).lastPathComponent }
        try #require(runs.count == 2)
        let p = try Pane("report", cwd: d)
        defer { p.kill() }
        p.expectLine(":report", "\(runs[1])/report.html")
        p.expectLine(":attach \(runs[0])", runs[0])
        p.expectLine(":report", "\(runs[0])/report.html")
        p.expectLine(":help report", "write the run's HTML report")
        for r in runs { #expect(FileManager.default.fileExists(atPath: d + "/.baton/runs/\(r)/report.html")) }
    }

    /// Issue 23 item 6: the timeline's labels (the end, resumes, gate iterations) never cover
    /// each other, and a retried attempt of a few milliseconds stays visible, with a tooltip.
    @Test func timelineLabelsNeverOverlapAndTinyRetriesShow() throws {
        let d = Harness.tempDir("report-labels")
        Harness.write(d + "/r.lua", """
            runStage{id = "flaky", cmd = "test -f ok2 || { touch ok2; exit 75; }", retries = 1, transient = {exit = {75}},
                     backoff = {initial = 0.01}}
            gate{name = "verify", maxIterations = 3, check = function(i) return {approved = i >= 3, issues = {}} end}
            runStage{id = "long", cmd = "test -f go || { sleep 3; exit 1; }"}
            """)
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 1)
        Harness.write(d + "/go", "")
        #expect(try Harness.run(["resume"], cwd: d).code == 0)   // a short second life: its marks at the very end
        let run = try #require(Harness.latestRun(d))
        #expect(try Harness.run(["report"], cwd: d).code == 0)
        let html = try #require(Harness.read(run + "/report.html"))
        let re = try NSRegularExpression(pattern: #"<text class="mlabel"( text-anchor="end")? x="([0-9.]+)" y="([0-9.]+)">([^<]*)</text>"#)
        var labels: [(y: Double, a: Double, b: Double, text: String)] = []
        for m in re.matches(in: html, range: NSRange(html.startIndex..., in: html)) {
            func g(_ i: Int) -> String? { Range(m.range(at: i), in: html).map { String(html[$0]) } }
            let x = Double(g(2)!)!, y = Double(g(3)!)!, text = g(4)!
            // The same generous width the report places them with: 6.2 px a character (10 px font).
            let w = Double(text.count) * 6.2
            labels.append(g(1) != nil ? (y, x - w, x, text) : (y, x, x + w, text))
        }
        #expect(labels.contains { $0.text.hasPrefix("succeeded (exit 0)") }, "the end keeps its label: \(labels)")
        for (i, l) in labels.enumerated() {
            for k in labels.indices where k > i && labels[k].y == l.y {
                #expect(!(l.a < labels[k].b && labels[k].a < l.b), "'\(l.text)' covers '\(labels[k].text)'")
            }
        }
        #expect(labels.filter { $0.text.hasPrefix("verify ") }.count < 3, "three gate iterations within milliseconds: not three labels")
        #expect(html.contains("<title>resume 1 at "), "a resume without room for its label keeps a tooltip")
        let bar = try NSRegularExpression(pattern: #"<rect class="bar [^"]*retried"[^>]*width="([0-9.]+)"[^>]*><title>flaky attempt 1"#)
        let m = try #require(bar.firstMatch(in: html, range: NSRange(html.startIndex..., in: html)), "the retried attempt's bar")
        let w = Double(html[Range(m.range(at: 1), in: html)!])!
        #expect(w >= 3, "a retried attempt of a few ms stays visible: \(w) px")
    }
}
