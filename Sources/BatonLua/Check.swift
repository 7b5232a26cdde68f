import BatonBase
import BatonCore
import CLua
import LuaKit

/// `baton check`: loads a recipe without running it, compiles the modules it requires, and
/// lints its source (kit.lint): undefined globals (the recipe environment's own globals
/// known), misspelt fields and wrongly typed literals in literal primitive tables.
public enum RecipeCheck {
    /// One problem, where it is.
    public struct Finding: Sendable {
        public var file: String
        public var line: Int
        public var column: Int
        public var code: String
        public var message: String
        /// An error the run would certainly raise when it got there (`baton run` stops on it).
        public var certain = false

        public var text: String { "\(file):\(line):\(column): \(message) [\(code)]" }

        public init(file: String, line: Int, column: Int, code: String, message: String, certain: Bool = false) {
            self.file = file
            self.line = line
            self.column = column
            self.code = code
            self.message = message
            self.certain = certain
        }
        public var json: JSON {
            .object([("file", .string(file)), ("line", .int(Int64(line))), ("column", .int(Int64(column))),
                     ("code", .string(code)), ("message", .string(message))])
        }
    }

    public struct Report {
        public var findings: [Finding] = []
        public var ok: Bool { findings.isEmpty }
    }

    /// `baton check PATH...`: every file given, and every `*.lua` under a directory given
    /// (hidden directories skipped) that is a recipe: a file some other file there requires
    /// (or one under a `scripts-lua` directory, where `require` looks) is a module, compiled
    /// with the recipe that requires it and not checked as a recipe itself. The recipes
    /// checked, in order, and every finding sorted by file, line and column.
    public static func check(paths: [String]) -> (recipes: [String], failed: Set<String>, report: Report) {
        var files: [String] = [], fromDirectories = Set<String>()
        for p in paths {
            if FileIO.isDirectory(p) {
                let found = luaFiles(under: p)
                files += found
                fromDirectories.formUnion(found)
            } else {
                files.append(p)
            }
        }
        // Modules: what the files found in directories require, resolved as the runtime would.
        var modules = Set<String>()
        for f in files where fromDirectories.contains(f) {
            if f.split(separator: "/").contains("scripts-lua") { modules.insert(FileIO.absolute(f)); continue }
            guard let bytes = try? FileIO.readFile(f) else { continue }
            let dir = FileIO.dirname(FileIO.absolute(f))
            for (name, _) in requiredModules(String(decoding: bytes, as: UTF8.self)) {
                modules.formUnion(moduleFiles(name, recipeDir: dir).map(FileIO.absolute))
            }
        }
        var recipes: [String] = [], seen = Set<String>()
        for f in files where !(fromDirectories.contains(f) && modules.contains(FileIO.absolute(f))) {
            if seen.insert(FileIO.absolute(f)).inserted { recipes.append(f) }
        }
        var r = Report(), failed = Set<String>()
        for f in recipes {
            let found = check(f).findings
            if !found.isEmpty { failed.insert(f) }
            r.findings += found
        }
        r.findings.sort { ($0.file, $0.line, $0.column) < ($1.file, $1.line, $1.column) }
        return (recipes, failed, r)
    }

    /// Every `*.lua` under `dir`, sorted, hidden directories (`.baton`, `.build`, `.git`) skipped.
    static func luaFiles(under dir: String) -> [String] {
        var out: [String] = []
        let base = dir.hasSuffix("/") && dir.count > 1 ? String(dir.dropLast()) : dir
        for name in FileIO.list(base).sorted() where !name.hasPrefix(".") {
            let path = base == "." ? name : base + "/" + name
            if FileIO.isDirectory(path) { out += luaFiles(under: path) } else if name.hasSuffix(".lua") {
                out.append(path)
            }
        }
        return out
    }

    public static func check(_ recipe: String) -> Report {
        var r = Report()
        let text: [UInt8]
        do { text = try FileIO.readFile(recipe) } catch {
            r.findings.append(Finding(file: recipe,
                                      line: 1,
                                      column: 1,
                                      code: "read",
                                      message: "cannot read recipe \(error)")); return r
        }
        if text.first == 0x1B {
            r.findings.append(Finding(file: recipe,
                                      line: 1,
                                      column: 1,
                                      code: "binary",
                                      message: "binary (precompiled) chunks are refused; recipes are Lua text"))
            return r
        }
        let env = RecipeEnvironment(memoryLimit: 512 << 20, output: OutputOptions(json: true, quiet: true))
        let recipeDir = FileIO.dirname(FileIO.absolute(recipe))
        env.setRequirePaths(recipeDir: recipeDir)
        if let f = compile(env, text, file: recipe) { r.findings.append(f); return r }
        // Literal require("name") calls must resolve (next to the recipe, scripts-lua/, or
        // built in), and what they name must compile.
        let source = String(decoding: text, as: UTF8.self)
        for (name, offset) in requiredModules(source) {
            if EmbeddedLua.modules[name] != nil { continue }
            guard let file = moduleFiles(name, recipeDir: recipeDir).first(where: FileIO.exists) else {
                let (line, column) = position(source, offset)
                r.findings.append(Finding(file: recipe, line: line, column: column, code: "require",
                                          message: "require '\(name)': no such module next to the recipe, in "
                                              + "./scripts-lua or built in"))
                continue
            }
            if let bytes = try? FileIO.readFile(file), let f = compile(env, bytes, file: file) { r.findings.append(f) }
        }
        r.findings += lint(env, source, file: recipe)
        r.findings += backoffFindings(source, recipe: recipe, lua: env.lua)
        return r
    }

    /// The files `require(name)` may load from disk, in the order it looks: next to the recipe,
    /// then ./scripts-lua, `a/b.lua` before `a/b/init.lua` (as setRequirePaths sets package.path).
    static func moduleFiles(_ name: String, recipeDir: String) -> [String] {
        let rel = name.split(separator: ".").joined(separator: "/")
        return [recipeDir, FileIO.currentDirectory() + "/scripts-lua"].flatMap {
            ["\($0)/\(rel).lua", "\($0)/\(rel)/init.lua"]
        }
    }

    /// What `baton run` checks before the first stage, on the runner's own Lua state (its
    /// globals are the recipe environment's, nothing ran yet): kit.lint's findings that are
    /// certain errors. Undefined globals only when the recipe and the modules it requires
    /// cannot make globals the linter does not see (`_G`, `rawset`, `load`, a computed
    /// `require`); what those modules assign counts as defined.
    public static func beforeRun(env: RecipeEnvironment, recipe: String, text: [UInt8]) -> [Finding] {
        let source = String(decoding: text, as: UTF8.self)
        let recipeDir = FileIO.dirname(FileIO.absolute(recipe))
        // The sources of the modules it requires: read only when an undefined global needs them.
        func moduleSources() -> [String] {
            var modules: [String] = []
            for (name, _) in requiredModules(source) {
                if let file = moduleFiles(name, recipeDir: recipeDir).first(where: FileIO.exists),
                   let bytes = try? FileIO.readFile(file) {
                    modules.append(String(decoding: bytes, as: UTF8.self))
                } else if let m = EmbeddedLua.modules[name] {
                    modules.append(m.source)
                }
            }
            return modules
        }
        // (The linter's own failure never stops a run.)
        return (try? runLint(env, source, file: recipe, certainOnly: true, modules: moduleSources)) ?? []
    }

    /// `backoff = ...` written as a literal is checked as runStage will check it (the same
    /// code). Anything computed is left to the run.
    static func backoffFindings(_ source: String, recipe: String, lua: LuaState) -> [Finding] {
        var errors: [Finding] = []
        for (line, literal) in literalTables(source, field: "backoff") {
            let base = lua.top
            defer { lua.top = base }
            do {
                try lua.load(Array("return {backoff = \(literal)}".utf8), name: "=check")
                try lua.pcall(nargs: 0, nresults: 1)
            } catch let e as LuaCallError { lua.unref(e.ref); continue } catch { continue }
            do {
                _ = try RecipeEnvironment.backoff(SpecTable(nested: lua, index: -1, fn: "runStage"))
            } catch let e as LuaRaise {
                errors.append(Finding(file: recipe, line: line, column: 1, code: "field", message: e.message))
            } catch {}
        }
        return errors
    }

    /// `field = <literal>` (a table of literals, a string or a number), with its line.
    /// Skipped: anything after `--` on that line, nested tables, variables, calls.
    static func literalTables(_ source: String, field: String) -> [(Int, String)] {
        let s = Array(source.utf8), f = Array(field.utf8)
        func isName(_ c: UInt8) -> Bool {
            c == 95 || (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c)
        }
        var out: [(Int, String)] = []
        var line = 1, lineStart = 0, i = 0
        while i < s.count {
            if s[i] == 10 { line += 1; lineStart = i + 1; i += 1; continue }
            guard i + f.count <= s.count, Array(s[i..<(i + f.count)]) == f, i == 0 || !isName(s[i - 1]) else {
                i += 1
                continue
            }
            var j = i + f.count
            i = j
            while j < s.count, s[j] == 32 || s[j] == 9 { j += 1 }
            guard j < s.count, s[j] == 61, j + 1 < s.count, s[j + 1] != 61 else { continue }   // '=' not '=='
            j += 1
            while j < s.count, s[j] == 32 || s[j] == 9 { j += 1 }
            guard j < s.count else { continue }
            if String(decoding: s[lineStart..<i], as: UTF8.self).contains("--") { continue }
            if s[j] == 34 || s[j] == 39 {                                                        // a string literal
                if let close = s[(j + 1)...].firstIndex(where: { $0 == s[j] || $0 == 10 || $0 == 92 }),
                   s[close] == s[j] {
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
                } else if c == 34
                    || c == 39 {                                                   // a short string, no escapes
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

    /// The chunk's syntax error, if any, with its line and (from "near 'x'") column.
    static func compile(_ env: RecipeEnvironment, _ text: [UInt8], file: String) -> Finding? {
        do {
            try env.lua.load(text, name: "@" + file)
            env.lua.pop()
            return nil
        } catch let e as LuaCallError {
            env.lua.unref(e.ref)
            // "file:12: unexpected symbol near '='"
            let rest = e.message.hasPrefix(file + ":") ? e.message.dropFirst(file.count + 1) : Substring(e.message)
            let line = Int(rest.prefix { $0.isNumber }) ?? 1
            var message = String(rest.drop { $0.isNumber })
            if message.hasPrefix(": ") { message.removeFirst(2) }
            var column = 1
            if let near = message.range(of: "near '")?.upperBound, let end = message[near...].firstIndex(of: "'") {
                let token = String(message[near..<end])
                let lines = String(decoding: text, as: UTF8.self)
                    .split(separator: "\n", omittingEmptySubsequences: false)
                if line <= lines.count, let at = lines[line - 1].range(of: token) {
                    column = lines[line - 1].distance(from: lines[line - 1].startIndex, to: at.lowerBound) + 1
                }
            }
            return Finding(file: file, line: line, column: column, code: "syntax", message: message)
        } catch {
            return Finding(file: file, line: 1, column: 1, code: "syntax", message: "\(error)")
        }
    }

    /// kit.lint over the source, with the environment's real globals and the declared fields
    /// (their names, types, values; the primitives' argument counts).
    static func lint(_ env: RecipeEnvironment, _ source: String, file: String) -> [Finding] {
        do { return try runLint(env, source, file: file, certainOnly: false, modules: { [] }) } catch {
            return [Finding(file: file, line: 1, column: 1, code: "lint", message: "the linter failed: \(error)")]
        }
    }

    /// The one driver of kit.lint: `check`'s findings, or (`certainOnly`, before a run) those
    /// that are certain errors, an undefined global only when neither the recipe nor the
    /// `modules` it requires (their sources, read only then) could have made it.
    static func runLint(_ env: RecipeEnvironment, _ source: String, file: String, certainOnly: Bool,
                        modules: @escaping () -> [String]) throws -> [Finding] {
        let lua = env.lua
        let driver = """
            local src, file, fields, certainOnly, loadModules = ...
            local lint = require("kit.lint")
            local known = {arg = true}
            for k in pairs(_G) do known[k] = true end
            local found = lint.check(src, file, known, fields)
            if not certainOnly then return found end
            local out, undefined = {}, false
            for _, f in ipairs(found) do
              if f.certain then out[#out + 1] = f; undefined = undefined or f.code == "undefined-global" end
            end
            if not undefined then return out end
            -- Only now (a recipe with an undefined global is rare): could a module, or the
            -- recipe itself, have made it?
            local dynamic, made = lint.dynamicGlobals(src), {}
            for _, m in ipairs(loadModules()) do
              if lint.dynamicGlobals(m) then dynamic = true end
              for _, g in ipairs(lint.assignedGlobals(m)) do made[g] = true end
            end
            local kept = {}
            for _, f in ipairs(out) do
              if f.code ~= "undefined-global" or not (dynamic or made[f.name]) then kept[#kept + 1] = f end
            end
            return kept
            """
        let base = lua.top
        defer { lua.top = base }
        try lua.load(Array(driver.utf8), name: "=baton.check")
        lua.push(source)
        lua.push(file)
        lua.push(json: RecipeEnvironment.lintSpec)
        lua.push(certainOnly)
        lua.pushFunction("baton.checkModules") { (l: LuaState) throws -> Int32 in
            l.push(json: .array(modules().map(JSON.string)))
            return 1
        }
        do { try lua.pcall(nargs: 5, nresults: 1) } catch let e as LuaCallError { lua.unref(e.ref); throw e }
        guard case let .array(items) = try lua.toJSON(-1) else { return [] }
        return items.map { j in
            Finding(file: j["file"]?.stringValue ?? file, line: Int(j["line"]?.intValue ?? 1),
                    column: Int(j["column"]?.intValue ?? 1), code: j["code"]?.stringValue ?? "lint",
                    message: j["message"]?.stringValue ?? "", certain: certainOnly)
        }
    }

    /// 1-based line and column of a byte offset.
    static func position(_ s: String, _ offset: Int) -> (Int, Int) {
        var line = 1, column = 1
        for b in s.utf8.prefix(offset) { if b == 10 { line += 1; column = 1 } else { column += 1 } }
        return (line, column)
    }

    /// Literal `require "name"` / `require("name")` calls: the name and where it stands.
    static func requiredModules(_ s: String) -> [(String, Int)] {
        var out: [(String, Int)] = []
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
            if !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" }) {
                out.append((name, s.utf8.distance(from: s.startIndex, to: r.lowerBound)))
            }
        }
        return out
    }
}
