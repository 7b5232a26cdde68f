import BatonBase
import Glibc

/// How often the journal is flushed to disk (`baton run --sync`).
public enum SyncPolicy: String, Sendable, CaseIterable {
    /// The default, as SQLite's WAL with synchronous=NORMAL: a process death loses nothing
    /// without any fsync (the page cache survives it); the events resume depends on are
    /// flushed at most ~100 ms after they are written, and final, gate and preflight at once.
    case batched
    /// fdatasync after every event resume depends on: survives power loss, costs a disk
    /// flush per stage.
    case always
    /// Never flush (benchmarks that measure everything else).
    case never
}

/// The append-only event log of a run. One `write` per event, so an event whose
/// `append` returned is in the file even if the process dies the next instant.
/// Seq numbers are never reused.
public final class JournalWriter: @unchecked Sendable {
    public static let schemaVersion: Int64 = 1
    /// How long `.batched` may hold a `.soon` event before flushing it.
    public static let batchWindow = 0.1

    public let path: String
    /// The run directory (the journal's): stage logs inside it are journaled relative to it.
    let runDir: String
    public let runID: String
    private var fd: Int32
    private var size: off_t
    public private(set) var lastSeq: Int64
    private var mutex = pthread_mutex_t()
    public var policy: SyncPolicy
    private var lastSync = 0.0
    /// A flush owed by `.batched` (monotonic time it is due); the event loop wakes for it.
    public private(set) var syncDue: Double?

    public init(path: String, runID: String, lastSeq: Int64 = 0, policy: SyncPolicy = .batched) throws {
        self.path = path
        self.runDir = FileIO.dirname(path)
        self.runID = runID
        self.lastSeq = lastSeq
        self.writtenSeq = lastSeq
        self.policy = policy
        fd = RunDirectory.openFile(path, O_WRONLY | O_APPEND)   // never through a planted link
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

    /// Appends an event; returns it as written. On a write error the file is cut back to
    /// its last whole line, so a full disk never leaves a torn line in the middle.
    /// `deferred`: an event that can be written later with the next one, in one write (group
    /// commit). Only for what a crash may lose without harm: a replayed stage, which the
    /// next resume replays again. Deferred events are written before any other event, when
    /// the event loop waits, at the end of the run, and every 256 KiB.
    @discardableResult
    public func append(_ body: EventBody, at ts: Double = Clock.now(), deferred: Bool = false) throws -> JournalEvent {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        // The event folded by the runner carries its stamp as written: its durations in
        // final.json are the ones a reader's fold of the journal computes.
        let ts = Clock.stamped(ts)
        let seq = lastSeq + 1
        // Paths inside the run directory are journaled relative to it: a moved project's
        // runs still read (readers join them to where the run directory is now).
        JournalEvent.encode(seq: seq,
                            ts: ts,
                            run: runID,
                            body: body.mappingLogs { $0.relative(to: runDir) } ?? body,
                            into: &pending)
        pending.append(10)
        lastSeq = seq
        if deferred && pending.count < 256 << 10 {
            return JournalEvent(seq: seq, ts: ts, run: runID, body: body)
        }
        try write(pending)
        // (Deferred events are never flushed on their own account: losing them costs nothing.)
        try sync(deferred ? .none : body.durability)
        return JournalEvent(seq: seq, ts: ts, run: runID, body: body)
    }

    /// Writes the deferred events, if any.
    public func writePending() throws {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard !pending.isEmpty else { return }
        try write(pending)
    }

    private var pending: [UInt8] = []

    /// The bytes on disk (what a snapshot may describe once the pending events are written).
    public var writtenBytes: Int { Int(size) }

    /// Writes the deferred events, then runs `body` with the file's size while no other event
    /// is appended: a snapshot describes exactly the bytes written.
    func withAllWritten<T>(_ body: (_ size: Int) throws -> T) throws -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if !pending.isEmpty { try write(pending) }
        return try body(Int(size))
    }

    /// Writes `out` (the pending buffer) in one write, then empties the buffer.
    /// On failure the file is cut back and the seqs of what was not written are free again.
    private func write(_ out: [UInt8]) throws {
        defer { pending.removeAll(keepingCapacity: true) }
        do {
            try out.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
        } catch {
            _ = ftruncate(fd, size)
            lastSeq = writtenSeq
            throw error
        }
        size += off_t(out.count)
        writtenSeq = lastSeq
    }

    /// The seq of the last event on disk.
    private var writtenSeq: Int64 = 0

    private func sync(_ d: EventBody.Durability) throws {
        switch (policy, d) {
        case (.never, _), (_, .none): break
        case (.always, _), (.batched, .now): try flush()
        case (.batched, .soon):
            let now = Clock.monotonic()
            if now - lastSync >= JournalWriter.batchWindow { try flush() } else if syncDue == nil {
                syncDue = lastSync + JournalWriter.batchWindow
            }
        }
    }

    /// fdatasync now (flushes every earlier line too).
    public func flush() throws {
        syncDue = nil
        lastSync = Clock.monotonic()
        if fdatasync(fd) != 0 { throw SystemError("fdatasync", path) }
    }

    /// The flush a batch owes, if it is due.
    public func flushIfDue(now: Double) throws {
        if let d = syncDue, now >= d { try flush() }
    }
}

/// What a reader found in a journal: the events, a torn tail (skipped), and any
/// corrupt lines in the middle (reported with their 1-based line number).
public struct JournalContents {
    public var events: [JournalEvent] = []
    public var corrupt: [(line: Int, message: String)] = []
    /// A last line with no newline or that does not parse: a write cut short.
    public var tornTail = false
    /// Bytes up to the end of the last good line (resume truncates here).
    public var validLength = 0
    /// The file's size when it was read (a later reader can tell whether it has changed since).
    public var byteCount = 0
    public init() {}
    public var lastSeq: Int64 { events.last?.seq ?? 0 }

    public var problems: [String] {
        corrupt.map { "line \($0.line): \($0.message)" } + (tornTail ? ["last line is torn (skipped)"] : [])
    }
}

public enum JournalReader {
    public static func read(_ path: String) throws -> JournalContents {
        let bytes = try FileIO.readFile(path)
        return parse(bytes)
    }

    /// Never throws and never crashes, whatever the bytes. A long journal (a resume of
    /// thousands of stages) is cut at a line boundary and its halves parsed on two threads:
    /// parsing is most of a resume's time, and the halves share nothing.
    public static func parse(_ bytes: [UInt8]) -> JournalContents {
        bytes.withUnsafeBufferPointer { buf in
            var mid = buf.count / 2
            while mid < buf.count, buf[mid] != 10 { mid += 1 }
            guard buf.count >= parallelThreshold, mid + 1 < buf.count, sysconf(Int32(_SC_NPROCESSORS_ONLN)) > 1 else {
                return parseLines(buf, from: 0, to: buf.count, final: true).contents
            }
            let second = ParseJob(buf: buf, from: mid + 1, to: buf.count)
            var thread = pthread_t()
            let box = Unmanaged.passRetained(second)
            guard pthread_create(&thread, nil, { ctx in
                let job = Unmanaged<ParseJob>.fromOpaque(ctx!).takeRetainedValue()
                job.run()
                return nil
            }, box.toOpaque()) == 0 else {
                box.release()
                return parseLines(buf, from: 0, to: buf.count, final: true).contents
            }
            var (c, lines) = parseLines(buf, from: 0, to: mid + 1, final: false)
            pthread_join(thread, nil)
            var tail = second.result
            c.validLength = tail.validLength
            c.tornTail = tail.tornTail
            c.events.append(contentsOf: tail.events)
            tail.events = []
            c.corrupt += tail.corrupt.map { (line: $0.line + lines, message: $0.message) }
            return c
        }
    }

    /// Below this a journal is parsed on one thread (starting one costs more than it saves).
    static let parallelThreshold = 1 << 20

    private final class ParseJob: @unchecked Sendable {
        let buf: UnsafeBufferPointer<UInt8>
        let from: Int, to: Int
        var result = JournalContents()
        init(buf: UnsafeBufferPointer<UInt8>, from: Int, to: Int) { self.buf = buf; self.from = from; self.to = to }
        func run() { result = JournalReader.parseLines(buf, from: from, to: to, final: true).contents }
    }

    /// The lines of `buf[from..<to]`. `final`: this range ends the file, so a bad last line is
    /// a torn write (skipped, cut off); elsewhere a bad line is a corrupt one. `validLength`
    /// and `byteCount` are of the whole buffer; line numbers count from `from`, and `lines` is
    /// how many the range held.
    static func parseLines(_ buf: UnsafeBufferPointer<UInt8>, from: Int, to: Int,
                           final: Bool) -> (contents: JournalContents, lines: Int) {
        var c = JournalContents()
        c.validLength = buf.count
        c.byteCount = buf.count
        var start = from
        var lineNo = 0
        while start < to {
            lineNo += 1
            var end = start
            while end < to, buf[end] != 10 { end += 1 }
            let hasNewline = end < to
            let isLast = final && (!hasNewline || end + 1 >= to)
            let slice = UnsafeBufferPointer(rebasing: buf[start..<end])
            if !slice.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) {
                var problem: String? = nil
                var event: JournalEvent? = nil
                do {
                    let v = try JSON.parse(slice, maxDepth: 128)
                    if case .object = v {
                        event = JournalEvent(v)
                        if event == nil { problem = "not a journal event (no type)" }
                    } else { problem = "not a JSON object" }
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
            } else if !hasNewline, final {
                c.validLength = start
            }
            start = end + 1
        }
        return (c, lineNo)
    }
}

extension RunDirectory {
    /// The one way every view (status, log, report, resume, the shell, attach, recovery) reads
    /// a run's journal: its events and what was wrong with it; empty when there is none yet.
    public func readJournal() throws -> JournalContents {
        guard FileIO.exists(journal) else { return JournalContents() }
        var c = try JournalReader.read(journal)
        c.resolveLogs(in: path)
        return c
    }

    /// The journal folded (`RunHistory`), with its contents; a journal that cannot be read
    /// folds as empty.
    public func readHistory() -> (history: RunHistory, contents: JournalContents) {
        let contents = (try? readJournal()) ?? JournalContents()
        return (RunHistory(contents.events), contents)
    }
}
