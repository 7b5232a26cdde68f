import BatonBase

/// What a `watch` transition carries beside its reason (the journal's `details` object):
/// the watch's settings when it is registered (`queued`), the files it waits for
/// (`awaiting_artifacts`), the stage that failed and the required files missing (`blocked`,
/// `failed`). Most transitions carry none of it (`{}`).
public struct WatchDetails: Sendable {
    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case requireFiles = "require_files", readyTimeoutSec = "ready_timeout_sec", readyPollSec = "ready_poll_sec"
        case onMissing = "on_missing", timeoutSec = "timeout_sec", files, stage, status, exit, missing
    }

    /// A watch's settings, journaled when it is registered.
    public struct Settings: Sendable, Equatable {
        public var requireFiles: [String]
        public var readyTimeoutSec: Double
        public var readyPollSec: Double
        public var onMissing: OnMissing
        public var timeoutSec: Double
        public init(requireFiles: [String], readyTimeoutSec: Double, readyPollSec: Double, onMissing: OnMissing,
                    timeoutSec: Double) {
            self.requireFiles = requireFiles; self.readyTimeoutSec = readyTimeoutSec; self.readyPollSec = readyPollSec
            self.onMissing = onMissing; self.timeoutSec = timeoutSec
        }
    }

    /// The watched stage, ended without passing.
    public struct StageEnd: Sendable, Equatable {
        public var id: String
        public var status: StageStatus
        public var exit: Int32?
        public init(id: String, status: StageStatus, exit: Int32?) {
            self.id = id; self.status = status; self.exit = exit
        }
    }

    public var settings: Settings?
    /// The required files it waits for.
    public var files: [String]?
    public var stage: StageEnd?
    /// The required files missing when it ended.
    public var missing: [String]?
    /// Keys this version does not know (a newer writer's): kept and written back as they were.
    public var others: [(String, JSON)] = []

    public init(settings: Settings? = nil, files: [String]? = nil, stage: StageEnd? = nil, missing: [String]? = nil) {
        self.settings = settings; self.files = files; self.stage = stage; self.missing = missing
    }

    /// Nothing (`{}`).
    public static let none = WatchDetails()

    public var json: JSON {
        var o: FieldList<Key> = []
        if let s = settings {
            o += [(.requireFiles, .array(s.requireFiles.map(JSON.string))),
                  (.readyTimeoutSec, .double(s.readyTimeoutSec)), (.readyPollSec, .double(s.readyPollSec)),
                  (.onMissing, .string(s.onMissing.rawValue)), (.timeoutSec, .double(s.timeoutSec))]
        }
        if let f = files { o.add(.files, .array(f.map(JSON.string))) }
        if let s = stage {
            o += [(.stage, .string(s.id)), (.status, .string(s.status.rawValue)),
                  (.exit, s.exit.map { .int(Int64($0)) } ?? .null)]
        }
        if let m = missing { o.add(.missing, .array(m.map(JSON.string))) }
        return .object(o.pairs + others)
    }

    /// Lenient, as every decoder: a setting that is absent reads as its default.
    public init(_ j: JSON?) {
        var f = Fields<Key>(j ?? .object([]))
        if f[.requireFiles] != nil || f[.timeoutSec] != nil {
            settings = Settings(requireFiles: f.strings(.requireFiles),
                                readyTimeoutSec: f.double(.readyTimeoutSec) ?? 0,
                                readyPollSec: f.double(.readyPollSec) ?? 0,
                                onMissing: f.string(.onMissing).flatMap(OnMissing.init(rawValue:)) ?? .fail,
                                timeoutSec: f.double(.timeoutSec) ?? 0)
        }
        if let a = f[.files]?.arrayValue { files = a.compactMap(\.stringValue) }
        if let id = f.string(.stage) {
            stage = StageEnd(id: id, status: f.string(.status).flatMap(StageStatus.init(rawValue:)) ?? .failed,
                             exit: f.int32(.exit))
        }
        if let a = f[.missing]?.arrayValue { missing = a.compactMap(\.stringValue) }
        let known = Set(Key.allCases.map(\.rawValue))
        others = (j?.objectValue ?? []).filter { !known.contains($0.0) }
    }
}

extension WatchRecord {
    /// Its time limit in its present state: the readiness timeout while it waits for its
    /// files, else its timeout (nil when its registration was not read).
    public var limit: Double? {
        state == .awaiting_artifacts ? queued.settings?.readyTimeoutSec : queued.settings?.timeoutSec
    }

    /// While it waits for its files: those still missing (absent or empty) now.
    public var missingNow: [String] {
        guard state == .awaiting_artifacts else { return [] }
        return (queued.settings?.requireFiles ?? []).filter { (FileIO.size($0) ?? 0) == 0 }
    }
}
