import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct LogCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "A run's journal as lines, or a stage's output.")
    @OptionGroup var args: RunArguments
    @Flag(name: [.long, .customShort("f")],
          help: "Follow the journal until the run ends, then say how it ended.") var follow = false
    @Option(help: ArgumentHelp("Show this stage's stdout and stderr (every attempt).",
                               valueName: "ID")) var stage: String?
    @Flag(help: "Why each stage call replayed or ran, for each resume (with --stage: that stage's).") var why = false
    var globals: Globals { args.globals }

    mutating func run() throws {
        if why { Glibc.exit(Commands.why(root: root, ref: args.ref, stage: stage, json: args.json.json)) }
        Glibc.exit(Commands.log(root: root, ref: args.ref, follow: follow, stage: stage, json: args.json.json))
    }
}

extension Commands {
    /// `baton log`; with `follow`, until the run ends, then its outcome and exit code.
    public static func log(root: String, ref: String?, follow: Bool, stage: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        if let stage { return RunView(dir).stage(stage, follow: follow, json: json) }
        return RunView(dir).events(follow: follow, json: json)
    }
}
