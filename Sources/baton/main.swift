// The command line only: each command declared once (swift-argument-parser), dispatch,
// exit code. Logic lives in the libraries.
import ArgumentParser
import BatonCore
import BatonLua
import BatonShell
import CBatonSys
import Glibc

/// Options every command takes, before or after the command's name
/// (`baton --runs-dir D runs` and `baton runs --runs-dir D`).
struct Globals: ParsableArguments {
    @Option(name: .customLong("runs-dir"),
            help: ArgumentHelp("The runs directory (default: BATON_RUNS_DIR, else .baton/runs in the nearest directory up from here that has a .baton).", valueName: "DIR"),
            completion: .directory)
    var runsDir: String?
}

/// The `--runs-dir` given after the command wins over one given before it.
protocol RunsCommand: ParsableCommand {
    var globals: Globals { get }
}

extension RunsCommand {
    var root: String { RunStore.defaultRoot(override: globals.runsDir ?? Baton.leadingRunsDir) }
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

/// A command that takes one run and nothing else: its name, help line and action.
struct OneRunSpec: Sendable {
    var name: String
    var abstract: String
    var perform: @Sendable (_ root: String, _ ref: String?, _ json: Bool) -> Int32
}

protocol OneRunKind { static var spec: OneRunSpec { get } }

/// status, wait, cancel: one command type; each kind below is one line of data.
struct OneRun<Kind: OneRunKind>: RunsCommand {
    static var configuration: CommandConfiguration { CommandConfiguration(commandName: Kind.spec.name, abstract: Kind.spec.abstract) }
    @OptionGroup var args: RunArguments
    var globals: Globals { args.globals }

    mutating func run() throws { Glibc.exit(Kind.spec.perform(root, args.ref, args.json.json)) }
}

enum StatusKind: OneRunKind { static let spec = OneRunSpec(name: "status", abstract: "One run: state, current stage, liveness.", perform: Commands.status) }
enum WaitKind: OneRunKind { static let spec = OneRunSpec(name: "wait", abstract: "Wait until a run ends; exit with its exit code (an orphaned run: 1).", perform: Commands.wait) }
enum CancelKind: OneRunKind { static let spec = OneRunSpec(name: "cancel", abstract: "Stop a live run (or finish an orphaned one).", perform: Commands.cancel) }

struct Baton: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "Runs Lua recipes of stages, journaled, resumable.",
        discussion: """
            With no command: the interactive shell when stdin is a terminal, else the Lua read \
            from stdin. Exit codes: 0 success, 1 failure, 2 gate exhausted, 3 usage, \
            4 preflight failed, 5..99 recipe chosen, 124 run budget exceeded, 128+n signal n (docs/guide.md).
            """,
        version: "baton \(BatonVersion.string) (Lua \(LuaInfo.version))",
        subcommands: [Run.self, Runs.self, OneRun<StatusKind>.self, Log.self, Report.self, OneRun<WaitKind>.self, OneRun<CancelKind>.self,
                      Resume.self, Attach.self, Prune.self, Check.self, Init.self, TypesCommand.self, Repl.self, Version.self,
                      Watchdog.self])

    @OptionGroup var globals: Globals

    /// `--runs-dir` given before the command's name (read before parsing: subcommands
    /// see only their own options).
    nonisolated(unsafe) static var leadingRunsDir: String?

    mutating func run() throws {
        Glibc.exit(Shell.main(root: RunStore.defaultRoot(override: globals.runsDir)))
    }
}

struct Run: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a recipe.",
        discussion: """
            Options come before RECIPE; everything after it belongs to the recipe (`arg`, `...`, \
            and key=value words in baton.args): `baton run r.lua --json x=1` passes both words on, \
            and `baton run r.lua --help` shows the recipe's own parameters.
            """)

    @Flag(name: .customLong("dry-run"), help: "Show the stages that would run; run nothing.") var dryRun = false
    @Flag(help: "Start the run in its own session and return at once, printing its id and directory.") var detach = false
    @Flag(help: "Print final.json on stdout; everything for people goes to stderr.") var json = false
    @Flag(name: [.customLong("stream"), .customShort("v")], help: "Echo each stage's output as it comes.") var stream = false
    @Option(name: .customLong("run-id"), help: ArgumentHelp("The run's id (letters, digits, '-', '_', '.').", valueName: "ID"))
    var runID: String?
    @Option(name: .customLong("existing-run"), help: .hidden) var existingRun: String?
    @Option(help: ArgumentHelp("Journal flushes: 'batched' (default) or 'always'.", valueName: "batched|always"),
            completion: .list(["batched", "always"]))
    var sync: String?
    @Option(help: ArgumentHelp("End the whole run after this long, like a cancel (exit 124): 2h, 30m, 90s, 1h30m, seconds.",
                               valueName: "DURATION"))
    var budget: String?
    @Option(help: ArgumentHelp("Where stages run unless a stage says otherwise: local (default) or slurm (docs/slurm.md).",
                               valueName: "local|slurm"), completion: .list(["local", "slurm"]))
    var executor: String?
    @OptionGroup var globals: Globals
    @Argument(help: ArgumentHelp("The recipe file; the words after it are the recipe's own.", valueName: "RECIPE"),
              completion: .file(extensions: ["lua"]))
    var recipe: String?
    @Argument(help: ArgumentHelp("The recipe's arguments, options included.", valueName: "ARGS"))
    var args: [String] = []

    /// Options of `run` that take a value (where the recipe starts is found before parsing).
    static let valueOptions: Set<String> = ["--run-id", "--existing-run", "--sync", "--runs-dir", "--budget", "--executor"]
    /// The words after RECIPE: they are the recipe's, never parsed as baton's options.
    nonisolated(unsafe) static var passthrough: [String] = []

    func validate() throws {
        guard recipe != nil else { throw ValidationError("run needs a RECIPE file") }
        _ = try syncPolicy(sync)
        _ = try runBudget(budget)
    }

    mutating func run() throws {
        var o = RunOptions(recipe: recipe!, runsDir: root)
        o.words = args + Run.passthrough
        o.runID = runID ?? existingRun
        o.dryRun = dryRun
        o.json = json
        o.stream = stream
        o.sync = try syncPolicy(sync)
        o.budget = try runBudget(budget)
        // Read by RunContext; a detached runner inherits it.
        if let e = executor { setenv("BATON_EXECUTOR", e, 1) }
        o.existingRun = existingRun != nil
        Run.start(o, detach: detach)
    }

    /// The one way from options to a runner (or a detached one).
    static func start(_ o: RunOptions, detach: Bool) -> Never {
        if detach { Glibc.exit(Detach.start(options: o)) }
        _ = baton_set_subreaper()
        var o = o
        o.exitWhenDone = true
        Glibc.exit(RecipeRunner.run(o))
    }

    /// `baton run RECIPE [WORDS...]` with no option before RECIPE leaves the parser nothing
    /// to decide, and its reflection over every declaration would cost a third of a cold
    /// start (docs/performance.md). Any other form is parsed.
    static func plain(_ args: [String]) -> RunOptions? {
        guard args.count >= 2, args[0] == "run", let r = args[1].first, r != "-", args[1] != "help" else { return nil }
        var o = RunOptions(recipe: args[1], runsDir: RunStore.defaultRoot())
        o.words = Array(args.dropFirst(2))
        return o
    }
}

func runBudget(_ v: String?) throws -> (seconds: Double, text: String)? {
    guard let v else { return nil }
    guard let s = Clock.parseDuration(v), s > 0 else { throw ValidationError("--budget takes a duration such as 2h, 30m or 90s, got '\(v)'") }
    return (s, v)
}

func syncPolicy(_ v: String?) throws -> SyncPolicy {
    guard let v else { return RunOptions.defaultSync }
    guard let s = SyncPolicy(rawValue: v), s != .never else { throw ValidationError("--sync must be 'batched' or 'always', got '\(v)'") }
    return s
}

extension RunInfo.State: ExpressibleByArgument {}

struct Runs: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "List runs, newest first.")
    @Option(name: .customShort("n"), help: ArgumentHelp("At most N runs.", valueName: "N")) var limit: Int?
    @Option(help: ArgumentHelp("Only runs in this state.", valueName: "STATE")) var state: RunInfo.State?
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    func validate() throws { if let n = limit, n < 0 { throw ValidationError("-n must be 0 or more") } }

    mutating func run() throws { Glibc.exit(Commands.runs(root: root, json: json.json, limit: limit, state: state)) }
}

/// An age: a number and a unit, s, m, h, d or w (`7d`).
struct Age: ExpressibleByArgument {
    var seconds: Double
    init?(argument: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
        guard let u = argument.last, let unit = units[u], let n = Double(argument.dropLast()), n >= 0 else { return nil }
        seconds = n * unit
    }
}

struct Prune: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Delete ended runs: beyond the N newest, or older than an age.",
        discussion: "A live run is never deleted; an orphaned one only with --force. Both limits together: a run goes when it is beyond the N newest and older than the age.")
    @Option(help: ArgumentHelp("Keep the N newest runs.", valueName: "N")) var keep: Int?
    @Option(name: .customLong("older-than"), help: ArgumentHelp("Only runs that ended longer ago than AGE (30m, 12h, 7d, 2w).", valueName: "AGE"))
    var olderThan: Age?
    @Flag(help: "Delete orphaned runs too.") var force = false
    @Flag(name: .customLong("dry-run"), help: "Say what would be deleted; delete nothing.") var dryRun = false
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    func validate() throws {
        if let k = keep, k < 0 { throw ValidationError("--keep must be 0 or more") }
        if keep == nil && olderThan == nil { throw ValidationError("prune needs --keep N or --older-than AGE") }
    }

    mutating func run() throws {
        Glibc.exit(Commands.prune(root: root, keep: keep, olderThan: olderThan?.seconds, force: force, dryRun: dryRun, json: json.json))
    }
}

struct Log: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "A run's journal as lines, or a stage's output.")
    @OptionGroup var args: RunArguments
    @Flag(name: [.long, .customShort("f")], help: "Follow the journal until the run ends, then say how it ended.") var follow = false
    @Option(help: ArgumentHelp("Show this stage's stdout and stderr (every attempt).", valueName: "ID")) var stage: String?
    @Flag(help: "Why each stage call replayed or ran, for each resume (with --stage: that stage's).") var why = false
    var globals: Globals { args.globals }

    mutating func run() throws {
        if why { Glibc.exit(Commands.why(root: root, ref: args.ref, stage: stage, json: args.json.json)) }
        Glibc.exit(Commands.log(root: root, ref: args.ref, follow: follow, stage: stage, json: args.json.json))
    }
}

struct Report: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a run's self-contained HTML report (report.html in its directory by default), a trace, a TSV.")
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @Option(help: ArgumentHelp("Write the HTML report here.", valueName: "FILE"), completion: .file()) var html: String?
    @Option(help: ArgumentHelp("Write Chrome Trace Event JSON here (Perfetto, chrome://tracing).", valueName: "FILE"),
            completion: .file()) var trace: String?
    @Option(help: ArgumentHelp("Write one row per attempt here (Nextflow trace field names).", valueName: "FILE"),
            completion: .file()) var tsv: String?
    @OptionGroup var globals: Globals

    mutating func run() throws {
        Glibc.exit(Commands.report(root: root, ref: ref, html: html, trace: trace, tsv: tsv))
    }
}

struct Attach: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "A Lua prompt inside a live run (its globals, the locals where it waits; :stages, :tail, :kill, :skip, :extend, :detach).")
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(BatonShell.Attach.main(root: root, ref: ref)) }
}

/// Started by a runner with its first stage (Survivors.watchdog); not for people.
struct Watchdog: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "__watchdog", shouldDisplay: false)
    @Argument var runID: String

    mutating func run() throws { Glibc.exit(Survivors.watchdog(runID: runID)) }
}

struct Resume: RunsCommand {
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

struct Check: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Lint a recipe without running it: syntax (modules too), undefined globals, misspelt fields, wrong literal types.")
    @Argument(help: ArgumentHelp("The recipe file.", valueName: "RECIPE"), completion: .file(extensions: ["lua"]))
    var recipe: String
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Commands.check(recipe: recipe, json: json.json)) }
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Set up a directory for recipes: .baton/, editor types (.luarc.json), .luacheckrc.")
    @Argument(help: ArgumentHelp("The directory (default: the current one).", valueName: "DIR"), completion: .directory)
    var dir = "."
    @Flag(help: "Replace an existing .luarc.json and .luacheckrc.") var force = false
    @OptionGroup var json: JSONFlag

    mutating func run() throws { Glibc.exit(Types.initialize(dir: dir, force: force, json: json.json)) }
}

struct TypesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "types", abstract: "Print LuaCATS annotations of the recipe environment (for lua-language-server).")

    mutating func run() throws { Glibc.exit(Types.types()) }
}

struct Repl: RunsCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl", abstract: "The interactive shell.")
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Shell.main(root: root)) }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Print the version.", shouldDisplay: false)

    mutating func run() throws {
        print(Baton.configuration.version)
        Glibc.exit(ExitStatus.success.rawValue)
    }
}

baton_signals_install()
var arguments = Array(CommandLine.arguments.dropFirst())
if let o = Run.plain(arguments) { Run.start(o, detach: false) }
// `baton` alone (the shell, or piped Lua) has nothing to parse either.
if arguments.isEmpty { Glibc.exit(Shell.main(root: RunStore.defaultRoot())) }
Baton.leadingRunsDir = Completion.leadingRunsDir(arguments)
(arguments, Run.passthrough) = Completion.splitRecipeArguments(arguments)
let commandNames = Baton.configuration.subcommands.filter { $0.configuration.shouldDisplay }.compactMap { $0.configuration.commandName }
if let message = Completion.unknownCommand(arguments, known: commandNames + ["help", "version", "__watchdog"]) {
    Glibc.exit(Console.error(message, json: arguments.contains("--json")))
}
do {
    var command = try Baton.parseAsRoot(arguments)
    try command.run()
} catch {
    let code = Baton.exitCode(for: error)
    let message = Baton.fullMessage(for: error)
    if code == .success {
        // --help, help COMMAND, --version, completion scripts and answers.
        if !message.isEmpty { Console.out(message) }
        Glibc.exit(ExitStatus.success.rawValue)
    }
    if let e = error as? ExitCode { Glibc.exit(e.rawValue) }
    var text = message.trimmingWhitespace()
    if text.hasPrefix("Error: ") { text.removeFirst(7) }
    if arguments.contains("--json") {
        // Only the first line: the usage that follows is for people.
        _ = Console.error(String(text.prefix { $0 != "\n" }), json: true)
    } else {
        diag("baton: " + text)
    }
    Glibc.exit(ExitStatus.usage.rawValue)
}
