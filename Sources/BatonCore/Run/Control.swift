import BatonBase
import Glibc

/// A request on a live run's control socket (its `op`), and what a `control` event records.
public enum ControlOp: String, CaseIterable, Sendable {
    /// Who the run is and what it waits on (not journaled).
    case hello
    /// Evaluate a Lua line inside the run.
    case eval
    /// Names for Tab (not journaled).
    case complete
    /// The stages in flight (not journaled).
    case stages
    /// End a stage's current attempt; extend its timeout; end a watch as blocked.
    case kill, extend, skip
    /// Cancel the run, as `baton cancel` does (final.json's `ended_by` names the client).
    case cancel
    /// A client of another uid (journaled, never answered).
    case refused
    /// A paused run (a breakpoint): go on; run the next primitive call and pause after it;
    /// skip the stage it is paused before; the replay debugger's next call.
    case `continue`, step, skipStage = "skip_stage", next
    /// The live run's breakpoints: add, remove, list; the Lua traceback of the paused frame.
    case breakAdd = "break", unbreak, breaks, `where`
    /// Whether the run is paused now (not journaled: a client waiting after `:step`).
    case pauseState = "pause_state"
}

/// What a live run's control socket (`baton attach`) may do to its stages and watches.
extension RunDirectory {
    /// The live run's control socket (mode 0600, removed when the run ends).
    public var controlSocket: String { path + "/control.sock" }
}

extension StageExecution {
    /// Ends the current attempt the way a crash would (SIGTERM to its job, SIGKILL after its
    /// grace) without marking the call cancelled: a death by signal is a transient failure,
    /// so the stage's retry policy applies. False when no attempt is running.
    public func endAttempt() -> Bool {
        guard case .running = phase, let j = job else { return false }
        j.terminate(grace: spec.grace)
        return true
    }

    /// Seconds until the running attempt's timeout, if it has one.
    public var timeoutLeft: Double? {
        guard case .running = phase, let d = deadline, !timedOut else { return nil }
        return d - Clock.monotonic()
    }

    /// Moves the running attempt's timeout `seconds` later (earlier if negative). Returns
    /// the seconds left after the move, or nil when no running attempt has a timeout.
    public func extendTimeout(by seconds: Double) -> Double? {
        guard timeoutLeft != nil, let d = deadline else { return nil }
        deadline = d + seconds
        return timeoutLeft
    }

    public var runningFor: Double { Clock.monotonic() - attemptStart }
}
