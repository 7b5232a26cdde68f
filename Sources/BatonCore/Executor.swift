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

/// The executors a recipe may name, made by name: the one place that knows them all.
public enum Executors {
    public static let names = ["local", "slurm"]

    /// A new executor called `name` (nil if there is none), with the environment its tools
    /// run in and where its warnings go.
    public static func make(_ name: String, environment: [String: String], warn: @escaping (String) -> Void = { _ in }) -> Executor? {
        switch name {
        case "local": return LocalExecutor()
        case "slurm":
            let s = SlurmExecutor(environment: environment)
            s.warn = { warn("slurm: " + $0) }
            return s
        default: return nil
        }
    }

    /// Cancels the jobs of `records` that outlived their runner, executor by executor.
    public static func cancelLeftovers(_ records: [StageRecord], environment: [String: String]) -> [String] {
        var byExecutor: [String: [String]] = [:]
        for r in records { if let e = r.executor, let id = r.nativeID { byExecutor[e, default: []].append(id) } }
        var cancelled: [String] = []
        for (name, ids) in byExecutor.sorted(by: { $0.key < $1.key }) {
            guard let ex = make(name, environment: environment), ex.jobsOutliveRunner else { continue }
            ex.cancel(nativeIDs: ids)
            cancelled += ids
        }
        return cancelled
    }
}

/// The local executor: a process group per job, started by `baton_spawn_async` (clone3
/// onto its own stack, then exec, in C: own group, parent-death signal, default signal dispositions, empty mask), watched
/// through a pidfd, ended whole.
public final class LocalExecutor: Executor {
    public let name = "local"
    public init() {}

    public func start(_ spec: JobSpec) throws -> Job {
        let started = try Spawner.start(argv: spec.argv, env: spec.env, cwd: spec.cwd, stdin: spec.stdin,
                                        stdout: spec.stdout, stderr: spec.stderr)
        // (baton_spawn_async has told the crash guard about the group.)
        let job = LocalJob(executor: self, started: started, leftoverGrace: spec.leftoverGrace)
        job.waitForGroup = spec.waitForGroup
        return job
    }

    public func poll(_ jobs: [Job], now: Double) {
        for case let j as LocalJob in jobs { j.refresh(now: now) }
    }

    public func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?) {
        var fds: [Int32] = []
        var at: Double? = nil
        for case let j as LocalJob in jobs {
            if let fd = j.wakeFD { fds.append(fd) } else { at = min(at ?? .infinity, now + (j.waitForGroup ? 0.1 : 0.02)) }
            if let k = j.killAt { at = min(at ?? .infinity, k) }
        }
        return (fds, at)
    }

    public func describe(_ job: Job) -> String { "process group \(job.nativeID)" }
}

final class LocalJob: Job {
    let executor: Executor
    let leader: pid_t
    private var pidfd: Int32
    private var leaderEnded: Termination?
    private(set) var state: JobState = .running
    private(set) var killAt: Double?
    private var terminating = false
    private let leftoverGrace: Double
    var waitForGroup = false

    /// Memory the leader ran on until its exec: freed once it is reaped.
    private var started: Spawner.Started?

    init(executor: Executor, started: Spawner.Started, leftoverGrace: Double) {
        self.executor = executor
        self.leader = started.pid
        self.pidfd = started.pidfd
        self.started = started
        self.leftoverGrace = leftoverGrace
    }

    deinit { if pidfd >= 0 { close(pidfd) } }

    var nativeID: String { String(leader) }
    var pid: pid_t? { leader }
    /// Readable when the leader exits; nil once it has (then the group is polled).
    var wakeFD: Int32? { leaderEnded == nil && pidfd >= 0 ? pidfd : nil }

    func terminate(grace: Double) {
        if case .done = state { return }
        terminating = true
        Glibc.kill(-leader, SIGTERM)
        Glibc.kill(-leader, SIGCONT)
        let at = Clock.monotonic() + grace
        killAt = min(killAt ?? .infinity, at)
    }

    func kill() {
        if case .done = state { return }
        terminating = true
        Glibc.kill(-leader, SIGKILL)
        killAt = nil
    }

    func refresh(now: Double) {
        if case .done = state { return }
        if leaderEnded == nil {
            var st: Int32 = 0
            guard waitpid(leader, &st, WNOHANG) == leader else {
                if let k = killAt, now >= k { kill() }
                return
            }
            leaderEnded = Termination(waitStatus: st)
            started?.release()
            started = nil
            if pidfd >= 0 { close(pidfd); pidfd = -1 }
        }
        if let k = killAt, now >= k { kill() }
        // The leader is gone; anything left in its group goes too.
        if groupAlive() {
            if !terminating && !waitForGroup { terminate(grace: leftoverGrace) }
            state = .ending(leaderEnded!)
        } else {
            state = .done(leaderEnded!)
            killAt = nil
            baton_crash_guard_untrack(leader)
        }
    }

    /// Reaps our zombies in the group, then asks whether anyone is left.
    private func groupAlive() -> Bool {
        var st: Int32 = 0
        while waitpid(-leader, &st, WNOHANG) > 0 {}
        return Glibc.kill(-leader, 0) == 0
    }
}
