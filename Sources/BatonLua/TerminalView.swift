import BatonBase
import BatonCore
import Glibc

/// What a person watching the run sees while a stage runs in the foreground: on a
/// terminal, a status line (stage id, attempt, elapsed time, its last output line)
/// redrawn by the event loop's tick and erased when the stage ends; with `--stream`, the
/// stage's output echoed as it comes (terminal or not).
final class TerminalView {
    let statusLine: Bool
    let stream: Bool
    /// Where the stage's stdout is echoed (stderr in --json mode).
    let outFD: Int32
    private var shown = false
    private var watching: StageExecution?
    private var streamed = StageLogs(stdout: "", stderr: "")
    private var offsets = (out: 0, err: 0)
    private var frame = 0

    init(stream: Bool, json: Bool) {
        statusLine = isatty(2) == 1 && getenv("TERM").map { String(cString: $0) } != "dumb"
        self.stream = stream
        outFD = json ? 2 : 1
    }

    var isActive: Bool { statusLine || stream }

    /// The loop's tick: how often the line is redrawn (and output echoed).
    var tickInterval: Double { stream ? 0.2 : 0.5 }

    /// The stage the recipe now waits on (nil when the wait is over).
    func watch(_ exec: StageExecution?) {
        if let w = watching, exec == nil { echo(w); clear() }
        watching = exec
    }

    func tick() {
        guard let exec = watching else { return }
        echo(exec)
        if statusLine, exec.isRunning { draw(exec) }
    }

    /// Erases the status line (before anything else is written to the terminal).
    func clear() {
        guard shown else { return }
        Console.write(2, "\r\u{1B}[2K", newline: false)
        shown = false
    }

    private func draw(_ exec: StageExecution) {
        let spinner = ["|", "/", "-", "\\"][frame % 4]
        frame += 1
        var text = "\(spinner) stage \(SafeText.line(exec.spec.id)) attempt \(exec.attempt) \(Clock.human(exec.runningFor))"
        if let last = RunInfo.lastLine(exec.currentLogs) { text += ": " + SafeText.line(last) }
        let width = terminalColumns() - 1
        if text.count > width { text = String(text.prefix(max(0, width - 3))) + "..." }
        Console.write(2, "\r\u{1B}[2K" + Palette.dim(text), newline: false)
        shown = true
    }

    /// `--stream`: what the attempt wrote since the last tick (an earlier attempt's rest first).
    private func echo(_ exec: StageExecution) {
        guard stream else { return }
        let logs = exec.currentLogs
        if logs.stdout != streamed.stdout {
            if !streamed.stdout.isEmpty { copyNew() }
            streamed = logs
            offsets = (0, 0)
        }
        copyNew()
    }

    private func copyNew() {
        let out = copy(streamed.stdout, from: offsets.out, to: outFD)
        let err = copy(streamed.stderr, from: offsets.err, to: 2)
        offsets = (offsets.out + out, offsets.err + err)
    }

    /// Copies the bytes of `path` after `offset` to `fd`, 64 KiB at a time; returns how many.
    private func copy(_ path: String, from offset: Int, to fd: Int32) -> Int {
        guard let size = FileIO.size(path), size > offset else { return 0 }
        let f = open(path, O_RDONLY | O_CLOEXEC)
        guard f >= 0 else { return 0 }
        defer { close(f) }
        clear()
        var done = 0
        var buf = [UInt8](repeating: 0, count: 65536)
        while offset + done < size {
            let want = min(buf.count, size - offset - done)
            let n = buf.withUnsafeMutableBytes { pread(f, $0.baseAddress!, want, off_t(offset + done)) }
            guard n > 0 else { break }
            Console.write(fd, bytes: Array(buf[0..<n]))
            done += n
        }
        return done
    }
}
