import BatonBase
import BatonCore
import Foundation
import Glibc
import Testing

/// Watch, gate and preflight through BatonCore alone: the recipe's callbacks are Swift
/// closures, no Lua involved.
@Suite struct CallerTaskTests {
    func context() throws -> RunContext {
        try RunContext.start(store: RunStore(root: tempDir()), id: nil, recipe: "core-test", recipeText: [], args: [],
                             dryRun: false)
    }

    func events(_ ctx: RunContext, _ type: String) throws -> [JournalEvent] {
        try JournalReader.read(ctx.dir.journal).events.filter { $0.type == type }
    }

    // MARK: watch

    @Test func watchOnAFileThatAppearsLater() throws {
        let ctx = try context()
        let path = tempDir() + "/later/ready.txt"
        _ = ctx.startStage(StageSpec(id: "writer", command: .shell("sleep 0.3; mkdir -p \(FileIO.dirname(path)); touch \(path)")))
        var spec = WatchSpec(id: "w", target: .file(path))
        spec.readyPoll = 30   // inotify, not polling, must notice it
        let began = Clock.monotonic()
        let r = try ctx.watch(spec)
        #expect(Clock.monotonic() - began < 10)
        #expect(r.ok && r.state == .completed)
        #expect(r.transitions == [.queued, .running, .exited, .completed])
        #expect(r.reason == "done")
        let moves = try events(ctx, "watch")
        #expect(moves.count == 4)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    @Test func watchAStageThenItsFilesThenTheCallback() throws {
        let ctx = try context()
        let d = tempDir()
        let stage = ctx.startStage(StageSpec(id: "make", command: .shell("sleep 0.2; echo 42 > \(d)/out.txt")))
        var spec = WatchSpec(id: "w", target: .stage(stage))
        spec.requireFiles = [d + "/out.txt"]
        var seen: JSON?
        var ended: [String] = []
        spec.onStageEnded = { ended.append($0.id) }
        spec.callback = { info in
            seen = info
            return .object([("metric", .int(42))])
        }
        let r = try ctx.watch(spec)
        #expect(ended == ["make"])
        #expect(seen?["state"] == .string("callback_running"))
        #expect(seen?["status"] == .string("passed") && seen?["exit"] == .int(0))
        #expect(seen?["missing"] == .array([]))
        #expect(r.callbackResult?["metric"] == .int(42))
        #expect(r.transitions == [.queued, .running, .exited, .awaiting_artifacts, .callback_queued, .callback_running,
                                  .completed])
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    @Test func watchTimeoutIsAnErrorUnlessAllowed() throws {
        let ctx = try context()
        var spec = WatchSpec(id: "w", target: .file(tempDir() + "/never"))
        spec.timeout = 0.2
        do {
            _ = try ctx.watch(spec)
            Issue.record("a watch that timed out returned")
        } catch let e as PrimitiveError {
            #expect(e.kind == "watch" && e.status == .failure)
            #expect(e.message.contains("did not appear within timeoutSec = 0.2"))
            #expect(e.attachment?.field == "outcome" && e.attachment?.value["state"] == .string("failed"))
        }
        spec.id = "w2"
        spec.allowFail = true
        let r = try ctx.watch(spec)
        #expect(!r.ok && r.state == .failed)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    @Test func missingFilesBlockWithOnMissingBlock() throws {
        let ctx = try context()
        var spec = WatchSpec(id: "w")
        spec.requireFiles = [tempDir() + "/absent"]
        spec.readyTimeout = 0.2
        spec.readyPoll = 0.05
        spec.onMissing = .block
        spec.callback = { _ in Issue.record("no callback when blocked"); return nil }
        let r = try ctx.watch(spec)
        #expect(r.state == .blocked && !r.ok && r.failure == nil)
        #expect(r.missing == spec.requireFiles)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    @Test func aCallbackErrorFailsTheWatchAndIsThrownOn() throws {
        struct Boom: Error {}
        let ctx = try context()
        var spec = WatchSpec(id: "w")
        spec.requireFiles = ["/bin/sh"]
        spec.callback = { _ in throw CallbackError(reason: "callback raised: boom", error: Boom()) }
        #expect(throws: Boom.self) { try ctx.watch(spec) }
        guard case let .watch(last)? = try events(ctx, "watch").last?.body else { Issue.record("no watch event"); return }
        #expect(last.to == .failed && last.reason == "callback raised: boom")
        #expect(ctx.loop.tasks.isEmpty || ctx.loop.tasks.allSatisfy(\.isFinished))
        ctx.finish(status: .failed, exitCode: 1, reason: "x")
    }

    // MARK: gate

    @Test func gateIterationsWithAClosure() throws {
        let ctx = try context()
        var rejected: [Int] = []
        var spec = GateSpec(name: "review", decider: .check({ i in
            .object([("approved", .bool(i == 3)), ("issues", i == 3 ? .array([]) : .string("try \(i)"))])
        }))
        spec.maxIterations = 5
        spec.onReject = { d, i in
            #expect(d["iteration"] == .int(Int64(i)) && d["issues"] == .array([.string("try \(i)")]))
            rejected.append(i)
        }
        var verdicts: [String] = []
        spec.onDecision = { verdicts.append($0.verdict) }
        let d = try ctx.gate(spec)
        #expect(d.approved && d.iteration == 3)
        #expect(d.json["fallback_used"] == .bool(false))
        #expect(rejected == [1, 2])
        #expect(verdicts == ["rejected: try 1", "rejected: try 2", "approved"])
        #expect(try events(ctx, "gate").count == 3)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    @Test func gateExhaustedCarriesTheLastDecision() throws {
        let ctx = try context()
        var spec = GateSpec(name: "g", decider: .check({ _ in nil }))
        spec.maxIterations = 2
        spec.fallback = .object([("approved", .bool(false)), ("issues", .array([.string("no answer")]))])
        do {
            _ = try ctx.gate(spec)
            Issue.record("an exhausted gate returned")
        } catch let e as PrimitiveError {
            #expect(e.status == .gateExhausted && e.message == "gate 'g' rejected 2 times: no answer")
            #expect(e.attachment?.value["fallback_used"] == .bool(true))
        }
        ctx.finish(status: .failed, exitCode: 4, reason: "x")
    }

    @Test func gateCommandPrintsTheDecision() throws {
        let ctx = try context()
        var spec = GateSpec(name: "g", decider: .command(.shell(
            #"echo noise; if [ "$BATON_GATE_ITERATION" = 2 ]; then echo '{"approved": true}'; else echo '{"approved": false}'; fi"#)))
        spec.maxIterations = 3
        let d = try ctx.gate(spec)
        #expect(d.approved && d.iteration == 2 && d.issues == .array([]))
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }

    // MARK: preflight

    @Test func preflightRunsEveryCheckAndFailsByPolicy() throws {
        let ctx = try context()
        var spec = PreflightSpec()
        spec.name = "pre"
        var called = 0
        spec.checks = [
            PreflightItem(.check(.path("/bin/sh", directory: false, executable: true)), name: nil, index: 1),
            PreflightItem(.check(.command(.shell("exit 3"), cwd: nil, timeout: 5)), name: "three", index: 2),
            PreflightItem(.function({ called += 1; return (true, "fine") }), name: nil, index: 3),
        ]
        do {
            _ = try ctx.preflight(spec)
            Issue.record("a failed preflight returned")
        } catch let e as PrimitiveError {
            #expect(e.status == .preflightFailed)
            #expect(e.message == "preflight 'pre' failed: cmd three (exit 3): exit code 3")
            let checks = e.attachment?.value["checks"]?.arrayValue ?? []
            #expect(checks.map { $0["ok"] } == [.bool(true), .bool(false), .bool(true)])
            #expect(checks[2]["target"] == .string("check 3") && checks[2]["detail"] == .string("fine"))
        }
        #expect(called == 1)
        spec.policy = .warn
        let r = try ctx.preflight(spec)
        #expect(!r.ok && r.failure != nil)
        #expect(try events(ctx, "preflight").count == 2)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
    }
}
