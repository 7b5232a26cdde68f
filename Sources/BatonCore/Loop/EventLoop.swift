import BatonBase
import CBatonSys
import Glibc

/// Something the event loop drives: a stage call, a command. Its methods never block.
public protocol LoopTask: AnyObject {
    var isFinished: Bool { get }
    /// The job in flight, if any (its executor is polled for it).
    var job: Job? { get }
    /// When it next needs `advance` whatever else happens (a backoff or a timeout ending).
    var nextWake: Double? { get }
    /// Moves its state machine forward.
    func advance(now: Double)
    /// Ends it: SIGTERM then SIGKILL after its grace; `force`: SIGKILL now.
    func cancel(force: Bool)
    /// Descriptors whose readability means it should advance (a thread's work ended).
    var wakeFDs: [Int32] { get }
}

extension LoopTask {
    public var wakeFDs: [Int32] { [] }
}

/// What a wait is on: the `waiting_on` of a heartbeat, the first word of `status`'s "waiting on".
public enum WaitKind: String, CaseIterable, Sendable {
    case stage, watch, command, gate, preflight, parallel, sleep, lock, yaml, pause
    /// The run's end, for the cache's inserts still under way.
    case cache
    /// `baton.sh` and `os.execute` (their commands' `via`).
    case sh = "baton.sh", execute = "os.execute"
}

/// What a wait is for, in heartbeats and `status`: (kind, id), e.g. (.stage, "build").
public struct WaitLabel: Sendable {
    public var kind: WaitKind
    public var id: String
    public init(_ kind: WaitKind, _ id: String) { self.kind = kind; self.id = id }
}

/// The one place Baton blocks. Every wait (stages in the foreground and background,
/// watches, gate and preflight commands, baton.sh, os.execute, baton.sleep, retry backoff,
/// locks, cancellation) is a `wait` here, and every wait keeps every task alive: timeouts,
/// retries and backoff of background stages, heartbeats, the journal's batched flush and
/// signal handling all go on whatever the recipe waits on.
public final class EventLoop {
    public enum Outcome: Equatable { case satisfied, deadline, interrupted }

    public private(set) var tasks: [LoopTask] = []
    /// Seconds between heartbeats while a labelled wait lasts.
    public var heartbeatInterval: Double = 30
    public var onHeartbeat: ((Heartbeat) -> Void)?
    /// The journal whose batched flush the loop keeps on time.
    public var journal: JournalWriter?
    /// Ends waits early (a journal that cannot be written).
    public var mustStop: () -> Bool = { false }
    /// Called each time the loop is about to block (the run writes its deferred journal
    /// events: what a turn started goes out in one write, before anyone could look).
    public var beforeBlocking: (() -> Void)?
    /// Called every `tickInterval` seconds while a labelled wait lasts (from the loop
    /// itself, never a thread): the terminal's status line and `--stream`'s echo.
    public var onTick: ((WaitLabel) -> Void)?
    public var tickInterval: Double = 0.5
    private var lastTick = 0.0
    /// The wait in progress (what `status` and heartbeats say the recipe waits on).
    public private(set) var waitingOn: (label: WaitLabel, since: Double)?

    public init() {}

    /// Descriptors every wait also polls, each with the handler called (between events,
    /// never while Lua code runs) when it is readable: a live run's control socket.
    /// While a handler runs, no source is polled (a handler that waits is not re-entered).
    public var sources: [(fd: Int32, handler: () -> Void)] = []
    private var inSource = false

    /// Set by `poke`: take another turn at once (a freed pool slot lets a waiting task start).
    private var poked = false
    public func poke() { poked = true }

    public var interrupted: Bool { baton_signal_pending() != 0 }

    /// Adds a task and gives it its first step.
    public func add(_ task: LoopTask) {
        tasks.append(task)
        task.advance(now: Clock.monotonic())
    }

    /// Waits until `condition` holds, the deadline passes, or a signal arrives, driving
    /// every task meanwhile. `fds` wake the wait when readable (`onReadable` is told);
    /// `pollEvery` re-checks the condition that often. On a signal every task is ended
    /// (SIGTERM, then SIGKILL after its grace; a second signal kills at once) before
    /// `.interrupted` is returned.
    public func wait(_ label: WaitLabel? = nil, deadline: Double? = nil, fds: [Int32] = [],
                     heartbeatEvery: Double? = nil, pollEvery: Double? = nil,
                     onReadable: ((Int32) -> Void)? = nil, until condition: () -> Bool) -> Outcome {
        let began = Clock.monotonic()
        let outer = waitingOn
        if let label { waitingOn = (label, began) }
        defer { waitingOn = outer }
        let hbEvery = heartbeatEvery ?? heartbeatInterval
        var nextHeartbeat = label != nil && onHeartbeat != nil ? began + hbEvery : Double.infinity
        var nextPoll = pollEvery.map { began + $0 } ?? Double.infinity
        // Ticks keep their pace across waits: a fan-out's many short waits still draw.
        var nextTick = label != nil && onTick != nil ? max(began, lastTick + tickInterval) : Double.infinity
        var cancelling = false
        while true {
            let now = Clock.monotonic()
            step(now: now)
            if interrupted {
                if !cancelling {
                    baton_stuck_guard_ack()   // the run is not stuck in a C call: it ends its own way
                    // The signal that got us here is still in the self-pipe: read it now, so
                    // that only a later signal counts as the second one (SIGKILL at once).
                    baton_signal_drain()
                    cancelling = true
                    for t in tasks { t.cancel(force: false) }
                    continue
                }
                if tasks.isEmpty && !executorsBusy { return .interrupted }
            } else {
                if condition() { return .satisfied }
                if let d = deadline, now >= d { return .deadline }
                if mustStop() { return .interrupted }
            }
            if now >= nextHeartbeat, let label {
                let waited = Int64((now - began) * 1000)
                onHeartbeat?(Heartbeat(waitingOn: label.kind.rawValue, id: label.id, forMs: waited))
                nextHeartbeat = now + hbEvery
            }
            if now >= nextPoll {
                nextPoll = now + (pollEvery ?? 1)
                if !cancelling, condition() { continue }
            }
            if now >= nextTick, let label {
                onTick?(label)
                lastTick = now
                nextTick = now + tickInterval
            }
            // Before the poll set is built: it may add a source (the control socket is opened
            // at the first block) that this very poll must watch, and it flushes the journal.
            beforeBlocking?()
            var wake = min(nextHeartbeat, nextPoll, nextTick)
            if let d = deadline { wake = min(wake, d) }
            if let d = journal?.syncDue { wake = min(wake, d) }
            var pfds = [pollfd(fd: baton_signal_fd(), events: Int16(POLLIN), revents: 0)]
            for t in tasks {
                if let w = t.nextWake { wake = min(wake, w) }
                for fd in t.wakeFDs { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            }
            for (executor, jobs) in inFlight() {
                let w = executor.wake(jobs, now: now)
                for fd in w.fds { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
                if let at = w.at { wake = min(wake, at) }
            }
            let firstExtra = pfds.count
            for fd in fds { pfds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0)) }
            let firstSource = pfds.count
            let polled = inSource || cancelling ? [] : sources
            for s in polled { pfds.append(pollfd(fd: s.fd, events: Int16(POLLIN), revents: 0)) }
            if poked { poked = false; wake = now }
            let ms: Int32 = wake.isInfinite ? -1 : Int32(max(0, min(3_600_000, ((wake - now) * 1000).rounded(.up))))
            if poll(&pfds, nfds_t(pfds.count), ms) > 0 {
                dispatch(pfds, extra: firstExtra..<firstSource, polled: polled, cancelling: cancelling,
                         onReadable: onReadable)
            }
        }
    }

    /// After a poll: the self-pipe read (a second signal while cancelling ends the tasks at
    /// once), the caller's descriptors and the sources that are readable handled.
    private func dispatch(_ pfds: [pollfd], extra: Range<Int>, polled: [(fd: Int32, handler: () -> Void)],
                          cancelling: Bool, onReadable: ((Int32) -> Void)?) {
        if pfds[0].revents != 0 {
            var buf = [UInt8](repeating: 0, count: 64)
            let got = read(baton_signal_fd(), &buf, buf.count)
            if cancelling, got > 0 { for t in tasks { t.cancel(force: true) } }
        }
        for i in extra where pfds[i].revents != 0 { onReadable?(pfds[i].fd) }
        for (k, s) in polled.enumerated() where pfds[extra.upperBound + k].revents != 0 {
            inSource = true
            s.handler()
            inSource = false
        }
    }

    /// One turn without blocking: poll every executor once for all its jobs, advance every
    /// task, keep the journal's flush on time.
    public func step(now: Double = Clock.monotonic()) {
        let groups = inFlight()
        for (executor, jobs) in groups { executor.poll(jobs, now: now) }
        for t in tasks { t.advance(now: now) }
        tasks.removeAll { $0.isFinished }
        lingering = groups.map(\.0).filter { $0.busy }
        try? journal?.flushIfDue(now: now)
    }

    /// Executors polled last turn that still have work of their own under way (`busy`: a
    /// cancel whose job has ended): polled again even with no job waiting on them.
    private var lingering: [Executor] = []

    /// Whether an executor still has work of its own under way (the end of a run waits for it).
    public var executorsBusy: Bool { lingering.contains { $0.busy } }

    private func inFlight() -> [(Executor, [Job])] {
        var groups: [(Executor, [Job])] = []
        for t in tasks {
            guard let j = t.job else { continue }
            if let i = groups.firstIndex(where: { $0.0 === j.executor }) { groups[i].1.append(j) } else {
                groups.append((j.executor, [j]))
            }
        }
        for e in lingering where e.busy && !groups.contains(where: { $0.0 === e }) { groups.append((e, [])) }
        return groups
    }

    /// Interruptible sleep. Returns false when interrupted.
    public func sleep(_ seconds: Double, _ label: WaitLabel? = nil) -> Bool {
        wait(label, deadline: Clock.monotonic() + seconds) { false } != .interrupted
    }

    /// Ends every task (SIGTERM, SIGKILL after its grace, or at `limit` seconds at the
    /// latest) and waits until all are over; a signal meanwhile kills at once.
    public func endAll(limit: Double = 30) {
        guard !tasks.isEmpty || executorsBusy else { return }
        for t in tasks { t.cancel(force: false) }
        let until = Clock.monotonic() + limit
        while !tasks.isEmpty || executorsBusy {
            let r = wait(deadline: until) { self.tasks.isEmpty && !self.executorsBusy }
            if r == .satisfied { break }
            for t in tasks { t.cancel(force: true) }
            if r == .deadline {
                _ = wait(deadline: Clock.monotonic() + 5) { self.tasks.isEmpty && !self.executorsBusy }
                break
            }
        }
    }
}
