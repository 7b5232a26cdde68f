import BatonBase
import CBatonSys
import Glibc

/// What a Slurm stage asks of the scheduler (`runStage{slurm = {...}}`, `baton.executor("slurm", {...})`).
public struct SlurmOptions: Sendable, Equatable {
    public var partition: String?
    /// Walltime in Slurm's words ("10", "1:00:00", "2-00:00:00"); nil: from the stage's timeout.
    public var time: String?
    public var mem: String?
    public var cpus: Int?
    public var gpus: String?
    public var account: String?
    public var qos: String?
    public var extra: [String] = []

    public static let fieldNames = ["partition", "time", "mem", "cpus", "gpus", "account", "qos", "extra"]

    public init() {}

    /// These options, with `base`'s where these have none (a stage over the run's default).
    public func over(_ base: SlurmOptions) -> SlurmOptions {
        var o = self
        o.partition = partition ?? base.partition
        o.time = time ?? base.time
        o.mem = mem ?? base.mem
        o.cpus = cpus ?? base.cpus
        o.gpus = gpus ?? base.gpus
        o.account = account ?? base.account
        o.qos = qos ?? base.qos
        o.extra = base.extra + extra
        return o
    }

    /// The `#SBATCH` options these stand for. Without a `time`, a stage timeout asks for its
    /// length plus the grace, rounded up to whole minutes (Slurm's unit).
    func sbatchOptions(timeout: Double?, grace: Double) -> [String] {
        var o: [String] = []
        if let p = partition { o.append("--partition=\(p)") }
        if let t = time { o.append("--time=\(t)") } else if let t = timeout {
            o.append("--time=\(Int(((t + grace) / 60).rounded(.up)))")
        }
        if let m = mem { o.append("--mem=\(m)") }
        if let c = cpus { o.append("--cpus-per-task=\(c)") }
        if let g = gpus { o.append("--gpus=\(g)") }
        if let a = account { o.append("--account=\(a)") }
        if let q = qos { o.append("--qos=\(q)") }
        return o + extra
    }
}

/// Runs stages as Slurm batch jobs. `start` writes a job script next to the stage's logs and
/// submits it with `sbatch --parsable`; `poll` asks the scheduler about every in-flight job
/// of the run in ONE query per interval (`sacct` where accounting exists, `squeue --jobs=...
/// --states=all` otherwise: the same controller call as `scontrol show job`, filtered by
/// job id only, never by partition or user); the exit status comes from the file the job
/// script writes atomically, the scheduler's state says why when there is none.
public final class SlurmExecutor: Executor {
    public let name = "slurm"
    /// Seconds between status queries (BATON_SLURM_POLL_SEC, `baton.executor("slurm", {poll = N})`).
    public var pollInterval: Double
    /// How long a job that left the queue without an exit file is waited for (NFS lag).
    public var exitFileWait: Double
    /// Warnings for the run's journal (MinJobAge too short, no accounting...).
    public var warn: (String) -> Void = { _ in }
    /// The environment sbatch, squeue and scancel run with.
    public var toolEnvironment: [String: String]

    private var nextQuery = 0.0
    private var probed = false
    private var useSacct = false
    /// Jobs whose cancellation is due: one scancel for all of them at the next poll.
    private var toCancel: [SlurmJob] = []
    private var toKill: [SlurmJob] = []

    public init(environment: [String: String]) {
        toolEnvironment = environment
        for k in environment.keys where k.hasPrefix("SQUEUE_") || k.hasPrefix("SACCT_") { toolEnvironment[k] = nil }
        pollInterval = environment["BATON_SLURM_POLL_SEC"].flatMap(Double.init).map { max(0.05, $0) } ?? 5
        exitFileWait = environment["BATON_SLURM_EXIT_WAIT_SEC"].flatMap(Double.init) ?? 0
    }

    /// Seconds a finished job's exit file is awaited: at least 3 polls and 10 s, unless set.
    var exitWait: Double { exitFileWait > 0 ? exitFileWait : max(10, 3 * pollInterval) }

    // MARK: start

    public func start(_ spec: JobSpec) throws -> Job {
        guard let logs = spec.logs else { throw SpawnError(message: "slurm: a job needs its log paths", exitCode: 1) }
        let base = String(logs.stdout.dropLast(4))   // ".../stages/<id>/<n>"
        let script = base + ".sh"
        let exitFile = base + ".exit"
        unlink(exitFile)
        var stdinPath: String?
        if let text = spec.stdinText {
            stdinPath = base + ".in"
            try FileIO.writeAtomically(stdinPath!, Array(text.utf8))
        }
        let text = SlurmExecutor.jobScript(spec: spec, logs: logs, exitFile: exitFile, stdinPath: stdinPath)
        try FileIO.writeAtomically(script, Array(text.utf8), mode: 0o755)
        var env = toolEnvironment
        for (k, v) in spec.env { env[k] = v }
        // The mark that keeps the run's end-of-run sweep (Survivors) off a job's processes where
        // the node is this machine: a Slurm job is Slurm's to end (scancel), and it must outlive
        // a dead runner for resume to re-attach.
        env[SlurmExecutor.jobMark.key] = SlurmExecutor.jobMark.value
        let id = try submit(script: script, env: env)
        return SlurmJob(executor: self, id: id, exitFile: exitFile, dir: FileIO.dirname(exitFile))
    }

    public var jobsOutliveRunner: Bool { true }

    /// A job submitted earlier (journaled), taken up again by a resumed run.
    public func reattach(nativeID: String, logs: StageLogs) -> Job? {
        let exitFile = String(logs.stdout.dropLast(4)) + ".exit"
        return SlurmJob(executor: self, id: nativeID, exitFile: exitFile, dir: FileIO.dirname(exitFile))
    }

    public static let jobMark = (key: "BATON_SLURM_JOB", value: "1")

    static let transientErrors = ["Socket timed out", "Unexpected message", "Resource temporarily unavailable",
                                  "temporarily unable to accept job", "Unable to contact slurm controller",
                                  "Connection refused", "Zero Bytes were transmitted"]

    /// `sbatch --parsable`; transient failures are tried again (0.5, 1, 2, 4 s: a short
    /// synchronous wait, the loop stands still meanwhile); a rejection throws Slurm's words.
    func submit(script: String, env: [String: String]) throws -> String {
        var delay = 0.5
        var attempt = 1
        while true {
            let r = SlurmExecutor.tool(["sbatch", "--parsable", script], env: env, timeout: 60)
            let out = r.stdout.trimmingWhitespace()
            if r.code == 0, let id = out.split(separator: ";").first, !id.isEmpty { return String(id) }
            let msg = SlurmExecutor.errorText(r)
            if attempt < 5, SlurmExecutor.transientErrors.contains(where: { msg.contains($0) }) {
                warn("sbatch failed (\(msg)); trying again in \(Clock.human(delay))")
                usleep(useconds_t(delay * 1_000_000))
                delay *= 2
                attempt += 1
                continue
            }
            throw SpawnError(message: "Slurm rejected the job: \(msg)", exitCode: 1)
        }
    }

    static func errorText(_ r: ToolResult) -> String {
        if let e = r.spawnError { return e }
        let lines = r.stderr.split(separator: "\n").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
        // sbatch says "sbatch: error: Batch job submission failed: <why>" last.
        let last = lines.last.map { $0.replacingOccurrences(of: "sbatch: error: ", with: "") }
        return last ?? "exit code \(r.code)"
    }

    /// The job script: Slurm options, then the command run as a child (its environment is the
    /// stage's, passed by sbatch: --export=ALL, Slurm's default) so the script outlives it
    /// long enough to write the exit status (also on SIGTERM from scancel or the walltime
    /// warning, which it passes on to the command).
    static func jobScript(spec: JobSpec, logs: StageLogs, exitFile: String, stdinPath: String?) -> String {
        let q = Command.quote
        var s = "#!/bin/bash\n# Written by Baton: \(spec.name ?? "a stage"). Its exit status goes to \(FileIO.basename(exitFile)).\n"
        // Slurm reads '%' in these paths as its filename patterns (%j, ...): a stage folder's
        // escapes (`train%2F1`) are written "%%".
        func literal(_ p: String) -> String { p.replacingOccurrences(of: "%", with: "%%") }
        var opts = ["--job-name=\(spec.name ?? "baton")", "--output=\(literal(logs.stdout))", "--error=\(literal(logs.stderr))",
                    "--no-requeue", "--open-mode=append", "--signal=B:USR1@\(max(10, Int(spec.grace.rounded(.up))))"]
        if let c = spec.cwd { opts.append("--chdir=\(c)") }
        opts += (spec.slurm ?? SlurmOptions()).sbatchOptions(timeout: spec.timeout, grace: spec.grace)
        for o in opts { s += "#SBATCH \(o)\n" }
        s += """
            status_file=\(q(exitFile))
            baton_done() { printf '%s\\n' "$1" > "$status_file.$$" && mv -f "$status_file.$$" "$status_file"; }
            child=""
            walltime=""
            trap 'walltime=" walltime"; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null' USR1
            trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM INT HUP

            """
        if let c = spec.cwd { s += "cd \(q(c)) || { baton_done \"127 cwd\"; exit 127; }\n" }
        s += spec.argv.map(q).joined(separator: " ") + " < " + q(stdinPath ?? "/dev/null") + " &\n"
        s += """
            child=$!
            while :; do
              wait "$child"; st=$?
              kill -0 "$child" 2>/dev/null || break
            done
            baton_done "$st$walltime"
            exit "$st"

            """
        return s
    }

    // MARK: poll

    public func poll(_ jobs: [Job], now: Double) {
        let mine = jobs.compactMap { $0 as? SlurmJob }
        flushCancels()
        // An exit file ends a job at once (a stat each; no query needed).
        for j in mine where !j.isDone { j.checkExitFile(now: now) }
        guard now >= nextQuery else { return }
        let open = mine.filter { !$0.isDone }
        guard !open.isEmpty else { return }
        nextQuery = now + pollInterval
        if !probed { probe() }
        let rows = query(open.map(\.id))
        for j in open { j.update(rows[j.id], now: now) }
    }

    public func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?) {
        if !toCancel.isEmpty || !toKill.isEmpty { return ([], now) }
        let open = jobs.compactMap { $0 as? SlurmJob }.filter { !$0.isDone }
        guard !open.isEmpty else { return ([], nil) }
        // Exit files are looked at every half second (cheap); the scheduler once per interval.
        return ([], min(max(nextQuery, now), now + min(0.5, pollInterval)))
    }

    public func describe(_ job: Job) -> String {
        let n = job.note
        var s = "Slurm job \(job.nativeID)"
        if let q = n.queue { s += " \(q)" }
        if let node = n.node, !node.isEmpty { s += " on \(node)" }
        return s
    }

    /// What the cluster is: accounting or not, and whether MinJobAge gives a poll time to see
    /// a finished job before it leaves the controller's memory.
    private func probe() {
        probed = true
        let r = SlurmExecutor.tool(["scontrol", "show", "config"], env: toolEnvironment, timeout: 30)
        guard r.code == 0 else { return }
        var cfg: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { cfg[String(parts[0]).trimmingWhitespace()] = String(parts[1]).trimmingWhitespace() }
        }
        if let acc = cfg["AccountingStorageType"] { useSacct = !acc.contains("none") }
        if let age = cfg["MinJobAge"].flatMap({ Double($0.split(separator: " ").first ?? "") }), age < 3 * pollInterval, !useSacct {
            warn("the cluster's MinJobAge (\(fmtSeconds(age)) s) is shorter than three poll intervals (\(fmtSeconds(3 * pollInterval)) s)"
                 + " and there is no accounting: a job may leave the queue unseen (its exit file still tells)")
        }
    }

    private func fmtSeconds(_ d: Double) -> String { d.rounded() == d ? String(Int(d)) : String(d) }

    struct Row { var state: String; var node: String; var reason: String; var exitCode: String? }

    /// One query for all these jobs: id -> (state, node, reason).
    private func query(_ ids: [String]) -> [String: Row] {
        let list = ids.joined(separator: ",")
        let argv = useSacct
            ? ["sacct", "-X", "-n", "-P", "--jobs=\(list)", "--format=JobIDRaw,State,NodeList,Reason,ExitCode"]
            : ["squeue", "--noheader", "--jobs=\(list)", "--states=all", "--format=%i|%T|%N|%r"]
        let r = SlurmExecutor.tool(argv, env: toolEnvironment, timeout: 60)
        var rows: [String: Row] = [:]
        // squeue fails outright ("Invalid job id specified") when every id has left the queue.
        if r.code != 0 {
            if r.stderr.contains("Invalid job id") { return rows }
            warn("\(argv[0]) failed: \(SlurmExecutor.errorText(r)); trying again in \(Clock.human(pollInterval))")
            return queryFailed(ids)
        }
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: "|", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace() }
            guard f.count >= 4 else { continue }
            let state = String(f[1].split(separator: " ").first ?? "")   // sacct: "CANCELLED by 0"
            rows[f[0]] = Row(state: state, node: f[2], reason: f[3], exitCode: f.count > 4 ? f[4] : nil)
        }
        return rows
    }

    /// A failed query says nothing about the jobs: they keep their state.
    private func queryFailed(_ ids: [String]) -> [String: Row] {
        var rows: [String: Row] = [:]
        for id in ids { rows[id] = Row(state: "UNKNOWN", node: "", reason: "", exitCode: nil) }
        return rows
    }

    // MARK: cancel

    func requestCancel(_ j: SlurmJob, kill: Bool) {
        if kill { toKill.append(j) } else { toCancel.append(j) }
        nextQuery = min(nextQuery, Clock.monotonic() + min(1, pollInterval))
    }

    /// One scancel for every job whose end was asked for since the last poll.
    private func flushCancels() {
        if !toCancel.isEmpty {
            let open = toCancel.filter { !$0.isDone }
            toCancel = []
            // Only a running job has processes to signal (scancel --signal on a pending job
            // retries for half a minute): the others just leave the queue.
            let running = open.filter { $0.note.queue == "RUNNING" }.map(\.id)
            let others = open.filter { $0.note.queue != "RUNNING" }.map(\.id)
            if !running.isEmpty { _ = SlurmExecutor.tool(["scancel", "--signal=TERM", "--full"] + running, env: toolEnvironment, timeout: 30) }
            if !others.isEmpty { _ = SlurmExecutor.tool(["scancel"] + others, env: toolEnvironment, timeout: 30) }
        }
        if !toKill.isEmpty {
            let ids = toKill.filter { !$0.isDone }.map(\.id)
            toKill = []
            if !ids.isEmpty { _ = SlurmExecutor.tool(["scancel"] + ids, env: toolEnvironment, timeout: 30) }
        }
    }

    /// scancel for job ids journaled by a run whose runner is gone (cancel of an orphan).
    public func cancel(nativeIDs ids: [String]) {
        guard !ids.isEmpty else { return }
        _ = SlurmExecutor.tool(["scancel"] + ids, env: toolEnvironment, timeout: 30)
    }

    // MARK: running the Slurm tools

    struct ToolResult { var code: Int32; var stdout: String; var stderr: String; var spawnError: String? }

    /// Runs a Slurm command to its end (a short synchronous call), output in memory files.
    /// Not through an EventLoop: a loop's wait ends at a pending signal (and takes it from
    /// the self-pipe), and a Ctrl-C is exactly when the runner must still run scancel.
    static func tool(_ argv: [String], env: [String: String], timeout: Double) -> ToolResult {
        let out = baton_memfd("slurm-out"), err = baton_memfd("slurm-err")
        defer { close(out); close(err) }
        let pid: pid_t
        do {
            pid = try Spawner.spawn(argv: argv, env: env, cwd: nil, stdin: -1, stdout: out, stderr: err)
        } catch {
            return ToolResult(code: 127, stdout: "", stderr: "", spawnError: "\(argv[0]): \(error)")
        }
        let until = Clock.monotonic() + timeout
        var st: Int32 = 0
        let pfd = baton_pidfd_open(pid)
        defer { if pfd >= 0 { close(pfd) } }
        while waitpid(pid, &st, WNOHANG) == 0 {
            if Clock.monotonic() > until { Glibc.kill(-pid, SIGKILL) }
            var p = pollfd(fd: pfd, events: Int16(POLLIN), revents: 0)
            if pfd >= 0 { _ = Glibc.poll(&p, 1, 100) } else { usleep(5000) }
        }
        Glibc.kill(-pid, SIGKILL)   // nothing of it stays behind
        let t = Termination(waitStatus: st)
        let code = t.exitCode ?? 128 + (t.signal ?? 0)
        return ToolResult(code: code, stdout: String(decoding: CommandRun.readMemfd(out, limit: 16 << 20), as: UTF8.self),
                          stderr: String(decoding: CommandRun.readMemfd(err, limit: 1 << 20), as: UTF8.self))
    }
}

/// One Slurm batch job of a stage attempt.
final class SlurmJob: Job {
    let executor: Executor
    let id: String
    let exitFile: String
    let dir: String
    private(set) var state: JobState = .running
    private(set) var note = JobNote() {
        // Submitted or pending: not running yet (its timeout waits).
        didSet { note.queued = note.queue == "SUBMITTED" || note.queue == "PENDING" }
    }
    private var leftQueueAt: Double?
    private var cancelRequested = false
    private var lastRow: SlurmExecutor.Row?

    init(executor: Executor, id: String, exitFile: String, dir: String) {
        self.executor = executor
        self.id = id
        self.exitFile = exitFile
        self.dir = dir
        note.queue = "SUBMITTED"
    }

    var nativeID: String { id }
    var pid: pid_t? { nil }
    var isDone: Bool { if case .done = state { return true }; return false }
    private var slurm: SlurmExecutor { executor as! SlurmExecutor }

    func terminate(grace: Double) {
        guard !isDone else { return }
        cancelRequested = true
        slurm.requestCancel(self, kill: false)
        killAt = Clock.monotonic() + grace
    }

    func kill() {
        guard !isDone else { return }
        cancelRequested = true
        slurm.requestCancel(self, kill: true)
    }

    private var killAt: Double?

    static let terminal: Set<String> = ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                                        "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"]

    /// The exit file, when the job has written it: "<status>[ walltime]".
    func checkExitFile(now: Double) {
        if let k = killAt, now >= k { killAt = nil; kill() }
        guard let text = try? FileIO.readString(exitFile) else { return }
        let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let code = words.first.flatMap({ Int32($0) }) else { return }
        if words.contains("walltime") { note.timedOut = true; note.reason = "Slurm's walltime ran out (TIMEOUT)" }
        if words.contains("cwd") { note.reason = "the working directory does not exist on the node" }
        finish(code > 128 && code < 160 ? .signaled(code - 128) : .exited(code))
    }

    func update(_ row: SlurmExecutor.Row?, now: Double) {
        guard !isDone else { return }
        if let row, row.state == "UNKNOWN" { return }   // the query failed: nothing learnt
        if let row {
            lastRow = row
            note.node = row.node.isEmpty ? note.node : row.node
            note.queue = row.state
            note.schedulerReason = row.reason == "None" ? nil : row.reason
            if !SlurmJob.terminal.contains(row.state) { leftQueueAt = nil; return }
        }
        // Finished, or gone from the queue: the exit file should be there (or soon, on NFS).
        let state = lastRow.map(\.state) ?? "unknown"
        if cancelRequested, state == "CANCELLED" || row == nil {
            checkExitFile(now: now)
            if !isDone { finish(.signaled(SIGTERM)) }
            return
        }
        if leftQueueAt == nil { leftQueueAt = now }
        _ = FileIO.list(dir)   // a directory listing refreshes an NFS client's view of it
        checkExitFile(now: now)
        if isDone { return }
        guard now - leftQueueAt! >= slurm.exitWait || SlurmJob.killedHard.contains(state) else { return }
        finishWithoutExitFile(state: state)
    }

    /// States in which the job script cannot have written its exit file.
    static let killedHard: Set<String> = ["TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"]

    private func finishWithoutExitFile(state: String) {
        let code = lastRow?.exitCode.flatMap { Int32($0.split(separator: ":").first ?? "") }
        switch state {
        case "TIMEOUT":
            note.timedOut = true
            note.reason = "Slurm ended the job at its walltime (TIMEOUT)"
            finish(.signaled(SIGKILL))
        case "OUT_OF_MEMORY":
            note.reason = "Slurm ended the job: out of memory (OUT_OF_MEMORY)"
            finish(.signaled(SIGKILL))
        case "NODE_FAIL", "BOOT_FAIL", "PREEMPTED":
            note.reason = "Slurm lost the job: its node failed or it was preempted (\(state))"
            note.transient = true
            finish(.signaled(SIGKILL))
        default:
            note.reason = "Slurm job \(id) left the queue (\(state)) without an exit status file after "
                + "\(Clock.human(slurm.exitWait)); is the run directory on a filesystem the nodes share?"
            finish(.exited(code ?? Termination.notFound))
        }
    }

    private func finish(_ t: Termination) {
        note.queue = note.queue.map { SlurmJob.terminal.contains($0) ? $0 : "ENDED" }
        killAt = nil
        state = .done(t)
    }
}
