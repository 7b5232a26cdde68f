import BatonBase
import BatonCore
import BatonLua
import CBatonLine
import CBatonSys
import CLua
import Glibc
import LuaKit
import LuaShim

/// The shell Tab completion talks to (libedit's hook is a plain C function).
nonisolated(unsafe) private var activeShell: Interactive?

private let completionHook: baton_line_complete_fn = { line, start, end, word in
    guard let shell = activeShell, let line, let word else { return }
    let text = String(cString: line)
    let before = String(String.UnicodeScalarView(text.unicodeScalars.prefix(Int(max(0, start)))))
    for c in shell.completer.complete(before: before, word: String(cString: word)) { baton_line_add_match(c) }
}

/// The interactive shell: a Lua prompt in the manner of the standalone `lua`
/// (expressions first, `>>` for an unfinished chunk, errors never fatal), with
/// libedit line editing, history kept across sessions, Tab completion, and
/// meta-commands (`:help`) over the runs in this directory.
final class Interactive {
    let root: String
    let env: RecipeEnvironment
    var lua: LuaState { env.lua }
    var shellLua: ShellLua!
    var completer = Completer()
    let history: History?
    /// The run `:attach` without an argument refreshes.
    var attached: String?
    /// Set to leave the loop with this exit code.
    var leaving: Int32?
    let cwd = FileIO.currentDirectory()
    /// A live run attached through its control socket: lines and commands go to it.
    var remote: AttachSession? {
        didSet { completer.commands = remote == nil ? MetaCommand.names : AttachSession.commands }
    }
    /// `baton attach RUN`: attach at start; `:detach` then leaves.
    var startAttached: String?
    /// The prompt `baton run --break` opened: leave when the paused run goes on.
    var leaveOnResume = false

    init(root: String) {
        self.root = FileIO.absolute(root)
        env = RecipeEnvironment(memoryLimit: RunOptions.defaultMemoryLimit, output: OutputOptions())
        history = History.defaultPath().map { History(path: $0) }
    }

    func run() -> Int32 {
        env.setRequirePaths(recipeDir: cwd)
        env.setArguments(recipe: RunBegan.shellRecipe, words: [])
        env.makeContext = ShellRun.opener(root: root, env: env)
        do { shellLua = try ShellLua(lua: lua) } catch {
            diag("baton: cannot start the shell: \(error)")
            return 1
        }
        let store = RunStore(root: root)
        completer.runIDs = { store.ids().reversed() }
        completer.stageIDs = { ref in Interactive.history(store: store, ref: ref)?.stageIDs ?? [] }
        completer.watchIDs = { ref in
            Interactive.history(store: store, ref: ref)?.watches.filter { !$0.state.isTerminal }.map(\.id) ?? []
        }
        completer.attachedRun = { [unowned self] in self.remote?.dir.id }
        completer.luaNames = { [unowned self] chain in self.remote?.complete(chain) ?? self.shellLua.candidates(chain) }
        _ = baton_set_subreaper()   // a stage's escaped grandchildren come back to us
        baton_abort_on_signals(1)
        activeShell = self
        baton_line_init("baton", completionHook)
        history?.load()
        if let ref = startAttached { attach(ref, fromCommandLine: true) } else { say(banner()) }
        loop()
        activeShell = nil
        return leave(code: leaving ?? 0)
    }

    // MARK: the loop

    func loop() {
        var chunk: [String] = []
        while leaving == nil {
            let prompt = remote?.prompt ?? (chunk.isEmpty ? "> " : ">> ")
            guard let raw = baton_line_read(prompt) else {
                let sig = baton_signal_pending()
                if sig == SIGINT {
                    // readline returns NULL on Ctrl-C as on end of input: the flag tells.
                    say(chunk.isEmpty && (remote?.pending.isEmpty ?? true) ? "^C (Ctrl-D or :quit leaves)" : "^C")
                    chunk = []
                    remote?.pending = []
                    resetInterrupt()
                    continue
                }
                if sig != 0 { leaving = 128 + Int32(sig); break }
                say("")
                if let r = remote, startAttached == nil {   // Ctrl-D while attached in the shell: back to the shell
                    remote = nil
                    say("detached from run \(r.dir.id): it goes on")
                    continue
                }
                break
            }
            let line = String(cString: raw)
            free(raw)
            if baton_signal_pending() != 0 { resetInterrupt() }
            if let r = remote {
                if !line.trimmingWhitespace().isEmpty { history?.add(line) }
                if !r.handle(line) {
                    remote = nil
                    if startAttached != nil { leaving = 0 } else { say("detached from run \(r.dir.id): it goes on") }
                }
                continue
            }
            if chunk.isEmpty {
                let t = line.trimmingWhitespace()
                if t.isEmpty { continue }
                if t.hasPrefix(":") {
                    history?.add(t)
                    meta(t)
                    if baton_signal_pending() == SIGINT { say("") }   // a Ctrl-C ended :tail -f or :resume
                    afterEvaluation()
                    continue
                }
            }
            chunk.append(line)
            let text = chunk.joined(separator: "\n")
            switch compile(text) {
            case .incomplete:
                continue
            case let .error(message):
                history?.add(text)
                chunk = []
                err(message)
            case .ready:
                history?.add(text)
                chunk = []
                execute(nargs: 0)
                afterEvaluation()
            }
        }
    }

    enum Compiled { case ready, incomplete, error(String) }

    /// As the standalone lua: `return <chunk>` first (an expression's values print),
    /// then the chunk as statements; a syntax error at <eof> means "go on".
    /// On .ready the function is on top of the stack.
    func compile(_ text: String) -> Compiled {
        var incomplete = false
        do {
            try lua.load(Array(("return " + text).utf8), name: "=stdin")
            return .ready
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            incomplete = e.isIncomplete
        } catch {}
        do {
            try lua.load(Array(text.utf8), name: "=stdin")
            return .ready
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            if incomplete || e.isIncomplete { return .incomplete }
            return .error(e.message)
        } catch {
            return .error("\(error)")
        }
    }

    /// Calls the function under `nargs` arguments on the stack and prints what it
    /// returns, or its error.
    func execute(nargs: Int32) {
        let base = lua.top - nargs - 1
        defer { lua.top = base }
        do {
            try lua.pcall(nargs: nargs, nresults: LUA_MULTRET)
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            report(e)
            return
        } catch {
            err("\(error)")
            return
        }
        let n = lua.top - base
        if n > 0 { say(shellLua.show(count: n)) }
    }

    func report(_ e: LuaCallError) {
        let reason = lua.abortReason
        if reason == BATON_ABORT_EXIT {
            leaving = env.exitCode ?? 0
            return
        }
        if reason != 0 || e.kind == "abort" {
            err(reason == SIGINT || reason == 0 ? "interrupted" : "interrupted by \(signalName(Int32(reason)))")
            return
        }
        err(SafeText.lines(e.message))   // a reason may carry a stage's output: escaped
        let frames = Interactive.userFrames(e.traceback)
        if frames.count > 1 { err("stack traceback:\n\t" + frames.joined(separator: "\n\t")) }
    }

    /// The frames of a traceback worth showing: Lua code, not C or the shell's own.
    static func userFrames(_ traceback: String) -> [String] {
        guard let r = traceback.range(of: "stack traceback:\n") else { return [] }
        return traceback[r.upperBound...].split(separator: "\n").map { $0.trimmingCharacters(in: " \t") }
            .filter { !$0.hasPrefix("[C]") && !$0.hasPrefix("(...") && !$0.hasPrefix("baton.") && !$0.isEmpty }
    }

    /// After Lua code or a command: forget a Ctrl-C; any other signal (SIGTERM, SIGHUP,
    /// SIGQUIT, ...) leaves.
    func afterEvaluation() {
        let sig = baton_signal_pending()
        let last = baton_signal_last()
        if leaving == nil, (sig != 0 && sig != SIGINT) || (last != 0 && last != SIGINT) {
            leaving = 128 + Int32(last == SIGINT ? sig : last)
            return
        }
        if let f = env.context?.fatal { err("baton: the shell's run cannot write its journal: \(f)") }
        resetInterrupt()
    }

    func resetInterrupt() {
        lua.clearAbort()
        baton_signal_clear()
    }

    /// Ends the shell: its run (if one was opened) gets final.json; history is saved.
    func leave(code: Int32) -> Int32 {
        history?.save()
        if let ctx = env.context {
            let status: RunOutcome = code == 0 ? .succeeded : (code >= 128 ? .cancelled : .failed)
            let reason: String? = code == 0
                ? nil
                : (code >= 128 ? "the shell was interrupted by \(signalName(code - 128))" : "os.exit(\(code))")
            for p in ctx.finish(status: status, exitCode: code, reason: reason) { diag("baton: \(p)") }
        }
        return code
    }

    // MARK: output

    func say(_ s: String) { Console.out(s) }
    func err(_ s: String) { Console.err(s) }

    // MARK: banner

    func banner() -> String {
        var lines =
            ["baton \(BatonVersion.string) (Lua \(LuaInfo.version)) shell: Lua with the primitives; :help for "
             + "commands, Ctrl-D to leave"]
        let store = RunStore(root: root)
        let ids = store.ids()
        if ids.isEmpty {
            lines.append("no runs in \(root) yet")
            return lines.joined(separator: "\n")
        }
        var live: [RunInfo] = [], orphaned: [RunInfo] = []
        for id in ids.reversed().prefix(200) {
            let dir = store.directory(id)
            if FileIO.exists(dir.final), !FileLock.isHeld(dir.lock),
               let s = FinalRecord.read(dir)?.status, s.isEnding { continue }
            let info = RunInfo.load(dir, withEvents: false)
            if info.isLive { live.append(info) } else if info.state == .orphaned { orphaned.append(info) }
        }
        var head = "\(ids.count) run\(ids.count == 1 ? "" : "s") in \(root)"
        head += live.isEmpty && orphaned.isEmpty ? ", none live" : ": \(live.count) live, \(orphaned.count) orphaned"
        lines.append(head)
        for i in live + orphaned {
            var s = "  \(Render.stateText(i))  \(i.id)  \(i.recipe.map(FileIO.basename) ?? "?")"
            if let c = i.current { s += "  \(c.kind) \(c.id) for \(Clock.human(Clock.now() - c.since))" }
            else if let l = i.lastEvent { s += "  last event \(l.type) \(Clock.human(Clock.now() - l.ts)) ago" }
            lines.append(s)
        }
        if !orphaned.isEmpty {
            lines.append("  (orphaned: its runner died; :attach to look, :resume or :cancel to finish it)")
        }
        return lines.joined(separator: "\n")
    }

    static func history(store: RunStore, ref: String) -> RunHistory? {
        guard let dir = try? store.resolve(ref), let c = try? dir.readJournal() else { return nil }
        return RunHistory(c.events)
    }
}
