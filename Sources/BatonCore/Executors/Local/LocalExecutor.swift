import BatonBase
import CBatonSys
import Glibc

/// The local executor: a process group per job, started by `baton_spawn_async` (clone3
/// onto its own stack, then exec, in C: own group, parent-death signal, default signal
/// dispositions, empty mask), watched through a pidfd, ended whole.
public final class LocalExecutor: Executor {
    public let name = "local"
    public init() {}

    public func start(_ spec: JobSpec) throws -> Job {
        // Born in a cgroup of its own where there is one (Containment): nothing it starts escapes.
        let containment = Containment.shared
        let cgroup = containment?.acquire()
        containment?.spawnInto(cgroup)
        defer { containment?.spawnInto(nil) }
        let started: Spawner.Started
        do {
            started = try Spawner.start(argv: spec.argv, env: spec.env, cwd: spec.cwd, stdin: spec.stdin,
                                        stdout: spec.stdout, stderr: spec.stderr)
        } catch {
            if let g = cgroup { containment?.release(g) }
            throw error
        }
        // (baton_spawn_async has told the crash guard about the group.)
        let job = LocalJob(executor: self, started: started, leftoverGrace: spec.leftoverGrace)
        job.cgroup = cgroup
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
            if let fd = j.wakeFD { fds.append(fd) } else {
                at = min(at ?? .infinity, now + (j.waitForGroup ? 0.1 : 0.02))
            }
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
    /// The stage's cgroup (Containment), if it has one.
    var cgroup: Containment.Group?

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
        if let g = cgroup { Containment.shared?.terminate(g) }   // also what left the group
        let at = Clock.monotonic() + grace
        killAt = min(killAt ?? .infinity, at)
    }

    func kill() {
        if case .done = state { return }
        terminating = true
        Glibc.kill(-leader, SIGKILL)
        if let g = cgroup { Containment.shared?.kill(g) }
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
        // The leader is gone; anything left in its group goes too, and in its cgroup
        // whatever left the group (`setsid cmd &`).
        let inGroup = groupAlive()
        let escaped = !inGroup && cgroup.map { Containment.shared?.populated($0) ?? false } == true
        if inGroup || escaped {
            if !terminating && (!waitForGroup || escaped) { terminate(grace: leftoverGrace) }
            state = .ending(leaderEnded!)
        } else {
            state = .done(leaderEnded!)
            killAt = nil
            baton_crash_guard_untrack(leader)
            if let g = cgroup { Containment.shared?.release(g); cgroup = nil }
            Containment.shared?.sweepOrphans()   // the subreaper's: what escaped and came back to us
        }
    }

    /// Reaps our zombies in the group, then asks whether anyone is left.
    private func groupAlive() -> Bool {
        var st: Int32 = 0
        while waitpid(-leader, &st, WNOHANG) > 0 {}
        return Glibc.kill(-leader, 0) == 0
    }
}

extension ExecutorKind {
    /// Stages run here, as process groups of the runner (the default).
    public static let local = ExecutorKind(name: "local", summary: "process groups on this machine (the default)",
                                           make: { _ in LocalExecutor() })
}
