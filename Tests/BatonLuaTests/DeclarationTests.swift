import BatonBase
import BatonCore
@testable import BatonLua
import Foundation
import LuaKit
import Testing

/// Issue 23 item 7: every primitive's fields are declared once (PrimitiveFields.swift). The
/// runtime, `baton check` (kit.lint) and docs/primitives.md are held to that declaration here;
/// `baton types` prints it (TypesTests).
@Suite struct DeclarationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func env() throws -> RecipeEnvironment {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("baton-decl-\(UUID().uuidString.prefix(8))").path
        let e = RecipeEnvironment(memoryLimit: 256 << 20, output: OutputOptions(json: true, quiet: true))
        e.context = try RunContext.start(store: RunStore(root: root), id: nil, recipe: "t.lua", recipeText: [], args: [], dryRun: false)
        e.publishRun()
        e.setArguments(recipe: "t.lua", words: [])
        return e
    }

    func run(_ code: String) throws -> Ending {
        RecipeRunner.evaluate(env: try env(), recipe: "t.lua", text: Array(code.utf8), readError: nil)
    }

    /// A call of each primitive with a declared choice field, legal but for `%s` (where the
    /// field goes), that runs quickly here.
    static func templates() -> [(String, [FieldDecl], String)] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("baton-decl-file").path
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        return [
            ("runStage", PrimitiveFields.runStage, "runStage{id = 'x', cmd = 'true', %s}"),
            ("watch", PrimitiveFields.watch, "watch{id = 'w', file = '\(file)', %s}"),
            ("preflight", PrimitiveFields.preflight, "preflight{checks = {{env = 'PATH'}}, %s}"),
            ("preflight.checks[]", PrimitiveFields.preflightCheck, "preflight{checks = {{env = 'PATH', %s}}}"),
            ("parallel#3", PrimitiveFields.parallelOptions, "parallel({1}, function(i) return i end, {%s})"),
            ("persistFinal#2", PrimitiveFields.persistFinalOptions, "persistFinal({a = 1}, {%s})"),
            ("baton.sh#2", PrimitiveFields.shOptions, "baton.sh('true', {%s})"),
            ("gate", PrimitiveFields.gate, "gate{name = 'g', check = function() return {approved = true} end, %s}"),
            ("baton.log#2", PrimitiveFields.logFields, "baton.log('m', {%s})"),
            ("baton.fs.write#3", PrimitiveFields.fsWriteOptions, "baton.fs.write('\(file)', 'x', {%s})"),
            ("baton.fs.locked#3", PrimitiveFields.fsLockedOptions, "baton.fs.locked('\(file).lock', function() end, {%s})"),
            ("baton.fail#2", PrimitiveFields.failOptions, "baton.fail('x', {%s})"),
        ]
    }

    func literal(_ f: FieldDecl, _ value: String) -> String {
        "\(f.name) = " + (f.kind == .stringList ? "{'\(value)'}" : "'\(value)'")
    }

    /// Every declared choice is accepted by the runtime and by `baton check`; any other string
    /// is refused by both; so is an undeclared field.
    @Test func declaredChoicesAreWhatTheRuntimeAndCheckAcceptAndReject() throws {
        let lintEnv = RecipeEnvironment(memoryLimit: 256 << 20, output: OutputOptions(json: true, quiet: true))
        func lint(_ src: String) -> [RecipeCheck.Finding] { RecipeCheck.lint(lintEnv, src, file: "t.lua") }
        var tested = Set<String>()
        for (key, decls, template) in Self.templates() {
            let unknown = template.replacingOccurrences(of: "%s", with: "zzNotAField = 1")
            let r = try run(unknown)
            if PrimitiveFields.open.contains(key) {
                #expect(r.code == 0 && lint(unknown).isEmpty, "\(key) takes any field: \(r.reason ?? "")")
            } else {
                #expect(r.code == 3 && (r.reason ?? "").contains("zzNotAField"), "\(key): \(r.reason ?? "")")
                #expect(lint(unknown).contains { $0.code == "unknown-field" && $0.message.contains("zzNotAField") }, "\(key): check")
            }
            for f in decls where !f.choices.isEmpty {
                tested.insert("\(key).\(f.name)")
                for c in f.choices {
                    let src = template.replacingOccurrences(of: "%s", with: literal(f, c))
                    #expect(lint(src).isEmpty, "\(key).\(f.name) = \(c): check refuses it: \(lint(src).map(\.text))")
                    // The executors are the registry's own list; a Slurm stage would need Slurm.
                    if f.name == "executor" && c != "local" { continue }
                    let ok = try run(src)
                    #expect(ok.code == 0, "\(key).\(f.name) = \(c): the runtime refuses it: \(ok.reason ?? "")")
                }
                let bad = template.replacingOccurrences(of: "%s", with: literal(f, "zzbogus"))
                let no = try run(bad)
                #expect(no.code == 3 && (no.reason ?? "").contains(f.name), "\(key).\(f.name) = zzbogus: \(no.reason ?? "")")
                #expect(lint(bad).contains { $0.code == "field-value" },
                        "\(key).\(f.name) = zzbogus: check says ok")
            }
        }
        #expect(tested.isSuperset(of: ["runStage.retryOn", "runStage.waitFor", "runStage.executor", "watch.onMissing",
                                      "preflight.policy", "parallel#3.onFailure"]), "\(tested)")
        // Every table kit.lint is given has a template here.
        let keys = Set(Self.templates().map(\.0))
        for (key, decls) in PrimitiveFields.linted where decls.contains(where: { !$0.choices.isEmpty }) {
            #expect(keys.contains(key), "no runtime template for \(key)")
        }
    }

    /// Every declared field's type is what the runtime checks and what check checks: a value of
    /// another type is refused by both, naming the field.
    @Test func declaredTypesAreWhatTheRuntimeAndCheckRefuse() throws {
        let lintEnv = RecipeEnvironment(memoryLimit: 256 << 20, output: OutputOptions(json: true, quiet: true))
        func lint(_ src: String) -> [RecipeCheck.Finding] { RecipeCheck.lint(lintEnv, src, file: "t.lua") }
        // Where the field is read only with others, or is one of several kinds or targets.
        func template(_ key: String, _ field: String, _ base: String) -> String {
            switch (key, field) {
            case ("preflight.checks[]", "dir"), ("preflight.checks[]", "executable"): return "preflight{checks = {{path = '.', %s}}}"
            case ("preflight.checks[]", "cwd"), ("preflight.checks[]", "timeout"): return "preflight{checks = {{cmd = 'true', %s}}}"
            case ("preflight.checks[]", _) where PrimitiveFields.preflightCheckKinds.contains(field): return "preflight{checks = {{%s}}}"
            case ("watch", _) where PrimitiveFields.watchTargets.contains(field): return "watch{id = 'w', %s}"
            case ("gate", "check"), ("gate", "cmd"): return "gate{name = 'g', %s}"
            default: return base
            }
        }
        for (key, decls, base) in Self.templates() {
            for f in decls {
                // A value another kind would take, so a field declared with the wrong kind is caught.
                let wrong: String
                switch f.kind {
                case .string, .command, .stringList, .paths: wrong = "1"
                case .number, .integer, .boolean, .table, .function: wrong = "'x'"
                }
                let src = template(key, f.name, base).replacingOccurrences(of: "%s", with: "\(f.name) = \(wrong)")
                let r = try run(src)
                #expect(r.code == 3 && ((r.reason ?? "").contains("'\(f.name)'") || (r.reason ?? "").contains(" \(f.name) must") || (r.reason ?? "").contains(".\(f.name) must")),
                        "\(src): the runtime: \(r.code) \(r.reason ?? "")")
                #expect(lint(src).contains { $0.code == "field-type" && $0.message.contains("'\(f.name)'") }, "\(src): check: \(lint(src).map(\.text))")
            }
        }
    }

    /// The declared combinations (exactly one of a gate's check and cmd, of a preflight
    /// check's kinds; at most one thing a watch waits for, and something to wait for): what the
    /// runtime refuses, check refuses; what may be legal (a value computed at run time), it passes.
    @Test func combinationsAreRefusedByBoth() throws {
        let lintEnv = RecipeEnvironment(memoryLimit: 256 << 20, output: OutputOptions(json: true, quiet: true))
        func lint(_ src: String) -> [RecipeCheck.Finding] { RecipeCheck.lint(lintEnv, src, file: "t.lua") }
        let refused = [
            "gate{name = 'g', check = function() return {approved = true} end, cmd = 'true'}",
            "gate{name = 'g'}",
            "preflight{checks = {{name = 'x'}}}",
            "preflight{checks = {{env = 'PATH', path = '.'}}}",
            "watch{id = 'w', pid = 1, file = 'x'}",
            "watch{id = 'w'}",
        ]
        for src in refused {
            let r = try run(src)
            #expect(r.code == 3, "\(src): the runtime: \(r.reason ?? "")")
            #expect(lint(src).contains { $0.code == "field-combination" }, "\(src): check: \(lint(src).map(\.text))")
        }
        let maybe = [
            "local c = true\ngate{name = 'g', check = c and function() return {approved = true} end or nil, cmd = (not c) and 'true' or nil}",
            "local t = {env = 'PATH'}\npreflight{checks = {t}}",
            "local p = nil\nwatch{id = 'w', pid = p, file = 'x'}",
        ]
        for src in maybe { #expect(lint(src).isEmpty, "\(src): \(lint(src).map(\.text))") }
        // Every declared combination's table is one kit.lint looks into.
        for c in PrimitiveFields.combinations { #expect(PrimitiveFields.linted.contains { $0.0 == c.key }, "\(c.key)") }
    }

    /// kit.lint has no field tables of its own: all come from the declaration.
    @Test func lintReadsTheDeclaration() throws {
        let lint = try String(contentsOfFile: Self.root + "/scripts-lua/kit/lint.lua", encoding: .utf8)
        for own in ["M.fieldTypes", "M.fieldValues", "M.arity"] { #expect(!lint.contains(own), "lint.lua declares \(own) itself") }
        let spec = RecipeEnvironment.lintSpec
        for (key, decls) in PrimitiveFields.linted {
            #expect(spec["fields"]?[key] == .array(decls.map { .string($0.name) }) || key == "runStage", "\(key)")
        }
    }

    /// docs/primitives.md's field tables list exactly the declared fields, with the declared
    /// types and defaults where the table has those columns.
    @Test func docsTablesMatchTheDeclaration() throws {
        let doc = try String(contentsOfFile: Self.root + "/docs/primitives.md", encoding: .utf8)
        let lines = doc.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        // (BatonCoreTests registers a "fake" executor in this same test process: not a user's.)
        let executors: [FieldDecl] = RecipeEnvironment.optionedKinds.filter { $0.name != "fake" }.map { FieldDecl($0.name, .table, type: "table") }
        let stage = PrimitiveFields.runStage.map { f in
            f.name != "executor" ? f : FieldDecl(f.name, f.kind, choices: f.choices.filter { $0 != "fake" }, default: f.docDefault)
        }
        let sections: [(String, [FieldDecl])] = [
            ("## runStage(", stage + executors), ("## parallel(", PrimitiveFields.parallelOptions),
            ("## preflight(", PrimitiveFields.preflight), ("## watch(", PrimitiveFields.watch), ("## gate(", PrimitiveFields.gate),
        ]
        func cells(_ row: String) -> [String] {
            row.trimmingCharacters(in: .whitespaces).dropFirst().dropLast().split(separator: "|", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        for (heading, decls) in sections {
            let start = try #require(lines.firstIndex { $0.hasPrefix(heading) }, "\(heading)")
            let header = try #require(lines[start...].firstIndex { $0.hasPrefix("|") })
            let columns = cells(lines[header])
            var documented: [String] = []
            for row in lines[(header + 2)...].prefix(while: { $0.hasPrefix("|") }) {
                let c = cells(row)
                // `handle` / `pid` / `pattern` / `file`: one row for several fields.
                let names = c[0].components(separatedBy: " / ").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
                documented += names
                for n in names {
                    guard let d = decls[field: n] else { continue }
                    if let i = columns.firstIndex(of: "type") { #expect(c[i] == d.docType, "\(heading) \(n): type '\(c[i])', declared '\(d.docType)'") }
                    if let i = columns.firstIndex(of: "default") {
                        #expect(c[i] == d.docDefault, "\(heading) \(n): default '\(c[i])', declared '\(d.docDefault)'")
                    }
                }
            }
            #expect(Set(documented) == Set(decls.names), "\(heading) missing: \(Set(decls.names).subtracting(documented)), extra: \(Set(documented).subtracting(decls.names))")
            #expect(documented.count == Set(documented).count, "\(heading): a field documented twice")
        }
    }
}
