import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// `baton status [RUN] [--json] [--watch]`.
struct StatusCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(commandName: "status",
                                                            abstract: "One run: state, current stage, liveness.")
    @OptionGroup var args: RunArguments
    @Flag(name: [.customLong("watch"), .customShort("w")],
          help: "Show the live view (what is in flight) until the run ends; exit with its exit code.") var watch = false
    var globals: Globals { args.globals }

    mutating func run() throws {
        if watch, !args.json.json { Glibc.exit(Commands.statusWatch(root: root, ref: args.ref)) }
        Glibc.exit(Commands.status(root: root, ref: args.ref, json: args.json.json))
    }
}

extension Commands {
    /// `status --watch`: the run's live view, read from its journal, redrawn on stdout until
    /// the run ends; then its outcome line and exit code (as `wait`).
    public static func statusWatch(root: String, ref: String?) -> Int32 {
        guard let dir = resolve(root, ref, json: false) else { return ExitStatus.usage.rawValue }
        return liveUntilEnd(dir, fd: 1, header: true)
    }

    /// Draws the live view of `dir`'s run on `fd` (a terminal; otherwise the view is drawn
    /// once) until the run ends, then erases it and says the outcome. Ctrl-C: 130.
    static func liveUntilEnd(_ dir: RunDirectory, fd: Int32, header: Bool) -> Int32 {
        let tty = isatty(fd) == 1 && getenv("TERM").map { String(cString: $0) } != "dumb"
        let loop = EventLoop()
        var shown = 0, frame = 0, drawnOnce = false
        while isLive(dir) {
            if tty || !drawnOnce {
                let info = RunInfo.load(dir, withEvents: false)
                var lines: [String] = []
                if header {
                    var h = "run \(info.id) \(info.state.rawValue)"
                    if let p = info.runnerPid { h += " (runner pid \(p))" }
                    if let d = info.duration { h += ", \(Clock.human(d))" }
                    h += ", \(info.stageCount) stage\(info.stageCount == 1 ? "" : "s") finished"
                    lines.append(h)
                }
                frame += 1
                let view = LiveView.lines(info.history, width: tty ? terminalColumns(fd) : 200, room: tty ? LiveView.room(fd) : 50, frame: frame)
                lines += tty ? view : view.map { String($0.dropFirst(2)) }   // (no spinner on paper)
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
        return outcome(dir, json: false)
    }

    public static func status(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let info = RunInfo.load(dir, withEvents: false)   // (from the journal's snapshot when it has one)
        if json { out(info.json.encoded(pretty: true)) } else { out(Render.status(info)) }
        return ExitStatus.success.rawValue
    }
}

