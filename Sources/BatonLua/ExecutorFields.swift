import BatonBase
import BatonCore
import CLua
import LuaKit

extension RecipeEnvironment {
    /// An executor's table (`runStage{<name> = {...}}`, `baton.executor(name, {...})`), read by
    /// the options its kind declares: each value checked against its declared kind, kept as
    /// given (the executor decodes what a number means).
    static func executorOptions(_ t: SpecTable, _ declared: [ExecutorOption]) throws -> ExecutorOptions {
        var o = ExecutorOptions()
        for d in declared {
            let v: OptionValue?
            switch d.kind {
            case .string: v = try t.string(d.name, nonEmpty: true).map(OptionValue.string)
            case let .integer(min): v = try t.integer(d.name, min: min).map { .number(Double($0)) }
            case let .number(min): v = try t.number(d.name, min: min).map(OptionValue.number)
            case let .stringOrNumber(min):
                v = try isNumber(t, d.name) ? t.number(d.name, min: min).map(OptionValue.number)
                    : t.string(d.name, nonEmpty: true).map(OptionValue.string)
            case let .stringOrInteger(min):
                v = try isNumber(t, d.name) ? t.integer(d.name, min: min).map { .number(Double($0)) }
                    : t.string(d.name, nonEmpty: true).map(OptionValue.string)
            case .stringList: v = try t.stringList(d.name).map(OptionValue.strings)
            }
            if let v { o[d.name] = v }
        }
        return o
    }

    static func isNumber(_ t: SpecTable, _ key: String) -> Bool {
        let ty = t.get(key)
        t.lua.pop()
        return ty == LUA_TNUMBER
    }

    /// The executors that take options: each one's table is a runStage field named after it.
    static let optionedKinds = Executors.kinds.filter { !$0.options.isEmpty }
    /// The fields `runStage` takes: its own, and each executor's table by the executor's name.
    static let stageFields = stageOwnFields + optionedKinds.map(\.name)

    /// `runStage{executor = ..., <name> = {...}}`: every executor's table the stage gives.
    func stageExecutor(_ t: SpecTable, _ spec: inout StageSpec, fn: String) throws {
        spec.executor = try t.choice("executor", PrimitiveFields.runStage[field: "executor"]!.choices)
        for kind in RecipeEnvironment.optionedKinds {
            guard let s = try t.table(kind.name, allowed: kind.stageOptionNames) else { continue }
            defer { t.lua.pop() }
            let declared = kind.options.filter { !$0.runWide }
            spec.executorOptions[kind.name] = try RecipeEnvironment.executorOptions(s, declared)
        }
    }

    /// `baton.executor(name [, options])`: the executor of every stage that names none, and the
    /// options they start from (with the executor's run-wide settings, told to it at once).
    func batonExecutor(_ l: LuaState) throws -> Int32 {
        let fn = "baton.executor"
        guard let name = l.string(1), let kind = Executors.kind(name) else {
            let names = Executors.names.map { "'\($0)'" }.joined(separator: ", ")
            throw LuaRaise.usage("\(fn): the executor must be one of \(names)")
        }
        let ctx = try requireContext()
        var options = ExecutorOptions()
        if l.type(2) != LUA_TNONE && l.type(2) != LUA_TNIL {
            let t = try SpecTable(l, arg: 2, fn: kind.options.isEmpty ? "\(fn) ('\(name)' takes no options)" : fn,
                                  allowed: kind.runOptionNames)
            options = try RecipeEnvironment.executorOptions(t, kind.options)
        }
        ctx.defaultExecutor = name
        let runWide = Set(kind.options.filter(\.runWide).map(\.name))
        ctx.executorDefaults[name] = ExecutorOptions(options.values.filter { !runWide.contains($0.key) })
        if options.values.keys.contains(where: runWide.contains) { try ctx.executor(named: name).configure(options) }
        return 0
    }
}
