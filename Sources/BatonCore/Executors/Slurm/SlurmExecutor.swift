import BatonBase
import CBatonSys
import Glibc

/// Runs stages as Slurm batch jobs. `start` writes a job script next to the stage's logs and
/// starts `sbatch --parsable` (the job has no id until it answers); `poll` asks the scheduler
/// about every in-flight job of the run in ONE query per interval (`sacct` where accounting
/// exists, `squeue --jobs=... --states=all` otherwise: the same controller call as `scontrol
/// show job`, filtered by job id only, never by partition or user); the exit status comes from
/// the file the job script writes atomically, the scheduler's state says why when there is
/// none. Every Slurm command is a `SlurmTool` the loop drives: nothing here waits for one.
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
    /// `scontrol show config`, asked once before the first query.
    private var probeTool: SlurmTool?
    /// The status query under way and the jobs it asks about.
    private var query: (tool: SlurmTool, jobs: [SlurmJob])?
    /// scancel calls under way.
    private var cancelTools: [SlurmTool] = []
    /// sbatch calls under way: at most `maxSubmitting` at once (a fan-out of a thousand stages
    /// must not open a thousand connections to the controller at the same moment).
    private var submitting = 0
    static let maxSubmitting = 8
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

    public func configure(_ options: ExecutorOptions) {
        if let p = options["poll"]?.number { pollInterval = max(0.05, p) }
    }

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
        let job = SlurmJob(executor: self, exitFile: exitFile, dir: FileIO.dirname(exitFile))
        job.submission = SlurmJob.Submission(script: script, env: env)
        advanceSubmission(job, now: Clock.monotonic())
        return job
    }

    func submitTool(script: String, env: [String: String]) -> SlurmTool {
        submitting += 1
        return SlurmTool(["sbatch", "--parsable", script], env: env, timeout: 60)
    }

    public var jobsOutliveRunner: Bool { true }

    /// A job submitted earlier (journaled), taken up again by a resumed run.
    public func reattach(nativeID: String, logs: StageLogs) -> Job? {
        let exitFile = String(logs.stdout.dropLast(4)) + ".exit"
        let j = SlurmJob(executor: self, exitFile: exitFile, dir: FileIO.dirname(exitFile))
        j.id = nativeID
        j.note.phase = .submitted
        return j
    }

    public static let jobMark = (key: "BATON_SLURM_JOB", value: "1")

    static let transientErrors = ["Socket timed out", "Unexpected message", "Resource temporarily unavailable",
                                  "temporarily unable to accept job", "Unable to contact slurm controller",
                                  "Connection refused", "Zero Bytes were transmitted"]

    /// Where a job's `sbatch` stands: its answer taken as the job id; a transient failure
    /// tried again after 0.5, 1, 2, 4 s (a timer of the loop: nothing sleeps); a rejection
    /// ends the job, which never started, with Slurm's words.
    func advanceSubmission(_ j: SlurmJob, now: Double) {
        guard var sub = j.submission else { return }
        defer { j.submission = j.id.isEmpty && !j.isDone ? sub : nil }
        if sub.tool == nil {
            // Not yet tried, or tried and waiting out its backoff; then as soon as a call is free.
            if let at = sub.retryAt, now < at { return }
            guard submitting < SlurmExecutor.maxSubmitting else { return }
            sub.retryAt = nil
            sub.tool = submitTool(script: sub.script, env: sub.env)
        }
        guard let tool = sub.tool, let r = tool.check(now: now) else { return }
        sub.tool = nil
        submitting -= 1
        let out = r.stdout.trimmingWhitespace()
        if r.code == 0, let id = out.split(separator: ";").first, !id.isEmpty {
            j.id = String(id)
            j.note.phase = .submitted
            if j.cancelRequested { requestCancel(j, kill: true) }
            return
        }
        let msg = tool.errorText
        if sub.attempt < 5, SlurmExecutor.transientErrors.contains(where: { msg.contains($0) }), !j.cancelRequested {
            warn("sbatch failed (\(msg)); trying again in \(Clock.human(sub.delay))")
            sub.retryAt = now + sub.delay
            sub.delay *= 2
            sub.attempt += 1
            return
        }
        if j.cancelRequested { j.finish(.signaled(SIGTERM)); return }
        j.note.reason = "Slurm rejected the job: \(msg)"
        j.finish(.exited(1))
    }

    /// The job script: Slurm options, then the command run as a child (its environment is the
    /// stage's, passed by sbatch: --export=ALL, Slurm's default) so the script outlives it
    /// long enough to write the exit status (also on SIGTERM from scancel or the walltime
    /// warning, which it passes on to the command).
    static func jobScript(spec: JobSpec, logs: StageLogs, exitFile: String, stdinPath: String?) -> String {
        let q = Command.quote
        var s =
            "#!/bin/bash\n# Written by Baton: \(spec.name ?? "a stage"). Its exit status goes to "
                + "\(FileIO.basename(exitFile)).\n"
        // Slurm reads '%' in these paths as its filename patterns (%j, ...): a stage folder's
        // escapes (`train%2F1`) are written "%%".
        func literal(_ p: String) -> String { p.replacingOccurrences(of: "%", with: "%%") }
        var opts = ["--job-name=\(spec.name ?? "baton")", "--output=\(literal(logs.stdout))",
                    "--error=\(literal(logs.stderr))",
                    "--no-requeue", "--open-mode=append", "--signal=B:USR1@\(max(10, Int(spec.grace.rounded(.up))))"]
        if let c = spec.cwd { opts.append("--chdir=\(c)") }
        opts += SlurmOptions(spec.options).sbatchOptions(timeout: spec.timeout, grace: spec.grace)
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
        for j in mine where j.submission != nil { advanceSubmission(j, now: now) }
        flushCancels()
        cancelTools.removeAll { $0.check(now: now) != nil }
        // An exit file ends a job at once (a stat each; no query needed).
        for j in mine where !j.isDone && !j.id.isEmpty { j.checkExitFile(now: now) }
        if let p = probeTool, p.check(now: now) != nil {
            probeTool = nil
            applyProbe(p)
        }
        if let (tool, asked) = query, let r = tool.check(now: now) {
            query = nil
            let rows = rows(of: tool, r, ids: asked.map(\.id))
            for j in asked { j.update(rows[j.id], now: now) }
        }
        guard query == nil, probeTool == nil, now >= nextQuery else { return }
        let open = mine.filter { !$0.isDone && !$0.id.isEmpty }
        guard !open.isEmpty else { return }
        if !probed {
            probed = true
            probeTool = SlurmTool(["scontrol", "show", "config"], env: toolEnvironment, timeout: 30)
            return
        }
        nextQuery = now + pollInterval
        let list = open.map(\.id).joined(separator: ",")
        let argv = useSacct
            ? ["sacct", "-X", "-n", "-P", "--jobs=\(list)", "--format=JobIDRaw,State,NodeList,Reason,ExitCode"]
            : ["squeue", "--noheader", "--jobs=\(list)", "--states=all", "--format=%i|%T|%N|%r"]
        query = (SlurmTool(argv, env: toolEnvironment, timeout: 60), open)
    }

    public func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?) {
        var fds: [Int32] = []
        var at: Double? = toCancel.isEmpty && toKill.isEmpty ? nil : now
        func soon(_ t: Double?) { if let t { at = min(at ?? .infinity, t) } }
        let mine = jobs.compactMap { $0 as? SlurmJob }
        var tools = cancelTools + [probeTool, query?.tool].compactMap { $0 }
        for j in mine {
            guard let sub = j.submission else { continue }
            if let t = sub.tool { tools.append(t) } else { soon(sub.retryAt ?? now + 0.05) }   // (a free call: soon)
        }
        for t in tools {
            if let fd = t.wakeFD { fds.append(fd) }
            soon(t.wakeAt)
        }
        // Exit files are looked at every half second (cheap); the scheduler once per interval.
        if mine.contains(where: { !$0.isDone && !$0.id.isEmpty }) {
            soon(min(max(nextQuery, now), now + min(0.5, pollInterval)))
        }
        return (fds, at)
    }

    /// A cancel asked for, or under way: the loop drives it even when no job waits on it.
    public var busy: Bool { !toCancel.isEmpty || !toKill.isEmpty || !cancelTools.isEmpty }

    public func describe(_ job: Job) -> String {
        let n = job.note
        var s = job.nativeID.isEmpty ? "Slurm job (being submitted)" : "Slurm job \(job.nativeID)"
        if let q = n.state { s += " \(q)" }
        if let node = n.node, !node.isEmpty { s += " on \(node)" }
        return s
    }

    /// What the cluster is: accounting or not, and whether MinJobAge gives a poll time to see
    /// a finished job before it leaves the controller's memory.
    private func applyProbe(_ tool: SlurmTool) {
        guard let r = tool.result, r.code == 0 else { return }
        var cfg: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { cfg[String(parts[0]).trimmingWhitespace()] = String(parts[1]).trimmingWhitespace() }
        }
        if let acc = cfg["AccountingStorageType"] { useSacct = !acc.contains("none") }
        if let age = cfg["MinJobAge"].flatMap({ Double($0.split(separator: " ").first ?? "") }), age < 3 * pollInterval,
           !useSacct {
            warn("the cluster's MinJobAge (\(fmtSeconds(age)) s) is shorter than three poll intervals "
                 + "(\(fmtSeconds(3 * pollInterval)) s)"
                 + " and there is no accounting: a job may leave the queue unseen (its exit file still tells)")
        }
    }

    private func fmtSeconds(_ d: Double) -> String { d.rounded() == d ? String(Int(d)) : String(d) }

    struct Row { var state: String; var node: String; var reason: String; var exitCode: String? }

    /// A status query's answer: id -> (state, node, reason).
    private func rows(of tool: SlurmTool, _ r: SlurmTool.Result, ids: [String]) -> [String: Row] {
        var rows: [String: Row] = [:]
        // squeue fails outright ("Invalid job id specified") when every id has left the queue.
        if r.code != 0 {
            if r.stderr.contains("Invalid job id") { return rows }
            warn("\(tool.argv[0]) failed: \(tool.errorText); trying again in \(Clock.human(pollInterval))")
            // A failed query says nothing about the jobs: they keep their state.
            for id in ids { rows[id] = Row(state: "UNKNOWN", node: "", reason: "", exitCode: nil) }
            return rows
        }
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: "|", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace() }
            guard f.count >= 4 else { continue }
            let state = String(f[1].split(separator: " ").first ?? "")   // sacct: "CANCELLED by 0"
            rows[f[0]] = Row(state: state, node: f[2], reason: f[3], exitCode: f.count > 4 ? f[4] : nil)
        }
        return rows
    }

    // MARK: cancel

    func requestCancel(_ j: SlurmJob, kill: Bool) {
        if kill { toKill.append(j) } else { toCancel.append(j) }
        nextQuery = min(nextQuery, Clock.monotonic() + min(1, pollInterval))
    }

    /// One scancel for every job whose end was asked for since the last poll (started here,
    /// driven by the loop like every Slurm command).
    private func flushCancels() {
        func scancel(_ args: [String]) {
            cancelTools.append(SlurmTool(["scancel"] + args, env: toolEnvironment, timeout: 30))
        }
        if !toCancel.isEmpty {
            let open = toCancel.filter { !$0.isDone && !$0.id.isEmpty }
            toCancel = []
            // Only a running job has processes to signal (scancel --signal on a pending job
            // retries for half a minute): the others just leave the queue.
            let running = open.filter { $0.note.phase == .running || $0.note.phase == .ending }.map(\.id)
            let others = open.filter { !($0.note.phase == .running || $0.note.phase == .ending) }.map(\.id)
            if !running.isEmpty { scancel(["--signal=TERM", "--full"] + running) }
            if !others.isEmpty { scancel(others) }
        }
        if !toKill.isEmpty {
            let ids = toKill.filter { !$0.isDone && !$0.id.isEmpty }.map(\.id)
            toKill = []
            if !ids.isEmpty { scancel(ids) }
        }
    }

    /// scancel for job ids journaled by a run whose runner is gone (cancel of an orphan):
    /// outside any run's loop, so it waits for scancel's answer.
    public func cancel(nativeIDs ids: [String]) {
        guard !ids.isEmpty else { return }
        _ = SlurmTool(["scancel"] + ids, env: toolEnvironment, timeout: 30).finish()
    }
}
