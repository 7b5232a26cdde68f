import BatonBase
import CBatonSys
import Glibc

/// One run of a Slurm command (sbatch, squeue, sacct, scontrol, scancel) as the executor's
/// loop work: started, then looked at without blocking at each poll (its pidfd wakes the
/// loop when it ends), its output in memory files. Nothing waits on it on the loop's thread,
/// so a slow controller holds up no other stage, no heartbeat, no control client. The loop
/// drives it during a Ctrl-C too (the executor is `busy` until its tools have ended), which is
/// when scancel must run: never through a nested `loop.wait`, which a pending signal ends.
final class SlurmTool {
    struct Result { var code: Int32; var stdout: String; var stderr: String; var spawnError: String? }

    let argv: [String]
    private let pid: pid_t
    private var pidfd: Int32 = -1
    private var out: Int32 = -1, err: Int32 = -1
    private let deadline: Double
    private(set) var result: Result?

    init(_ argv: [String], env: [String: String], timeout: Double) {
        self.argv = argv
        deadline = Clock.monotonic() + timeout
        out = baton_memfd("slurm-out")
        err = baton_memfd("slurm-err")
        do {
            pid = try Spawner.spawn(argv: argv, env: env, cwd: nil, stdin: -1, stdout: out, stderr: err)
            pidfd = baton_pidfd_open(pid)
        } catch {
            pid = 0
            result = Result(code: 127, stdout: "", stderr: "", spawnError: "\(argv[0]): \(error)")
            closeFiles()
        }
    }

    deinit {
        if result == nil, pid > 0 {
            // Dropped while running (the runner is ending): nothing of it stays behind.
            Glibc.kill(-pid, SIGKILL)
            var st: Int32 = 0
            waitpid(pid, &st, 0)
        }
        closeFiles()
    }

    var done: Bool { result != nil }
    /// Readable when it ends.
    var wakeFD: Int32? { result == nil && pidfd >= 0 ? pidfd : nil }
    /// When to look again without a descriptor to wake on: its deadline, or soon.
    var wakeAt: Double? { result != nil ? nil : pidfd >= 0 ? deadline : min(deadline, Clock.monotonic() + 0.02) }

    /// Its result if it has ended (never blocks); past its deadline it is killed.
    @discardableResult
    func check(now: Double = Clock.monotonic()) -> Result? {
        if let result { return result }
        var st: Int32 = 0
        guard waitpid(pid, &st, WNOHANG) == pid else {
            if now > deadline { Glibc.kill(-pid, SIGKILL) }
            return nil
        }
        Glibc.kill(-pid, SIGKILL)   // nothing of it stays behind
        let t = Termination(waitStatus: st)
        let code = t.exitCode ?? 128 + (t.signal ?? 0)
        result = Result(code: code, stdout: String(decoding: CommandRun.readMemfd(out, limit: 16 << 20), as: UTF8.self),
                        stderr: String(decoding: CommandRun.readMemfd(err, limit: 1 << 20), as: UTF8.self))
        closeFiles()
        return result
    }

    /// Waits for its end: only outside a run's loop (`baton cancel` of an orphaned run).
    func finish() -> Result {
        while true {
            if let r = check() { return r }
            var p = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
            if pidfd >= 0 { _ = Glibc.poll(&p, 1, 100) } else { usleep(5000) }
        }
    }

    private func closeFiles() {
        if pidfd >= 0 { close(pidfd); pidfd = -1 }
        if out >= 0 { close(out); out = -1 }
        if err >= 0 { close(err); err = -1 }
    }

    /// Slurm's own words for a failure: its last line of stderr, without the tool's prefix.
    var errorText: String {
        guard let r = result else { return "\(argv[0]) has not ended" }
        if let e = r.spawnError { return e }
        let lines = r.stderr.split(separator: "\n").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
        // sbatch says "sbatch: error: Batch job submission failed: <why>" last.
        let last = lines.last.map { $0.replacingOccurrences(of: "sbatch: error: ", with: "") }
        return last ?? "exit code \(r.code)"
    }
}
