import BatonBase
import BatonCore
import CBatonSys
import CLua
import Glibc
import LuaKit
import LuaShim

/// Breakpoints in a live run (`baton run --break ID`, `baton.breakpoint`), and the replay
/// debugger's hooks (`baton debug`): the state one recipe environment keeps.
public final class Debugger {
    /// `--break` patterns (globs on stage ids, as fnmatch).
    public var breaks: [String] = []
    /// `--break-timeout`: a pause with nobody attached goes on after this long.
    public var breakTimeout: Double?
    /// Stdin and stdout are a terminal and the run is not detached: a pause opens the
    /// prompt here (a `baton attach` child that has the terminal meanwhile).
    public var autoAttach = false
    /// The next primitive call runs, then the run pauses again (`:step`).
    var stepping = false
    /// The pause in progress.
    var paused: PauseRecord?
    var pausedSince = 0.0
    /// What a client asked a paused run to do (set by the control server).
    var action: Action?
    /// When a pause with nobody attached ends by itself (moved later by every request).
    var pauseDeadline: Double?
    /// The paused stage can be skipped (not a background stage or a parallel item's, whose
    /// caller waits for a handle).
    var canSkip = false
    /// The replay in progress (`baton debug`): every primitive answers from the journal.
    public var replay: Replayer?
    /// A control request is being answered (a line typed at the prompt runs): no pause then,
    /// since nothing could serve the prompt of a pause inside one.
    var serving = 0

    public enum Action: String { case `continue`, step, skip, timeout }

    public init() {}

    /// The first pattern matching stage `id`.
    func match(_ id: String) -> String? {
        breaks.first { fnmatch($0, id, 0) == 0 }
    }
}

extension RecipeEnvironment {
    /// `baton.breakpoint(why)`.
    func installBreakpoint() {
        _ = lua.getGlobal("baton")
        lua.pushFunction("baton.breakpoint") { [unowned self] l in
            let why = l.string(1) ?? "baton.breakpoint"
            if let r = self.debugger.replay { try r.breakpoint(l, why: why); return 0 }
            guard let ctx = self.context, !ctx.dryRun, self.makeContext == nil, self.debugger.serving == 0 else {
                return 0
            }   // (the shell, the prompt: no pause)
            _ = try self.pause(at: "baton.breakpoint", why: why, stage: nil, l)
            return 0
        }
        lua.setField(-2, "breakpoint")
        lua.pop()
    }

    /// A primitive call, as the debugger sees it: replayed from the journal in `baton debug`;
    /// in a live run, paused before when a `--break` pattern matches the stage (`:skip`
    /// skips it), and after when the user asked for `:step`.
    func debugged(_ name: String, _ l: LuaState, _ body: () throws -> Int32) throws -> Int32 {
        if let r = debugger.replay {
            if debugger.serving > 0 {
                throw LuaRaise("\(name): nothing runs at the replay's prompt (its calls are the recipe's, answered "
                        + "from the journal)")
            }
            return try r.call(name, l, env: self)
        }
        if debugger.breaks.isEmpty && !debugger.stepping || context?.dryRun == true || debugger.serving > 0 {
            return try body()
        }
        var stepThis = debugger.stepping
        debugger.stepping = false
        if name == "runStage", !stepThis, let id = RecipeEnvironment.rawString(l, 1, "id"),
           let pattern = debugger.match(id) {
            debugger.canSkip = !RecipeEnvironment.rawBool(l, 1, "background")
            defer { debugger.canSkip = false }
            switch try pause(at: "before stage \(id)", why: "--break \(pattern)", stage: id, spec: 1, l) {
            case .skip:
                context?.record(.notRun(NotRun(via: "runStage", target: id, reason: "skipped at a breakpoint (:skip)")))
                l.newTable()
                l.setFields([("id", .string(id)), ("skipped", .bool(true))])
                return 1
            case .step: stepThis = true; debugger.stepping = false
            case .continue, .timeout: break
            }
        }
        guard stepThis else { return try body() }
        let what = name + (RecipeEnvironment.rawString(l, 1, "id").map { " '\($0)'" } ?? "")
        do {
            let n = try body()
            _ = try pause(at: "after \(what)", why: ":step", stage: nil, l)
            return n
        } catch {
            _ = try pause(at: "after \(what) (it raised an error)", why: ":step", stage: nil, l)
            throw error
        }
    }

    static func rawString(_ l: LuaState, _ arg: Int32, _ key: String) -> String? {
        guard l.type(arg) == LUA_TTABLE else { return nil }
        defer { l.pop() }
        return l.rawGetField(arg, key) == LUA_TSTRING ? l.string(-1) : nil
    }

    static func rawBool(_ l: LuaState, _ arg: Int32, _ key: String) -> Bool {
        guard l.type(arg) == LUA_TTABLE else { return false }
        defer { l.pop() }
        _ = l.rawGetField(arg, key)
        return l.bool(-1)
    }

    /// Pauses the run where the recipe is: journaled, served by the control socket (the
    /// recipe's frame is the prompt's), until a client says how to go on, `baton cancel`
    /// (a signal), or `--break-timeout` with nobody attached. Heartbeats go on, running
    /// stages' timeouts keep ticking; the run budget stops meanwhile.
    func pause(at: String, why: String, stage: String?, spec: Int32? = nil, _ l: LuaState) throws -> Debugger.Action {
        let ctx = try requireContext()
        let line = l.recipeLine()
        // `baton.paused` at the prompt: where, why, and the spec table of the stage it is
        // paused before (read after the pause, so a change there changes the stage).
        publishPause(l, [("where", .string(at)), ("why", .string(why)), ("line", .string(line))], spec: spec)
        defer { publishPause(l, nil, spec: nil) }
        flushProgress()
        let rec = PauseRecord(at: at, why: why, stage: stage, line: line)
        ctx.record(.paused(rec))
        try? ctx.journal.flush()
        let began = Clock.monotonic()
        debugger.paused = rec
        debugger.pausedSince = began
        debugger.action = nil
        debugger.pauseDeadline = debugger.breakTimeout.map { began + $0 }
        let budget = ctx.suspendBudget()
        defer {
            debugger.paused = nil
            ctx.resumeBudget(suspendedAt: budget)
        }
        // The prompt opens here only if this runner has the terminal (not a background job).
        var child = debugger.autoAttach && tcgetpgrp(0) == getpgrp() ? startAttachChild(ctx) : nil
        if child == nil {
            Console.err("run \(ctx.dir.id) paused \(rec.text): baton attach \(ctx.dir.id) opens its prompt there"
                        + (debugger.breakTimeout.map { "; it goes on by itself after \(Clock.human($0)) with nobody "
                                + "attached" } ?? ""))
        }
        let outcome = ctx.loop.wait(WaitLabel(.pause, at), pollEvery: 0.1) {
            if let c = child, Survivors.exited(c) {
                child = nil
                self.giveBackTerminal()
                if self.debugger.action == nil {
                    Console.err("the prompt left; run \(ctx.dir.id) stays paused: baton attach \(ctx.dir.id) opens "
                            + "it again, Ctrl-C cancels the run")
                }
            }
            if self.debugger.action != nil { return true }
            if let d = self.debugger.pauseDeadline, Clock.monotonic() >= d {
                self.debugger.action = .timeout
                return true
            }
            return false
        }
        if let c = child {
            // The prompt leaves by itself on :continue/:step/:skip (give it a moment); on a
            // cancel or a timeout it is told to (SIGTERM: it puts the terminal back as it was).
            let told = outcome == .interrupted || debugger.action == .timeout
            Survivors.end(child: c, signal: told ? SIGTERM : nil, grace: 5)
            giveBackTerminal()
        }
        try checkFatal()
        if outcome == .interrupted { throw RecipeEnvironment.abort }
        let action = debugger.action ?? .continue
        if action == .step { debugger.stepping = true }
        ctx.record(.resumedFromPause(PauseResumed(how: action.rawValue,
                                                  pausedMs: Int64((Clock.monotonic() - began) * 1000))))
        if action == .timeout {
            Console.err("run \(ctx.dir.id): nobody attached within --break-timeout "
                    + "\(Clock.human(debugger.breakTimeout ?? 0)): it goes on")
        }
        return action
    }

    func publishPause(_ l: LuaState, _ fields: [(String, LuaValue)]?, spec: Int32?) {
        guard l.getGlobal("baton") == LUA_TTABLE else { l.pop(); return }
        if let fields {
            l.newTable()
            l.setFields(fields)
            if let i = spec { lua_pushvalue(l.L, i); l.setField(-2, "spec") }
        } else { l.pushNil() }
        l.setField(-2, "paused")
        l.pop()
    }

    /// `baton attach --leave-on-resume RUN` on this terminal, in the foreground.
    func startAttachChild(_ ctx: RunContext) -> pid_t? {
        let argv = [FileIO.selfExecutable(), "attach", "--runs-dir", FileIO.dirname(ctx.dir.path), "--leave-on-resume",
                    ctx.dir.id]
        guard let pid = try? Spawner.spawn(argv: argv,
                                           env: Spawner.currentEnvironment(),
                                           cwd: nil,
                                           stdin: 0,
                                           stdout: 1,
                                           stderr: 2) else {
            return nil
        }
        let old = signal(SIGTTOU, SIG_IGN)
        _ = tcsetpgrp(0, pid)
        signal(SIGTTOU, old)
        kill(pid, SIGCONT)   // (if it read the terminal before it had it)
        return pid
    }

    func giveBackTerminal() {
        let old = signal(SIGTTOU, SIG_IGN)
        _ = tcsetpgrp(0, getpgrp())
        signal(SIGTTOU, old)
    }
}

extension LuaState {
    /// "recipe.lua:12": the first Lua frame that is not Baton's own (the recipe's).
    func recipeLine() -> String {
        var ar = lua_Debug()
        var level: Int32 = 0
        while lua_getstack(L, level, &ar) != 0 {
            _ = lua_getinfo(L, "Sl", &ar)
            let what = ar.what.map { String(cString: $0) } ?? ""
            let source = ar.source.map { String(cString: $0) } ?? ""
            if what != "C", !source.hasPrefix("=baton"), !source.hasPrefix("@baton:") {
                return (source.hasPrefix("@") || source.hasPrefix("=") ? String(source.dropFirst()) : "?")
                    + ":\(ar.currentline)"
            }
            level += 1
        }
        return ""
    }
}

/// The control socket's requests about pausing and breakpoints.
extension ControlServer {
    static let whereSource = """
        local getinfo, traceback = debug.getinfo, debug.traceback
        return function()
          local level = 2
          while true do
            local info = getinfo(level, "S")
            if not info then return "no recipe frame on the stack" end
            if info.what ~= "C" and info.source:sub(1, 6) ~= "=baton" and info.source:sub(1, 7) ~= "@baton:" then
              return (traceback("", level):gsub("^\\n", ""))
            end
            level = level + 1
          end
        end
        """

    /// The Lua traceback from the paused frame down (`:where`).
    func whereText() -> String {
        let base = lua.top
        defer { lua.top = base }
        do {
            try lua.load(Array(ControlServer.whereSource.utf8), name: "=baton.where")
            try lua.pcall(nargs: 0, nresults: 1)
            try lua.pcall(nargs: 0, nresults: 1)
        } catch let e as LuaCallError { lua.unref(e.ref); return e.message } catch { return "\(error)" }
        return lua.string(-1) ?? ""
    }

    var debugger: Debugger { env.debugger }

    /// The answer to a pause, breakpoint or replay request (nil: not one of those).
    func debugAnswer(_ requested: ControlOp, _ req: JSON, _ peer: Peer) -> JSON? {
        var op = requested
        func done(_ ok: Bool, _ text: String, target: String = "", journaled: Bool = true) -> JSON {
            if journaled { journal(peer, op, target, ok: ok, text) }
            return .object([("ok", .bool(ok)), ("text", .string(text))])
        }
        if let r = debugger.replay { return r.answer(requested, req, server: self) }
        if debugger.paused != nil, let t = debugger.breakTimeout { debugger.pauseDeadline = Clock.monotonic() + t }
        var id = req["stage"]?.stringValue ?? ""
        // `:skip deploy` while paused before stage deploy: skip the stage (not a watch).
        if op == .skip, let s = debugger.paused?.stage, req["watch"]?.stringValue == s { op = .skipStage; id = s }
        switch op {
        case .hello:
            guard let p = debugger.paused else { return nil }
            let text = "run \(ctx.dir.id) (runner pid \(getpid())): PAUSED \(p.text)\n\(describe())\n"
                + ":continue goes on, :step runs the next primitive call and pauses after it"
                + (p.stage != nil ? ", :skip skips stage '\(p.stage!)'" : "") + ", :where shows the traceback"
            return .object([("ok", .bool(true)), ("text", .string(text)), ("run", .string(ctx.dir.id)),
                            ("paused", .bool(true))])
        case .pauseState:
            return .object([("ok", .bool(true)), ("paused", .bool(debugger.paused != nil)),
                            ("text", .string(debugger.paused?.text ?? ""))])
        case .continue, .step, .skipStage:
            guard let p = debugger.paused else { return done(false, "the run is not paused", target: id) }
            if debugger.action != nil { return done(false, "the run is already going on", target: id) }
            switch op {
            case .continue:
                debugger.action = .continue
                return done(true, "the run goes on", target: p.at)
            case .step:
                debugger.action = .step
                return done(true, "the run goes on for one primitive call, then pauses again", target: p.at)
            default:
                guard let s = p.stage else {
                    return done(false, "not paused before a stage: nothing to skip (:continue goes on)", target: id)
                }
                guard debugger.canSkip else {
                    return done(false,
                                "stage '\(s)' is a background stage (or a parallel item's): it cannot be skipped; "
                                    + ":continue",
                                target: s)
                }
                debugger.action = .skip
                return done(true,
                            "stage '\(s)' is skipped (its result is {skipped = true}); the run goes on",
                            target: s)
            }
        case .breakAdd:
            guard !id.isEmpty else { return done(false, "usage: :break ID (a stage id or a glob such as deploy*)") }
            if !debugger.breaks.contains(id) { debugger.breaks.append(id) }
            return done(true, "breakpoints: \(debugger.breaks.joined(separator: ", "))", target: id)
        case .unbreak:
            guard debugger.breaks.contains(id) else {
                return done(false,
                            "no breakpoint '\(id)'"
                                + (debugger.breaks.isEmpty ? "" : " (breakpoints: "
                                   + "\(debugger.breaks.joined(separator: ", ")))"),
                            target: id)
            }
            debugger.breaks.removeAll { $0 == id }
            return done(true,
                        debugger.breaks.isEmpty
                            ? "no breakpoints left"
                            : "breakpoints: \(debugger.breaks.joined(separator: ", "))",
                        target: id)
        case .breaks:
            return done(true,
                        debugger.breaks.isEmpty ? "no breakpoints" : debugger.breaks.joined(separator: "\n"),
                        journaled: false)
        case .where:
            return done(true, whereText(), target: debugger.paused?.at ?? "")
        case .next:
            return done(false, ":next is the replay debugger's (baton debug); in a live run, :step", target: "")
        case .eval, .complete, .stages, .kill, .extend, .skip, .cancel, .refused:
            return nil   // (not the debugger's: ControlServer.answer's)
        }
    }
}

extension RecipeEnvironment {
    /// The run directory keeps the recipe text it runs (recipe.lua) and every module the
    /// recipe requires from the project (modules/), so `baton debug` replays what ran.
    func keepSources(_ ctx: RunContext, text: [UInt8]?) {
        guard let text, !ctx.dryRun else { return }
        try? FileIO.writeAtomically(ctx.dir.recipeCopy, text, mode: RunDirectory.fileMode)
        let modules = ctx.dir.modulesDir
        let base = lua.top
        defer { lua.top = base }
        do {
            try lua.load(Array("""
                local keep, searchers = ...
                local lua_searcher = searchers[2]
                if type(lua_searcher) ~= "function" then return end
                searchers[2] = function(name, ...)
                  local loader, file = lua_searcher(name, ...)
                  if type(loader) == "function" and type(file) == "string" then keep(name, file) end
                  return loader, file
                end
                """.utf8), name: "=baton.keep")
            lua.pushFunction("baton.keepModule") { l in
                guard let name = l.string(1), let file = l.string(2), let bytes = try? FileIO.readFile(file) else {
                    return 0
                }
                let path = modules + "/" + name.replacingOccurrences(of: ".", with: "/") + ".lua"
                try? FileIO.makeDirectories(FileIO.dirname(path), mode: RunDirectory.dirMode)
                try? FileIO.writeAtomically(path, bytes, mode: RunDirectory.fileMode)
                return 0
            }
            _ = lua.getGlobal("package")
            _ = lua.rawGetField(-1, "searchers")
            baton_remove(lua.L, -2)
            try lua.pcall(nargs: 2, nresults: 0)
        } catch let e as LuaCallError { lua.unref(e.ref) } catch {}
    }
}
