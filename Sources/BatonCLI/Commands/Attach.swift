import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct AttachCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "A Lua prompt inside a live run (its globals, the locals where it waits; :stages, :tail, :kill, "
            + ":skip, :extend, :detach; paused: :continue, :step, :where).")
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @Flag(name: .customLong("leave-on-resume"), help: .hidden) var leaveOnResume = false
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Attach.main(root: root, ref: ref, leaveOnResume: leaveOnResume)) }
}

