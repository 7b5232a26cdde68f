@testable import BatonBase
@testable import BatonCore
import Foundation
import Testing

/// The typed run record: journals written by version 0.1 still read, docs/journal.md and
/// docs/guide.md say exactly what the code writes and returns.
@Suite struct RecordTests {
    static let root: String = {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { u.deleteLastPathComponent() }
        return u.path
    }()
    static let fixtures = root + "/Tests/Fixtures/journal-v0.1"

    func history(_ name: String) throws -> (RunHistory, JournalContents) {
        let c = try JournalReader.read(Self.fixtures + "/\(name)/journal.jsonl")
        return (RunHistory(c.events), c)
    }

    @Test func aResumedRunFromVersion01Folds() throws {
        let (h, c) = try history("resumed")
        #expect(c.corrupt.isEmpty && !c.tornTail)
        #expect(!c.events.contains { if case .unknown = $0.body { return true }; return false }, "every 0.1 type is known")
        #expect(h.lives == 2)
        #expect(h.firstStart?.began.recipe == "all.lua" && h.firstStart?.began.args == ["a=1"])
        // One entry per stage call (id, occurrence), whatever the resume replayed or re-ran.
        #expect(h.concluded.map(\.key) == [StageKey(id: "build", occurrence: 1), StageKey(id: "flaky", occurrence: 1),
                                           StageKey(id: "build", occurrence: 2), StageKey(id: "job", occurrence: 1)])
        #expect(h.stage(StageKey(id: "build", occurrence: 1))?.replayed == true)
        #expect(h.stage(StageKey(id: "flaky", occurrence: 1))?.status == .ended(.failed))
        #expect(h.stage(StageKey(id: "flaky", occurrence: 1))?.finished?.attempt == 2)
        // A call's length runs from its first attempt's start to its last attempt's end (backoff included).
        let flaky = try #require(h.stage(StageKey(id: "flaky", occurrence: 1)))
        #expect(flaky.startedAt != nil && flaky.durationMs >= 50, "flaky: \(flaky.durationMs) ms")
        #expect(Set(h.replayable.keys) == [StageKey(id: "build", occurrence: 1), StageKey(id: "build", occurrence: 2),
                                           StageKey(id: "job", occurrence: 1)])
        #expect(h.final?.event.status == .succeeded)
        #expect(h.attempts(of: "flaky").count == 4, "two attempts in each life")
        #expect(h.logNumbers["flaky"] == 4)
        #expect(h.watches.first?.state == .completed)
        // Its final.json reads as the one FinalRecord type.
        let bytes = try FileIO.readFile(Self.fixtures + "/resumed/final.json")
        let f = try #require(FinalRecord(json: try JSON.parse(bytes)))
        #expect(f.status == .succeeded && f.exitCode == 0 && f.result["done"] == .bool(true))
    }

    @Test func anOrphanedRunFromVersion01ShowsWhereItDied() throws {
        let (h, _) = try history("orphaned")
        #expect(h.final == nil)
        let cur = try #require(h.current)
        #expect(cur.kind == "stage" && cur.id == "long")
        #expect(cur.since > 1_700_000_000, "since is when it started, not the epoch")
        #expect(h.concluded.map(\.key.id) == ["first"])
        #expect(h.running.map(\.key.id) == ["long"])
    }

    @Test func aDryRunFromVersion01Reads() throws {
        let (h, c) = try history("dry")
        #expect(c.events.first.map { if case let .runStarted(b) = $0.body { return b.dryRun }; return false } == true)
        #expect(h.concluded.allSatisfy { $0.dry && $0.status == .ended(.passed) })
        // 0.1 wrote a dry shell command's text under "argv".
        guard case let .stageFinished(f) = c.events[3].body else { Issue.record("not stage_finished"); return }
        #expect(f.key.id == "flaky" && f.dry)
    }

    @Test func everyEventRoundTripsThroughItsEncoderAndDecoder() throws {
        for name in ["resumed", "dry", "orphaned"] {
            let lines = try FileIO.readString(Self.fixtures + "/\(name)/journal.jsonl").split(separator: "\n")
            for line in lines {
                let e = try #require(JournalEvent(try JSON.parse(String(line))))
                let again = try #require(JournalEvent(try JSON.parse(e.encoded())))
                #expect(again.encoded() == e.encoded(), "\(e.type) changes on a second round trip")
                #expect(again.seq == e.seq && again.type == e.type)
            }
        }
    }

    /// docs/journal.md lists each type as "- `type`: `field`, `field`, ...": exactly the fields
    /// its encoder can write (JournalSchemaTests checks what real runs write).
    @Test func journalDocListsExactlyTheFieldsOfEachType() throws {
        let documented = try Self.documentedFields()
        for (type, fields) in EventBody.schema {
            let doc = try #require(documented[type], "docs/journal.md does not document \(type)")
            #expect(Set(doc) == Set(fields), "\(type): documented \(doc.sorted()) vs written \(fields.sorted())")
        }
        #expect(Set(documented.keys) == Set(EventBody.schema.map(\.type)), "documented types that are never written")
    }

    /// docs/journal.md lists a watch's `details` keys (the {...} groups in its entry): exactly
    /// WatchDetails's.
    @Test func journalDocListsExactlyTheWatchDetailsKeys() throws {
        let doc = try FileIO.readString(Self.root + "/docs/journal.md")
        let entry = try #require(doc.components(separatedBy: "\n- `watch`: ").dropFirst().first?
            .components(separatedBy: "\n- `").first)
        var documented: Set<String> = []
        for group in entry.components(separatedBy: "{").dropFirst() {
            let inside = group.components(separatedBy: "}")[0]
            if inside.isEmpty { continue }   // (`{}`: nothing)
            for w in inside.split(whereSeparator: { $0 == "," || $0 == " " || $0 == "\n" }) { documented.insert(String(w)) }
        }
        #expect(documented == Set(WatchDetails.Key.names), "documented \(documented.sorted())")
    }

    /// The typed watch payload reads the 0.1 journals and writes their lines back unchanged;
    /// keys it does not know are kept.
    @Test func watchDetailsAreTypedAndTheWireUnchanged() throws {
        let lines = try FileIO.readString(Self.fixtures + "/resumed/journal.jsonl").split(separator: "\n")
        var queued = 0
        for line in lines where line.contains("\"type\":\"watch\"") {
            let e = try #require(JournalEvent(try JSON.parse(String(line))))
            #expect(String(decoding: e.encoded(), as: UTF8.self) == String(line))
            guard case let .watch(w) = e.body else { Issue.record("not a watch"); continue }
            if w.to == .queued {
                queued += 1
                #expect(w.details.settings == WatchDetails.Settings(requireFiles: ["/tmp/fx/out/m.json"], readyTimeoutSec: 5,
                                                                    readyPollSec: 5, onMissing: .fail, timeoutSec: 86400))
            }
            if w.to == .awaiting_artifacts { #expect(w.details.files == ["/tmp/fx/out/m.json"]) }
        }
        #expect(queued == 2)
        let newer = try JSON.parse(#"{"missing": ["a"], "hint": {"x": 1}}"#)
        let d = WatchDetails(newer)
        #expect(d.missing == ["a"] && d.settings == nil && d.stage == nil)
        #expect(d.json.encoded() == newer.encoded(), "a newer writer's key is kept")
    }

    /// A fold or view that ignores an event says which ones: no `default:` in a switch over
    /// an event's body (in Sources, or in EventBody's own switches over `self`), so a new event
    /// type makes every such switch fail to compile until it is handled or named as ignored.
    /// The parser's interned keys (KnownKeys, in BatonBase, which cannot see the records)
    /// are keys some record declares: a renamed key cannot leave a stale name behind.
    @Test func theParsersKnownKeysAreDeclaredRecordKeys() {
        var declared = Set(JournalEvent.Key.allCases.map(\.rawValue))
        declared.formUnion(StageLogs.Key.allCases.map(\.rawValue))
        declared.formUnion(EventKind.allCases.flatMap(\.fieldNames))
        declared.formUnion(FingerprintParts.names)   // the keys of `fingerprint_parts`
        let stale = KnownKeys.names.filter { !declared.contains($0) }
        #expect(stale.isEmpty, "KnownKeys names no record's key: \(stale)")
    }

    @Test func noSwitchOverEventsHidesANewOne() throws {
        let walk = FileManager.default.enumerator(at: URL(fileURLWithPath: Self.root + "/Sources"),
                                                  includingPropertiesForKeys: nil)!
        var switches = 0
        for case let url as URL in walk where url.pathExtension == "swift" {
            let lines = try String(contentsOf: url, encoding: .utf8).components(separatedBy: "\n")
            var inEventBody = false
            for (i, line) in lines.enumerated() {
                if line.hasPrefix("public enum EventBody") || line.hasPrefix("extension EventBody") { inEventBody = true }
                else if !line.hasPrefix(" "), !line.hasPrefix("}"), !line.isEmpty { inEventBody = false }
                let t = line.trimmingCharacters(in: .whitespaces)
                guard t.hasPrefix("switch "), t.hasSuffix("body {") || (inEventBody && t == "switch self {") else { continue }
                switches += 1
                // the switch's own cases: lines at its indentation until its closing brace
                let indent = line.prefix { $0 == " " }.count
                for l in lines[(i + 1)...] {
                    let lead = l.prefix { $0 == " " }.count
                    if lead == indent, l.trimmingCharacters(in: .whitespaces) == "}" { break }
                    #expect(!(lead == indent && l.trimmingCharacters(in: .whitespaces).hasPrefix("default:")),
                            "\(url.lastPathComponent):\(i + 1): a default: over journal events")
                }
            }
        }
        #expect(switches >= 8, "the scan found the switches over events (\(switches))")
    }

    /// The guide's exit-code table is ExitStatus's table.
    @Test func guideExitCodeTableIsExitStatus() throws {
        let guide = try FileIO.readString(Self.root + "/docs/guide.md")
        var rows: [String] = []
        var inTable = false
        for line in guide.split(separator: "\n") {
            if line.hasPrefix("| exit code |") { inTable = true; continue }
            guard inTable else { continue }
            guard line.hasPrefix("|") else { break }
            let code = line.split(separator: "|").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if !code.hasPrefix("-") { rows.append(code) }
        }
        #expect(rows == ExitStatus.table.map(\.codes))
        #expect(ExitStatus.success.rawValue == 0 && ExitStatus.failure.rawValue == 1 && ExitStatus.gateExhausted.rawValue == 2)
        #expect(ExitStatus.usage.rawValue == 3 && ExitStatus.preflightFailed.rawValue == 4)
        #expect(ExitStatus.recipeChosen == 5...99)
        #expect("\(ExitStatus.hangup.rawValue) / \(ExitStatus.interrupted.rawValue) / \(ExitStatus.terminated.rawValue)" == rows.last)
    }

    /// docs/cli.md's settings table is `Settings.all`, and nothing but Settings.swift reads a
    /// BATON_* variable with getenv (a new setting has to be declared to be read).
    @Test func settingsTableIsSettingsAndTheOnlyReader() throws {
        let cli = try FileIO.readString(Self.root + "/docs/cli.md")
        var rows: [(String, String)] = []
        for line in cli.split(separator: "\n") where line.hasPrefix("| `BATON_") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            rows.append((cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`")), cells[2]))
        }
        #expect(rows.map(\.0) == Settings.all.map(\.name))
        #expect(rows.map(\.1) == Settings.all.map(\.defaultText))
        let sources = URL(fileURLWithPath: Self.root + "/Sources")
        let walk = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!
        for case let url as URL in walk where url.pathExtension == "swift" && url.lastPathComponent != "Settings.swift" {
            let text = try String(contentsOf: url, encoding: .utf8)
            #expect(!text.contains("getenv(\"BATON_"), "\(url.path) reads a BATON_ variable itself")
        }
    }

    static func documentedFields() throws -> [String: [String]] {
        let doc = try FileIO.readString(root + "/docs/journal.md")
        var out: [String: [String]] = [:]
        var current: String? = nil
        var inTypes = false
        for raw in doc.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if line.hasPrefix("Types and their own fields") { inTypes = true; continue }
            if line.hasPrefix("#") { inTypes = false }
            guard inTypes else { continue }
            if line.hasPrefix("- `"), let close = line.dropFirst(3).firstIndex(of: "`") {
                let type = String(line[line.index(line.startIndex, offsetBy: 3)..<close])
                let rest = line[line.index(after: close)...]
                guard rest.hasPrefix(":") else { current = nil; continue }
                current = type
                out[type] = fieldNames(String(rest))
            } else if let t = current, line.hasPrefix("  ") {
                out[t, default: []] += fieldNames(line)
            } else {
                current = nil
            }
        }
        return out
    }

    /// The `field` names of a documentation line, before any "(" explanation of values.
    static func fieldNames(_ text: String) -> [String] {
        var names: [String] = []
        var depth = 0
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            if c == "(" { depth += 1 } else if c == ")" { depth = max(0, depth - 1) } else if c == "{" { depth += 1 } else if c == "}" {
                depth = max(0, depth - 1)
            } else if c == "`", depth == 0, let close = text[text.index(after: i)...].firstIndex(of: "`") {
                let name = String(text[text.index(after: i)..<close])
                if name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { names.append(name) }
                i = text.index(after: close)
                continue
            }
            i = text.index(after: i)
        }
        return names
    }
}
