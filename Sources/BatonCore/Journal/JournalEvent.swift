import BatonBase
/// The run record: one Swift type per journal event, each with one encoder (`fields`) and
/// one decoder (`init(_:)`). docs/journal.md documents exactly `fieldNames` of each type
/// (JournalSchemaTests holds the two together).
public struct JournalEvent: Sendable {
    public let seq: Int64
    /// Seconds since the epoch (the line's `ts`, millisecond precision).
    public let ts: Double
    public let run: String
    public let body: EventBody

    public init(seq: Int64, ts: Double, run: String, body: EventBody) {
        self.seq = seq; self.ts = ts; self.run = run; self.body = body
    }

    public var type: String { body.type }

    /// The envelope every line has, then the body's own fields.
    public enum Key: String, JournalKeys { case v, seq, ts, run, type }
    public static let envelope = Key.names

    /// Decodes one journal line. Lenient about what earlier versions omitted (defaults),
    /// strict only about the envelope; an unknown type is kept as `.unknown`.
    public init?(_ json: JSON) {
        guard case .object = json else { return nil }
        // One Fields for the envelope and the body, asked in the order lines are written.
        var f = Fields<Key>(json)
        let seq = f.int(.seq) ?? 0
        let ts = f.string(.ts).flatMap(Clock.parseRFC3339) ?? 0
        let run = f.string(.run) ?? ""
        guard let type = f.string(.type) else { return nil }
        self.seq = seq
        self.ts = ts
        self.run = run
        body = EventBody(type: type, json, f)
    }

    /// The line as written (without the newline).
    public func encoded() -> [UInt8] {
        JournalEvent.encode(seq: seq, ts: ts, run: run, body: body)
    }

    static func encode(seq: Int64, ts: Double, run: String, body: EventBody) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(192)
        encode(seq: seq, ts: ts, run: run, body: body, into: &out)
        return out
    }

    /// The envelope's bytes between its values, from its keys: `{"v":1,"seq":`, `,"ts":"`, ...
    private static let glue: (seq: [UInt8], ts: [UInt8], run: [UInt8], type: [UInt8]) = (
        Array("{\"\(Key.v.rawValue)\":\(JournalWriter.schemaVersion),\"\(Key.seq.rawValue)\":".utf8),
        Array(",\"\(Key.ts.rawValue)\":\"".utf8), Array("\",\"\(Key.run.rawValue)\":".utf8),
        Array(",\"\(Key.type.rawValue)\":".utf8))

    static func encode(seq: Int64, ts: Double, run: String, body: EventBody, into out: inout [UInt8]) {
        out.append(contentsOf: glue.seq)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: glue.ts)
        out.append(contentsOf: Clock.rfc3339(ts).utf8)
        out.append(contentsOf: glue.run)
        JSON.encodeString(run, into: &out)
        out.append(contentsOf: glue.type)
        JSON.encodeString(body.type, into: &out)
        for (k, v) in body.fields {
            out.append(UInt8(ascii: ","))
            JSON.encodeString(k, into: &out)
            out.append(UInt8(ascii: ":"))
            v.encode(into: &out, pretty: false, indent: 0)
        }
        out.append(UInt8(ascii: "}"))
    }

    public var json: JSON {
        let envelope: FieldList<Key> = [(.v, .int(JournalWriter.schemaVersion)), (.seq, .int(seq)),
                                        (.ts, .string(Clock.rfc3339(ts))), (.run, .string(run)), (.type, .string(type))]
        return .object(envelope.pairs + body.fields)
    }
}

public enum EventBody: Sendable {
    case runStarted(RunBegan)
    case runResumed(RunBegan)
    case stageStarted(StageStarted)
    case stageFinished(StageFinished)
    case stageStalled(StageStalled)
    case stageQueued(StageQueued)
    case preflight(PreflightRecord)
    case watch(WatchTransition)
    case gate(GateRecord)
    case heartbeat(Heartbeat)
    case log(LogRecord)
    case command(CommandRecord)
    case notRun(NotRun)
    case control(ControlRecord)
    case paused(PauseRecord)
    case resumedFromPause(PauseResumed)
    case final(FinalEvent)
    /// A type this version does not know (a newer writer): kept, shown, never dropped.
    case unknown(String, JSON)

    /// A life's start: `run_started` (resumed false) or `run_resumed` (true).
    public var began: (RunBegan, resumed: Bool)? {
        switch self {
        case let .runStarted(b): return (b, false)
        case let .runResumed(b): return (b, true)
        case .stageStarted, .stageFinished, .stageStalled, .stageQueued, .preflight, .watch, .gate, .heartbeat,
             .log, .command, .notRun, .control, .paused, .resumedFromPause, .final, .unknown:
            return nil
        }
    }

    /// Every type this version writes, with the fields its encoder can write.
    public static let schema: [(type: String, fields: [String])] = EventKind.allCases.map {
        ($0.rawValue, $0.fieldNames)
    }

    /// How soon an event must reach the disk (docs/journal.md, Durability): `.now` before
    /// `append` returns, `.soon` within the batch window under `--sync batched`, `.none` with
    /// whatever is flushed next. `--sync always` flushes `.now` and `.soon` at once.
    public enum Durability { case none, soon, now }

    public var durability: Durability {
        switch self {
        case .final, .gate, .preflight: return .now
        case let .watch(w): return w.to.isTerminal ? .now : .soon
        case .stageFinished, .command: return .soon
        // (run_started and run_resumed go with the next flush: a resume that only replays
        // would otherwise wait for a disk flush before its first replay, 5-35 ms here.)
        case .runStarted, .runResumed, .stageStarted, .stageStalled, .stageQueued, .heartbeat, .log, .notRun,
             .control, .paused, .resumedFromPause, .unknown:
            return .none
        }
    }

    /// Its type; nil for one this version does not know.
    public var kind: EventKind? {
        switch self {
        case .runStarted: return .runStarted
        case .runResumed: return .runResumed
        case .stageStarted: return .stageStarted
        case .stageFinished: return .stageFinished
        case .stageStalled: return .stageStalled
        case .stageQueued: return .stageQueued
        case .preflight: return .preflight
        case .watch: return .watch
        case .gate: return .gate
        case .heartbeat: return .heartbeat
        case .log: return .log
        case .command: return .command
        case .notRun: return .notRun
        case .control: return .control
        case .paused: return .paused
        case .resumedFromPause: return .resumedFromPause
        case .final: return .final
        case .unknown: return nil
        }
    }

    public var type: String {
        if case let .unknown(t, _) = self { return t }
        return kind!.rawValue
    }

    public var fields: [(String, JSON)] {
        switch self {
        case let .runStarted(b): return b.fields(resumed: false).pairs
        case let .runResumed(b): return b.fields(resumed: true).pairs
        case let .stageStarted(s): return s.fields.pairs
        case let .stageFinished(s): return s.fields.pairs
        case let .stageStalled(s): return s.fields.pairs
        case let .stageQueued(s): return s.fields.pairs
        case let .preflight(p): return p.fields.pairs
        case let .watch(w): return w.fields.pairs
        case let .gate(g): return g.fields.pairs
        case let .heartbeat(h): return h.fields.pairs
        case let .log(l): return l.fieldsJSON.pairs
        case let .command(c): return c.fields.pairs
        case let .notRun(n): return n.fields.pairs
        case let .control(c): return c.fields.pairs
        case let .paused(p): return p.fields.pairs
        case let .resumedFromPause(r): return r.fields.pairs
        case let .final(f): return f.fields.pairs
        case let .unknown(_, j):
            return (j.objectValue ?? []).filter { !JournalEvent.envelope.contains($0.0) }
        }
    }

    /// Decodes the body of a line of type `type`; `f` has read the envelope.
    init<K>(type: String, _ j: JSON, _ f: Fields<K>) {
        guard let kind = EventKind(rawValue: type) else {
            self = .unknown(type, j)
            return
        }
        func read<R, L>(_ make: (inout Fields<L>) -> R) -> R {
            var g = f.keyed(L.self)
            return make(&g)
        }
        switch kind {
        case .runStarted: self = .runStarted(read(RunBegan.init))
        case .runResumed: self = .runResumed(read(RunBegan.init))
        case .stageStarted: self = .stageStarted(read(StageStarted.init))
        case .stageFinished: self = .stageFinished(read(StageFinished.init))
        case .stageStalled: self = .stageStalled(read(StageStalled.init))
        case .stageQueued: self = .stageQueued(read(StageQueued.init))
        case .preflight: self = .preflight(read(PreflightRecord.init))
        case .watch: self = .watch(read(WatchTransition.init))
        case .gate: self = .gate(read(GateRecord.init))
        case .heartbeat: self = .heartbeat(read(Heartbeat.init))
        case .log: self = .log(read(LogRecord.init))
        case .command: self = .command(read(CommandRecord.init))
        case .notRun: self = .notRun(read(NotRun.init))
        case .control: self = .control(read(ControlRecord.init))
        case .paused: self = .paused(read(PauseRecord.init))
        case .resumedFromPause: self = .resumedFromPause(read(PauseResumed.init))
        case .final: self = .final(read(FinalEvent.init))
        }
    }
}

/// The journal's event types, each named once (its raw value is the line's `type`), with
/// the keys its record declares.
public enum EventKind: String, CaseIterable, Sendable {
    case runStarted = "run_started", runResumed = "run_resumed", stageStarted = "stage_started"
    case stageFinished = "stage_finished", stageStalled = "stage_stalled", stageQueued = "stage_queued"
    case preflight, watch, gate, heartbeat, log, command, notRun = "not_run", control, paused
    case resumedFromPause = "resumed_from_pause", final

    /// The keys its encoder can write (docs/journal.md lists exactly these: RecordTests).
    public var fieldNames: [String] {
        switch self {
        case .runStarted: return RunBegan.startedFields
        case .runResumed: return RunBegan.resumedFields
        case .stageStarted: return StageStarted.fieldNames
        case .stageFinished: return StageFinished.fieldNames
        case .stageStalled: return StageStalled.fieldNames
        case .stageQueued: return StageQueued.fieldNames
        case .preflight: return PreflightRecord.fieldNames
        case .watch: return WatchTransition.fieldNames
        case .gate: return GateRecord.fieldNames
        case .heartbeat: return Heartbeat.fieldNames
        case .log: return LogRecord.fieldNames
        case .command: return CommandRecord.fieldNames
        case .notRun: return NotRun.fieldNames
        case .control: return ControlRecord.fieldNames
        case .paused: return PauseRecord.fieldNames
        case .resumedFromPause: return PauseResumed.fieldNames
        case .final: return FinalEvent.fieldNames
        }
    }
}

/// A record's keys, each stated once: the cases' raw values are the wire's names, in the
/// order the encoder writes them. The record's encoder (`FieldList`), its decoder (`Fields`)
/// and the schema docs/journal.md is held to (`EventBody.schema`, RecordTests) all take
/// them from its `Key` enum, so a key cannot be spelled two ways.
public protocol JournalKeys: RawRepresentable, CaseIterable, Hashable, Sendable where RawValue == String {
    /// Keys the decoder reads from older journals but the encoder never writes.
    static var readOnly: [Self] { get }
}

extension JournalKeys {
    public static var readOnly: [Self] { [] }
    /// The names the encoder can write, in order.
    public static var names: [String] { allCases.filter { !readOnly.contains($0) }.map(\.rawValue) }
}

/// Records of a stage call (`id`, `occurrence`), with a command (`argv` or `shell`), with
/// log files (`logs`): the shared keys, each record still declaring them in its own enum.
protocol StageKeyed: JournalKeys {
    static var id: Self { get }
    static var occurrence: Self { get }
}

protocol CommandKeyed: JournalKeys {
    static var argv: Self { get }
    static var shell: Self { get }
}

protocol LogsKeyed: JournalKeys {
    static var logs: Self { get }
}

/// What an encoder writes: its record's keys with their values, in order.
struct FieldList<K: JournalKeys>: ExpressibleByArrayLiteral {
    private(set) var pairs: [(String, JSON)] = []

    init(arrayLiteral elements: (K, JSON)...) {
        pairs.reserveCapacity(elements.count + 8)
        for (k, v) in elements { pairs.append((k.rawValue, v)) }
    }

    mutating func add(_ k: K, _ v: JSON) { pairs.append((k.rawValue, v)) }

    static func += (l: inout FieldList, r: FieldList) { l.pairs += r.pairs }
}

/// Reads a record's fields with defaults (the decoder's only helper), by its keys. Decoders
/// ask for fields in about the order encoders write them, so each lookup resumes where the
/// last one matched: reading a long journal costs about one comparison per field.
struct Fields<K: JournalKeys> {
    private let pairs: [(String, JSON)]
    private var hint = 0
    init(_ j: JSON) { pairs = j.objectValue ?? [] }
    private init(pairs: [(String, JSON)], hint: Int) { self.pairs = pairs; self.hint = hint }

    /// The same line read by another record's keys (the envelope's, then the body's).
    func keyed<L>(_: L.Type) -> Fields<L> { Fields<L>(pairs: pairs, hint: hint) }

    subscript(_ key: K) -> JSON? {
        mutating get {
            let k = key.rawValue
            let n = pairs.count
            var i = hint
            for _ in 0..<n {
                if i >= n { i = 0 }
                if pairs[i].0 == k { hint = i + 1; return pairs[i].1 }
                i += 1
            }
            return nil
        }
    }

    mutating func string(_ k: K) -> String? { self[k]?.stringValue }
    mutating func int(_ k: K) -> Int64? { self[k]?.intValue }
    mutating func int32(_ k: K) -> Int32? { self[k]?.intValue.map { Int32(truncatingIfNeeded: $0) } }
    mutating func bool(_ k: K) -> Bool { self[k]?.boolValue ?? false }
    mutating func double(_ k: K) -> Double? { self[k]?.doubleValue }
    mutating func strings(_ k: K) -> [String] { self[k]?.arrayValue?.compactMap(\.stringValue) ?? [] }
}

extension Fields where K: StageKeyed {
    mutating func key() -> StageKey { StageKey(id: string(.id) ?? "", occurrence: Int(int(.occurrence) ?? 1)) }
}

extension Fields where K: LogsKeyed {
    mutating func logs() -> StageLogs { StageLogs(self[.logs]) }
}

extension Fields where K: CommandKeyed {
    /// `argv` (a list) or `shell` (a string); the dry runs of 0.1 wrote shell text under `argv`.
    mutating func command() -> Command? {
        if let a = self[.argv] {
            if let items = a.arrayValue { return .argv(items.compactMap(\.stringValue)) }
            if let s = a.stringValue { return .shell(s) }
        }
        if let s = string(.shell) { return .shell(s) }
        return nil
    }
}

private func opt<T>(_ v: T?, _ f: (T) -> JSON) -> JSON { v.map(f) ?? .null }
private func int(_ v: Int32?) -> JSON { opt(v) { .int(Int64($0)) } }
private func str(_ v: String?) -> JSON { opt(v, JSON.string) }

/// A stage call's identity: its id and which call with that id it is (1, 2, ...).
public struct StageKey: Hashable, Sendable, CustomStringConvertible {
    public var id: String
    public var occurrence: Int
    public init(id: String, occurrence: Int) { self.id = id; self.occurrence = occurrence }
    public var description: String { occurrence > 1 ? "\(id) #\(occurrence)" : id }
}

public struct StageLogs: Sendable, Equatable {
    public var stdout: String
    public var stderr: String
    public init(stdout: String, stderr: String) { self.stdout = stdout; self.stderr = stderr }

    /// `logs` {stdout, stderr}.
    enum Key: String, JournalKeys { case stdout, stderr }

    init(_ j: JSON?) {
        var f = Fields<Key>(j ?? .null)
        self.init(stdout: f.string(.stdout) ?? "", stderr: f.string(.stderr) ?? "")
    }

    var json: JSON {
        let o: FieldList<Key> = [(.stdout, .string(stdout)), (.stderr, .string(stderr))]
        return .object(o.pairs)
    }

    /// As the journal records them: relative to the run directory `base` (so a moved project
    /// keeps its runs whole); paths outside it stay as they are.
    public func relative(to base: String) -> StageLogs {
        func rel(_ p: String) -> String { p.hasPrefix(base + "/") ? String(p.dropFirst(base.count + 1)) : p }
        return StageLogs(stdout: rel(stdout), stderr: rel(stderr))
    }

    /// As readers use them: a relative path joined to the run directory `base`; an absolute
    /// one (journals before 0.3) as written while it exists, else (the project was moved) the
    /// same `stages/FOLDER/FILE` in `base`.
    public func resolved(in base: String) -> StageLogs {
        func abs(_ p: String) -> String {
            if p.isEmpty { return p }
            if !p.hasPrefix("/") { return base + "/" + p }
            if p.hasPrefix(base + "/") || FileIO.exists(p) { return p }
            let parts = p.split(separator: "/", omittingEmptySubsequences: true)
            guard parts.count >= 3, parts[parts.count - 3] == "stages" else { return p }
            let moved = base + "/stages/" + parts[parts.count - 2] + "/" + parts[parts.count - 1]
            return FileIO.exists(moved) ? moved : p
        }
        return StageLogs(stdout: abs(stdout), stderr: abs(stderr))
    }
}

extension EventBody {
    /// The same event with its stage log paths mapped; nil for an event without them
    /// (only stage_started and stage_finished name log files).
    public func mappingLogs(_ f: (StageLogs) -> StageLogs) -> EventBody? {
        switch self {
        case var .stageStarted(s): s.logs = f(s.logs); return .stageStarted(s)
        case var .stageFinished(s): s.logs = f(s.logs); return .stageFinished(s)
        case .runStarted, .runResumed, .stageStalled, .stageQueued, .preflight, .watch, .gate, .heartbeat, .log,
             .command, .notRun, .control, .paused, .resumedFromPause, .final, .unknown:
            return nil
        }
    }
}

extension JournalContents {
    /// Stage log paths made absolute for a run directory at `base` (where it is now).
    mutating func resolveLogs(in base: String) {
        for i in events.indices {
            let e = events[i]
            if let body = e.body.mappingLogs({ $0.resolved(in: base) }) {
                events[i] = JournalEvent(seq: e.seq, ts: e.ts, run: e.run, body: body)
            }
        }
    }
}

/// `run_started` and `run_resumed`.
public struct RunBegan: Sendable {
    public var recipe: String
    public var recipeSHA256: String
    public var args: [String]
    public var pid: Int32
    public var host: String
    public var batonVersion: String
    public var dryRun: Bool
    public var cwd: String
    /// Seconds between heartbeats while the recipe waits (status uses it to tell a hung runner).
    public var heartbeatSec: Double = 30
    /// run_resumed only: the last seq before the resume, and what the reader found.
    public var resumesAfter: Int64?
    public var tornTailTruncated = false
    public var corruptLines: [Int] = []

    /// Its keys, in the order the encoder writes them (the wire's names); the last three
    /// are run_resumed's only.
    public enum Key: String, JournalKeys {
        case recipe, recipeSHA256 = "recipe_sha256", args, pid, host, batonVersion = "baton_version"
        case dryRun = "dry_run", cwd, heartbeatSec = "heartbeat_sec"
        case resumesAfter = "resumes_after", tornTailTruncated = "torn_tail_truncated", corruptLines = "corrupt_lines"
        static let resumedOnly: [Key] = [.resumesAfter, .tornTailTruncated, .corruptLines]
    }
    /// The recipe the interactive shell's own run names (`isShellRun`).
    public static let shellRecipe = "<shell>"

    public static let startedFields = Key.names.filter { !Key.resumedOnly.map(\.rawValue).contains($0) }
    public static let resumedFields = Key.names

    public init(recipe: String,
                recipeSHA256: String,
                args: [String],
                pid: Int32,
                host: String,
                dryRun: Bool,
                cwd: String) {
        self.recipe = recipe; self.recipeSHA256 = recipeSHA256; self.args = args; self.pid = pid
        self.host = host; self.batonVersion = BatonVersion.string; self.dryRun = dryRun; self.cwd = cwd
    }

    init(_ f: inout Fields<Key>) {
        recipe = f.string(.recipe) ?? "?"
        recipeSHA256 = f.string(.recipeSHA256) ?? ""
        args = f.strings(.args)
        pid = f.int32(.pid) ?? 0
        host = f.string(.host) ?? ""
        batonVersion = f.string(.batonVersion) ?? ""
        dryRun = f.bool(.dryRun)
        cwd = f.string(.cwd) ?? ""
        heartbeatSec = f[.heartbeatSec]?.doubleValue ?? 30
        resumesAfter = f.int(.resumesAfter)
        tornTailTruncated = f.bool(.tornTailTruncated)
        corruptLines = f[.corruptLines]?.arrayValue?.compactMap { $0.intValue.map(Int.init) } ?? []
    }

    func fields(resumed: Bool) -> FieldList<Key> {
        var o: FieldList<Key> = [
            (.recipe, .string(recipe)), (.recipeSHA256, .string(recipeSHA256)), (.args, .array(args.map(JSON.string))),
            (.pid, .int(Int64(pid))), (.host, .string(host)), (.batonVersion, .string(batonVersion)),
            (.dryRun, .bool(dryRun)), (.cwd, .string(cwd)), (.heartbeatSec, .double(heartbeatSec)),
        ]
        if resumed {
            o.add(.resumesAfter, .int(resumesAfter ?? 0))
            if tornTailTruncated { o.add(.tornTailTruncated, .bool(true)) }
            if !corruptLines.isEmpty { o.add(.corruptLines, .array(corruptLines.map { .int(Int64($0)) })) }
        }
        return o
    }
}

public struct StageStarted: Sendable {
    public var key: StageKey
    public var attempt: Int
    public var command: Command
    public var cwd: String
    public var fingerprint: String
    public var logs: StageLogs
    /// Absent when the command could not start, and in a dry run.
    public var pid: Int32?
    public var dry = false
    /// Each fingerprint input hashed alone (absent in journals before 0.2).
    public var fingerprintParts: FingerprintParts?
    /// In a resume, on a call's first attempt: why it runs for real.
    public var why: ResumeWhy?


    /// Where it runs when its jobs outlive the runner (a batch scheduler), and that executor's
    /// id for it (a batch job id).
    public var executor: String?
    public var nativeID: String?
    /// A resumed run took up the job its previous runner submitted.
    public var reattached = false
    /// The attempt's time limit in seconds (`timeout`; absent when it has none).
    public var timeoutSec: Double?
    /// Declared inputs as resolved (how many files, their digest) and the cache's answer.
    public var inputs: InputsRecord?
    public var cache: CacheDecision?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys, StageKeyed, CommandKeyed, LogsKeyed {
        case id, occurrence, attempt, argv, shell, cwd, fingerprint, fingerprintParts = "fingerprint_parts", logs
        case pid, dry, why, executor, nativeID = "native_id", reattached, timeoutSec = "timeout_sec", inputs, cache
    }
    public static let fieldNames = Key.names

    public init(key: StageKey, attempt: Int, command: Command, cwd: String, fingerprint: String, logs: StageLogs) {
        self.key = key; self.attempt = attempt; self.command = command; self.cwd = cwd
        self.fingerprint = fingerprint; self.logs = logs
    }

    init(_ f: inout Fields<Key>) {
        key = f.key()
        attempt = Int(f.int(.attempt) ?? 1)
        command = f.command() ?? .argv([])
        cwd = f.string(.cwd) ?? ""
        fingerprint = f.string(.fingerprint) ?? ""
        fingerprintParts = FingerprintParts(f[.fingerprintParts])
        logs = f.logs()
        pid = f.int32(.pid)
        dry = f.bool(.dry)
        why = ResumeWhy(f[.why])
        executor = f.string(.executor)
        nativeID = f.string(.nativeID)
        reattached = f.bool(.reattached)
        timeoutSec = f.double(.timeoutSec)
        inputs = InputsRecord(f[.inputs])
        cache = CacheDecision(f[.cache])
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.id, .string(key.id)), (.occurrence, .int(Int64(key.occurrence))),
                                 (.attempt, .int(Int64(attempt))), command.journalField(Key.self),
                                 (.cwd, .string(cwd)), (.fingerprint, .string(fingerprint))]
        if let p = fingerprintParts { o.add(.fingerprintParts, p.json) }
        o.add(.logs, logs.json)
        if let p = pid { o.add(.pid, .int(Int64(p))) }
        if dry { o.add(.dry, .bool(true)) }
        if let w = why { o.add(.why, w.json) }
        if let e = executor { o.add(.executor, .string(e)) }
        if let n = nativeID { o.add(.nativeID, .string(n)) }
        if reattached { o.add(.reattached, .bool(true)) }
        if let t = timeoutSec { o.add(.timeoutSec, .double(t)) }
        if let i = inputs { o.add(.inputs, i.json) }
        if let c = cache { o.add(.cache, c.json) }
        return o
    }
}

/// A batch job's move in its scheduler's queue: Baton's phase (queued, running, ...) and the
/// scheduler's own word for it.
public struct StageQueued: Sendable {
    public var key: StageKey
    public var attempt: Int
    public var nativeID: String
    /// The scheduler's word (its job state), for people.
    public var state: String
    /// Where the job stands in Baton's words (absent in journals before 0.3).
    public var phase: QueuePhase?
    public var node: String?
    /// Why it waits, in the scheduler's words.
    public var reason: String?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys, StageKeyed {
        case id, occurrence, attempt, nativeID = "native_id", state, phase, node, reason
    }
    public static let fieldNames = Key.names

    public init(key: StageKey, attempt: Int, nativeID: String, state: String) {
        self.key = key; self.attempt = attempt; self.nativeID = nativeID; self.state = state
    }

    init(_ f: inout Fields<Key>) {
        key = f.key()
        attempt = Int(f.int(.attempt) ?? 1)
        nativeID = f.string(.nativeID) ?? ""
        state = f.string(.state) ?? ""
        phase = f.string(.phase).flatMap(QueuePhase.init(rawValue:))
        node = f.string(.node)
        reason = f.string(.reason)
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.id, .string(key.id)), (.occurrence, .int(Int64(key.occurrence))),
                                 (.attempt, .int(Int64(attempt))), (.nativeID, .string(nativeID)),
                                 (.state, .string(state))]
        if let p = phase { o.add(.phase, .string(p.rawValue)) }
        if let n = node, !n.isEmpty { o.add(.node, .string(n)) }
        if let r = reason { o.add(.reason, .string(r)) }
        return o
    }
}

public struct StageFinished: Sendable {
    public var key: StageKey
    public var attempt: Int
    public var exit: Int32?
    public var signal: Int32?
    public var status: StageStatus
    public var failureClass: FailureClass?
    public var signature: String?
    public var durationMs: Int64
    public var logs: StageLogs
    public var fingerprint: String
    public var replayed = false
    /// false when another attempt follows.
    public var final = true
    public var message: String?
    public var breakerOpen = false
    public var dry = false
    /// Not journaled here (stage_started carries them; the history keeps them for a replay),
    /// filled in by `RunHistory.replayable` for resume's reasons. Read when an older journal has them.
    public var fingerprintParts: FingerprintParts?
    /// Declared outputs after a pass (path -> content hash), and where a cache hit came from.
    public var outputs: [(String, String)] = []
    public var cachedFrom: CachedFrom?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys, StageKeyed, LogsKeyed {
        case id, occurrence, attempt, exit, signal, status, failureClass = "failure_class", signature
        case durationMs = "duration_ms", logs, fingerprint, replayed, final, message, breakerOpen = "breaker_open"
        case dry, outputs, cachedFrom = "cached_from", fingerprintParts = "fingerprint_parts"
        /// Read, never written: fingerprint_parts (older journals wrote it here).
        public static let readOnly: [Key] = [.fingerprintParts]
    }
    public static let fieldNames = Key.names

    init(_ f: inout Fields<Key>) {
        key = f.key()
        attempt = Int(f.int(.attempt) ?? 1)
        exit = f.int32(.exit)
        signal = f.int32(.signal)
        status = f.string(.status).flatMap(StageStatus.init(rawValue:)) ?? .failed
        failureClass = f.string(.failureClass).flatMap(FailureClass.init(rawValue:))
        signature = f.string(.signature)
        durationMs = f.int(.durationMs) ?? 0
        logs = f.logs()
        fingerprint = f.string(.fingerprint) ?? ""
        fingerprintParts = FingerprintParts(f[.fingerprintParts])
        replayed = f.bool(.replayed)
        final = f[.final]?.boolValue ?? true
        message = f.string(.message)
        breakerOpen = f.bool(.breakerOpen)
        dry = f.bool(.dry)
        if case let .object(o)? = f[.outputs] { outputs = o.compactMap { k, v in v.stringValue.map { (k, $0) } } }
        cachedFrom = CachedFrom(f[.cachedFrom])
    }

    public init(key: StageKey,
                attempt: Int,
                status: StageStatus,
                durationMs: Int64,
                logs: StageLogs,
                fingerprint: String) {
        self.key = key; self.attempt = attempt; self.status = status; self.durationMs = durationMs
        self.logs = logs; self.fingerprint = fingerprint
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [
            (.id, .string(key.id)), (.occurrence, .int(Int64(key.occurrence))), (.attempt, .int(Int64(attempt))),
            (.exit, int(exit)), (.signal, int(signal)), (.status, .string(status.rawValue)),
            (.failureClass, str(failureClass?.rawValue)), (.signature, str(signature)),
            (.durationMs, .int(durationMs)), (.logs, logs.json), (.fingerprint, .string(fingerprint)),
        ]
        o += [(.replayed, .bool(replayed)), (.final, .bool(final))]
        if let m = message { o.add(.message, .string(m)) }
        if breakerOpen { o.add(.breakerOpen, .bool(true)) }
        if dry { o.add(.dry, .bool(true)) }
        if !outputs.isEmpty { o.add(.outputs, .object(outputs.map { ($0.0, .string($0.1)) })) }
        if let c = cachedFrom { o.add(.cachedFrom, c.json) }
        return o
    }
}

/// A running stage has written nothing for a while (`stallWarnSec`), once per attempt.
public struct StageStalled: Sendable {
    public var key: StageKey
    public var attempt: Int
    public var silentMs: Int64
    /// Its noOutputTimeout has passed too: Baton is ending it.
    public var ending: Bool

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys, StageKeyed {
        case id, occurrence, attempt, silentMs = "silent_ms", ending
    }
    public static let fieldNames = Key.names

    public init(key: StageKey, attempt: Int, silentMs: Int64, ending: Bool) {
        self.key = key; self.attempt = attempt; self.silentMs = silentMs; self.ending = ending
    }

    init(_ f: inout Fields<Key>) {
        key = f.key()
        attempt = Int(f.int(.attempt) ?? 1)
        silentMs = f.int(.silentMs) ?? 0
        ending = f.bool(.ending)
    }

    var fields: FieldList<Key> {
        [(.id, .string(key.id)), (.occurrence, .int(Int64(key.occurrence))), (.attempt, .int(Int64(attempt))),
         (.silentMs, .int(silentMs)), (.ending, .bool(ending))]
    }
}

public enum PreflightPolicy: String, Sendable, CaseIterable { case fail, warn }

public struct PreflightRecord: Sendable {
    /// One check: its kind (path, cmd, env, pgrep, check), what it looked at, the verdict.
    public struct Check: Sendable {
        public var kind, target, detail: String
        public var ok: Bool
        public init(kind: String, target: String, ok: Bool, detail: String) {
            self.kind = kind; self.target = target; self.ok = ok; self.detail = detail
        }
        /// `checks` [{kind, target, ok, detail}].
        enum Key: String, JournalKeys { case kind, target, ok, detail }

        public var json: JSON {
            let o: FieldList<Key> = [(.kind, .string(kind)), (.target, .string(target)), (.ok, .bool(ok)),
                                     (.detail, .string(detail))]
            return .object(o.pairs)
        }

        init(_ j: JSON) {
            var f = Fields<Key>(j)
            self.init(kind: f.string(.kind) ?? "", target: f.string(.target) ?? "", ok: f.bool(.ok),
                      detail: f.string(.detail) ?? "")
        }
    }
    public var name: String
    public var policy: PreflightPolicy
    public var ok: Bool
    public var dryRun: Bool
    public var checks: [Check]

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case name, policy, ok, dryRun = "dry_run", checks
    }
    public static let fieldNames = Key.names

    public init(name: String, policy: PreflightPolicy, ok: Bool, dryRun: Bool, checks: [Check]) {
        self.name = name; self.policy = policy; self.ok = ok; self.dryRun = dryRun; self.checks = checks
    }

    init(_ f: inout Fields<Key>) {
        name = f.string(.name) ?? ""
        policy = f.string(.policy).flatMap(PreflightPolicy.init(rawValue:)) ?? .fail
        ok = f.bool(.ok)
        dryRun = f.bool(.dryRun)
        checks = (f[.checks]?.arrayValue ?? []).map(Check.init)
    }

    var fields: FieldList<Key> {
        [(.name, .string(name)), (.policy, .string(policy.rawValue)), (.ok, .bool(ok)), (.dryRun, .bool(dryRun)),
         (.checks, .array(checks.map(\.json)))]
    }
}

/// The lifecycle of a watch: queued → running → exited → awaiting_artifacts →
/// callback_queued → callback_running → completed, or blocked / failed.
public enum WatchState: String, Sendable, CaseIterable {
    case queued, running, exited, awaiting_artifacts, callback_queued, callback_running, completed, blocked, failed
    public var isTerminal: Bool { self == .completed || self == .blocked || self == .failed }
}

public struct WatchTransition: Sendable {
    public var id: String
    public var from: WatchState?
    public var to: WatchState
    public var reason: String
    public var details: WatchDetails

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case id, from, to, reason, details
    }
    public static let fieldNames = Key.names

    public init(id: String, from: WatchState?, to: WatchState, reason: String, details: WatchDetails) {
        self.id = id; self.from = from; self.to = to; self.reason = reason; self.details = details
    }

    init(_ f: inout Fields<Key>) {
        id = f.string(.id) ?? ""
        from = f.string(.from).flatMap(WatchState.init(rawValue:))
        to = f.string(.to).flatMap(WatchState.init(rawValue:)) ?? .failed
        reason = f.string(.reason) ?? ""
        details = WatchDetails(f[.details])
    }

    var fields: FieldList<Key> {
        [(.id, .string(id)), (.from, str(from?.rawValue)), (.to, .string(to.rawValue)), (.reason, .string(reason)),
         (.details, details.json)]
    }
}

public struct GateRecord: Sendable {
    public var name: String
    public var iteration: Int
    public var max: Int
    public var approved: Bool
    public var issues: JSON
    public var fallbackUsed: Bool
    public var note: String?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case name, iteration, max, approved, issues, fallbackUsed = "fallback_used", note
    }
    public static let fieldNames = Key.names

    public init(name: String,
                iteration: Int,
                max: Int,
                approved: Bool,
                issues: JSON,
                fallbackUsed: Bool,
                note: String?) {
        self.name = name; self.iteration = iteration; self.max = max; self.approved = approved
        self.issues = issues; self.fallbackUsed = fallbackUsed; self.note = note
    }

    init(_ f: inout Fields<Key>) {
        name = f.string(.name) ?? ""
        iteration = Int(f.int(.iteration) ?? 0)
        max = Int(f.int(.max) ?? 0)
        approved = f.bool(.approved)
        issues = f[.issues] ?? .array([])
        fallbackUsed = f.bool(.fallbackUsed)
        note = f.string(.note)
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.name, .string(name)), (.iteration, .int(Int64(iteration))), (.max, .int(Int64(max))),
                                 (.approved, .bool(approved)), (.issues, issues), (.fallbackUsed, .bool(fallbackUsed))]
        if let n = note { o.add(.note, .string(n)) }
        return o
    }
}

public struct Heartbeat: Sendable {
    /// What the recipe waits on: stage, watch, command, lock, sleep.
    public var waitingOn: String
    public var id: String
    public var forMs: Int64

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case waitingOn = "waiting_on", id, forMs = "for_ms"
    }
    public static let fieldNames = Key.names

    public init(waitingOn: String, id: String, forMs: Int64) {
        self.waitingOn = waitingOn
        self.id = id
        self.forMs = forMs
    }

    init(_ f: inout Fields<Key>) {
        waitingOn = f.string(.waitingOn) ?? ""
        id = f.string(.id) ?? ""
        forMs = f.int(.forMs) ?? 0
    }

    var fields: FieldList<Key> { [(.waitingOn, .string(waitingOn)), (.id, .string(id)), (.forMs, .int(forMs))] }
}

/// A `log` event's level. `baton.log` takes these four (fields.level); a journal from
/// elsewhere with another word reads as `info`.
public enum LogLevel: String, CaseIterable, Sendable {
    case debug, info, warn, error
}

public struct LogRecord: Sendable {
    public var level: LogLevel
    public var message: String
    public var fields: JSON

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case level, message, fields
    }
    public static let fieldNames = Key.names

    public init(level: LogLevel, message: String, fields: JSON = .object([])) {
        self.level = level; self.message = message; self.fields = fields
    }

    init(_ f: inout Fields<Key>) {
        level = f.string(.level).flatMap(LogLevel.init(rawValue:)) ?? .info
        message = f.string(.message) ?? ""
        fields = f[.fields] ?? .object([])
    }

    /// The encoder (named apart from `fields`, the record's own payload).
    var fieldsJSON: FieldList<Key> {
        [(.level, .string(level.rawValue)), (.message, .string(message)), (.fields, fields)]
    }
}

/// A command a recipe ran outside a stage (`baton.sh`, `os.execute`): own process group,
/// ended on cancel and signals like a stage, journaled after it ends.
public struct CommandRecord: Sendable {
    public var via: String
    public var command: Command
    public var cwd: String
    public var pid: Int32?
    public var exit: Int32?
    public var signal: Int32?
    public var timedOut = false
    public var durationMs: Int64

    /// baton.sh's output when it is text of at most 4 KiB (what `baton debug` answers it with).
    public var stdout: String?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys, CommandKeyed {
        case via, argv, shell, cwd, pid, exit, signal, timedOut = "timed_out", durationMs = "duration_ms", stdout
    }
    public static let fieldNames = Key.names

    public init(via: String, command: Command, cwd: String, pid: Int32?, exit: Int32?, signal: Int32?,
                timedOut: Bool, durationMs: Int64) {
        self.via = via; self.command = command; self.cwd = cwd; self.pid = pid; self.exit = exit
        self.signal = signal; self.timedOut = timedOut; self.durationMs = durationMs
    }

    init(_ f: inout Fields<Key>) {
        via = f.string(.via) ?? ""
        command = f.command() ?? .argv([])
        cwd = f.string(.cwd) ?? ""
        pid = f.int32(.pid)
        exit = f.int32(.exit)
        signal = f.int32(.signal)
        timedOut = f.bool(.timedOut)
        durationMs = f.int(.durationMs) ?? 0
        stdout = f.string(.stdout)
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.via, .string(via)), command.journalField(Key.self), (.cwd, .string(cwd)),
                                 (.pid, int(pid)), (.exit, int(exit)),
                                 (.signal, int(signal)), (.timedOut, .bool(timedOut)), (.durationMs, .int(durationMs))]
        if let s = stdout { o.add(.stdout, .string(s)) }
        return o
    }
}

/// Something a dry run did not do (a command, a file write), so the plan is complete.
public struct NotRun: Sendable {
    public var via: String
    public var target: String
    public var reason: String

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case via, target, reason
    }
    public static let fieldNames = Key.names

    public init(via: String, target: String, reason: String = "dry run") {
        self.via = via
        self.target = target
        self.reason = reason
    }

    init(_ f: inout Fields<Key>) {
        via = f.string(.via) ?? ""
        target = f.string(.target) ?? ""
        reason = f.string(.reason) ?? ""
    }

    var fields: FieldList<Key> { [(.via, .string(via)), (.target, .string(target)), (.reason, .string(reason))] }
}

/// An intervention on a live run through its control socket (`baton attach`, the shell's
/// `:attach`): who (uid, user), from which pid, what, and the result.
public struct ControlRecord: Sendable {
    public var uid: Int64
    public var user: String
    public var pid: Int64
    /// eval, kill, skip, extend, refused.
    public var op: ControlOp
    /// The stage or watch acted on, or the Lua text evaluated.
    public var target: String
    public var ok: Bool
    public var result: String

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case uid, user, pid, op, target, ok, result
    }
    public static let fieldNames = Key.names

    public init(uid: Int64, user: String, pid: Int64, op: ControlOp, target: String, ok: Bool, result: String) {
        self.uid = uid
        self.user = user
        self.pid = pid
        self.op = op
        self.target = target
        self.ok = ok
        self.result = result
    }

    init(_ f: inout Fields<Key>) {
        uid = f.int(.uid) ?? -1
        user = f.string(.user) ?? ""
        pid = f.int(.pid) ?? 0
        op = f.string(.op).flatMap(ControlOp.init(rawValue:)) ?? .refused
        target = f.string(.target) ?? ""
        ok = f.bool(.ok)
        result = f.string(.result) ?? ""
    }

    var fields: FieldList<Key> {
        [(.uid, .int(uid)), (.user, .string(user)), (.pid, .int(pid)), (.op, .string(op.rawValue)),
         (.target, .string(target)),
         (.ok, .bool(ok)), (.result, .string(result))]
    }
}

public struct FinalEvent: Sendable {
    public var status: RunOutcome
    public var exitCode: Int32
    public var reason: String?
    /// When `baton cancel` finished an orphaned run: the processes it ended.
    public var killedPids: [Int32]?

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case status, exitCode = "exit_code", reason, killedPids = "killed_pids"
    }
    public static let fieldNames = Key.names

    public init(status: RunOutcome, exitCode: Int32, reason: String?, killedPids: [Int32]? = nil) {
        self.status = status; self.exitCode = exitCode; self.reason = reason; self.killedPids = killedPids
    }

    init(_ f: inout Fields<Key>) {
        status = RunOutcome(reading: f.string(.status))
        exitCode = f.int32(.exitCode) ?? 1
        reason = f.string(.reason)
        killedPids = f[.killedPids]?.arrayValue?.compactMap { $0.intValue.map { Int32(truncatingIfNeeded: $0) } }
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.status, .string(status.rawValue)), (.exitCode, .int(Int64(exitCode))),
                                (.reason, str(reason))]
        if let k = killedPids { o.add(.killedPids, .array(k.map { .int(Int64($0)) })) }
        return o
    }
}

extension Command {
    /// `argv` (a list) or `shell` (a string), as stage and command events write it.
    func journalField<K: CommandKeyed>(_: K.Type) -> (K, JSON) {
        switch self {
        case let .argv(a): return (.argv, .array(a.map(JSON.string)))
        case let .shell(s): return (.shell, .string(s))
        }
    }
}
