import BatonCore
import CLua
import LuaKit

/// `baton check`: loads a recipe without running it.
public enum RecipeCheck {
    public struct Report { public var errors: [String] = []; public var warnings: [String] = []; public var ok: Bool { errors.isEmpty } }

    public static func check(_ recipe: String) -> Report {
        var r = Report()
        let text: [UInt8]
        do { text = try FileIO.readFile(recipe) } catch { r.errors.append("cannot read recipe \(error)"); return r }
        if text.first == 0x1B { r.errors.append("\(recipe): binary (precompiled) chunks are refused; recipes are Lua text"); return r }
        let env = RecipeEnvironment(memoryLimit: 512 << 20, output: OutputOptions(json: true, quiet: true))
        env.setRequirePaths(recipeDir: FileIO.dirname(FileIO.absolute(recipe)))
        do { try env.lua.load(text, name: "@" + recipe) } catch let e as LuaCallError {
            r.errors.append(e.message); return r
        } catch { r.errors.append("\(error)"); return r }
        // Literal require("name") calls must resolve (next to the recipe, scripts-lua/, or built in).
        let source = String(decoding: text, as: UTF8.self)
        for name in requiredModules(source) {
            if EmbeddedLua.modules[name] != nil { continue }
            let rel = name.split(separator: ".").joined(separator: "/")
            let dirs = [FileIO.dirname(FileIO.absolute(recipe)), FileIO.currentDirectory() + "/scripts-lua"]
            if !dirs.contains(where: { FileIO.exists("\($0)/\(rel).lua") || FileIO.exists("\($0)/\(rel)/init.lua") }) {
                r.errors.append("\(recipe): require '\(name)': no such module next to the recipe, in ./scripts-lua or built in")
            }
        }
        r.errors += backoffErrors(source, recipe: recipe, lua: env.lua)
        return r
    }

    /// `backoff = ...` written as a literal is checked as runStage will check it (the same
    /// code). Anything computed is left to the run.
    static func backoffErrors(_ source: String, recipe: String, lua: LuaState) -> [String] {
        var errors: [String] = []
        for (line, literal) in literalTables(source, field: "backoff") {
            let base = lua.top
            defer { lua.top = base }
            do {
                try lua.load(Array("return {backoff = \(literal)}".utf8), name: "=check")
                try lua.pcall(nargs: 0, nresults: 1)
            } catch let e as LuaCallError { lua.unref(e.ref); continue } catch { continue }
            do { _ = try RecipeEnvironment.backoff(SpecTable(nested: lua, index: -1, fn: "runStage")) } catch let e as LuaRaise {
                errors.append("\(recipe):\(line): \(e.message)")
            } catch {}
        }
        return errors
    }

    /// `field = <literal>` (a table of literals, a string or a number), with its line.
    /// Skipped: anything after `--` on that line, nested tables, variables, calls.
    static func literalTables(_ source: String, field: String) -> [(Int, String)] {
        let s = Array(source.utf8), f = Array(field.utf8)
        func isName(_ c: UInt8) -> Bool { c == 95 || (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) }
        var out: [(Int, String)] = []
        var line = 1, lineStart = 0, i = 0
        while i < s.count {
            if s[i] == 10 { line += 1; lineStart = i + 1; i += 1; continue }
            guard i + f.count <= s.count, Array(s[i..<(i + f.count)]) == f, i == 0 || !isName(s[i - 1]) else { i += 1; continue }
            var j = i + f.count
            i = j
            while j < s.count, s[j] == 32 || s[j] == 9 { j += 1 }
            guard j < s.count, s[j] == 61, j + 1 < s.count, s[j + 1] != 61 else { continue }   // '=' not '=='
            j += 1
            while j < s.count, s[j] == 32 || s[j] == 9 { j += 1 }
            guard j < s.count else { continue }
            if String(decoding: s[lineStart..<i], as: UTF8.self).contains("--") { continue }
            if s[j] == 34 || s[j] == 39 {                                                        // a string literal
                if let close = s[(j + 1)...].firstIndex(where: { $0 == s[j] || $0 == 10 || $0 == 92 }), s[close] == s[j] {
                    out.append((line, String(decoding: s[j...close], as: UTF8.self)))
                }
                continue
            }
            if (48...57).contains(s[j]) {                                                        // a number
                var e = j
                while e < s.count, (48...57).contains(s[e]) || s[e] == 46 { e += 1 }
                if e == s.count || !isName(s[e]) { out.append((line, String(decoding: s[j..<e], as: UTF8.self))) }
                continue
            }
            guard s[j] == 123, let end = s[j...].firstIndex(of: 125) else { continue }          // '{' ... '}'
            let body = s[(j + 1)..<end]
            var ok = !body.contains(123)
            var k = body.startIndex
            while ok, k < body.endIndex {
                let c = body[k]
                if isName(c) && !(48...57).contains(c) {
                    var e = k
                    while e < body.endIndex, isName(body[e]) { e += 1 }
                    // a key (`name =`), or true/false/nil: never a variable, whose value is unknown here
                    var a = e
                    while a < body.endIndex, body[a] == 32 || body[a] == 9 { a += 1 }
                    let isKey = a < body.endIndex && body[a] == 61 && (a + 1 == body.endIndex || body[a + 1] != 61)
                    ok = isKey || ["true", "false", "nil"].contains(String(decoding: body[k..<e], as: UTF8.self))
                    k = e
                } else if c == 34 || c == 39 {                                                   // a short string, no escapes
                    guard let close = body[(k + 1)...].firstIndex(of: c), !body[k..<close].contains(92),
                          !body[k..<close].contains(10) else { ok = false; break }
                    k = close + 1
                } else {
                    ok = (48...57).contains(c) || " \t\n\r=,;.-+".utf8.contains(c)
                    k += 1
                }
            }
            if ok { out.append((line, String(decoding: s[j...end], as: UTF8.self))) }
        }
        return out
    }

    static func requiredModules(_ s: String) -> [String] {
        var out: [String] = []
        var rest = Substring(s)
        while let r = rest.range(of: "require") {
            var i = r.upperBound
            rest = rest[i...]
            while i < rest.endIndex, rest[i] == " " || rest[i] == "(" { i = rest.index(after: i) }
            guard i < rest.endIndex, rest[i] == "\"" || rest[i] == "'" else { continue }
            let q = rest[i]
            let start = rest.index(after: i)
            guard let end = rest[start...].firstIndex(of: q) else { continue }
            let name = String(rest[start..<end])
            if !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" }) { out.append(name) }
        }
        return out
    }
}
