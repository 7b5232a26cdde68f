import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

enum StatusKind: OneRunKind { static let spec = OneRunSpec(name: "status", abstract: "One run: state, current stage, liveness.", perform: Commands.status) }

extension Commands {
    public static func status(root: String, ref: String?, json: Bool) -> Int32 {
        guard let dir = resolve(root, ref, json: json) else { return ExitStatus.usage.rawValue }
        let info = RunInfo.load(dir)
        if json { out(info.json.encoded(pretty: true)) } else { out(Render.status(info)) }
        return ExitStatus.success.rawValue
    }
}

