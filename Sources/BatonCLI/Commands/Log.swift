import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct LogCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "log", abstract: "A run's journal as lines, or a stage's output.")
    @OptionGroup var args: RunArguments
    @Flag(name: [.long, .customShort("f")], help: "Follow the journal until the run ends, then say how it ended.") var follow = false
    @Option(help: ArgumentHelp("Show this stage's stdout and stderr (every attempt).", valueName: "ID")) var stage: String?
    @Flag(help: "Why each stage call replayed or ran, for each resume (with --stage: that stage's).") var why = false
    var globals: Globals { args.globals }

    mutating func run() throws {
        if why { Glibc.exit(Commands.why(root: root, ref: args.ref, stage: stage, json: args.json.json)) }
        Glibc.exit(Commands.log(root: root, ref: args.ref, follow: follow, stage: stage, json: args.json.json))
    }
}

extension Commands {
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
        guard follow else { return ExitStatus.success.rawValue }
        // The `final` event is journaled just before final.json is written and the lock let
        // go: the outcome is read once the runner is done (a follower under load read the
        // run as still running and exited 1).
        while isLive(dir) {
            if !loop.sleep(0.05) { return ExitStatus.interrupted.rawValue }
        }
        return outcome(dir, json: json)
    }
}

extension Commands {
    static func stageLog(_ dir: RunDirectory, stage: String, follow: Bool, json: Bool) -> Int32 {
        let history = dir.readHistory().history
        let logs = history.attempts(of: stage)
        if logs.isEmpty {
            let known = history.stageIDs
            return fail("run \(dir.id) has no stage '\(stage)'" + (known.isEmpty ? "" : "; its stages: " + known.joined(separator: ", ")), json: json)
        }
        if json {
            out(JSON.array(logs.map { l in JSON.object([("id", .string(l.key.id)), ("occurrence", .int(Int64(l.key.occurrence))),
                                                        ("attempt", .int(Int64(l.attempt))), ("life", .int(Int64(l.life))),
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
        // After a resume, each attempt says which life of the run it belongs to.
        let resumed = logs.contains { $0.life > 1 }
        for (i, l) in logs.enumerated() {
            if logs.count > 1 || resumed {
                out(SafeText.line("==> \(l.key) attempt \(l.attempt)\(resumed ? ", " + l.lifeName : "") (\(l.logs.stdout)) <=="))
            }
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
}

extension Commands {
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
}

