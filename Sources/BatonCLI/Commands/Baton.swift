import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct BatonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "baton",
        abstract: "Runs Lua recipes of stages, journaled, resumable.",
        discussion: """
            With no command: the interactive shell when stdin is a terminal, else the Lua read \
            from stdin. Exit codes: \(ExitStatus.summary) (128+n: signal n; docs/guide.md).
            """,
        version: "baton \(BatonVersion.string) (Lua \(LuaInfo.version))",
        subcommands: [RunCommand.self, RunsCommand.self, StatusCommand.self, LogCommand.self, ReportCommand.self,
                      OneRun<WaitKind>.self, OneRun<CancelKind>.self,
                      ResumeCommand.self, AttachCommand.self, DebugCommand.self, PruneCommand.self, CacheCommand.self,
                      InputsCommand.self, CheckCommand.self, InitCommand.self, TypesCommand.self, ReplCommand.self,
                      VersionCommand.self,
                      WatchdogCommand.self])

    @OptionGroup var globals: Globals

    /// `--runs-dir` given before the command's name (read before parsing: subcommands
    /// see only their own options).
    nonisolated(unsafe) static var leadingRunsDir: String?

    mutating func run() throws {
        Glibc.exit(Shell.main(root: RunStore.defaultRoot(override: globals.runsDir)))
    }
}

