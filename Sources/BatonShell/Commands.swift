import BatonCore
import BatonLua
import CBatonSys
import Glibc

func out(_ s: String) { Console.out(s) }

/// `baton runs|status|log|cancel|resume|check`: each returns the exit code.
public enum Commands {
    static func resolve(_ root: String, _ ref: String?) -> RunDirectory? {
        do { return try RunStore(root: root).resolve(ref) } catch {
            diag("baton: \(error)")
            return nil
        }
    }

    public static func runs(root: String, json: Bool) -> Int32 {
        let store = RunStore(root: root)
        let infos = store.ids().map { RunInfo.load(store.directory($0), withEvents: false) }
        if json {
            out(JSON.array(infos.map(\.json)).encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        if infos.isEmpty { out("no runs in \(root)"); return ExitStatus.success.rawValue }
        out(Render.runsTable(infos))
        return ExitStatus.success.rawValue
    }

    public static func status(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref) else { return ExitStatus.usage.rawValue }
        let info = RunInfo.load(dir)
        if json { out(info.json.encoded(pretty: true)) } else { out(Render.status(info)) }
        return ExitStatus.success.rawValue
    }

    public static func log(root: String, ref: String?, follow: Bool, stage: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref) else { return ExitStatus.usage.rawValue }
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
            if !FileLock.isHeld(dir.lock), RunInfo.load(dir, withEvents: false).state != .starting {
                // The runner is gone: read what is left once more, then stop.
                if !journal.hasMore { break }
                continue
            }
            if !loop.sleep(0.1) { break }
        }
        return ExitStatus.success.rawValue
    }

    static func stageLog(_ dir: RunDirectory, stage: String, follow: Bool, json: Bool) -> Int32 {
        let history = RunHistory(((try? JournalReader.read(dir.journal)) ?? JournalContents()).events)
        let logs = history.attempts(of: stage)
        if logs.isEmpty {
            let known = history.stageIDs
            diag("baton: run \(dir.id) has no stage '\(stage)'" + (known.isEmpty ? "" : "; its stages: " + known.joined(separator: ", ")))
            return ExitStatus.usage.rawValue
        }
        if json {
            out(JSON.array(logs.map { l in JSON.object([("id", .string(l.key.id)), ("occurrence", .int(Int64(l.key.occurrence))),
                                                        ("attempt", .int(Int64(l.attempt))),
                                                        ("stdout", .string((try? FileIO.readString(l.logs.stdout)) ?? "")),
                                                        ("stderr", .string((try? FileIO.readString(l.logs.stderr)) ?? ""))]) })
                    .encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        for (i, l) in logs.enumerated() {
            if logs.count > 1 { out("==> \(l.key) attempt \(l.attempt) (\(l.logs.stdout)) <==") }
            let isLast = i == logs.count - 1
            if isLast && follow { followFile(l.logs.stdout, dir: dir); continue }
            if let s = try? FileIO.readFile(l.logs.stdout) { Console.write(1, bytes: s) }
            if let e = try? FileIO.readFile(l.logs.stderr), !e.isEmpty {
                out("--- stderr ---")
                Console.write(1, bytes: e)
            }
        }
        return ExitStatus.success.rawValue
    }

    static func followFile(_ path: String, dir: RunDirectory) {
        var offset = 0
        let loop = EventLoop()
        while true {
            if let b = try? FileIO.readFile(path), b.count > offset {
                Console.write(1, bytes: Array(b[offset...]))
                offset = b.count
            } else if !FileLock.isHeld(dir.lock) {
                break
            }
            if !loop.sleep(0.1) { break }
        }
    }

    public static func cancel(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref) else { return ExitStatus.usage.rawValue }
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
                diag("baton: stopped waiting; run \(dir.id) (runner pid \(pid)) is still ending its stages (see 'baton status \(dir.id)')")
                return ExitStatus.interrupted.rawValue
            case .runnerUnknown:
                diag("baton: run \(dir.id) is live but its runner's pid is unknown")
                return ExitStatus.failure.rawValue
            }
        } catch {
            diag("baton: cannot finish run \(dir.id): \(error)")
            return ExitStatus.failure.rawValue
        }
        let after = RunInfo.load(dir, withEvents: false)
        if json { out(after.json.encoded(pretty: true)) } else { out("run \(dir.id) \(after.state.rawValue)") }
        return ExitStatus.success.rawValue
    }

    public static func resume(root: String, ref: String?, json: Bool, sync: SyncPolicy = RunOptions.defaultSync) -> Int32 {
        guard let dir = resolve(root, ref) else { return ExitStatus.usage.rawValue }
        let history = RunHistory(((try? JournalReader.read(dir.journal)) ?? JournalContents()).events)
        guard let start = history.latestStart?.began else {
            diag("baton: run \(dir.id) has no run_started event: nothing to resume")
            return ExitStatus.usage.rawValue
        }
        if FileIO.isDirectory(start.cwd), chdir(start.cwd) != 0 {
            diag("baton: cannot enter \(start.cwd)")
        }
        var o = RunOptions(recipe: start.recipe, runsDir: root)
        o.words = start.args
        o.json = json
        o.sync = sync
        return RecipeRunner.resume(dir: dir, options: o)
    }

    public static func check(recipe: String, json: Bool) -> Int32 {
        let report = RecipeCheck.check(recipe)
        if json {
            out(JSON.object([("recipe", .string(recipe)), ("ok", .bool(report.ok)),
                             ("errors", .array(report.errors.map(JSON.string))),
                             ("warnings", .array(report.warnings.map(JSON.string)))]).encoded(pretty: true))
        } else {
            for e in report.errors { diag("error: \(e)") }
            for w in report.warnings { diag("warning: \(w)") }
            if report.ok { out("\(recipe): ok") }
        }
        return report.ok ? ExitStatus.success.rawValue : ExitStatus.usage.rawValue
    }
}

/// `baton run --detach`: the run in its own session, its output in run.out.
public enum Detach {
    public static func start(options o: RunOptions) -> Int32 {
        let store = RunStore(root: o.runsDir)
        let dir: RunDirectory
        do { dir = try store.create(id: o.runID) } catch { diag("baton: \(error)"); return ExitStatus.usage.rawValue }
        let outFD = open(dir.outFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard outFD >= 0 else { diag("baton: cannot create \(dir.outFile)"); return ExitStatus.usage.rawValue }
        defer { close(outFD) }
        var args = [FileIO.selfExecutable(), "run", "--existing-run", dir.id, "--runs-dir", o.runsDir]
        if o.dryRun { args.append("--dry-run") }
        if o.json { args.append("--json") }
        args += ["--sync", o.sync.rawValue]
        if let b = o.budget { args += ["--budget", b.text] }
        args.append(o.recipe)
        args.append(contentsOf: o.words)
        do {
            let pid = try Spawner.spawn(argv: args, env: Spawner.currentEnvironment(), cwd: nil, stdin: -1,
                                        stdout: outFD, stderr: outFD, newSession: true, dieWithParent: false)
            try FileIO.writeAtomically(dir.pidFile, Array("\(pid)\n".utf8))
        } catch {
            diag("baton: cannot start the detached runner: \(error)")
            return ExitStatus.usage.rawValue
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
