import BatonBase
import BatonCore
import Glibc

/// What Tab offers, given the line before the word and the word itself. Each
/// candidate replaces the whole word and carries what naturally follows it (a
/// space after a command or run id, "/" after a directory, "." or "(" after a
/// Lua table or function). The sources are injected, so this is tested alone.
struct Completer {
    var commands: [String] = MetaCommand.names
    /// Run ids, newest first.
    var runIDs: () -> [String] = { [] }
    /// Stage ids of a run (for `:tail RUN STAGE`).
    var stageIDs: (String) -> [String] = { _ in [] }
    /// Watch ids of a run (for `:skip WATCH` while attached).
    var watchIDs: (String) -> [String] = { _ in [] }
    /// The live run attached through its control socket, if any: then `:tail`, `:kill`,
    /// `:extend` take its stage ids and `:skip` its watch ids.
    var attachedRun: () -> String? = { nil }
    /// Completions of a dotted Lua name (shell.complete).
    var luaNames: (String) -> [String] = { _ in [] }
    /// Entries of a directory: (name, isDirectory).
    var listDirectory: (String) -> [(String, Bool)] = Completer.directoryEntries

    static let runCommands: Set<String> = [":status", ":attach", ":tail", ":cancel", ":resume", ":debug"]

    func complete(before: String, word: String) -> [String] {
        let head = before.drop { $0 == " " || $0 == "\t" }
        if head.isEmpty && word.hasPrefix(":") {
            return commands.filter { $0.hasPrefix(word) }.map { $0 + " " }
        }
        if head.hasPrefix(":") {
            let words = head.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard let command = words.first.map(MetaCommand.canonical) else { return [] }
            let position = words.count   // 1: the first argument
            if let run = attachedRun(), position == 1 {
                let ids = command == ":skip" ? watchIDs(run) : [":tail", ":kill", ":extend"].contains(command)
                    ? stageIDs(run) : []
                return ids.filter { $0.hasPrefix(word) }.map { $0 + " " }
            }
            if Completer.runCommands.contains(command) && position == 1 {
                return (runIDs() + ["latest"]).filter { $0.hasPrefix(word) }.map { $0 + " " }
            }
            if command == ":tail" && position == 2 {
                return stageIDs(words[1]).filter { $0.hasPrefix(word) }.map { $0 + " " }
            }
            if command == ":load" { return paths(word) }
            if command == ":help" && position == 1 {
                return commands.map { String($0.dropFirst()) }.filter { $0.hasPrefix(word) }.map { $0 + " " }
            }
            return []
        }
        return lua(word)
    }

    /// The Lua name at the end of the word (after any operator or bracket libedit
    /// did not split on) is completed; what comes before it is kept.
    func lua(_ word: String) -> [String] {
        let u = Array(word.unicodeScalars)
        var i = u.count
        while i > 0, Completer.isNameScalar(u[i - 1]) { i -= 1 }
        // A name starts with a letter or '_': "3.5" or "x:1" are not names.
        let chain = String(String.UnicodeScalarView(u[i...]))
        if let f = chain.unicodeScalars.first, !(f == "_" || (f.isASCII && f.properties.isAlphabetic)) { return [] }
        let prefix = String(String.UnicodeScalarView(u[..<i]))
        return luaNames(chain).map { prefix + $0 }
    }

    static func isNameScalar(_ c: Unicode.Scalar) -> Bool {
        c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "." || c == ":")
    }

    func paths(_ word: String) -> [String] {
        var dir = "", name = word
        if let slash = word.lastIndex(of: "/") {
            dir = String(word[...slash])
            name = String(word[word.index(after: slash)...])
        }
        var out: [String] = []
        for (entry, isDir) in listDirectory(dir.isEmpty ? "." : dir) where entry.hasPrefix(name) {
            if entry.hasPrefix("."), !name.hasPrefix(".") { continue }
            out.append(dir + entry + (isDir ? "/" : " "))
        }
        return out.sorted()
    }

    static func directoryEntries(_ path: String) -> [(String, Bool)] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var out: [(String, Bool)] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            out.append((name, FileIO.isDirectory(path + "/" + name)))
        }
        return out
    }
}
