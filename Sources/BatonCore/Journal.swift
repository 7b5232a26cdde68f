import Glibc

/// The append-only event log of a run. One `write` per event, so an event whose
/// `append` returned is in the file even if the process dies the next instant;
/// `fdatasync` for the events resume depends on. Seq numbers are never reused.
public final class JournalWriter: @unchecked Sendable {
    public static let schemaVersion: Int64 = 1
    /// Event types that are flushed to disk before `append` returns. fdatasync flushes
    /// every earlier line too, so run_started and run_resumed need no flush of their own:
    /// resume relies on stage_finished, and nothing runs before the first of those.
    public static let durableTypes: Set<String> = ["stage_finished", "final", "gate", "preflight"]

    public let path: String
    public let runID: String
    private var fd: Int32
    private var size: off_t
    public private(set) var lastSeq: Int64
    private var mutex = pthread_mutex_t()
    /// Set by benchmarks and tests that measure without durability; never by users.
    public var syncEnabled = true

    public init(path: String, runID: String, lastSeq: Int64 = 0) throws {
        self.path = path
        self.runID = runID
        self.lastSeq = lastSeq
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("open", path) }
        var st = stat()
        fstat(fd, &st)
        size = st.st_size
        pthread_mutex_init(&mutex, nil)
    }

    deinit {
        if fd >= 0 { close(fd) }
        pthread_mutex_destroy(&mutex)
    }

    /// Appends an event; returns its seq. On a write error the file is cut back to
    /// its last whole line, so a full disk never leaves a torn line in the middle.
    @discardableResult
    public func append(_ type: String, _ fields: [(String, JSON)], sync: Bool? = nil) throws -> Int64 {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let seq = lastSeq + 1
        var out: [UInt8] = []
        out.reserveCapacity(192)
        out.append(contentsOf: "{\"v\":1,\"seq\":".utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: ",\"ts\":\"".utf8)
        out.append(contentsOf: Clock.rfc3339(Clock.now()).utf8)
        out.append(contentsOf: "\",\"run\":".utf8)
        JSON.encodeString(runID, into: &out)
        out.append(contentsOf: ",\"type\":".utf8)
        JSON.encodeString(type, into: &out)
        for (k, v) in fields {
            out.append(UInt8(ascii: ","))
            JSON.encodeString(k, into: &out)
            out.append(UInt8(ascii: ":"))
            v.encode(into: &out, pretty: false, indent: 0)
        }
        out.append(contentsOf: "}\n".utf8)
        do {
            try out.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
        } catch {
            _ = ftruncate(fd, size)
            throw error
        }
        size += off_t(out.count)
        lastSeq = seq
        if syncEnabled, sync ?? JournalWriter.durableTypes.contains(type) {
            if fdatasync(fd) != 0 { throw SystemError("fdatasync", path) }
        }
        return seq
    }
}

/// What a reader found in a journal: the events, a torn tail (skipped), and any
/// corrupt lines in the middle (reported with their 1-based line number).
public struct JournalContents {
    public var events: [JSON] = []
    public var corrupt: [(line: Int, message: String)] = []
    /// A last line with no newline or that does not parse: a write cut short.
    public var tornTail = false
    /// Bytes up to the end of the last good line (resume truncates here).
    public var validLength = 0
    public init() {}
    public var lastSeq: Int64 { events.last.flatMap { $0["seq"]?.intValue } ?? 0 }

    public var problems: [String] {
        corrupt.map { "line \($0.line): \($0.message)" } + (tornTail ? ["last line is torn (skipped)"] : [])
    }
}

public enum JournalReader {
    public static func read(_ path: String) throws -> JournalContents {
        let bytes = try FileIO.readFile(path)
        return parse(bytes)
    }

    /// Never throws and never crashes, whatever the bytes.
    public static func parse(_ bytes: [UInt8]) -> JournalContents {
        var c = JournalContents()
        c.validLength = bytes.count
        bytes.withUnsafeBufferPointer { buf in
            var start = 0
            var lineNo = 0
            while start < buf.count {
                lineNo += 1
                var end = start
                while end < buf.count, buf[end] != 10 { end += 1 }
                let hasNewline = end < buf.count
                let isLast = !hasNewline || end + 1 >= buf.count
                let slice = UnsafeBufferPointer(rebasing: buf[start..<end])
                if !slice.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) {
                    var problem: String? = nil
                    var event: JSON? = nil
                    do {
                        let v = try JSON.parse(slice, maxDepth: 128)
                        if case .object = v { event = v } else { problem = "not a JSON object" }
                    } catch {
                        problem = "invalid JSON (\(error))"
                    }
                    if isLast, !hasNewline || problem != nil {
                        // A write cut short: skipped, and cut off before anything is appended.
                        c.tornTail = true
                        c.validLength = start
                    } else if let problem {
                        c.corrupt.append((lineNo, problem))
                    } else if let event {
                        c.events.append(event)
                    }
                } else if !hasNewline {
                    c.validLength = start
                }
                start = end + 1
            }
        }
        return c
    }
}
