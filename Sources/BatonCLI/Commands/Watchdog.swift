import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// Started by a runner with its first stage (Survivors.watchdog); not for people.
struct WatchdogCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "__watchdog", shouldDisplay: false)
    @Argument var runID: String
    /// The run's cgroup (Containment), killed whole when the runner is gone.
    @Argument var cgroup: String?

    mutating func run() throws { Glibc.exit(Survivors.watchdog(runID: runID, cgroup: cgroup)) }
}

