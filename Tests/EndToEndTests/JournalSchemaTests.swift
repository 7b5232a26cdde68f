import BatonBase
import BatonCore
import Foundation
import Testing

/// docs/journal.md ↔ code, from the other side: real runs write every field of every event
/// type the schema lists (RecordTests holds the schema to the doc), and nothing else.
@Suite struct JournalSchemaTests {
    static let main = """
        preflight{name = "tools", policy = "warn", checks = {{path = "r.lua"}, {path = "/nonexistent"}}}
        runStage{id = "argv", cmd = {"sleep", "0.5"}, timeout = 60}
        runStage{id = "files", cmd = "echo x > out.txt", inputs = {"r.lua"}, outputs = {"out.txt"}, cache = true}
        runStage{id = "cached", cmd = "echo x > out.txt", inputs = {"r.lua"}, outputs = {"out.txt"}, cache = true}
        runStage{id = "retry", cmd = "exit 75", retries = 1, transient = {exit = {75}}, backoff = {initial = 0.01}, allowFail = true}
        runStage{id = "nofile", cmd = "true", requireFiles = {"absent.txt"}, allowFail = true}
        runStage{id = "breaker", cmd = "exit 2", breaker = 1, allowFail = true}
        runStage{id = "quiet", cmd = {"sleep", "5"}, noOutputTimeout = 0.6, grace = 0.2, allowFail = true}
        local bg = runStage{id = "job", cmd = "sleep 0.1; echo 1 > m.json", background = true}
        watch{id = "w", handle = bg, requireFiles = {"m.json"}, readyTimeoutSec = 5, callback = function() return {} end}
        gate{name = "g", cmd = "echo not json", fallback = {approved = true, issues = {}}}
        baton.sh("true")
        baton.sh({"true"})
        baton.log("hello", {k = 1})
        return {}
        """

    @Test func realRunsWriteExactlyTheDocumentedFields() throws {
        let d = Harness.tempDir("schema")
        Harness.write(d + "/r.lua", Self.main)
        var events: [[String: Any]] = []
        let r = try Harness.run(["run", "r.lua"], cwd: d, env: ["BATON_HEARTBEAT_SEC": "0.2", "BATON_STALL_WARN_SEC": "0.3"])
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let mainRun = try #require(Harness.latestRun(d))
        // A resume after a corrupt middle line and a torn tail.
        var text = try #require(Harness.read(mainRun + "/journal.jsonl"))
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // (A log line: a corrupt stage_started would leave its replay without fingerprint_parts.)
        let logLine = try #require(lines.firstIndex { $0.contains("\"type\":\"log\"") })
        lines[logLine] = "{garbage"
        text = lines.joined(separator: "\n") + "{\"torn"
        try text.write(toFile: mainRun + "/journal.jsonl", atomically: true, encoding: .utf8)
        let resumed = try Harness.run(["resume"], cwd: d)
        #expect(resumed.code == 0, "stderr: \(resumed.stderr)")
        // (One line is garbage now: read the rest line by line.)
        for line in (Harness.read(mainRun + "/journal.jsonl") ?? "").split(separator: "\n") {
            if let e = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { events.append(e) }
        }
        #expect(events.contains { $0["type"] as? String == "run_resumed" })
        // A dry run.
        Harness.write(d + "/dry.lua", "runStage{id = 's', cmd = 'true'}\nbaton.sh('true')\nbaton.fs.write('x', 'y')\n")
        #expect(try Harness.run(["run", "--dry-run", "dry.lua"], cwd: d).code == 0)
        events += Harness.journal(try #require(Harness.latestRun(d)))
        // An orphan that `cancel` finishes (killed_pids).
        Harness.write(d + "/orphan.lua", "runStage{id = 'hang', cmd = {'sleep', '300'}}\n")
        let o = try Harness.run(["run", "--detach", "orphan.lua"], cwd: d)
        let orphan = String(o.stdout.split(separator: "\n")[1])
        #expect(Harness.waitFor(20) { (Harness.read(orphan + "/journal.jsonl") ?? "").contains("\"stage_started\"") })
        kill(Int32(Harness.read(orphan + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
        #expect(Harness.waitFor(10) { (try? Harness.run(["status", "--json"], cwd: d))?.stdout.contains("orphaned") == true })
        #expect(try Harness.run(["cancel"], cwd: d).code == 0)
        events += Harness.journal(orphan)
        // A live run a control client acts on (control).
        Harness.write(d + "/live.lua", "watch{id = 'w', file = 'never', timeoutSec = 60}\n")
        let live = String(try Harness.run(["run", "--detach", "live.lua"], cwd: d).stdout.split(separator: "\n")[1])
        #expect(Harness.waitFor(20) { (Harness.read(live + "/journal.jsonl") ?? "").contains("\"to\":\"running\"") })
        _ = try Harness.run(["attach", (live as NSString).lastPathComponent], cwd: d, stdin: ":skip w\n")
        #expect(Harness.waitFor(20) { Harness.final(live) != nil })
        events += Harness.journal(live)
        // A run paused at a breakpoint that goes on by its --break-timeout (paused, resumed_from_pause).
        Harness.write(d + "/brk.lua", "runStage{id = 's', cmd = 'true'}\n")
        #expect(try Harness.run(["run", "--break", "s", "--break-timeout", "0.1", "brk.lua"], cwd: d, stdin: "").code == 0)
        events += Harness.journal(try #require(Harness.latestRun(d)))
        // A Slurm job: queued with a reason, running on a node, re-attached by a resume after kill -9.
        var slurmOnly: [String: Set<String>] = [:]
        if let conf = SlurmCluster.conf {
            Harness.write(d + "/slurm.lua", "runStage{id = 'sj', cmd = {'sleep', '3'}, executor = 'slurm', slurm = {extra = {'--begin=now+2'}}}\n")
            let env = ["SLURM_CONF": conf, "BATON_SLURM_POLL_SEC": "0.3"]
            let s = try Harness.run(["run", "--detach", "slurm.lua"], cwd: d, env: env)
            let run = String(s.stdout.split(separator: "\n")[1])
            #expect(Harness.waitFor(60) { (Harness.read(run + "/journal.jsonl") ?? "").contains("\"state\":\"RUNNING\"") })
            kill(Int32(Harness.read(run + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines))!, SIGKILL)
            #expect(Harness.waitFor(10) { !FileManager.default.fileExists(atPath: "/proc/" + Harness.read(run + "/run.pid")!.trimmingCharacters(in: .whitespacesAndNewlines)) })
            let r = try Harness.run(["resume", (run as NSString).lastPathComponent], cwd: d, env: env)
            #expect(r.code == 0, "\(r.stderr)")
            events += Harness.journal(run)
        } else {
            print("slurm: the Slurm fields of the journal are not checked here: Slurm cannot start")
            slurmOnly = ["stage_started": ["executor", "native_id", "reattached"],
                         "stage_queued": Set(StageQueued.fieldNames)]
        }

        let envelope = Set(JournalEvent.envelope)
        var seen: [String: Set<String>] = [:]
        for e in events {
            let type = e["type"] as? String ?? "?"
            let fields = Set(e.keys).subtracting(envelope)
            let documented = Set(EventBody.schema.first { $0.type == type }?.fields ?? [])
            #expect(fields.isSubset(of: documented), "\(type) writes undocumented fields \(fields.subtracting(documented).sorted())")
            seen[type, default: []].formUnion(fields)
        }
        for (type, fields) in EventBody.schema {
            let missing = Set(fields).subtracting(seen[type] ?? []).subtracting(slurmOnly[type] ?? [])
            #expect(missing.isEmpty, "\(type): documented but never written here: \(missing.sorted())")
        }
    }
}
