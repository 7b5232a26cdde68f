@testable import BatonCLI
import BatonLua
import Testing

/// shell.pretty, the value printer, through a real recipe environment.
@Suite struct PrettyTests {
    let env = RecipeEnvironment(memoryLimit: 0, output: OutputOptions())
    var shell: ShellLua { try! ShellLua(lua: env.lua) }

    func show(_ expression: String) throws -> String { try shell.format(expression: expression) }

    @Test func scalars() throws {
        #expect(try show("1 + 2") == "3")
        #expect(try show("1 / 2") == "0.5")
        #expect(try show("nil") == "nil")
        #expect(try show("true, false") == "true\tfalse")
        #expect(try show("1, nil, 3") == "1\tnil\t3")
        #expect(try show("baton.json.null") == "null")
    }

    @Test func stringsAreQuotedWithEscapes() throws {
        #expect(try show(#""hi""#) == #""hi""#)
        #expect(try show(#""a\nb\t\"q\"\\ \0 \127""#) == #""a\nb\t\"q\"\\ \000 \127""#)
        #expect(try show(#""héllo""#) == #""héllo""#)
        let long = try show(#"string.rep("x", 1000)"#)
        #expect(long.hasPrefix("\"xxxx"))
        #expect(long.hasSuffix("\"... (1000 bytes)"))
        #expect(long.count < 450)
    }

    @Test func tablesAreSortedArrayFirst() throws {
        #expect(try show("{}") == "{}")
        #expect(try show("{3, 2, 1}") == "{3, 2, 1}")
        #expect(try show(#"{b = 1, a = 2, [10] = "x", 7, ["two words"] = true, [false] = 0}"#)
                == #"{7, [10] = "x", a = 2, b = 1, ["two words"] = true, [false] = 0}"#)
        #expect(try show(#"{["end"] = 1}"#) == #"{["end"] = 1}"#, "a keyword is not a bare key")
    }

    @Test func nestedTablesBreakLinesWhenWide() throws {
        let s = try show(#"{name = "a fairly long name for a thing", inner = {list = {1, 2, 3}, text = string.rep("w", 60)}}"#)
        #expect(s == """
            {
              inner = {list = {1, 2, 3}, text = "\(String(repeating: "w", count: 60))"},
              name = "a fairly long name for a thing",
            }
            """)
    }

    @Test func cyclesAreMarked() throws {
        #expect(try show("(function() local t = {1}; t.self = t; return t end)()") == "{1, self = <cycle>}")
        // shared but not cyclic: printed twice
        #expect(try show("(function() local s = {1}; return {a = s, b = s} end)()") == "{a = {1}, b = {1}}")
    }

    @Test func longTablesAreElided() throws {
        let s = try show("(function() local t = {}; for i = 1, 100 do t[i] = i end; return t end)()")
        #expect(s.contains("40,\n"))
        #expect(!s.contains("41"))
        #expect(s.contains("... (60 more)"))
    }

    @Test func deepTablesAreCut() throws {
        #expect(try show("{{{{{{{{1}}}}}}}}") == "{{{{{{{... 1 item}}}}}}}")
    }

    @Test func functionsSayWhere() throws {
        #expect(try show("print") == "function: builtin")
        #expect(try show("string.format") == "function: builtin")
        try env.lua.run("function here()\nend", name: "=stdin")
        #expect(try show("here") == "function: stdin:1")
    }

    @Test func tostringMetamethodIsUsedAndNeverRaises() throws {
        #expect(try show(#"setmetatable({}, {__tostring = function() return "custom" end})"#) == "custom")
        #expect(try show(#"setmetatable({1}, {__tostring = function() error("no") end})"#) == "{1}")
        #expect(try show(#"setmetatable({}, {__index = function() error("never called") end, __len = function() error("no") end})"#) == "{}")
    }

    @Test func stageResultsListImportantFieldsFirst() throws {
        let r = try show(#"setmetatable({id = "build", status = "passed", ok = true, exit = 0, attempts = 1, duration = 0.12345678, stdout = string.rep("o", 500), stderr = "", replayed = false, dry = false, occurrence = 1, logs = {stdout = "a.out", stderr = "a.err"}}, debug.getregistry()["baton.stage_result"] or {__name = "baton.stage_result"})"#)
        #expect(r.hasPrefix("{\n  id = \"build\",\n  status = \"passed\",\n  ok = true,\n  exit = 0,\n  attempts = 1,\n  duration = 0.123,\n  stdout = \"ooo"), "\(r)")
        #expect(r.contains("\"... (500 bytes)"))
        #expect(!r.contains("replayed"))
        #expect(!r.contains("dry"))
    }
}
