import Glibc

/// Every `BATON_*` variable Baton reads, declared once: its name, what it holds, its default,
/// and one line for docs/cli.md's table (a test holds that table to this list). Code reads a
/// setting only through the accessors below, never with `getenv` of its own. Variables Baton
/// sets for stages (BATON_RUN_ID, BATON_RUN_DIR, BATON_STAGE, BATON_GATE, ...) are not
/// settings; executors declare their own settings beside their options.
public enum Settings {
    public struct Declaration: Sendable {
        public let name: String
        /// What a value is, for people: "seconds", "MiB", "path", ...
        public let kind: String
        public let defaultText: String
        public let help: String
    }

    public static let runsDir = Declaration(
        name: "BATON_RUNS_DIR", kind: "path", defaultText: ".baton/runs in the nearest .baton up",
        help: "The runs directory when `--runs-dir` is not given.")
    public static let ceilingDirs = Declaration(
        name: "BATON_CEILING_DIRS", kind: "paths (colon-separated)", defaultText: "none",
        help: "Directories the search for `.baton` never goes into or above (as GIT_CEILING_DIRECTORIES).")
    public static let executor = Declaration(
        name: "BATON_EXECUTOR", kind: "executor name", defaultText: "local",
        help: "Where stages run unless a stage or `--executor` says otherwise.")
    public static let sync = Declaration(
        name: "BATON_SYNC", kind: "batched or always", defaultText: "batched",
        help: "Journal flushes when `--sync` is not given.")
    public static let luaMemoryMB = Declaration(
        name: "BATON_LUA_MEMORY_MB", kind: "MiB", defaultText: "2048",
        help: "The most memory a recipe's Lua state may hold.")
    public static let heartbeatSec = Declaration(
        name: "BATON_HEARTBEAT_SEC", kind: "seconds", defaultText: "30",
        help: "How often a waiting run journals a heartbeat (journaled in `run_started` when set).")
    public static let stallWarnSec = Declaration(
        name: "BATON_STALL_WARN_SEC", kind: "seconds", defaultText: "600",
        help: "The run's default `stallWarnSec`: silence after which a stage is journaled as stalled.")
    public static let attachLineSec = Declaration(
        name: "BATON_ATTACH_LINE_SEC", kind: "CPU seconds", defaultText: "10",
        help: "How long one line typed at `baton attach` may run inside the run.")
    public static let traceback = Declaration(
        name: "BATON_TRACEBACK", kind: "any value", defaultText: "unset",
        help: "Print a recipe error's Lua traceback (it is always journaled at level debug).")
    public static let runsMode = Declaration(
        name: "BATON_RUNS_MODE", kind: "octal mode", defaultText: "0700",
        help: "The mode of run directories (their files get it without the x bits: 0700 makes 0600); 0750 lets a "
            + "group read runs.")
    public static let containment = Declaration(
        name: "BATON_CONTAINMENT", kind: "cgroup or subreaper", defaultText: "cgroup where possible",
        help: "How processes that leave their stage's process group are ended: a cgroup v2 per stage, or "
            + "(`subreaper`, also where cgroups cannot be made) the runner as their subreaper.")
    public static let yamlHelper = Declaration(
        name: "BATON_YAML_HELPER", kind: "path", defaultText: "baton-yaml next to baton",
        help: "The YAML helper `baton.yaml.decode` runs.")

    public static let cache = Declaration(
        name: "BATON_CACHE", kind: "1 or 0", defaultText: "0",
        help: "As `run --cache`: every stage with declared outputs uses the cache across runs unless it says `cache "
            + "= false`.")
    public static let cacheRestore = Declaration(
        name: "BATON_CACHE_RESTORE", kind: "copy or link", defaultText: "link",
        help: "How a cache hit restores outputs of 1 MiB or more: a reflink, else a hard link to the read-only "
            + "cached file (`link`), or always a copy (`copy`).")
    public static let testCachePause = Declaration(
        name: "BATON_TEST_CACHE_PAUSE", kind: "path", defaultText: "unset",
        help: "Tests only: a cache insert writes this file and waits until it is removed (30 s at most) "
            + "before its entry is renamed into place (the kill -9 test).")

    /// Every declaration, in docs/cli.md's order.
    public static let all: [Declaration] = [runsDir, ceilingDirs, executor, sync, luaMemoryMB, heartbeatSec,
                                            stallWarnSec, attachLineSec, traceback, runsMode, containment, yamlHelper,
                                            cache, cacheRestore, testCachePause]

    /// The variable's value as set (nil when unset).
    public static func raw(_ d: Declaration) -> String? {
        getenv(d.name).flatMap { String(validatingCString: $0) }
    }

    /// The value when set and not empty.
    public static func string(_ d: Declaration) -> String? {
        raw(d).flatMap { $0.isEmpty ? nil : $0 }
    }

    /// A number greater than zero, or nil (unset, empty, not a number, not positive).
    public static func positive(_ d: Declaration) -> Double? {
        string(d).flatMap(Double.init).flatMap { $0 > 0 ? $0 : nil }
    }

    public static func isSet(_ d: Declaration) -> Bool { raw(d) != nil }
}
