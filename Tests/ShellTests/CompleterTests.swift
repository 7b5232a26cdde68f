@testable import BatonCLI
import BatonLua
import Testing

/// What Tab offers: the Swift side with stand-in sources, and shell.complete on a real state.
@Suite struct CompleterTests {
    func completer() -> Completer {
        var c = Completer()
        c.runIDs = { ["20261122-181812-3f9a", "20261121-090000-0001"] }
        c.stageIDs = { run in run.hasPrefix("2026112") ? ["build", "bench", "ship"] : [] }
        c.luaNames = { chain in ["baton.", "baton.fs.", "baton.fs.exists(", "print("].filter { $0.hasPrefix(chain) } }
        c.listDirectory = { dir in
            dir == "." ? [("recipes", true), ("README.md", false), (".hidden", false)]
                : dir == "recipes/" ? [("hello.lua", false), ("gap09.lua", false)] : []
        }
        return c
    }

    @Test func metaCommands() {
        let c = completer()
        #expect(c.complete(before: "", word: ":") == MetaCommand.names.map { $0 + " " })
        #expect(c.complete(before: "", word: ":at") == [":attach "])
        #expect(c.complete(before: "  ", word: ":q") == [":quit "])
        #expect(c.complete(before: "", word: ":zz").isEmpty)
    }

    @Test func whileAttachedStageAndWatchIDs() {
        var c = completer()
        c.commands = AttachSession.commands
        c.watchIDs = { _ in ["train"] }
        c.attachedRun = { "20261122-181812-3f9a" }
        #expect(c.complete(before: "", word: ":sk") == [":skip "])
        for cmd in [":tail", ":kill", ":extend"] { #expect(c.complete(before: cmd + " ", word: "b") == ["build ", "bench "], "\(cmd)") }
        #expect(c.complete(before: ":skip ", word: "") == ["train "])
        #expect(c.complete(before: "", word: "baton.fs.ex") == ["baton.fs.exists("])
    }

    @Test func runIDsAfterRunCommands() {
        let c = completer()
        for cmd in [":status", ":attach", ":tail", ":cancel", ":resume"] {
            #expect(c.complete(before: cmd + " ", word: "2026112") == ["20261122-181812-3f9a ", "20261121-090000-0001 "], "\(cmd)")
        }
        #expect(c.complete(before: ":attach ", word: "20261122") == ["20261122-181812-3f9a "])
        #expect(c.complete(before: ":attach ", word: "la") == ["latest "])
        #expect(c.complete(before: ":a ", word: "la") == ["latest "], "aliases complete too")
        #expect(c.complete(before: ":runs ", word: "2").isEmpty)
    }

    @Test func stageIDsAfterTailRun() {
        let c = completer()
        #expect(c.complete(before: ":tail 20261122-181812-3f9a ", word: "b") == ["build ", "bench "])
        #expect(c.complete(before: ":tail nosuch ", word: "b").isEmpty)
    }

    @Test func pathsAfterLoad() {
        let c = completer()
        #expect(c.complete(before: ":load ", word: "") == ["README.md ", "recipes/"])
        #expect(c.complete(before: ":load ", word: "rec") == ["recipes/"])
        #expect(c.complete(before: ":load ", word: "recipes/h") == ["recipes/hello.lua "])
        #expect(c.complete(before: ":load ", word: ".h") == [".hidden "])
    }

    @Test func luaNamesKeepWhatComesBefore() {
        let c = completer()
        #expect(c.complete(before: "", word: "baton.fs.e") == ["baton.fs.exists("])
        #expect(c.complete(before: "x = ", word: "pri") == ["print("])
        #expect(c.complete(before: "", word: "-baton.fs.") == ["-baton.fs.", "-baton.fs.exists("])
        #expect(c.complete(before: "", word: "3.5").isEmpty, "a number is not a name")
    }

    // shell.complete itself, on a real environment.
    @Test func luaFieldsOfReachableTables() throws {
        let env = RecipeEnvironment(memoryLimit: 0, output: OutputOptions())
        let s = try ShellLua(lua: env.lua)
        #expect(s.candidates("baton.fs.") == ["baton.fs.append(", "baton.fs.exists(", "baton.fs.glob(", "baton.fs.locked(", "baton.fs.mkdir(",
                                              "baton.fs.read(", "baton.fs.write("])
        #expect(s.candidates("baton.js") == ["baton.json."])
        #expect(s.candidates("runS") == ["runStage("])
        #expect(s.candidates("whi") == ["while"], "keywords")
        #expect(s.candidates("nosuch.x").isEmpty)
        try env.lua.run(#"""
            name = "text"
            obj = setmetatable({own = 1}, {__index = {inherited = function() end}})
            lazy = setmetatable({}, {__index = function() error("must not be called") end})
            """#, name: "=test")
        #expect(s.candidates("name:up") == ["name:upper("], "a string's methods")
        #expect(s.candidates("obj.") == ["obj.inherited(", "obj.own"])
        #expect(s.candidates("obj:") == ["obj:inherited("], "only functions after ':'")
        #expect(s.candidates("lazy.").isEmpty)
        #expect(s.candidates("string.fo") == ["string.format("])
    }
}
