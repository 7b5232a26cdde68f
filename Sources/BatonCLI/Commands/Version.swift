import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "version", abstract: "Print the version.", shouldDisplay: false)

    mutating func run() throws {
        print(BatonCommand.configuration.version)
        Glibc.exit(ExitStatus.success.rawValue)
    }
}

