import BatonBase
import BatonCore
import CLua
import LuaKit

/// runStage's `inputs`, `outputs` and `cache` fields (Cache/ in BatonCore does the work).
extension RecipeEnvironment {
    /// Reads `inputs` and `outputs`: a list of paths and globs (lists inside it are flattened,
    /// so `{"src/**", more()}` works), or a function returning such a list.
    func stageFiles(_ t: SpecTable, _ spec: inout StageSpec, fn: String) throws {
        spec.inputs = try pathList(t, "inputs", fn: fn)
        spec.outputs = try pathList(t, "outputs", fn: fn)
        for o in spec.outputs where o.hasPrefix("!") || o.hasPrefix("?") || o.contains("*") {
            throw LuaRaise.usage("\(fn): field 'outputs': '\(o)' must be a path (a file or a directory), not a glob")
        }
        spec.cache = try t.bool("cache")
    }

    private func pathList(_ t: SpecTable, _ key: String, fn: String) throws -> [String] {
        let l = t.lua
        var ty = t.get(key)
        defer { l.pop() }
        if ty == LUA_TNIL { return [] }
        if ty == LUA_TFUNCTION {
            // A function computing the list: called now, with no arguments.
            lua_pushvalue(l.L, -1)
            do { try l.pcall(nargs: 0, nresults: 1) } catch {
                throw LuaRaise("\(fn): field '\(key)': the function failed: \(error)", status: .failure, kind: "stage")
            }
            lua_copy(l.L, -1, -2)
            l.pop()
            ty = l.type(-1)
        }
        var out: [String] = []
        func read(_ depth: Int, _ where_: String) throws {
            let ty = l.type(-1)
            if ty == LUA_TSTRING, let s = l.string(-1) {
                if s.isEmpty { throw LuaRaise.usage("\(fn): field '\(key)'\(where_) is an empty path") }
                out.append(s); return
            }
            guard ty == LUA_TTABLE, depth < 8 else {
                throw LuaRaise.usage("\(fn): field '\(key)'\(where_) must be a path or a list of paths, got "
                        + "\(l.describeType(-1))")
            }
            let n = Int(lua_rawlen(l.L, -1))
            for i in 1...max(1, n) where n > 0 {
                lua_rawgeti(l.L, -1, lua_Integer(i))
                defer { l.pop() }
                try read(depth + 1, where_ + "[\(i)]")
            }
        }
        try read(0, "")
        return out
    }

    /// Resolves the declared inputs before the stage starts (its fingerprint holds them). An
    /// input that matches nothing fails the call like a stage failure (exit code 1).
    func resolveStageInputs(_ ctx: RunContext, _ spec: inout StageSpec) throws {
        do { try ctx.resolveInputs(&spec) } catch let e as FileSetError {
            throw LuaRaise("stage '\(spec.id)': \(e.message)", status: .failure, kind: "stage")
        }
    }

    /// `r.outputs` (path -> hash) and `r.cached_from` ({run, id, occurrence}).
    func pushStageFiles(_ l: LuaState, _ r: StageResult) {
        if !r.outputs.isEmpty {
            l.newTable()
            l.setFields(r.outputs.map { (k, v) in (k, LuaValue.string(v)) })
            l.setField(-2, "outputs")
        }
        if let c = r.cachedFrom {
            l.newTable()
            l.setFields([("run", .string(c.run)), ("id", .string(c.id)), ("occurrence", .int(c.occurrence))])
            l.setField(-2, "cached_from")
        }
    }
}
