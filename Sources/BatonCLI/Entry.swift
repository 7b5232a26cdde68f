import ArgumentParser
import BatonBase
import BatonCore
import CBatonSys
import Glibc

/// The command line: `baton`'s whole life from its arguments to its exit code.
public enum Main {
    public static func run() -> Never {
        baton_signals_install()
        var arguments = Array(CommandLine.arguments.dropFirst())
        if let o = RunCommand.plain(arguments) { RunCommand.start(o, detach: false) }
        // `baton` alone (the shell, or piped Lua) has nothing to parse either.
        if arguments.isEmpty { Glibc.exit(Shell.main(root: RunStore.defaultRoot())) }
        BatonCommand.leadingRunsDir = Completion.leadingRunsDir(arguments)
        (arguments, RunCommand.passthrough) = Completion.splitRecipeArguments(arguments)
        let commandNames = BatonCommand.configuration.subcommands.filter { $0.configuration.shouldDisplay }.compactMap {
            $0.configuration.commandName
        }
        // Commands for Baton's own use (shouldDisplay false): accepted, never listed or suggested.
        let hidden = BatonCommand.configuration.subcommands.filter { !$0.configuration.shouldDisplay }
            .compactMap { $0.configuration.commandName }
        let json = arguments.contains("--json")
        if let message = Completion.unknownCommand(arguments,
                                                   known: commandNames + ["help", "version"],
                                                   hidden: hidden) {
            Glibc.exit(Console.error(message, json: json))
        }
        // `baton help nosuch` is a usage error too, as `baton nosuch` is, not the overview.
        if let message = Completion.unknownHelpTopic(arguments, known: commandNames + ["help", "version"]) {
            Glibc.exit(Console.error(message, json: json, code: .usage))
        }
        if let message = Completion.negativeCount(arguments) { Glibc.exit(Console.error(message, json: json)) }
        do {
            var command = try BatonCommand.parseAsRoot(arguments)
            try command.run()
        } catch {
            let code = BatonCommand.exitCode(for: error)
            let message = BatonCommand.fullMessage(for: error)
            if code == .success {
                // --help, help COMMAND, --version, completion scripts and answers.
                if !message.isEmpty { Console.out(message) }
                Glibc.exit(ExitStatus.success.rawValue)
            }
            if let e = error as? ExitCode { Glibc.exit(e.rawValue) }
            var text = message.trimmingWhitespace()
            if text.hasPrefix("Error: ") { text.removeFirst(7) }
            if json {
                // Only the first line: the usage that follows is for people.
                _ = Console.error(String(text.prefix { $0 != "\n" }), json: true)
            } else {
                diag("baton: " + text)
            }
            Glibc.exit(ExitStatus.usage.rawValue)
        }
        // Every command exits from its own run(); one that returns has succeeded.
        Glibc.exit(ExitStatus.success.rawValue)
    }
}
