import BatonBase
import BatonCore
import Foundation
import Glibc
import Testing

/// What a job is asked to do, said once for every executor: each subject turns it into its
/// own terms (a command line, a scheduler's options, the fake's script).
enum Work {
    case output(String)
    case exit(Int32)
    case run(seconds: Double, exit: Int32)
    /// Stays in the queue (an executor without a queue cannot do this).
    case queuedForever
}

/// An executor the suite runs against, by its registry name.
struct Subject: Sendable, CustomTestStringConvertible {
    let name: String
    var testDescription: String { name }

    /// Every executor the suite can run against here: Slurm only when its cluster is up
    /// (`slurmCasesRun` is skipped, saying why, when it is not).
    static var all: [Subject] {
        [Subject(name: "local"), Subject(name: "fake")] + (SlurmDev.conf == nil ? [] : [Subject(name: "slurm")])
    }

    func environment(extraPath: String? = nil) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        if name == "slurm" {
            env["SLURM_CONF"] = SlurmDev.conf
            env["BATON_SLURM_POLL_SEC"] = "0.5"
        }
        if let p = extraPath { env["PATH"] = p + ":" + (env["PATH"] ?? "/usr/bin:/bin") }
        return env
    }
}

/// The cluster of scripts/slurm-dev, if it answers (the suite never starts or stops it).
enum SlurmDev {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let conf: String? = {
        guard run(["status"]).code == 0 else { return nil }
        let out = run(["env"]).out
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("export SLURM_CONF=") }) else { return nil }
        return String(line.dropFirst("export SLURM_CONF=".count))
    }()

    static func run(_ args: [String]) -> (code: Int32, out: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: root + "/scripts/slurm-dev")
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return (127, "") }
        let d = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: d, as: UTF8.self))
    }

    /// squeue's states for these job ids (those it still knows).
    static func states(_ ids: [String]) -> [String] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["squeue", "--noheader", "--states=all", "--jobs=\(ids.joined(separator: ","))", "--format=%T"]
        var env = ProcessInfo.processInfo.environment
        env["SLURM_CONF"] = conf
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try? p.run()
        let d = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: d, as: UTF8.self).split(separator: "\n").map { String($0).trimmingCharacters(in: .whitespaces) }
    }

    static let live: Set<String> = ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"]
}

/// A job as the loop drives it (what a stage call is, without the stage).
final class JobTask: LoopTask {
    let theJob: Job
    init(_ j: Job) { theJob = j }
    var done: Termination? { if case let .done(t) = theJob.state { return t }; return nil }
    var isFinished: Bool { done != nil }
    var job: Job? { isFinished ? nil : theJob }
    var nextWake: Double? { nil }
    func advance(now: Double) {}
    func cancel(force: Bool) { if force { theJob.kill() } else { theJob.terminate(grace: 1) } }
}

/// Starts jobs on one executor in a directory of their own and drives them with an EventLoop.
final class Driver {
    let subject: Subject
    let executor: Executor
    let dir: String
    let loop = EventLoop()
    private var n = 0
    private var fds: [Int32] = []
    private(set) var logs: [StageLogs] = []
    let tag = "conf-\(UUID().uuidString.prefix(6))"

    init(_ subject: Subject, executor: Executor? = nil, dir: String? = nil, extraPath: String? = nil) {
        self.subject = subject
        self.executor = executor ?? Executors.make(subject.name, environment: subject.environment(extraPath: extraPath))!
        self.dir = dir ?? tempDir()
    }

    deinit { for fd in fds { close(fd) } }

    /// The job spec for `work` (nil: this executor cannot do it).
    func spec(_ work: Work) -> JobSpec? {
        n += 1
        let base = dir + "/\(n)"
        let l = StageLogs(stdout: base + ".out", stderr: base + ".err")
        logs.append(l)
        let argv: [String]
        let fake: [String: OptionValue]
        switch work {
        case let .output(text):
            argv = ["sh", "-c", "echo \(text); echo \(text)-err >&2"]
            fake = ["output": .string(text + "\n")]
        case let .exit(c):
            argv = ["sh", "-c", "exit \(c)"]
            fake = ["exit": .number(Double(c))]
        case let .run(seconds, c):
            argv = ["sh", "-c", "sleep \(seconds); exit \(c)"]
            fake = ["runFor": .number(seconds), "exit": .number(Double(c))]
        case .queuedForever:
            argv = ["sleep", "300"]
            fake = ["queuedFor": .number(1e9)]
        }
        var options = ExecutorOptions()
        if subject.name == "fake" { options = ExecutorOptions(fake) } else if case .queuedForever = work {
            guard subject.name == "slurm" else { return nil }
            options = ExecutorOptions(["extra": .strings(["--begin=now+600"])])
        }
        var js = JobSpec(argv: argv, env: subject.environment(), cwd: dir)
        let out = open(l.stdout, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let err = open(l.stderr, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        fds += [out, err]
        js.stdout = out
        js.stderr = err
        js.logs = l
        js.name = "baton-\(tag)-\(n)"
        js.grace = 1
        js.options = options
        return js
    }

    func start(_ work: Work) throws -> JobTask? {
        guard let s = spec(work) else { return nil }
        let t = JobTask(try executor.start(s))
        loop.add(t)
        return t
    }

    func take(_ j: Job) -> JobTask {
        let t = JobTask(j)
        loop.add(t)
        return t
    }

    /// Drives the loop until `condition` holds or `seconds` pass.
    @discardableResult
    func drive(_ seconds: Double, until condition: @escaping () -> Bool) -> Bool {
        loop.wait(deadline: Clock.monotonic() + seconds, pollEvery: 0.05, until: condition) == .satisfied
    }

    /// Running (as far as the executor tells: a local job at once).
    static func running(_ t: JobTask) -> Bool {
        guard let p = t.theJob.note.phase else { return !t.theJob.nativeID.isEmpty }
        return p == .running
    }

    /// Everything these jobs ran is gone, in the executor's own terms.
    func nothingLeft(_ tasks: [JobTask]) -> Bool {
        let ids = tasks.map(\.theJob.nativeID)
        switch subject.name {
        case "local": return tasks.allSatisfy { $0.theJob.pid.map { kill(-$0, 0) != 0 } ?? true }
        case "fake": return FakeCluster.shared.liveIDs(ids).isEmpty
        default: return SlurmDev.states(ids).allSatisfy { !SlurmDev.live.contains($0) }
        }
    }
}

/// One contract, every executor: the local one, the in-memory fake (registered through the
/// registry here, in the tests only) and Slurm (skipped, saying why, when scripts/slurm-dev is
/// down). A runner's death (kill -9) is what the re-attach case stands for: its executor is
/// dropped with its jobs in flight, and a new one takes them up by their native ids.
@Suite(.serialized) struct ExecutorConformanceTests {
    init() { Executors.register(FakeExecutor.kind) }

    @Test(.enabled(if: SlurmDev.conf != nil,
                   "Slurm's cases are skipped: the one-node cluster is down (scripts/slurm-dev status); CI brings it up"))
    func slurmCasesRun() {
        #expect(Subject.all.contains { $0.name == "slurm" })
    }

    @Test(arguments: Subject.all) func aJobSucceedsWithItsOutputInItsLogs(_ s: Subject) throws {
        let d = Driver(s)
        let t = try #require(try d.start(.output("hello-\(d.tag)")))
        #expect(d.drive(60) { t.isFinished })
        #expect(t.done == .exited(0))
        #expect(!t.theJob.nativeID.isEmpty)
        #expect(Files.read(d.logs[0].stdout)?.contains("hello-\(d.tag)") == true)
        if s.name != "fake" { #expect(Files.read(d.logs[0].stderr)?.contains("hello-\(d.tag)-err") == true) }
    }

    @Test(arguments: Subject.all) func exitCodesComeBackAsTheyWere(_ s: Subject) throws {
        let d = Driver(s)
        let codes: [Int32] = [1, 7, 42]
        let tasks = try codes.map { try #require(try d.start(.exit($0))) }
        #expect(d.drive(90) { tasks.allSatisfy(\.isFinished) })
        #expect(tasks.map(\.done) == codes.map { Termination.exited($0) as Termination? })
    }

    @Test(arguments: Subject.all) func aTimeoutEndsARunningJobWithinItsGrace(_ s: Subject) throws {
        let d = Driver(s)
        let t = try #require(try d.start(.run(seconds: 300, exit: 0)))
        #expect(d.drive(60) { Driver.running(t) })
        // What a stage's timeout does: SIGTERM now, SIGKILL after the grace.
        let asked = Clock.monotonic()
        t.theJob.terminate(grace: 1)
        #expect(d.drive(30) { t.isFinished })
        let took = Clock.monotonic() - asked
        #expect(t.done?.signal == SIGTERM || t.done?.signal == SIGKILL, "\(String(describing: t.done))")
        // Within the grace (1 s), plus a loaded machine's slack and (for a scheduler) a poll
        // interval or two to hear of it.
        #expect(took < (s.name == "local" ? 3 : 6), "ended \(took) s after it was asked to")
        #expect(d.drive(20) { d.nothingLeft([t]) })
    }

    @Test(arguments: Subject.all) func cancelEndsQueuedAndRunningJobs(_ s: Subject) throws {
        let d = Driver(s)
        let running = try #require(try d.start(.run(seconds: 300, exit: 0)))
        let queued = try d.start(.queuedForever)
        if queued == nil { print("executor conformance: \(s.name) has no queue: the queued half of the cancel case does not apply") }
        let tasks = [running] + (queued.map { [$0] } ?? [])
        #expect(d.drive(60) { Driver.running(running) && (queued.map { !$0.theJob.nativeID.isEmpty } ?? true) })
        if let q = queued { #expect(q.theJob.note.queued, "\(q.theJob.note)") }
        for t in tasks { t.cancel(force: false) }
        #expect(d.drive(60) { tasks.allSatisfy(\.isFinished) })
        #expect(tasks.allSatisfy { $0.done != .exited(0) }, "\(tasks.map(\.done))")
        #expect(d.drive(20) { d.nothingLeft(tasks) }, "something of the jobs is left")
    }

    @Test(arguments: Subject.all) func aNewRunnerReattachesByNativeID(_ s: Subject) throws {
        let dir = tempDir()
        var first: Driver? = Driver(s, dir: dir)
        let probe = first!.executor
        guard probe.jobsOutliveRunner else {
            // Its jobs die with their runner (parent-death signal): nothing to take up.
            #expect(probe.reattach(nativeID: "1", logs: StageLogs(stdout: dir + "/x.out", stderr: dir + "/x.err")) == nil)
            return
        }
        let t = try #require(try first!.start(.run(seconds: 3, exit: 3)))
        #expect(first!.drive(60) { !t.theJob.nativeID.isEmpty && (t.theJob.note.phase == .running || t.theJob.note.phase == .queued) })
        let id = t.theJob.nativeID
        let logs = first!.logs[0]
        #expect(!t.isFinished, "still in flight when its runner goes")
        // The runner is gone (kill -9): its executor and loop vanish, nothing ends the job.
        first = nil
        let second = Driver(s, dir: dir)
        let again = second.take(try #require(second.executor.reattach(nativeID: id, logs: logs)))
        #expect(second.drive(60) { again.isFinished })
        #expect(again.done == .exited(3))
    }

    @Test(arguments: Subject.all) func aHundredJobsCostOneStatusQueryPerPoll(_ s: Subject) throws {
        let counted = tempDir()
        var path: String? = nil
        if s.name == "slurm" {
            // Counting wrappers of the status commands, first on PATH.
            for tool in ["squeue", "sacct"] {
                let f = counted + "/bin/" + tool
                try? FileManager.default.createDirectory(atPath: counted + "/bin", withIntermediateDirectories: true)
                try "#!/bin/sh\necho \"$*\" >> \(counted)/\(tool).calls\nexec /usr/bin/\(tool) \"$@\"\n".write(toFile: f, atomically: true, encoding: .utf8)
                chmod(f, 0o755)
            }
            path = counted + "/bin"
        }
        let d = Driver(s, extraPath: path)
        let before = FakeCluster.shared.queries.count
        let t0 = Clock.monotonic()
        let tasks = try (1...100).map { _ in try #require(try d.start(.run(seconds: 2, exit: 0))) }
        #expect(d.drive(240) { tasks.allSatisfy(\.isFinished) })
        let elapsed = Clock.monotonic() - t0
        #expect(tasks.allSatisfy { $0.done == .exited(0) })
        switch s.name {
        case "local":
            // No status query at all: each job's pidfd wakes the loop.
            break
        case "fake":
            let fake = d.executor as! FakeExecutor
            let widths = Array(FakeCluster.shared.queries.dropFirst(before))
            #expect(widths.count <= fake.polls, "\(widths.count) queries in \(fake.polls) polls")
            #expect((widths.max() ?? 0) >= 90, "the widest query named \(widths.max() ?? 0) jobs")
        default:
            let queries = (Files.read(counted + "/squeue.calls") ?? "").split(separator: "\n")
            let allowed = Int((elapsed / 0.5).rounded(.up)) + 2
            print("executor conformance: slurm: 100 jobs in \(String(format: "%.1f", elapsed)) s, \(queries.count) squeue queries")
            #expect(queries.count <= allowed, "\(queries.count) queries in \(elapsed) s")
            #expect((queries.map { $0.split(separator: ",").count }.max() ?? 0) >= 90)
        }
    }
}

enum Files {
    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}

/// Each executor's one declaration of its options, held to its user documentation: the
/// `## Options` table of docs/<name>.md lists exactly the options a stage's table takes, and
/// the run-wide ones are documented beside it. (`baton types` and the field checks read the
/// declaration itself.)
@Suite struct ExecutorDeclarationTests {
    @Test func docsListEachExecutorsDeclaredOptions() throws {
        for kind in Executors.kinds where !kind.options.isEmpty && kind.name != "fake" {
            let doc = try String(contentsOfFile: SlurmDev.root + "/docs/\(kind.name).md", encoding: .utf8)
            let section = doc.components(separatedBy: "\n## Options\n").dropFirst().first?
                .components(separatedBy: "\n## ").first ?? ""
            var listed: Set<String> = []
            for row in section.split(separator: "\n") where row.hasPrefix("| `") {
                let first = row.dropFirst(2).prefix { $0 != "|" }
                for part in first.split(separator: "`").enumerated() where part.offset % 2 == 0 { listed.insert(String(part.element)) }
            }
            #expect(listed == Set(kind.stageOptionNames), "docs/\(kind.name).md lists \(listed.sorted())")
            for o in kind.options where o.runWide { #expect(section.contains("`\(o.name)`"), "docs/\(kind.name).md: \(o.name)") }
        }
    }

    @Test func theRegistryNamesEachExecutorOnce() {
        Executors.register(FakeExecutor.kind)
        #expect(Set(Executors.names).count == Executors.names.count)
        #expect(Executors.names.starts(with: ["local", "slurm"]))
        #expect(Executors.make("fake", environment: [:]) is FakeExecutor)
        #expect(Executors.make("nowhere", environment: [:]) == nil)
    }
}
