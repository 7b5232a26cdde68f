import BatonBase
@testable import BatonCore
import Foundation
import Glibc
import Testing

func tempDir() -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("baton-core-\(UUID().uuidString.prefix(8))").path
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct JournalTests {
    @Test func writerAppendsOneLinePerEventWithIncreasingSeq() throws {
        let p = tempDir() + "/journal.jsonl"
        let w = try JournalWriter(path: p, runID: "r1")
        let began = RunBegan(recipe: "x.lua", recipeSHA256: "", args: [], pid: 1, host: "h", dryRun: false, cwd: "/")
        #expect(try w.append(.runStarted(began)).seq == 1)
        #expect(try w.append(.log(LogRecord(level: .info, message: "a \"quoted\"\nline"))).seq == 2)
        let c = try JournalReader.read(p)
        #expect(c.events.count == 2 && c.corrupt.isEmpty && !c.tornTail)
        guard case let .log(l) = c.events[1].body else { Issue.record("not a log event"); return }
        #expect(l.message == "a \"quoted\"\nline")
        #expect(c.events.map(\.seq) == [1, 2])
        let raw = try FileIO.readString(p).split(separator: "\n").map { try JSON.parse(String($0)) }
        #expect(raw.allSatisfy { $0["v"]?.intValue == 1 && $0["run"]?.stringValue == "r1" && $0["ts"]?.stringValue?.hasSuffix("Z") == true })
        // A second writer continuing the run never reuses a seq.
        let w2 = try JournalWriter(path: p, runID: "r1", lastSeq: c.lastSeq)
        #expect(try w2.append(.runResumed(began)).seq == 3)
    }

    @Test func readerSkipsATornTail() throws {
        let good = #"{"v":1,"seq":1,"type":"a"}"# + "\n" + #"{"v":1,"seq":2,"type":"b"}"# + "\n"
        for tail in [#"{"v":1,"seq":3,"ty"#, #"{"v":1,"seq":3,"type":"c"}"#, "garbage\n"] {
            let c = JournalReader.parse(Array((good + tail).utf8))
            #expect(c.events.count == 2, "tail: \(tail)")
            #expect(c.tornTail)
            #expect(c.corrupt.isEmpty)
            #expect(c.validLength == good.utf8.count)
        }
        let clean = JournalReader.parse(Array(good.utf8))
        #expect(!clean.tornTail && clean.validLength == good.utf8.count)
    }

    @Test func readerReportsACorruptMiddleLineWithItsNumber() throws {
        let text = #"{"v":1,"seq":1,"type":"a"}"# + "\n" + "{not json\n" + #"{"v":1,"seq":3,"type":"a"}"# + "\n" + "[1,2]\n"
            + #"{"v":1,"seq":5,"type":"a"}"# + "\n"
        let c = JournalReader.parse(Array(text.utf8))
        #expect(c.events.count == 3)
        #expect(c.corrupt.map(\.line) == [2, 4])
        #expect(!c.tornTail)
    }

    /// A journal over the threshold is parsed in two halves on two threads: the result must be
    /// the one-thread result, whatever falls near the cut (corrupt lines in either half, with
    /// their numbers in the whole file; a torn tail; blank lines).
    @Test func aLongJournalParsedInHalvesReadsAsInOnePiece() {
        let good = #"{"v":1,"seq":1,"ts":"2026-11-23T00:00:00.000Z","run":"r","type":"log","level":"info","message":"a line of some length to fill the journal"}"#
        var lines: [String] = []
        while lines.count * good.utf8.count < 3 << 20 { lines.append(good) }
        for (i, bad) in [(7, "{not json"), (lines.count / 2, "[1,2]"), (lines.count / 2 + 1, ""), (lines.count - 3, "garbage")] {
            lines[i] = bad
        }
        for tail in ["", #"{"v":1,"seq":9,"ty"#] {
            let text = lines.joined(separator: "\n") + "\n" + tail
            let bytes = Array(text.utf8)
            #expect(bytes.count > 2 * (1 << 20))
            let whole = JournalReader.parse(bytes)
            let one = bytes.withUnsafeBufferPointer { JournalReader.parseLines($0, from: 0, to: $0.count, final: true).contents }
            #expect(whole.events.count == one.events.count && whole.events.count == lines.count - 4)
            #expect(whole.corrupt.map(\.line) == one.corrupt.map(\.line))
            #expect(whole.corrupt.map(\.line) == [8, lines.count / 2 + 1, lines.count - 2])
            #expect(whole.tornTail == !tail.isEmpty && whole.tornTail == one.tornTail)
            #expect(whole.validLength == one.validLength && whole.validLength == bytes.count - tail.utf8.count)
            #expect(whole.events.map(\.seq) == one.events.map(\.seq))
        }
    }

    @Test func readerNeverCrashesOnRandomBytes() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let n = Int.random(in: 0..<400, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if Bool.random() { bytes += Array(#"{"seq":1}"#.utf8) + [10] }
            let c = JournalReader.parse(bytes)
            #expect(c.validLength <= bytes.count)
        }
    }

    /// A full disk: the append throws a "no space" error and the seq is not used up.
    /// (The file-size-limit case, with its no-torn-line check, runs in a child process in
    /// ReliabilityTests.aFullDiskIsReportedAndResumable: a limit set here would hit every
    /// test running in parallel.)
    @Test func aFullDiskIsAnErrorAndTheSeqIsNotUsedUp() throws {
        let w = try JournalWriter(path: "/dev/full", runID: "r")
        do {
            try w.append(.log(LogRecord(level: .info, message: "x")))
            Issue.record("writing to /dev/full succeeded")
        } catch let e as SystemError {
            #expect(e.isNoSpace)
            #expect("\(e)".contains("no space left on device"))
        }
        #expect(w.lastSeq == 0)
    }
}

@Suite struct AtomicWriteTests {
    @Test func replacesWholeAndLeavesNoTemp() throws {
        let d = tempDir()
        let p = d + "/final.json"
        try FileIO.writeAtomically(p, Array("one".utf8))
        try FileIO.writeAtomically(p, Array("two".utf8), mode: 0o600)
        #expect(try FileIO.readString(p) == "two")
        #expect(try FileManager.default.contentsOfDirectory(atPath: d) == ["final.json"])
        let mode = try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    @Test func aReaderNeverSeesHalf() throws {
        let p = tempDir() + "/f.json"
        let a = Array(String(repeating: "a", count: 200_000).utf8), b = Array(String(repeating: "b", count: 100_000).utf8)
        try FileIO.writeAtomically(p, a)
        let writer = Thread { for i in 0..<200 { try? FileIO.writeAtomically(p, i % 2 == 0 ? b : a) } }
        writer.start()
        for _ in 0..<500 {
            let got = (try? FileIO.readFile(p)) ?? []
            #expect(got == a || got == b)
        }
        while writer.isExecuting { usleep(1000) }
    }

    @Test func appendLockedFromManyThreads() throws {
        let p = tempDir() + "/reg.jsonl"
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<50 { try! FileIO.appendLocked(p, Array("{\"t\":\(t),\"i\":\(i)}\n".utf8)) }
        }
        let lines = try FileIO.readString(p).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 401 && lines.last == "")
        #expect(lines.dropLast().allSatisfy { (try? JSON.parse(String($0)))?["t"] != nil })
    }
}
