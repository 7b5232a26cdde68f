import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// Options every command takes, before or after the command's name
/// (`baton --runs-dir D runs` and `baton runs --runs-dir D`).
struct Globals: ParsableArguments {
    @Option(name: .customLong("runs-dir"),
            help: ArgumentHelp("The runs directory (default: BATON_RUNS_DIR, else .baton/runs in the nearest "
                    + "directory up from here that has a .baton).",
                               valueName: "DIR"),
            completion: .directory)
    var runsDir: String?
}

/// The `--runs-dir` given after the command wins over one given before it.
protocol RunsDirCommand: ParsableCommand {
    var globals: Globals { get }
}

extension RunsDirCommand {
    var root: String { RunStore.defaultRoot(override: globals.runsDir ?? BatonCommand.leadingRunsDir) }
}

/// A RUN argument: an id, a unique prefix of one, or `latest`; Tab offers the ids.
let runHelp = ArgumentHelp("A run id, a unique prefix of one, or 'latest' (the default).", valueName: "RUN")
let runCompletion = CompletionKind.custom { words, _, _ in Completion.runIDs(words: words) }

struct JSONFlag: ParsableArguments {
    @Flag(name: .long, help: "Print JSON on stdout (docs/cli.md).") var json = false
}

/// RUN, --json and the global options: what every command about one run takes.
struct RunArguments: ParsableArguments {
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals
}

