import BatonBase
import BatonCore
import Glibc

/// What a person watching the run sees. On a terminal with colour (stderr a terminal,
/// `TERM` not `dumb`, `NO_COLOR` unset): the live view, one line per thing in flight
/// (LiveView: every running stage, parallel items and background ones included, watches,
/// the gate, sleep or command the recipe waits in), redrawn at most 10 times a second at
/// the terminal's current width, erased before anything else is written and at the end.
/// With `NO_COLOR`: today's single status line for the stage in the foreground. With
/// `--stream`: every stage's output as it comes, each line prefixed with the stage's id
/// (aligned; a colour per id on a terminal), terminal or not.
final class TerminalView {
    let statusLine: Bool
    let live: Bool
    let stream: Bool
    /// Where the stages' stdout is echoed (stderr in --json mode).
    let outFD: Int32
    weak var context: RunContext?
    private var shownLines = 0
    private var watching: StageExecution?
    private var frame = 0

    init(stream: Bool, json: Bool) {
        statusLine = isatty(2) == 1 && getenv("TERM").map { String(cString: $0) } != "dumb"
        live = statusLine && getenv("NO_COLOR") == nil
        self.stream = stream
        outFD = json ? 2 : 1
    }

    var isActive: Bool { statusLine || stream }

    /// Before the recipe runs: what earlier lives of a resumed run wrote is not echoed.
    func begin(_ ctx: RunContext) {
        context = ctx
        if stream { _ = ctx.takeAttemptLogs() }
    }

    /// The loop's tick: how often the view is redrawn (and output echoed).
    var tickInterval: Double { live ? 0.1 : stream ? 0.2 : 0.5 }

    /// The stage the recipe now waits on in the foreground (nil when the wait is over).
    func watch(_ exec: StageExecution?) {
        if exec == nil { echoAll(); if !live { clear() } }
        watching = exec
    }

    func tick(_ label: WaitLabel? = nil) {
        echoAll()
        if live { drawLive() } else if statusLine, let exec = watching, exec.isRunning { draw(exec) }
    }

    /// The run is over (or interrupted): the rest of every stage's output, the view erased.
    func finish() {
        echoAll(final: true)
        clear()
    }

    /// Before a permanent line (a stage's ok/FAIL): what the stages wrote so far comes
    /// first, then the view is erased (redrawn below the line at the next tick).
    func beforeLine() {
        echoAll()
        clear()
    }

    /// Erases the view (before anything else is written to the terminal).
    func clear() {
        guard shownLines > 0 else { return }
        Console.write(2, LiveView.erase(shownLines), newline: false)
        shownLines = 0
    }

    // MARK: the live view

    private func drawLive() {
        guard let ctx = context else { return }
        frame += 1
        var waiting: LiveView.Waiting? = nil
        if let w = ctx.loop.waitingOn { waiting = (w.label.kind.rawValue, w.label.id, Clock.monotonic() - w.since) }
        let lines = LiveView.lines(ctx.history,
                                   waiting: waiting,
                                   width: terminalColumns(),
                                   room: LiveView.room(),
                                   frame: frame)
        let text = LiveView.erase(shownLines) + lines.map(Palette.dim).joined(separator: "\n")
        Console.write(2, text, newline: false)
        shownLines = lines.count
    }

    /// NO_COLOR on a terminal: one line for the foreground stage.
    private func draw(_ exec: StageExecution) {
        let spinner = ["|", "/", "-", "\\"][frame % 4]
        frame += 1
        var text =
            "\(spinner) stage \(SafeText.line(exec.spec.id)) attempt \(exec.attempt) \(Clock.human(exec.runningFor))"
        if let last = RunInfo.lastLine(exec.currentLogs) { text += ": " + SafeText.line(last) }
        text = LiveView.clip(text, terminalColumns() - 1)
        Console.write(2, LiveView.erase(shownLines) + text, newline: false)
        shownLines = 1
    }

    // MARK: --stream

    /// One attempt's output being echoed: its files, how far each has been copied, and the
    /// partial last line of each (a line is printed whole, prefixed).
    private final class Echo {
        let key: StageKey
        let attempt: Int
        let logs: StageLogs
        var out = 0, err = 0
        var carryOut: [UInt8] = [], carryErr: [UInt8] = []
        init(_ a: AttemptLog) { key = a.key; attempt = a.attempt; logs = a.logs }
    }
    private var echoes: [Echo] = []
    private var idWidth = 0
    private lazy var colourOut = Palette.enabled && isatty(outFD) == 1
    private lazy var colourErr = Palette.enabled

    /// Every attempt started since the last tick, and every one still going: what each
    /// wrote. Attempts come from the run's history (each `stage_started`), so a stage that
    /// starts and ends between two ticks is echoed too.
    private func echoAll(final: Bool = false) {
        guard stream, let ctx = context else { return }
        for a in ctx.takeAttemptLogs() {
            guard !a.logs.stdout.isEmpty else { continue }
            echoes.append(Echo(a))
            idWidth = max(idWidth, a.key.description.count)
        }
        var over = false
        for e in echoes {
            let r = ctx.history.stage(e.key)
            let ended = final || r == nil || !(r!.isOpen && r!.attempt == e.attempt)
            copyNew(e, final: ended)
            if ended { e.out = -1; over = true }
        }
        if over { echoes.removeAll { $0.out < 0 } }
    }

    private func copyNew(_ e: Echo, final: Bool) {
        let prefix = LiveView.pad(e.key.description, idWidth) + " | "
        let (o, outBytes) = read(e.logs.stdout, from: e.out)
        let (r, errBytes) = read(e.logs.stderr, from: e.err)
        e.out += o; e.err += r
        emit(outBytes, carry: &e.carryOut, prefix: prefix, fd: outFD, colour: colourOut, id: e.key.id, final: final)
        emit(errBytes, carry: &e.carryErr, prefix: prefix, fd: 2, colour: colourErr, id: e.key.id, final: final)
    }

    /// Writes the complete lines of `carry + bytes`, each prefixed; keeps the partial rest
    /// (written too when `final`).
    private func emit(_ bytes: [UInt8],
                      carry: inout [UInt8],
                      prefix: String,
                      fd: Int32,
                      colour: Bool,
                      id: String,
                      final: Bool) {
        carry += bytes
        guard !carry.isEmpty else { return }
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        for (i, b) in carry.enumerated() where b == 10 { lines.append(carry[start..<i]); start = i + 1 }
        if final, start < carry.count { lines.append(carry[start...]); start = carry.count }
        guard !lines.isEmpty else { return }
        let p = Array((colour ? TerminalView.paint(prefix, id) : prefix).utf8)
        var buf: [UInt8] = []
        buf.reserveCapacity(carry.count + lines.count * p.count)
        for l in lines { buf += p; buf += l; buf.append(10) }
        carry.removeFirst(start)
        clear()
        Console.write(fd, bytes: buf)
    }

    /// A colour per stage id, as `docker compose up` gives each service one.
    static func paint(_ s: String, _ id: String) -> String {
        let colours = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]
        var h: UInt32 = 2166136261
        for b in id.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
        return "\u{1B}[\(colours[Int(h % UInt32(colours.count))])m\(s)\u{1B}[0m"
    }

    /// The bytes of `path` after `offset` (at most 1 MiB a tick).
    private func read(_ path: String, from offset: Int) -> (Int, [UInt8]) {
        guard !path.isEmpty, let size = FileIO.size(path), size > offset else { return (0, []) }
        let f = open(path, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { return (0, []) }
        defer { close(f) }
        let want = min(size - offset, 1 << 20)
        var buf = [UInt8](repeating: 0, count: want)
        let n = buf.withUnsafeMutableBytes { pread(f, $0.baseAddress!, want, off_t(offset)) }
        guard n > 0 else { return (0, []) }
        return (n, Array(buf[0..<n]))
    }
}
