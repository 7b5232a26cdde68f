import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct ResumeCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "resume", abstract: "Continue a run, replaying what passed.")
    @OptionGroup var args: RunArguments
    @Option(help: ArgumentHelp("Journal flushes: 'batched' (default) or 'always'.", valueName: "batched|always"),
            completion: .list(["batched", "always"]))
    var sync: String?
    @Flag(name: [.customLong("stream"), .customShort("v")], help: "Echo each stage's output as it comes.") var stream = false
    @Option(help: ArgumentHelp("End the resumed run after this long, like a cancel (exit 124).", valueName: "DURATION"))
    var budget: String?
    var globals: Globals { args.globals }

    func validate() throws { _ = try syncPolicy(sync); _ = try runBudget(budget) }

    mutating func run() throws {
        _ = baton_set_subreaper()
        Glibc.exit(Commands.resume(root: root, ref: args.ref, json: args.json.json, sync: try syncPolicy(sync), stream: stream,
                                   budget: try runBudget(budget), exitWhenDone: true))
    }
}

extension Commands {
    public static func resume(root: String, ref: String?, json: Bool, sync: SyncPolicy = RunOptions.defaultSync, stream: Bool = false,
                              budget: (seconds: Double, text: String)? = nil, exitWhenDone: Bool = false) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        if let refused = refuseLinked(dir, json: json) { return refused }
        let (history, contents) = dir.readHistory()
        guard let start = history.latestStart?.began else {
            return fail("run \(dir.id) has no run_started event: nothing to resume", json: json)
        }
        if FileIO.isDirectory(start.cwd), !FileIO.changeDirectory(start.cwd) {
            diag("baton: cannot enter \(start.cwd)")
        }
        var o = RunOptions(recipe: start.recipe, runsDir: root)
        o.words = start.args
        o.json = json
        o.stream = stream
        o.sync = sync
        o.budget = budget
        o.exitWhenDone = exitWhenDone
        return RecipeRunner.resume(dir: dir, options: o, read: (contents, history))
    }
}

