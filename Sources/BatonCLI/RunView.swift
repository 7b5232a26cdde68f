import BatonBase
import BatonCore
import Glibc

/// One run as people look at it: its status, its live view, its journal's events and a
/// stage's output, each shown once or followed until the run ends. The command line
/// (`baton status [--watch]`, `log [-f] [--stage]`, `wait`) and the shell (`:status`,
/// `:tail [-f]`, `:attach`, and attach's `:status`, `:tail`) all show a run through it, so
/// `log --stage X` and `:tail RUN X` are one code path (`ShellInteractiveTests` holds them
/// to the same text). `Render` formats; this type reads the run and decides what to show.
struct RunView {
    let dir: RunDirectory
    /// A stage's output is shown with its control characters escaped (on a terminal), or
    /// copied byte for byte (into a pipe or a file).
    let escape: Bool
    private let sink: ([UInt8]) -> Void

    /// The view on stdout; `escape` defaults to whether it is a terminal.
    init(_ dir: RunDirectory, escape: Bool? = nil) {
        self.init(dir, escape: escape ?? (isatty(1) != 0)) { Console.write(1, bytes: $0) }
    }

    /// The view writing into `sink`.
    init(_ dir: RunDirectory, escape: Bool, sink: @escaping ([UInt8]) -> Void) {
        self.dir = dir
        self.escape = escape
        self.sink = sink
    }

    func write(_ bytes: [UInt8]) { sink(bytes) }
    func say(_ line: String) { sink(Array(line.utf8) + [10]) }

    /// How much `:tail` shows: a stage's last lines, a run's last events.
    static let tailLines = 40
    static let tailEvents = 20

    /// What of a stage's output to show: every attempt whole (`log --stage`), or the latest
    /// attempt's last lines (`:tail`).
    enum Attempts: Equatable {
        case all
        case latest(lines: Int)
    }

    // MARK: status

    /// `status`, `:status`, attach's `:status`: the run's state, as text or `--json`.
    func status(json: Bool = false, _ info: RunInfo? = nil) {
        let info = info ?? RunInfo.load(dir, withEvents: false)   // (from the journal's snapshot when it has one)
        say(json ? info.json.encoded(pretty: true) : Render.status(info))
    }

    /// Whether the run's runner is (still) at work: it holds the lock, or a detached one
    /// has not taken it yet.
    var isLive: Bool {
        FileLock.isHeld(dir.lock) || RunInfo.load(dir, withEvents: false).state == .starting
    }

    /// How an ended run ended: a line (or with `--json` an object), and its exit code as
    /// the command's own. An orphaned run (its runner died) exits 1.
    func outcome(json: Bool) -> Int32 {
        let info = RunInfo.load(dir, withEvents: false)
        let code = info.exitCode.map(Int32.init) ?? ExitStatus.failure.rawValue
        if json {
            say(JSON.object([("run", .string(info.id)), ("state", .string(info.state.rawValue)),
                             ("exit_code", .int(Int64(code))),
                             ("reason", info.reason.map(JSON.string) ?? .null)]).encoded())
        } else {
            var line = "run \(info.id) \(info.state.rawValue) (exit \(code))"
            if info.state == .orphaned { line += ": its runner died without writing final.json" }
            else if let r = info.reason { line += ": \(r)" }
            say(SafeText.line(line))
        }
        return code
    }

    /// Waits on `loop` until the runner is done; false when interrupted.
    func untilEnded(_ loop: EventLoop, every: Double = 0.1) -> Bool {
        while isLive {
            if !loop.sleep(every) { return false }
        }
        return true
    }
}

// MARK: the live view

extension RunView {
    /// `status --watch`, `wait`: the live view of the run, drawn on `fd` (a terminal;
    /// otherwise drawn once) until the run ends, then erased, and the outcome said.
    /// Ctrl-C: 130.
    func watch(header: Bool, on fd: Int32 = 1, loop: EventLoop = EventLoop()) -> Int32 {
        let tty = isatty(fd) == 1 && getenv("TERM").map { String(cString: $0) } != "dumb"
        var shown = 0, frame = 0, drawnOnce = false
        while isLive {
            if tty || !drawnOnce {
                frame += 1
                let lines = liveLines(header: header, fd: tty ? fd : nil, frame: frame)
                Console.write(fd, (tty ? LiveView.erase(shown) : "") + lines.joined(separator: "\n"), newline: !tty)
                shown = lines.count
                drawnOnce = true
            }
            if !loop.sleep(0.25) {
                if tty { Console.write(fd, LiveView.erase(shown), newline: false) }
                return ExitStatus.interrupted.rawValue
            }
        }
        if tty { Console.write(fd, LiveView.erase(shown), newline: false) }
        return outcome(json: false)
    }

    /// The live view's lines: for the terminal `fd`, as wide and as many as it holds.
    func liveLines(header: Bool, fd: Int32?, frame: Int) -> [String] {
        let info = RunInfo.load(dir, withEvents: false)
        var lines: [String] = []
        if header {
            var h = "run \(info.id) \(info.state.rawValue)"
            if let p = info.runnerPid { h += " (runner pid \(p))" }
            if let d = info.duration { h += ", \(Clock.human(d))" }
            h += ", \(info.stageCount) stage\(info.stageCount == 1 ? "" : "s") finished"
            lines.append(h)
        }
        let view = LiveView.lines(info.history, width: fd.map(terminalColumns) ?? 200,
                                  room: fd.map(LiveView.room) ?? 50, frame: frame)
        return lines + (fd != nil ? view : view.map { String($0.dropFirst(2)) })   // (no spinner on paper)
    }
}

// MARK: the journal's events

extension RunView {
    /// `log [-f]`, `:tail [-f] RUN`: the journal's events (the last `last` of them, with a
    /// note of how many came before), then with `follow` each new one until the run ends,
    /// and its outcome. Returns the exit code (the run's, when followed).
    func events(last: Int? = nil, follow: Bool, json: Bool, loop: EventLoop = EventLoop()) -> Int32 {
        var journal = JournalFollower(path: dir.journal)
        var last = last
        while true {
            let contents = journal.next()
            var shown = contents.events[...]
            if let n = last {
                shown = shown.suffix(n)
                let earlier = contents.events.count - shown.count
                if earlier > 0 { say("... \(earlier) earlier event\(earlier == 1 ? "" : "s") (baton log \(dir.id))") }
                last = nil
            }
            for e in shown {
                if json { write(e.encoded() + [10]) } else { say(Render.event(e)) }
            }
            for c in contents.corrupt {
                diag("baton: journal line (after byte \(journal.offset)) \(c.line): \(c.message)")
            }
            if !follow || journal.sawFinal { break }
            if !isLive {
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
        guard untilEnded(loop, every: 0.05) else { return ExitStatus.interrupted.rawValue }
        return outcome(json: json)
    }
}

// MARK: a stage's output

extension RunView {
    /// `log --stage ID [-f]`, `:tail [-f] RUN ID`, attach's `:tail ID`: a stage's output,
    /// each attempt's stdout then its stderr; with `follow`, the last attempt's stdout as it
    /// grows until the run ends, then the run's outcome. A header names each attempt when
    /// the stage has more than one or the run was resumed (the same rule whatever is shown,
    /// so `:tail` is the end of what `log --stage` shows). Returns the exit code.
    func stage(_ id: String, _ which: Attempts = .all, follow: Bool = false, json: Bool = false,
               loop: EventLoop = EventLoop()) -> Int32 {
        let history = dir.readHistory().history
        let all = history.attempts(of: id)
        if all.isEmpty {
            let known = history.stageIDs
            return Console.error(SafeText.line("run \(dir.id) has no stage '\(id)'"
                + (known.isEmpty ? "" : "; its stages: " + known.joined(separator: ", "))), json: json)
        }
        let logs = which == .all ? all[...] : all.suffix(1)
        if json {
            stageJSON(Array(logs))
            return ExitStatus.success.rawValue
        }
        let lines: Int? = if case let .latest(n) = which { n } else { nil }
        // After a resume, each attempt says which life of the run it belongs to.
        let resumed = all.contains { $0.life > 1 }
        for (i, l) in logs.enumerated() {
            if all.count > 1 || resumed {
                let life = resumed ? ", " + l.lifeName : ""
                say(SafeText.line("==> \(l.key) attempt \(l.attempt)\(life) (\(l.logs.stdout)) <=="))
            }
            let from = lines.map { tailStart(l.logs.stdout, lines: $0) } ?? 0
            if i == logs.count - 1 && follow {
                if !followFile(l.logs.stdout, from: from, loop: loop) { return ExitStatus.interrupted.rawValue }
                continue
            }
            copy(l.logs.stdout, from: from)
            if (FileIO.size(l.logs.stderr) ?? 0) > 0 {
                say("--- stderr ---")
                copy(l.logs.stderr, from: lines.map { tailStart(l.logs.stderr, lines: $0) } ?? 0)
            }
        }
        return follow ? outcome(json: false) : ExitStatus.success.rawValue
    }

    /// `log --stage --json`: streamed, one chunk at a time (a 200 MB log is never held
    /// whole, nor its JSON text).
    func stageJSON(_ logs: [AttemptLog]) {
        func escaped(_ s: String) -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(s.utf8.count + s.utf8.count / 8 + 2)
            JSON.encodeString(s, into: &out)
            return Array(out[1..<(out.count - 1)])   // without its quotes
        }
        write(Array("[\n".utf8))
        for (i, l) in logs.enumerated() {
            var head = "  {\n    \"id\": " + JSON.string(l.key.id).encoded()
            head += ",\n    \"occurrence\": \(l.key.occurrence),\n"
            head += "    \"attempt\": \(l.attempt),\n    \"life\": \(l.life),\n    \"stdout\": \""
            write(Array(head.utf8))
            Self.streamText(l.logs.stdout) { write(escaped($0)) }
            write(Array("\",\n    \"stderr\": \"".utf8))
            Self.streamText(l.logs.stderr) { write(escaped($0)) }
            write(Array(("\"\n  }" + (i == logs.count - 1 ? "\n" : ",\n")).utf8))
        }
        write(Array("]\n".utf8))
    }

    /// The file from `offset` on, escaped or byte for byte, in chunks (a log of any size
    /// streams in bounded memory); returns how many bytes.
    @discardableResult
    func copy(_ path: String, from offset: Int = 0) -> Int {
        if escape { return Self.streamText(path, from: offset) { write(Array(SafeText.lines($0).utf8)) } }
        return Self.streamBytes(path, from: offset) { write($0) }
    }

    /// Where the last `lines` lines of `path` begin (0 when it has no more), saying how many
    /// came before. Two passes over the file in chunks, never the whole of it at once.
    func tailStart(_ path: String, lines: Int) -> Int {
        var newlines = 0, size = 0, lastByte: UInt8 = 10
        Self.streamBytes(path) { chunk in
            for b in chunk where b == 10 { newlines += 1 }
            size += chunk.count
            lastByte = chunk.last ?? lastByte
        }
        let total = newlines + (lastByte == 10 ? 0 : 1)
        let earlier = total - lines
        guard earlier > 0 else { return 0 }
        var seen = 0, offset = 0, found = false
        Self.streamBytes(path) { chunk in
            guard !found else { return }
            for (k, b) in chunk.enumerated() where b == 10 {
                seen += 1
                if seen == earlier { offset += k + 1; found = true; return }
            }
            offset += chunk.count
        }
        say("... \(earlier) earlier line\(earlier == 1 ? "" : "s")")
        return found ? offset : size
    }

    /// Shows the file from `offset` as it grows until the run's runner is gone; false when
    /// interrupted.
    func followFile(_ path: String, from offset: Int = 0, loop: EventLoop) -> Bool {
        var offset = offset
        while true {
            let got = copy(path, from: offset)
            if got > 0 {
                offset += got
            } else if !FileLock.isHeld(dir.lock) {
                return true
            }
            if !loop.sleep(0.1) { return false }
        }
    }
}

// MARK: reading files in chunks

extension RunView {
    /// The bytes of `path` from `offset` on, handed over in chunks of 64 KiB (never the
    /// whole file at once); returns how many. A file that cannot be opened has none.
    @discardableResult
    static func streamBytes(_ path: String, from offset: Int = 0, _ chunk: ([UInt8]) -> Void) -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var total = 0
        FileIO.readChunks(fd, from: offset) { chunk($0); total += $0.count }
        return total
    }

    /// As streamBytes, as text: a UTF-8 sequence cut by a chunk's end waits for the next
    /// chunk (so no character is broken in two); bytes that are not UTF-8 become U+FFFD.
    /// Returns the bytes read.
    @discardableResult
    static func streamText(_ path: String, from offset: Int = 0, _ text: (String) -> Void) -> Int {
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
