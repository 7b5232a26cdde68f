import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct RunCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a recipe.",
        discussion: """
            Options come before RECIPE; everything after it belongs to the recipe (`arg`, `...`, \
            and key=value words in baton.args): `baton run r.lua --json x=1` passes both words on, \
            and `baton run r.lua --help` shows the recipe's own parameters.
            """)

    @Flag(name: .customLong("dry-run"), help: "Show the stages that would run; run nothing.") var dryRun = false
    @Flag(help: "Start the run in its own session and return at once, printing its id and directory.")
    var detach = false
    @Flag(help: "Print final.json on stdout; everything for people goes to stderr.") var json = false
    @Flag(name: [.customLong("stream"), .customShort("v")],
          help: "Echo each stage's output as it comes.") var stream = false
    @Flag(name: .customLong("no-check"),
          help: "Do not check the recipe before the first stage (undefined globals, unknown fields, argument counts).")
    var noCheck = false
    @Option(name: .customLong("run-id"),
            help: ArgumentHelp("The run's id (letters, digits, '-', '_', '.').", valueName: "ID"))
    var runID: String?
    @Option(name: .customLong("existing-run"), help: .hidden) var existingRun: String?
    /// Set by `run --detach` for its runner: stdin is the handshake's pipe (DetachHandshake).
    @Flag(name: .customLong("handshake"), help: .hidden) var handshake = false
    @Option(help: ArgumentHelp("Journal flushes: 'batched' (default) or 'always'.", valueName: "batched|always"),
            completion: .list(["batched", "always"]))
    var sync: String?
    @Option(help: ArgumentHelp("End the whole run after this long, like a cancel (exit 124): 2h, 30m, 90s, 1h30m, "
            + "seconds.",
                               valueName: "DURATION"))
    var budget: String?
    @Option(help: ArgumentHelp("Where stages run unless a stage says otherwise: "
                               + Executors.kinds.map { "\($0.name): \($0.summary)" }.joined(separator: "; ") + ".",
                               valueName: Executors.names.joined(separator: "|")), completion: .list(Executors.names))
    var executor: String?
    @Option(name: .customLong("break"),
            help: ArgumentHelp("Pause just before each runStage whose id matches (a glob such as deploy*; "
                    + "repeatable); baton attach opens its prompt there.",
                               valueName: "ID"))
    var breaks: [String] = []
    @Option(name: .customLong("break-timeout"),
            help: ArgumentHelp("A pause with nobody attached goes on after this long (journaled): 10m, 90s.",
                               valueName: "DURATION"))
    var breakTimeout: String?
    @Flag(help: "Use the cache across runs for every stage that declares outputs (unless it says cache = false).")
    var cache = false
    @OptionGroup var globals: Globals
    @Argument(help: ArgumentHelp("The recipe file; the words after it are the recipe's own.", valueName: "RECIPE"),
              completion: .file(extensions: ["lua"]))
    var recipe: String?
    @Argument(help: ArgumentHelp("The recipe's arguments, options included.", valueName: "ARGS"))
    var args: [String] = []

    /// Options of `run` that take a value (where the recipe starts is found before parsing).
    static let valueOptions: Set<String> = ["--run-id", "--existing-run", "--sync", "--runs-dir", "--budget",
                                            "--executor", "--break", "--break-timeout"]
    /// The words after RECIPE: they are the recipe's, never parsed as baton's options.
    nonisolated(unsafe) static var passthrough: [String] = []

    func validate() throws {
        guard recipe != nil else { throw ValidationError("run needs a RECIPE file") }
        _ = try syncPolicy(sync)
        _ = try runBudget(budget)
        _ = try breakTimeoutSeconds(breakTimeout)
    }

    mutating func run() throws {
        var o = RunOptions(recipe: recipe!, runsDir: root)
        o.words = args + RunCommand.passthrough
        o.runID = runID ?? existingRun
        o.dryRun = dryRun
        o.json = json
        o.stream = stream
        o.check = !noCheck
        o.sync = try syncPolicy(sync)
        o.budget = try runBudget(budget)
        if let e = executor { o.executor = e }
        o.cache = cache
        o.existingRun = existingRun != nil
        if handshake { o.readyFD = DetachHandshake.takeStdin() }
        o.breaks = breaks
        o.breakTimeout = try breakTimeoutSeconds(breakTimeout)
        o.attachOnBreak = !detach && existingRun == nil
        RunCommand.start(o, detach: detach)
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
    guard let s = Clock.parseDuration(v), s > 0 else {
        throw ValidationError("--budget takes a duration such as 2h, 30m or 90s, got '\(v)'")
    }
    return (s, v)
}

func breakTimeoutSeconds(_ v: String?) throws -> Double? {
    guard let v else { return nil }
    guard let s = Clock.parseDuration(v), s >= 0 else {
        throw ValidationError("--break-timeout takes a duration such as 10m or 90s, got '\(v)'")
    }
    return s
}

func syncPolicy(_ v: String?) throws -> SyncPolicy {
    guard let v else { return RunOptions.defaultSync }
    guard let s = SyncPolicy(rawValue: v), s != .never else {
        throw ValidationError("--sync must be 'batched' or 'always', got '\(v)'")
    }
    return s
}

/// `baton run --detach`: the run in its own session, its output in run.out.
public enum Detach {
    public static func start(options o: RunOptions) -> Int32 {
        // A missing recipe or a syntax error is said now, not found later in run.out.
        if let problem = RecipeRunner.loadProblem(o.recipe, check: o.check) {
            return Console.error(problem, json: o.json)
        }
        let store = RunStore(root: o.runsDir)
        let dir: RunDirectory
        do { dir = try store.create(id: o.runID) } catch { return Console.error("\(error)", json: o.json) }
        let outFD = RunDirectory.openFile(dir.outFile, O_WRONLY | O_TRUNC)
        guard outFD >= 0 else { return Console.error("cannot create \(dir.outFile)", json: o.json) }
        defer { close(outFD) }
        guard let p = FileIO.pipe() else {   // close-on-exec: the runner's only (as its stdin)
            let why = String(cString: strerror(errno))
            try? store.remove(dir.id)
            return Console.error("cannot start the detached runner: pipe: \(why)", json: o.json)
        }
        let handshake = [p.read, p.write]
        defer { close(handshake[0]) }
        var args = [FileIO.selfExecutable(), "run", "--existing-run", dir.id, "--handshake", "--runs-dir", o.runsDir]
        if o.dryRun { args.append("--dry-run") }
        if o.json { args.append("--json") }
        if o.stream { args.append("--stream") }
        args += ["--sync", o.sync.rawValue]
        if let b = o.budget { args += ["--budget", b.text] }
        if let e = o.executor { args += ["--executor", e] }
        for b in o.breaks { args += ["--break", b] }
        if let t = o.breakTimeout { args += ["--break-timeout", String(t)] }
        if o.cache { args.append("--cache") }
        args.append(o.recipe)
        args.append(contentsOf: o.words)
        do {
            defer { close(handshake[1]) }
            let pid = try Spawner.spawn(argv: args, env: Spawner.currentEnvironment(), cwd: nil, stdin: handshake[1],
                                        stdout: outFD, stderr: outFD, newSession: true, dieWithParent: false)
            try FileIO.writeAtomically(dir.pidFile, Array("\(pid)\n".utf8), mode: RunDirectory.fileMode)
        } catch {
            try? store.remove(dir.id)
            return Console.error("cannot start the detached runner: \(error)", json: o.json)
        }
        // The run's id only once the recipe is under way: words it refuses leave no run.
        switch DetachHandshake.await(handshake[0]) {
        case .usage?:
            relay(dir.outFile, to: 1)
            try? store.remove(dir.id)
            return ExitStatus.success.rawValue
        case let .refused(code, message)?:
            relay(dir.outFile, to: 2)
            try? store.remove(dir.id)
            return Console.error(message, json: o.json, code: code)
        case .ready?, nil:
            break
        }
        if o.json {
            out(JSON.object([("run", .string(dir.id)), ("dir", .string(dir.path))]).encoded())
        } else {
            out(dir.id)
            out(dir.path)
        }
        return ExitStatus.success.rawValue
    }

    /// What the runner printed before it refused (a recipe's usage), as `baton run` shows it.
    static func relay(_ file: String, to fd: Int32) {
        if let bytes = try? FileIO.readFile(file), !bytes.isEmpty { Console.write(fd, bytes: bytes) }
    }
}
