import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct CheckCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Lint a recipe without running it: syntax (modules too), undefined globals, misspelt fields, wrong literal types.")
    @Argument(help: ArgumentHelp("The recipe file.", valueName: "RECIPE"), completion: .file(extensions: ["lua"]))
    var recipe: String
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Commands.check(recipe: recipe, json: json.json)) }
}

extension Commands {
    /// `baton check`: findings as `file:line:column: message [code]` on stderr, or with
    /// `--json` `{recipe, ok, findings: [{file, line, column, code, message}], errors}`; exit 3 when any.
    public static func check(recipe: String, json: Bool) -> Int32 {
        let report = RecipeCheck.check(recipe)
        if json {
            out(JSON.object([("recipe", .string(recipe)), ("ok", .bool(report.ok)),
                             ("findings", .array(report.findings.map(\.json))),
                             ("errors", .array(report.findings.map { .string($0.text) }))]).encoded(pretty: true))
        } else {
            for f in report.findings { diag(f.text) }
            if report.ok { out("\(recipe): ok") }
        }
        return report.ok ? ExitStatus.success.rawValue : ExitStatus.usage.rawValue
    }
}

