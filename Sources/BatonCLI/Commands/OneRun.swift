import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

/// A command that takes one run and nothing else: its name, help line and action.
struct OneRunSpec: Sendable {
    var name: String
    var abstract: String
    var perform: @Sendable (_ root: String, _ ref: String?, _ json: Bool) -> Int32
}

protocol OneRunKind { static var spec: OneRunSpec { get } }

/// wait, cancel: one command type; each kind below is one line of data.
struct OneRun<Kind: OneRunKind>: RunsDirCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: Kind.spec.name, abstract: Kind.spec.abstract)
    }
    @OptionGroup var args: RunArguments
    var globals: Globals { args.globals }

    mutating func run() throws { Glibc.exit(Kind.spec.perform(root, args.ref, args.json.json)) }
}

