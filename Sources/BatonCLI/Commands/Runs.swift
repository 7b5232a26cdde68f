import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct RunsCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "runs", abstract: "List runs, newest first.")
    @Option(name: .customShort("n"), help: ArgumentHelp("At most N runs.", valueName: "N")) var limit: Int?
    @Option(help: ArgumentHelp("Only runs in this state.", valueName: "STATE")) var state: RunInfo.State?
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    func validate() throws { if let n = limit, n < 0 { throw ValidationError("runs: -n must be 0 or more, not \(n)") } }

    mutating func run() throws { Glibc.exit(Commands.runs(root: root, json: json.json, limit: limit, state: state)) }
}

extension RunInfo.State: ExpressibleByArgument {}

extension Commands {
    /// `baton runs [-n N] [--state S]`: newest first.
    public static func runs(root: String, json: Bool, limit: Int? = nil, state: RunInfo.State? = nil) -> Int32 {
        let store = RunStore(root: root)
        var infos: [RunInfo] = []
        for id in store.ids() {
            if let limit, infos.count >= limit { break }
            let info = RunInfo.load(store.directory(id), withEvents: false)
            if state == nil || info.state == state { infos.append(info) }
        }
        if json {
            out(JSON.array(infos.map(\.json)).encoded(pretty: true))
            return ExitStatus.success.rawValue
        }
        if limit == 0 { return ExitStatus.success.rawValue }   // asked for none: nothing to say
        if infos.isEmpty {
            out(state == nil ? "no runs in \(root)" : "no \(state!.rawValue) runs in \(root)")
            return ExitStatus.success.rawValue
        }
        out(Render.runsTable(infos))
        return ExitStatus.success.rawValue
    }
}

