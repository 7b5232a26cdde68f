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

    // MARK: ownership: modes, and never through a symbolic link

    /// A run directory's mode: 0700 (stage output often holds secrets), or BATON_RUNS_MODE
    /// (octal, e.g. 0750 for a team that shares runs; an unreadable value is ignored).
    public static let dirMode: mode_t = {
        guard let s = Settings.string(Settings.runsMode), let m = UInt32(s, radix: 8), m & 0o700 == 0o700,
              m <= 0o777 else {
            return 0o700
        }
        return mode_t(m)
    }()
    /// Its files' mode: the directory's without the execute bits (0600 by default).
    public static let fileMode: mode_t = dirMode & 0o666
    /// Whether the umask could take bits the mode asks for (then they are set by chmod).
    static let modeNeedsChmod: Bool = {
        let u = umask(0o022)
        umask(u)
        return (dirMode & u) != 0
    }()

    /// mkdir with the runs' mode (exactly, whatever the umask).
    public static func makeDirectory(_ path: String) -> Int32 {
        let r = mkdir(path, dirMode)
        if r == 0, modeNeedsChmod { chmod(path, dirMode) }
        return r
    }

    /// Opens (creating) a file of a run directory: never through a symbolic link
    /// (O_NOFOLLOW: a planted link fails with ELOOP), with the runs' file mode.
    public static func openFile(_ path: String, _ flags: Int32) -> Int32 {
        let fd = open(path, flags | O_CREAT | O_CLOEXEC | O_NOFOLLOW, fileMode)
        if fd >= 0, modeNeedsChmod { fchmod(fd, fileMode) }
        return fd
    }

    /// Why Baton must not write in this run directory: its entry in the runs directory, one
    /// of its files, or a stage's folder or log is a symbolic link (which would make Baton
    /// write where the link points). nil when it is Baton's own.
    public func linkProblem() -> String? {
        func isLink(_ p: String) -> Bool {
            var st = stat()
            return lstat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
        }
        if isLink(path) {
            return "run \(id): \(path) is a symbolic link; Baton never writes through one (a run directory is "
                + "Baton's alone)"
        }
        var links: [String] = []
        // (From the directory entries: a resume of 100,000 stage calls looks at 200,000 logs.)
        for (name, link) in FileIO.entries(path) where link { links.append(name) }
        for (s, link) in FileIO.entries(stagesDir) where links.count < 5 {
            if link { links.append("stages/" + s); continue }
            for (f, l) in FileIO.entries(stagesDir + "/" + s) where l { links.append("stages/\(s)/\(f)") }
        }
        guard !links.isEmpty else { return nil }
        return "run \(id): \(links.prefix(5).joined(separator: ", ")) "
            + "\(links.count == 1 ? "is a symbolic link" : "are symbolic links")"
            + " in its directory; Baton never writes through one (a run directory is Baton's alone): remove "
                + "\(links.count == 1 ? "it" : "them") or the run"
    }

    public func stageDir(_ stageID: String) -> String { stagesDir + "/" + RunDirectory.safeName(stageID) }

    public func stageLogs(_ stageID: String, attempt: Int) -> StageLogs {
        let d = stageDir(stageID)
        return StageLogs(stdout: "\(d)/\(attempt).out", stderr: "\(d)/\(attempt).err")
    }

    /// Stage ids are free text; a stage's folder name is its id with every byte outside
    /// `[A-Za-z0-9._-]` (and a leading '.') written as `%XX`, so two ids never share a folder
    /// (`train/1` is `train%2F1`, `train_1` stays `train_1`, `train%2F1` is `train%252F1`).
    /// The empty id is `%`. An id whose name would pass 100 bytes keeps an 80-byte prefix and
    /// `%~` and a 64-bit hash of the whole (no escaped name contains `%~`). Readers follow
    /// the journal's log paths, so runs written with the old mapping (unsafe characters as
    /// `_`) still read.
    public static func safeName(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for (i, c) in s.utf8.enumerated() {
            let ok = (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 45 || c == 95
                || (c == 46 && i > 0)
            if ok { out.append(c) } else { out += [37, hex[Int(c >> 4)], hex[Int(c & 15)]] }
        }
        if out.isEmpty { return "%" }
        // File names have a length limit; long ids keep a prefix and a hash of the whole.
        if out.count > 100 { return String(decoding: out.prefix(80), as: UTF8.self) + "%~" + FailureSignature.fnv1a(s) }
        return String(decoding: out, as: UTF8.self)
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

    /// The journal's first line, the run's `run_started`: when and what started, without
    /// reading the rest (`ids()` asks it of every run). Read from the first 4 KiB, or the
    /// first 64 KiB when the line is longer (a long argument list); nil when there is none.
    public func header() -> (ts: Double, began: RunBegan)? {
        for limit in [4096, 65536] {
            guard let head = try? FileIO.readFile(journal, limit: limit) else { return nil }
            guard let nl = head.firstIndex(of: 10) else {
                if head.count < limit { return nil }   // (still being written)
                continue
            }
            guard let j = try? JSON.parse(Array(head[..<nl])), let e = JournalEvent(j), let b = e.body.began else {
                return nil
            }
            return (e.ts, b.0)
        }
        return nil
    }

    /// When the run started: its first journal line's `ts`, else when its directory was made.
    public func startTime() -> Double? {
        if let h = header(), h.ts > 0 { return h.ts }
        return FileIO.mtime(path)
    }

    /// Whether the interactive shell opened this run (its run_started names the recipe
    /// `RunBegan.shellRecipe`). Commands outside the shell never take such a run for `latest`.
    public var isShellRun: Bool { header()?.began.recipe == RunBegan.shellRecipe }

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
    case onlyShellRuns(String, String)
    case notOwned(String)

    public var description: String {
        switch self {
        case let .noRuns(dir): return "no runs in \(dir)"
        case let .notFound(ref, dir): return "no run matches '\(ref)' in \(dir)"
        case let .ambiguous(ref, ids): return "'\(ref)' matches several runs: "
            + "\(ids.prefix(5).joined(separator: ", "))\(ids.count > 5 ? ", ..." : "")"
        case let .exists(id): return "run '\(id)' already exists"
        case let .invalidID(id): return "invalid run id '\(id)': use letters, digits, '-', '_' and '.'"
        case let .notOwned(why): return why
        case let .onlyShellRuns(dir, id): return "no runs in \(dir) but the interactive shell's, which 'latest' "
            + "never means: name one (e.g. \(id))"
        }
    }
}

/// Where a project's Baton files are, named once: `PROJECT/.baton/` holds `runs/` (the runs
/// directory, with the stat cache `.statcache` in it), `cache/` (the cache across runs,
/// beside the runs directory wherever that is) and `types/` (`baton init`'s LuaCATS file).
public enum ProjectLayout {
    public static let dir = ".baton"
    static let runs = "runs", cache = "cache", statCache = ".statcache"
    /// `.baton/types`, relative to the project: the editor's library of Baton's types.
    public static let types = dir + "/types"

    /// `.baton/runs` in the `.baton` directory `batonDir`.
    public static func runsDir(batonDir: String) -> String { batonDir + "/" + runs }
    /// PROJECT for `PROJECT/.baton/runs`; nil for a runs directory elsewhere (`--runs-dir`).
    public static func project(ofRunsDir root: String) -> String? {
        let suffix = "/" + dir + "/" + runs
        return root.hasSuffix(suffix) ? String(root.dropLast(suffix.count)) : nil
    }
    /// The cache beside the runs directory `runsDir`: `.baton/cache` for `.baton/runs`.
    public static func cacheRoot(runsDir: String) -> String {
        FileIO.join(FileIO.dirname(FileIO.absolute(runsDir)), cache)
    }
    /// The stat cache in the runs directory `runsDir`.
    public static func statCachePath(runsDir: String) -> String { FileIO.join(runsDir, statCache) }
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
        return ProjectLayout.runsDir(batonDir: nearestBatonDirectory(from: FileIO.currentDirectory())
                                        ?? FileIO.absolute(ProjectLayout.dir))
    }

    /// The nearest `.baton` directory in `start` or above it. The walk never enters a
    /// directory listed in BATON_CEILING_DIRS (colon-separated, as GIT_CEILING_DIRECTORIES):
    /// tests in /tmp/x must not find a stray /tmp/.baton.
    public static func nearestBatonDirectory(from start: String) -> String? {
        let ceilings = (Settings.raw(Settings.ceilingDirs) ?? "")
            .split(separator: ":").map { String($0).trimming { $0 == "/" } }
        var dir = start
        while true {
            if FileIO.isDirectory(dir + "/" + ProjectLayout.dir) { return dir + "/" + ProjectLayout.dir }
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
            if RunDirectory.makeDirectory(d.path) != 0 {
                if errno == EEXIST { throw RunStoreError.exists(id) }
                throw SystemError("mkdir", d.path)
            }
            return d
        }
        while true {
            let d = directory(RunID.make())
            if RunDirectory.makeDirectory(d.path) == 0 { return d }
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
        if let p = directory(id).linkProblem() { throw RunStoreError.notOwned(p) }
        try FileIO.removeTree(directory(id).path)
    }

    public func resolve(_ ref: String?) throws -> RunDirectory {
        let all = ids()
        let r = ref ?? "latest"
        if r == "latest" {
            // The newest run that is not the interactive shell's own (a shell session's run
            // is never what a command outside it means by 'latest').
            guard let first = all.first else { throw RunStoreError.noRuns(root) }
            guard let id = all.first(where: { !directory($0).isShellRun }) else {
                throw RunStoreError.onlyShellRuns(root, first)
            }
            return directory(id)
        }
        if all.contains(r) { return directory(r) }
        let matches = all.filter { $0.hasPrefix(r) }
        if matches.count == 1 { return directory(matches[0]) }
        if matches.isEmpty { throw RunStoreError.notFound(r, root) }
        throw RunStoreError.ambiguous(r, matches)
    }
}
