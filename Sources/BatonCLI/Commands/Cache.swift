import ArgumentParser
import BatonBase
import BatonCore
import Glibc

/// `baton cache ls | gc --max-size SIZE | clear`: the cache across runs (`.baton/cache`).
struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "The cache across runs: list, shrink or empty it.",
        discussion: "Stages with `cache = true` (or every stage that declares outputs, with `baton run --cache`) "
            + "store their outputs in .baton/cache beside the runs directory; a later call with the same fingerprint " +
                "restores them instead of running (docs/guide.md).",
        subcommands: [CacheLs.self, CacheGC.self, CacheClear.self])
}

struct CacheLs: RunsDirCommand {
    static let configuration = CommandConfiguration(commandName: "ls",
                                                    abstract: "List cache entries, most recently used first.")
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals
    mutating func run() throws { Glibc.exit(Commands.cacheLs(root: root, json: json.json)) }
}

struct CacheGC: RunsDirCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove what no entry uses, then least recently used entries until the cache fits SIZE.")
    @Option(name: .customLong("max-size"),
            help: ArgumentHelp("The most the cache may hold: 10G, 500M, 64K, or bytes.", valueName: "SIZE"))
    var maxSize: ByteSize
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals
    mutating func run() throws { Glibc.exit(Commands.cacheGC(root: root, maxSize: maxSize.bytes, json: json.json)) }
}

struct CacheClear: RunsDirCommand {
    static let configuration = CommandConfiguration(commandName: "clear",
                                                    abstract: "Remove every cache entry and object.")
    @OptionGroup var json: JSONFlag
    @OptionGroup var globals: Globals
    mutating func run() throws { Glibc.exit(Commands.cacheClear(root: root, json: json.json)) }
}

/// A size: bytes, or a number with K, M, G or T (powers of 1024).
struct ByteSize: ExpressibleByArgument {
    var bytes: Int64
    init?(argument: String) {
        var a = argument.uppercased()
        if a.hasSuffix("IB") { a.removeLast(2) } else if a.hasSuffix("B") { a.removeLast() }
        let units: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
        var mult = 1.0
        if let u = a.last, let m = units[u] { mult = m; a.removeLast() }
        guard let n = Double(a), n >= 0 else { return nil }
        bytes = Int64(n * mult)
    }
}

func humanBytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), i = 0
    while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(n) B" : "\(Double(Int(v * 10 + 0.5)) / 10) \(units[i])"
}

extension Commands {
    static func cacheLs(root: String, json: Bool) -> Int32 {
        let store = CacheStore(runsDir: root)
        let all = store.list()
        if json {
            out(JSON.object([("dir", .string(store.root)), ("size", .int(store.objectsSize())),
                             ("entries", .array(all.map { l in
                .object([("key", .string(l.entry.key)), ("run", .string(l.entry.from.run)),
                         ("id", .string(l.entry.from.id)),
                         ("occurrence", .int(Int64(l.entry.from.occurrence))), ("size", .int(l.size)),
                         ("created", .string(Clock.rfc3339(l.entry.created))),
                         ("last_used", .string(Clock.rfc3339(l.lastUsed))),
                         ("outputs", .object(l.entry.outputs.map { ($0.path, .string($0.hash)) }))])
            }))]).encoded(pretty: true))
            return 0
        }
        if all.isEmpty { out("the cache is empty (\(store.root))"); return 0 }
        var rows = [["KEY", "STAGE", "RUN", "SIZE", "LAST USED", "OUTPUTS"]]
        for l in all {
            let stage = l.entry.from.id + (l.entry.from.occurrence > 1 ? " #\(l.entry.from.occurrence)" : "")
            rows.append([String(l.entry.key.prefix(12)), stage, l.entry.from.run, humanBytes(l.size),
                         String(Clock.rfc3339(l.lastUsed).prefix(19)),
                         l.entry.outputs.map(\.path).joined(separator: ", ")])
        }
        out(Render.table(rows))
        out("\(all.count) entr\(all.count == 1 ? "y" : "ies"), \(humanBytes(store.objectsSize())) in \(store.root)")
        return 0
    }

    static func cacheGC(root: String, maxSize: Int64, json: Bool) -> Int32 {
        let store = CacheStore(runsDir: root)
        do {
            let (removed, size) = try store.gc(maxSize: maxSize)
            if json {
                out(JSON.object([("removed", .int(Int64(removed))), ("size", .int(size)),
                                 ("max_size", .int(maxSize))]).encoded(pretty: true))
            } else {
                out("removed \(removed) entr\(removed == 1 ? "y" : "ies"); the cache holds \(humanBytes(size)) (at "
                    + "most \(humanBytes(maxSize)))")
            }
            return 0
        } catch { return fail("cache gc: \(error)", json: json, code: .failure) }
    }

    static func cacheClear(root: String, json: Bool) -> Int32 {
        let store = CacheStore(runsDir: root)
        do {
            let n = try store.clear()
            if json { out(JSON.object([("removed", .int(Int64(n)))]).encoded(pretty: true)) } else {
                out("removed \(n) entr\(n == 1 ? "y" : "ies") from \(store.root)")
            }
            return 0
        } catch { return fail("cache clear: \(error)", json: json, code: .failure) }
    }
}

/// `baton __inputs [--runs-dir D] PATTERN...`: resolves declared inputs in the current
/// directory as a stage would (globs, the runs directory's stat cache) and prints the file
/// count, the digest and the milliseconds it took. For scripts/bench; not for people.
struct InputsCommand: RunsDirCommand {
    static let configuration = CommandConfiguration(commandName: "__inputs", shouldDisplay: false)
    @Argument var patterns: [String]
    @OptionGroup var globals: Globals

    mutating func run() throws {
        let t0 = Clock.monotonic()
        let files = StatCache(runsDir: root)
        files.preload()
        let t1 = Clock.monotonic()
        do {
            let never = [FileIO.absolute(root), CacheStore(runsDir: root).root]
            let m = try FileGlob.match(patterns, base: FileIO.currentDirectory(), never: never)
            let t2 = Clock.monotonic()
            let set = try FileGlob.hash(m, cache: files)
            let t3 = Clock.monotonic()
            files.save()
            func ms(_ a: Double, _ b: Double) -> String { String(Int((b - a) * 10000)) + "e-1 ms" }
            out("\(set.files.count) files, digest \(set.digest), \(Int((Clock.monotonic() - t0) * 1000)) ms, "
                + "\(files.hits) from the stat cache"
                + " (load \(ms(t0, t1)), match \(ms(t1, t2)) for \(m.count), hash \(ms(t2, t3)))")
            Glibc.exit(0)
        } catch {
            Glibc.exit(Commands.fail("\(error)", json: false, code: .failure))
        }
    }
}
