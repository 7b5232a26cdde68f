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
    /// the stdin text, a name for the job, the stage's timeout and grace.
    public var logs: StageLogs?
    public var stdinText: String?
    public var name: String?
    public var timeout: Double?
    public var grace: Double = 10
    /// The executor's own options (its table in `runStage{...}` over the run's defaults),
    /// as its kind declared them; the executor decodes them.
    public var options = ExecutorOptions()

    public init(argv: [String], env: [String: String], cwd: String?) {
        self.argv = argv; self.env = env; self.cwd = cwd
    }
}

/// Where a job stands in an executor's queue, in Baton's words (the executor keeps its own
/// word in `JobNote.state`, for people and the journal).
public enum QueuePhase: String, Sendable, CaseIterable {
    /// Asked for, and the executor has not given it an id yet (a submission under way or
    /// waiting to be tried again).
    case submitting
    /// It has an id; the scheduler has not said more yet.
    case submitted
    /// Waiting in the queue: not running yet.
    case queued
    case running
    /// Its processes are ending (a scheduler's COMPLETING).
    case ending
    case ended

    /// Not running yet: a stage's timeout counts from when it runs.
    public var waits: Bool { self == .submitting || self == .submitted || self == .queued }
}

/// What an executor knows about a job beyond its state: where it stands in a queue, its
/// node and reasons, and why it ended when the scheduler ended it.
public struct JobNote: Equatable, Sendable {
    /// Where it stands (nil for a local process).
    public var phase: QueuePhase?
    /// The executor's own word for it (a scheduler's job state), journaled with `phase`.
    public var state: String?
    public var node: String?
    /// Why it waits, in the scheduler's words.
    public var schedulerReason: String?
    /// The scheduler ended it at its walltime.
    public var timedOut = false
    /// Why it ended, when the executor knows better than the exit code (OOM, node failure,
    /// a refused submission).
    public var reason: String?
    /// That end was not the command's fault (a lost node): worth another attempt.
    public var transient = false
    public init() {}

    /// Waiting, not running yet: its timeout counts from when it starts running.
    public var queued: Bool { phase?.waits ?? false }
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
    /// The executor's own name for it (a pid here; a batch job id elsewhere). Empty while the
    /// executor has not given it one yet (phase `submitting`); a job that ends without one
    /// never started (its note says why).
    var nativeID: String { get }
    /// A local process id, where there is one.
    var pid: pid_t? { get }
    /// As of the executor's last `poll`.
    var state: JobState { get }
    /// Asks it to stop: SIGTERM to everything it runs, SIGKILL after `grace` seconds.
    func terminate(grace: Double)
    /// Ends it now.
    func kill()
    /// The executor's own view of it (queue phase, node, why it ended).
    var note: JobNote { get }
}

extension Job {
    public var note: JobNote { JobNote() }
}

/// Where stages and commands run: the seam between what Baton decides (attempts, retries,
/// timeouts, the journal) and the mechanics of running a command somewhere. The event loop
/// asks each executor about all its in-flight jobs at once, so an executor whose status
/// query is expensive (a batch scheduler) makes one query per poll, however many jobs.
/// Nothing here blocks: an executor that runs tools (submit, query, cancel) starts them and
/// looks at them again at the next poll, waking the loop through `wake`'s descriptors.
public protocol Executor: AnyObject {
    var name: String { get }
    /// Starts a job. Throws SpawnError when it cannot start (missing or not executable).
    /// An executor whose start takes time returns at once a job with no native id yet.
    func start(_ spec: JobSpec) throws -> Job
    /// Refreshes the state of these in-flight jobs and moves its own work on (never blocks).
    func poll(_ jobs: [Job], now: Double)
    /// What the loop waits on for these jobs: descriptors that turn readable when one may
    /// have changed, and the latest time to poll again anyway.
    func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?)
    /// One line for people (`status`, errors).
    func describe(_ job: Job) -> String
    /// Work of its own still under way with no job waiting on it (a cancel asked for a job
    /// that has ended): the loop polls it until this is false.
    var busy: Bool { get }
    /// The run-wide options of `baton.executor(name, {...})` (a poll interval).
    func configure(_ options: ExecutorOptions)
    /// Its jobs outlive the runner that started them (a batch scheduler's): they are
    /// journaled with their native id as soon as they have one, spared by the end-of-run sweep of
    /// processes, taken up again by a resume, and cancelled here when a run ends without them.
    var jobsOutliveRunner: Bool { get }
    /// Takes up a job a previous runner of the run started (journaled with its native id).
    func reattach(nativeID: String, logs: StageLogs) -> Job?
    /// Ends jobs a previous runner left that no one will take up (a cancel of an orphaned run,
    /// or a resume whose recipe no longer runs them). Outside any run's loop: it may wait.
    func cancel(nativeIDs: [String])
}

extension Executor {
    public var busy: Bool { false }
    public func configure(_ options: ExecutorOptions) {}
    public var jobsOutliveRunner: Bool { false }
    public func reattach(nativeID: String, logs: StageLogs) -> Job? { nil }
    public func cancel(nativeIDs: [String]) {}
}
