import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// `baton attach [RUN]`: a prompt whose lines run inside a live run (through its control
/// socket); a finished or orphaned run opens the shell's journal view instead.
public enum Attach {
    public static func main(root: String, ref: String?, leaveOnResume: Bool = false) -> Int32 {
        if isatty(0) != 0 {
            let shell = Interactive(root: root)
            shell.leaveOnResume = leaveOnResume
            shell.startAttached = ref ?? "latest"
            return shell.run()
        }
        guard let dir = Commands.resolve(root, ref, json: false) else { return ExitStatus.usage.rawValue }
        var why: String?
        guard let session = AttachSession.connect(dir, why: &why) else {
            let info = RunInfo.load(dir)
            if info.isLive {
                diag("baton: cannot attach to live run \(dir.id): \(why ?? "its control socket does not answer")")
                return ExitStatus.failure.rawValue
            }
            diag("run \(dir.id) is not live (\(Render.stateText(info))): nothing to attach to; its state from the "
                 + "journal:")
            RunView(dir).status(info)
            return ExitStatus.success.rawValue
        }
        let text = String(decoding: (try? FileIO.readFile("/dev/stdin")) ?? [], as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !session.handle(String(line)) { break }
        }
        if !session.pending.isEmpty { diag("baton: unfinished chunk at the end of input") }
        return session.failures == 0 ? ExitStatus.success.rawValue : ExitStatus.failure.rawValue
    }
}

/// One request a connection to a live run's control socket: a JSON line each way.
struct ControlClient {
    let path: String

    /// The answer, or why there is none (the run is gone, or it did not answer in time).
    func request(_ req: JSON, timeout: Int = 60) -> (answer: JSON?, error: String?) {
        let fd = baton_control_connect(path)
        guard fd >= 0 else { return (nil, String(cString: strerror(-fd))) }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let bytes = req.encodedBytes() + [10]
        var writeError: String? = nil
        // (A run that refuses at once may have answered and closed before this write: its
        // answer is still there to read.)
        do { try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) } } catch { writeError = "\(error)" }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return (nil, "no answer in \(timeout)s: the recipe is not waiting (running Lua code?)")
            }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        guard let j = try? JSON.parse(out) else { return (nil, writeError ?? "the run closed the connection") }
        return (j, nil)
    }
}

/// An attached live run: lines go to its Lua state, meta-commands act on it.
final class AttachSession {
    static let help: [(name: String, args: String, text: String)] = [
        (":stages", "", "the run's stages: finished, running (pid, time, timeout left), waiting"),
        (":tail", "STAGE", "the end of a stage's latest output"),
        (":kill", "STAGE", "end the stage's current attempt (SIGTERM); its retry policy applies"),
        (":skip", "WATCH", "end a waiting watch as blocked; the recipe goes on"),
        (":cancel", "", "cancel the run, as baton cancel does (its stages ended; final.json names you in ended_by)"),
        (":extend", "STAGE SECONDS", "move the running attempt's timeout SECONDS later"),
        (":status", "", "the run's status (what it is blocked in, its stages and processes)"),
        (":continue", "", "a paused run goes on"),
        (":step", "", "a paused run runs its next primitive call and pauses again after it"),
        (":skip", "", "(paused before a stage) skip it: its result is {skipped = true}"),
        (":break", "ID", "pause before stages matching ID (a glob such as deploy*)"),
        (":unbreak", "ID", "remove a breakpoint"),
        (":breaks", "", "the run's breakpoints"),
        (":where", "", "the Lua traceback of the paused frame"),
        (":detach", "", "leave the run running (also Ctrl-D)"),
        (":help", "", "this list"),
    ]
    static let commands = help.map(\.name).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }

    let dir: RunDirectory
    let client: ControlClient
    /// Requests answered in this process (the replay debugger), not through a socket.
    var local: ((JSON) -> JSON)?
    /// Leave once a paused run goes on (the prompt `baton run --break` opened, and replays).
    var leaveOnResume = false
    /// The lines of an unfinished chunk.
    var pending: [String] = []
    var failures = 0
    private(set) var greeting = ""

    init(dir: RunDirectory) {
        self.dir = dir
        client = ControlClient(path: dir.controlSocket)
    }

    /// A session, if the run is live and its socket answers.
    static func connect(_ dir: RunDirectory, why: inout String?) -> AttachSession? {
        guard FileIO.exists(dir.controlSocket) else { why = "it has no control socket"; return nil }
        let s = AttachSession(dir: dir)
        let (a, e) = s.client.request(.object([("op", .string(ControlOp.hello.rawValue))]))
        guard let a, a["ok"]?.boolValue == true else { why = a?["text"]?.stringValue ?? e; return nil }
        s.greeting = a["text"]?.stringValue ?? ""
        return s
    }

    /// What the prompt says before `> ` (the run's id; the replay debugger's own).
    var promptName: String?
    var prompt: String { pending.isEmpty ? "\(promptName ?? dir.id)> " : ">> " }

    /// One line, typed or piped. Returns whether the session goes on (not after `:detach`
    /// or when the run is gone).
    func handle(_ line: String) -> Bool {
        if pending.isEmpty {
            let t = line.trimmingWhitespace()
            if t.isEmpty { return true }
            if t.hasPrefix(":") { return meta(t) }
        }
        pending.append(line)
        let code = pending.joined(separator: "\n")
        guard let a = send(.object([("op", .string(ControlOp.eval.rawValue)), ("code", .string(code))])) else {
            pending = []
            return false
        }
        if a["incomplete"]?.boolValue == true { return true }
        pending = []
        show(a)
        return true
    }

    func meta(_ line: String) -> Bool {
        let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        let args = Array(words.dropFirst())
        func need(_ n: Int, _ usage: String) -> Bool {
            if args.count >= n { return true }
            Console.err("usage: \(usage)")
            failures += 1
            return false
        }
        var req: JSON? = nil
        switch MetaCommand.canonical(words[0]) {
        case ":detach", ":quit":
            return false
        case ":help":
            let lines = AttachSession.help.map {
                "  \($0.name) \($0.args)".padding($0.name.count + $0.args.count + 3, to: 24) + $0.text
            }
            Console.out(lines.joined(separator: "\n")
                        + "\nOther lines are Lua, run inside the run: its globals, and the locals of the frame it is "
                        + "blocked in.")
        case ":status":
            RunView(dir).status()
        case ":stages":
            req = .object([("op", .string(ControlOp.stages.rawValue))])
        case ":tail":
            guard need(1, ":tail STAGE") else { return true }
            if RunView(dir).stage(args[0], .latest(lines: RunView.tailLines)) != 0 { failures += 1 }
        case ":continue", ":c", ":step", ":s", ":next", ":n":
            let op: ControlOp = [":continue", ":c"].contains(words[0]) ? .continue : [":next", ":n"].contains(words[0])
                ? .next : .step
            return goOn(.object([("op", .string(op.rawValue))]), stepping: op != .continue)
        case ":skip" where args.isEmpty:
            return goOn(.object([("op", .string(ControlOp.skipStage.rawValue))]), stepping: false)
        case ":break", ":unbreak":
            guard need(1, "\(words[0]) ID") else { return true }
            req = .object([("op", .string((words[0] == ":break" ? ControlOp.breakAdd : .unbreak).rawValue)),
                           ("stage", .string(args[0]))])
        case ":breaks", ":where":
            req = .object([("op", .string((words[0] == ":breaks" ? ControlOp.breaks : .where).rawValue))])
        case ":kill":
            guard need(1, ":kill STAGE") else { return true }
            req = .object([("op", .string(ControlOp.kill.rawValue)), ("stage", .string(args[0]))])
        case ":cancel":
            guard let a = send(.object([("op", .string(ControlOp.cancel.rawValue))])) else { return false }
            show(a)
            return a["ok"]?.boolValue != true   // the run is ending: nothing more to attach to
        case ":skip":
            guard need(1, ":skip WATCH") else { return true }
            req = .object([("op", .string(ControlOp.skip.rawValue)), ("watch", .string(args[0]))])
        case ":extend":
            guard need(2, ":extend STAGE SECONDS") else { return true }
            guard let s = Clock.parseDuration(args[1]) else {
                Console.err(":extend: SECONDS must be a number of seconds or a duration such as 10m, got '\(args[1])'")
                failures += 1
                return true
            }
            req = .object([("op", .string(ControlOp.extend.rawValue)), ("stage", .string(args[0])),
                           ("seconds", .double(s))])
        default:
            Console.err("unknown command \(words[0]) while attached; :help lists them")
            failures += 1
        }
        if let r = req {
            guard let a = send(r) else { return false }
            show(a)
        }
        return true
    }

    /// :continue, :step, :skip: the run goes on. A prompt opened for the pause leaves; one
    /// that stays waits, after a step, until the run is paused again (or has ended).
    func goOn(_ req: JSON, stepping: Bool) -> Bool {
        guard let a = send(req) else { return false }
        show(a)
        guard a["ok"]?.boolValue == true else { return true }
        if leaveOnResume { return false }
        guard stepping else { return true }
        while true {
            usleep(100_000)
            let (p, _) = client.request(.object([("op", .string(ControlOp.pauseState.rawValue))]), timeout: 5)
            guard let p else {
                if !FileLock.isHeld(dir.lock) { Console.err("run \(dir.id) has ended"); return false }
                continue
            }
            if p["paused"]?.boolValue == true {
                Console.out("paused \(SafeText.lines(p["text"]?.stringValue ?? ""))")
                return true
            }
        }
    }

    /// Tab: names in the run's Lua state.
    func complete(_ chain: String) -> [String] {
        if let local {
            let answer = local(.object([("op", .string(ControlOp.complete.rawValue)), ("chain", .string(chain))]))
            return answer["candidates"]?.arrayValue?.compactMap(\.stringValue) ?? []
        }
        let a = client.request(.object([("op", .string(ControlOp.complete.rawValue)), ("chain", .string(chain))]),
                               timeout: 5).answer
        return a?["candidates"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    func send(_ req: JSON) -> JSON? {
        if let local { return local(req) }
        let (a, e) = client.request(req)
        if let a { return a }
        Console.err("baton: run \(dir.id) does not answer: \(e ?? "?")"
                    + (FileLock.isHeld(dir.lock) ? "" : " (it has ended)"))
        failures += 1
        return nil
    }

    func show(_ a: JSON) {
        // What the run sends back (values, what `print` wrote, errors) may hold a stage's
        // output: shown with its control characters escaped.
        let text = SafeText.lines(a["text"]?.stringValue ?? "")
        if a["ok"]?.boolValue == true {
            if !text.isEmpty { Console.out(text) }
        } else {
            Console.err(text)
            failures += 1
        }
    }
}

extension String {
    func padding(_ length: Int, to width: Int) -> String {
        self + String(repeating: " ", count: max(1, width - length))
    }
}
