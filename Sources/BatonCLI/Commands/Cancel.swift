import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

enum CancelKind: OneRunKind {
    static let spec = OneRunSpec(name: "cancel",
                                 abstract: "Stop a live run (or finish an orphaned one).",
                                 perform: Commands.cancel)
}

extension Commands {
    public static func cancel(root: String, ref: String?, json: Bool) -> Int32 {
        let dir: RunDirectory
        if ref == nil {
            // No RUN: the newest live run (never the interactive shell's), else the newest
            // orphaned one (to finish it), said by name.
            let store = RunStore(root: root)
            var orphan: RunDirectory? = nil
            var live: RunDirectory? = nil
            for d in store.ids().lazy.map(store.directory) where !d.isShellRun {
                let state = RunInfo.load(d, withEvents: false).state
                if state == .running || state == .starting { live = d; break }
                if state == .orphaned, orphan == nil { orphan = d }
            }
            guard let pick = live ?? orphan else {
                return fail("no live run (and no orphaned one) to cancel in \(root)", json: json, code: .failure)
            }
            diag("cancelling run \(pick.id): the newest \(live != nil ? "live" : "orphaned") run")
            dir = pick
        } else {
            guard let d = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
            dir = d
        }
        if let refused = refuseLinked(dir, json: json) { return refused }
        func ended(_ pids: [pid_t]) {
            if !pids.isEmpty {
                diag("ended \(pids.count) process\(pids.count == 1 ? "" : "es") left by the run: "
                     + "\(pids.map(String.init).joined(separator: ", "))")
            }
        }
        do {
            switch try Recovery.cancel(dir, interrupted: { baton_signal_pending() != 0 },
                                       signalled: { diag("cancelling run \(dir.id): SIGTERM to runner pid \($0)") }) {
            case let .stopped(pid): diag("cancelled run \(dir.id): its runner (pid \(pid)) ended its stages")
            case let .killed(pid, pids):
                diag("baton: run \(dir.id)'s runner (pid \(pid)) did not stop within 120s and was killed")
                ended(pids)
            case let .finishedOrphan(pids): ended(pids)
            case let .alreadyEnded(state): diag("run \(dir.id) already ended: \(state.rawValue)")
            case let .stoppedWaiting(pid):
                return fail("stopped waiting; run \(dir.id) (runner pid \(pid)) is still ending its stages (see "
                        + "'baton status \(dir.id)')",
                            json: json, code: .interrupted)
            case .runnerUnknown:
                return fail("run \(dir.id) is live but its runner's pid is unknown", json: json, code: .failure)
            case let .notPermitted(pid):
                return fail("cannot cancel run \(dir.id): signalling its runner (pid \(pid)) is not permitted "
                        + "(EPERM: it runs as another user); nothing was done",
                            json: json, code: .failure)
            }
        } catch {
            return fail("cannot finish run \(dir.id): \(error)", json: json, code: .failure)
        }
        let after = RunInfo.load(dir, withEvents: false)
        if json { out(after.json.encoded(pretty: true)) } else { out("run \(dir.id) \(after.state.rawValue)") }
        return ExitStatus.success.rawValue
    }
}

