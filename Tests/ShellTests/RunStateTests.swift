import BatonBase
@testable import BatonCLI
import BatonCore
import Glibc
import Testing

/// The value `:attach` gives `run`.
@Suite struct RunStateTests {
    @Test func stagesCarryTheirResults() throws {
        let root = "/tmp/baton-shell-runstate-\(getpid())-\(Int(Clock.now() * 1000))"
        let ctx = try RunContext.start(store: RunStore(root: root), id: nil, recipe: "r.lua", recipeText: [], args: [], dryRun: false)
        let exec = ctx.startStage(StageSpec(id: "hello", command: .argv(["echo", "hi"])))
        _ = ctx.wait(for: exec)
        ctx.finish(status: .succeeded, exitCode: 0, reason: nil)
        let info = RunInfo.load(ctx.dir)
        let j = RunState.json(info)
        #expect(j["state"]?.stringValue == "succeeded")
        #expect(j["live"] == .bool(false))
        let stages = try #require(j["stages"]?.arrayValue)
        #expect(stages.count == 1)
        #expect(stages[0]["id"]?.stringValue == "hello")
        #expect(stages[0]["status"]?.stringValue == "passed")
        #expect(stages[0]["exit"]?.intValue == 0)
        #expect(stages[0]["cmd"] == .array([.string("echo"), .string("hi")]))
        #expect((j["events"]?.arrayValue?.count ?? 0) >= 4)
        #expect(j["final"]?["status"]?.stringValue == "succeeded")
    }
}
