import BatonCore
import BatonLua
import CBatonSys
import Glibc

func out(_ s: String) { Console.out(s) }

/// `baton runs|status|log|wait|prune|cancel|resume|check`: each returns the exit code.
/// With `--json` every answer, errors included, is one JSON document on stdout
/// (docs/cli.md): the run id is `run` everywhere, as in the journal and final.json.
public enum Commands {
    static func fail(_ message: String, json: Bool, code: ExitStatus = .usage) -> Int32 {
        Console.error(message, json: json, code: code)
    }

    static func resolve(_ root: String, _ ref: String?, json: Bool) -> RunDirectory? {
        do { return try RunStore(root: root).resolve(ref) } catch {
            _ = fail("\(error)", json: json)
            return nil
        }
    }

    /// `baton runs [-n N] [--state S]`: newest first.
    public static func runs(root: String, json: Bool, limit: Int? = nil, state: RunInfo.State? = nil) -> Int32 {
        let store = RunStore(root: root)
        var infos: [RunInfo] = []
        for id in store.ids() {
            if let limit, infos.count >= limit { break }
            let info = RunInfo.load(store.directory(id), withEvents: false)
            if state == nil || info.state == state { infos.append(info) }
        }
        if json {
            out(JSON.array(infos.map(\.json)).encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        if infos.isEmpty { out(state == nil ? "no runs in \(root)" : "no \(state!.rawValue) runs in \(root)"); return ExitStatus.success.rawValue }
        out(Render.runsTable(infos))
        return ExitStatus.success.rawValue
    }

    public static func status(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let info = RunInfo.load(dir)
        if json { out(info.json.encoded(pretty: true)) } else { out(Render.status(info)) }
        return ExitStatus.success.rawValue
    }

    /// How an ended run ended: a line (or with `--json` an object), and its exit code as
    /// the command's own. An orphaned run (its runner died) exits 1.
    static func outcome(_ dir: RunDirectory, json: Bool) -> Int32 {
        let info = RunInfo.load(dir, withEvents: false)
        let code = info.exitCode.map(Int32.init) ?? ExitStatus.failure.rawValue
        if json {
            out(JSON.object([("run", .string(info.id)), ("state", .string(info.state.rawValue)),
                             ("exit_code", .int(Int64(code))), ("reason", info.reason.map(JSON.string) ?? .null)]).encoded())
        } else {
            var line = "run \(info.id) \(info.state.rawValue) (exit \(code))"
            if info.state == .orphaned { line += ": its runner died without writing final.json" }
            else if let r = info.reason { line += ": \(r)" }
            out(SafeText.line(line))
        }
        return code
    }

    /// Whether the run's runner is (still) at work: it holds the lock, or a detached one
    /// has not taken it yet.
    static func isLive(_ dir: RunDirectory) -> Bool {
        FileLock.isHeld(dir.lock) || RunInfo.load(dir, withEvents: false).state == .starting
    }

    /// `baton wait [RUN]`: until the run ends; exits with the run's exit code.
    public static func wait(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let loop = EventLoop()
        while isLive(dir) {
            if !loop.sleep(0.1) { return ExitStatus.interrupted.rawValue }
        }
        return outcome(dir, json: json)
    }

    /// `baton prune --keep N / --older-than SECONDS`: deletes ended runs beyond the N newest
    /// and (or) older than the age. A live run is never deleted; an orphaned one only with `force`.
    public static func prune(root: String, keep: Int?, olderThan: Double?, force: Bool, dryRun: Bool, json: Bool) -> Int32 {
        guard keep != nil || olderThan != nil else { return fail("prune needs --keep N or --older-than AGE", json: json) }
        let store = RunStore(root: root)
        var pruned: [RunInfo] = [], skipped: [(RunInfo, String)] = []
        for (i, id) in store.ids().enumerated() {
            if let keep, i < keep { continue }
            let info = RunInfo.load(store.directory(id), withEvents: false)
            if let age = olderThan, Clock.now() - (info.endedAt ?? info.startedAt ?? Clock.now()) < age { continue }
            if info.isLive { skipped.append((info, "live")); continue }
            if info.state == .orphaned && !force { skipped.append((info, "orphaned (--force deletes it)")); continue }
            if !dryRun {
                do { try store.remove(id) } catch { skipped.append((info, "\(error)")); continue }
            }
            pruned.append(info)
        }
        if json {
            out(JSON.object([("pruned", .array(pruned.map { .object([("run", .string($0.id)), ("state", .string($0.state.rawValue))]) })),
                             ("skipped", .array(skipped.map { .object([("run", .string($0.0.id)), ("state", .string($0.0.state.rawValue)),
                                                                       ("reason", .string($0.1))]) })),
                             ("dry_run", .bool(dryRun))]).encoded(pretty: true))
        } else {
            for p in pruned { out("\(dryRun ? "would prune" : "pruned") \(p.id) (\(p.state.rawValue))") }
            for (s, why) in skipped { out("kept \(s.id): \(why)") }
            if pruned.isEmpty && skipped.isEmpty { out("nothing to prune in \(root)") }
        }
        return ExitStatus.success.rawValue
    }

    /// `baton log`; with `follow`, until the run ends, then its outcome and exit code.
    public static func log(root: String, ref: String?, follow: Bool, stage: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        if let stage { return stageLog(dir, stage: stage, follow: follow, json: json) }
        var journal = JournalFollower(path: dir.journal)
        let loop = EventLoop()
        while true {
            let contents = journal.next()
            for e in contents.events {
                if json { Console.write(1, bytes: e.encoded() + [10]) } else { out(Render.event(e)) }
            }
            for c in contents.corrupt { diag("baton: journal line (after byte \(journal.offset)) \(c.line): \(c.message)") }
            if !follow || journal.sawFinal { break }
            if !isLive(dir) {
                // The runner is gone: read what is left once more, then stop.
                if !journal.hasMore { break }
                continue
            }
            if !loop.sleep(0.1) { return ExitStatus.interrupted.rawValue }
        }
        return follow ? outcome(dir, json: json) : ExitStatus.success.rawValue
    }

    static func stageLog(_ dir: RunDirectory, stage: String, follow: Bool, json: Bool) -> Int32 {
        let history = RunHistory(((try? JournalReader.read(dir.journal)) ?? JournalContents()).events)
        let logs = history.attempts(of: stage)
        if logs.isEmpty {
            let known = history.stageIDs
            return fail("run \(dir.id) has no stage '\(stage)'" + (known.isEmpty ? "" : "; its stages: " + known.joined(separator: ", ")), json: json)
        }
        if json {
            out(JSON.array(logs.map { l in JSON.object([("id", .string(l.key.id)), ("occurrence", .int(Int64(l.key.occurrence))),
                                                        ("attempt", .int(Int64(l.attempt))),
                                                        ("stdout", .string((try? FileIO.readString(l.logs.stdout)) ?? "")),
                                                        ("stderr", .string((try? FileIO.readString(l.logs.stderr)) ?? ""))]) })
                    .encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        // On a terminal a stage's output is shown with its control characters escaped;
        // into a pipe or a file it is copied byte for byte.
        let tty = isatty(1) != 0
        func copy(_ bytes: [UInt8]) {
            Console.write(1, bytes: tty ? Array(SafeText.lines(String(decoding: bytes, as: UTF8.self)).utf8) : bytes)
        }
        for (i, l) in logs.enumerated() {
            if logs.count > 1 { out(SafeText.line("==> \(l.key) attempt \(l.attempt) (\(l.logs.stdout)) <==")) }
            let isLast = i == logs.count - 1
            if isLast && follow {
                if !followFile(l.logs.stdout, dir: dir) { return ExitStatus.interrupted.rawValue }
                continue
            }
            if let s = try? FileIO.readFile(l.logs.stdout) { copy(s) }
            if let e = try? FileIO.readFile(l.logs.stderr), !e.isEmpty {
                out("--- stderr ---")
                copy(e)
            }
        }
        return follow ? outcome(dir, json: false) : ExitStatus.success.rawValue
    }

    /// Prints the file as it grows until the run's runner is gone; false when interrupted.
    static func followFile(_ path: String, dir: RunDirectory) -> Bool {
        var offset = 0
        let loop = EventLoop()
        while true {
            if let b = try? FileIO.readFile(path), b.count > offset {
                let more = Array(b[offset...])
                Console.write(1, bytes: isatty(1) != 0 ? Array(SafeText.lines(String(decoding: more, as: UTF8.self)).utf8) : more)
                offset = b.count
            } else if !FileLock.isHeld(dir.lock) {
                return true
            }
            if !loop.sleep(0.1) { return false }
        }
    }

    public static func cancel(root: String, ref: String?, json: Bool) -> Int32 {
        let dir: RunDirectory
        if ref == nil {
            // No RUN: the newest live run (never the interactive shell's), else the newest
            // orphaned one (to finish it), said by name.
            let store = RunStore(root: root)
            var orphan: RunDirectory? = nil
            var live: RunDirectory? = nil
            for d in store.ids().lazy.map(store.directory) where !d.isShellRun {
                let state = RunInfo.load(d, withEvents: false).state
                if state == .running || state == .starting { live = d; break }
                if state == .orphaned, orphan == nil { orphan = d }
            }
            guard let pick = live ?? orphan else {
                return fail("no live run (and no orphaned one) to cancel in \(root)", json: json, code: .failure)
            }
            diag("cancelling run \(pick.id): the newest \(live != nil ? "live" : "orphaned") run")
            dir = pick
        } else {
            guard let d = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
            dir = d
        }
        func ended(_ pids: [pid_t]) {
            if !pids.isEmpty { diag("ended \(pids.count) process\(pids.count == 1 ? "" : "es") left by the run: \(pids.map(String.init).joined(separator: ", "))") }
        }
        do {
            switch try Recovery.cancel(dir, interrupted: { baton_signal_pending() != 0 },
                                       signalled: { diag("cancelling run \(dir.id): SIGTERM to runner pid \($0)") }) {
            case let .stopped(pid): diag("cancelled run \(dir.id): its runner (pid \(pid)) ended its stages")
            case let .killed(pid, pids):
                diag("baton: run \(dir.id)'s runner (pid \(pid)) did not stop within 120s and was killed")
                ended(pids)
            case let .finishedOrphan(pids): ended(pids)
            case let .alreadyEnded(state): diag("run \(dir.id) already ended: \(state.rawValue)")
            case let .stoppedWaiting(pid):
                return fail("stopped waiting; run \(dir.id) (runner pid \(pid)) is still ending its stages (see 'baton status \(dir.id)')",
                            json: json, code: .interrupted)
            case .runnerUnknown:
                return fail("run \(dir.id) is live but its runner's pid is unknown", json: json, code: .failure)
            case let .notPermitted(pid):
                return fail("cannot cancel run \(dir.id): signalling its runner (pid \(pid)) is not permitted (EPERM: it runs as another user); nothing was done",
                            json: json, code: .failure)
            }
        } catch {
            return fail("cannot finish run \(dir.id): \(error)", json: json, code: .failure)
        }
        let after = RunInfo.load(dir, withEvents: false)
        if json { out(after.json.encoded(pretty: true)) } else { out("run \(dir.id) \(after.state.rawValue)") }
        return ExitStatus.success.rawValue
    }

    public static func resume(root: String, ref: String?, json: Bool, sync: SyncPolicy = RunOptions.defaultSync, stream: Bool = false,
                              budget: (seconds: Double, text: String)? = nil, exitWhenDone: Bool = false) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let contents = (try? JournalReader.read(dir.journal)) ?? JournalContents()
        let history = RunHistory(contents.events)
        guard let start = history.latestStart?.began else {
            return fail("run \(dir.id) has no run_started event: nothing to resume", json: json)
        }
        if FileIO.isDirectory(start.cwd), !FileIO.changeDirectory(start.cwd) {
            diag("baton: cannot enter \(start.cwd)")
        }
        var o = RunOptions(recipe: start.recipe, runsDir: root)
        o.words = start.args
        o.json = json
        o.stream = stream
        o.sync = sync
        o.budget = budget
        o.exitWhenDone = exitWhenDone
        return RecipeRunner.resume(dir: dir, options: o, read: (contents, history))
    }

    /// `baton check`: findings as `file:line:column: message [code]` on stderr, or with
    /// `--json` `{recipe, ok, findings: [{file, line, column, code, message}], errors}`; exit 3 when any.
    public static func check(recipe: String, json: Bool) -> Int32 {
        let report = RecipeCheck.check(recipe)
        if json {
            out(JSON.object([("recipe", .string(recipe)), ("ok", .bool(report.ok)),
                             ("findings", .array(report.findings.map(\.json))),
                             ("errors", .array(report.findings.map { .string($0.text) }))]).encoded(pretty: true))
        } else {
            for f in report.findings { diag(f.text) }
            if report.ok { out("\(recipe): ok") }
        }
        return report.ok ? ExitStatus.success.rawValue : ExitStatus.usage.rawValue
    }
}

/// `baton run --detach`: the run in its own session, its output in run.out.
public enum Detach {
    public static func start(options o: RunOptions) -> Int32 {
        // A missing recipe or a syntax error is said now, not found later in run.out.
        if let problem = RecipeRunner.loadProblem(o.recipe) { return Console.error(problem, json: o.json) }
        let store = RunStore(root: o.runsDir)
        let dir: RunDirectory
        do { dir = try store.create(id: o.runID) } catch { return Console.error("\(error)", json: o.json) }
        let outFD = open(dir.outFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard outFD >= 0 else { return Console.error("cannot create \(dir.outFile)", json: o.json) }
        defer { close(outFD) }
        var args = [FileIO.selfExecutable(), "run", "--existing-run", dir.id, "--runs-dir", o.runsDir]
        if o.dryRun { args.append("--dry-run") }
        if o.json { args.append("--json") }
        if o.stream { args.append("--stream") }
        args += ["--sync", o.sync.rawValue]
        if let b = o.budget { args += ["--budget", b.text] }
        args.append(o.recipe)
        args.append(contentsOf: o.words)
        do {
            let pid = try Spawner.spawn(argv: args, env: Spawner.currentEnvironment(), cwd: nil, stdin: -1,
                                        stdout: outFD, stderr: outFD, newSession: true, dieWithParent: false)
            try FileIO.writeAtomically(dir.pidFile, Array("\(pid)\n".utf8))
        } catch {
            try? store.remove(dir.id)
            return Console.error("cannot start the detached runner: \(error)", json: o.json)
        }
        if o.json {
            out(JSON.object([("run", .string(dir.id)), ("dir", .string(dir.path))]).encoded())
        } else {
            out(dir.id)
            out(dir.path)
        }
        return ExitStatus.success.rawValue
    }
}
