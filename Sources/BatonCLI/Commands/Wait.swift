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
            return liveUntilEnd(dir, fd: 2, header: false)
        }
        let loop = EventLoop()
        while isLive(dir) {
            if !loop.sleep(0.1) { return ExitStatus.interrupted.rawValue }
        }
        return outcome(dir, json: json)
    }
}

