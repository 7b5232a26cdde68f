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

    /// An executor's table is read by its kind's declaration into generic values, kept as given;
    /// the executor decodes them (numbers: seconds, MiB, a count); a stage's lay over the run's.
    @Test func executorTablesAreReadByTheirDeclaredOptions() throws {
        let e = try env()
        let l = e.lua
        let kind = try #require(Executors.kind("slurm"))
        func read(_ table: String, allowed: [String]? = nil) throws -> ExecutorOptions {
            let base = l.top
            defer { l.top = base }
            try l.load(Array("return \(table)".utf8), name: "=t")
            try l.pcall(nargs: 0, nresults: 1)
            let t = try SpecTable(l, arg: -1, fn: "runStage: field 'slurm'", allowed: allowed ?? kind.stageOptionNames)
            return try RecipeEnvironment.executorOptions(t, kind.options)
        }
        let o = try read("{time = 90, mem = 512, cpus = 2, gpus = 'a100:1', extra = '--constraint=ib'}")
        #expect(o["time"] == .number(90) && o["mem"] == .number(512) && o["cpus"] == .number(2))
        #expect(o["gpus"] == .string("a100:1") && o["extra"] == .strings(["--constraint=ib"]))
        let slurm = SlurmOptions(o)
        #expect(slurm.time == "2" && slurm.mem == "512M" && slurm.cpus == 2 && slurm.gpus == "a100:1")
        let defaults = try read("{partition = 'cpu', time = '30', extra = {'--a'}, poll = 2}", allowed: kind.runOptionNames)
        #expect(defaults["poll"] == .number(2))
        let merged = SlurmOptions(o.over(defaults))
        #expect(merged.partition == "cpu" && merged.time == "2" && merged.extra == ["--a", "--constraint=ib"])
        #expect(throws: LuaRaise.self) { try read("{cpus = 0}") }
        #expect(throws: LuaRaise.self) { try read("{time = true}") }
        #expect(throws: LuaRaise.self) { try read("{poll = 2}") }
    }
}
