import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

/// Where human output goes. In `--json` mode stdout carries one JSON document, so
/// everything for people (print, progress, the plan) goes to stderr.
public struct OutputOptions: Sendable {
    public var json = false
    public var quiet = false
    /// `--stream`: echo stage output as it comes.
    public var stream = false
    public init(json: Bool = false, quiet: Bool = false, stream: Bool = false) {
        self.json = json
        self.quiet = quiet
        self.stream = stream
    }
}

/// The recipe environment: one Lua state with the sandbox, the `baton` table and
/// the five primitives, bound to a run (created at once for a recipe, on first use
/// in the shell).
public final class RecipeEnvironment {
    public let lua: LuaState
    public let output: OutputOptions
    /// The run the primitives journal into. The shell creates it lazily.
    public var context: RunContext?
    public var makeContext: (() throws -> RunContext)?
    /// Set by os.exit.
    public internal(set) var exitCode: Int32?
    /// Lines of a control client (`baton attach`) running now: os.exit is refused in them,
    /// so no client can make a run whose recipe did not return end `succeeded`.
    var controlLines = 0
    /// The terminal's status line and --stream echo (nil when neither applies).
    var view: TerminalView?
    /// Set by `baton.usageOnly()` (kit.args on `help`): the run only printed its usage.
    public internal(set) var usageOnly = false
    /// persistFinal's second argument: the fields merged into the result when the run ends
    /// cancelled (the recipe's Lua code does not run again then), and whether that result
    /// is printed on stdout as JSON.
    var onCancelFields: [(String, JSON)]? = nil
    var onCancelStdout = false
    var handles: [Int: StageExecution] = [:]
    /// Locks held by baton.fs.locked, by absolute path.
    var heldLocks: [String: FileLock] = [:]
    var nextHandle = 1
    /// The loop waits use before a run is open (the shell).
    let ownLoop = EventLoop()
    /// A dry run's plan: every step in order, and whether it is a stage.
    public internal(set) var plan: [(text: String, isStage: Bool)] = []
    public var recipeDir: String = "."
    /// The words after the recipe, also passed to the chunk as `...`.
    public internal(set) var wordsForVarargs: [String] = []
    public var dryRun: Bool { context?.dryRun ?? false }
    /// Breakpoints and the replay debugger (Debugger.swift).
    public let debugger = Debugger()

    public init(memoryLimit: Int, output: OutputOptions) {
        lua = LuaState(memoryLimit: memoryLimit)
        self.output = output
        do {
            try lua.run(Prelude.source, name: "=baton.prelude")
        } catch {
            fatalError("the built-in prelude failed: \(error)")
        }
        installPrint()
        installOsExit()
        installProcessFunctions()
        installEmbeddedSearcher()
        installBatonTable()
        installBreakpoint()
        do {
            try installResultMetatable()
            try installParallel()
        } catch { fatalError("cannot install the recipe environment: \(error)") }
    }

    /// The run, created on first use (the shell's own run).
    func requireContext() throws -> RunContext {
        if let c = context { return c }
        guard let make = makeContext else { throw LuaRaise("no run is open") }
        do { let c = try make(); context = c; return c } catch let e as LuaRaise { throw e } catch {
            throw LuaRaise("cannot open a run: \(error)")
        }
    }

    // MARK: set-up

    public func setRequirePaths(recipeDir: String) {
        self.recipeDir = recipeDir
        let cwd = FileIO.currentDirectory()
        let path = ["\(recipeDir)/?.lua", "\(recipeDir)/?/init.lua", "\(cwd)/scripts-lua/?.lua",
                    "\(cwd)/scripts-lua/?/init.lua"].joined(separator: ";")
        _ = lua.getGlobal("package")
        lua.push(path)
        lua.setField(-2, "path")
        lua.pop()
    }

    /// `arg` as the standalone lua sets it, and `baton.args` from key=value words.
    public func setArguments(recipe: String, words: [String]) {
        wordsForVarargs = words
        lua.newTable()
        lua.push(recipe)
        lua_rawseti(lua.L, -2, 0)
        for (i, w) in words.enumerated() { lua.push(w); lua_rawseti(lua.L, -2, lua_Integer(i + 1)) }
        lua.setGlobal("arg")
        _ = lua.getGlobal("baton")
        lua.newTable()
        for w in words {
            guard let eq = w.firstIndex(of: "="), eq != w.startIndex else { continue }
            let k = String(w[..<eq])
            guard k.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "." }) else { continue }
            lua.push(String(w[w.index(after: eq)...]))
            lua.setField(-2, k)
        }
        lua.setField(-2, "args")
        lua.pop()
    }

    /// `baton.run` = {id, dir, dry_run}.
    public func publishRun() {
        guard let c = context else { return }
        _ = lua.getGlobal("baton")
        lua.newTable()
        lua.setFields([("id", .string(c.dir.id)), ("dir", .string(c.dir.path)), ("dry_run", .bool(c.dryRun))])
        lua.setField(-2, "run")
        lua.pop()
    }

    /// For people: stdout, or stderr when stdout carries the --json document.
    func humanOut(_ s: String) { flushProgress(); view?.clear(); Console.write(output.json ? 2 : 1, s) }

    func progress(_ s: String) { flushProgress(); if !output.quiet { view?.beforeLine(); Console.err(s) } }

    /// A resume's replays in a row, said in one line when there are many (a 10,000-stage
    /// resume would otherwise print 10,000 lines; `baton log --why` lists every one). Any
    /// other output says them first.
    private var heldReplays: [StageKey] = []
    func holdReplay(_ key: StageKey) {
        guard !output.quiet else { return }
        heldReplays.append(key)
    }

    public func flushProgress() {
        guard !heldReplays.isEmpty else { return }
        let keys = heldReplays
        heldReplays.removeAll(keepingCapacity: true)
        view?.clear()
        let why = ResumeWhy(reason: .unchanged).sentence
            .replacingOccurrences(of: "replayed", with: Palette.replayed("replayed"))
        if keys.count <= 3 {
            Console.err(keys.map { "resume: stage \($0): \(why)" }.joined(separator: "\n"))
        } else {
            Console.err("resume: \(keys.count) stage calls \(why) (\(keys.first!) … \(keys.last!); baton log --why "
                    + "lists each)")
        }
    }

    /// The status line and `--stream`, driven by the run's event loop (a foreground run).
    public func attachTerminal() {
        let v = TerminalView(stream: output.stream, json: output.json)
        guard v.isActive, !output.quiet, let loop = context?.loop else { return }
        view = v
        if let c = context { v.begin(c) }
        loop.tickInterval = v.tickInterval
        loop.onTick = { [weak v] label in v?.tick(label) }
    }

    /// print is C as in stock Lua (LuaShim's baton_push_print: luaL_tolstring, which may run
    /// a __tostring that raises, is called from C, never under a Swift frame); only the
    /// final write is Swift.
    private func installPrint() {
        lua.pushFunction("print") { [unowned self] (l: LuaState) throws -> Int32 in
            self.humanOut(l.string(1) ?? "")
            return 0
        }
        baton_push_print(lua.L)
        lua.setGlobal("print")
    }

    private func installOsExit() {
        _ = lua.getGlobal("os")
        lua.pushFunction("os.exit") { [unowned self] (l: LuaState) throws -> Int32 in
            var code: Int32 = 0
            switch l.type(1) {
            case LUA_TNONE, LUA_TNIL: code = 0
            case LUA_TBOOLEAN: code = l.bool(1) ? 0 : 1
            case LUA_TNUMBER:
                guard let v = l.integer(1), (0...255).contains(v) else {
                    throw LuaRaise.usage("os.exit: the code must be an integer from 0 to 255")
                }
                code = Int32(v)
            default: throw LuaRaise.usage("os.exit: the code must be a boolean or an integer")
            }
            if self.controlLines > 0 {
                throw LuaRaise("os.exit is refused at baton attach: it would end the run as if the recipe had; "
                               + "use :cancel to cancel the run, or :kill STAGE to end a stage's attempt",
                               kind: "refused")
            }
            self.exitCode = code
            l.requestAbort(BATON_ABORT_EXIT)
            throw LuaRaise(BATON_ABORT_MESSAGE, kind: "exit")
        }
        lua.setField(-2, "exit")
        lua.pop()
    }

    /// os.execute runs through the same path as stages (own process group, ended on cancel
    /// and signals, journaled as a `command` event); io.popen, whose process would run on
    /// while Lua reads it, is not available: baton.sh and runStage do that job.
    private func installProcessFunctions() {
        _ = lua.getGlobal("os")
        lua.pushFunction("os.execute") { [unowned self] (l: LuaState) throws -> Int32 in
            if l.type(1) == LUA_TNONE || l.type(1) == LUA_TNIL { l.push(true); return 1 }   // a shell is available
            guard let text = l.string(1) else {
                throw LuaRaise.usage("os.execute: the command must be a string, got \(l.describeType(1))")
            }
            try noNUL(text, "os.execute: the command")
            if self.skippedInDryRun("os.execute", text) { l.push(true); l.push("exit"); l.push(0); return 3 }
            let env = self.context?.baseEnvironment ?? Spawner.currentEnvironment()
            let o = self.runCommand(.shell(text),
                                    via: .execute,
                                    cwd: nil,
                                    env: env,
                                    output: (self.output.json ? 2 : 1, 2))
            if o.interrupted { throw RecipeEnvironment.abort }
            try self.checkFatal()
            if let sig = o.signal { l.pushNil(); l.push("signal"); l.push(Int(sig)); return 3 }
            let code = o.exit ?? Termination.notFound
            if code == 0 { l.push(true) } else { l.pushNil() }
            l.push("exit"); l.push(Int(code))
            return 3
        }
        lua.setField(-2, "execute")
        lua.pop()
        _ = lua.getGlobal("io")
        lua.pushFunction("io.popen") { (l: LuaState) throws -> Int32 in
            throw LuaRaise.usage("io.popen is not available in recipes: its process would escape Baton's process "
                    + "groups, cancellation and journal; use baton.sh(cmd) (returns the command's output) or runStage")
        }
        lua.setField(-2, "popen")
        lua.pop()
    }

    private func installEmbeddedSearcher() {
        _ = lua.getGlobal("package")
        _ = lua.rawGetField(-1, "searchers")
        lua.pushFunction("baton.searcher") { (l: LuaState) throws -> Int32 in
            guard let name = l.string(1) else { return 0 }
            guard let m = EmbeddedLua.modules[name] else {
                // (Lua 5.4's require puts "\n\t" before each searcher's message itself.)
                l.push("no module '\(name)' in Baton's built-in library")
                return 1
            }
            do { try l.load(Array(m.source.utf8), name: "@baton:\(m.file)") } catch let error as LuaCallError {
                throw LuaRaise("error loading built-in module '\(name)': \(error.message)", addWhere: false)
            }
            l.push("baton:\(m.file)")
            return 2
        }
        lua_rawseti(lua.L, -2, lua_Integer(lua_rawlen(lua.L, -2) + 1))
        lua.pop(2)
    }

    private func installBatonTable() {
        lua.newTable()
        lua.setGlobal("baton")
        _ = lua.getGlobal("baton")
        lua.newTable(); lua.setField(-2, "args")
        installHelpers()
        installPrimitives()
        lua.pop()
    }
}

extension LuaRaise {
    init(_ message: String, addWhere: Bool) {
        self.init(message)
        self.addWhere = addWhere
    }
}
