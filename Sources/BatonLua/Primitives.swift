import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

extension RecipeEnvironment {
    /// The five primitives, as fields of `baton` (on top of the stack) and as globals.
    func installPrimitives() {
        let prims: [(String, (LuaState) throws -> Int32)] = [
            ("runStage", { [unowned self] l in try self.runStage(l) }),
            ("preflight", { [unowned self] l in try self.preflight(l) }),
            ("watch", { [unowned self] l in try self.watch(l) }),
            ("gate", { [unowned self] l in try self.gate(l) }),
            ("persistFinal", { [unowned self] l in try self.persistFinal(l) }),
        ]
        for (name, body) in prims {
            lua.pushFunction(name) { [unowned self] l in
                try self.debugged(name, l) { try body(l) }
            }   // (Debugger.swift)
            lua_pushvalue(lua.L, -1)
            lua.setField(-3, name)
            lua.setGlobal(name)
        }
    }

    static let abort = LuaRaise(BATON_ABORT_MESSAGE, kind: "abort")

    // MARK: runStage

    /// runStage's own fields (`stageFields` adds each executor's table).
    static let stageOwnFields = PrimitiveFields.runStage.names

    static let preflightFields = PrimitiveFields.preflight.names
    /// What kit.lint checks, from the declarations (PrimitiveFields.swift, each executor's
    /// options): `fields` (key -> allowed names), `types` (key -> field -> literal types),
    /// `values` (key -> field -> the strings it takes), `arity` (primitive -> {min, max}).
    static let lintSpec: JSON = {
        var tables: [(String, [(String, String, [String])])] = PrimitiveFields.linted.map { key, decls in
            (key, decls.map { ($0.name, $0.kind.lintType, $0.choices) })
        }
        // runStage's executor tables, and each executor's options inside them.
        if let stage = tables.firstIndex(where: { $0.0 == "runStage" }) {
            tables[stage].1 += optionedKinds.map { ($0.name, "table", []) }
        }
        for kind in optionedKinds {
            tables.append(("runStage.\(kind.name)", kind.options.filter { !$0.runWide }.map { o in
                let t: String
                switch o.kind {
                case .string: t = "string"
                case .integer, .number: t = "number"
                case .stringOrNumber, .stringOrInteger: t = "string|number"
                case .stringList: t = "string|table"
                }
                return (o.name, t, [])
            }))
        }
        return .object([
            ("fields", .object(tables.map { ($0.0, .array($0.1.map { .string($0.0) })) })),
            ("types", .object(tables.map { ($0.0, .object($0.1.map { ($0.0, .string($0.1)) })) })),
            ("values", .object(tables.map { table in
                (table.0, .object(table.1.filter { !$0.2.isEmpty }.map { ($0.0, .array($0.2.map(JSON.string))) }))
            })),
            ("open", .object(PrimitiveFields.open.sorted().map { ($0, .bool(true)) })),
            ("combinations",
             .object(Dictionary(grouping: PrimitiveFields.combinations, by: \.key).sorted { $0.key < $1.key }.map {
                 key,
                 rules in
                (key,
                 .array(rules.map { r in .object([("fields", .array(r.fields.map(JSON.string))),
                                                  ("min", .int(Int64(r.min))),
                                                        ("max", .int(Int64(Swift.min(r.max, 1 << 30))))]) }))
            })),
            ("arity", .object(PrimitiveFields.arity.map { ($0.0, .array([.int(Int64($0.1)), .int(Int64($0.2))])) })),
        ])
    }()

    func stageSpec(_ l: LuaState, fn: String) throws -> (StageSpec, background: Bool) {
        let t = try SpecTable(l, arg: 1, fn: fn, allowed: RecipeEnvironment.stageFields)
        let id = try t.string("id", required: true, nonEmpty: true)!
        var spec = StageSpec(id: id, command: try t.command("cmd")!)
        spec.cwd = try t.string("cwd", nonEmpty: true)
        spec.env = try t.stringMap("env") ?? [:]
        spec.stdin = try t.string("stdin")
        spec.timeout = try t.number("timeout", min: 0.001)
        let d = PrimitiveFields.runStage
        spec.grace = try t.number("grace", min: 0) ?? d.number("grace")
        spec.retries = try t.integer("retries", min: 0, max: 1000) ?? d.integer("retries")
        if let on = try t.stringList("retryOn") {
            spec.retryOn = []
            let choices = PrimitiveFields.runStage[field: "retryOn"]!.choices
            for (i, c) in on.enumerated() {
                guard choices.contains(c), let cls = FailureClass(rawValue: c) else {
                    throw LuaRaise.usage("\(fn): field 'retryOn'[\(i + 1)] must be 'transient', 'deterministic' or "
                            + "'stalled', got '\(c)'")
                }
                spec.retryOn.insert(cls)
            }
        }
        if let b = try RecipeEnvironment.backoff(t) { spec.backoff = b }
        if let tr = try t.table("transient", allowed: PrimitiveFields.transient.names) {
            defer { l.pop() }
            spec.transient = TransientRules(exitCodes: Set((try tr.intList("exit")
                                                            ?? []).map { Int32(truncatingIfNeeded: $0) }),
                                            stderrPatterns: try tr.stringList("stderr") ?? [])
        }
        spec.breaker = try t.integer("breaker", min: 1)
        spec.requireFiles = try t.stringList("requireFiles") ?? []
        spec.allowFail = try t.bool("allowFail") ?? d.bool("allowFail")
        spec.noOutputTimeout = try t.number("noOutputTimeout", min: 0.1)
        spec.heartbeatFile = try t.string("heartbeatFile", nonEmpty: true).map(FileIO.absolute)
        spec.stallWarnSec = try t.number("stallWarnSec", min: 0.1)
        try stageExecutor(t, &spec, fn: fn)
        if let w = try t.string("waitFor") ?? Optional(d.string("waitFor")) {
            guard d[field: "waitFor"]!.choices.contains(w) else {
                throw LuaRaise.usage("\(fn): field 'waitFor' must be 'leader' or 'group', got '\(w)'")
            }
            spec.waitForGroup = w == "group"
        }
        try stageFiles(t, &spec, fn: fn)
        if let p = try t.string("pool", nonEmpty: true) {
            guard context?.pools[p] != nil else {
                throw LuaRaise.usage("\(fn): pool '\(p)' is not declared; call baton.pool('\(p)', N) first")
            }
            spec.pool = p
        }
        return (spec, try t.bool("background") ?? d.bool("background"))
    }

    /// `backoff`: `{initial, factor, max}` as a list (`{1, 2, 60}`) or by name.
    static func backoff(_ t: SpecTable) throws -> Backoff? {
        guard let b = try t.numberRecord("backoff", names: PrimitiveFields.backoff.names,
                                         min: ["initial": 0, "factor": 1, "max": 0]) else { return nil }
        let d = Backoff()
        return Backoff(initial: b["initial"] ?? d.initial, factor: b["factor"] ?? d.factor, max: b["max"] ?? d.max)
    }

    func runStage(_ l: LuaState) throws -> Int32 {
        var (spec, background) = try stageSpec(l, fn: "runStage")
        let ctx = try requireContext()
        try resolveStageInputs(ctx, &spec)
        if ctx.dryRun { plan.append(("\(spec.id): \(spec.command.display)", true)) }
        let exec = ctx.startStage(spec)
        if let why = exec.why {
            if why.replayed { holdReplay(exec.key) } else {
                let cache = exec.cacheDecision.map { "; " + $0.sentence } ?? ""
                progress("resume: stage \(exec.key): \(why.sentence)" + cache)
            }
        }
        if background {
            pushHandle(l, exec)
            return 1
        }
        return try awaitStage(l, exec)
    }

    /// Waits for a stage and pushes its result, or raises on failure (unless allowFail).
    func awaitStage(_ l: LuaState, _ exec: StageExecution) throws -> Int32 {
        let ctx = try requireContext()
        if !exec.isFinished {
            view?.watch(exec)
            let w = ctx.wait(for: exec)
            view?.watch(nil)
            try checkFatal()
            if w == .interrupted && !exec.isFinished { throw RecipeEnvironment.abort }
        }
        guard let r = exec.result else { throw RecipeEnvironment.abort }
        if r.status == .cancelled && ctx.interrupted { throw RecipeEnvironment.abort }
        if !r.replayed && !r.dry {
            progress(stageLine(r, allowed: exec.spec.allowFail))
        }   // (a resume's replays are said by runStage)
        if !r.ok && !exec.spec.allowFail {
            throw LuaRaise(r.summary, status: .failure, kind: "stage", extra: { [unowned self] l in
                self.pushResult(l, r); l.setField(-2, "result")
            })
        }
        pushResult(l, r)
        return 1
    }

    /// "ok   stage build passed in 2s", or a FAIL line with the last 5 lines of stderr; a
    /// failure `allowFail` accepts is a yellow "fail ... (allowed failure)", not the red FAIL
    /// of a failure that ends the run.
    func stageLine(_ r: StageResult, allowed: Bool = false) -> String {
        var s = (r.ok ? Palette.ok("ok  ") : allowed ? Palette.warn("fail") : Palette.fail("FAIL"))
            + " stage \(SafeText.line(r.id))"
        if r.occurrence > 1 { s += " #\(r.occurrence)" }
        s += " \(r.status.rawValue) in \(Clock.human(r.duration))"
        if r.attempts > 1 { s += " (\(r.attempts) attempts)" }
        if let c = r.cachedFrom { s += " (cached: \(c.text))" }
        if r.ok { return s }
        if allowed { s += " (allowed failure: allowFail)" }
        s += ": " + SafeText.line(r.headline)
        for line in FailureSignature.lastNonEmptyLines(r.stderrText, 5) {
            s += "\n     " + Palette.dim("| ") + SafeText.line(String(line.prefix(300)))
        }
        return s
    }

    func pushResult(_ l: LuaState, _ r: StageResult) {
        l.newTable(nrec: 20)
        var f: [(StaticString, LuaValue)] = []
        f.reserveCapacity(18)
        f += [("id", .string(r.id)), ("occurrence", .int(r.occurrence)), ("ok", .bool(r.ok)),
              ("status", .string(r.status.rawValue)),
              ("attempts", .int(r.attempts)), ("duration", .number(r.duration)), ("replayed", .bool(r.replayed)),
              ("dry", .bool(r.dry))]
        // A replay's output is read from its logs when the recipe first asks (the metatable's __index).
        if !r.replayed { f += [("stdout", .bytes(r.stdout)), ("stderr", .bytes(r.stderr))] }
        if let e = r.exit { f.append(("exit", .int(Int(e)))) }
        if let s = r.signal { f.append(("signal", .int(Int(s)))) }
        if let c = r.failureClass { f.append(("failure_class", .string(c.rawValue))) }
        if let s = r.signature { f.append(("signature", .string(s))) }
        if let m = r.message { f.append(("message", .string(m))) }
        if let p = r.pid { f.append(("pid", .int(Int(p)))) }
        if r.breakerOpen { f.append(("breaker_open", .bool(true))) }
        l.setFieldsOfNewTable(f)
        pushStageFiles(l, r)
        l.newTable()
        l.setFieldsOfNewTable([("stdout", .string(r.logs.stdout)), ("stderr", .string(r.logs.stderr))])
        l.setField(-2, "logs")
        setMeta(l, "baton.stage_result")
    }

    func setMeta(_ l: LuaState, _ name: String) {
        l.pushNamedMetatable(name)
        lua_setmetatable(l.L, -2)
    }

    /// The stage results' metatable: `stdout`/`stderr` of a replayed result are read from
    /// its log files on first access (raw access only: a recipe's metatables cannot interfere).
    func installResultMetatable() throws {
        try lua.load(Array("""
            local tail, rawget, rawset = ...
            local mt = debug.getregistry()["baton.stage_result"] or {}
            mt.__name = "baton.stage_result"
            mt.__index = function(t, k)
              if k ~= "stdout" and k ~= "stderr" then return nil end
              local logs = rawget(t, "logs")
              local v = logs and tail(rawget(logs, k)) or ""
              rawset(t, k, v)
              return v
            end
            debug.getregistry()["baton.stage_result"] = mt
            """.utf8), name: "=baton.stage_result")
        lua.pushFunction("baton.tail") { (l: LuaState) throws -> Int32 in
            l.push(bytes: readTail(l.string(1) ?? ""))
            return 1
        }
        _ = lua.getGlobal("rawget")
        _ = lua.getGlobal("rawset")
        try lua.pcall(nargs: 3, nresults: 0)
    }

    // MARK: background handles

    func pushHandle(_ l: LuaState, _ exec: StageExecution) {
        let h = nextHandle
        nextHandle += 1
        handles[h] = exec
        l.newTable()
        l.setFields([("id", .string(exec.spec.id)), ("_handle", .int(h))])
        if l.pushNamedMetatable("baton.stage_handle") {
            l.newTable()
            l.register([
                ("wait", { [unowned self] l in try self.awaitStage(l, try self.handle(l, "wait")) }),
                ("pid", { [unowned self] l in
                    let e = try self.handle(l, "pid")
                    if e.pid > 0 { l.push(Int(e.pid)) } else { l.pushNil() }
                    return 1
                }),
                ("cancel", { [unowned self] l in
                    let e = try self.handle(l, "cancel")
                    e.cancel()
                    let ctx = try self.requireContext()
                    _ = ctx.loop.wait(WaitLabel(.stage, e.spec.id)) { e.isFinished }
                    l.push(e.isFinished)
                    return 1
                }),
                ("done", { [unowned self] l in l.push(try self.handle(l, "done").isFinished); return 1 }),
            ], prefix: "handle:")
            l.setField(-2, "__index")
            // A handle Lua no longer holds lets its execution go (a 10,000-item fan-out
            // should not keep 10,000 of them). The loop keeps a running one alive itself.
            // (weak: lua_close runs __gc after the environment itself is gone)
            l.pushFunction("handle.__gc") { [weak self] l in self?.releaseHandle(l) ?? 0 }
            l.setField(-2, "__gc")
        }
        lua_setmetatable(l.L, -2)
    }

    func handle(_ l: LuaState, _ method: String) throws -> StageExecution {
        guard l.type(1) == LUA_TTABLE else {
            throw LuaRaise.usage("handle:\(method)(): call it with ':' on a stage handle")
        }
        _ = l.rawGetField(1, "_handle")
        defer { l.pop() }
        guard let h = l.integer(-1), let e = handles[h] else {
            throw LuaRaise.usage("handle:\(method)(): not a stage handle")
        }
        return e
    }

    func handleExecution(_ l: LuaState, index: Int32) -> StageExecution? {
        guard l.type(index) == LUA_TTABLE else { return nil }
        _ = l.rawGetField(index, "_handle")
        defer { l.pop() }
        return l.integer(-1).flatMap { handles[$0] }
    }

    // MARK: preflight

    /// preflight{...}: the table as a `PreflightSpec` (RunContext.preflight runs it), its
    /// report as a table.
    func preflight(_ l: LuaState) throws -> Int32 {
        let t = try SpecTable(l, arg: 1, fn: "preflight", allowed: RecipeEnvironment.preflightFields)
        var spec = PreflightSpec()
        let d = PrimitiveFields.preflight
        spec.name = try t.string("name") ?? d.string("name")
        spec.policy = try t.option("policy", PreflightPolicy.self) ?? PreflightPolicy(rawValue: d.string("policy"))!
        let defaultTimeout = try t.number("timeout", min: 0.001) ?? d.number("timeout")
        guard t.get("checks") == LUA_TTABLE else {
            let got = l.describeType(-1); l.pop()
            throw LuaRaise.usage("preflight: field 'checks' is required (a list of checks), got \(got)")
        }
        let n = Int(lua_rawlen(l.L, -1))
        var refs: [Int32] = []
        defer { for r in refs { l.unref(r) } }
        if n == 0 { throw LuaRaise.usage("preflight: field 'checks' is an empty list") }
        for i in 1...n {
            lua_rawgeti(l.L, -1, lua_Integer(i))                       // [checks, checks[i]]
            defer { l.pop() }
            spec.checks.append(try preflightItem(l, i, defaultTimeout: defaultTimeout, refs: &refs))
        }
        l.pop()                                                        // the checks list
        let ctx = try requireContext()
        let report = try core { try ctx.preflight(spec) }
        if let m = report.failure {
            progress(Palette.warn("warning:") + " \(m)\(ctx.dryRun ? " (dry run: not fatal)" : "")")
        }
        l.push(json: report.json)
        return 1
    }

    static let preflightCheckFields = PrimitiveFields.preflightCheck.names

    /// checks[i] (on top of the stack) as a check; a `check` function is kept in `refs`.
    func preflightItem(_ l: LuaState, _ i: Int, defaultTimeout: Double, refs: inout [Int32]) throws -> PreflightItem {
        let fn = "preflight: checks[\(i)]"
        guard l.type(-1) == LUA_TTABLE else { throw LuaRaise.usage("\(fn) must be a table, got \(l.describeType(-1))") }
        let c = SpecTable(nested: l, index: -1, fn: fn)
        try c.checkKeys(RecipeEnvironment.preflightCheckFields, context: fn)
        let kinds = PrimitiveFields.preflightCheckKinds.filter { c.has($0) }
        guard kinds.count == 1 else {
            let found = kinds.isEmpty ? "none" : kinds.joined(separator: ", ")
            throw LuaRaise.usage("\(fn) needs exactly one of "
                    + "\(PrimitiveFields.preflightCheckKinds.joined(separator: ", ")) (found \(found))")
        }
        let check: PreflightCheck
        switch kinds[0] {
        case "path":
            check = .path(try c.string("path", nonEmpty: true)!, directory: try c.bool("dir") ?? false,
                          executable: try c.bool("executable") ?? false)
        case "cmd":
            check = .command(try c.command("cmd")!, cwd: try c.string("cwd"),
                             timeout: try c.number("timeout", min: 0.001) ?? defaultTimeout)
        case "env":
            check = .env(try c.string("env", nonEmpty: true)!)
        case "pgrep":
            let pattern = try c.string("pgrep", nonEmpty: true)!
            guard var re = ProcessTable.Regex(pattern) else {
                throw LuaRaise.usage("\(fn): 'pgrep' is not a valid regular expression: \(pattern)")
            }
            re.free()
            check = .pgrep(pattern)
        default:
            let ref = try c.function("check")!
            refs.append(ref)
            return PreflightItem(.function({ try self.callCheck(l, ref) }), name: try c.string("name"), index: i)
        }
        return PreflightItem(.check(check), name: try c.string("name"), index: i)
    }

    /// A preflight's `check` function: ok and a detail; an error is a failed check (unless
    /// the run is being aborted).
    func callCheck(_ l: LuaState, _ ref: Int32) throws -> (ok: Bool, detail: String) {
        l.pushRef(ref)
        do { try l.pcall(nargs: 0, nresults: 2) } catch let e as LuaCallError {
            l.unref(e.ref)
            if l.abortReason != 0 { throw RecipeEnvironment.abort }
            return (false, "raised: \(e.message)")
        }
        defer { l.pop(2) }
        let ok = l.bool(-2)
        return (ok, l.string(-1) ?? (l.type(-1) == LUA_TNIL ? (ok ? "ok" : "failed") : "(\(l.describeType(-1)))"))
    }

    // MARK: persistFinal

    func persistFinal(_ l: LuaState) throws -> Int32 {
        guard l.type(1) == LUA_TTABLE else {
            throw LuaRaise.usage("persistFinal expects a table of fields, got \(l.describeType(1))")
        }
        let j: JSON
        do { j = try l.toJSON(1) } catch { throw LuaRaise.usage("persistFinal: \(error)") }
        guard case let .object(pairs) = j else {
            throw LuaRaise.usage("persistFinal expects a table with named fields (got a list)")
        }
        let ctx = try requireContext()
        // persistFinal(fields, {cancelled = {...}, stdout = true}): what the result says if
        // the run ends cancelled, registered now because no Lua code runs after a cancel.
        if l.type(2) != LUA_TNONE && l.type(2) != LUA_TNIL {
            let o = try SpecTable(l,
                                  arg: 2,
                                  fn: "persistFinal's options",
                                  allowed: PrimitiveFields.persistFinalOptions.names)
            if o.get("cancelled") != LUA_TNIL {
                let c: JSON
                do { c = try l.toJSON(-1) } catch { l.pop(); throw LuaRaise.usage("persistFinal: cancelled: \(error)") }
                l.pop()
                guard case let .object(cp) = c else {
                    throw LuaRaise.usage("persistFinal: cancelled must be a table with named fields")
                }
                onCancelFields = cp
            } else { l.pop() }
            if let b = try o.bool("stdout") { onCancelStdout = b }
            if pairs.isEmpty { return 0 }
        }
        do { try ctx.persistFinal(pairs) } catch { throw LuaRaise("persistFinal: cannot write final.json: \(error)") }
        try checkFatal()
        return 0
    }
}

extension RecipeEnvironment {
    /// Lets go of the execution behind the handle at stack index 1 (its `_handle` number).
    func releaseHandle(_ l: LuaState) -> Int32 {
        _ = l.rawGetField(1, "_handle")
        if let h = l.integer(-1) { handles[h] = nil }
        l.pop()
        return 0
    }
}
