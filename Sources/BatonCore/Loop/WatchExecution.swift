import BatonBase
import CBatonSys
import Glibc

/// What a watch waits on first.
public enum WatchTarget {
    /// A stage started in the background.
    case stage(StageExecution)
    /// A process, not necessarily our child (via pidfd).
    case pid(Int32)
    /// Until no process outside Baton's tree matches (as `pgrep -f`).
    case pattern(String)
    /// Until the file exists.
    case file(String)
    /// Nothing: only the required files.
    case nothing

    /// "stage build", "pid 42", "pattern 'x'", "file /a/b", "nothing".
    public var text: String {
        switch self {
        case let .stage(e): return "stage \(e.spec.id)"
        case let .pid(p): return "pid \(p)"
        case let .pattern(p): return "pattern '\(p)'"
        case let .file(f): return "file \(f)"
        case .nothing: return "nothing"
        }
    }
}

/// `watch{onMissing = ...}`: what a watch does when required files are missing.
public enum OnMissing: String, CaseIterable, Sendable { case fail, block, callback }

/// One watch: what it waits on, the files that must then exist, and its callback.
public struct WatchSpec {
    public var id: String
    public var target: WatchTarget
    /// Absolute paths that must exist and be non-empty once the target has ended.
    public var requireFiles: [String] = []
    public var readyTimeout = 600.0
    public var readyPoll = 5.0
    public var onMissing = OnMissing.fail
    public var timeout = 86400.0
    public var heartbeat = 60.0
    /// A failure is a result rather than an error.
    public var allowFail = false
    /// Called once the files exist (or `onMissing = callback`) with what the watch knows
    /// (`WatchResult.fields` and `state`); what it returns is the result's `callback_result`.
    public var callback: ((JSON) throws -> JSON?)?
    /// Told when a watched stage ends, before the watch moves on (the terminal's line for it).
    public var onStageEnded: ((StageResult) -> Void)?

    public init(id: String, target: WatchTarget = .nothing) { self.id = id; self.target = target }
}

/// How a watch ended.
public struct WatchResult {
    public var id: String
    public var stageStatus: StageStatus?
    public var exit: Int32?
    public var signal: Int32?
    public var files: [String]?
    public var missing: [String]?
    public var callbackResult: JSON?
    public var state = WatchState.failed
    public var ok = false
    public var reason = ""
    public var duration = 0.0
    public var transitions: [WatchState] = []
    /// Why it failed, when that is the recipe's error unless `allowFail` ("watch 'x': ...").
    public var failure: String?

    /// What the watch knows so far, as its callback and its result table see it.
    public var fields: [(String, JSON)] {
        var o: [(String, JSON)] = [("id", .string(id))]
        if let s = stageStatus { o.append(("status", .string(s.rawValue))) }
        if let x = exit { o.append(("exit", .int(Int64(x)))) }
        if let s = signal { o.append(("signal", .int(Int64(s)))) }
        if let f = files { o.append(("files", .array(f.map(JSON.string)))) }
        if let m = missing { o.append(("missing", .array(m.map(JSON.string)))) }
        if let c = callbackResult { o.append(("callback_result", c)) }
        return o
    }

    /// The result table: `fields` and how it ended.
    public var json: JSON {
        .object(fields + [("state", .string(state.rawValue)), ("ok", .bool(ok)), ("reason", .string(reason)),
                          ("duration", .double(duration)),
                          ("transitions", .array(transitions.map { .string($0.rawValue) }))])
    }
}

extension RunContext {
    /// Runs a watch to its end: its target, then its required files, then its callback,
    /// each transition journaled. Throws `PrimitiveError` when it failed (unless
    /// `allowFail`), `LoopInterrupted`, `JournalFailed`, or what the callback threw.
    public func watch(_ spec: WatchSpec) throws -> WatchResult {
        let exec = WatchExecution(spec: spec, context: self)
        try drive(exec)
        let r = exec.result
        if let m = r.failure, !spec.allowFail {
            throw PrimitiveError(message: m, status: .failure, kind: "watch", attachment: ("outcome", r.json))
        }
        return r
    }
}

/// A watch as a loop task: its target's end, then its files, each checked without
/// blocking (pidfd, inotify, polling); it stops for its caller to run the callback.
final class WatchExecution: CallerTask {
    enum Phase { case target, artifacts, callback, finished }

    let spec: WatchSpec
    unowned let context: RunContext
    let life: WatchLifecycle
    let began = Clock.monotonic()
    var phase = Phase.target
    private(set) var phaseNumber = 0
    private(set) var result: WatchResult
    var deadline = 0.0
    var nextPoll = 0.0
    var pidfd: Int32 = -1
    var fileWait: FileWait?
    var firstMatches: [pid_t] = []
    /// A watched stage that did not pass.
    var stageFailed: StageResult?
    var cancelled = false

    init(spec: WatchSpec, context: RunContext) {
        self.spec = spec
        self.context = context
        life = WatchLifecycle(id: spec.id, context: context)
        result = WatchResult(id: spec.id)
        begin()
    }

    deinit { if pidfd >= 0 { close(pidfd) } }

    var label: WaitLabel { WaitLabel(.watch, spec.id) }
    var fds: [Int32] { pidfd >= 0 ? [pidfd] : fileWait.map { $0.watcher.fd >= 0 ? [$0.watcher.fd] : [] } ?? [] }
    var heartbeatEvery: Double? { spec.heartbeat }
    var needsCaller: Bool { phase == .callback && !cancelled }
    var isFinished: Bool { phase == .finished || cancelled }
    var job: Job? { nil }
    var nextWake: Double? {
        switch phase {
        case .target, .artifacts:
            if let w = fileWait { return min(deadline, w.next) }
            if case .pattern = spec.target { return min(deadline, nextPoll) }
            return deadline
        case .callback, .finished: return nil
        }
    }
    var skipped: Bool { context.skipRequests.contains(spec.id) }

    func cancel(force: Bool) { cancelled = true }

    func interrupted() {
        if life.state?.isTerminal ?? false { return }
        life.move(.failed, phase == .artifacts ? "interrupted while awaiting artifacts" : "interrupted")
    }

    // MARK: 1. the target runs until it exits

    func begin() {
        let require = spec.requireFiles
        let settings = WatchDetails.Settings(requireFiles: require, readyTimeoutSec: spec.readyTimeout,
                                             readyPollSec: spec.readyPoll, onMissing: spec.onMissing,
                                             timeoutSec: spec.timeout)
        life.move(.queued, "watch registered on \(spec.target.text)", details: WatchDetails(settings: settings))
        life.move(.running, "waiting for \(spec.target.text) to finish")
        deadline = Clock.monotonic() + spec.timeout
        switch spec.target {
        case let .pid(p):
            pidfd = baton_pidfd_open(pid_t(p))
            if pidfd < 0 { targetEnded(.exited(exit: nil, signal: nil, detail: "process \(p) is not running")) }
        case let .pattern(p):
            firstMatches = ProcessTable.matching(p) ?? []
        case let .file(f):
            fileWait = FileWait([f], nonEmpty: false, poll: spec.readyPoll)
        case .stage, .nothing:
            break
        }
    }

    func advance(now: Double) {
        switch phase {
        case .target:
            if let o = targetOutcome(now: now) { targetEnded(o) }
        case .artifacts:
            guard let w = fileWait, let missing = w.check(now: now, deadline: deadline, stop: skipped) else { return }
            artifactsEnded(missing)
        case .callback, .finished:
            break
        }
    }

    /// How the target ended, or nil while it runs. (Skipped: any outcome; the skip wins.)
    func targetOutcome(now: Double) -> WatchTargetOutcome? {
        switch spec.target {
        case let .stage(e):
            if e.isFinished, let res = e.result {
                var detail = "stage \(e.spec.id) \(res.status.rawValue)"
                if let x = res.exit { detail += " (exit \(x))" }
                result.stageStatus = res.status
                if !res.dry && !res.replayed { spec.onStageEnded?(res) }
                if !res.ok { stageFailed = res }
                return .exited(exit: res.exit, signal: res.signal, detail: detail)
            }
        case let .pid(p):
            if pidfd >= 0, Self.readable(pidfd) { return Self.reap(pid_t(p)) }
        case let .pattern(p):
            if now >= nextPoll {
                nextPoll = now + min(spec.readyPoll, 1)
                let matches = ProcessTable.matching(p) ?? []
                if matches.isEmpty {
                    let was = firstMatches.map(String.init).joined(separator: ", ")
                    return .exited(exit: nil, signal: nil, detail: firstMatches.isEmpty ? "no process matches '\(p)'"
                                   : "no process matches '\(p)' any more (was \(was))")
                }
            }
        case let .file(f):
            guard let w = fileWait, let missing = w.check(now: now, deadline: deadline, stop: skipped) else { break }
            return missing.isEmpty ? .exited(exit: nil, signal: nil, detail: "file \(f) appeared") : .timedOut
        case .nothing:
            return .exited(exit: nil, signal: nil, detail: "nothing to wait for")
        }
        if skipped || now >= deadline { return .timedOut }
        return nil
    }

    static func readable(_ fd: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) > 0
    }

    /// The watched process has ended: its status if it was our child.
    static func reap(_ pid: pid_t) -> WatchTargetOutcome {
        var st: Int32 = 0
        guard waitpid(pid, &st, WNOHANG) == pid else {
            return .exited(exit: nil, signal: nil, detail: "process \(pid) exited")
        }
        switch Termination(waitStatus: st) {
        case let .exited(c): return .exited(exit: c, signal: nil, detail: "process \(pid) exited with code \(c)")
        case let .signaled(s): return .exited(exit: nil, signal: s, detail: "process \(pid) was killed by signal \(s)")
        }
    }

    func targetEnded(_ outcome: WatchTargetOutcome) {
        phaseNumber += 1
        if pidfd >= 0 { close(pidfd); pidfd = -1 }
        fileWait = nil
        guard context.fatal == nil else { return finish() }
        if context.skipRequests.remove(spec.id) != nil { return skip() }
        switch outcome {
        case .interrupted:
            return  // (the loop's: `interrupted()`)
        case .timedOut:
            let what: String
            if case .file = spec.target {
                what = "\(spec.target.text) did not appear within timeoutSec = \(plain(spec.timeout))"
            } else {
                what = "\(spec.target.text) still running after timeoutSec = \(plain(spec.timeout))"
            }
            life.move(.failed, what)
            return finish(failure: "watch '\(spec.id)': \(what)")
        case let .exited(exit, signal, detail):
            result.exit = exit
            result.signal = signal
            life.move(.exited, detail)
        }
        if let res = stageFailed, stageFailureEnds(res) { return }
        awaitArtifacts()
    }

    /// A failed stage will not write what is still missing: no waiting. Its callback, if
    /// there is one, handles the failure when nothing is missing (a wrapper that always
    /// writes its metrics) or when onMissing = "callback"; otherwise the watch is failed
    /// (or blocked, with onMissing = "block") at once. True when that ended the watch.
    func stageFailureEnds(_ res: StageResult) -> Bool {
        let missingNow = spec.requireFiles.filter { (FileIO.size($0) ?? 0) == 0 }
        if spec.callback != nil && (missingNow.isEmpty || spec.onMissing == .callback) { return false }
        var what = "stage \(res.id) \(res.status.rawValue)" + (res.exit.map { " with exit code \($0)" } ?? "")
            + (res.signal.map { " (signal \($0))" } ?? "")
        if !missingNow.isEmpty {
            what += "; required file\(missingNow.count == 1 ? "" : "s") missing: \(missingNow.joined(separator: ", "))"
        }
        let details = WatchDetails(stage: .init(id: res.id, status: res.status, exit: res.exit), missing: missingNow)
        result.files = spec.requireFiles
        result.missing = missingNow
        switch spec.onMissing {
        case .block:
            life.move(.blocked, what, details: details)
            finish()
        case .fail, .callback:
            life.move(.failed, what, details: details)
            finish(failure: "watch '\(spec.id)': \(what)")
        }
        return true
    }

    // MARK: 2. its artifacts: noticed as they appear (inotify), polled as a fallback

    func awaitArtifacts() {
        let require = spec.requireFiles
        let files = WatchDetails(files: require)
        if let res = stageFailed {
            let missing = require.filter { (FileIO.size($0) ?? 0) == 0 }
            if !missing.isEmpty {
                life.move(.awaiting_artifacts,
                          "stage \(res.id) \(res.status.rawValue): not waiting for files it did not write",
                          details: files)
            }
            return artifactsChecked(missing)
        }
        if require.isEmpty { return artifactsChecked([]) }
        let n = require.count
        life.move(.awaiting_artifacts,
                  "waiting up to \(Clock.human(spec.readyTimeout)) for \(n) required file\(n == 1 ? "" : "s")",
                  details: files)
        phase = .artifacts
        deadline = Clock.monotonic() + spec.readyTimeout
        let w = FileWait(require, nonEmpty: true, poll: spec.readyPoll)
        fileWait = w
        if let missing = w.check(now: Clock.monotonic(), deadline: deadline, stop: skipped) { artifactsEnded(missing) }
    }

    func artifactsEnded(_ missing: [String]) {
        phaseNumber += 1
        fileWait = nil
        guard context.fatal == nil else { return finish() }
        if context.skipRequests.remove(spec.id) != nil {
            result.missing = missing
            return skip()
        }
        artifactsChecked(missing)
    }

    func artifactsChecked(_ missing: [String]) {
        result.files = spec.requireFiles
        result.missing = missing
        if !missing.isEmpty {
            let what = "required file\(missing.count == 1 ? "" : "s") missing after \(Clock.human(spec.readyTimeout)): "
                + missing.joined(separator: ", ")
            let details = WatchDetails(missing: missing)
            switch spec.onMissing {
            case .block:
                life.move(.blocked, what, details: details)
                return finish()
            case .fail:
                life.move(.failed, what, details: details)
                return finish(failure: "watch '\(spec.id)': \(what)")
            case .callback:
                break  // call it anyway, with the missing list
            }
        }
        guard spec.callback != nil else { return complete() }
        life.move(.callback_queued, missing.isEmpty ? "artifacts ready" : "artifacts missing; onMissing = callback")
        life.move(.callback_running, "calling the callback")
        phase = .callback
    }

    // MARK: 3. the callback, only now that the files exist (or onMissing says to go on)

    func callBack() throws {
        do {
            let fields = result.fields + [("state", .string("callback_running"))]
            result.callbackResult = try spec.callback?(.object(fields))
        } catch let e as CallbackError {
            life.move(.failed, e.reason)
            throw e.error
        }
        if cancelled {
            life.move(.failed, "interrupted in the callback")
            throw LoopInterrupted()
        }
        complete()
    }

    func complete() {
        let missing = result.missing ?? []
        let failedNote = stageFailed.map { "stage \($0.id) \($0.status.rawValue)" }
        // (What made it not ok is in the details too: `baton debug` answers the watch from them.)
        let details = WatchDetails(stage: stageFailed.map { .init(id: $0.id, status: $0.status, exit: $0.exit) },
                                   missing: missing.isEmpty ? nil : missing)
        life.move(.completed, ["done", failedNote, missing.isEmpty ? nil : "with missing artifacts"].compactMap { $0 }
            .joined(separator: "; "), details: details)
        result.ok = missing.isEmpty && stageFailed == nil
        finish(ok: result.ok)
    }

    func skip() {
        life.move(.blocked, "skipped through the control socket (:skip)")
        finish()
    }

    func finish(ok: Bool = false, failure: String? = nil) {
        phase = .finished
        result.state = life.state ?? .failed
        result.ok = ok
        result.reason = life.history.last?.1 ?? ""
        result.duration = Clock.monotonic() - began
        result.transitions = life.history.map(\.0)
        result.failure = failure
    }
}

/// Files a watch waits for: all there (`nonEmpty`: and not empty), checked when inotify
/// says a directory changed and every `poll` seconds.
final class FileWait {
    let paths: [String]
    let nonEmpty: Bool
    let poll: Double
    let watcher = FileWatcher()
    /// When the files are next looked at whatever inotify says.
    private(set) var next = 0.0

    init(_ paths: [String], nonEmpty: Bool, poll: Double) {
        self.paths = paths
        self.nonEmpty = nonEmpty
        self.poll = poll
    }

    func missing() -> [String] { paths.filter { nonEmpty ? (FileIO.size($0) ?? 0) == 0 : !FileIO.exists($0) } }

    /// The paths still missing once the wait is over (all there, the deadline passed, or
    /// `stop`), else nil.
    func check(now: Double, deadline: Double, stop: Bool) -> [String]? {
        let woken = watcher.drain()
        if !woken && now < next && now < deadline && !stop { return nil }
        next = now + poll
        let left = missing()
        if left.isEmpty || stop || now >= deadline { return left }
        watcher.arm(for: left)
        return nil
    }
}

/// Seconds as a recipe wrote them: 30, 0.5.
func plain(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d) }
