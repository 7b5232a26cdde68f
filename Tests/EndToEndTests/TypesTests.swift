import Foundation
import Testing

/// `baton init` and `baton types` (issue 12 part 3): editor annotations, .luarc.json and a
/// .luacheckrc that know the recipe environment, held to what a recipe really sees.
@Suite struct TypesTests {
    static func luacheck(_ dir: String, _ file: String) throws -> (code: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["luacheck", "--no-color", "--codes", file]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    @Test func initWritesTypesLuarcAndLuacheckrc() throws {
        let d = Harness.tempDir("init")
        let r = try Harness.run(["init"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        for f in [".baton/types/baton.lua", ".luarc.json", ".luacheckrc"] {
            #expect(FileManager.default.fileExists(atPath: d + "/" + f), "\(f)")
        }
        let luarc = try #require(try JSONSerialization.jsonObject(with: Data((Harness.read(d + "/.luarc.json") ?? "").utf8)) as? [String: Any])
        #expect(luarc["runtime.version"] as? String == "Lua 5.4" && (luarc["workspace.library"] as? [String]) == [".baton/types"])
        // An existing config is kept unless --force.
        Harness.write(d + "/.luacheckrc", "-- mine\n")
        let again = try Harness.run(["init", "--json"], cwd: d)
        let o = try #require(try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [String: Any])
        #expect((o["kept"] as? [String])?.contains(".luacheckrc") == true && Harness.read(d + "/.luacheckrc") == "-- mine\n")
        #expect(try Harness.run(["init", "--force"], cwd: d).code == 0)
        #expect(Harness.read(d + "/.luacheckrc")?.contains("runStage") == true)
        // .baton marks the project: runs started below go there.
        let sub = d + "/src"
        Harness.write(sub + "/r.lua", "return {}")
        #expect(try Harness.run(["run", "--run-id", "from-sub", "r.lua"], cwd: sub).code == 0)
        #expect(FileManager.default.fileExists(atPath: d + "/.baton/runs/from-sub/final.json"))
        // baton types prints the same annotations, valid Lua.
        let types = try Harness.run(["types"], cwd: d)
        #expect(types.stdout == Harness.read(d + "/.baton/types/baton.lua") && types.stdout.hasPrefix("---@meta"))
        // The fields come from the declaration the runtime checks with (issue 23 item 7).
        for line in ["---@field failure_class? \"transient\"|\"deterministic\"|\"stalled\"",
                     "---@field retryOn? (\"transient\"|\"deterministic\"|\"stalled\")[] default {\"transient\"}",
                     "---@field onMissing? \"fail\"|\"block\"|\"callback\" default \"fail\"",
                     "---@field onFailure? \"cancel\"|\"drain\"|\"continue\" default \"cancel\"",
                     "---@field checks baton.Check[]", "---@field waitFor? \"leader\"|\"group\""] {
            #expect(types.stdout.contains(line), "\(line)")
        }
        Harness.write(d + "/check.lua", "local f = assert(loadfile('.baton/types/baton.lua')); f(); assert(type(runStage) == 'function')")
        #expect(try Harness.run(["run", "check.lua"], cwd: d).code == 0)
    }

    /// The globals and baton fields the configs name are exactly the recipe environment's.
    @Test func listsMatchTheRecipeEnvironment() throws {
        let d = Harness.tempDir("types-env")
        #expect(try Harness.run(["init"], cwd: d).code == 0)
        Harness.write(d + "/env.lua", """
            local std = {}
            for n in ("_G _VERSION assert collectgarbage coroutine debug dofile error getmetatable io ipairs load loadfile math next os package pairs pcall print rawequal rawget rawlen rawset require select setmetatable string table tonumber tostring type utf8 warn xpcall arg"):gmatch("%S+") do std[n] = true end
            local out = {}
            for k in pairs(_G) do if not std[k] then out[#out + 1] = "global " .. k end end
            for k, v in pairs(baton) do
              out[#out + 1] = "baton " .. k
              if type(v) == "table" and k ~= "args" then for f in pairs(v) do out[#out + 1] = "baton." .. k .. " " .. f end end
            end
            table.sort(out)
            baton.fs.write("env.txt", table.concat(out, "\\n"))
            """)
        #expect(try Harness.run(["run", "env.lua"], cwd: d).code == 0)
        let real = Set((Harness.read(d + "/env.txt") ?? "").split(separator: "\n").map(String.init))
        let luarc = try #require(try JSONSerialization.jsonObject(with: Data((Harness.read(d + "/.luarc.json") ?? "").utf8)) as? [String: Any])
        var declared = Set((luarc["diagnostics.globals"] as? [String] ?? []).map { "global " + $0 })
        // The .luacheckrc's baton fields, read back with Lua itself.
        Harness.write(d + "/rc.lua", """
            local env = {}
            assert(loadfile(".luacheckrc", "t", env))()
            local out = {}
            for k, v in pairs(env.read_globals.baton.fields) do
              out[#out + 1] = "baton " .. k
              for f in pairs(v.fields or {}) do out[#out + 1] = "baton." .. k .. " " .. f end
            end
            baton.fs.write("rc.txt", table.concat(out, "\\n"))
            """)
        #expect(try Harness.run(["run", "rc.lua"], cwd: d).code == 0)
        declared.formUnion((Harness.read(d + "/rc.txt") ?? "").split(separator: "\n").map(String.init))
        #expect(declared == real, "missing: \(real.subtracting(declared)), extra: \(declared.subtracting(real))")
    }

    @Test func luacheckKnowsTheEnvironmentAndCatchesMisspellings() throws {
        let d = Harness.tempDir("luacheck")
        #expect(try Harness.run(["init"], cwd: d).code == 0)
        Harness.write(d + "/good.lua", """
            preflight{name = "tools", checks = {{cmd = {"true"}}}}
            local r = runStage{id = "a", cmd = "true"}
            watch{id = "w", file = "x", timeoutSec = 1, allowFail = true}
            gate{name = "g", check = function() return {approved = r.ok} end}
            baton.fs.write("f", baton.json.encode({risk = baton.args.risk, run = baton.run.id}))
            baton.log("done", {n = baton.now()})
            persistFinal{ok = true}
            """)
        let good = try Self.luacheck(d, "good.lua")
        #expect(good.code == 0, "\(good.out)")
        Harness.write(d + "/bad.lua", "runStag{id = 'a', cmd = 'true'}\nbaton.fs.wirte('f', 'x')\n")
        let bad = try Self.luacheck(d, "bad.lua")
        #expect(bad.out.contains("W113") && bad.out.contains("runStag") && bad.out.contains("W143") && bad.out.contains("wirte"), "\(bad.out)")
        // The shipped recipes know no undefined global or field.
        for r in ["gap09.lua", "wo_rebuild.lua", "research_callback.lua"] {
            try FileManager.default.copyItem(atPath: Harness.packageRoot.appendingPathComponent("recipes/" + r).path, toPath: d + "/" + r)
            let out = try Self.luacheck(d, r).out
            #expect(!out.contains("W113") && !out.contains("W143"), "\(r): \(out)")
        }
    }
}
