import Foundation
import Glibc
import Testing

/// `journal.snapshot` (docs/journal.md): `status` of a run reads the runner's snapshot and the
/// journal's tail, and says exactly what it says from the whole journal, live, after a
/// kill -9, and ended.
@Suite struct SnapshotTests {
    /// `status --json` without what changes from one call to the next (how long ago, for how long).
    func status(_ d: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> NSDictionary {
        let r = try Harness.run(["status", "--json"], cwd: d)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                             "\(r.stdout) \(r.stderr)", sourceLocation: sourceLocation)
        func strip(_ v: Any) -> Any {
            if let o = v as? [String: Any] {
                return o.filter { !$0.key.hasSuffix("_ms") && $0.key != "for_s" && $0.key != "last_line" }.mapValues(strip)
            }
            if let a = v as? [Any] { return a.map(strip) }
            return v
        }
        return strip(o) as! NSDictionary
    }

    /// Status from the snapshot and the tail, then with the snapshot moved away (the whole journal).
    func sameWithoutSnapshot(_ d: String, _ run: String, _ when: String,
                             sourceLocation: SourceLocation = #_sourceLocation) throws -> NSDictionary {
        let snap = run + "/journal.snapshot"
        #expect(FileManager.default.fileExists(atPath: snap), "\(when): no snapshot", sourceLocation: sourceLocation)
        let fromSnapshot = try status(d)
        try FileManager.default.moveItem(atPath: snap, toPath: d + "/saved.snapshot")
        let whole = try status(d)
        try FileManager.default.moveItem(atPath: d + "/saved.snapshot", toPath: snap)
        #expect(fromSnapshot == whole, "\(when): from the snapshot \(fromSnapshot)\nwhole \(whole)",
                sourceLocation: sourceLocation)
        return fromSnapshot
    }

    @Test func statusFromTheSnapshotIsStatusFromTheWholeJournalLiveAfterKill9AndEnded() throws {
        let d = Harness.tempDir("snapshot")
        // Over 1 MiB of journal before the recipe first waits: the runner writes a snapshot then.
        Harness.write(d + "/r.lua", """
            local big = string.rep("x", 100000)
            for i = 1, 15 do runStage{id = "big", cmd = {"true", "big " .. i .. " " .. big}} end
            runStage{id = "quick", cmd = {"true"}}
            local h = runStage{id = "slow", cmd = {"sleep", "60"}, background = true, timeout = 120}
            baton.log("waiting")
            h:wait()
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor(60) {
            guard let run = Harness.latestRun(d) else { return false }
            return FileManager.default.fileExists(atPath: run + "/journal.snapshot")
                && Harness.read(run + "/journal.jsonl")?.contains("\"waiting\"") == true
        })
        let run = try #require(Harness.latestRun(d))
        let live = try sameWithoutSnapshot(d, run, "live")
        #expect(live["state"] as? String == "running" && (live["running"] as? [Any])?.count == 1, "\(live)")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(Harness.waitFor { (try? status(d))?["state"] as? String == "orphaned" })
        let orphaned = try sameWithoutSnapshot(d, run, "after kill -9")
        #expect(orphaned["stages_finished"] as? Int == 16)

        // The snapshot is what status read: a line before its offset, broken by hand (a
        // journal's middle is never rewritten), is seen only when the whole journal is read.
        var bytes = try #require(FileManager.default.contents(atPath: run + "/journal.jsonl"))
        let at = try #require(bytes.range(of: Data("\"big 3 ".utf8))).lowerBound   // (its opening quote)
        bytes[at] = UInt8(ascii: "x")
        try bytes.write(to: URL(fileURLWithPath: run + "/journal.jsonl"))
        #expect((try status(d))["problems"] as? [String] == [], "status read the snapshot, not the broken line")
        try FileManager.default.removeItem(atPath: run + "/journal.snapshot")
        #expect(((try status(d))["problems"] as? [String])?.first?.contains("line") == true)

        // Ended: `cancel` finishes the orphan (its `final` is the snapshot's tail); a resume that
        // ends writes a snapshot of the whole journal.
        bytes[at] = UInt8(ascii: "\"")
        try bytes.write(to: URL(fileURLWithPath: run + "/journal.jsonl"))
        let recipe = try #require(Harness.read(d + "/r.lua"))
        Harness.write(d + "/r.lua", recipe.replacingOccurrences(of: "\"60\"", with: "\"0\""))
        let r = try Harness.run(["resume", "latest"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        let ended = try sameWithoutSnapshot(d, run, "resumed and ended")
        #expect(ended["state"] as? String == "succeeded", "\(ended)")
    }
}
