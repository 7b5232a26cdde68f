import BatonBase
import BatonCore
import CLua
import LuaKit
import Testing

@Suite struct BridgeTests {
    func eval(_ l: LuaState, _ code: String) throws -> JSON {
        try l.load(Array(code.utf8), name: "=test")
        try l.pcall(nargs: 0, nresults: 1)
        defer { l.pop() }
        return try l.toJSON(-1)
    }

    @Test func luaToJSON() throws {
        let l = LuaState()
        #expect(try eval(l, "return {1, 2, 3}") == .array([.int(1), .int(2), .int(3)]))
        #expect(try eval(l, "return {b = 1, a = 2.5}") == .object([("a", .double(2.5)), ("b", .int(1))]))
        #expect(try eval(l, "return {}") == .object([]))
        #expect(try eval(l, "return {1, nil, 3}") == .object([("1", .int(1)), ("3", .int(3))]), "a holey table is an object")
        #expect(try eval(l, "return {[1] = 'a', x = 'b'}") == .object([("1", .string("a")), ("x", .string("b"))]))
        #expect(try eval(l, "return 3") == .int(3))
        #expect(try eval(l, "return 3.0") == .double(3.0))
        #expect(try eval(l, "return 'caf\\xc3\\xa9'") == .string("café"))
    }

    @Test func refusesCyclesFunctionsAndNaN() throws {
        let l = LuaState()
        for (code, words) in [("local t = {}; t.x = {t}; return t", "cycle"), ("return {f = print}", "function"),
                              ("return {0/0}", "nan"), ("return {[true] = 1}", "boolean key")] {
            try l.load(Array(code.utf8), name: "=t")
            try l.pcall(nargs: 0, nresults: 1)
            #expect(throws: LuaJSONError.self) { try l.toJSON(-1) }
            do { _ = try l.toJSON(-1) } catch { #expect("\(error)".lowercased().contains(words), "\(error)") }
            l.pop()
        }
        // A table reached twice without a cycle is fine.
        #expect(try eval(l, "local s = {1}; return {a = s, b = s}") == .object([("a", .array([.int(1)])), ("b", .array([.int(1)]))]))
    }

    @Test func jsonToLuaAndBack() throws {
        let l = LuaState()
        let v = try JSON.parse(#"{"a":[1,2.5,"x",[]],"b":{"c":true},"n":9007199254740993}"#)
        l.push(json: v)
        let back = try l.toJSON(-1)
        l.pop()
        #expect(back == v, "integers stay integral, empty arrays stay arrays")
    }

    @Test func swiftFunctionErrorsCarryFileAndLine() throws {
        let l = LuaState()
        l.pushFunction("check") { l in
            guard l.integer(1) != nil else { throw LuaRaise.usage("check: argument 1 must be an integer") }
            l.push(true)
            return 1
        }
        l.setGlobal("check")
        try l.load(Array("local a = check(1)\nlocal b = check('x')\n".utf8), name: "@recipe.lua")
        do {
            try l.pcall(nargs: 0, nresults: 0)
            Issue.record("expected an error")
        } catch let e as LuaCallError {
            #expect(e.message == "recipe.lua:2: check: argument 1 must be an integer")
            #expect(e.code == 3 && e.kind == "usage")
            #expect(e.traceback.contains("recipe.lua:2"))
            l.unref(e.ref)
        }
        // Caught in Lua, the error is a table that prints as its message.
        try l.load(Array("local ok, e = pcall(check, 'x'); return tostring(e) .. '|' .. e.code".utf8), name: "@r.lua")
        try l.pcall(nargs: 0, nresults: 1)
        #expect(l.string(-1) == "r.lua:1: check: argument 1 must be an integer|3", "called through pcall, the location is the nearest Lua line")
        l.pop()
    }

    @Test func binaryChunksAreRefused() throws {
        let l = LuaState()
        try l.load(Array("return string.dump(function() return 1 end)".utf8), name: "=d")
        try l.pcall(nargs: 0, nresults: 1)
        let code = try #require(l.bytes(-1))
        l.pop()
        #expect(throws: LuaCallError.self) { try l.load(code, name: "=bin") }
    }

    @Test func memoryLimitTurnsRunawayAllocationIntoALuaError() throws {
        let l = LuaState(memoryLimit: 32 << 20)
        try l.load(Array("local t = {} for i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end".utf8), name: "=hog")
        do { try l.pcall(nargs: 0, nresults: 0); Issue.record("expected out of memory") } catch let e as LuaCallError {
            #expect(e.message.contains("not enough memory"))
        }
        // The state still works afterwards.
        #expect(try eval(l, "collectgarbage(); return 1 + 1") == .int(2))
        #expect(l.memoryUsed < 32 << 20)
    }

    @Test func deepRecursionIsAnError() throws {
        let l = LuaState()
        try l.load(Array("local function f(n) return f(n + 1) + 1 end return f(1)".utf8), name: "=rec")
        #expect(throws: LuaCallError.self) { try l.pcall(nargs: 0, nresults: 1) }
    }
}
