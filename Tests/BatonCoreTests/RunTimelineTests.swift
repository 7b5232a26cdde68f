import BatonBase
import BatonCore
import Testing

/// The journal folded over time (what `baton report` draws): lanes, retries, lives, stalls,
/// resume decisions; and resume's decision itself.
@Suite struct RunTimelineTests {
    final class Journal {
        var events: [JournalEvent] = []
        func add(_ ts: Double, _ body: EventBody) { events.append(JournalEvent(seq: Int64(events.count + 1), ts: ts, run: "r", body: body)) }
        let logs = StageLogs(stdout: "/x/1.out", stderr: "/x/1.err")
        func begin(_ ts: Double, resumed: Bool = false) {
            let b = RunBegan(recipe: "r.lua", recipeSHA256: "", args: [], pid: 1, host: "h", dryRun: false, cwd: "/")
            add(ts, resumed ? .runResumed(b) : .runStarted(b))
        }
        func start(_ ts: Double, _ id: String, attempt: Int = 1, why: ResumeWhy? = nil) {
            var s = StageStarted(key: StageKey(id: id, occurrence: 1), attempt: attempt, command: .argv(["true"]), cwd: "/",
                                 fingerprint: "f", logs: logs)
            s.why = why
            add(ts, .stageStarted(s))
        }
        func finish(_ ts: Double, _ id: String, attempt: Int = 1, _ status: StageStatus = .passed, final: Bool = true, replayed: Bool = false) {
            var f = StageFinished(key: StageKey(id: id, occurrence: 1), attempt: attempt, status: status, durationMs: 10, logs: logs,
                                  fingerprint: "f")
            f.final = final
            f.replayed = replayed
            add(ts, .stageFinished(f))
        }
    }

    @Test func callsGetLanesThatNeverOverlapAndRetriesShareTheirCallsLane() {
        let j = Journal()
        j.begin(0)
        j.start(1, "a")
        j.start(1.5, "bg")                                  // in the background, beside a
        j.finish(2, "a", .failed, final: false)
        j.start(3, "a", attempt: 2)                         // after a second of backoff
        j.finish(4, "a", attempt: 2)
        j.finish(4.5, "bg")
        j.start(5, "c")
        j.finish(6, "c")
        let t = RunTimeline(j.events, live: false)
        #expect(t.attempts.count == 4)
        #expect(t.laneCount == 2)
        #expect(t.lanes == [0, 1, 0, 0], "a's retry stays on a's lane; c reuses the first free lane")
        #expect(t.attempts[0].status == .ended(.failed) && !t.attempts[0].final && t.attempts[2].status == .ended(.passed))
        for l in 0..<t.laneCount {
            let on = t.attempts.indices.filter { t.lanes[$0] == l }.map { (t.attempts[$0].start, t.end(of: t.attempts[$0])) }
            for (x, y) in zip(on, on.dropFirst()) { #expect(x.1 <= y.0) }
        }
    }

    @Test func aDeadRunnersOpenAttemptIsUnfinishedAndAResumeRecordsItsDecisions() {
        let j = Journal()
        j.begin(0)
        j.start(1, "a")
        j.finish(2, "a")
        j.start(3, "b")                                     // the runner dies here
        j.begin(100, resumed: true)
        j.finish(100.1, "a", replayed: true)
        j.start(100.2, "b", why: ResumeWhy(reason: .not_passed))
        j.finish(101, "b")
        let t = RunTimeline(j.events, live: false)
        #expect(t.lives.count == 2 && t.lives[1].resumed)
        let dead = t.attempts.first { $0.key.id == "b" && $0.life == 0 }
        #expect(dead?.status == .unfinished && dead?.end == 3, "ends where its runner last wrote")
        #expect(t.decisions.map(\.key.id) == ["a", "b"] && t.decisions.map(\.life) == [1, 1])
        #expect(t.decisions[0].why.replayed && t.decisions[1].why.sentence == "runs: did not pass before")
        #expect(t.stalls.isEmpty, "the time between two lives is not a stall")
        // A live run: the open attempt runs to now.
        let live = Journal()
        live.begin(0)
        live.start(1, "x")
        let lt = RunTimeline(live.events, live: true, now: 5)
        #expect(lt.attempts[0].status == .running && lt.end(of: lt.attempts[0]) == 5)
    }

    @Test func aGapLongerThanThreeHeartbeatsIsAStall() {
        let j = Journal()
        j.begin(0)
        j.start(1, "a")
        j.add(3, .heartbeat(Heartbeat(waitingOn: "stage", id: "a", forMs: 2000)))
        j.add(5, .heartbeat(Heartbeat(waitingOn: "stage", id: "a", forMs: 4000)))
        j.add(20, .heartbeat(Heartbeat(waitingOn: "stage", id: "a", forMs: 19000)))   // SIGSTOPped for 15 s
        j.finish(21, "a")
        let t = RunTimeline(j.events, live: false)
        #expect(t.heartbeatInterval == 2)
        #expect(t.stalls.count == 1 && t.stalls.first?.start == 5 && t.stalls.first?.end == 20)
        // Live, and nothing written for longer than three intervals: stalled now.
        let lt = RunTimeline(j.events.dropLast(), live: true, now: 40)
        #expect(lt.stalls.last?.start == 20 && lt.stalls.last?.end == 40)
    }

    @Test func fingerprintPartsNameWhatChanged() {
        var s = StageSpec(id: "s", command: .argv(["make"]))
        s.env = ["A": "1"]
        let before = FingerprintParts(s)
        s.env = ["A": "2"]
        s.stdin = "x"
        #expect(FingerprintParts(s).changed(from: before) == ["env", "stdin"])
        s.cwd = "sub"
        s.command = .shell("make")
        #expect(FingerprintParts(s).changed(from: before) == ["command", "cwd", "env", "stdin"])
        #expect(ResumeWhy(reason: .changed, changed: ["command", "cwd", "env"]).sentence
                    == "runs: command, working directory and environment changed")
        #expect(ResumeWhy(reason: .changed).sentence == "runs: fingerprint changed")
        #expect(ResumeWhy(reason: .after_ran, after: "build #2").sentence == "runs because an earlier stage ran (build #2)")
    }
}
