import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

extension RecipeEnvironment {
    // MARK: watch

    static let watchFields = PrimitiveFields.watch.names

    /// watch{...}: the table as a `WatchSpec` (RunContext.watch runs it), its result as a table.
    func watch(_ l: LuaState) throws -> Int32 {
        var (spec, callback) = try watchSpec(l)
        defer { if let c = callback { l.unref(c) } }
        let ctx = try requireContext()
        if ctx.dryRun {
            let then = spec.requireFiles.isEmpty ? "" : ", then require \(spec.requireFiles.joined(separator: ", "))"
            plan.append(("watch \(spec.id): \(spec.target.text)" + then, false))
            l.push(json: .object([("id", .string(spec.id)), ("state", .string("completed")), ("ok", .bool(true)),
                                  ("dry", .bool(true))]))
            return 1
        }
        spec.onStageEnded = { [unowned self] r in self.progress(self.stageLine(r)) }
        if let c = callback {
            spec.callback = { [unowned self] info in
                do { return try self.callRef(l, c, [info]) } catch let e as LuaRaise {
                    let reason = l.abortReason != 0 ? "interrupted in the callback" : "callback raised: \(e.message)"
                    throw CallbackError(reason: reason, error: e)
                }
            }
        }
        l.push(json: try core { try ctx.watch(spec).json })
        return 1
    }

    /// The fields of watch{...} as a spec, and its callback's ref.
    func watchSpec(_ l: LuaState) throws -> (WatchSpec, callback: Int32?) {
        let t = try SpecTable(l, arg: 1, fn: "watch", allowed: RecipeEnvironment.watchFields)
        var spec = WatchSpec(id: try t.string("id", required: true, nonEmpty: true)!)
        let targets = PrimitiveFields.watchTargets.filter { t.has($0) }
        guard targets.count <= 1 else {
            throw LuaRaise.usage("watch: give one of \(PrimitiveFields.watchTargets.joined(separator: ", ")) (found "
                    + "\(targets.joined(separator: ", ")))")
        }
        if targets.first == "handle" {
            _ = t.get("handle")
            let exec = handleExecution(l, index: -1)
            l.pop()
            guard let exec else {
                throw LuaRaise.usage("watch: field 'handle' must be a stage handle from runStage{background = true}")
            }
            spec.target = .stage(exec)
        }
        if let pid = try t.integer("pid", min: 1) { spec.target = .pid(Int32(clamping: pid)) }
        if let p = try t.string("pattern", nonEmpty: true) {
            guard var re = ProcessTable.Regex(p) else {
                throw LuaRaise.usage("watch: field 'pattern' is not a valid regular expression: \(p)")
            }
            re.free()
            spec.target = .pattern(p)
        }
        let cwd = try t.string("cwd").map(FileIO.absolute) ?? FileIO.currentDirectory()
        func abs(_ p: String) -> String { p.hasPrefix("/") ? p : FileIO.join(cwd, p) }
        if let f = try t.string("file", nonEmpty: true) { spec.target = .file(abs(f)) }
        spec.requireFiles = (try t.stringList("requireFiles") ?? []).map(abs)
        let d = PrimitiveFields.watch
        spec.readyTimeout = try t.number("readyTimeoutSec", min: 0) ?? d.number("readyTimeoutSec")
        spec.readyPoll = try t.number("readyPollSec", min: 0.01) ?? d.number("readyPollSec")
        spec.onMissing = try t.option("onMissing", OnMissing.self) ?? OnMissing(rawValue: d.string("onMissing"))!
        spec.timeout = try t.number("timeoutSec", min: 0) ?? d.number("timeoutSec")
        spec.heartbeat = try t.number("heartbeatSec", min: 0.05) ?? d.number("heartbeatSec")
        spec.allowFail = try t.bool("allowFail") ?? d.bool("allowFail")
        if targets.isEmpty && spec.requireFiles.isEmpty {
            throw LuaRaise.usage("watch: nothing to watch: give one of the fields "
                    + "\(PrimitiveFields.watchTargets.joined(separator: ", ")), or requireFiles")
        }
        return (spec, try t.function("callback"))
    }

    // MARK: gate

    static let gateFields = PrimitiveFields.gate.names

    /// gate{...}: the table as a `GateSpec` (RunContext.gate runs it), the approving decision
    /// as a table.
    func gate(_ l: LuaState) throws -> Int32 {
        let t = try SpecTable(l, arg: 1, fn: "gate", allowed: RecipeEnvironment.gateFields)
        let name = try t.string("name", required: true, nonEmpty: true)!
        let maxIterations = try t.integer("maxIterations", min: 1, max: 1000)
            ?? PrimitiveFields.gate.integer("maxIterations")
        guard PrimitiveFields.combinations.first(where: { $0.key == "gate" })!.fields.filter(t.has).count == 1 else {
            throw LuaRaise.usage("gate: give exactly one of 'check' (a function) or 'cmd' (a command printing JSON)")
        }
        let check = try t.function("check")
        let cmd = try t.command("cmd", required: false)
        let onReject = try t.function("onReject")
        defer { for r in [check, onReject].compactMap({ $0 }) { l.unref(r) } }
        var spec = GateSpec(name: name,
                            decider: check.map { c in .check({ i in try self.callRef(l, c, [.int(Int64(i))]) }) }
                                ?? .command(cmd!))
        spec.maxIterations = maxIterations
        if t.has("fallback") {
            _ = t.get("fallback")
            defer { l.pop() }
            guard l.type(-1) == LUA_TTABLE, let f = try? l.toJSON(-1) else {
                throw LuaRaise.usage("gate: field 'fallback' must be a table like {approved = false, issues = {...}}")
            }
            spec.fallback = f
        }
        spec.cwd = try t.string("cwd")
        spec.env = try t.stringMap("env") ?? [:]
        spec.timeout = try t.number("timeout", min: 0.001)
        let ctx = try requireContext()
        if let r = onReject { spec.onReject = { d, i in _ = try self.callRef(l, r, [d, .int(Int64(i))]) } }
        spec.onDecision = { [unowned self] d in
            self.progress("gate \(name) iteration \(d.iteration)/\(maxIterations): \(d.verdict)")
        }
        if ctx.dryRun { plan.append(("gate \(name): approved on iteration 1 (dry run)", false)) }
        l.push(json: try core { try ctx.gate(spec).json })
        return 1
    }

    /// Calls the function `ref` with `args`; its first result as JSON (nil: nil, or nothing
    /// JSON can hold). Its error is raised again unchanged.
    func callRef(_ l: LuaState, _ ref: Int32, _ args: [JSON]) throws -> JSON? {
        l.pushRef(ref)
        for a in args { l.push(json: a) }
        do { try l.pcall(nargs: Int32(args.count), nresults: 1) } catch let e as LuaCallError { throw l.rethrow(e) }
        defer { l.pop() }
        return l.type(-1) == LUA_TNIL ? nil : try? l.toJSON(-1)
    }
}

