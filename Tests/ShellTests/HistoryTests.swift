import BatonBase
@testable import BatonCLI
import BatonCore
import Glibc
import Testing

/// The history file: bounded, libedit's format, multi-line entries whole, written safely.
@Suite struct HistoryTests {
    @Test func savedBoundedWithMultiLineEntriesWhole() throws {
        let dir = "/tmp/baton-shell-history-\(getpid())-\(Int(Clock.now() * 1000))"
        let path = dir + "/nested/history"
        let h = History(path: path, limit: 3)
        for e in ["one", "two", "two", "for i = 1, 2 do\nprint(i)\nend", "four", "five"] { h.add(e) }
        let text = try FileIO.readString(path)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.first == "_HiStOrY_V2_", "libedit's header is intact")
        #expect(lines.count == 4, "the newest 3 entries: \(lines)")
        #expect(lines[1].contains("\\012"), "the chunk's newlines are escaped, one entry: \(lines[1])")
        #expect(lines.last == "five")
        #expect(FileIO.list(dir + "/nested").filter { $0.contains(".tmp") }.isEmpty, "no temporary file left")
    }
}
