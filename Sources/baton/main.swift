// The command line only: parse, dispatch, exit code. Logic lives in the libraries.
import BatonCore
import BatonLua
import BatonShell
import CBatonSys
import Glibc

let usage = """
usage: baton                                  interactive shell (stdin a terminal)
       baton repl                             interactive shell
       baton run [OPTIONS] RECIPE [ARGS...]   run a recipe
       baton runs [--json]                    list runs, newest first
       baton status [RUN] [--json]            one run: state, current stage, liveness
       baton log [RUN] [--follow] [--stage ID] [--json]
       baton cancel [RUN]                     stop a live run (or finish an orphaned one)
       baton resume [RUN] [--json]            continue a run, replaying what passed
       baton check RECIPE                     syntax and static checks, runs nothing

run options (before RECIPE): --dry-run, --detach, --json, --runs-dir DIR, --run-id ID, --budget 2h, --executor local|slurm,
  --sync batched|always (journal flushes: batched by default, every event with 'always')
every command takes --runs-dir DIR (or BATON_RUNS_DIR; default .baton/runs)
RUN is a run id, a unique prefix of one, or 'latest' (the default)
"""

func fail(_ message: String, code: ExitStatus = .usage) -> Never {
    diag("baton: \(message)")
    if code == .usage { diag("run 'baton --help' for usage") }
    exit(code.rawValue)
}

func budget(_ p: Parsed) -> (seconds: Double, text: String)? {
    guard let v = p.values["--budget"] else { return nil }
    guard let s = Clock.parseDuration(v), s > 0 else { fail("--budget takes a duration such as 2h, 30m or 90s, got '\(v)'") }
    return (s, v)
}

func syncPolicy(_ p: Parsed) -> SyncPolicy {
    guard let v = p.values["--sync"] else { return RunOptions.defaultSync }
    guard let s = SyncPolicy(rawValue: v), s != .never else { fail("--sync must be 'batched' or 'always', got '\(v)'") }
    return s
}

struct Parsed {
    var flags: Set<String> = []
    var values: [String: String] = [:]
    var positional: [String] = []
    var rest: [String] = []
}

/// Parses options of a command. For `run`, parsing stops at the first positional
/// (the recipe): everything after it belongs to the recipe.
func parse(_ args: ArraySlice<String>, flags: Set<String>, values: Set<String>, stopAtPositional: Bool, maxPositional: Int) -> Parsed {
    var p = Parsed()
    var i = args.startIndex
    while i < args.endIndex {
        let a = args[i]
        if a == "--" { p.positional.append(contentsOf: args[(i + 1)...]); break }
        if a.hasPrefix("--") {
            var name = a, inline: String? = nil
            if let eq = a.firstIndex(of: "=") { name = String(a[..<eq]); inline = String(a[a.index(after: eq)...]) }
            if flags.contains(name), inline == nil { p.flags.insert(name) }
            else if values.contains(name) {
                if let v = inline { p.values[name] = v } else {
                    i += 1
                    guard i < args.endIndex else { fail("\(name) needs a value") }
                    p.values[name] = args[i]
                }
            } else { fail("unknown option \(a)") }
        } else if a.hasPrefix("-") && a.count > 1 {
            fail("unknown option \(a)")
        } else {
            p.positional.append(a)
            if stopAtPositional { p.rest = Array(args[(i + 1)...]); break }
        }
        i += 1
    }
    if p.positional.count > maxPositional { fail("unexpected argument '\(p.positional[maxPositional])'") }
    return p
}

baton_signals_install()
let argv = CommandLine.arguments
let command = argv.count > 1 ? argv[1] : nil

func runsRoot(_ p: Parsed) -> String { RunStore.defaultRoot(override: p.values["--runs-dir"]) }

switch command {
case "-h", "--help", "help":
    print(usage)
    exit(ExitStatus.success.rawValue)
case "--version", "version":
    print("baton \(BatonVersion.string) (Lua \(LuaInfo.version))")
    exit(ExitStatus.success.rawValue)
case "run":
    let p = parse(argv[2...], flags: ["--dry-run", "--detach", "--json"], values: ["--runs-dir", "--run-id", "--existing-run", "--sync", "--budget", "--executor"],
                  stopAtPositional: true, maxPositional: 1)
    guard let recipe = p.positional.first else { fail("run needs a RECIPE file") }
    var o = RunOptions(recipe: recipe, runsDir: runsRoot(p))
    o.words = p.rest
    o.runID = p.values["--run-id"] ?? p.values["--existing-run"]
    o.dryRun = p.flags.contains("--dry-run")
    o.json = p.flags.contains("--json")
    o.sync = syncPolicy(p)
    o.budget = budget(p)
    if let e = p.values["--executor"] { setenv("BATON_EXECUTOR", e, 1) }   // read by RunContext; a detached runner inherits it
    if p.flags.contains("--detach") {
        exit(Detach.start(options: o))
    }
    o.existingRun = p.values["--existing-run"] != nil
    _ = baton_set_subreaper()
    exit(RecipeRunner.run(o))
case "resume":
    let p = parse(argv[2...], flags: ["--json"], values: ["--runs-dir", "--sync"], stopAtPositional: false, maxPositional: 1)
    _ = baton_set_subreaper()
    exit(Commands.resume(root: runsRoot(p), ref: p.positional.first, json: p.flags.contains("--json"), sync: syncPolicy(p)))
case "runs":
    let p = parse(argv[2...], flags: ["--json"], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 0)
    exit(Commands.runs(root: runsRoot(p), json: p.flags.contains("--json")))
case "status":
    let p = parse(argv[2...], flags: ["--json"], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 1)
    exit(Commands.status(root: runsRoot(p), ref: p.positional.first, json: p.flags.contains("--json")))
case "log":
    let p = parse(argv[2...], flags: ["--json", "--follow", "-f"], values: ["--runs-dir", "--stage"], stopAtPositional: false, maxPositional: 1)
    exit(Commands.log(root: runsRoot(p), ref: p.positional.first, follow: p.flags.contains("--follow"),
                      stage: p.values["--stage"], json: p.flags.contains("--json")))
case "cancel":
    let p = parse(argv[2...], flags: ["--json"], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 1)
    exit(Commands.cancel(root: runsRoot(p), ref: p.positional.first, json: p.flags.contains("--json")))
case "check":
    let p = parse(argv[2...], flags: ["--json"], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 1)
    guard let recipe = p.positional.first else { fail("check needs a RECIPE file") }
    exit(Commands.check(recipe: recipe, json: p.flags.contains("--json")))
case "__watchdog":
    // Started by a runner (see Survivors.watchdog); not for people.
    guard argv.count == 3 else { fail("__watchdog RUN_ID") }
    exit(Survivors.watchdog(runID: argv[2]))
case "repl":
    let p = parse(argv[2...], flags: [], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 0)
    exit(Shell.main(root: runsRoot(p)))
case nil:
    exit(Shell.main(root: RunStore.defaultRoot()))
default:
    if let c = command, c.hasPrefix("--runs-dir") {
        let p = parse(argv[1...], flags: [], values: ["--runs-dir"], stopAtPositional: false, maxPositional: 0)
        exit(Shell.main(root: runsRoot(p)))
    }
    fail("unknown command '\(command!)'")
}
