import BatonBase
import CBatonSys
import Glibc

/// What to run, wherever it runs: argv, environment, working directory, and the
/// descriptors its standard streams go to (a stage's log files, or memory files).
public struct JobSpec {
    public var argv: [String]
    public var env: [String: String]
    public var cwd: String?
    /// -1: /dev/null.
    public var stdin: Int32 = -1
    public var stdout: Int32 = -1
    public var stderr: Int32 = -1
    /// Seconds the processes left behind by a finished main process get before SIGKILL.
    public var leftoverGrace: Double = 2
    /// The job ends when its process group is empty: what its leader leaves behind is
    /// waited for, not ended (timeout and cancel still end the group).
    public var waitForGroup = false
    /// For executors that cannot take descriptors (a batch scheduler): where the output goes,
    /// the stdin text, a name for the job, the stage's timeout and grace, Slurm's options.
    public var logs: StageLogs?
    public var stdinText: String?
    public var name: String?
    public var timeout: Double?
    public var grace: Double = 10
    public var slurm: SlurmOptions?

    public init(argv: [String], env: [String: String], cwd: String?) {
        self.argv = argv; self.env = env; self.cwd = cwd
    }
}

/// What an executor knows about a job beyond its state: a scheduler's queue state, node and
/// reasons, and why it ended when the scheduler ended it.
public struct JobNote: Equatable, Sendable {
    /// PENDING, RUNNING, ... (nil for a local process).
    public var queue: String?
    public var node: String?
    /// Why it waits (Slurm's reason: Priority, Resources, ...).
    public var schedulerReason: String?
    /// Waiting in a queue, not running yet: its timeout counts from when it starts running.
    public var queued = false
    /// The scheduler ended it at its walltime.
    public var timedOut = false
    /// Why it ended, when the executor knows better than the exit code (OOM, node failure).
    public var reason: String?
    /// That end was not the command's fault (a lost node): worth another attempt.
    public var transient = false
    public init() {}
}

public enum JobState: Equatable, Sendable {
    case running
    /// Its main process ended; processes it left behind are being ended.
    case ending(Termination)
    case done(Termination)
}

/// One command in flight on an executor.
public protocol Job: AnyObject {
    var executor: Executor { get }
    /// The executor's own name for it (a pid here; a Slurm job id elsewhere).
    var nativeID: String { get }
    /// A local process id, where there is one.
    var pid: pid_t? { get }
    /// As of the executor's last `poll`.
    var state: JobState { get }
    /// Asks it to stop: SIGTERM to everything it runs, SIGKILL after `grace` seconds.
    func terminate(grace: Double)
    /// Ends it now.
    func kill()
    /// The executor's own view of it (queue state, node, why it ended).
    var note: JobNote { get }
}

extension Job {
    public var note: JobNote { JobNote() }
}

/// Where stages and commands run: the seam between what Baton decides (attempts, retries,
/// timeouts, the journal) and the mechanics of running a command somewhere. The event loop
/// asks each executor about all its in-flight jobs at once, so an executor whose status
/// query is expensive (a batch scheduler) makes one query per poll, however many jobs.
public protocol Executor: AnyObject {
    var name: String { get }
    /// Starts a job. Throws SpawnError when it cannot start (missing or not executable).
    func start(_ spec: JobSpec) throws -> Job
    /// Refreshes the state of these in-flight jobs (never blocks).
    func poll(_ jobs: [Job], now: Double)
    /// What the loop waits on for these jobs: descriptors that turn readable when one may
    /// have changed, and the latest time to poll again anyway.
    func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?)
    /// One line for people (`status`, errors).
    func describe(_ job: Job) -> String
    /// Its jobs outlive the runner that started them (a batch scheduler's): they are
    /// journaled with their native id at once, spared by the end-of-run sweep of processes,
    /// taken up again by a resume, and cancelled here when a run ends without them.
    var jobsOutliveRunner: Bool { get }
    /// Takes up a job a previous runner of the run started (journaled with its native id).
    func reattach(nativeID: String, logs: StageLogs) -> Job?
    /// Ends jobs a previous runner left that no one will take up (a cancel of an orphaned run,
    /// or a resume whose recipe no longer runs them).
    func cancel(nativeIDs: [String])
}

extension Executor {
    public var jobsOutliveRunner: Bool { false }
    public func reattach(nativeID: String, logs: StageLogs) -> Job? { nil }
    public func cancel(nativeIDs: [String]) {}
}
