import BatonBase
import BatonCore
import CBatonSys
import CLua
import Glibc
import LuaKit
import LuaShim

public struct RunOptions: Sendable {
    public var recipe: String
    public var words: [String] = []
    public var runsDir: String
    public var runID: String?
    public var dryRun = false
    public var json = false
    /// `--stream`: echo stage output as it comes.
    public var stream = false
    /// Check the whole recipe before the first stage (`--no-check`: false).
    public var check = true
    public var memoryLimit = RunOptions.defaultMemoryLimit
    /// The directory was made by `run --detach`; the runner only fills it.
    public var existingRun = false
    /// `run --detach`'s handshake pipe (DetachHandshake), or -1.
    public var readyFD: Int32 = -1
    /// How often the journal is flushed (`--sync`, or BATON_SYNC).
    public var sync = RunOptions.defaultSync
    /// `--budget`: (seconds, as the user wrote it).
    public var budget: (seconds: Double, text: String)?
    /// The process ends with the run (`baton run`, `baton resume`; not the shell): exit as
    /// soon as final.json is written and the outcome reported, without first freeing the
    /// run's history, journal events and Lua state (~4 ms for a run of 10,000 stages).
    public var exitWhenDone = false
    /// `--break ID` (globs), `--break-timeout`, and whether a pause opens its prompt on this
    /// terminal (`baton run` at a terminal, not detached).
    public var breaks: [String] = []
    public var breakTimeout: Double?
    public var attachOnBreak = false

    public static var defaultSync: SyncPolicy {
        if let e = Settings.string(Settings.sync), let p = SyncPolicy(rawValue: e) { return p }
        return .batched
    }

    /// 2 GiB, or BATON_LUA_MEMORY_MB.
    public static var defaultMemoryLimit: Int {
        if let mb = Settings.positive(Settings.luaMemoryMB) { return Int(mb) << 20 }
        return 2048 << 20
    }

    /// Where stages run unless a stage says otherwise (`--executor`, else BATON_EXECUTOR, else local).
    public var executor: String? = Settings.string(Settings.executor)
    /// `--cache`: every stage with declared outputs uses the cache across runs.
    public var cache = false

    public init(recipe: String, runsDir: String) { self.recipe = recipe; self.runsDir = runsDir }
}

/// How a recipe ended, before it is written down.
public struct Ending {
    public var status: RunOutcome
    public var exit: ExitStatus
    public var reason: String?
    public var code: Int32 { exit.rawValue }
    /// The error's `kind` when a Lua error ended the run (`args`: kit.args refused the words).
    public var kind: String?
    public init(status: RunOutcome, exit: ExitStatus, reason: String?, kind: String? = nil) {
        self.status = status; self.exit = exit; self.reason = reason; self.kind = kind
    }
}

public enum RecipeRunner {
    /// `baton run`: runs a recipe in a new run directory. Returns the exit code. A recipe
    /// that cannot be read or compiled leaves no run directory: nothing ran.
    public static func run(_ o: RunOptions) -> Int32 {
        if let e = o.executor, !Executors.names.contains(e) {
            diag("baton: unknown executor '\(e)' (--executor or BATON_EXECUTOR): one of "
                 + "\(Executors.names.joined(separator: ", "))")
            return ExitStatus.usage.rawValue
        }
        let store = RunStore(root: o.runsDir)
        let (text, readError) = readRecipe(o.recipe)
        let env = environment(o)
        if !o.existingRun, let failed = load(env: env, recipe: o.recipe, text: text, readError: readError) {
            return Console.error(failed.reason ?? "cannot load \(o.recipe)", json: o.json, code: failed.exit)
        }
        // Certain errors anywhere in the recipe stop it now: no stage ran, no run directory.
        if !o.existingRun, o.check, let text, let problem = checkProblem(env: env, recipe: o.recipe, text: text) {
            return Console.error(problem, json: o.json)
        }
        let ctx: RunContext
        do {
            ctx = try RunContext.start(store: store, id: o.runID, recipe: o.recipe, recipeText: text ?? [],
                                       args: o.words, dryRun: o.dryRun, existing: o.existingRun, sync: o.sync)
        } catch {
            return Console.error("cannot start the run: \(error)", json: o.json)
        }
        return execute(ctx: ctx, env: env, options: o, loaded: !o.existingRun, text: text, readError: readError)
    }

    /// Why the recipe cannot run (unreadable, binary, a syntax error), or nil: what
    /// `run --detach` checks before it returns.
    public static func loadProblem(_ recipe: String, check: Bool = false) -> String? {
        let (text, readError) = readRecipe(recipe)
        let env = RecipeEnvironment(memoryLimit: RunOptions.defaultMemoryLimit, output: OutputOptions(json: false))
        if let failed = load(env: env, recipe: recipe, text: text, readError: readError) {
            return failed.reason ?? "cannot load \(recipe)"
        }
        if check, let text { return checkProblem(env: env, recipe: recipe, text: text) }
        return nil
    }

    /// The recipe's certain errors (RecipeCheck.beforeRun) as one message, or nil.
    static func checkProblem(env: RecipeEnvironment, recipe: String, text: [UInt8]) -> String? {
        let found = RecipeCheck.beforeRun(env: env, recipe: recipe, text: text)
        guard !found.isEmpty else { return nil }
        return found.map(\.text).joined(separator: "\n")
            + "\n(checked before the first stage: nothing ran; --no-check skips this)"
    }

    static func environment(_ o: RunOptions) -> RecipeEnvironment {
        RecipeEnvironment(memoryLimit: o.memoryLimit, output: OutputOptions(json: o.json, stream: o.stream))
    }

    /// `baton resume`: runs the recipe again in the same run directory, replaying what passed.
    public static func resume(dir: RunDirectory,
                              options o: RunOptions,
                              read: (JournalContents, RunHistory)? = nil) -> Int32 {
        let (text, readError) = readRecipe(o.recipe)
        let ctx: RunContext
        do {
            ctx = try RunContext.resume(dir: dir,
                                        recipe: o.recipe,
                                        recipeText: text ?? [],
                                        args: o.words,
                                        sync: o.sync,
                                        read: read)
        } catch {
            return Console.error("cannot resume: \(error)", json: o.json)
        }
        return execute(ctx: ctx, env: environment(o), options: o, loaded: false, text: text, readError: readError)
    }

    static func readRecipe(_ path: String) -> ([UInt8]?, String?) {
        if FileIO.isDirectory(path) { return (nil, "\(path): is a directory, not a recipe file") }
        do { return (try FileIO.readFile(path), nil) } catch { return (nil, "cannot read recipe \(error)") }
    }

    /// Runs the recipe in `ctx`; `loaded`: its chunk is already compiled on `env`'s stack.
    static func execute(ctx: RunContext,
                        env: RecipeEnvironment,
                        options o: RunOptions,
                        loaded: Bool,
                        text: [UInt8]?,
                        readError: String?) -> Int32 {
        env.context = ctx
        if let e = o.executor { ctx.defaultExecutor = e }
        if o.cache { ctx.files.cacheAll = true }
        env.attachTerminal()
        env.publishRun()
        env.setArguments(recipe: o.recipe, words: o.words)
        let dir = FileIO.dirname(FileIO.absolute(o.recipe))
        env.setRequirePaths(recipeDir: dir)
        baton_abort_on_signals(1)
        if let b = o.budget { ctx.setBudget(b.seconds, text: b.text) }
        env.debugger.breaks = o.breaks
        env.debugger.breakTimeout = o.breakTimeout
        env.debugger.autoAttach = o.attachOnBreak && isatty(0) == 1 && isatty(1) == 1
        env.keepSources(ctx, text: text)
        // A recipe stuck inside a C function (where no hook fires) still ends on a signal,
        // the budget or cancel: the guard acts when nothing answers within a second.
        if o.exitWhenDone { _ = baton_stuck_guard_start(1, 10) }
        // No process outlives its stage, even one that leaves its group (Containment).
        if o.exitWhenDone && !o.dryRun {
            let c = Containment.setUp(runID: ctx.dir.id)
            Containment.shared = c   // (journaled with the first stage, by RunContext.startWatchdog)
        }

        // The control socket (baton attach): served by the loop while the recipe waits, from
        // the first wait on (what never waits cannot be served anyway).
        var control: ControlServer? = nil
        let handshake = o.readyFD >= 0 ? DetachHandshake(fd: o.readyFD) : nil
        ctx.onFirstBlock = {
            if !o.dryRun { control = ControlServer.start(env: env, ctx: ctx) }
            handshake?.say(.ready)
        }
        var ending = loaded ? (signalEnding(env) ?? call(env: env, recipe: o.recipe))
            : evaluate(env: env, recipe: o.recipe, text: text, readError: readError)
        ending.reason = ctx.boundedReason(ending.reason)   // a 50 MB error is 4 KiB here, whole in reason.txt
        control?.close()
        env.view?.finish()   // the rest of --stream's output; the live view erased
        env.flushProgress()
        if o.dryRun, ending.code == 0 {
            env.humanOut(planText(env.plan))
        }
        if ending.status == .cancelled, let f = env.onCancelFields { ctx.mergeResult(f) }
        let problems = ctx.finish(status: ending.status, exitCode: ending.code, reason: ending.reason)
        if ending.status == .cancelled, env.onCancelStdout, !o.json { Console.out(ctx.result.encoded(pretty: true)) }
        for p in problems { diag("baton: \(p)") }
        if let code = withoutRun(ctx: ctx, env: env, ending: ending, options: o, fresh: loaded, handshake: handshake) {
            if o.exitWhenDone { Glibc.exit(code) }
            return code
        }
        handshake?.say(.ready)
        report(ctx: ctx, ending: ending, json: o.json)
        if o.exitWhenDone { Glibc.exit(ending.code) }
        return ending.code
    }

    /// `baton run r.lua help` printed the usage and ran nothing, or the recipe's words were
    /// refused (kit.args) before anything ran (a usage error, as `baton run --bad` is): no run to
    /// keep. Its exit code, or nil when the run stays. A detached runner whose command still
    /// waits says so on the handshake, and the command removes the directory and reports.
    static func withoutRun(ctx: RunContext, env: RecipeEnvironment, ending: Ending, options o: RunOptions,
                           fresh: Bool, handshake: DetachHandshake?) -> Int32? {
        let usage = env.usageOnly && ending.code == 0
        guard usage || ending.kind == "args", ctx.history.stages.isEmpty else { return nil }
        let reason = ending.reason ?? "bad arguments"
        if let handshake, handshake.pending {
            return handshake.say(usage ? .usage : .refused(ending.exit, reason)) ? ending.code : nil
        }
        guard fresh, (try? RunStore(root: o.runsDir).remove(ctx.dir.id)) != nil else { return nil }
        return usage ? ending.code : Console.error(reason, json: o.json, code: ending.exit)
    }

    static func planText(_ plan: [(text: String, isStage: Bool)]) -> String {
        let n = plan.filter(\.isStage).count
        if plan.isEmpty { return "dry run: no stage would run" }
        var s = "dry run: \(n == 0 ? "no" : String(n)) stage\(n == 1 ? "" : "s") would run:"
        for (i, p) in plan.enumerated() { s += "\n  \(i + 1). \(p.text)" }
        return s
    }

    /// Loads and runs the chunk; maps every way it can end to a status and exit code.
    /// Works with or without a run (the shell's piped mode opens one on first use).
    public static func evaluate(env: RecipeEnvironment, recipe: String, text: [UInt8]?, readError: String?) -> Ending {
        if let sig = signalEnding(env) { return sig }
        if let failed = load(env: env, recipe: recipe, text: text, readError: readError) { return failed }
        return call(env: env, recipe: recipe)
    }

    /// Compiles the chunk onto the stack; the ending when it cannot be.
    static func load(env: RecipeEnvironment, recipe: String, text: [UInt8]?, readError: String?) -> Ending? {
        guard let text else {
            return Ending(status: .failed, exit: .usage, reason: readError ?? "cannot read \(recipe)")
        }
        if text.first == 0x1B {
            return Ending(status: .failed,
                          exit: .usage,
                          reason: "\(recipe): binary (precompiled) chunks are refused; recipes are Lua text")
        }
        let lua = env.lua
        do {
            try lua.load(text, name: "@" + recipe)
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            let m = e.status == .memory ? "\(recipe): the recipe is too large to load" : e.message
            return Ending(status: .failed, exit: .usage, reason: m)
        } catch {
            return Ending(status: .failed, exit: .usage, reason: "\(error)")
        }
        return nil
    }

    /// Calls the compiled chunk on top of the stack with the recipe's words.
    static func call(env: RecipeEnvironment, recipe: String) -> Ending {
        let lua = env.lua
        let base = lua.top - 1
        for w in env.wordsForVarargs { lua.push(w) }
        do {
            try lua.pcall(nargs: Int32(env.wordsForVarargs.count), nresults: LUA_MULTRET)
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            return ending(for: e, env: env)
        } catch {
            return Ending(status: .failed, exit: .failure, reason: "\(error)")
        }
        if let f = env.context?.fatal {
            return Ending(status: .failed, exit: .failure, reason: "cannot write the journal: \(f)")
        }
        // The recipe's return value goes into final.json's result.
        let n = lua.top - base
        if n >= 1 {
            let first = base + 1
            if lua.type(first) == LUA_TTABLE, let j = try? lua.toJSON(first), case let .object(pairs) = j {
                env.context?.mergeResult(pairs)
            } else if lua.type(first) != LUA_TNIL {
                do { env.context?.mergeResult([("value", try lua.toJSON(first))]) } catch {
                    return Ending(status: .failed,
                                  exit: .failure,
                                  reason: "\(recipe): the recipe's return value cannot be recorded: \(error)")
                }
            }
        }
        lua.top = base
        return Ending(status: env.dryRun ? .dry_run : .succeeded, exit: .success, reason: nil)
    }

    static func signalEnding(_ env: RecipeEnvironment) -> Ending? {
        let sig = baton_signal_pending()
        guard sig != 0 else { return nil }
        return interrupted(by: sig, env)
    }

    /// A signal's ending; the budget's own SIGALRM (the kernel's timer, not a `kill -ALRM`)
    /// is the run budget running out.
    static func interrupted(by sig: Int32, _ env: RecipeEnvironment) -> Ending {
        if sig == SIGALRM, baton_budget_expired() != 0, let reason = env.context?.budgetReason {
            return Ending(status: .cancelled, exit: .budgetExceeded, reason: reason)
        }
        if sig == SIGTERM, let by = env.context?.endedBy {
            return Ending(status: .cancelled,
                          exit: .signal(sig),
                          reason: "cancelled from baton attach by \(by.user) (uid \(by.uid), pid \(by.pid))")
        }
        return Ending(status: .cancelled,
                      exit: .signal(sig),
                      reason: "interrupted by \(signalName(sig))\(signalSender(sig))")
    }

    /// Who sent the signal that ended the run: `baton cancel` (from its pid), another
    /// process (its pid and name), or the terminal (Ctrl-C).
    static func signalSender(_ sig: Int32) -> String {
        let pid = baton_signal_sender()
        guard pid > 0 else { return sig == SIGINT ? " (Ctrl-C)" : sig == SIGHUP ? " (the terminal closed)" : "" }
        let cmdline = (try? FileIO.readFile("/proc/\(pid)/cmdline")) ?? []
        let words = cmdline.split(separator: 0, omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
        let name = words.first.map { FileIO.basename($0) } ?? ""
        if name == "baton", words.contains("cancel") { return ": cancelled by `baton cancel` from pid \(pid)" }
        return " from pid \(pid)" + (name.isEmpty ? "" : " (\(name))")
    }

    public static func ending(for e: LuaCallError, env: RecipeEnvironment) -> Ending {
        env.flushProgress()
        if !e.traceback.isEmpty {
            env.context?.log(.debug,
                             "traceback",
                             .object([("traceback", .string(RunContext.cutMiddle(e.traceback, keep: 8192)))]))
            if Settings.isSet(Settings.traceback) { diag(e.traceback) }
        }
        if let f = env.context?.fatal {
            return Ending(status: .failed, exit: .failure, reason: "cannot write the journal: \(f)")
        }
        let reason = env.lua.abortReason
        if reason == BATON_ABORT_EXIT, let code = env.exitCode {
            return Ending(status: code == 0 ? .succeeded : .failed,
                          exit: ExitStatus(rawValue: code),
                          reason: code == 0 ? nil : "os.exit(\(code))")
        }
        if reason > 0 && reason < 128 { return interrupted(by: reason, env) }
        var msg = e.message
        if e.status == .memory {
            msg += " (the Lua memory limit is \(env.lua.memoryLimitMB) MiB; set BATON_LUA_MEMORY_MB to change it)"
        }
        return Ending(status: .failed,
                      exit: e.code.map { ExitStatus(rawValue: Int32($0)) } ?? .failure,
                      reason: msg,
                      kind: e.kind)
    }

    public static func report(ctx: RunContext, ending: Ending, json: Bool) {
        if json {
            let doc = ctx.dir.readFinal()
                ?? .object([("run", .string(ctx.dir.id)), ("status", .string(ending.status.rawValue))])
            Console.out(doc.encoded(pretty: true))
            return
        }
        let took = Clock.human(Clock.monotonic() - ctx.startedMonotonic)
        switch ending.status {
        case .succeeded, .dry_run:
            diag("run \(ctx.dir.id) " + Palette.ok(ending.status == .dry_run ? "dry run finished" : "succeeded")
                 + " in \(took)")
        case .failed:
            diag("run \(ctx.dir.id) " + Palette.fail("failed")
                 + " (exit \(ending.code)): \(SafeText.line(ending.reason ?? ""))")
        case .cancelled:
            diag("run \(ctx.dir.id) " + Palette.warn("cancelled")
                 + " (exit \(ending.code)): \(SafeText.line(ending.reason ?? ""))")
        case .running:
            break   // (never an ending: persistFinal's mark while the run goes on)
        }
    }
}

/// "SIGTERM", ...: the names CBatonSys knows (the C side's messages use the same list).
public func signalName(_ sig: Int32) -> String {
    baton_signal_name(sig).map { String(cString: $0) } ?? "signal \(sig)"
}

extension LuaState {
    var memoryLimitMB: Int { Int(baton_memory_limit(L)) >> 20 }
}
