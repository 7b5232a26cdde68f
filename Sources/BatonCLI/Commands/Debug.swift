import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonLine
import Glibc

struct DebugCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug",
        abstract: "Replay a run's recipe against its journal (nothing runs) and open a prompt in its frame: at --at "
            + "ID, at the failing call, or at the end.",
        discussion: """
            Every primitive returns what the journal recorded, in order; no stage, command or \
            file write happens. The replay uses the recipe text the run ran (kept in its run \
            directory) and says when the file on disk differs. At the prompt: Lua in the \
            recipe's frame (its locals as they were), :next, :continue, :where, :stages.
            """)
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @Option(name: .customLong("at"),
            help: ArgumentHelp("Stop before the runStage call whose id matches (a glob).", valueName: "ID"))
    var at: String?
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Debugging.main(root: root, ref: ref, at: at)) }
}

/// `baton debug` and the shell's `:debug`: the replay debugger's command line side.
enum Debugging {
    /// Where the prompt's lines come from: the terminal (libedit) or piped stdin.
    final class Lines {
        let tty: Bool
        var piped: [String] = []
        init(tty: Bool) {
            self.tty = tty
            if !tty {
                let text = String(decoding: (try? FileIO.readFile("/dev/stdin")) ?? [], as: UTF8.self)
                piped = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).reversed()
            }
        }
        func next(_ prompt: String) -> String? {
            if !tty { return piped.popLast() }
            guard let raw = baton_line_read(prompt) else { return nil }
            defer { free(raw) }
            return String(cString: raw)
        }
    }

    static func main(root: String, ref: String?, at: String?) -> Int32 {
        let tty = isatty(0) != 0
        if tty { baton_line_init("baton", nil) }
        return run(root: FileIO.absolute(root), ref: ref, at: at, lines: Lines(tty: tty))
    }

    static func run(root: String, ref: String?, at: String?, lines: Lines) -> Int32 {
        guard let dir = Commands.resolve(root, ref, json: false) else { return ExitStatus.usage.rawValue }
        let info = RunInfo.load(dir)
        if info.isLive {
            diag("baton: run \(dir.id) is live: 'baton attach \(dir.id)' looks inside it; baton debug replays a run "
                 + "that has ended")
            return ExitStatus.failure.rawValue
        }
        guard let start = info.history.latestStart?.began else {
            diag("baton: run \(dir.id) has no run_started in its journal: nothing to replay")
            return ExitStatus.failure.rawValue
        }
        let cwd = FileIO.currentDirectory()
        defer { _ = FileIO.changeDirectory(cwd) }
        if FileIO.isDirectory(start.cwd) { _ = FileIO.changeDirectory(start.cwd) }
        let onDisk = try? FileIO.readFile(start.recipe)
        let text: [UInt8]
        if let kept = try? FileIO.readFile(dir.recipeCopy) {
            text = kept
            if onDisk == nil {
                diag("note: \(start.recipe) is no longer on disk; the replay uses the text the run ran "
                     + "(\(dir.recipeCopy))")
            } else if onDisk! != kept {
                diag("note: \(start.recipe) has changed since the run; the replay uses the text the run ran "
                     + "(\(dir.recipeCopy))")
            }
        } else if let disk = onDisk {
            text = disk
            diag("note: the run kept no copy of its recipe; replaying \(start.recipe) as it is on disk now"
                 + (SHA256.hex(disk) == start.recipeSHA256 ? " (the same text it ran)" : ", which is NOT the text "
                    + "it ran"))
        } else {
            diag("baton: run \(dir.id) kept no copy of its recipe and \(start.recipe) is gone: nothing to replay")
            return ExitStatus.failure.rawValue
        }
        let r = Replayer(dir: dir, history: info.history, events: info.events)
        r.stopAt = at
        var failures = 0
        r.onStop = { [unowned r] _ in
            let session = AttachSession(dir: dir)
            session.local = { [unowned r] in r.request($0) }
            session.leaveOnResume = true
            session.promptName = "debug \(dir.id)"
            if let g = r.request(.object([("op", .string(ControlOp.hello.rawValue))]))["text"]?.stringValue {
                Console.out(SafeText.lines(g))
            }
            while true {
                guard let line = lines.next(session.prompt) else { r.quit = true; break }
                if !session.handle(line) {
                    if !r.goesOn { r.quit = true }
                    break
                }
            }
            failures += session.failures
        }
        diag("replaying run \(dir.id) (\(start.recipe)) against its journal: nothing runs")
        let ending = Replayer.run(r, recipe: start.recipe, text: text, args: start.args, modulesDir: dir.modulesDir)
        if let a = at, !r.atMatched { diag("note: the replay reached no runStage call matching --at \(a)") }
        if r.quit {
            diag("replay of run \(dir.id) left")
        } else if let why = r.endedBy {
            diag("replay of run \(dir.id) ended: \(SafeText.line(why))")
        } else {
            let how = ending.status == .succeeded
                ? "returned" : "ended \(ending.status.rawValue): \(SafeText.line(ending.reason ?? ""))"
            diag("replay of run \(dir.id) ended: the recipe \(how)")
        }
        return failures == 0 ? ExitStatus.success.rawValue : ExitStatus.failure.rawValue
    }
}
