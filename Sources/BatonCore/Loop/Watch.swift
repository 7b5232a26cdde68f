import BatonBase
import CBatonSys
import Glibc

/// Notices files as they appear: inotify on the nearest existing ancestor of each
/// missing path (re-armed as directories appear), with polling as the fallback.
public final class FileWatcher {
    public let fd: Int32
    private var watched: Set<String> = []

    public init() {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Arms watches so that the creation of any of `paths` wakes a poll on `fd`.
    public func arm(for paths: [String]) {
        guard fd >= 0 else { return }
        for p in paths {
            var dir = FileIO.dirname(p)
            while !FileIO.isDirectory(dir), dir != "/", dir != "." { dir = FileIO.dirname(dir) }
            if watched.contains(dir) { continue }
            let mask = UInt32(IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB)
            if inotify_add_watch(fd, dir, mask) >= 0 { watched.insert(dir) }
        }
    }

    /// Reads every pending event; true if there was any.
    @discardableResult
    public func drain() -> Bool {
        guard fd >= 0 else { return false }
        var buf = [UInt8](repeating: 0, count: 8192)
        var any = false
        while read(fd, &buf, buf.count) > 0 { any = true }
        return any
    }
}

/// One process's line of /proc/<pid>/stat: its name (which may hold spaces and parentheses:
/// the fields start after the last ')'), state, parent and process group.
public struct ProcStat {
    public let name: String
    public let state: Character
    public let ppid: pid_t
    public let pgrp: pid_t
    /// A zombie, or dead and not yet gone from /proc.
    public var isDead: Bool { state == "Z" || state == "X" }

    public static func read(_ pid: pid_t) -> ProcStat? {
        guard let s = try? FileIO.readString("/proc/\(pid)/stat"), let close = s.lastIndex(of: ")") else { return nil }
        let f = s[s.index(after: close)...].split(separator: " ")
        guard f.count > 2, let state = f[0].first, let ppid = pid_t(f[1]), let pgrp = pid_t(f[2]) else { return nil }
        let open = s.firstIndex(of: "(").map { s.index(after: $0) } ?? close
        return ProcStat(name: String(s[open..<close]), state: state, ppid: ppid, pgrp: pgrp)
    }
}

/// Processes by command line, as `pgrep -f` sees them, never counting Baton's own
/// process tree (the runner and its stages' shells would otherwise match themselves).
public enum ProcessTable {
    public struct Regex {
        var re = regex_t()
        public init?(_ pattern: String) {
            guard regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) == 0 else { return nil }
        }
        public mutating func matches(_ s: String) -> Bool { regexec(&re, s, 0, nil, 0) == 0 }
        public mutating func free() { regfree(&re) }
    }

    public static func commandLine(_ pid: pid_t) -> String? {
        guard let b = try? FileIO.readFile("/proc/\(pid)/cmdline", limit: 1 << 16), !b.isEmpty else { return nil }
        var s = b
        if s.last == 0 { s.removeLast() }
        return String(decoding: s.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
    }

    static func parent(_ pid: pid_t) -> pid_t? { ProcStat.read(pid)?.ppid }

    /// Pids whose command line matches `pattern`, excluding `exclude` and its descendants.
    public static func matching(_ pattern: String, excludingTreeOf exclude: pid_t = getpid()) -> [pid_t]? {
        guard var re = Regex(pattern) else { return nil }
        defer { re.free() }
        var out: [pid_t] = []
        for name in FileIO.list("/proc") {
            guard let pid = pid_t(name), pid != exclude else { continue }
            guard let cmd = commandLine(pid), re.matches(cmd) else { continue }
            // Walk up: is it ours?
            var p: pid_t? = pid, ours = false, hops = 0
            while let q = p, q > 1, hops < 64 { if q == exclude { ours = true; break }; p = parent(q); hops += 1 }
            if !ours && !Survivors.isZombie(pid) { out.append(pid) }
        }
        return out.sorted()
    }

    /// The self-match guard: would `pgrep -f pattern`, run by a watcher, match the
    /// watcher's own command line (or its shell's)? Returns the offending command line.
    public static func selfMatch(_ pattern: String) -> String? {
        guard var re = Regex(pattern) else { return nil }
        defer { re.free() }
        let candidates = [
            "pgrep -f \(pattern)",
            "/bin/sh -c while pgrep -f '\(pattern)' >/dev/null; do sleep 5; done",
            "bash -c pgrep -f \"\(pattern)\"",
        ]
        return candidates.first { re.matches($0) }
    }
}

/// The lifecycle of one watch, each transition journaled with its reason:
/// queued → running → exited → awaiting_artifacts → callback_queued → callback_running → completed,
/// or blocked / failed.
public final class WatchLifecycle {
    public let id: String
    unowned let context: RunContext
    public private(set) var state: WatchState?
    public private(set) var history: [(WatchState, String)] = []

    public init(id: String, context: RunContext) { self.id = id; self.context = context }

    public func move(_ to: WatchState, _ reason: String, details: WatchDetails = .none) {
        // (A terminal transition is flushed before `record` returns: its durability is `.now`.)
        context.record(.watch(WatchTransition(id: id, from: state, to: to, reason: reason, details: details)))
        state = to
        history.append((to, reason))
    }
}

/// What the watched thing did.
public enum WatchTargetOutcome: Equatable {
    case exited(exit: Int32?, signal: Int32?, detail: String)
    case timedOut
    case interrupted
}
