import ArgumentParser
import BatonBase
import BatonCore
import BatonLua
import CBatonSys
import Glibc

struct PruneCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Delete ended runs: beyond the N newest, or older than an age.",
        discussion: "A live run is never deleted; an orphaned one only with --force. Both limits together: a run "
            + "goes when it is beyond the N newest and older than the age.")
    @Option(help: ArgumentHelp("Keep the N newest runs.", valueName: "N")) var keep: Int?
    @Option(name: .customLong("older-than"),
            help: ArgumentHelp("Only runs that ended longer ago than AGE (30m, 12h, 7d, 2w).", valueName: "AGE"))
    var olderThan: Age?
    @Flag(help: "Delete orphaned runs too.") var force = false
    @Flag(name: .customLong("dry-run"), help: "Say what would be deleted; delete nothing.") var dryRun = false
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals

    func validate() throws {
        if let k = keep, k < 0 { throw ValidationError("--keep must be 0 or more") }
        if keep == nil && olderThan == nil { throw ValidationError("prune needs --keep N or --older-than AGE") }
    }

    mutating func run() throws {
        Glibc.exit(Commands.prune(root: root,
                                  keep: keep,
                                  olderThan: olderThan?.seconds,
                                  force: force,
                                  dryRun: dryRun,
                                  json: json.json))
    }
}

/// An age: a number and a unit, s, m, h, d or w (`7d`).
struct Age: ExpressibleByArgument {
    var seconds: Double
    init?(argument: String) {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800]
        guard let u = argument.last, let unit = units[u], let n = Double(argument.dropLast()), n >= 0 else {
            return nil
        }
        seconds = n * unit
    }
}

extension Commands {
    /// `baton prune --keep N / --older-than SECONDS`: deletes ended runs beyond the N newest
    /// and (or) older than the age. A live run is never deleted; an orphaned one only with `force`.
    public static func prune(root: String,
                             keep: Int?,
                             olderThan: Double?,
                             force: Bool,
                             dryRun: Bool,
                             json: Bool) -> Int32 {
        guard keep != nil || olderThan != nil else {
            return fail("prune needs --keep N or --older-than AGE", json: json)
        }
        let store = RunStore(root: root)
        var pruned: [RunInfo] = [], skipped: [(RunInfo, String)] = []
        for (i, id) in store.ids().enumerated() {
            if let keep, i < keep { continue }
            let info = RunInfo.load(store.directory(id), withEvents: false)
            if let age = olderThan, Clock.now() - (info.endedAt ?? info.startedAt ?? Clock.now()) < age { continue }
            if info.isLive { skipped.append((info, "live")); continue }
            if info.state == .orphaned && !force { skipped.append((info, "orphaned (--force deletes it)")); continue }
            if let why = store.directory(id).linkProblem() { skipped.append((info, why)); continue }
            if !dryRun {
                do { try store.remove(id) } catch { skipped.append((info, "\(error)")); continue }
            }
            pruned.append(info)
        }
        if json {
            out(JSON.object([("pruned",
                              .array(pruned.map { .object([("run", .string($0.id)),
                                                           ("state", .string($0.state.rawValue))]) })),
                             ("skipped",
                              .array(skipped.map { .object([("run", .string($0.0.id)),
                                                            ("state", .string($0.0.state.rawValue)),
                                                                       ("reason", .string($0.1))]) })),
                             ("dry_run", .bool(dryRun))]).encoded(pretty: true))
        } else {
            for p in pruned { out("\(dryRun ? "would prune" : "pruned") \(p.id) (\(p.state.rawValue))") }
            for (s, why) in skipped { out("kept \(s.id): \(why)") }
            if pruned.isEmpty && skipped.isEmpty { out("nothing to prune in \(root)") }
        }
        return ExitStatus.success.rawValue
    }
}

