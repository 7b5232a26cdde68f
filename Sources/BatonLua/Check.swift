import BatonCore
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
        return r
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
