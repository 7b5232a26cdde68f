import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct ReportCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Write a run's self-contained HTML report (report.html in its directory by default), a trace, a TSV.")
    @Argument(help: runHelp, completion: runCompletion) var ref: String?
    @Option(help: ArgumentHelp("Write the HTML report here.", valueName: "FILE"), completion: .file()) var html: String?
    @Option(help: ArgumentHelp("Write Chrome Trace Event JSON here (Perfetto, chrome://tracing).", valueName: "FILE"),
            completion: .file()) var trace: String?
    @Option(help: ArgumentHelp("Write one row per attempt here (Nextflow trace field names).", valueName: "FILE"),
            completion: .file()) var tsv: String?
    @OptionGroup var globals: Globals

    mutating func run() throws {
        Glibc.exit(Commands.report(root: root, ref: ref, html: html, trace: trace, tsv: tsv))
    }
}

/// `baton report` and `baton log --why`.
extension Commands {
    /// Writes the report of a run: HTML (the default: report.html in the run directory),
    /// a Chrome trace and/or a TSV of attempts. Prints each path written.
    public static func report(root: String, ref: String?, html: String?, trace: String?, tsv: String?) -> Int32 {
        guard let dir = resolve(root, ref, json: false) else { return ExitStatus.usage.rawValue }
        if let refused = refuseLinked(dir, json: false) { return refused }
        do {
            // With one output on stdout ('-'), the paths written are said on stderr.
            let toStdout = [html, trace, tsv].contains("-")
            for p in try writeReport(dir, html: html, trace: trace, tsv: tsv) where p != "-" {
                if toStdout { diag(p) } else { out(p) }
            }
        } catch {
            diag("baton: cannot write the report: \(error)")
            return ExitStatus.failure.rawValue
        }
        return ExitStatus.success.rawValue
    }

    /// The files of a run's report; with none named, report.html in the run directory.
    static func writeReport(_ dir: RunDirectory, html: String?, trace: String?, tsv: String?) throws -> [String] {
        // One fold: the timeline's history is the one `RunInfo` describes.
        var timeline = RunTimeline(folding: [])
        let info = RunInfo.load(dir) { events in
            timeline = RunTimeline(folding: events)
            return timeline.history
        }
        timeline.close(live: info.isLive)
        var written: [String] = []
        let htmlPath = html ?? (trace == nil && tsv == nil ? dir.path + "/report.html" : nil)
        if let p = htmlPath {
            // In the run directory: the runs' file mode (0600 unless BATON_RUNS_MODE), like its other files.
            try writeOutput(p,
                            Array(ReportHTML(info: info,
                                             timeline: timeline,
                                             linkBase: html == nil ? dir.path : nil).render().utf8),
                            mode: html == nil ? RunDirectory.fileMode : 0o644)
            written.append(p)
        }
        if let p = trace {
            try writeOutput(p, ReportTrace(timeline: timeline).json().encodedBytes())
            written.append(p)
        }
        if let p = tsv {
            try writeOutput(p, Array(ReportTSV(timeline: timeline).render().utf8))
            written.append(p)
        }
        return written
    }

    /// An output file named by the user, written where a shell redirection would write it:
    /// `-` is stdout; a symlink is followed to its target (created if missing; the link
    /// stays); what exists and is not a regular file (a FIFO, a character device, a socket,
    /// /dev/stdout's /proc/self/fd/N) is opened and written, never replaced; only a regular
    /// file (or a new one) is written whole to a temp file and renamed over.
    static func writeOutput(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        if path == "-" {
            try bytes.withUnsafeBytes { try FileIO.writeAll(1, $0, path: "stdout") }
            return
        }
        var target = path
        for _ in 0..<40 {
            var st = stat()
            guard lstat(target, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { break }
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(target, &buf, buf.count - 1)
            guard n > 0 else { throw SystemError("readlink", target) }
            let link = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if link.hasPrefix("/proc/") || link.hasPrefix("/dev/fd/") {
                target = link
                break
            }   // a descriptor: written as is
            target = link.hasPrefix("/") ? link : FileIO.join(FileIO.dirname(target), link)
        }
        // This process's own descriptor (/dev/stdout is /proc/self/fd/1): written as it is
        // open (appending stays appending, nothing is cut).
        for prefix in ["/proc/self/fd/", "/dev/fd/", "/proc/\(getpid())/fd/"] where target.hasPrefix(prefix) {
            if let n = Int32(target.dropFirst(prefix.count)), fcntl(n, F_GETFD) >= 0 {
                try bytes.withUnsafeBytes { try FileIO.writeAll(n, $0, path: path) }
                return
            }
        }
        var st = stat()
        if stat(target, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG || target.hasPrefix("/proc/") {
            let fd = open(target, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOCTTY)
            if fd < 0 { throw SystemError("open", path) }
            defer { close(fd) }
            try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: path) }
            return
        }
        try FileIO.writeAtomically(target, bytes, mode: mode)
    }

    /// `baton log --why [STAGE]`: for each resume of the run, whether each stage call
    /// replayed or ran for real, and why. `log --why STAGE` (of the latest run): a word that
    /// names no run is the stage.
    public static func why(root: String, ref: String?, stage: String?, json: Bool) -> Int32 {
        var ref = ref, stage = stage
        if stage == nil, let r = ref, (try? RunStore(root: root).resolve(r)) == nil { stage = r; ref = nil }
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let events = ((try? dir.readJournal()) ?? JournalContents()).events
        let t = RunTimeline(events, live: false)
        let picked = t.decisions.filter { stage == nil || $0.key.id == stage }
        // The cache's answers (hit, or why not), by life of the run: 0 is the first run.
        var cache: [(life: Int, key: StageKey, decision: CacheDecision)] = []
        var life = -1
        // (Two kinds of event matter here: a life's start, and a stage start with the cache's answer.)
        for e in events {
            if e.body.began != nil { life += 1 }
            guard case let .stageStarted(s) = e.body, let c = s.cache, stage == nil || s.key.id == stage else {
                continue
            }
            cache.append((max(0, life), s.key, c))
        }
        func cacheOf(_ l: Int, _ k: StageKey) -> CacheDecision? {
            cache.first { $0.life == l && $0.key == k }?.decision
        }
        if json {
            var list = picked.map { d in
                var o: [(String, JSON)] = [("resume", .int(Int64(d.life))), ("id", .string(d.key.id)),
                             ("occurrence", .int(Int64(d.key.occurrence))), ("replayed", .bool(d.why.replayed)),
                             ("reason", .string(d.why.reason.rawValue)),
                             ("changed", .array(d.why.changed.map(JSON.string))),
                             ("why", .string(d.why.sentence))]
                if let f = d.why.files { o.append(("files", f.json)) }
                if let c = cacheOf(d.life, d.key) { o.append(("cache", c.json)) }
                return JSON.object(o)
            }
            for c in cache where c.life == 0 {
                list.append(.object([("resume", .int(0)), ("id", .string(c.key.id)),
                                     ("occurrence", .int(Int64(c.key.occurrence))),
                                     ("cache", c.decision.json), ("why", .string(c.decision.sentence))]))
            }
            out(JSON.array(list).encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        let first = cache.filter { $0.life == 0 }
        if !first.isEmpty {
            out("run \(dir.id) at \(Render.shortTime(t.lives.first?.start ?? 0)) UTC:")
            for c in first { out("  \(c.key): \(c.decision.sentence)") }
        }
        if t.lives.count < 2 {
            out("run \(dir.id) was never resumed: every stage call ran for real"
                + (first.isEmpty ? "" : " or came from the cache"))
            return ExitStatus.success.rawValue
        }
        if picked.isEmpty, let s = stage {
            out("no resume of run \(dir.id) reached stage '\(s)'")
            return ExitStatus.success.rawValue
        }
        for l in 1..<t.lives.count {
            let ds = picked.filter { $0.life == l }
            out("resume \(l) at \(Render.shortTime(t.lives[l].start)) UTC:"
                + (ds.isEmpty ? " (no stage call reached)" : ""))
            for d in ds { out("  \(d.key): \(d.why.sentence)" + (cacheOf(l, d.key).map { "; " + $0.sentence } ?? "")) }
        }
        return ExitStatus.success.rawValue
    }
}
