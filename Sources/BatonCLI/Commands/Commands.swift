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
}
