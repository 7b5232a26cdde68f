import BatonBase

/// A loop task that sometimes needs its caller: a watch's callback, a gate's `check` and
/// `onReject`, a preflight's `check` function are the recipe's code (Lua), which must not run
/// inside a loop turn (it may wait on the loop itself). Such a task stops in a state that
/// says so (`needsCaller`), and `RunContext.drive` calls `callBack()` from outside the loop.
/// Everything else (waiting on processes, files, commands; the journal) is its own
/// non-blocking `advance`, as for `StageExecution`.
protocol CallerTask: LoopTask {
    /// What the current wait is for (heartbeats, `status`).
    var label: WaitLabel { get }
    /// Descriptors that wake the current wait (a pidfd, an inotify descriptor).
    var fds: [Int32] { get }
    /// Seconds between heartbeats while it waits (nil: the loop's default).
    var heartbeatEvery: Double? { get }
    /// Changes whenever a wait ends and another begins (with other descriptors or label).
    var phaseNumber: Int { get }
    var needsCaller: Bool { get }
    /// Runs the recipe's code the task waits for, on the caller's side.
    func callBack() throws
    /// The loop was interrupted (a signal, or a journal that cannot be written) while it waited.
    func interrupted()
}

/// A wait of a watch, gate or preflight was ended by a signal (the loop has ended every
/// task by then).
public struct LoopInterrupted: Error {}

/// The journal can no longer be written (`RunContext.fatal`): the run must stop.
public struct JournalFailed: Error {
    public let error: SystemError
}

/// A primitive failed in the way the recipe sees as an error: its message, exit status,
/// kind, and what the error carries (a watch's `outcome`, a gate's `decision`, a
/// preflight's `report`).
public struct PrimitiveError: Error {
    public var message: String
    public var status: ExitStatus
    public var kind: String
    public var attachment: (field: String, value: JSON)?
}

/// A callback failed: `reason` is journaled (the watch's `failed` transition), then `error`
/// (the recipe's own error) is thrown on.
public struct CallbackError: Error {
    public var reason: String
    public var error: Error
    public init(reason: String, error: Error) { self.reason = reason; self.error = error }
}

extension RunContext {
    /// Throws `JournalFailed` when the journal can no longer be written.
    public func checkFatal() throws {
        if let f = fatal { throw JournalFailed(error: f) }
    }

    /// Runs `task` on the loop until it finishes, calling back into the caller whenever it
    /// asks. Throws `LoopInterrupted` when the loop was interrupted, `JournalFailed`.
    func drive(_ task: CallerTask) throws {
        loop.add(task)
        while !task.isFinished {
            if task.needsCaller {
                do { try task.callBack() } catch {
                    task.cancel(force: true)  // (the loop lets go of it)
                    throw error
                }
                continue
            }
            let n = task.phaseNumber
            let r = loop.wait(task.label, fds: task.fds, heartbeatEvery: task.heartbeatEvery) {
                task.isFinished || task.needsCaller || task.phaseNumber != n
            }
            if r == .interrupted {
                if !task.isFinished { task.cancel(force: false) }
                try checkFatal()
                task.interrupted()
                throw LoopInterrupted()
            }
        }
        try checkFatal()
    }
}
