import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

extension RecipeEnvironment {
    /// The `baton` helpers (the table is on top of the stack).
    func installHelpers() {
        lua.register([
            ("log", { [unowned self] (l: LuaState) throws -> Int32 in try self.batonLog(l) }),
            ("fail", { (l: LuaState) throws -> Int32 in try RecipeEnvironment.batonFail(l) }),
            ("now", { (l: LuaState) throws -> Int32 in l.push(Clock.now()); return 1 }),
            ("env", { (l: LuaState) throws -> Int32 in
                guard let name = l.string(1) else {
                    throw LuaRaise.usage("baton.env: the name must be a string, got \(l.describeType(1))")
                }
                if let v = getenv(name) { l.push(String(cString: v)) } else { l.pushNil() }
                return 1
            }),
            ("sleep", { [unowned self] (l: LuaState) throws -> Int32 in
                guard let s = l.number(1), s >= 0, s.isFinite else {
                    throw LuaRaise.usage("baton.sleep: seconds must be a non-negative number, got \(l.describeType(1))")
                }
                if !self.loop.sleep(s, WaitLabel(.sleep, Clock.human(s))) {
                    throw LuaRaise(BATON_ABORT_MESSAGE, kind: "abort")
                }
                return 0
            }),
            ("sh", { [unowned self] (l: LuaState) throws -> Int32 in try self.batonSh(l) }),
            ("budget", { [unowned self] (l: LuaState) throws -> Int32 in try self.batonBudget(l) }),
            ("executor", { [unowned self] (l: LuaState) throws -> Int32 in try self.batonExecutor(l) }),
            ("pool", { [unowned self] (l: LuaState) throws -> Int32 in
                guard let name = l.string(1), !name.isEmpty else {
                    throw LuaRaise.usage("baton.pool: the name must be a non-empty string")
                }
                guard let n = l.integer(2), n >= 1 else {
                    throw LuaRaise.usage("baton.pool: the limit must be an integer of at least 1")
                }
                try self.requireContext().setPool(name, limit: n)
                return 0
            }),
            ("usageOnly", { [unowned self] (_: LuaState) throws -> Int32 in self.usageOnly = true; return 0 }),
        ], prefix: "baton.")
        installJSON()
        installYAML()
        installFS()
    }

    /// baton.budget(duration): the run's time limit.
    func batonBudget(_ l: LuaState) throws -> Int32 {
        let text = l.string(1) ?? l.number(1).map { "\(fmt($0))s" } ?? ""
        guard let secs = Clock.parseDuration(text), secs > 0 else {
            throw LuaRaise.usage("baton.budget: give a duration such as 2h, 30m, 90s or a number of seconds, "
                                 + "got \(l.describeType(1))")
        }
        let ctx = try requireContext()
        if !ctx.dryRun { ctx.setBudget(secs, text: text) }
        return 0
    }

    /// baton.json: encode, decode, array, null.
    func installJSON() {
        lua.newTable()
        lua.register([
            ("encode", { (l: LuaState) throws -> Int32 in
                let pretty: Bool
                if l.type(2) == LUA_TTABLE { _ = l.rawGetField(2, "pretty"); pretty = l.bool(-1); l.pop() } else {
                    pretty = false
                }
                do { l.push(try l.toJSON(1).encoded(pretty: pretty)) } catch {
                    throw LuaRaise("baton.json.encode: \(error)")
                }
                return 1
            }),
            ("decode", { (l: LuaState) throws -> Int32 in
                guard let b = l.bytes(1) else {
                    throw LuaRaise.usage("baton.json.decode: expects a string, got \(l.describeType(1))")
                }
                do { l.push(json: try JSON.parse(b)) } catch {
                    throw LuaRaise("baton.json.decode: invalid JSON: \(error)")
                }
                return 1
            }),
            ("array", { (l: LuaState) throws -> Int32 in
                if l.type(1) == LUA_TNONE || l.type(1) == LUA_TNIL { l.newTable() } else if l.type(1) != LUA_TTABLE {
                    throw LuaRaise.usage("baton.json.array: expects a table, got \(l.describeType(1))")
                }
                l.top = 1
                l.setMetatable(fromRegistry: "baton.json.array_mt", on: 1)
                return 1
            }),
        ], prefix: "baton.json.")
        lua_pushlightuserdata(lua.L, lua.nullSentinel)
        lua.setField(-2, "null")
        lua.setField(-2, "json")
    }

    /// baton.yaml: decode (through the YAML helper).
    func installYAML() {
        lua.newTable()
        lua.register([
            ("decode", { [unowned self] (l: LuaState) throws -> Int32 in
                guard let s = l.string(1) else {
                    throw LuaRaise.usage("baton.yaml.decode: expects a string, got \(l.describeType(1))")
                }
                l.push(json: try YAMLBridge.decode(s, loop: self.loop))
                return 1
            }),
        ], prefix: "baton.yaml.")
        lua.setField(-2, "yaml")
    }

    /// baton.fs: exists, read, write, append, locked, mkdir, glob.
    func installFS() {
        lua.newTable()
        lua.register([
            ("exists", { (l: LuaState) throws -> Int32 in
                l.push(FileIO.exists(try RecipeEnvironment.pathArg(l, "baton.fs.exists")))
                return 1
            }),
            ("read", { (l: LuaState) throws -> Int32 in
                let p = try RecipeEnvironment.pathArg(l, "baton.fs.read")
                do { l.push(bytes: try FileIO.readFile(p)) } catch { throw LuaRaise("baton.fs.read: \(error)") }
                return 1
            }),
            ("write", { [unowned self] (l: LuaState) throws -> Int32 in try self.fsWrite(l) }),
            ("append", { [unowned self] (l: LuaState) throws -> Int32 in
                let p = try RecipeEnvironment.pathArg(l, "baton.fs.append")
                guard let data = l.bytes(2) else {
                    throw LuaRaise.usage("baton.fs.append: the data must be a string, got \(l.describeType(2))")
                }
                if self.skippedInDryRun("baton.fs.append", p) { return 0 }
                let held = self.heldLocks[FileIO.absolute(p)] != nil
                do { try FileIO.appendLocked(p, data, alreadyLocked: held) } catch {
                    throw LuaRaise("baton.fs.append: \(error)")
                }
                return 0
            }),
            ("locked", { [unowned self] (l: LuaState) throws -> Int32 in try self.fsLocked(l) }),
            ("mkdir", { (l: LuaState) throws -> Int32 in
                let p = try RecipeEnvironment.pathArg(l, "baton.fs.mkdir")
                do { try FileIO.makeDirectories(p) } catch { throw LuaRaise("baton.fs.mkdir: \(error)") }
                return 0
            }),
            ("glob", { (l: LuaState) throws -> Int32 in
                let paths = Glob.match(try RecipeEnvironment.pathArg(l, "baton.fs.glob"))
                l.newTable(narr: Int32(paths.count))
                for (i, p) in paths.enumerated() { l.push(p); lua_rawseti(l.L, -2, lua_Integer(i + 1)) }
                return 1
            }),
        ], prefix: "baton.fs.")
        lua.setField(-2, "fs")
    }

    /// baton.fs.write(path, data, {mode = 0644}): atomically (not in a dry run).
    func fsWrite(_ l: LuaState) throws -> Int32 {
        let p = try RecipeEnvironment.pathArg(l, "baton.fs.write")
        guard let data = l.bytes(2) else {
            throw LuaRaise.usage("baton.fs.write: the data must be a string, got \(l.describeType(2))")
        }
        var mode = mode_t(PrimitiveFields.fsWriteOptions.integer("mode"))
        if l.type(3) == LUA_TTABLE {
            let t = try SpecTable(l, arg: 3, fn: "baton.fs.write", allowed: PrimitiveFields.fsWriteOptions.names)
            if let m = try t.integer("mode", min: 0, max: 0o7777) { mode = mode_t(m) }
        }
        if skippedInDryRun("baton.fs.write", p) { return 0 }
        do {
            try FileIO.makeDirectories(FileIO.dirname(FileIO.absolute(p)))
            try FileIO.writeAtomically(p, data, mode: mode)
        } catch { throw LuaRaise("baton.fs.write: \(error)") }
        return 0
    }

    /// baton.fs.locked(path, fn, {timeout = 60}): runs fn holding the exclusive flock on
    /// `path` (the lock baton.fs.append takes, so appends from other processes wait, and
    /// appends to `path` inside fn use the held lock). Returns fn's results.
    func fsLocked(_ l: LuaState) throws -> Int32 {
        let p = try RecipeEnvironment.pathArg(l, "baton.fs.locked")
        guard l.type(2) == LUA_TFUNCTION else {
            throw LuaRaise.usage("baton.fs.locked: the second argument must be a function, got \(l.describeType(2))")
        }
        var timeout = PrimitiveFields.fsLockedOptions.number("timeout")
        if l.type(3) == LUA_TTABLE {
            let t = try SpecTable(l, arg: 3, fn: "baton.fs.locked", allowed: PrimitiveFields.fsLockedOptions.names)
            timeout = try t.number("timeout", min: 0) ?? timeout
        }
        let key = FileIO.absolute(p)
        guard heldLocks[key] == nil else {
            throw LuaRaise.usage("baton.fs.locked: \(p) is already locked by this recipe")
        }
        let lock: FileLock
        do {
            try FileIO.makeDirectories(FileIO.dirname(key))
            guard let got = try FileLock.acquire(key, timeout: timeout, loop: loop) else {
                if loop.interrupted || l.abortReason != 0 { throw RecipeEnvironment.abort }
                throw LuaRaise("baton.fs.locked: \(p) is still locked by another process after \(fmt(timeout))s",
                               status: .failure,
                               kind: "lock")
            }
            lock = got
        } catch let e as LuaRaise { throw e } catch { throw LuaRaise("baton.fs.locked: \(error)") }
        heldLocks[key] = lock
        defer { heldLocks[key] = nil; lock.release() }
        l.top = 2                                   // [path, fn]
        do { try l.pcall(nargs: 0, nresults: LUA_MULTRET) } catch let e as LuaCallError { throw l.rethrow(e) }
        return l.top - 1                            // [path, results...]
    }

    static func pathArg(_ l: LuaState, _ fn: String) throws -> String {
        guard let p = l.string(1) else {
            throw LuaRaise.usage("\(fn): the path must be a string, got \(l.describeType(1))")
        }
        guard !p.isEmpty else { throw LuaRaise.usage("\(fn): the path is empty") }
        try noNUL(p, "\(fn): the path")
        return p
    }

    /// baton.log(message, fields): journaled (and shown on stderr unless quiet).
    func batonLog(_ l: LuaState) throws -> Int32 {
        guard l.type(1) != LUA_TNONE else { throw LuaRaise.usage("baton.log: a message is required") }
        let msg: String
        if let s = l.string(1) { msg = s } else if let n = l.number(1) { msg = fmt(n) } else {
            throw LuaRaise.usage("baton.log: the message must be a string, got \(l.describeType(1))")
        }
        var fields = JSON.object([])
        let declared = PrimitiveFields.logFields[field: "level"]!
        var level = LogLevel(rawValue: PrimitiveFields.logFields.string("level"))!
        if l.type(2) == LUA_TTABLE {
            do { fields = try l.toJSON(2) } catch { throw LuaRaise.usage("baton.log: fields: \(error)") }
            if let given = fields["level"] {
                guard let lv = given.stringValue, declared.choices.contains(lv),
                      let known = LogLevel(rawValue: lv) else {
                    let levels = declared.choices.map { "'\($0)'" }.joined(separator: ", ")
                    throw LuaRaise.usage("baton.log: fields.level must be one of \(levels), got "
                            + "\(given.stringValue.map { "'\($0)'" } ?? given.encoded())")
                }
                level = known
            }
        } else if l.type(2) != LUA_TNONE && l.type(2) != LUA_TNIL {
            throw LuaRaise.usage("baton.log: fields must be a table, got \(l.describeType(2))")
        }
        let ctx = try requireContext()
        ctx.log(level, msg, fields)
        try checkFatal()
        progress(level == .info ? msg : "\(level.rawValue): \(msg)")
        return 0
    }

    /// baton.fail(message, {code = N}): ends the run with that exit code.
    static func batonFail(_ l: LuaState) throws -> Int32 {
        let msg = l.string(1) ?? (l.type(1) == LUA_TNONE ? "failed" : "(non-string message)")
        var code = PrimitiveFields.failOptions.integer("code")
        if l.type(2) == LUA_TTABLE {
            let t = try SpecTable(l, arg: 2, fn: "baton.fail", allowed: PrimitiveFields.failOptions.names)
            code = try t.integer("code", min: 1, max: Int(ExitStatus.recipeChosen.upperBound)) ?? code
        } else if l.type(2) != LUA_TNONE && l.type(2) != LUA_TNIL {
            throw LuaRaise.usage("baton.fail: the second argument must be a table like {code = 5}")
        }
        throw LuaRaise(msg, status: ExitStatus(rawValue: Int32(code)), kind: "fail")
    }

    /// baton.sh(cmd, {cwd, env, stdin, timeout}): stdout, or an error naming the exit code.
    /// With allowFail: stdout, ok, exit code, stderr. Not run in a dry run (returns "").
    func batonSh(_ l: LuaState) throws -> Int32 {
        let cmd: Command
        if let s = l.string(1) { try noNUL(s, "baton.sh: the cmd"); cmd = .shell(s) } else if l.type(1) == LUA_TTABLE {
            l.newTable(); l.pushNil(); lua_copy(l.L, 1, -1); l.setField(-2, "cmd")
            let t = SpecTable(nested: l, index: -1, fn: "baton.sh")
            guard let c = try t.command("cmd") else { throw LuaRaise.usage("baton.sh: a command is required") }
            l.pop()
            cmd = c
        } else {
            throw LuaRaise.usage("baton.sh: the command must be a string or an argv list, got \(l.describeType(1))")
        }
        var cwd: String? = nil, stdin: String? = nil, timeout: Double? = nil, allowFail = false, readOnly = false
        var env = context?.baseEnvironment ?? Spawner.currentEnvironment()
        if l.type(2) == LUA_TTABLE {
            let t = try SpecTable(l, arg: 2, fn: "baton.sh", allowed: PrimitiveFields.shOptions.names)
            cwd = try t.string("cwd"); stdin = try t.string("stdin"); timeout = try t.number("timeout", min: 0)
            for (k, v) in try t.stringMap("env") ?? [:] { env[k] = v }
            allowFail = try t.bool("allowFail") ?? false
            readOnly = try t.bool("readOnly") ?? false
        }
        // readOnly: the recipe declares the command only reads (git log, test -d, realpath),
        // so a dry run runs it too and plans with real answers.
        if !readOnly, skippedInDryRun("baton.sh", cmd.display) {
            l.push("")
            if allowFail { l.push(true); l.push(0); l.push(""); return 4 }
            return 1
        }
        let o = runCommand(cmd, via: .sh, cwd: cwd, env: env, stdin: stdin, timeout: timeout)
        if o.interrupted { throw RecipeEnvironment.abort }
        try checkFatal()
        if allowFail {
            l.push(bytes: o.stdout); l.push(o.ok); l.push(Int(o.exit ?? -1)); l.push(bytes: o.stderr)
            return 4
        }
        guard o.ok else {
            throw LuaRaise("baton.sh: '\(cmd.display.prefix(120))' failed: \(o.failureDescription)",
                           status: .failure,
                           kind: "sh")
        }
        l.push(bytes: o.stdout)
        return 1
    }

    /// Runs a command outside a stage on the run's loop (own process group, ended on cancel
    /// and signals, nothing else stops meanwhile) and journals it as a `command` event.
    func runCommand(_ cmd: Command, via: WaitKind, cwd: String?, env: [String: String], stdin: String? = nil,
                    timeout: Double? = nil, output: (Int32, Int32)? = nil) -> CommandRun.Outcome {
        context?.spawnedAny = true
        let o = CommandRun.run(cmd, cwd: cwd, env: env, stdin: stdin, timeout: timeout, output: output,
                               on: loop, label: WaitLabel(via, cmd.display))
        var rec = CommandRecord(via: via.rawValue,
                                command: cmd,
                                cwd: cwd.map(FileIO.absolute) ?? FileIO.currentDirectory(),
                                pid: o.pid, exit: o.exit, signal: o.signal, timedOut: o.timedOut,
                                durationMs: Int64(o.duration * 1000))
        if via == .sh {
            rec.stdout = CommandRecord.journaledOutput(o.stdout)
        }   // (what baton debug answers baton.sh with)
        context?.record(.command(rec))
        return o
    }

    /// In a dry run, journals that `via` did not act on `target` and returns true.
    func skippedInDryRun(_ via: String, _ target: String) -> Bool {
        guard dryRun, let ctx = context else { return false }
        ctx.record(.notRun(NotRun(via: via, target: target)))
        plan.append(("\(via) \(target.prefix(120)) (not run)", false))
        return true
    }

    /// The loop every wait goes through: the run's, or (in the shell before its run is
    /// open) the environment's own.
    public var loop: EventLoop { context?.loop ?? ownLoop }

    /// A journal write failed (full disk): stop the recipe with a clear message.
    func checkFatal() throws {
        if let f = context?.fatal { throw LuaRaise("cannot write the journal: \(f)", status: .failure, kind: "fatal") }
    }

    /// Runs a primitive of the core (watch, gate, preflight), its errors made Lua errors:
    /// a signal aborts, a journal that cannot be written is fatal, a `PrimitiveError` is the
    /// recipe's error with what it carries (`outcome`, `decision`, `report`).
    func core<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch is LoopInterrupted {
            throw RecipeEnvironment.abort
        } catch let e as JournalFailed {
            throw LuaRaise("cannot write the journal: \(e.error)", status: .failure, kind: "fatal")
        } catch let e as PrimitiveError {
            let extra = e.attachment.map { a in { (l: LuaState) in l.push(json: a.value); l.setField(-2, a.field) } }
            throw LuaRaise(e.message, status: e.status, kind: e.kind, extra: extra)
        }
    }
}

/// YAML through the `baton-yaml` helper next to the baton binary (or BATON_YAML_HELPER):
/// the YAML library needs Foundation, which the runner itself never loads.
enum YAMLBridge {
    static var helper: String {
        if let e = Settings.raw(Settings.yamlHelper) { return e }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        let dir = n > 0 ? FileIO.dirname(String(cBuffer: buf)) : "."
        return dir + "/baton-yaml"
    }

    static func decode(_ text: String, loop: EventLoop) throws -> JSON {
        let h = helper
        guard access(h, X_OK) == 0 else {
            throw LuaRaise("baton.yaml.decode: the YAML helper \(h) is missing (build the 'baton-yaml' product next "
                    + "to baton)",
                           status: .failure, kind: "yaml")
        }
        let o = CommandRun.run(.argv([h]),
                               stdin: text,
                               timeout: 60,
                               on: loop,
                               label: WaitLabel(.yaml, "baton.yaml.decode"))
        if o.interrupted { throw LuaRaise(BATON_ABORT_MESSAGE, kind: "abort") }
        guard o.ok else {
            let why = o.exit == 1 ? o.stderrText.trimmingWhitespace() : o.failureDescription
            throw LuaRaise("baton.yaml.decode: invalid YAML: \(why)".replacingNewlines(),
                           status: .failure,
                           kind: "yaml")
        }
        do { return try JSON.parse(o.stdout) } catch {
            throw LuaRaise("baton.yaml.decode: the helper's output is not JSON: \(error)",
                           status: .failure,
                           kind: "yaml")
        }
    }
}

extension String {
    func replacingNewlines() -> String { String(self.map { $0 == "\n" ? " " : $0 }) }
}
