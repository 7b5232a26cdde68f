import BatonBase
import CBatonSys
import Glibc

/// Processes that outlived their stage: every stage carries BATON_RUN_ID in its
/// environment, so after a runner died by SIGKILL (its stages' leaders die with it
/// through the parent-death signal, but their children may not) `cancel` and
/// `resume` find the rest by that mark in /proc and end them.
public enum Survivors {
    /// Pids (not ours) whose environment has BATON_RUN_ID=runID, except the processes of a job
    /// that outlives the runner (they carry their executor's `jobMark`) where its node is this
    /// machine: they are the executor's to end, and a resumed run re-attaches to them.
    public static func find(runID: String) -> [pid_t] {
        let me = getpid()
        let mark = Array("BATON_RUN_ID=\(runID)".utf8)
        let spared = Executors.jobMarks.map { Array($0.utf8) }
        var found: [pid_t] = []
        for name in FileIO.list("/proc") {
            guard let pid = pid_t(name), pid != me, pid > 1 else { continue }
            guard let env = try? FileIO.readFile("/proc/\(name)/environ", limit: 1 << 20) else { continue }
            var start = 0
            var marked = false
            for i in 0...env.count where i == env.count || env[i] == 0 {
                if spared.contains(where: { i - start == $0.count && env[start..<i].elementsEqual($0) }) {
                    marked = false
                    break
                }
                if i - start == mark.count, env[start..<i].elementsEqual(mark) { marked = true }
                start = i + 1
            }
            if marked { found.append(pid) }
        }
        return found.filter { !isZombie($0) }
    }

    static func isZombie(_ pid: pid_t) -> Bool { ProcStat.read(pid)?.isDead ?? false }

    /// SIGTERM, up to `grace` seconds (waited on `loop`), then SIGKILL. Returns the pids found.
    @discardableResult
    public static func kill(runID: String, grace: Double = 2, loop: EventLoop) -> [pid_t] {
        let pids = find(runID: runID)
        guard !pids.isEmpty else { return [] }
        for p in pids { Glibc.kill(p, SIGTERM) }
        var alive = pids
        _ = loop.wait(deadline: Clock.monotonic() + grace, pollEvery: 0.02) {
            var st: Int32 = 0
            while waitpid(-1, &st, WNOHANG) > 0 {}
            alive = alive.filter { Glibc.kill($0, 0) == 0 && !isZombie($0) }
            return alive.isEmpty
        }
        for p in alive { Glibc.kill(p, SIGKILL) }
        var st: Int32 = 0
        while waitpid(-1, &st, WNOHANG) > 0 {}
        return pids
    }

    /// Ends a child of ours that is expected to leave by itself: `signal` first (nil: it is
    /// leaving already), then up to `grace` seconds for it to exit (woken by its pidfd), then
    /// SIGKILL; reaped either way. Not a loop's wait: it must work after a signal too, when
    /// a loop's wait returns at once (the pause's auto-attached prompt, which puts the
    /// terminal back on SIGTERM).
    public static func end(child pid: pid_t, signal: Int32? = nil, grace: Double) {
        if let s = signal { Glibc.kill(pid, s) }
        let fd = baton_pidfd_open(pid)
        defer { if fd >= 0 { close(fd) } }
        let until = Clock.monotonic() + grace
        while !exited(pid) {
            let left = until - Clock.monotonic()
            if left <= 0 { break }
            if fd >= 0 {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                _ = poll(&p, 1, Int32(left * 1000) + 1)
            } else {
                _ = poll(nil, 0, Int32(min(left, 0.05) * 1000) + 1)   // an old kernel: a look every 50 ms
            }
        }
        guard !exited(pid) else { return }
        Glibc.kill(pid, SIGKILL)
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
    }

    /// Whether our child `pid` has exited (it is reaped now), or is no child of ours.
    public static func exited(_ pid: pid_t) -> Bool {
        var st: Int32 = 0
        let r = waitpid(pid, &st, WNOHANG)
        return r == pid || (r < 0 && errno == ECHILD)
    }

    /// The watchdog's body (`baton __watchdog RUN_ID`, started by the runner with the read end
    /// of a pipe as stdin, in a session of its own): when the pipe closes, the runner is gone,
    /// whether it finished or was killed with SIGKILL; whatever the run started that is still
    /// alive (grandchildren the parent-death signal does not reach) is ended at once.
    public static func watchdog(runID: String, cgroup: String? = nil) -> Int32 {
        var buf = [UInt8](repeating: 0, count: 64)
        while true {
            let n = read(0, &buf, buf.count)
            if n == 0 || (n < 0 && errno != EINTR) { break }
        }
        // The run's cgroup first: it holds even what left its group and its environment.
        if let c = cgroup, c.contains("/baton-") { Containment.killTree(c, wait: 1) }
        kill(runID: runID, grace: 0.5, loop: EventLoop())
        return 0
    }
}
