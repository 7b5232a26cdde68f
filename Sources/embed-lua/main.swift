// The build tool behind Plugins/EmbedLua: writes the Swift file that carries scripts-lua's
// modules into the binary. Arguments: the scripts-lua directory and the output file.
import Foundation

let args = CommandLine.arguments
guard args.count == 3 else {
    FileHandle.standardError.write(Data("usage: embed-lua SCRIPTS_LUA_DIR OUTPUT\n".utf8))
    exit(2)
}
let root = URL(fileURLWithPath: args[1]).standardizedFileURL.path + "/"
var out = "// Generated at build time by Plugins/EmbedLua from scripts-lua/. Do not edit.\n"
out += "enum EmbeddedLua {\n    static let modules: [String: (file: String, source: String)] = [\n"
var count = 0
/// Every `.lua` file under the directory, sorted by path (the generated file's order).
var paths: [String] = []
if let walk = FileManager.default.enumerator(atPath: root) {
    for case let rel as String in walk where rel.hasSuffix(".lua") { paths.append(root + rel) }
}
for path in paths.sorted() {
    let full = URL(fileURLWithPath: path).standardizedFileURL.path
    guard full.hasPrefix(root), let text = try? String(contentsOfFile: full, encoding: .utf8) else { continue }
    let rel = String(full.dropFirst(root.count))
    // Module name: the path without .lua, dots for slashes, `x.init` as `x` (as require finds it).
    var name = String(rel.dropLast(4)).replacingOccurrences(of: "/", with: ".")
    if name.hasSuffix(".init") { name = String(name.dropLast(5)) }
    // A raw string delimiter that the text cannot close early.
    var hashes = "#"
    while text.contains("\"" + hashes) { hashes += "#" }
    out += "        \"\(name)\": (\"\(rel)\", \(hashes)\"\"\"\n\(text)\n\"\"\"\(hashes)),\n"
    count += 1
}
if count == 0 { out += "        :\n" }
out += "    ]\n}\n"
if let old = try? String(contentsOfFile: args[2], encoding: .utf8), old == out { exit(0) }
do {
    try out.write(toFile: args[2], atomically: true, encoding: .utf8)
} catch {
    FileHandle.standardError.write(Data("embed-lua: cannot write \(args[2]): \(error)\n".utf8))
    exit(1)
}
