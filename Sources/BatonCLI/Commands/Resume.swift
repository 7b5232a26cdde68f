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
    @Flag(name: [.customLong("stream"), .customShort("v")],
          help: "Echo each stage's output as it comes.") var stream = false
    @Option(help: ArgumentHelp("End the resumed run after this long, like a cancel (exit 124).", valueName: "DURATION"))
    var budget: String?
    var globals: Globals { args.globals }

    func validate() throws { _ = try syncPolicy(sync); _ = try runBudget(budget) }

    mutating func run() throws {
        _ = baton_set_subreaper()
        Glibc.exit(Commands.resume(root: root,
                                   ref: args.ref,
                                   json: args.json.json,
                                   sync: try syncPolicy(sync),
                                   stream: stream,
                                   budget: try runBudget(budget), exitWhenDone: true))
    }
}

extension Commands {
    public static func resume(root: String,
                              ref: String?,
                              json: Bool,
                              sync: SyncPolicy = RunOptions.defaultSync,
                              stream: Bool = false,
                              budget: (seconds: Double, text: String)? = nil, exitWhenDone: Bool = false) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        if let refused = refuseLinked(dir, json: json) { return refused }
        let (history, contents) = dir.readHistory()
        guard let start = history.latestStart?.began else {
            return fail("run \(dir.id) has no run_started event: nothing to resume", json: json)
        }
        var recipe = start.recipe
        if FileIO.isDirectory(start.cwd) {
            if !FileIO.changeDirectory(start.cwd) { diag("baton: cannot enter \(start.cwd)") }
        } else if let moved = movedProject(cwd: start.cwd, recipe: start.recipe, root: root) {
            // The project was moved (`mv proj proj2`): the run's directory in its new place.
            _ = FileIO.changeDirectory(moved.cwd)
            recipe = moved.recipe
        }
        var o = RunOptions(recipe: recipe, runsDir: root)
        o.words = start.args
        o.json = json
        o.stream = stream
        o.sync = sync
        o.budget = budget
        o.exitWhenDone = exitWhenDone
        return RecipeRunner.resume(dir: dir, options: o, read: (contents, history))
    }

    /// Where a run's working directory is now when it no longer exists: the runs directory
    /// is `PROJECT/.baton/runs`, so the old directory's tail is tried under PROJECT and its
    /// parents' (`/a/proj/sub` → `/b/proj2/sub`, then `/b/proj2`), taking the first that
    /// holds the recipe. An absolute recipe path moves with it.
    static func movedProject(cwd: String, recipe: String, root: String) -> (cwd: String, recipe: String)? {
        guard let project = ProjectLayout.project(ofRunsDir: root) else { return nil }
        let parts = cwd.split(separator: "/").map(String.init)
        for k in stride(from: parts.count - 1, through: 0, by: -1) {
            let tail = parts[(parts.count - k)...]
            let candidate = tail.isEmpty ? project : project + "/" + tail.joined(separator: "/")
            guard FileIO.isDirectory(candidate) else { continue }
            var r = recipe
            if recipe.hasPrefix(cwd + "/") { r = candidate + recipe.dropFirst(cwd.count) }
            else if recipe.hasPrefix("/") { continue }
            if FileIO.exists(r.hasPrefix("/") ? r : candidate + "/" + r) { return (candidate, r) }
        }
        return nil
    }
}

