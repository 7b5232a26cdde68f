import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct CheckCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Lint recipes without running them: syntax (modules too), undefined globals, misspelt fields, "
            + "wrong literal types.",
        discussion: "A directory means every *.lua under it that is a recipe (modules it requires are checked with "
            + "it). Finding codes: docs/cli.md.")
    @Argument(help: ArgumentHelp("Recipe files and directories.", valueName: "PATH"),
              completion: .file(extensions: ["lua"]))
    var paths: [String] = []
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    func validate() throws { if paths.isEmpty { throw ValidationError("check needs a RECIPE file or a directory") } }

    mutating func run() throws { Glibc.exit(Commands.check(paths: paths, json: json.json)) }
}

extension Commands {
    /// `baton check PATH...`: findings as `file:line:column: message [code]` on stderr,
    /// sorted by file and line, or with `--json` `{recipe (one file given) or recipes,
    /// ok, findings: [{file, line, column, code, message}], errors}`; exit 3 when any.
    public static func check(paths: [String], json: Bool) -> Int32 {
        let (recipes, failed, report) = RecipeCheck.check(paths: paths)
        let single = paths.count == 1 && !FileIO.isDirectory(paths[0])
        if json {
            let which: (String, JSON) = single
                ? ("recipe", .string(paths[0]))
                : ("recipes", .array(recipes.map(JSON.string)))
            out(JSON.object([which, ("ok", .bool(report.ok)),
                             ("findings", .array(report.findings.map(\.json))),
                             ("errors", .array(report.findings.map { .string($0.text) }))]).encoded(pretty: true))
        } else {
            for f in report.findings { diag(f.text) }
            for r in recipes where !failed.contains(r) { out("\(r): ok") }
            if recipes.isEmpty { diag("baton check: no recipe (*.lua) in \(paths.joined(separator: " "))") }
        }
        return report.ok && !recipes.isEmpty ? ExitStatus.success.rawValue : ExitStatus.usage.rawValue
    }

    /// One recipe (the shell's :check and older callers).
    public static func check(recipe: String, json: Bool) -> Int32 { check(paths: [recipe], json: json) }
}
