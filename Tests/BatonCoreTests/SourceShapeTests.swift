import Foundation
import Testing

/// The source's shape (issue 24): no line over 120 columns in Sources/ (Swift, C), scripts-lua/
/// and recipes/ (Lua), and no Swift function (func, init, deinit, subscript) over 80 lines, counted
/// from its declaration's first line to its closing brace.
@Suite struct SourceShapeTests {
    static let maxColumns = 120
    static let maxFunctionLines = 80

    /// The package root: three levels above this file (Tests/BatonCoreTests/SourceShapeTests.swift).
    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    static func files(under dir: String, extensions: Set<String>) -> [URL] {
        let top = root.appendingPathComponent(dir)
        guard let walk = FileManager.default.enumerator(at: top, includingPropertiesForKeys: nil) else { return [] }
        return walk.compactMap { $0 as? URL }.filter { extensions.contains($0.pathExtension) }
            .sorted { $0.path < $1.path }
    }

    static func relative(_ url: URL) -> String {
        String(url.path.dropFirst(root.path.count + 1))
    }

    static var sources: [URL] {
        files(under: "Sources", extensions: ["swift", "c", "h"])
            + files(under: "scripts-lua", extensions: ["lua"]) + files(under: "recipes", extensions: ["lua"])
    }

    /// `file:line: N columns` for every line over the limit (characters, not bytes; a tab counts as one).
    static func longLines(_ text: String, file: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { n, line in
            line.count > maxColumns ? "\(file):\(n + 1): \(line.count) columns (at most \(maxColumns))" : nil
        }
    }

    @Test func noLineOverTheLimit() throws {
        let files = Self.sources
        #expect(files.count > 50, Comment(rawValue: "the walk found the sources under \(Self.root.path)"))
        var found: [String] = []
        for f in files {
            found += Self.longLines(try String(contentsOf: f, encoding: .utf8), file: Self.relative(f))
        }
        let message = "lines over \(Self.maxColumns) columns:\n" + found.joined(separator: "\n")
        #expect(found.isEmpty, Comment(rawValue: message))
    }

    @Test func noFunctionOverTheLimit() throws {
        let files = Self.sources.filter { $0.pathExtension == "swift" }
        var found: [String] = []
        for f in files {
            for fn in SwiftFunctions.scan(try String(contentsOf: f, encoding: .utf8))
            where fn.lines > Self.maxFunctionLines {
                found.append("\(Self.relative(f)):\(fn.line): \(fn.name) is \(fn.lines) lines "
                             + "(at most \(Self.maxFunctionLines))")
            }
        }
        let message = "functions over \(Self.maxFunctionLines) lines:\n" + found.joined(separator: "\n")
        #expect(found.isEmpty, Comment(rawValue: message))
    }

    /// Lua functions too (scripts-lua/, recipes/), by the code's layout: a `function` that opens a
    /// line ends at the first `end` after it at the same indentation.
    @Test func noLuaFunctionOverTheLimit() throws {
        var found: [String] = []
        for f in Self.sources where f.pathExtension == "lua" {
            let text = try String(contentsOf: f, encoding: .utf8)
            for fn in LuaFunctions.scan(text) where fn.lines > Self.maxFunctionLines {
                found.append("\(Self.relative(f)):\(fn.line): \(fn.name) is \(fn.lines) lines "
                             + "(at most \(Self.maxFunctionLines))")
            }
        }
        let message = "Lua functions over \(Self.maxFunctionLines) lines:\n" + found.joined(separator: "\n")
        #expect(found.isEmpty, Comment(rawValue: message))
    }

    /// The scanner itself: braces in strings, raw strings, multi-line strings, interpolations and
    /// comments do not count; a protocol requirement has no body.
    @Test func theScannerIgnoresBracesOutsideCode() {
        let text = """
            protocol P {
                func req()
            }
            struct S {
                func a() {
                    let s = "{ \\("}" + "{") {"
                    let r = #"{ "\\#("{")" {"#
                    let m = \"\"\"
                        { \\(1) }
                        \"\"\"
                    // {
                    /* { /* nested { */ */
                }
                init() { x() }
            }
            """
        let fns = SwiftFunctions.scan(text)
        #expect(fns.map(\.name) == ["req", "a", "init"])
        #expect(fns.map(\.lines) == [1, 9, 1])
        let lua = "local function f()\n  if x then\n  end\nend\nfunction M.g() return 1 end\n"
        #expect(LuaFunctions.scan(lua).map(\.lines) == [4])
        #expect(Self.longLines(String(repeating: "é", count: 121) + "\nshort", file: "f") == [
            "f:1: 121 columns (at most 120)",
        ])
    }
}

/// A small Swift scanner: where each function's body starts and ends, by brace matching in code
/// only (not in comments, string literals of any kind, or their interpolations' strings).
enum SwiftFunctions {
    struct Function { let name: String; let line: Int; let lines: Int }

    enum Context { case code(parens: Int), string(hashes: Int, multiline: Bool), blockComment(depth: Int) }

    static var declaration: Regex<AnyRegexOutput> {
        try! Regex(
        #"^\s*(@\w+(\([^)]*\))?\s+)*((public|private|fileprivate|internal|package|open|static|class|override|"#
            + #"mutating|nonmutating|nonisolated|final|convenience|required|indirect|dynamic)(\([^)]*\))?\s+)*"#
            + #"(func\s+([^\s(<]+)|(init|deinit|subscript))"#)
    }

    static func scan(_ text: String) -> [Function] {
        let declaration = Self.declaration
        var found: [Function] = []
        var stack: [Context] = [.code(parens: 0)]
        var depth = 0
        // A declaration waiting for its body's `{`, and the open bodies (declaration line, depth).
        var pending: (name: String, line: Int, depth: Int)?
        var open: [(name: String, line: Int, depth: Int)] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (n, line) in lines.enumerated() {
            if case .code = stack.last!, stack.count == 1, mayDeclare(line),
               let m = line.firstMatch(of: declaration) {
                if let p = pending { found.append(Function(name: p.name, line: p.line + 1, lines: 1)) }
                let name = m.output[7].substring ?? m.output[8].substring ?? "?"
                pending = (String(name), n, depth)
            }
            let c = Array(line.unicodeScalars)
            var i = 0
            while i < c.count {
                switch stack.last! {
                case .blockComment(let d):
                    if c[i] == "*", i + 1 < c.count, c[i + 1] == "/" {
                        stack.removeLast()
                        if d > 1 { stack.append(.blockComment(depth: d - 1)) }
                        i += 2
                    } else if c[i] == "/", i + 1 < c.count, c[i + 1] == "*" {
                        stack[stack.count - 1] = .blockComment(depth: d + 1)
                        i += 2
                    } else {
                        i += 1
                    }
                case .string(let hashes, let multiline):
                    i = stringStep(c, i, hashes: hashes, multiline: multiline, stack: &stack)
                case .code(let parens):
                    if c[i] == "/", i + 1 < c.count, c[i + 1] == "/" { i = c.count; continue }
                    if c[i] == "/", i + 1 < c.count, c[i + 1] == "*" {
                        stack.append(.blockComment(depth: 1))
                        i += 2
                        continue
                    }
                    var h = 0
                    while i + h < c.count, c[i + h] == "#" { h += 1 }
                    if i + h < c.count, c[i + h] == "\"" {
                        let multi = i + h + 2 < c.count && c[i + h + 1] == "\"" && c[i + h + 2] == "\""
                        stack.append(.string(hashes: h, multiline: multi))
                        i += h + (multi ? 3 : 1)
                        continue
                    }
                    if stack.count > 1 {
                        // inside an interpolation: its parentheses decide where it ends
                        if c[i] == "(" { stack[stack.count - 1] = .code(parens: parens + 1) }
                        if c[i] == ")" {
                            if parens == 0 { stack.removeLast() } else {
                                stack[stack.count - 1] = .code(parens: parens - 1)
                            }
                        }
                    } else if c[i] == "{" {
                        depth += 1
                        if let p = pending, depth == p.depth + 1 {
                            open.append(p)
                            pending = nil
                        }
                    } else if c[i] == "}" {
                        depth -= 1
                        if let p = pending, depth < p.depth {   // a requirement without a body
                            found.append(Function(name: p.name, line: p.line + 1, lines: 1))
                            pending = nil
                        }
                        if let o = open.last, depth == o.depth {
                            open.removeLast()
                            found.append(Function(name: o.name, line: o.line + 1, lines: n - o.line + 1))
                        }
                    }
                    i += 1
                }
            }
            if case .string(_, false) = stack.last! { stack.removeLast() }   // an unterminated one-line string
        }
        if let p = pending { found.append(Function(name: p.name, line: p.line + 1, lines: 1)) }
        return found.sorted { $0.line < $1.line }
    }

    /// A cheap test before the regular expression: most lines declare nothing.
    static func mayDeclare(_ line: Substring) -> Bool {
        line.contains("func ") || line.contains("init") || line.contains("subscript")
    }

    /// One step inside a string literal: its end, an escape, or an interpolation's start.
    static func stringStep(_ c: [Unicode.Scalar], _ i: Int, hashes: Int, multiline: Bool,
                           stack: inout [Context]) -> Int {
        func hashesAt(_ k: Int) -> Bool {
            k + hashes <= c.count && c[k..<(k + hashes)].allSatisfy { $0 == "#" }
        }
        if c[i] == "\\", hashesAt(i + 1) {
            let k = i + 1 + hashes
            if k < c.count, c[k] == "(" {
                stack.append(.code(parens: 0))
                return k + 1
            }
            return k + 1
        }
        if c[i] == "\"" {
            let quotes = multiline ? 3 : 1
            if i + quotes <= c.count, c[i..<(i + quotes)].allSatisfy({ $0 == "\"" }), hashesAt(i + quotes) {
                stack.removeLast()
                return i + quotes + hashes
            }
        }
        return i + 1
    }
}

/// Lua functions by layout: `function` (or `local function`, `name = function`) opening a line,
/// ended by the first line at its indentation that starts with `end` (one-line ones skipped).
enum LuaFunctions {
    static func scan(_ text: String) -> [SwiftFunctions.Function] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let opening = try! Regex(#"^(\s*)((local\s+)?function\s+([\w.:]+)|([\w.\[\]"]+)\s*=\s*function\b)"#)
        var found: [SwiftFunctions.Function] = []
        for (n, line) in lines.enumerated() where line.contains("function") {
            guard let m = line.firstMatch(of: opening), line.firstMatch(of: /\bend\)?,?\s*$/) == nil else { continue }
            let indent = m.output[1].substring?.count ?? 0
            let name = String(m.output[4].substring ?? m.output[5].substring ?? "?")
            for k in (n + 1)..<lines.count {
                let l = lines[k]
                let lead = l.prefix { $0 == " " }.count
                if lead == indent, l.dropFirst(lead).hasPrefix("end") {
                    found.append(SwiftFunctions.Function(name: name, line: n + 1, lines: k - n + 1))
                    break
                }
            }
        }
        return found
    }
}
