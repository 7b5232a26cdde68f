import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct ReplCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "repl", abstract: "The interactive shell.")
    @OptionGroup var globals: Globals

    mutating func run() throws { Glibc.exit(Shell.main(root: root)) }
}

