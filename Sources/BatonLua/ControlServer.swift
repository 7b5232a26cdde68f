import BatonBase
import BatonCore
import CBatonSys
import CLua
import Glibc
import LuaKit

/// The Lua side of a live run's control socket, loaded in the runner's state before the
/// recipe runs (so what it captures is Baton's own, whatever the recipe redefines).
public enum ControlLua {
    /// `builtin(name)`: Baton's own copy of a built-in module (a repo's scripts-lua/ cannot
    /// shadow it). The shell's printer and completer load through it too.
    public static let builtin = """
        local function builtin(name)
          local searchers = package.searchers
          local loader, where = searchers[#searchers](name)
          if type(loader) == "function" and type(where) == "string" and where:sub(1, 6) == "baton:" then
            return loader(name, where)
          end
          return require(name)
        end

        """

    /// Returns eval(code) -> ok, text, incomplete; describe() -> text; complete(chain) -> list.
    /// A line runs with the recipe's globals and, before them, the locals (and upvalues) of
    /// the frame the recipe is blocked in (the first Lua frame on the stack that is not Baton's own),
    /// read and written back through the debug library. `print` in the line is captured.
    static let source = builtin + """
        local show = builtin("shell.pretty").show
        local candidates = builtin("shell.complete").candidates
        local G, getinfo, getlocal, setlocal = _G, debug.getinfo, debug.getlocal, debug.setlocal
        local getupvalue, setupvalue = debug.getupvalue, debug.setupvalue
        local load, pcall, tostring, setmetatable, pairs = load, pcall, tostring, setmetatable, pairs
        local pack, unpack, concat = table.pack, table.unpack, table.concat
        local sethook, gethook, clock = debug.sethook, debug.gethook, os.clock

        -- The recipe's frame, as a level counted from the function that called `frame`.
        local function frame()
          local level = 3
          while true do
            local info = getinfo(level, "Sl")
            if not info then return nil end
            if info.what ~= "C" and info.source:sub(1, 6) ~= "=baton" then return level - 1, info end
            level = level + 1
          end
        end

        -- The locals active at `level` (counted from the caller), then its function's upvalues
        -- (a local shadows an upvalue): name -> index (negative: an upvalue), name -> value.
        local function locals(level)
          local names, values, order = {}, {}, {}
          if not level then return names, values, order end
          local fn = getinfo(level + 1, "f").func
          local i = 1
          while true do
            local name, value = getlocal(level + 1, i)
            if not name then break end
            if name:sub(1, 1) ~= "(" then
              if not names[name] then order[#order + 1] = name end
              names[name], values[name] = i, value
            end
            i = i + 1
          end
          i = 1
          while true do
            local name, value = getupvalue(fn, i)
            if not name then break end
            if name ~= "_ENV" and not names[name] then
              order[#order + 1] = name
              names[name], values[name] = -i, value
            end
            i = i + 1
          end
          return names, values, order, fn
        end

        local function incomplete(msg) return msg:sub(-5) == "<eof>" end

        -- A line runs while the whole run waits: one that spins is stopped after `cpu` seconds.
        local function guarded(f, cpu)
          if gethook() ~= nil then return pack(pcall(f)) end   -- the recipe's own hook, or an abort
          local limit = clock() + cpu
          local function guard()
            if clock() > limit then error("stopped: the line ran for more than " .. cpu .. " s of CPU (the run waits\
         meanwhile)", 2) end
          end
          sethook(guard, "", 10000)
          local r = pack(pcall(f))
          if gethook() == guard then sethook() end
          return r
        end

        local function eval(code, cpu)
          local level = frame()
          local names, values, _, fn = locals(level)
          local dirty, out = {}, {}
          local function cprint(...)
            local t = pack(...)
            for i = 1, t.n do t[i] = tostring(t[i]) end
            out[#out + 1] = concat(t, "\\t", 1, t.n)
          end
          local env = setmetatable({}, {
            __index = function(_, k)
              if names[k] then return values[k] end
              if k == "print" then return cprint end
              return G[k]
            end,
            __newindex = function(_, k, v)
              if names[k] then values[k] = v; dirty[k] = true else G[k] = v end
            end,
          })
          local f, err = load("return " .. code, "=attach", "t", env)
          if not f then
            local f2, err2 = load(code, "=attach", "t", env)
            if not f2 then return false, err2, incomplete(err) or incomplete(err2) end
            f = f2
          end
          local r = guarded(f, cpu)
          for k in pairs(dirty) do
            if names[k] > 0 then setlocal(level, names[k], values[k]) else setupvalue(fn, -names[k], values[k]) end
          end
          if not r[1] then out[#out + 1] = tostring(r[2]); return false, concat(out, "\\n"), false end
          if r.n > 1 then out[#out + 1] = show(unpack(r, 2, r.n)) end
          return true, concat(out, "\\n"), false
        end

        local function describe()
          local level, info = frame()
          if not level then return "no recipe frame on the stack: globals only" end
          local _, _, order = locals(level)
          return "frame " .. info.short_src .. ":" .. info.currentline
            .. (#order > 0 and (", its locals and upvalues: " .. concat(order, ", ")) or ", no locals")
        end

        return eval, describe, candidates
        """
}

/// A live run's control channel: a Unix socket in its run directory (mode 0600, peers of
/// another uid refused by SO_PEERCRED), served by the run's one event loop between events,
/// never while Lua code runs. One request a connection: a JSON line in, a JSON line out.
/// Every intervention is journaled as a `control` event.
public final class ControlServer {
    let env: RecipeEnvironment
    let ctx: RunContext
    let fd: Int32
    let path: String
    var evalRef: Int32 = LUA_NOREF, describeRef: Int32 = LUA_NOREF, completeRef: Int32 = LUA_NOREF
    var lua: LuaState { env.lua }

    init(env: RecipeEnvironment, ctx: RunContext, fd: Int32, path: String) {
        self.env = env; self.ctx = ctx; self.fd = fd; self.path = path
    }

    /// Listens on the run's `control.sock`; nil (and a warning in the journal) if it cannot.
    public static func start(env: RecipeEnvironment, ctx: RunContext) -> ControlServer? {
        let path = ctx.dir.controlSocket
        let fd = baton_control_listen(path)
        guard fd >= 0 else {
            ctx.log(.warn,
                    "no control socket (baton attach will show the journal only): \(path): "
                        + "\(String(cString: strerror(-fd)))")
            return nil
        }
        let server = ControlServer(env: env, ctx: ctx, fd: fd, path: path)
        if !server.loadControlChunk() {
            Glibc.close(fd)
            unlink(path)
            ctx.log(.warn, "no control socket: the prompt's Lua could not be loaded")
            return nil
        }
        ctx.loop.sources.append((fd, { [unowned server] in server.serve() }))
        return server
    }

    /// Stops listening and removes the socket (the run is ending).
    public func close() {
        for c in clients { end(c); Glibc.close(c.fd) }
        ctx.loop.sources.removeAll { $0.fd == fd }
        Glibc.close(fd)
        unlink(path)
    }

    struct Peer { var uid: uid_t; var pid: pid_t; var user: String }

    /// CPU seconds a client's line may run (BATON_ATTACH_LINE_SEC, default 10).
    static var lineCPUSeconds: Double {
        Settings.positive(Settings.attachLineSec) ?? 10
    }

    /// A connection whose request line is still arriving (read as it comes, never waited for).
    final class Client {
        let fd: Int32
        let peer: Peer
        let since: Double
        var received: [UInt8] = []
        init(fd: Int32, peer: Peer, since: Double) { self.fd = fd; self.peer = peer; self.since = since }
    }
    private var clients: [Client] = []
    /// Seconds a client has to send its request line.
    static let requestWait = 5.0

    /// The socket is readable: a client connects. Its request is read without blocking, as the
    /// loop sees it arrive (a client that connects and says nothing holds up no one).
    func serve() {
        dropSilentClients()
        var uid: uid_t = 0, pid: pid_t = 0
        let c = baton_control_accept(fd, &uid, &pid)
        guard c >= 0 else { return }
        let peer = Peer(uid: uid, pid: pid, user: ControlServer.userName(uid))
        guard uid == getuid() else {
            defer { Glibc.close(c) }
            let m = "refused: uid \(uid) is not the run's owner (uid \(getuid()))"
            journal(peer, .refused, "", ok: false, m)
            reply(c, .object([("ok", .bool(false)), ("text", .string(m))]))
            return
        }
        _ = fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK)
        let client = Client(fd: c, peer: peer, since: Clock.monotonic())
        clients.append(client)
        ctx.loop.sources.append((c, { [unowned self, unowned client] in self.receive(client) }))
        receive(client)
    }

    /// Reads what the client has sent so far; once its line is whole (or it has closed), answers.
    func receive(_ client: Client, limit: Int = 1 << 20) {
        var buf = [UInt8](repeating: 0, count: 4096)
        while client.received.count < limit && client.received.last != 10 {
            let n = Glibc.read(client.fd, &buf, buf.count)
            if n > 0 { client.received += buf[0..<n]; continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) { return }   // more to come: the loop wakes us
            break   // closed, or an error: answer what came
        }
        end(client)
        var line = client.received
        while line.last == 10 || line.last == 13 { line.removeLast() }
        // Replies are short and the socket has a send timeout (a client that never reads).
        _ = fcntl(client.fd, F_SETFL, fcntl(client.fd, F_GETFL) & ~O_NONBLOCK)
        defer { Glibc.close(client.fd) }
        guard !line.isEmpty, let req = try? JSON.parse(line) else {
            reply(client.fd, .object([("ok", .bool(false)), ("text", .string("bad request: one JSON line expected"))]))
            return
        }
        reply(client.fd, answer(req, client.peer))
    }

    /// Stops watching a client (before its answer runs: a line of Lua may wait on the loop).
    private func end(_ client: Client) {
        ctx.loop.sources.removeAll { $0.fd == client.fd }
        clients.removeAll { $0 === client }
    }

    /// Clients that have not sent their line in time are let go.
    private func dropSilentClients() {
        let now = Clock.monotonic()
        for c in clients where now - c.since > ControlServer.requestWait {
            end(c)
            Glibc.close(c.fd)
        }
    }

    func answer(_ req: JSON, _ peer: Peer) -> JSON {
        let word = req["op"]?.stringValue ?? ""
        guard let op = ControlOp(rawValue: word), op != .refused else {
            return .object([("ok", .bool(false)), ("text", .string("unknown request '\(word)'"))])
        }
        env.debugger.serving += 1   // (a line run here never pauses: Debugger.swift)
        defer { env.debugger.serving -= 1 }
        if let a = debugAnswer(op, req, peer) { return a }   // pauses, breakpoints, a replay (Debugger.swift)
        func done(_ ok: Bool, _ text: String, journaled target: String? = nil) -> JSON {
            if let t = target { journal(peer, op, t, ok: ok, text) }
            return .object([("ok", .bool(ok)), ("text", .string(text))])
        }
        let stage = req["stage"]?.stringValue ?? ""
        switch op {
        case .hello:
            try? ctx.journal.flush()   // what status reads is what this runner knows
            let blocked = RunInfo.load(ctx.dir, withEvents: false).blockedIn?.text
            let text = "run \(ctx.dir.id) (runner pid \(getpid()))" + (blocked.map { ": blocked in \($0)" } ?? "")
                + "\n" + describe()
            return .object([("ok", .bool(true)), ("text", .string(text)), ("run", .string(ctx.dir.id))])
        case .eval:
            let code = req["code"]?.stringValue ?? ""
            let (ok, text, incomplete) = eval(code)
            if incomplete {
                return .object([("ok", .bool(false)), ("incomplete", .bool(true)), ("text", .string(text))])
            }
            return done(ok, text, journaled: code)
        case .complete:
            return .object([("ok", .bool(true)),
                            ("candidates", .array(complete(req["chain"]?.stringValue ?? "").map(JSON.string)))])
        case .stages:
            return done(true, stagesText())
        case .kill:
            guard let e = running(stage) else { return done(false, notRunning(stage), journaled: stage) }
            _ = e.endAttempt()
            let retry = e.spec.retries > 0
                ? "its retry policy applies (retries = \(e.spec.retries))" : "it has no retries"
            return done(true,
                        "ending attempt \(e.attempt) of stage '\(stage)' (SIGTERM, SIGKILL after "
                            + "\(Clock.human(e.spec.grace))); " + retry,
                        journaled: stage)
        case .extend:
            let seconds = req["seconds"]?.doubleValue ?? 0
            let target = "\(stage) \(seconds)"
            guard let e = running(stage) else { return done(false, notRunning(stage), journaled: target) }
            guard let left = e.extendTimeout(by: seconds) else {
                return done(false, "stage '\(stage)' has no timeout to move", journaled: target)
            }
            return done(true,
                        "stage '\(stage)': timeout moved \(Clock.human(seconds)) later; "
                            + "\(Clock.human(max(0, left))) left",
                        journaled: target)
        case .skip:
            let id = req["watch"]?.stringValue ?? ""
            guard ctx.history.watches.contains(where: { $0.id == id && !$0.state.isTerminal }) else {
                let waiting = ctx.history.watches.filter { !$0.state.isTerminal }.map(\.id)
                return done(false,
                            "no watch '\(id)' is waiting"
                                + (waiting.isEmpty ? "" : " (waiting: \(waiting.joined(separator: ", ")))"),
                            journaled: id)
            }
            ctx.skipRequests.insert(id)
            return done(true, "watch '\(id)' ends as blocked; the recipe goes on", journaled: id)
        case .cancel:
            // As `baton cancel`: the run's SIGTERM path (every stage ended, final.json cancelled),
            // with who asked in final.json's ended_by.
            ctx.endedBy = FinalRecord.EndedBy(uid: Int64(peer.uid), pid: Int64(peer.pid), user: peer.user)
            baton_signal_raise_flag(SIGTERM)
            return done(true,
                        "cancelling run \(ctx.dir.id): its stages are ended (SIGTERM, SIGKILL after their grace)",
                        journaled: ctx.dir.id)
        case .refused, .continue, .step, .skipStage, .next, .breakAdd, .unbreak, .breaks, .where, .pauseState:
            // (refused never comes here; the others are answered by debugAnswer, Debugger.swift)
            return done(false, "unknown request '\(word)'")
        }
    }

    func running(_ id: String) -> StageExecution? {
        ctx.loop.tasks.lazy.compactMap { $0 as? StageExecution }.first { $0.spec.id == id && $0.isRunning }
    }

    func notRunning(_ id: String) -> String {
        let ids = ctx.loop.tasks.compactMap { ($0 as? StageExecution).flatMap { $0.isRunning ? $0.spec.id : nil } }
        return "no stage '\(id)' is running" + (ids.isEmpty ? "" : " (running: \(ids.joined(separator: ", ")))")
    }

    func stagesText() -> String {
        var lines: [String] = []
        let live = ctx.loop.tasks.compactMap { $0 as? StageExecution }
        for r in ctx.history.concluded { lines.append("  \(r.status)  \(r.key)  attempts \(r.attempt)") }
        for e in live {
            var s = "  \(e.isRunning ? "running" : "waiting")  \(e.key)  attempt \(e.attempt)"
            if e.isRunning {
                s += "  pid \(e.pid)  for \(Clock.human(e.runningFor))"
                if let t = e.timeoutLeft { s += "  timeout in \(Clock.human(max(0, t)))" }
            }
            lines.append(s + "  \(e.spec.command.display.prefix(60))")
        }
        return lines.isEmpty ? "no stages yet" : lines.joined(separator: "\n")
    }

    // MARK: Lua

    func eval(_ code: String) -> (Bool, String, Bool) {
        let base = lua.top
        defer { lua.top = base }
        lua.pushRef(evalRef)
        lua.push(code)
        lua.push(ControlServer.lineCPUSeconds)
        env.controlLines += 1   // os.exit refuses while a client's line runs
        defer { env.controlLines -= 1 }
        do { try lua.pcall(nargs: 2, nresults: 3) } catch let e as LuaCallError {
            lua.unref(e.ref)
            return (false, e.message, false)
        } catch { return (false, "\(error)", false) }
        return (lua.bool(base + 1), lua.string(base + 2) ?? "", lua.bool(base + 3))
    }

    func describe() -> String {
        let base = lua.top
        defer { lua.top = base }
        lua.pushRef(describeRef)
        do { try lua.pcall(nargs: 0, nresults: 1) } catch let e as LuaCallError {
            lua.unref(e.ref)
            return ""
        } catch { return "" }
        return lua.string(-1) ?? ""
    }

    func complete(_ chain: String) -> [String] { lua.strings(calling: completeRef, with: chain) }

    // MARK: the wire

    func journal(_ p: Peer, _ op: ControlOp, _ target: String, ok: Bool, _ result: String) {
        ctx.record(.control(ControlRecord(uid: Int64(p.uid), user: p.user, pid: Int64(p.pid), op: op,
                                          target: String(target.prefix(500)), ok: ok,
                                          result: String(result.prefix(500)))))
        try? ctx.journal.flush()
    }

    func reply(_ c: Int32, _ j: JSON) {
        let bytes = j.encodedBytes() + [10]
        _ = bytes.withUnsafeBytes { try? FileIO.writeAll(c, $0, path: "control.sock") }
    }

    static func userName(_ uid: uid_t) -> String {
        guard let pw = getpwuid(uid), let n = pw.pointee.pw_name else { return String(uid) }
        return String(cString: n)
    }
}

extension LuaState {
    /// Calls the function at registry reference `ref` with one string; the list of strings
    /// it returns (empty on an error or another kind of value).
    public func strings(calling ref: Int32, with arg: String) -> [String] {
        let base = top
        defer { top = base }
        pushRef(ref)
        push(arg)
        do { try pcall(nargs: 1, nresults: 1) } catch let e as LuaCallError {
            unref(e.ref)
            return []
        } catch { return [] }
        var out: [String] = []
        guard type(-1) == LUA_TTABLE else { return [] }
        var i: lua_Integer = 1
        while lua_rawgeti(L, -1, i) == LUA_TSTRING {
            if let s = string(-1) { out.append(s) }
            pop()
            i += 1
        }
        return out
    }
}

extension ControlServer {
    /// Loads the Lua side of the prompt (completion, description, evaluation) into the run's
    /// state and keeps its three functions; false (the stack as it was) when it cannot.
    func loadControlChunk() -> Bool {
        let lua = env.lua
        let base = lua.top
        do {
            try lua.load(Array(ControlLua.source.utf8), name: "=baton.control")
            try lua.pcall(nargs: 0, nresults: 3)
            completeRef = lua.ref()
            describeRef = lua.ref()
            evalRef = lua.ref()
            return true
        } catch {
            lua.top = base
            return false
        }
    }
}
