import BatonBase
import BatonCore
@testable import BatonLua
import Foundation
import LuaKit
import Testing

/// The recipe environment in-process: a real run context in a temporary directory.
@Suite struct EnvironmentTests {
    func env() throws -> RecipeEnvironment {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("baton-env-\(UUID().uuidString.prefix(8))").path
        let e = RecipeEnvironment(memoryLimit: 256 << 20, output: OutputOptions(json: true, quiet: true))
        e.context = try RunContext.start(store: RunStore(root: root), id: nil, recipe: "t.lua", recipeText: [], args: [], dryRun: false)
        e.publishRun()
        e.setArguments(recipe: "t.lua", words: ["a", "k=v"])
        return e
    }

    func run(_ e: RecipeEnvironment, _ code: String) -> Ending {
        RecipeRunner.evaluate(env: e, recipe: "t.lua", text: Array(code.utf8), readError: nil)
    }

    @Test func suggestions() {
        #expect(suggestion("retrys", RecipeEnvironment.stageFields) == "retries")
        #expect(suggestion("requirefiles", RecipeEnvironment.stageFields) == "requireFiles")
        #expect(suggestion("zzzzzz", RecipeEnvironment.stageFields) == nil)
        #expect(editDistance(Array("kitten".utf8), Array("sitting".utf8)) == 3)
    }

    @Test func endingsMapToExitCodes() throws {
        let e = try env()
        #expect(run(e, "return {x = 1}").code == 0)
        #expect(e.context?.result["x"] == .int(1))
        let err = run(try env(), "error('boom')")
        #expect(err.code == 1 && err.reason == "t.lua:1: boom")
        let usage = run(try env(), "runStage{id = 'x', cmd = 'true', cwdd = '.'}")
        #expect(usage.code == 3 && (usage.reason ?? "").contains("did you mean 'cwd'"))
        #expect(run(try env(), "baton.fail('x', {code = 42})").code == 42)
        #expect(run(try env(), "local x = = 2").code == 3)
        let gate = run(try env(), "gate{name = 'g', check = function() return {approved = false, issues = {'no'}} end}")
        #expect(gate.code == 2 && (gate.reason ?? "").contains("no"))
    }

    @Test func argumentsAndRunTable() throws {
        let e = try env()
        let r = run(e, "assert(arg[1] == 'a' and baton.args.k == 'v' and baton.run.id == '\(e.context!.dir.id)')")
        #expect(r.code == 0, "\(r.reason ?? "")")
    }

    @Test func gateOutputParsing() {
        #expect(GateOutput.lastObject("noise\n{\"approved\": false}\nmore\n{\"approved\": true, \"issues\": [], \"m\": {\"a\": 1}}\n")?["approved"] == .bool(true))
        #expect(GateOutput.lastObject("no json here") == nil)
        #expect(GateOutput.lastObject("{\"approved\": true} trailing") != nil)
    }
}
