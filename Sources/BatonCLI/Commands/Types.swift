import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct TypesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "types",
        abstract: "Print LuaCATS annotations of the recipe environment (for lua-language-server).")

    mutating func run() throws { Glibc.exit(Types.types()) }
}

