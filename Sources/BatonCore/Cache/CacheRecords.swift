import BatonBase

/// Where a cache hit's outputs came from: the run and the stage call that made them.
public struct CachedFrom: Sendable, Equatable {
    public var run: String
    public var id: String
    public var occurrence: Int
    public init(run: String, id: String, occurrence: Int) { self.run = run; self.id = id; self.occurrence = occurrence }
    public var json: JSON {
        .object([("run", .string(run)), ("id", .string(id)), ("occurrence", .int(Int64(occurrence)))])
    }
    public init?(_ j: JSON?) {
        guard let j, let r = j["run"]?.stringValue, let i = j["id"]?.stringValue else { return nil }
        self.init(run: r, id: i, occurrence: Int(j["occurrence"]?.intValue ?? 1))
    }
    /// "run 20261204-101500-3f9a, stage build"
    public var text: String { "run \(run), stage \(id)" + (occurrence > 1 ? " #\(occurrence)" : "") }
}

/// A stage's declared inputs as resolved: how many files and their digest (the manifest,
/// "hash path" per file, is `inputs/<digest>` in the run directory).
public struct InputsRecord: Sendable, Equatable {
    public var files: Int
    public var digest: String
    public init(_ s: FileSet) { files = s.files.count; digest = s.digest }
    public var json: JSON { .object([("files", .int(Int64(files))), ("digest", .string(digest))]) }
    public init?(_ j: JSON?) {
        guard let j, let d = j["digest"]?.stringValue else { return nil }
        files = Int(j["files"]?.intValue ?? 0); digest = d
    }
}

/// The cache's answer for a stage call: a hit, or why not.
public struct CacheDecision: Sendable, Equatable {
    public var hit: Bool
    public var key: String
    public var reason: String
    /// For a miss when the stage passed before with another fingerprint: that pass, which
    /// parts of the fingerprint differ from it (`FingerprintParts.names`), and which input files.
    public var since: CachedFrom?
    public var changed: [String] = []
    public var files: FileChanges?
    public init(hit: Bool, key: String, reason: String) { self.hit = hit; self.key = key; self.reason = reason }
    public var json: JSON {
        var o: [(String, JSON)] = [("hit", .bool(hit)), ("key", .string(key)), ("reason", .string(reason))]
        if let s = since { o += [("since", s.json), ("changed", .array(changed.map(JSON.string)))] }
        if let f = files { o.append(("files", f.json)) }
        return .object(o)
    }
    public init?(_ j: JSON?) {
        guard let j, let h = j["hit"]?.boolValue else { return nil }
        self.init(hit: h, key: j["key"]?.stringValue ?? "", reason: j["reason"]?.stringValue ?? "")
        since = CachedFrom(j["since"])
        changed = j["changed"]?.arrayValue?.compactMap(\.stringValue) ?? []
        files = FileChanges(j["files"])
    }
    /// "cache miss: no earlier pass with this fingerprint; since the latest stored pass (run R,
    /// stage S): inputs changed: src/a.py changed"
    public var sentence: String {
        (hit ? "cache hit: " : "cache miss: ") + reason
            + (since.map { "; since the latest stored pass (\($0.text)): " + ResumeWhy.changes(changed, files) } ?? "")
    }
}

/// Input files that differ from the earlier call's: at most 10 named in all, then a count.
public struct FileChanges: Sendable, Equatable {
    public var changed: [String] = [], added: [String] = [], removed: [String] = []
    public var more = 0
    public static let limit = 10

    public init(changed: [String], added: [String], removed: [String]) {
        var room = FileChanges.limit
        func take(_ l: [String]) -> [String] { let t = Array(l.prefix(room)); room -= t.count; return t }
        self.changed = take(changed); self.added = take(added); self.removed = take(removed)
        more = changed.count + added.count + removed.count - self.changed.count - self.added.count - self.removed.count
    }

    public var isEmpty: Bool { changed.isEmpty && added.isEmpty && removed.isEmpty && more == 0 }

    /// "src/a.py changed, data/new.csv added, old.txt removed, and 3 more"
    public var sentence: String {
        var parts = changed.map { "\($0) changed" } + added.map { "\($0) added" } + removed.map { "\($0) removed" }
        if more > 0 { parts.append("and \(more) more file\(more == 1 ? "" : "s")") }
        return parts.joined(separator: ", ")
    }

    public var json: JSON {
        .object([("changed", .array(changed.map(JSON.string))), ("added", .array(added.map(JSON.string))),
                 ("removed", .array(removed.map(JSON.string))), ("more", .int(Int64(more)))])
    }

    init?(_ j: JSON?) {
        guard let j, case .object = j else { return nil }
        changed = j["changed"]?.arrayValue?.compactMap(\.stringValue) ?? []
        added = j["added"]?.arrayValue?.compactMap(\.stringValue) ?? []
        removed = j["removed"]?.arrayValue?.compactMap(\.stringValue) ?? []
        more = Int(j["more"]?.intValue ?? 0)
    }
}
