import CBatonSys
import Glibc

/// A short command run to completion with its output captured in memory files:
/// preflight `cmd` checks, gate commands and `baton.sh`. Same spawn path as stages
/// (own process group, killed whole on timeout or signal), but not journaled as a stage.
public enum Subprocess {
    public struct Outcome {
        public var exit: Int32?
        public var signal: Int32?
        public var timedOut = false
        public var interrupted = false
        public var stdout: [UInt8] = []
        public var stderr: [UInt8] = []
        public var spawnError: String?
        public var ok: Bool { exit == 0 && spawnError == nil && !timedOut && !interrupted }
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

        public var failureDescription: String {
            if let e = spawnError { return e }
            if interrupted { return "interrupted" }
            if timedOut { return "timed out" }
            if let s = signal { return "killed by signal \(s)" }
            let line = FailureSignature.lastNonEmptyLine(stderrText)
            return "exit code \(exit ?? -1)" + (line.isEmpty ? "" : ": \(line.prefix(300))")
        }
    }

    public static func run(_ command: Command, cwd: String? = nil, env: [String: String]? = nil,
                           stdin: String? = nil, timeout: Double? = nil, grace: Double = 2,
                           outputLimit: Int = 16 << 20) -> Outcome {
        var o = Outcome()
        let outFD = baton_memfd("baton-out"), errFD = baton_memfd("baton-err")
        defer { close(outFD); close(errFD) }
        var inFD: Int32 = -1
        if let text = stdin {
            inFD = baton_memfd("baton-in")
            _ = try? Array(text.utf8).withUnsafeBytes { try FileIO.writeAll(inFD, $0, path: "stdin") }
            lseek(inFD, 0, SEEK_SET)
        }
        defer { if inFD >= 0 { close(inFD) } }
        let pid: pid_t
        do {
            pid = try Spawner.spawn(argv: command.argv, env: env ?? Spawner.currentEnvironment(), cwd: cwd,
                                    stdin: inFD, stdout: outFD, stderr: errFD)
        } catch {
            o.spawnError = "\(error)"
            o.exit = (error as? SpawnError)?.exitCode ?? 127
            return o
        }
        let pidfd = baton_pidfd_open(pid)
        defer { if pidfd >= 0 { close(pidfd) } }
        let start = Clock.monotonic()
        var killAt: Double? = nil
        var status: Int32 = 0
        while true {
            if waitpid(pid, &status, WNOHANG) == pid { break }
            let now = Clock.monotonic()
            if killAt == nil {
                if baton_signal_pending() != 0 { o.interrupted = true }
                else if let t = timeout, now - start >= t { o.timedOut = true }
                if o.interrupted || o.timedOut {
                    kill(-pid, SIGTERM); kill(-pid, SIGCONT)
                    killAt = now + grace
                }
            } else if let k = killAt, now >= k {
                kill(-pid, SIGKILL)
            }
            var wake = 1.0
            if let t = timeout, killAt == nil { wake = min(wake, max(0, start + t - now)) }
            if let k = killAt { wake = min(wake, max(0.01, k - now)) }
            var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: baton_signal_fd(), events: Int16(POLLIN), revents: 0)]
            // The signal pipe is drained by the run's own wait loop; here we only peek.
            if baton_signal_pending() != 0 { fds.removeLast() }
            _ = poll(&fds, nfds_t(fds.count), Int32(wake * 1000) + 1)
        }
        // Nothing of the command outlives it.
        if kill(-pid, 0) == 0 { kill(-pid, SIGKILL) }
        var st: Int32 = 0
        while waitpid(-pid, &st, WNOHANG) > 0 {}
        baton_crash_guard_untrack(pid)
        if (status & 0x7f) == 0 { o.exit = (status >> 8) & 0xff } else { o.signal = status & 0x7f }
        o.stdout = readMemfd(outFD, limit: outputLimit)
        o.stderr = readMemfd(errFD, limit: outputLimit)
        return o
    }

    static func readMemfd(_ fd: Int32, limit: Int) -> [UInt8] {
        var st = stat()
        fstat(fd, &st)
        let size = min(Int(st.st_size), limit)
        var buf = [UInt8](repeating: 0, count: size)
        var got = 0
        while got < size {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, size - got, off_t(got)) }
            if n <= 0 { break }
            got += n
        }
        return Array(buf[0..<got])
    }
}
