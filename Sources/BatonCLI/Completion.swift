import BatonBase
import BatonCore
import BatonLua

/// What the command line needs besides the parser: `--runs-dir` before the command's
/// name, and the run ids Tab offers.
enum Completion {
    /// The value of `--runs-dir DIR` / `--runs-dir=DIR` among `words`, the last one given.
    static func runsDir(_ words: some Collection<String>) -> String? {
        var found: String?
        var it = words.makeIterator()
        while let w = it.next() {
            if w == "--runs-dir" { found = it.next() } else if w.hasPrefix("--runs-dir=") {
                found = String(w.dropFirst(11))
            }
        }
        return found
    }

    /// Where the command's name is: after the global options.
    static func commandIndex(_ args: [String]) -> Int {
        let valued: Set<String> = ["--runs-dir", "--generate-completion-script"]
        var i = 0
        while i < args.count, args[i].hasPrefix("-") { i += valued.contains(args[i]) ? 2 : 1 }
        return min(i, args.count)
    }

    /// `--runs-dir` given before the command's name (`baton --runs-dir D status`).
    static func leadingRunsDir(_ args: [String]) -> String? { runsDir(args.prefix(commandIndex(args))) }

    /// "unknown command 'stauts' (did you mean 'status'?)", or nil for a known one.
    /// `hidden` commands are accepted but never listed nor suggested.
    static func unknownCommand(_ args: [String], known: [String], hidden: [String] = []) -> String? {
        let i = commandIndex(args)
        guard i < args.count, !known.contains(args[i]), !hidden.contains(args[i]) else { return nil }
        return unknown(args[i], known)
    }

    static func unknown(_ word: String, _ known: [String]) -> String {
        let hint = suggestion(word, known).map { " (did you mean '\($0)'?)" } ?? ""
        return "unknown command '\(word)'\(hint); commands: \(known.joined(separator: ", "))"
    }

    /// `baton help WORD` for a WORD that is no command (hidden ones included).
    static func unknownHelpTopic(_ args: [String], known: [String]) -> String? {
        let i = commandIndex(args)
        guard i + 1 < args.count, args[i] == "help", !args[i + 1].hasPrefix("-"), !known.contains(args[i + 1]) else {
            return nil
        }
        return unknown(args[i + 1], known)
    }

    /// `runs -n -1`: the parser would take `-1` for an option; say what is wrong instead.
    static func negativeCount(_ args: [String]) -> String? {
        let i = commandIndex(args)
        guard i < args.count, args[i] == "runs" else { return nil }
        for (k, a) in args.enumerated().dropFirst(i + 1) {
            var value: Substring?
            if a == "-n", k + 1 < args.count { value = args[k + 1][...] } else if a.hasPrefix("-n"), a.count > 2 {
                value = a.dropFirst(2).drop { $0 == "=" }
            }
            if let v = value, v.hasPrefix("-"), Int(v) != nil { return "runs: -n must be 0 or more, not \(v)" }
        }
        return nil
    }

    /// `baton [GLOBALS] run [OPTIONS] RECIPE WORDS...`: the arguments up to RECIPE, and
    /// WORDS, which belong to the recipe whatever they look like (`--json`, `--help`).
    static func splitRecipeArguments(_ args: [String]) -> ([String], [String]) {
        var i = commandIndex(args)
        guard i < args.count, args[i] == "run" else { return (args, []) }
        i += 1
        while i < args.count {
            let a = args[i]
            if a == "--" { i += 1; break }
            if !a.hasPrefix("-") || a == "-" { break }
            i += RunCommand.valueOptions.contains(a) ? 2 : 1
        }
        guard i < args.count else { return (args, []) }
        return (Array(args[...i]), Array(args[(i + 1)...]))
    }

    /// Run ids for Tab: the runs directory's entries, read without opening any run (a
    /// thousand runs answer in a few milliseconds), and `latest`.
    static func runIDs(words: [String]) -> [String] {
        let root = RunStore.defaultRoot(override: runsDir(words.map(unquote)))
        return ["latest"] + FileIO.list(root).filter { !$0.hasPrefix(".") }
    }

    /// Shell words arrive verbatim; a quoted directory is the common case worth undoing.
    static func unquote(_ w: String) -> String {
        if w.count >= 2, let f = w.first, f == "'" || f == "\"", w.last == f { return String(w.dropFirst().dropLast()) }
        return w
    }
}
