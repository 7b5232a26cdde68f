import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

func out(_ s: String) { Console.out(s) }

/// `baton runs|status|log|wait|prune|cancel|resume|check`: each returns the exit code.
/// With `--json` every answer, errors included, is one JSON document on stdout
/// (docs/cli.md): the run id is `run` everywhere, as in the journal and final.json.
public enum Commands {
    static func fail(_ message: String, json: Bool, code: ExitStatus = .usage) -> Int32 {
        Console.error(message, json: json, code: code)
    }

    static func resolve(_ root: String, _ ref: String?, json: Bool) -> RunDirectory? {
        do { return try RunStore(root: root).resolve(ref) } catch {
            _ = fail("\(error)", json: json)
            return nil
        }
    }

    /// A run a command will write in (cancel, resume, report): refused, with a message,
    /// when its directory or a file in it is a symbolic link.
    /// The exit code of the refusal, or nil when the run is Baton's own.
    static func refuseLinked(_ d: RunDirectory, json: Bool) -> Int32? {
        d.linkProblem().map { fail($0, json: json, code: .failure) }
    }



    /// How an ended run ended: a line (or with `--json` an object), and its exit code as
    /// the command's own. An orphaned run (its runner died) exits 1.
    static func outcome(_ dir: RunDirectory, json: Bool) -> Int32 {
        let info = RunInfo.load(dir, withEvents: false)
        let code = info.exitCode.map(Int32.init) ?? ExitStatus.failure.rawValue
        if json {
            out(JSON.object([("run", .string(info.id)), ("state", .string(info.state.rawValue)),
                             ("exit_code", .int(Int64(code))),
                             ("reason", info.reason.map(JSON.string) ?? .null)]).encoded())
        } else {
            var line = "run \(info.id) \(info.state.rawValue) (exit \(code))"
            if info.state == .orphaned { line += ": its runner died without writing final.json" }
            else if let r = info.reason { line += ": \(r)" }
            out(SafeText.line(line))
        }
        return code
    }

    /// Whether the run's runner is (still) at work: it holds the lock, or a detached one
    /// has not taken it yet.
    static func isLive(_ dir: RunDirectory) -> Bool {
        FileLock.isHeld(dir.lock) || RunInfo.load(dir, withEvents: false).state == .starting
    }








}

