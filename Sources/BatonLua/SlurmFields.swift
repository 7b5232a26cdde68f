import BatonBase
import BatonCore
import CLua
import LuaKit

extension RecipeEnvironment {
    /// `slurm = {partition, time, mem, cpus, gpus, account, qos, extra}` of a stage or of
    /// `baton.executor("slurm", {...})` (where `poll` is allowed too).
    static func slurmOptions(_ t: SpecTable) throws -> SlurmOptions {
        var o = SlurmOptions()
        o.partition = try t.string("partition", nonEmpty: true)
        // A number is seconds for `time` (Slurm counts whole minutes), MiB for `mem`, a count for `gpus`.
        o.time = try isNumber(t, "time") ? t.number("time", min: 1).map { "\(Int(($0 / 60).rounded(.up)))" } : t.string("time", nonEmpty: true)
        o.mem = try isNumber(t, "mem") ? t.integer("mem", min: 1).map { "\($0)M" } : t.string("mem", nonEmpty: true)
        o.cpus = try t.integer("cpus", min: 1)
        o.gpus = try isNumber(t, "gpus") ? t.integer("gpus", min: 0).map(String.init) : t.string("gpus", nonEmpty: true)
        o.account = try t.string("account", nonEmpty: true)
        o.qos = try t.string("qos", nonEmpty: true)
        o.extra = try t.stringList("extra") ?? []
        return o
    }

    static func isNumber(_ t: SpecTable, _ key: String) -> Bool {
        let ty = t.get(key)
        t.lua.pop()
        return ty == LUA_TNUMBER
    }

    /// `runStage{executor = ..., slurm = {...}}`.
    func stageExecutor(_ t: SpecTable, _ spec: inout StageSpec, fn: String) throws {
        spec.executor = try t.choice("executor", Executors.names)
        if let s = try t.table("slurm", allowed: SlurmOptions.fieldNames) {
            defer { t.lua.pop() }
            spec.slurm = try RecipeEnvironment.slurmOptions(s)
        }
    }

    /// `baton.executor(name [, options])`: the executor of every stage that names none, and
    /// for Slurm the options they start from (`poll`: seconds between status queries).
    func batonExecutor(_ l: LuaState) throws -> Int32 {
        let fn = "baton.executor"
        guard let name = l.string(1), Executors.names.contains(name) else {
            throw LuaRaise.usage("\(fn): the executor must be one of \(Executors.names.map { "'\($0)'" }.joined(separator: ", "))")
        }
        let ctx = try requireContext()
        var options = SlurmOptions()
        var poll: Double?
        if l.type(2) != LUA_TNONE && l.type(2) != LUA_TNIL {
            let t = try SpecTable(l, arg: 2, fn: fn, allowed: SlurmOptions.fieldNames + ["poll"])
            options = try RecipeEnvironment.slurmOptions(t)
            poll = try t.number("poll", min: 0.05)
        }
        ctx.defaultExecutor = name
        if name == "slurm" {
            ctx.slurmDefaults = options
            if let p = poll, let s = try ctx.executor(named: "slurm") as? SlurmExecutor { s.pollInterval = p }
        }
        return 0
    }
}
