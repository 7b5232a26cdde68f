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
    public static let envelope = ["v", "seq", "ts", "run", "type"]

    /// Decodes one journal line. Lenient about what earlier versions omitted (defaults),
    /// strict only about the envelope; an unknown type is kept as `.unknown`.
    public init?(_ json: JSON) {
        guard case .object = json else { return nil }
        // One Fields for the envelope and the body, asked in the order lines are written.
        var f = Fields(json)
        let seq = f.int("seq") ?? 0
        let ts = f.string("ts").flatMap(Clock.parseRFC3339) ?? 0
        let run = f.string("run") ?? ""
        guard let type = f.string("type") else { return nil }
        self.seq = seq
        self.ts = ts
        self.run = run
        body = EventBody(type: type, json, &f)
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

    static func encode(seq: Int64, ts: Double, run: String, body: EventBody, into out: inout [UInt8]) {
        out.append(contentsOf: "{\"v\":1,\"seq\":".utf8)
        out.append(contentsOf: String(seq).utf8)
        out.append(contentsOf: ",\"ts\":\"".utf8)
        out.append(contentsOf: Clock.rfc3339(ts).utf8)
        out.append(contentsOf: "\",\"run\":".utf8)
        JSON.encodeString(run, into: &out)
        out.append(contentsOf: ",\"type\":".utf8)
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
        .object([("v", .int(JournalWriter.schemaVersion)), ("seq", .int(seq)), ("ts", .string(Clock.rfc3339(ts))), ("run", .string(run)),
                 ("type", .string(type))] + body.fields)
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
    public static let schema: [(type: String, fields: [String])] = [
        ("run_started", RunBegan.startedFields), ("run_resumed", RunBegan.resumedFields),
        ("stage_started", StageStarted.fieldNames), ("stage_finished", StageFinished.fieldNames),
        ("stage_stalled", StageStalled.fieldNames), ("stage_queued", StageQueued.fieldNames),
        ("preflight", PreflightRecord.fieldNames), ("watch", WatchTransition.fieldNames),
        ("gate", GateRecord.fieldNames), ("heartbeat", Heartbeat.fieldNames), ("log", LogRecord.fieldNames),
        ("command", CommandRecord.fieldNames), ("not_run", NotRun.fieldNames), ("control", ControlRecord.fieldNames),
        ("paused", PauseRecord.fieldNames), ("resumed_from_pause", PauseResumed.fieldNames),
        ("final", FinalEvent.fieldNames),
    ]

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

    public var type: String {
        switch self {
        case .runStarted: return "run_started"
        case .runResumed: return "run_resumed"
        case .stageStarted: return "stage_started"
        case .stageFinished: return "stage_finished"
        case .stageStalled: return "stage_stalled"
        case .stageQueued: return "stage_queued"
        case .preflight: return "preflight"
        case .watch: return "watch"
        case .gate: return "gate"
        case .heartbeat: return "heartbeat"
        case .log: return "log"
        case .command: return "command"
        case .notRun: return "not_run"
        case .control: return "control"
        case .paused: return "paused"
        case .resumedFromPause: return "resumed_from_pause"
        case .final: return "final"
        case let .unknown(t, _): return t
        }
    }

    public var fields: [(String, JSON)] {
        switch self {
        case let .runStarted(b): return b.fields(resumed: false)
        case let .runResumed(b): return b.fields(resumed: true)
        case let .stageStarted(s): return s.fields
        case let .stageFinished(s): return s.fields
        case let .stageStalled(s): return s.fields
        case let .stageQueued(s): return s.fields
        case let .preflight(p): return p.fields
        case let .watch(w): return w.fields
        case let .gate(g): return g.fields
        case let .heartbeat(h): return h.fields
        case let .log(l): return l.fieldsJSON
        case let .command(c): return c.fields
        case let .notRun(n): return n.fields
        case let .control(c): return c.fields
        case let .paused(p): return p.fields
        case let .resumedFromPause(r): return r.fields
        case let .final(f): return f.fields
        case let .unknown(_, j):
            return (j.objectValue ?? []).filter { !JournalEvent.envelope.contains($0.0) }
        }
    }

    init(type: String, _ j: JSON, _ f: inout Fields) {
        switch type {
        case "run_started": self = .runStarted(RunBegan(&f))
        case "run_resumed": self = .runResumed(RunBegan(&f))
        case "stage_started": self = .stageStarted(StageStarted(&f))
        case "stage_finished": self = .stageFinished(StageFinished(&f))
        case "stage_stalled": self = .stageStalled(StageStalled(&f))
        case "stage_queued": self = .stageQueued(StageQueued(&f))
        case "preflight": self = .preflight(PreflightRecord(&f))
        case "watch": self = .watch(WatchTransition(&f))
        case "gate": self = .gate(GateRecord(&f))
        case "heartbeat": self = .heartbeat(Heartbeat(&f))
        case "log": self = .log(LogRecord(&f))
        case "command": self = .command(CommandRecord(&f))
        case "not_run": self = .notRun(NotRun(&f))
        case "control": self = .control(ControlRecord(&f))
        case "paused": self = .paused(PauseRecord(&f))
        case "resumed_from_pause": self = .resumedFromPause(PauseResumed(&f))
        case "final": self = .final(FinalEvent(&f))
        default: self = .unknown(type, j)
        }
    }
}

/// Reads an event's fields with defaults (the decoder's only helper). Decoders ask for
/// fields in about the order encoders write them, so each lookup resumes where the last
/// one matched: reading a long journal costs about one comparison per field.
struct Fields {
    private let pairs: [(String, JSON)]
    private var hint = 0
    init(_ j: JSON) { pairs = j.objectValue ?? [] }

    subscript(_ k: String) -> JSON? {
        mutating get {
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

    mutating func string(_ k: String) -> String? { self[k]?.stringValue }
    mutating func int(_ k: String) -> Int64? { self[k]?.intValue }
    mutating func int32(_ k: String) -> Int32? { self[k]?.intValue.map { Int32(truncatingIfNeeded: $0) } }
    mutating func bool(_ k: String) -> Bool { self[k]?.boolValue ?? false }
    mutating func double(_ k: String) -> Double? { self[k]?.doubleValue }
    mutating func strings(_ k: String) -> [String] { self[k]?.arrayValue?.compactMap(\.stringValue) ?? [] }
    mutating func key() -> StageKey { StageKey(id: string("id") ?? "", occurrence: Int(int("occurrence") ?? 1)) }
    mutating func logs() -> StageLogs {
        let l = self["logs"]
        return StageLogs(stdout: l?["stdout"]?.stringValue ?? "", stderr: l?["stderr"]?.stringValue ?? "")
    }
    /// `argv` (a list) or `shell` (a string); the dry runs of 0.1 wrote shell text under `argv`.
    mutating func command() -> Command? {
        if let a = self["argv"] {
            if let items = a.arrayValue { return .argv(items.compactMap(\.stringValue)) }
            if let s = a.stringValue { return .shell(s) }
        }
        if let s = string("shell") { return .shell(s) }
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
    var json: JSON { .object([("stdout", .string(stdout)), ("stderr", .string(stderr))]) }

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

    public static let startedFields = ["recipe", "recipe_sha256", "args", "pid", "host", "baton_version", "dry_run", "cwd",
                                       "heartbeat_sec"]
    public static let resumedFields = startedFields + ["resumes_after", "torn_tail_truncated", "corrupt_lines"]

    public init(recipe: String, recipeSHA256: String, args: [String], pid: Int32, host: String, dryRun: Bool, cwd: String) {
        self.recipe = recipe; self.recipeSHA256 = recipeSHA256; self.args = args; self.pid = pid
        self.host = host; self.batonVersion = BatonVersion.string; self.dryRun = dryRun; self.cwd = cwd
    }

    init(_ f: inout Fields) {
        recipe = f.string("recipe") ?? "?"
        recipeSHA256 = f.string("recipe_sha256") ?? ""
        args = f.strings("args")
        pid = f.int32("pid") ?? 0
        host = f.string("host") ?? ""
        batonVersion = f.string("baton_version") ?? ""
        dryRun = f.bool("dry_run")
        cwd = f.string("cwd") ?? ""
        heartbeatSec = f["heartbeat_sec"]?.doubleValue ?? 30
        resumesAfter = f.int("resumes_after")
        tornTailTruncated = f.bool("torn_tail_truncated")
        corruptLines = f["corrupt_lines"]?.arrayValue?.compactMap { $0.intValue.map(Int.init) } ?? []
    }

    func fields(resumed: Bool) -> [(String, JSON)] {
        var o: [(String, JSON)] = [
            ("recipe", .string(recipe)), ("recipe_sha256", .string(recipeSHA256)), ("args", .array(args.map(JSON.string))),
            ("pid", .int(Int64(pid))), ("host", .string(host)), ("baton_version", .string(batonVersion)),
            ("dry_run", .bool(dryRun)), ("cwd", .string(cwd)), ("heartbeat_sec", .double(heartbeatSec)),
        ]
        if resumed {
            o.append(("resumes_after", .int(resumesAfter ?? 0)))
            if tornTailTruncated { o.append(("torn_tail_truncated", .bool(true))) }
            if !corruptLines.isEmpty { o.append(("corrupt_lines", .array(corruptLines.map { .int(Int64($0)) }))) }
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

    public static let fieldNames = ["id", "occurrence", "attempt", "argv", "shell", "cwd", "fingerprint", "fingerprint_parts",
                                    "logs", "pid", "dry", "why", "executor", "native_id", "reattached", "timeout_sec",
                                    "inputs", "cache"]

    public init(key: StageKey, attempt: Int, command: Command, cwd: String, fingerprint: String, logs: StageLogs) {
        self.key = key; self.attempt = attempt; self.command = command; self.cwd = cwd
        self.fingerprint = fingerprint; self.logs = logs
    }

    init(_ f: inout Fields) {
        key = f.key()
        attempt = Int(f.int("attempt") ?? 1)
        command = f.command() ?? .argv([])
        cwd = f.string("cwd") ?? ""
        fingerprint = f.string("fingerprint") ?? ""
        fingerprintParts = FingerprintParts(f["fingerprint_parts"])
        logs = f.logs()
        pid = f.int32("pid")
        dry = f.bool("dry")
        why = ResumeWhy(f["why"])
        executor = f.string("executor")
        nativeID = f.string("native_id")
        reattached = f.bool("reattached")
        timeoutSec = f.double("timeout_sec")
        inputs = InputsRecord(f["inputs"])
        cache = CacheDecision(f["cache"])
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("id", .string(key.id)), ("occurrence", .int(Int64(key.occurrence))),
                                   ("attempt", .int(Int64(attempt))), command.journalField,
                                   ("cwd", .string(cwd)), ("fingerprint", .string(fingerprint))]
        if let p = fingerprintParts { o.append(("fingerprint_parts", p.json)) }
        o.append(("logs", logs.json))
        if let p = pid { o.append(("pid", .int(Int64(p)))) }
        if dry { o.append(("dry", .bool(true))) }
        if let w = why { o.append(("why", w.json)) }
        if let e = executor { o.append(("executor", .string(e))) }
        if let n = nativeID { o.append(("native_id", .string(n))) }
        if reattached { o.append(("reattached", .bool(true))) }
        if let t = timeoutSec { o.append(("timeout_sec", .double(t))) }
        if let i = inputs { o.append(("inputs", i.json)) }
        if let c = cache { o.append(("cache", c.json)) }
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

    public static let fieldNames = ["id", "occurrence", "attempt", "native_id", "state", "phase", "node", "reason"]

    public init(key: StageKey, attempt: Int, nativeID: String, state: String) {
        self.key = key; self.attempt = attempt; self.nativeID = nativeID; self.state = state
    }

    init(_ f: inout Fields) {
        key = f.key()
        attempt = Int(f.int("attempt") ?? 1)
        nativeID = f.string("native_id") ?? ""
        state = f.string("state") ?? ""
        phase = f.string("phase").flatMap(QueuePhase.init(rawValue:))
        node = f.string("node")
        reason = f.string("reason")
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("id", .string(key.id)), ("occurrence", .int(Int64(key.occurrence))),
                                   ("attempt", .int(Int64(attempt))), ("native_id", .string(nativeID)), ("state", .string(state))]
        if let p = phase { o.append(("phase", .string(p.rawValue))) }
        if let n = node, !n.isEmpty { o.append(("node", .string(n))) }
        if let r = reason { o.append(("reason", .string(r))) }
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

    public static let fieldNames = ["id", "occurrence", "attempt", "exit", "signal", "status", "failure_class", "signature",
                                    "duration_ms", "logs", "fingerprint", "replayed", "final", "message",
                                    "breaker_open", "dry", "outputs", "cached_from"]

    init(_ f: inout Fields) {
        key = f.key()
        attempt = Int(f.int("attempt") ?? 1)
        exit = f.int32("exit")
        signal = f.int32("signal")
        status = f.string("status").flatMap(StageStatus.init(rawValue:)) ?? .failed
        failureClass = f.string("failure_class").flatMap(FailureClass.init(rawValue:))
        signature = f.string("signature")
        durationMs = f.int("duration_ms") ?? 0
        logs = f.logs()
        fingerprint = f.string("fingerprint") ?? ""
        fingerprintParts = FingerprintParts(f["fingerprint_parts"])
        replayed = f.bool("replayed")
        final = f["final"]?.boolValue ?? true
        message = f.string("message")
        breakerOpen = f.bool("breaker_open")
        dry = f.bool("dry")
        if case let .object(o)? = f["outputs"] { outputs = o.compactMap { k, v in v.stringValue.map { (k, $0) } } }
        cachedFrom = CachedFrom(f["cached_from"])
    }

    public init(key: StageKey, attempt: Int, status: StageStatus, durationMs: Int64, logs: StageLogs, fingerprint: String) {
        self.key = key; self.attempt = attempt; self.status = status; self.durationMs = durationMs
        self.logs = logs; self.fingerprint = fingerprint
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [
            ("id", .string(key.id)), ("occurrence", .int(Int64(key.occurrence))), ("attempt", .int(Int64(attempt))),
            ("exit", int(exit)), ("signal", int(signal)), ("status", .string(status.rawValue)),
            ("failure_class", str(failureClass?.rawValue)), ("signature", str(signature)),
            ("duration_ms", .int(durationMs)), ("logs", logs.json), ("fingerprint", .string(fingerprint)),
        ]
        o += [("replayed", .bool(replayed)), ("final", .bool(final))]
        if let m = message { o.append(("message", .string(m))) }
        if breakerOpen { o.append(("breaker_open", .bool(true))) }
        if dry { o.append(("dry", .bool(true))) }
        if !outputs.isEmpty { o.append(("outputs", .object(outputs.map { ($0.0, .string($0.1)) }))) }
        if let c = cachedFrom { o.append(("cached_from", c.json)) }
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

    public static let fieldNames = ["id", "occurrence", "attempt", "silent_ms", "ending"]

    public init(key: StageKey, attempt: Int, silentMs: Int64, ending: Bool) {
        self.key = key; self.attempt = attempt; self.silentMs = silentMs; self.ending = ending
    }

    init(_ f: inout Fields) {
        key = f.key()
        attempt = Int(f.int("attempt") ?? 1)
        silentMs = f.int("silent_ms") ?? 0
        ending = f.bool("ending")
    }

    var fields: [(String, JSON)] {
        [("id", .string(key.id)), ("occurrence", .int(Int64(key.occurrence))), ("attempt", .int(Int64(attempt))),
         ("silent_ms", .int(silentMs)), ("ending", .bool(ending))]
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
        public var json: JSON {
            .object([("kind", .string(kind)), ("target", .string(target)), ("ok", .bool(ok)), ("detail", .string(detail))])
        }
    }
    public var name: String
    public var policy: PreflightPolicy
    public var ok: Bool
    public var dryRun: Bool
    public var checks: [Check]

    public static let fieldNames = ["name", "policy", "ok", "dry_run", "checks"]

    public init(name: String, policy: PreflightPolicy, ok: Bool, dryRun: Bool, checks: [Check]) {
        self.name = name; self.policy = policy; self.ok = ok; self.dryRun = dryRun; self.checks = checks
    }

    init(_ f: inout Fields) {
        name = f.string("name") ?? ""
        policy = f.string("policy").flatMap(PreflightPolicy.init(rawValue:)) ?? .fail
        ok = f.bool("ok")
        dryRun = f.bool("dry_run")
        checks = (f["checks"]?.arrayValue ?? []).map {
            Check(kind: $0["kind"]?.stringValue ?? "", target: $0["target"]?.stringValue ?? "",
                  ok: $0["ok"]?.boolValue ?? false, detail: $0["detail"]?.stringValue ?? "")
        }
    }

    var fields: [(String, JSON)] {
        [("name", .string(name)), ("policy", .string(policy.rawValue)), ("ok", .bool(ok)), ("dry_run", .bool(dryRun)),
         ("checks", .array(checks.map(\.json)))]
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
    public var details: JSON

    public static let fieldNames = ["id", "from", "to", "reason", "details"]

    public init(id: String, from: WatchState?, to: WatchState, reason: String, details: JSON) {
        self.id = id; self.from = from; self.to = to; self.reason = reason; self.details = details
    }

    init(_ f: inout Fields) {
        id = f.string("id") ?? ""
        from = f.string("from").flatMap(WatchState.init(rawValue:))
        to = f.string("to").flatMap(WatchState.init(rawValue:)) ?? .failed
        reason = f.string("reason") ?? ""
        details = f["details"] ?? .object([])
    }

    var fields: [(String, JSON)] {
        [("id", .string(id)), ("from", str(from?.rawValue)), ("to", .string(to.rawValue)), ("reason", .string(reason)),
         ("details", details)]
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

    public static let fieldNames = ["name", "iteration", "max", "approved", "issues", "fallback_used", "note"]

    public init(name: String, iteration: Int, max: Int, approved: Bool, issues: JSON, fallbackUsed: Bool, note: String?) {
        self.name = name; self.iteration = iteration; self.max = max; self.approved = approved
        self.issues = issues; self.fallbackUsed = fallbackUsed; self.note = note
    }

    init(_ f: inout Fields) {
        name = f.string("name") ?? ""
        iteration = Int(f.int("iteration") ?? 0)
        max = Int(f.int("max") ?? 0)
        approved = f.bool("approved")
        issues = f["issues"] ?? .array([])
        fallbackUsed = f.bool("fallback_used")
        note = f.string("note")
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("name", .string(name)), ("iteration", .int(Int64(iteration))), ("max", .int(Int64(max))),
                                   ("approved", .bool(approved)), ("issues", issues), ("fallback_used", .bool(fallbackUsed))]
        if let n = note { o.append(("note", .string(n))) }
        return o
    }
}

public struct Heartbeat: Sendable {
    /// What the recipe waits on: stage, watch, command, lock, sleep.
    public var waitingOn: String
    public var id: String
    public var forMs: Int64

    public static let fieldNames = ["waiting_on", "id", "for_ms"]

    public init(waitingOn: String, id: String, forMs: Int64) { self.waitingOn = waitingOn; self.id = id; self.forMs = forMs }

    init(_ f: inout Fields) {
        waitingOn = f.string("waiting_on") ?? ""
        id = f.string("id") ?? ""
        forMs = f.int("for_ms") ?? 0
    }

    var fields: [(String, JSON)] { [("waiting_on", .string(waitingOn)), ("id", .string(id)), ("for_ms", .int(forMs))] }
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

    public static let fieldNames = ["level", "message", "fields"]

    public init(level: LogLevel, message: String, fields: JSON = .object([])) {
        self.level = level; self.message = message; self.fields = fields
    }

    init(_ f: inout Fields) {
        level = f.string("level").flatMap(LogLevel.init(rawValue:)) ?? .info
        message = f.string("message") ?? ""
        fields = f["fields"] ?? .object([])
    }

    /// The encoder (named apart from `fields`, the record's own payload).
    var fieldsJSON: [(String, JSON)] { [("level", .string(level.rawValue)), ("message", .string(message)), ("fields", fields)] }
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

    public static let fieldNames = ["via", "argv", "shell", "cwd", "pid", "exit", "signal", "timed_out", "duration_ms", "stdout"]

    public init(via: String, command: Command, cwd: String, pid: Int32?, exit: Int32?, signal: Int32?,
                timedOut: Bool, durationMs: Int64) {
        self.via = via; self.command = command; self.cwd = cwd; self.pid = pid; self.exit = exit
        self.signal = signal; self.timedOut = timedOut; self.durationMs = durationMs
    }

    init(_ f: inout Fields) {
        via = f.string("via") ?? ""
        command = f.command() ?? .argv([])
        cwd = f.string("cwd") ?? ""
        pid = f.int32("pid")
        exit = f.int32("exit")
        signal = f.int32("signal")
        timedOut = f.bool("timed_out")
        durationMs = f.int("duration_ms") ?? 0
        stdout = f.string("stdout")
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("via", .string(via)), command.journalField, ("cwd", .string(cwd)), ("pid", int(pid)), ("exit", int(exit)),
                                   ("signal", int(signal)), ("timed_out", .bool(timedOut)), ("duration_ms", .int(durationMs))]
        if let s = stdout { o.append(("stdout", .string(s))) }
        return o
    }
}

/// Something a dry run did not do (a command, a file write), so the plan is complete.
public struct NotRun: Sendable {
    public var via: String
    public var target: String
    public var reason: String

    public static let fieldNames = ["via", "target", "reason"]

    public init(via: String, target: String, reason: String = "dry run") { self.via = via; self.target = target; self.reason = reason }

    init(_ f: inout Fields) {
        via = f.string("via") ?? ""
        target = f.string("target") ?? ""
        reason = f.string("reason") ?? ""
    }

    var fields: [(String, JSON)] { [("via", .string(via)), ("target", .string(target)), ("reason", .string(reason))] }
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

    public static let fieldNames = ["uid", "user", "pid", "op", "target", "ok", "result"]

    public init(uid: Int64, user: String, pid: Int64, op: ControlOp, target: String, ok: Bool, result: String) {
        self.uid = uid; self.user = user; self.pid = pid; self.op = op; self.target = target; self.ok = ok; self.result = result
    }

    init(_ f: inout Fields) {
        uid = f.int("uid") ?? -1
        user = f.string("user") ?? ""
        pid = f.int("pid") ?? 0
        op = f.string("op").flatMap(ControlOp.init(rawValue:)) ?? .refused
        target = f.string("target") ?? ""
        ok = f.bool("ok")
        result = f.string("result") ?? ""
    }

    var fields: [(String, JSON)] {
        [("uid", .int(uid)), ("user", .string(user)), ("pid", .int(pid)), ("op", .string(op.rawValue)), ("target", .string(target)),
         ("ok", .bool(ok)), ("result", .string(result))]
    }
}

public struct FinalEvent: Sendable {
    public var status: RunOutcome
    public var exitCode: Int32
    public var reason: String?
    /// When `baton cancel` finished an orphaned run: the processes it ended.
    public var killedPids: [Int32]?

    public static let fieldNames = ["status", "exit_code", "reason", "killed_pids"]

    public init(status: RunOutcome, exitCode: Int32, reason: String?, killedPids: [Int32]? = nil) {
        self.status = status; self.exitCode = exitCode; self.reason = reason; self.killedPids = killedPids
    }

    init(_ f: inout Fields) {
        status = RunOutcome(reading: f.string("status"))
        exitCode = f.int32("exit_code") ?? 1
        reason = f.string("reason")
        killedPids = f["killed_pids"]?.arrayValue?.compactMap { $0.intValue.map { Int32(truncatingIfNeeded: $0) } }
    }

    var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("status", .string(status.rawValue)), ("exit_code", .int(Int64(exitCode))),
                                  ("reason", str(reason))]
        if let k = killedPids { o.append(("killed_pids", .array(k.map { .int(Int64($0)) }))) }
        return o
    }
}

extension Command {
    /// `argv` (a list) or `shell` (a string), as stage and command events write it.
    var journalField: (String, JSON) {
        switch self {
        case let .argv(a): return ("argv", .array(a.map(JSON.string)))
        case let .shell(s): return ("shell", .string(s))
        }
    }
}
