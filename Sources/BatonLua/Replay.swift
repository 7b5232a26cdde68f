import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit

/// `baton debug`: a run's recipe replayed against its journal. Every primitive returns what
/// the journal recorded, in order, and nothing executes: stages, commands and file writes are
/// answered or skipped (the Lua prelude below replaces the helpers that act on the world).
/// A call the journal does not have stops the replay there. The replay stops, and opens the
/// attach prompt in the recipe's frame, before the call `--at` names, at the call that
/// failed, on `:next` at every call, and at the end.
public final class Replayer {
    public let dir: RunDirectory
    let history: RunHistory
    /// `--at ID` (a stage id or a glob).
    public var stopAt: String?
    /// Runs the prompt at a stop; returns when the user goes on (or input ends: `quit`).
    public var onStop: (_ greeting: String) -> Void = { _ in }
    var occurrences: [String: Int] = [:]
    var commands: [String: [CommandRecord]] = [:]
    var skipped: [String: Int] = [:]
    var preflights: [String: [PreflightRecord]] = [:]
    /// Each call's records, in order: a gate's iterations, a watch's transitions.
    var gates: [String: [[GateRecord]]] = [:]
    var watches: [String: [[WatchTransition]]] = [:]
    /// Some runStage call matched `--at`.
    public private(set) var atMatched = false
    /// `:next`: stop at the next primitive call.
    var stepping = false
    /// Input ended at a stop: the replay ends.
    public var quit = false
    var action: ControlOp?
    /// The prompt at a stop ended with :next or :continue (not by leaving).
    public var goesOn: Bool { action != nil }
    /// What the replay did, in order (`:stages`).
    var done: [String] = []
    /// The stop in progress (`:where` and the greeting).
    var stopText = ""
    /// Why the replay ended before the recipe did (a call the journal lacks, the failing call).
    public private(set) var endedBy: String?

    public init(dir: RunDirectory, history: RunHistory, events: [JournalEvent]) {
        self.dir = dir
        self.history = history
        for e in events {
            if case let .command(c) = e.body { commands[c.via, default: []].append(c) }
            if case let .notRun(n) = e.body, n.via == "runStage" { skipped[n.target, default: 0] += 1 }
            if case let .preflight(p) = e.body { preflights[p.name, default: []].append(p) }
            if case let .gate(g) = e.body {
                if g.iteration <= 1 || gates[g.name]?.isEmpty != false { gates[g.name, default: []].append([g]) } else {
                    gates[g.name]![gates[g.name]!.count - 1].append(g)
                }
            }
            if case let .watch(w) = e.body {
                if w.from == nil || watches[w.id]?.isEmpty != false { watches[w.id, default: []].append([w]) } else {
                    watches[w.id]![watches[w.id]!.count - 1].append(w)
                }
            }
        }
    }

    /// Opens the prompt here (the recipe's frame is the caller's).
    func stop(_ text: String) throws {
        if quit { throw RecipeEnvironment.abort }
        stopText = text
        action = nil
        onStop(text)
        stepping = action == .next
        if quit { throw RecipeEnvironment.abort }
    }

    /// Ends the replay where it is, after a last stop: the journal has nothing more to give.
    func end(_ why: String) throws -> Never {
        endedBy = why
        try stop("and the replay ends here: \(why)")
        throw LuaRaise("replay ended: \(why)", kind: "replay")
    }

    func breakpoint(_ l: LuaState, why: String) throws {
        if stepping { try stop("baton.breakpoint(\"\(why)\") at \(l.recipeLine())") }
    }

    /// A primitive call in the replay.
    func call(_ name: String, _ l: LuaState, env: RecipeEnvironment) throws -> Int32 {
        let line = l.recipeLine()
        switch name {
        case "runStage":
            return try replayStage(l, line: line, env: env)
        case "persistFinal":
            if stepping { try stop("before persistFinal at \(line) (not written in a replay)") }
            return 0
        case "preflight":
            return try replayPreflight(l, line: line)
        case "gate":
            return try replayGate(l, line: line)
        case "watch":
            return try replayWatch(l, line: line)
        default:
            try end("\(name) at \(line): the replay does not answer \(name)")
        }
    }

    /// runStage: the call's recorded result (a handle for a background one); raises where it failed.
    func replayStage(_ l: LuaState, line: String, env: RecipeEnvironment) throws -> Int32 {
        guard let id = RecipeEnvironment.rawString(l, 1, "id") else {
            throw LuaRaise.usage("runStage: field 'id' is required")
        }
        let background = RecipeEnvironment.rawBool(l, 1, "background")
        let occ = (occurrences[id] ?? 0) + 1
        let key = StageKey(id: id, occurrence: occ)
        let what = "runStage '\(id)'" + (occ > 1 ? " #\(occ)" : "") + " at \(line)"
        let at = stopAt.map { fnmatch($0, id, 0) == 0 } ?? false
        if at { atMatched = true }
        guard let rec = history.stages.first(where: { $0.key == key }) else {
            if let n = skipped[id], n > 0 {
                skipped[id] = n - 1
                if at || stepping { try stop("before \(what) (skipped at a breakpoint in the run)") }
                done.append("  skipped  \(id)")
                l.newTable()
                l.setFields([("id", .string(id)), ("skipped", .bool(true))])
                return 1
            }
            try end("the journal has no call \(what)")
        }
        occurrences[id] = occ
        guard case let .ended(status) = rec.status, let f = rec.finished else {
            try end("\(what) never finished in the run ("
                    + (rec.isOpen ? "unfinished: the run ended or its runner died while it ran" : "\(rec.status)")
                    + ")")
        }
        var r = StageResult(id: id,
                            occurrence: occ,
                            status: status,
                            attempts: f.attempt,
                            duration: Double(f.durationMs) / 1000,
                            logs: f.logs)
        r.exit = f.exit; r.signal = f.signal; r.failureClass = f.failureClass; r.signature = f.signature
        r.message = f.message; r.breakerOpen = f.breakerOpen; r.replayed = true
        let failing = !r.ok && !RecipeEnvironment.rawBool(l, 1, "allowFail")
        if background {
            // A handle whose wait answers from the journal (and is the failing call if it failed).
            if at || stepping { try stop("before \(what) (background; it \(status) in the run)") }
            done.append("  \(status)  \(id)  (background)")
            pending.append((r, failing, what))
            l.newTable()
            l.setFields([("id", .string(id)), ("_replay", .int(pending.count))])
            l.setMetatable(fromRegistry: "baton.replay_handle", on: -1)
            return 1
        }
        if failing {
            r.readTails()
            endedBy = "\(what) failed in the run: \(r.summary)"
            try stop("at the failing call \(what): \(r.summary)")
            done.append("  \(status)  \(id)")
            throw LuaRaise(r.summary,
                           status: .failure,
                           kind: "stage",
                           extra: { l in env.pushResult(l, r); l.setField(-2, "result") })
        }
        if at || stepping { try stop("before \(what) (it \(status) in the run)") }
        done.append("  \(status)  \(id)")
        env.pushResult(l, r)
        return 1
    }

    /// preflight: its recorded report; raises where it failed with policy fail.
    func replayPreflight(_ l: LuaState, line: String) throws -> Int32 {
        let pname = RecipeEnvironment.rawString(l, 1, "name") ?? ""
        guard var list = preflights[pname], !list.isEmpty else {
            try end("the journal has no call preflight '\(pname)' at \(line)")
        }
        let p = list.removeFirst()
        preflights[pname] = list
        let report: JSON = .object([("name", .string(p.name)), ("policy", .string(p.policy.rawValue)),
                                    ("ok", .bool(p.ok)),
                                    ("checks", .array(p.checks.map(\.json)))])
        let what = "preflight '\(pname)' at \(line)"
        if !p.ok && p.policy == .fail {
            let failures = p.checks.filter { !$0.ok }.map {
                "\($0.kind) \($0.target): \($0.detail)"
            }.joined(separator: "; ")
            endedBy = "\(what) failed in the run: \(failures)"
            try stop("at the failing call \(what): \(failures)")
            throw LuaRaise("preflight '\(pname)' failed: \(failures)", status: .preflightFailed, kind: "preflight",
                           extra: { l in l.push(json: report); l.setField(-2, "report") })
        }
        if stepping { try stop("before \(what) (ok: \(p.ok) in the run)") }
        done.append("  preflight  \(pname)  \(p.ok ? "ok" : "failed")")
        l.push(json: report)
        return 1
    }

    /// gate: its recorded decision; raises where it was rejected.
    func replayGate(_ l: LuaState, line: String) throws -> Int32 {
        let gname = RecipeEnvironment.rawString(l, 1, "name") ?? ""
        guard var list = gates[gname], !list.isEmpty, let last = list.first?.last else {
            try end("the journal has no call gate '\(gname)' at \(line)")
        }
        list.removeFirst()
        gates[gname] = list
        let decision: JSON = .object([("approved", .bool(last.approved)), ("issues", last.issues),
                                      ("iteration", .int(Int64(last.iteration)))])
        let what = "gate '\(gname)' at \(line)"
        if !last.approved {
            endedBy = "\(what) was rejected in the run"
            try stop("at the failing call \(what): rejected \(last.iteration) time(s)")
            let times = "\(last.iteration) time\(last.iteration == 1 ? "" : "s")"
            throw LuaRaise("gate '\(gname)' rejected \(times) (in the run; replayed)",
                           status: .gateExhausted,
                           kind: "gate",
                           extra: { l in l.push(json: decision); l.setField(-2, "decision") })
        }
        if stepping { try stop("before \(what) (approved in the run)") }
        done.append("  gate  \(gname)  approved")
        l.push(json: decision)
        return 1
    }

    /// watch: its recorded outcome.
    func replayWatch(_ l: LuaState, line: String) throws -> Int32 {
        let wid = RecipeEnvironment.rawString(l, 1, "id") ?? ""
        guard var list = watches[wid], !list.isEmpty, let steps = list.first, let last = steps.last else {
            try end("the journal has no call watch '\(wid)' at \(line)")
        }
        list.removeFirst()
        watches[wid] = list
        let what = "watch '\(wid)' at \(line)"
        guard last.to.isTerminal else { try end("\(what) never ended in the run (\(last.to.rawValue))") }
        if stepping { try stop("before \(what) (\(last.to.rawValue) in the run)") }
        done.append("  watch  \(wid)  \(last.to.rawValue)")
        // ok as the run said it: completed with nothing missing and its stage passed (journals
        // before the completed transition carried those said so only in its reason).
        let ok = last.to == .completed && (last.details.missing ?? []).isEmpty && last.details.stage == nil
            && !last.reason.contains("missing")
        l.push(json: .object([("id", .string(wid)), ("state", .string(last.to.rawValue)),
                              ("ok", .bool(ok)),
                              ("reason", .string(last.reason)),
                              ("transitions", .array(steps.map { .string($0.to.rawValue) })),
                              ("replayed", .bool(true))]))
        return 1
    }

    /// Background stages' results, for their handles' `wait`: (result, raises, what).
    var pending: [(StageResult, Bool, String)] = []

    /// `h:wait()` on a replayed background stage's handle.
    func wait(_ l: LuaState, env: RecipeEnvironment) throws -> Int32 {
        guard let n = l.integer(1), n >= 1, n <= pending.count else { throw LuaRaise.usage("wait: not a stage handle") }
        var (r, failing, what) = pending[n - 1]
        if failing {
            r.readTails()
            endedBy = "\(what) failed in the run: \(r.summary)"
            try stop("at the failing call (the wait for \(what)) at \(l.recipeLine()): \(r.summary)")
            throw LuaRaise(r.summary,
                           status: .failure,
                           kind: "stage",
                           extra: { l in env.pushResult(l, r); l.setField(-2, "result") })
        }
        env.pushResult(l, r)
        return 1
    }

    /// A command the recipe ran (baton.sh, os.execute): ok and exit as journaled.
    func command(_ l: LuaState) throws -> Int32 {
        let via = l.string(1) ?? ""
        let line = l.recipeLine()
        guard var list = commands[via], !list.isEmpty else {
            try end("the journal has no more \(via) commands (at \(line))")
        }
        let c = list.removeFirst()
        commands[via] = list
        if stepping { try stop("before \(via) '\(c.command.display.prefix(80))' at \(line)") }
        done.append("  \(via)  \(c.command.display.prefix(60))  exit \(c.exit.map(String.init) ?? "-")")
        l.push(c.exit == 0 && !c.timedOut && c.signal == nil)
        l.push(Int(c.exit ?? -1))
        l.push(c.command.display)
        if let out = c.stdout { l.push(out) } else {
            if via == "baton.sh" {
                Console.err("note: the output of baton.sh '\(SafeText.line(String(c.command.display.prefix(80))))' "
                        + "at \(line) was not journaled (longer than 4 KiB, or not text): \"\" in the replay")
            }
            l.push("")
        }
        return 4
    }

    /// The prompt's requests during a replay.
    func answer(_ op: ControlOp, _ req: JSON, server: ControlServer) -> JSON? {
        func reply(_ ok: Bool, _ text: String) -> JSON { .object([("ok", .bool(ok)), ("text", .string(text))]) }
        switch op {
        case .hello:
            return .object([("ok", .bool(true)), ("run", .string(dir.id)),
                            ("text", .string("replay of run \(dir.id): stopped \(stopText)\n\(server.describe())\n"
                                             + ":next goes to the next primitive call, :continue to the next stop, "
                                                 + ":where, :stages; nothing runs"))])
        case .continue:
            action = .continue
            return reply(true, "")
        case .next, .step:
            action = .next
            return reply(true, "")
        case .where:
            return reply(true, server.whereText())
        case .stages:
            return reply(true,
                         done.isEmpty ? "no calls replayed yet" : "replayed so far:\n" + done.joined(separator: "\n"))
        case .eval, .complete:
            return nil
        case .pauseState:
            return .object([("ok", .bool(true)), ("paused", .bool(true))])
        case .kill, .extend, .skip, .cancel, .refused, .skipStage, .breakAdd, .unbreak, .breaks:
            return reply(false, "not in a replay (baton debug replays; nothing in it can change the run)")
        }
    }

    /// Replaces what acts on the world: commands answer from the journal, writes do nothing.
    static let prelude = """
        local command, wait = ...
        local rawget, pcall, error, concat = rawget, pcall, error, table.concat
        -- A background stage's handle: its wait answers from the journal.
        debug.getregistry()["baton.replay_handle"] = {__index = {
          wait = function(h) return wait(rawget(h, "_replay")) end,
          done = function() return true end,
          pid = function() return nil end,
          cancel = function() return true end,
        }}
        -- parallel: the items one after the other (each call is answered by its id, whatever
        -- order they ran in); after a failed item the rest are not started, as in the run
        -- unless onFailure = "continue".
        local function parallel(items, fn, opts)
          local results, outcomes, failures, lines = {}, {}, 0, {}
          local continue = type(opts) == "table" and opts.onFailure == "continue"
          for i = 1, #items do
            if failures > 0 and not continue then
              outcomes[i] = {ok = false, skipped = true, error = "not started: another item failed"}
            else
              local ok, value = pcall(fn, items[i], i)
              if ok then
                results[i], outcomes[i] = value, {ok = true, value = value}
              else
                local kind = type(value) == "table" and rawget(value, "kind")
                if kind == "replay" or kind == "abort" then error(value, 0) end
                failures = failures + 1
                outcomes[i] = {ok = false, error = value}
                lines[#lines + 1] = ("item %d: %s"):format(i, tostring(value))
              end
            end
          end
          if failures > 0 and not continue then
            error(("parallel: %d of %d items failed (replayed): %s"):format(failures, #items, concat(lines, "; ")), 2)
          end
          return results, outcomes
        end
        _G.parallel = parallel
        baton.parallel = parallel
        local function fake_file()
          local f = {}
          function f.write(self) return self end
          function f.close() return true end
          function f.flush() return true end
          function f.setvbuf() return true end
          function f.seek() return 0 end
          function f.lines() return function() return nil end end
          function f.read() return nil end
          return f
        end
        local open = io.open
        io.open = function(path, mode)
          if mode and mode:find("[wa+]") then return fake_file() end
          return open(path, mode)
        end
        io.popen = function() error("io.popen: not run in a replay", 2) end
        io.output = function() return io.stdout end
        os.remove = function() return true end
        os.rename = function() return true end
        os.execute = function(cmd)
          if cmd == nil then return true end
          local ok, code = command("os.execute")
          return ok or nil, "exit", code
        end
        baton.sh = function(cmd, opts)
          local ok, code, text, out = command("baton.sh")
          if type(opts) == "table" and opts.allowFail then return out, ok, code, "" end
          if not ok then error("baton.sh: '" .. text .. "' failed: exit " .. code .. " (in the run; replayed)", 2) end
          return out
        end
        baton.sleep = function() end
        baton.fs.write = function() end
        baton.fs.append = function() end
        baton.fs.mkdir = function() end
        baton.fs.locked = function(_, fn) return fn() end
        baton.budget = function() end
        """

    /// Runs the replay of `dir`'s recipe (its kept text) in a fresh environment whose run
    /// lives in a temporary directory (removed after). Returns the recipe's ending.
    public static func run(_ r: Replayer,
                           recipe: String,
                           text: [UInt8],
                           args: [String],
                           modulesDir: String?) -> Ending {
        let env = RecipeEnvironment(memoryLimit: RunOptions.defaultMemoryLimit, output: OutputOptions())
        var template = Array("/tmp/baton-debug-XXXXXX".utf8CString)
        guard let tmp =
            template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }).map({ String(cString: $0) }) else {
            return Ending(status: .failed, exit: .failure, reason: "cannot make a temporary directory")
        }
        defer { _ = try? FileIO.removeTree(tmp) }
        let ctx: RunContext
        do {
            ctx = try RunContext.start(store: RunStore(root: tmp),
                                       id: "replay",
                                       recipe: recipe,
                                       recipeText: text,
                                       args: args,
                                       dryRun: false)
        } catch { return Ending(status: .failed, exit: .failure, reason: "cannot start the replay: \(error)") }
        env.context = ctx
        env.debugger.replay = r
        env.setArguments(recipe: recipe, words: args)
        _ = env.lua.getGlobal("baton")   // baton.run: the run replayed
        env.lua.newTable()
        env.lua.setFields([("id", .string(r.dir.id)), ("dir", .string(r.dir.path)), ("dry_run", .bool(false))])
        env.lua.setField(-2, "run")
        env.lua.pop()
        env.setRequirePaths(recipeDir: FileIO.dirname(FileIO.absolute(recipe)))
        if let m = modulesDir, FileIO.isDirectory(m) {
            _ = env.lua.getGlobal("package")
            _ = env.lua.rawGetField(-1, "path")
            let path = env.lua.string(-1) ?? ""
            env.lua.pop()
            env.lua.push("\(m)/?.lua;" + path)
            env.lua.setField(-2, "path")
            env.lua.pop()
        }
        let server = ControlServer.local(env: env, ctx: ctx)
        r.server = server
        do {
            try env.lua.load(Array(prelude.utf8), name: "=baton.replay")
            env.lua.pushFunction("baton.replayCommand") { [unowned r, unowned env] l in
                if env.debugger.serving > 0 {
                    throw LuaRaise("\(l.string(1) ?? "a command"): nothing runs at the replay's prompt")
                }
                return try r.command(l)
            }
            env.lua.pushFunction("baton.replayWait") { [unowned r, unowned env] l in try r.wait(l, env: env) }
            try env.lua.pcall(nargs: 2, nresults: 0)
        } catch { return Ending(status: .failed, exit: .failure, reason: "cannot start the replay: \(error)") }
        let ending = RecipeRunner.evaluate(env: env, recipe: recipe, text: text, readError: nil)
        if r.endedBy == nil, !r.quit {
            r.stopText = "at the end of the recipe ("
                + (ending.status == .succeeded ? "it returned" : "\(ending.status): \(ending.reason ?? "")")
                + "); its locals are gone, its globals remain"
            r.onStop(r.stopText)
        }
        _ = ctx.finish(status: ending.status, exitCode: ending.code, reason: ending.reason)
        r.server = nil   // (the server holds the environment, which holds the replay)
        env.debugger.replay = nil
        return ending
    }

    /// The prompt's way in: the same requests a live run's control socket answers.
    public private(set) var server: ControlServer?
    public func request(_ req: JSON) -> JSON {
        server?.request(req) ?? .object([("ok", .bool(false)), ("text", .string("the replay has no prompt"))])
    }
}

extension ControlServer {
    /// A control server with no socket: the replay's prompt calls it directly.
    static func local(env: RecipeEnvironment, ctx: RunContext) -> ControlServer? {
        let server = ControlServer(env: env, ctx: ctx, fd: -1, path: "")
        guard server.loadControlChunk() else { return nil }
        return server
    }

    /// One request, answered in this process (as if from the socket, by this user).
    public func request(_ req: JSON) -> JSON {
        answer(req, Peer(uid: getuid(), pid: getpid(), user: ControlServer.userName(getuid())))
    }
}
