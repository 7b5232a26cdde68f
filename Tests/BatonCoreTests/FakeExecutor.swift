import BatonBase
import BatonCore
import Foundation
import Glibc

/// A batch scheduler in memory, for the executor conformance suite: its jobs outlive any one
/// `FakeExecutor` (as a real scheduler's outlive the runner that submitted them), each one
/// scripted by its options: queued so long, running so long, then an exit code and output.
/// It counts status queries and how many jobs each asked about.
final class FakeCluster: @unchecked Sendable {
    static let shared = FakeCluster()

    final class Entry {
        let queuedUntil: Double
        let runFor: Double
        let exit: Int32
        let output: String
        let logs: StageLogs
        var startedAt: Double?
        var ended: Termination?
        init(queuedUntil: Double, runFor: Double, exit: Int32, output: String, logs: StageLogs) {
            self.queuedUntil = queuedUntil; self.runFor = runFor; self.exit = exit; self.output = output; self.logs = logs
        }
    }

    private let lock = NSLock()
    private var jobs: [String: Entry] = [:]
    private var nextID = 1000
    /// Each status query's width (the number of jobs it named).
    private(set) var queries: [Int] = []

    func submit(_ e: Entry) -> String {
        lock.lock(); defer { lock.unlock() }
        nextID += 1
        jobs[String(nextID)] = e
        return String(nextID)
    }

    /// One status query for these jobs: the scheduler moves each along by the clock first.
    func query(_ ids: [String], now: Double) -> [String: (QueuePhase, Termination?)] {
        lock.lock(); defer { lock.unlock() }
        queries.append(ids.count)
        var out: [String: (QueuePhase, Termination?)] = [:]
        for id in ids {
            guard let e = jobs[id] else { continue }
            step(e, now: now)
            out[id] = (e.ended != nil ? .ended : e.startedAt != nil ? .running : .queued, e.ended)
        }
        return out
    }

    private func step(_ e: Entry, now: Double) {
        guard e.ended == nil else { return }
        if e.startedAt == nil, now >= e.queuedUntil { e.startedAt = e.queuedUntil }
        if let s = e.startedAt, now >= s + e.runFor { end(e, .exited(e.exit)) }
    }

    private func end(_ e: Entry, _ t: Termination) {
        e.ended = t
        if e.startedAt != nil { _ = try? FileIO.appendLocked(e.logs.stdout, Array(e.output.utf8)) }
    }

    /// scancel: a queued job leaves the queue, a running one is signalled (and ends of it).
    func signal(_ ids: [String], _ sig: Int32) {
        lock.lock(); defer { lock.unlock() }
        for id in ids { if let e = jobs[id], e.ended == nil { end(e, .signaled(sig)) } }
    }

    /// Which of these jobs have not ended (moved along by the clock; not a status query).
    func liveIDs(_ ids: [String]) -> [String] {
        lock.lock(); defer { lock.unlock() }
        let now = Clock.monotonic()
        return ids.filter { id in jobs[id].map { step($0, now: now); return $0.ended == nil } ?? false }
    }
}

/// The fake executor: a client of `FakeCluster`, polling it in ONE query per poll for all its
/// jobs, as a batch scheduler's executor must. Registered through the registry by the tests.
final class FakeExecutor: Executor {
    let name = "fake"
    let cluster: FakeCluster
    private(set) var polls = 0
    init(cluster: FakeCluster) { self.cluster = cluster }

    static let kind = ExecutorKind(
        name: "fake", summary: "an in-memory scheduler (tests only)",
        options: [ExecutorOption("queuedFor", .number(min: 0), "seconds in the queue before it runs"),
                  ExecutorOption("runFor", .number(min: 0), "seconds it runs"),
                  ExecutorOption("exit", .integer(min: 0), "its exit code"),
                  ExecutorOption("output", .string, "what it writes on stdout")]
    ) { _ in FakeExecutor(cluster: .shared) }

    func start(_ spec: JobSpec) throws -> Job {
        guard let logs = spec.logs else { throw SpawnError(message: "fake: a job needs its log paths", exitCode: 1) }
        let o = spec.options
        let e = FakeCluster.Entry(queuedUntil: Clock.monotonic() + (o["queuedFor"]?.number ?? 0), runFor: o["runFor"]?.number ?? 0,
                                  exit: Int32(o["exit"]?.number ?? 0), output: o["output"]?.string ?? "", logs: logs)
        return FakeJob(executor: self, id: cluster.submit(e))
    }

    func poll(_ jobs: [Job], now: Double) {
        polls += 1
        let open = jobs.compactMap { $0 as? FakeJob }.filter { !$0.isDone }
        for j in open { if let k = j.killAt, now >= k { j.kill() } }
        guard !open.isEmpty else { return }
        let rows = cluster.query(open.map(\.id), now: now)
        for j in open {
            guard let (phase, ended) = rows[j.id] else { continue }
            j.note.phase = phase
            j.note.state = phase.rawValue.uppercased()
            if let t = ended { j.state = .done(t) }
        }
    }

    func wake(_ jobs: [Job], now: Double) -> (fds: [Int32], at: Double?) {
        jobs.contains { ($0 as? FakeJob)?.isDone == false } ? ([], now + 0.05) : ([], nil)
    }

    func describe(_ job: Job) -> String { "fake job \(job.nativeID)" }
    var jobsOutliveRunner: Bool { true }
    func reattach(nativeID: String, logs: StageLogs) -> Job? { FakeJob(executor: self, id: nativeID) }
    func cancel(nativeIDs: [String]) { cluster.signal(nativeIDs, SIGTERM) }
}

final class FakeJob: Job {
    let executor: Executor
    let id: String
    var state: JobState = .running
    var note = JobNote()
    var killAt: Double?
    init(executor: FakeExecutor, id: String) { self.executor = executor; self.id = id; note.phase = .submitted }
    var nativeID: String { id }
    var pid: pid_t? { nil }
    var isDone: Bool { if case .done = state { return true }; return false }
    private var cluster: FakeCluster { (executor as! FakeExecutor).cluster }
    func terminate(grace: Double) {
        guard !isDone else { return }
        cluster.signal([id], SIGTERM)
        killAt = Clock.monotonic() + grace
    }
    func kill() { if !isDone { cluster.signal([id], SIGKILL) } }
}
