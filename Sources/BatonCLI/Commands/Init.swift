import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Set up a directory for recipes: .baton/, editor types (.luarc.json), .luacheckrc.")
    @Argument(help: ArgumentHelp("The directory (default: the current one).", valueName: "DIR"), completion: .directory)
    var dir = "."
    @Flag(help: "Replace an existing .luarc.json and .luacheckrc.") var force = false
    @OptionGroup var json: JSONFlag

    mutating func run() throws { Glibc.exit(Types.initialize(dir: dir, force: force, json: json.json)) }
}

