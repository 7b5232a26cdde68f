import BatonBase
import Glibc
import Synchronization

/// Work that blocks (copying and hashing a large output into the cache) done on a thread of
/// its own, as a loop task: the loop goes on meanwhile (timeouts, watches, the control socket)
/// and `done` runs on the loop's thread in the turn after the work ended. `cancel` asks the
/// work to give up (`abandon`, which it reads between blocks); the task ends when the work does.
final class ThreadTask: LoopTask {
    /// A flag shared with the work's thread.
    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        var isSet: Bool { value.load(ordering: .acquiring) }
        func set() { value.store(true, ordering: .releasing) }
    }

    /// Set by `cancel`: the work stops at its next check.
    let abandon = Flag()
    private let ended = Flag()
    private var thread: Background?
    private var pipeFDs: [Int32] = [-1, -1]
    private let done: (_ abandoned: Bool) -> Void
    private(set) var isFinished = false
    var job: Job? { nil }
    /// Woken by the pipe the work writes to when it ends (polled when there is no pipe).
    var nextWake: Double? { isFinished || pipeFDs[0] >= 0 ? nil : Clock.monotonic() + 0.05 }
    var wakeFDs: [Int32] { isFinished || pipeFDs[0] < 0 ? [] : [pipeFDs[0]] }

    init(_ work: @escaping @Sendable (Flag) -> Void, done: @escaping (_ abandoned: Bool) -> Void) {
        self.done = done
        if let p = FileIO.pipe(nonblocking: true) { pipeFDs = [p.read, p.write] }
        let (abandon, ended, wake) = (abandon, ended, pipeFDs[1])
        thread = Background {
            work(abandon)
            ended.set()
            var one: UInt8 = 1
            if wake >= 0 { _ = write(wake, &one, 1) }
        }
    }

    func advance(now: Double) {
        guard !isFinished, ended.isSet else { return }
        thread?.join()
        thread = nil
        for fd in pipeFDs where fd >= 0 { close(fd) }
        pipeFDs = [-1, -1]
        isFinished = true
        done(abandon.isSet)
    }

    func cancel(force: Bool) { abandon.set() }
}
