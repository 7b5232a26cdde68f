import BatonBase
import CBatonSys
import Glibc

/// A short command run to completion with its output captured in memory files: preflight
/// `cmd` checks, gate commands, `baton.sh`, `os.execute`, the YAML helper. The same
/// executor as stages (own process group, ended whole on timeout, cancel or a signal) and
/// the same loop (so nothing else stops while it runs).
public final class CommandRun: LoopTask {
    public struct Outcome: Sendable {
        public var exit: Int32?
        public var signal: Int32?
        public var timedOut = false
        public var interrupted = false
        public var stdout: [UInt8] = []
        public var stderr: [UInt8] = []
        public var spawnError: String?
        public var pid: Int32?
        public var duration = 0.0
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

    let grace: Double
    let outputLimit: Int
    private let outFD: Int32
    private let errFD: Int32
    /// Output goes to these descriptors as it is written (not captured).
    private let passthrough: Bool
    public private(set) var job: Job?
    public private(set) var outcome = Outcome()
    public private(set) var isFinished = false
    private var started = 0.0
    private var deadline: Double?

    init(_ command: Command, cwd: String?, env: [String: String], stdin: String?, timeout: Double?, grace: Double,
         outputLimit: Int, output: (Int32, Int32)?, executor: Executor) {
        self.grace = grace
        self.outputLimit = outputLimit
        passthrough = output != nil
        outFD = output.map { dup($0.0) } ?? baton_memfd("baton-out")
        errFD = output.map { dup($0.1) } ?? baton_memfd("baton-err")
        started = Clock.monotonic()
        var inFD: Int32 = -1
        if let text = stdin {
            inFD = baton_memfd("baton-in")
            _ = try? Array(text.utf8).withUnsafeBytes { try FileIO.writeAll(inFD, $0, path: "stdin") }
            lseek(inFD, 0, SEEK_SET)
        }
        defer { if inFD >= 0 { close(inFD) } }
        var spec = JobSpec(argv: command.argv, env: env, cwd: cwd)
        spec.stdin = inFD
        spec.stdout = outFD
        spec.stderr = errFD
        spec.leftoverGrace = min(grace, 2)
        do {
            job = try executor.start(spec)
            outcome.pid = job?.pid
            deadline = timeout.map { started + $0 }
        } catch let e as SpawnError {
            outcome.spawnError = e.message
            outcome.exit = e.exitCode
            finish()
        } catch {
            outcome.spawnError = "\(error)"
            outcome.exit = Termination.notFound
            finish()
        }
    }

    deinit { close(outFD); close(errFD) }

    public var nextWake: Double? { isFinished ? nil : deadline }

    public func advance(now: Double) {
        guard let j = job, !isFinished else { return }
        if case let .done(t) = j.state {
            outcome.exit = t.exitCode
            outcome.signal = t.signal
            finish()
            return
        }
        if let d = deadline, now >= d {
            deadline = nil
            outcome.timedOut = true
            j.terminate(grace: grace)
        }
    }

    public func cancel(force: Bool) {
        guard let j = job, !isFinished else { return }
        outcome.interrupted = true
        if force { j.kill() } else { j.terminate(grace: grace) }
    }

    private func finish() {
        isFinished = true
        job = nil
        outcome.duration = Clock.monotonic() - started
        if !passthrough {
            outcome.stdout = CommandRun.readMemfd(outFD, limit: outputLimit)
            outcome.stderr = CommandRun.readMemfd(errFD, limit: outputLimit)
        }
    }

    /// Starts `command` as the sub-task of another task (a gate's, a preflight's), which
    /// forwards `job`, `advance` and `cancel` to it.
    static func start(_ command: Command, cwd: String?, env: [String: String], timeout: Double?) -> CommandRun {
        CommandRun(command, cwd: cwd, env: env, stdin: nil, timeout: timeout, grace: 2, outputLimit: 16 << 20,
                   output: nil, executor: LocalExecutor())
    }

    /// Runs `command` to its end on `loop` (every other task goes on meanwhile).
    public static func run(_ command: Command, cwd: String? = nil, env: [String: String]? = nil, stdin: String? = nil,
                           timeout: Double? = nil, grace: Double = 2, outputLimit: Int = 16 << 20,
                           output: (Int32, Int32)? = nil, on loop: EventLoop, label: WaitLabel? = nil,
                           executor: Executor = LocalExecutor()) -> Outcome {
        let task = CommandRun(command,
                              cwd: cwd,
                              env: env ?? Spawner.currentEnvironment(),
                              stdin: stdin,
                              timeout: timeout,
                              grace: grace, outputLimit: outputLimit, output: output, executor: executor)
        if task.isFinished { return task.outcome }
        loop.add(task)
        if loop.wait(label ?? WaitLabel(.command, command.display), until: { task.isFinished }) == .interrupted {
            // The loop ended every task, this one included, before returning.
            var o = task.outcome
            o.interrupted = true
            return o
        }
        return task.outcome
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
