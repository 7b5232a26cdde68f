import BatonBase
import Glibc

/// One Slurm batch job of a stage attempt. Until sbatch has answered it has no id (phase
/// `submitting`); then the scheduler's states move it along.
final class SlurmJob: Job {
    /// The sbatch of a job that has no id yet: the call under way, or the time to try again.
    struct Submission {
        var script: String
        var env: [String: String]
        var tool: SlurmTool?
        var retryAt: Double?
        var attempt = 1
        var delay = 0.5
    }

    let executor: Executor
    var id = ""
    let exitFile: String
    let dir: String
    var submission: Submission?
    private(set) var state: JobState = .running
    var note = JobNote()
    private var leftQueueAt: Double?
    private(set) var cancelRequested = false
    private var lastRow: SlurmExecutor.Row?
    private var killAt: Double?

    init(executor: Executor, exitFile: String, dir: String) {
        self.executor = executor
        self.exitFile = exitFile
        self.dir = dir
        note.phase = .submitting
    }

    var nativeID: String { id }
    var pid: pid_t? { nil }
    var isDone: Bool { if case .done = state { return true }; return false }
    private var slurm: SlurmExecutor { executor as! SlurmExecutor }

    func terminate(grace: Double) {
        guard !isDone else { return }
        cancelRequested = true
        if id.isEmpty { return endUnsubmitted() }
        slurm.requestCancel(self, kill: false)
        killAt = Clock.monotonic() + grace
    }

    func kill() {
        guard !isDone else { return }
        cancelRequested = true
        if id.isEmpty { return endUnsubmitted() }
        slurm.requestCancel(self, kill: true)
    }

    /// Ended before it had an id: before sbatch or between two tries it ends at once; while
    /// sbatch is under way its answer is awaited (the job may exist), then scancelled.
    private func endUnsubmitted() {
        if submission?.tool == nil { submission = nil; finish(.signaled(SIGTERM)) }
    }

    static let terminal: Set<String> = ["COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                                        "BOOT_FAIL",
                                        "DEADLINE", "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"]

    /// Slurm's job state in Baton's words.
    static func phase(_ state: String) -> QueuePhase {
        switch state {
        case "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD": return .queued
        case "COMPLETING", "STAGE_OUT", "SIGNALING", "STOPPED": return .ending
        default: return terminal.contains(state) ? .ended : .running
        }
    }

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
            note.state = row.state
            note.phase = SlurmJob.phase(row.state)
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

    func finish(_ t: Termination) {
        note.state = note.state.map { SlurmJob.terminal.contains($0) ? $0 : "ENDED" }
        note.phase = .ended
        killAt = nil
        state = .done(t)
    }
}
