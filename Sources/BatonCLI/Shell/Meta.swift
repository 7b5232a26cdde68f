import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc
import LuaKit
import LuaShim

/// The shell's own commands: a line that starts with ':'.
enum MetaCommand {
    static let help: [(name: String, args: String, text: String)] = [
        (":help", "[COMMAND]", "this list"),
        (":runs", "", "the runs in this directory, newest first"),
        (":status", "[RUN]", "one run: state, current stage, liveness (default: the attached run, or latest)"),
        (":attach",
         "[RUN]",
         "a live run: run lines inside it (:detach leaves); otherwise set `run` to its state (stages, events, final)"),
        (":tail", "[-f] RUN [STAGE]", "the run's last events, or a stage's latest output; -f follows until Ctrl-C"),
        (":report", "[RUN]", "write the run's HTML report (default: the attached run, or latest) and print its path"),
        (":cancel", "RUN", "stop a live run, or finish an orphaned one"),
        (":resume", "RUN", "continue a run here, replaying what passed (Ctrl-C stops it)"),
        (":load", "RECIPE [ARGS]", "run a recipe file in this shell; its stages journal into the shell's run"),
        (":debug",
         "RUN [--at ID]",
         "replay a run's recipe against its journal (nothing runs), a prompt in its frame (as baton debug)"),
        (":quit", "", "leave (also Ctrl-D); history is saved"),
    ]
    static let names = help.map(\.name)
    static let aliases = [":q": ":quit", ":exit": ":quit", ":h": ":help", ":?": ":help", ":ls": ":runs",
                          ":a": ":attach"]

    static func canonical(_ word: String) -> String { aliases[word] ?? word }

    static func helpText(_ topic: String? = nil) -> String {
        if let t = topic {
            let name = canonical(t.hasPrefix(":") ? t : ":" + t)
            guard let h = help.first(where: { $0.name == name }) else { return "no command \(t); :help lists them" }
            return "\(h.name) \(h.args)\n  \(h.text)"
        }
        let width = help.map { $0.name.count + $0.args.count + 1 }.max() ?? 0
        var lines = ["Lua: type an expression to see its value, or statements; an unfinished chunk goes on at >>.",
                     "The primitives (runStage, preflight, watch, gate, persistFinal) and baton.* work here; each",
                     "call is journaled in the shell's own run (recipe \(RunBegan.shellRecipe)), created on first use.",
                     "Tab completes names, table fields (baton.fs.<Tab>), commands, run ids and paths.",
                     "Ctrl-C stops the running code or stage; Ctrl-D leaves.", "", "Commands:"]
        for h in help {
            let left = h.args.isEmpty ? h.name : "\(h.name) \(h.args)"
            lines.append("  " + left + String(repeating: " ", count: max(1, width - left.count + 2)) + h.text)
        }
        lines.append("RUN is a run id, a unique prefix of one, or 'latest'.")
        return lines.joined(separator: "\n")
    }
}

extension Interactive {
    func meta(_ line: String) {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard let first = words.first else { return }
        let command = MetaCommand.canonical(first)
        let args = Array(words.dropFirst())
        switch command {
        case ":help":
            say(MetaCommand.helpText(args.first))
        case ":quit":
            leaving = 0
        case ":runs":
            _ = Commands.runs(root: root, json: false)
        case ":status":
            guard let dir = find(args.first ?? attached) else { return }
            RunView(dir).status()
        case ":attach":
            attach(args.first ?? attached)
        case ":tail":
            tail(args)
        case ":report":
            guard let dir = find(args.first ?? attached) else { return }
            do { for p in try Commands.writeReport(dir, html: nil, trace: nil, tsv: nil) { say(p) } } catch {
                err("baton: cannot write the report: \(error)")
            }
        case ":cancel":
            guard let dir = resolve(args.first ?? attached, command) else { return }
            _ = Commands.cancel(root: root, ref: dir.id, json: false)
        case ":resume":
            guard let dir = resolve(args.first ?? attached, command) else { return }
            let code = Commands.resume(root: root, ref: dir.id, json: false)
            FileIO.changeDirectory(cwd)
            if code != 0 { err("(resume ended with exit code \(code))") }
        case ":load":
            load(args)
        case ":debug":
            guard let dir = find(args.first.flatMap { $0.hasPrefix("--") ? nil : $0 } ?? attached) else { return }
            let at = args.firstIndex(of: "--at").flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil }
            let code = Debugging.run(root: root, ref: dir.id, at: at, lines: Debugging.Lines(tty: true))
            FileIO.changeDirectory(cwd)
            if code != 0 { err("(debug ended with exit code \(code))") }
        default:
            err("unknown command \(first); :help lists them")
        }
    }

    /// A run by reference. In the shell, `latest` (and no reference at all) means the
    /// newest run that is not a shell's own: the one a person came to look at.
    func find(_ ref: String?) -> RunDirectory? {
        let store = RunStore(root: root)
        if ref == nil || ref == "latest" {
            let ids = store.ids().filter { $0 != env.context?.dir.id }   // newest first
            // (RunDirectory.isShellRun: the same rule RunStore.resolve applies to 'latest')
            if let id = ids.first(where: { !store.directory($0).isShellRun }) ?? ids.first {
                return store.directory(id)
            }
            if let own = env.context?.dir.id {
                // 'latest' never means the shell's own run: say so rather than "no runs".
                err("baton: no runs in \(root) but this shell's own, which 'latest' never means: name it (:status "
                    + "\(own))")
            } else {
                err("baton: no runs in \(root)")
            }
            return nil
        }
        do { return try store.resolve(ref) } catch {
            err("baton: \(error)")
            return nil
        }
    }

    /// A run by reference; refuses the shell's own run where that makes no sense.
    func resolve(_ ref: String?, _ command: String) -> RunDirectory? {
        guard let ref else {
            err("which run? \(command) RUN (:runs lists them)")
            return nil
        }
        guard let dir = find(ref) else { return nil }
        if dir.id == env.context?.dir.id {
            err("run \(dir.id) is this shell's own run; :quit ends it")
            return nil
        }
        return dir
    }

    func attach(_ ref: String?, fromCommandLine: Bool = false) {
        guard let dir = find(ref) else { return }
        let info = RunInfo.load(dir)
        if info.isLive, dir.id != env.context?.dir.id {
            // A live run: its control socket, so lines run inside it.
            var why: String?
            if let session = AttachSession.connect(dir, why: &why) {
                session.leaveOnResume = leaveOnResume
                remote = session
                attached = dir.id
                say(session.greeting)
                say("lines run inside the run (its globals, and the locals of the frame it is blocked in); :help "
                    + "for commands, :detach leaves it running")
                return
            }
            say("run \(dir.id) is live but cannot be attached (\(why ?? "?")): this is its journal view")
        } else if fromCommandLine {
            say("run \(dir.id) is not live (\(Render.stateText(info))): this is its journal view (as the shell's "
                + ":attach)")
        }
        attached = dir.id
        let state = RunState.json(info)
        lua.push(json: state)
        lua.setGlobal("run")
        // Named metatables, so the value printer lists their important fields first.
        try? lua.run("""
            local mt = {__name = "baton.run_stage"}
            for _, s in ipairs(run.stages) do setmetatable(s, mt) end
            setmetatable(run, {__name = "baton.run_state"})
            """, name: "=baton.attach")
        RunView(dir).status(info)
        let stages = state["stages"]?.arrayValue?.count ?? 0
        var hint = "run = its state: run.stages (\(stages)), run.events (\(info.events.count)), run.final"
        if info.isLive { hint += ", run.current; :attach again to refresh" }
        say(hint)
    }

    /// `:tail [-f] RUN [STAGE]`: the run's last events, or the end of a stage's latest
    /// attempt; as `baton log [--stage]` shows them (one RunView), followed with -f.
    func tail(_ args: [String]) {
        var rest = args
        let follow = rest.first == "-f"
        if follow { rest.removeFirst() }
        guard let dir = find(rest.first ?? attached) else { return }
        if rest.count > 1 {
            _ = RunView(dir).stage(rest[1], .latest(lines: RunView.tailLines), follow: follow, loop: env.loop)
        } else {
            _ = RunView(dir).events(last: RunView.tailEvents, follow: follow, json: false, loop: env.loop)
        }
    }

    func load(_ args: [String]) {
        guard let path = args.first else { err("usage: :load RECIPE [ARGS]"); return }
        let words = Array(args.dropFirst())
        let text: [UInt8]
        do { text = try FileIO.readFile(path) } catch {
            err("baton: cannot read \(path): \(error)")
            return
        }
        env.setArguments(recipe: path, words: words)
        env.setRequirePaths(recipeDir: FileIO.dirname(FileIO.absolute(path)))
        do { try lua.load(text, name: "@" + path) } catch let e as LuaCallError {
            lua.unref(e.ref)
            err(e.message)
            return
        } catch {
            err("\(error)")
            return
        }
        for w in words { lua.push(w) }
        execute(nargs: Int32(words.count))
    }
}
