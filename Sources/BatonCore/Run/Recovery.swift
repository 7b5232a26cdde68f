import BatonBase
import Glibc

/// Finishing a run whose runner is gone (orphaned): end what it left alive and write
/// its final.json from the journal, under the run's lock.
public enum Recovery {
    public struct Outcome { public var killed: [pid_t]; public var final: FinalRecord }

    public static func finishOrphan(_ dir: RunDirectory,
                                    status: RunOutcome,
                                    exitCode: ExitStatus,
                                    reason: String) throws -> Outcome? {
        guard let lock = try FileLock.tryAcquire(dir.lock, mode: RunDirectory.fileMode) else { return nil }
        defer { lock.release() }
        let killed = Survivors.kill(runID: dir.id, loop: EventLoop())
        let contents = (try? dir.readJournal()) ?? JournalContents()
        if contents.tornTail { truncate(dir.journal, off_t(contents.validLength)) }
        var history = RunHistory(contents.events)
        if history.runID.isEmpty { history.runID = dir.id }
        // Its batch jobs are not processes here: the scheduler ends them.
        _ = Executors.cancelLeftovers(Array(history.reattachable.values), environment: Spawner.currentEnvironment())
        let journal = try JournalWriter(path: dir.journal, runID: dir.id, lastSeq: contents.lastSeq)
        history.apply(try journal.append(.final(FinalEvent(status: status, exitCode: exitCode.rawValue, reason: reason,
                                                           killedPids: killed))))
        let doc = FinalRecord(history: history, status: status, exitCode: exitCode.rawValue, reason: reason,
                              endedAt: Clock.now(), result: dir.readFinal("result") ?? .object([]))
        try doc.write(to: dir)
        unlink(dir.controlSocket)   // a dead runner's socket answers no one
        return Outcome(killed: killed, final: doc)
    }
}

extension Recovery {
    public enum CancelOutcome {
        /// The live runner ended its stages and wrote final.json itself.
        case stopped(runner: pid_t)
        /// It did not stop within the time allowed: SIGKILLed, then finished as an orphan.
        case killed(runner: pid_t, ended: [pid_t])
        /// No runner: what the run left alive was ended and final.json written.
        case finishedOrphan(ended: [pid_t])
        case alreadyEnded(RunInfo.State)
        /// `interrupted()` said to stop waiting; the runner is still ending its stages.
        case stoppedWaiting(runner: pid_t)
        case runnerUnknown
        /// The runner may not be signalled by this user (EPERM): nothing was done.
        case notPermitted(runner: pid_t)
    }

    /// `baton cancel`: SIGTERM to a live runner (it ends its stages' groups and writes
    /// final.json `cancelled`), SIGKILL after `killAfter` seconds; an orphaned run is
    /// finished here.
    public static func cancel(_ dir: RunDirectory, killAfter: Double = 120,
                              interrupted: () -> Bool = { false },
                              signalled: (pid_t) -> Void = { _ in }) throws -> CancelOutcome {
        let info = RunInfo.load(dir, withEvents: false)
        switch info.state {
        case .running, .starting:
            guard let pid = info.runnerPid ?? dir.readPid(), pid > 0 else { return .runnerUnknown }
            if kill(pid, SIGTERM) != 0, errno == EPERM { return .notPermitted(runner: pid) }
            signalled(pid)
            let until = Clock.monotonic() + killAfter
            func live() -> Bool {
                FileLock.isHeld(dir.lock)
                    || (kill(pid, 0) == 0 && RunInfo.load(dir, withEvents: false).state == .starting)
            }
            let loop = EventLoop()
            let r = loop.wait(deadline: until, pollEvery: 0.05) { !live() || interrupted() }
            if r == .interrupted || (r == .satisfied && live()) { return .stoppedWaiting(runner: pid) }
            guard FileLock.isHeld(dir.lock) else { return .stopped(runner: pid) }
            kill(pid, SIGKILL)
            _ = loop.wait(deadline: Clock.monotonic() + 10, pollEvery: 0.02) { !FileLock.isHeld(dir.lock) }
            let o = try finishOrphan(dir, status: .cancelled, exitCode: .terminated,
                                     reason: "cancelled; its runner did not stop within \(Clock.human(killAfter)) "
                                         + "and was killed")
            return .killed(runner: pid, ended: o?.killed ?? [])
        case .orphaned:
            guard let o = try finishOrphan(dir, status: .cancelled, exitCode: .terminated,
                                           reason: "cancelled after its runner died (orphaned run)") else {
                return try cancel(dir,
                                  killAfter: killAfter,
                                  interrupted: interrupted,
                                  signalled: signalled)   // live again
            }
            return .finishedOrphan(ended: o.killed)
        case .succeeded, .failed, .cancelled, .dry_run:
            return .alreadyEnded(info.state)
        }
    }
}
