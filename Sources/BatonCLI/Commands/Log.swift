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
    @Flag(name: [.long, .customShort("f")],
          help: "Follow the journal until the run ends, then say how it ended.") var follow = false
    @Option(help: ArgumentHelp("Show this stage's stdout and stderr (every attempt).",
                               valueName: "ID")) var stage: String?
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
            for c in contents.corrupt {
                diag("baton: journal line (after byte \(journal.offset)) \(c.line): \(c.message)")
            }
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
            return fail("run \(dir.id) has no stage '\(stage)'"
                        + (known.isEmpty ? "" : "; its stages: " + known.joined(separator: ", ")),
                        json: json)
        }
        if json {
            // Streamed, one chunk at a time: a 200 MB log is never held whole (nor its JSON text).
            Console.write(1, bytes: Array("[\n".utf8))
            for (i, l) in logs.enumerated() {
                var head = "  {\n    \"id\": " + JSON.string(l.key.id).encoded()
                    + ",\n    \"occurrence\": \(l.key.occurrence),\n"
                head += "    \"attempt\": \(l.attempt),\n    \"life\": \(l.life),\n    \"stdout\": \""
                Console.write(1, bytes: Array(head.utf8))
                streamFile(l.logs.stdout) {
                    Console.write(1, bytes: Array(JSON.string($0).encoded().utf8.dropFirst().dropLast()))
                }
                Console.write(1, bytes: Array("\",\n    \"stderr\": \"".utf8))
                streamFile(l.logs.stderr) {
                    Console.write(1, bytes: Array(JSON.string($0).encoded().utf8.dropFirst().dropLast()))
                }
                Console.write(1, bytes: Array(("\"\n  }" + (i == logs.count - 1 ? "\n" : ",\n")).utf8))
            }
            Console.write(1, bytes: Array("]\n".utf8))
            return ExitStatus.success.rawValue
        }
        // On a terminal a stage's output is shown with its control characters escaped;
        // into a pipe or a file it is copied byte for byte. Either way in chunks: a log of
        // any size streams in bounded memory.
        let tty = isatty(1) != 0
        func copy(_ path: String) -> Int {
            if tty { return streamFile(path) { Console.write(1, bytes: Array(SafeText.lines($0).utf8)) } }
            return streamBytes(path) { Console.write(1, bytes: $0) }
        }
        // After a resume, each attempt says which life of the run it belongs to.
        let resumed = logs.contains { $0.life > 1 }
        for (i, l) in logs.enumerated() {
            if logs.count > 1 || resumed {
                out(SafeText.line("==> \(l.key) attempt \(l.attempt)\(resumed ? ", " + l.lifeName : "") "
                        + "(\(l.logs.stdout)) <=="))
            }
            let isLast = i == logs.count - 1
            if isLast && follow {
                if !followFile(l.logs.stdout, dir: dir) { return ExitStatus.interrupted.rawValue }
                continue
            }
            _ = copy(l.logs.stdout)
            if (FileIO.size(l.logs.stderr) ?? 0) > 0 {
                out("--- stderr ---")
                _ = copy(l.logs.stderr)
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
        let tty = isatty(1) != 0
        while true {
            let got = tty ? streamFile(path, from: offset) { Console.write(1, bytes: Array(SafeText.lines($0).utf8)) }
                : streamBytes(path, from: offset) { Console.write(1, bytes: $0) }
            if got > 0 {
                offset += got
            } else if !FileLock.isHeld(dir.lock) {
                return true
            }
            if !loop.sleep(0.1) { return false }
        }
    }

    /// The bytes of `path` from `offset` on, handed over in chunks of 256 KiB (never the
    /// whole file at once); returns how many. A file that cannot be opened has none.
    @discardableResult
    static func streamBytes(_ path: String, from offset: Int = 0, _ chunk: ([UInt8]) -> Void) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: 256 << 10)
        var at = off_t(offset), total = 0
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, at) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            chunk(Array(buf[0..<n]))
            at += off_t(n)
            total += n
        }
        return total
    }

    /// As streamBytes, as text: a UTF-8 sequence cut by a chunk's end waits for the next
    /// chunk (so no character is broken in two); bytes that are not UTF-8 become U+FFFD.
    /// Returns the bytes read.
    @discardableResult
    static func streamFile(_ path: String, from offset: Int = 0, _ text: (String) -> Void) -> Int {
        var carry: [UInt8] = []
        let total = streamBytes(path, from: offset) { bytes in
            var b = carry + bytes
            carry = []
            // the start of the last sequence, if it may be incomplete
            var i = b.count - 1, back = 0
            while i >= 0, back < 3, b[i] & 0xC0 == 0x80 { i -= 1; back += 1 }
            if i >= 0, b[i] >= 0xC0 {
                let need = b[i] >= 0xF0 ? 4 : b[i] >= 0xE0 ? 3 : 2
                if b.count - i < need { carry = Array(b[i...]); b.removeSubrange(i...) }
            }
            if !b.isEmpty { text(String(decoding: b, as: UTF8.self)) }
        }
        if !carry.isEmpty { text(String(decoding: carry, as: UTF8.self)) }
        return total
    }
}

