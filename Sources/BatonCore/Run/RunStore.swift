import BatonBase
import Glibc

/// The files of one run directory.
public struct RunDirectory: Sendable {
    public let id: String
    public let path: String

    public init(id: String, path: String) { self.id = id; self.path = path }

    public var journal: String { path + "/journal.jsonl" }
    public var final: String { path + "/final.json" }
    public var lock: String { path + "/lock" }
    public var pidFile: String { path + "/run.pid" }
    public var outFile: String { path + "/run.out" }
    public var stagesDir: String { path + "/stages" }

    public func stageDir(_ stageID: String) -> String { stagesDir + "/" + RunDirectory.safeName(stageID) }

    public func stageLogs(_ stageID: String, attempt: Int) -> StageLogs {
        let d = stageDir(stageID)
        return StageLogs(stdout: "\(d)/\(attempt).out", stderr: "\(d)/\(attempt).err")
    }

    /// Stage ids are free text; their directory names keep only safe characters.
    public static func safeName(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            let ok = (u >= "a" && u <= "z") || (u >= "A" && u <= "Z") || (u >= "0" && u <= "9") || u == "-" || u == "_" || u == "."
            out.unicodeScalars.append(ok ? u : "_")
        }
        if out.isEmpty || out.hasPrefix(".") { out = "_" + out }
        // File names have a length limit; long ids keep a prefix and a hash of the whole.
        if out.utf8.count > 100 { out = String(out.prefix(80)) + "-" + FailureSignature.fnv1a(s) }
        return out
    }

    public func readFinal() -> JSON? {
        guard let bytes = try? FileIO.readFile(final, limit: 64 << 20) else { return nil }
        return try? JSON.parse(bytes)
    }

    /// One top-level field of final.json, the others skipped without being built.
    public func readFinal(_ key: String) -> JSON? {
        guard let bytes = try? FileIO.readFile(final, limit: 64 << 20) else { return nil }
        return try? JSON.topLevelValue(key, in: bytes)
    }

    /// When the run started: its first journal line's `ts`, else when its directory was made.
    public func startTime() -> Double? {
        if let head = try? FileIO.readFile(journal, limit: 4096), let nl = head.firstIndex(of: 10),
           let line = try? JSON.parse(Array(head[..<nl])), let ts = line["ts"]?.stringValue.flatMap(Clock.parseRFC3339) {
            return ts
        }
        return FileIO.mtime(path)
    }

    public func readPid() -> Int32? {
        guard let s = try? FileIO.readString(pidFile) else { return nil }
        return Int32(s.trimmingWhitespace())
    }
}

public enum RunStoreError: Error, CustomStringConvertible {
    case noRuns(String)
    case notFound(String, String)
    case ambiguous(String, [String])
    case exists(String)
    case invalidID(String)

    public var description: String {
        switch self {
        case let .noRuns(dir): return "no runs in \(dir)"
        case let .notFound(ref, dir): return "no run matches '\(ref)' in \(dir)"
        case let .ambiguous(ref, ids): return "'\(ref)' matches several runs: \(ids.prefix(5).joined(separator: ", "))\(ids.count > 5 ? ", ..." : "")"
        case let .exists(id): return "run '\(id)' already exists"
        case let .invalidID(id): return "invalid run id '\(id)': use letters, digits, '-', '_' and '.'"
        }
    }
}

/// The runs directory: creating runs, finding them by id, prefix or `latest`.
public struct RunStore: Sendable {
    public let root: String

    public init(root: String) { self.root = root }

    /// `--runs-dir`, then `BATON_RUNS_DIR`, then `runs` in the nearest `.baton` directory
    /// from the working directory up (as git finds `.git`), else `./.baton/runs`.
    public static func defaultRoot(override: String? = nil) -> String {
        if let o = override, !o.isEmpty { return FileIO.absolute(o) }
        if let s = Settings.string(Settings.runsDir) { return FileIO.absolute(s) }
        return (nearestBatonDirectory(from: FileIO.currentDirectory()) ?? FileIO.absolute(".baton")) + "/runs"
    }

    /// The nearest `.baton` directory in `start` or above it. The walk never enters a
    /// directory listed in BATON_CEILING_DIRS (colon-separated, as GIT_CEILING_DIRECTORIES):
    /// tests in /tmp/x must not find a stray /tmp/.baton.
    public static func nearestBatonDirectory(from start: String) -> String? {
        let ceilings = (Settings.raw(Settings.ceilingDirs) ?? "")
            .split(separator: ":").map { String($0).trimming { $0 == "/" } }
        var dir = start
        while true {
            if FileIO.isDirectory(dir + "/.baton") { return dir + "/.baton" }
            let parent = FileIO.dirname(dir)
            if parent == dir || ceilings.contains(parent.trimming { $0 == "/" }) { return nil }
            dir = parent
        }
    }

    public func directory(_ id: String) -> RunDirectory { RunDirectory(id: id, path: root + "/" + id) }

    public func create(id: String?) throws -> RunDirectory {
        try FileIO.makeDirectories(root)
        if let id {
            guard RunID.isValid(id) else { throw RunStoreError.invalidID(id) }
            let d = directory(id)
            if mkdir(d.path, 0o755) != 0 {
                if errno == EEXIST { throw RunStoreError.exists(id) }
                throw SystemError("mkdir", d.path)
            }
            return d
        }
        while true {
            let d = directory(RunID.make())
            if mkdir(d.path, 0o755) == 0 { return d }
            if errno != EEXIST { throw SystemError("mkdir", d.path) }
        }
    }

    /// Run ids, newest first: by start time (a `--run-id` chosen by hand sorts by when it
    /// ran, not by its text), then by id.
    public func ids() -> [String] {
        let names = FileIO.list(root).filter { !$0.hasPrefix(".") && FileIO.isDirectory(root + "/" + $0) }
        let keyed = names.map { ($0, directory($0).startTime() ?? 0) }
        return keyed.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 > $1.0 }.map(\.0)
    }

    /// Deletes a run directory and everything in it (`baton prune`).
    public func remove(_ id: String) throws {
        guard RunID.isValid(id), !id.hasPrefix(".") else { throw RunStoreError.invalidID(id) }
        try FileIO.removeTree(directory(id).path)
    }

    public func resolve(_ ref: String?) throws -> RunDirectory {
        let all = ids()
        let r = ref ?? "latest"
        if r == "latest" {
            guard let first = all.first else { throw RunStoreError.noRuns(root) }
            return directory(first)
        }
        if all.contains(r) { return directory(r) }
        let matches = all.filter { $0.hasPrefix(r) }
        if matches.count == 1 { return directory(matches[0]) }
        if matches.isEmpty { throw RunStoreError.notFound(r, root) }
        throw RunStoreError.ambiguous(r, matches)
    }
}
