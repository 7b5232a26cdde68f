import Foundation
import Testing

/// Debugging a stuck run from inside (issue 17): `status` says why a live run waits; the
/// control socket; `baton attach`; control events.
@Suite(.serialized) struct AttachTests {
    /// Starts `recipe` detached in a fresh directory and waits until `ready` holds on `status --json`.
    static func detached(_ name: String, _ recipe: String, until ready: @escaping (String) -> Bool) throws -> (dir: String, run: String) {
        let d = Harness.tempDir(name)
        Harness.write(d + "/r.lua", recipe)
        let start = try Harness.run(["run", "--detach", "r.lua"], cwd: d)
        #expect(start.code == 0, "\(start.stderr)")
        let run = Harness.latestRun(d)!
        let ok = Harness.waitFor(20) {
            let s = (try? Harness.run(["status", "--json"], cwd: d))?.stdout ?? ""
            return ready(s)
        }
        #expect(ok, "the run never got ready: \(Harness.read(run + "/run.out") ?? "")")
        return (d, run)
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
            """) { $0.contains("still going") }
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
}
