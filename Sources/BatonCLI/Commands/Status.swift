import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// `baton status [RUN] [--json] [--watch]`.
struct StatusCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(commandName: "status",
                                                            abstract: "One run: state, current stage, liveness.")
    @OptionGroup var args: RunArguments
    @Flag(name: [.customLong("watch"), .customShort("w")],
          help: "Show the live view (what is in flight) until the run ends; exit with its exit code.") var watch = false
    var globals: Globals { args.globals }

    mutating func run() throws {
        if watch, !args.json.json { Glibc.exit(Commands.statusWatch(root: root, ref: args.ref)) }
        Glibc.exit(Commands.status(root: root, ref: args.ref, json: args.json.json))
    }
}

extension Commands {
    /// `status --watch`: the run's live view, read from its journal, redrawn on stdout until
    /// the run ends; then its outcome line and exit code (as `wait`).
    public static func statusWatch(root: String, ref: String?) -> Int32 {
        guard let dir = resolve(root, ref, json: false) else { return ExitStatus.usage.rawValue }
        return RunView(dir).watch(header: true)
    }

    public static func status(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        RunView(dir).status(json: json)
        return ExitStatus.success.rawValue
    }
}
