import BatonBase
import CBatonSys
import Glibc

/// No process outlives its stage, even one that left its process group and session
/// (`setsid sleep 600 &`) and its environment (`setsid env -i ...`, which drops the
/// BATON_RUN_ID mark the end-of-run sweep looks for). Two mechanisms:
///
/// - **cgroup v2** (where the runner may make a child of its own cgroup): one cgroup per
///   run, one child per stage, each stage born inside its cgroup (clone3's
///   CLONE_INTO_CGROUP). When the stage ends its cgroup must be empty: what is left gets
///   SIGTERM, then `cgroup.kill` after the grace. Cancel, the budget, signals and the end of
///   the run kill the run's cgroup; after a SIGKILL of the runner the watchdog does.
///   Stage cgroups are kept in a pool and reused, so a stage costs no mkdir.
/// - **subreaper** (no usable cgroup v2, or BATON_CONTAINMENT=subreaper): the runner is the
///   child subreaper of everything it starts; when a stage ends, processes re-parented to it
///   that belong to no live stage's process group are ended, and all of them at the end of
///   the run. It cannot see a process whose parent is still alive, nor (after a SIGKILL of
///   the runner) one that also dropped the run's environment.
public final class Containment {
    public enum Mechanism: String, Sendable { case cgroup, subreaper }

    /// The runner's (set by `baton run`/`resume`); nil in the shell and in tests in-process.
    nonisolated(unsafe) public static var shared: Containment?

    /// `cgroup` until the first stage shows it cannot be (then `subreaper`).
    public private(set) var mechanism: Mechanism
    /// The run's cgroup directory (cgroup mechanism), made with the first stage.
    public private(set) var runGroup: String?
    private let runID: String
    private var prepared = false
    /// Processes of ours that are no stage's (the watchdog): never swept.
    public var helpers: Set<pid_t> = []

    public final class Group {
        public let path: String
        let fd: Int32
        init(path: String, fd: Int32) { self.path = path; self.fd = fd }
    }
    private var pool: [Group] = []
    private var made: [Group] = []

    init(mechanism: Mechanism, runID: String) {
        self.mechanism = mechanism
        self.runID = runID
    }

    /// Sets up containment for run `runID`: the runner becomes the subreaper of what it
    /// starts; the cgroup (unless BATON_CONTAINMENT=subreaper) is tried with the first stage,
    /// so a run that starts none costs nothing more (a cgroup's mkdir is ~0.4 ms here).
    public static func setUp(runID: String) -> Containment {
        _ = baton_set_subreaper()
        let want: Mechanism = Settings.string(Settings.containment) == "subreaper" ? .subreaper : .cgroup
        return Containment(mechanism: want, runID: runID)
    }

    /// Makes the run's cgroup, or falls back to the subreaper where it cannot be made
    /// (no cgroup v2, no delegation, no cgroup.kill: Linux < 5.14, no clone3). Once.
    public func prepare() {
        guard !prepared else { return }
        prepared = true
        guard mechanism == .cgroup else { return }
        if baton_spawn_cgroup_broken() == 0, let own = Self.ownCgroup() {
            let path = own + "/baton-" + runID + "-" + String(getpid())
            if mkdir(path, 0o755) == 0 || errno == EEXIST {
                if FileIO.exists(path + "/cgroup.kill") {
                    runGroup = path
                    baton_containment_set(path + "/cgroup.kill")
                    return
                }
                rmdir(path)
            }
        }
        mechanism = .subreaper
    }

    /// This process's cgroup v2 directory: the cgroup2 mount (mountinfo) joined to the
    /// `0::PATH` line of /proc/self/cgroup.
    public static func ownCgroup() -> String? {
        guard let mounts = try? FileIO.readString("/proc/self/mountinfo"),
              let cg = try? FileIO.readString("/proc/self/cgroup") else { return nil }
        var mount: String? = nil
        for line in mounts.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let f = halves[0].split(separator: " ")
            if f.count > 4 { mount = String(f[4]); break }
        }
        guard let m = mount, let line = cg.split(separator: "\n").first(where: { $0.hasPrefix("0::") }) else {
            return nil
        }
        let rel = String(line.dropFirst(3))
        return rel == "/" ? m : m + rel
    }

    // MARK: stage cgroups

    /// A stage's cgroup, empty, from the pool or made now; the next spawn is born in it.
    public func acquire() -> Group? {
        prepare()
        guard mechanism == .cgroup, let run = runGroup else { return nil }
        if let g = pool.popLast() { return g }
        let path = run + "/s\(made.count)"
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { return nil }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        let g = Group(path: path, fd: fd)
        made.append(g)
        return g
    }

    /// The next spawn's child is born in `g` (nil: where the runner is).
    public func spawnInto(_ g: Group?) { baton_spawn_into_cgroup(g?.fd ?? -1) }

    /// Whether any process is left in `g` (its cgroup.events).
    public func populated(_ g: Group) -> Bool {
        guard let b = try? FileIO.readFile(g.path + "/cgroup.events", limit: 4096) else { return false }
        return String(decoding: b, as: UTF8.self).contains("populated 1")
    }

    /// The processes in `g`.
    public func members(_ g: Group) -> [pid_t] {
        guard let b = try? FileIO.readFile(g.path + "/cgroup.procs", limit: 1 << 20) else { return [] }
        return String(decoding: b, as: UTF8.self).split(separator: "\n").compactMap { pid_t($0) }
    }

    public func terminate(_ g: Group) {
        for p in members(g) { Glibc.kill(p, SIGTERM); Glibc.kill(p, SIGCONT) }
    }

    /// SIGKILL to every process in `g` (cgroup.kill: also those forking meanwhile).
    public func kill(_ g: Group) { Self.write("1", to: g.path + "/cgroup.kill") }

    /// Back to the pool: the caller has seen it empty (its job found it so, or nothing
    /// was started in it).
    public func release(_ g: Group) { pool.append(g) }

    // MARK: the subreaper's sweep

    /// Processes re-parented to this runner that belong to no live stage's process group
    /// (and are no helper of ours): what escaped a stage that has ended.
    public func adoptedOrphans() -> [pid_t] {
        var groups = [pid_t](repeating: 0, count: 1024)
        let n = Int(baton_tracked_groups(&groups, 1024))
        let live = Set(groups.prefix(n))
        var out: [pid_t] = []
        for t in FileIO.list("/proc/self/task") {
            guard let b = try? FileIO.readFile("/proc/self/task/\(t)/children", limit: 1 << 20) else { continue }
            for w in String(decoding: b, as: UTF8.self).split(separator: " ") {
                guard let pid = pid_t(w), !helpers.contains(pid), !live.contains(pid) else { continue }
                guard let st = ProcStat.read(pid), !st.isDead, !live.contains(st.pgrp) else { continue }
                out.append(pid)
            }
        }
        return out
    }

    /// The subreaper's sweep after a stage ended: SIGKILL to what escaped (their parents are
    /// gone, their stage is over), reaped.
    public func sweepOrphans() {
        guard mechanism == .subreaper else { return }
        for p in adoptedOrphans() { Glibc.kill(p, SIGKILL); killed.insert(p) }
        reapKilled()
    }

    /// Orphans this sweep killed, reaped by pid: never waitpid(-1), which would take a live
    /// stage's exit status from its job.
    private var killed: Set<pid_t> = []
    private func reapKilled() {
        var st: Int32 = 0
        for p in killed where waitpid(p, &st, WNOHANG) != 0 { killed.remove(p) }
    }

    // MARK: the end of the run

    /// Ends every process of the run, wherever it went (the run's cgroup, or everything
    /// re-parented to the runner), waiting up to `wait` seconds for the cgroup to empty;
    /// removes the cgroups.
    public func endAll(wait: Double = 2) {
        switch mechanism {
        case .cgroup:
            guard let run = runGroup else { return }
            Self.killTree(run, wait: wait)
            baton_containment_set(nil)
        case .subreaper:
            for p in adoptedOrphans() { Glibc.kill(p, SIGKILL) }
            var st: Int32 = 0
            while waitpid(-1, &st, WNOHANG) > 0 {}
        }
    }

    /// cgroup.kill of a run's cgroup, a wait (bounded) until it is empty, then rmdir of its
    /// stage cgroups and itself. Also the watchdog's, after a SIGKILL of the runner.
    public static func killTree(_ run: String, wait: Double = 2) {
        write("1", to: run + "/cgroup.kill")
        let until = Clock.monotonic() + wait
        while Clock.monotonic() < until {
            var st: Int32 = 0
            while waitpid(-1, &st, WNOHANG) > 0 {}
            let ev = (try? FileIO.readString(run + "/cgroup.events")) ?? ""
            if !ev.contains("populated 1") { break }
            usleep(5_000)
        }
        for name in FileIO.list(run) where name.hasPrefix("s") && FileIO.isDirectory(run + "/" + name) {
            rmdir(run + "/" + name)
        }
        rmdir(run)
    }

    static func write(_ text: String, to path: String) {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        close(fd)
    }
}
