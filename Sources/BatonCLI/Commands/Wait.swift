import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

enum WaitKind: OneRunKind {
    static let spec = OneRunSpec(name: "wait",
                                 abstract: "Wait until a run ends; exit with its exit code (an orphaned run: 1).",
                                 perform: Commands.wait)
}

extension Commands {
    /// `baton wait [RUN]`: until the run ends; exits with the run's exit code.
    public static func wait(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        // On a terminal with colour: the live view of what the run has in flight meanwhile.
        if !json, Palette.enabled {
            return RunView(dir).watch(header: false, on: 2)
        }
        let view = RunView(dir)
        guard view.untilEnded(EventLoop()) else { return ExitStatus.interrupted.rawValue }
        return view.outcome(json: json)
    }
}

