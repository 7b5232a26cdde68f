import BatonBase
import Glibc

/// A run's side of declared inputs and outputs: the stat cache (in the runs directory), the
/// cache across runs (`.baton/cache` beside it), and whether `run --cache` is on.
public final class StageFilesState {
    public let runsDir: String
    public let store: CacheStore
    public lazy var statCache = StatCache(runsDir: runsDir)
    /// `baton run --cache` (BATON_CACHE=1): every stage with declared outputs uses the cache
    /// unless it says `cache = false`.
    public var cacheAll = Settings.string(Settings.cache).map { $0 != "0" && $0 != "false" } ?? false

    init(runDir: RunDirectory) {
        runsDir = FileIO.dirname(runDir.path)
        store = CacheStore(runsDir: runsDir)
    }

    /// Never inputs: the runs directory and the cache.
    var never: [String] { [FileIO.absolute(runsDir), store.root] }

    /// Writes the stat cache at most once a second while a run resolves inputs (a fan-out of
    /// a thousand stages would otherwise rewrite it a thousand times), and at the run's end.
    var lastSave = 0.0
    func saveStatCache(force: Bool = false) {
        guard resolved else { return }
        let now = Clock.monotonic()
        if force || now - lastSave >= 1 { statCache.save(); lastSave = now }
    }
    var resolved = false
    /// Inserts into the cache still under way (each a `ThreadTask` on the loop), by key: a
    /// lookup of a key being stored waits for it rather than run the stage again.
    var pendingInserts: [String: Int] = [:]
}

extension RunContext {
    /// Resolves a stage's declared inputs (globs, through the stat cache) into the spec, so its
    /// fingerprint holds their content; keeps the manifest for resume's "which files changed".
    /// Not in a dry run (an earlier stage, which does not run, may be what makes them).
    public func resolveInputs(_ spec: inout StageSpec) throws {
        guard !spec.inputs.isEmpty, !dryRun else { return }
        let set = try FileGlob.resolve(spec.inputs, base: spec.resolvedCwd, never: files.never, cache: files.statCache)
        files.resolved = true
        files.saveStatCache()
        spec.inputSet = set
        let m = manifestPath(set.digest)
        if !FileIO.exists(m) {
            try? FileIO.makeDirectories(FileIO.dirname(m), mode: RunDirectory.dirMode)
            try? FileIO.writeAtomically(m, set.manifest, mode: RunDirectory.fileMode)
        }
    }

    func manifestPath(_ digest: String) -> String { dir.path + "/inputs/" + digest }

    /// A resume's reason, with the input files that differ from the earlier call's.
    func inputChanges(_ why: ResumeWhy, _ exec: StageExecution, _ before: StageFinished?) -> ResumeWhy {
        guard why.reason == .changed, why.changed.contains("inputs"), let now = exec.spec.inputSet,
              let old = before?.fingerprintParts?.inputs else { return why }
        let oldFiles = old.isEmpty ? [:] : FileSet.parseManifest((try? FileIO.readFile(manifestPath(old))) ?? [])
        let d = now.diff(from: oldFiles)
        var w = why
        w.files = FileChanges(changed: d.changed, added: d.added, removed: d.removed)
        return w
    }

    func cacheOn(_ spec: StageSpec) -> Bool { !dryRun && (spec.cache ?? (files.cacheAll && !spec.outputs.isEmpty)) }

    /// With the cache on: restores the outputs of an earlier pass with the same fingerprint
    /// and finishes the call without running it. A miss is noted for the first attempt's journal.
    func answerFromCache(_ exec: StageExecution) -> Bool {
        let spec = exec.spec
        guard cacheOn(spec) else {
            if !spec.outputs.isEmpty && !dryRun { CacheStore.unshare(spec.outputs, base: spec.resolvedCwd) }
            return false
        }
        let key = SHA256.hex(spec.fingerprintText)
        let t0 = Clock.monotonic()
        if files.pendingInserts[key] != nil {
            // The same work passed moments ago and is being stored: its entry is the answer.
            _ = loop.wait(WaitLabel(.cache, "insert")) { self.files.pendingInserts[key] == nil }
        }
        let (hit, why) = files.store.lookup(key)
        guard let e = hit else {
            exec.cacheDecision = missSinceLastPass(CacheDecision(hit: false, key: key, reason: why), exec)
            CacheStore.unshare(spec.outputs, base: spec.resolvedCwd)
            return false
        }
        let logs = dir.stageLogs(spec.id, attempt: nextLogNumber(spec.id))
        do {
            try files.store.restore(e, base: spec.resolvedCwd)
            ensureStageDir(spec.id)
            for (o, p) in [(e.stdout, logs.stdout), (e.stderr, logs.stderr)] {
                if let o { try files.store.place(o, p) } else { try FileIO.writeAtomically(p, []) }
            }
        } catch {
            exec.cacheDecision = CacheDecision(hit: false,
                                               key: key,
                                               reason: "restoring \(e.from.text) failed: \(error)")
            return false
        }
        let decision = CacheDecision(hit: true, key: key, reason: "outputs restored from \(e.from.text)")
        exec.cacheDecision = decision
        var started = StageStarted(key: exec.key, attempt: 1, command: spec.command, cwd: spec.resolvedCwd,
                                   fingerprint: spec.fingerprint, logs: logs)
        started.fingerprintParts = exec.fingerprintParts
        started.why = exec.why
        started.cache = decision
        started.inputs = spec.inputSet.map(InputsRecord.init)
        record(.stageStarted(started))
        let ms = Int64((Clock.monotonic() - t0) * 1000)
        var f = StageFinished(key: exec.key,
                              attempt: 1,
                              status: .passed,
                              durationMs: ms,
                              logs: logs,
                              fingerprint: spec.fingerprint)
        f.exit = 0
        f.outputs = e.outputs.map { ($0.path, $0.hash) }
        f.cachedFrom = e.from
        record(.stageFinished(f))
        var r = StageResult(id: spec.id,
                            occurrence: exec.occurrence,
                            status: .passed,
                            attempts: 1,
                            duration: Double(ms) / 1000,
                            logs: logs)
        r.exit = 0
        r.outputs = f.outputs
        r.cachedFrom = e.from
        r.readTails()
        exec.finish(with: r)
        return true
    }

    /// A miss of a stage that passed before with another fingerprint: what differs from its
    /// latest stored pass (the parts of the fingerprint, and which input files, as a resume says).
    func missSinceLastPass(_ miss: CacheDecision, _ exec: StageExecution) -> CacheDecision {
        guard let last = files.store.lastPass(of: exec.spec.id), last.key != miss.key else { return miss }
        var d = miss
        d.since = last.from
        d.changed = exec.fingerprintParts.changed(from: last.parts)
        if d.changed.contains("inputs"), let now = exec.spec.inputSet {
            let f = now.diff(from: last.inputs)
            d.files = FileChanges(changed: f.changed, added: f.added, removed: f.removed)
        }
        return d
    }

    /// After a pass with the cache on: stores its outputs and logs under its fingerprint, on a
    /// thread of its own (`ThreadTask`: a large output takes ~1 s per GiB to copy and hash, and
    /// the loop goes on meanwhile). The run's end waits for it (`waitForInserts`). A failure
    /// to store is logged, never fatal.
    func storeInCache(_ exec: StageExecution, _ r: StageResult) {
        guard cacheOn(exec.spec), r.cachedFrom == nil, !r.replayed else { return }
        let key = SHA256.hex(exec.spec.fingerprintText)
        let job = CacheStore.Insert(key: key,
                                    from: CachedFrom(run: dir.id, id: exec.key.id, occurrence: exec.key.occurrence),
                                    outputs: exec.outputSnapshots, logs: r.logs, durationMs: Int64(r.duration * 1000),
                                    parts: exec.fingerprintParts, inputs: exec.spec.inputSet)
        final class Failure: @unchecked Sendable { var text: String? }   // written before the task ends, read after
        let (store, failure, id) = (files.store, Failure(), exec.spec.id)
        files.pendingInserts[key, default: 0] += 1
        loop.add(ThreadTask({ abandon in
            do { try store.insert(job, abandon: abandon) } catch { failure.text = "\(error)" }
        }, done: { [unowned self] abandoned in
            let left = (self.files.pendingInserts[key] ?? 1) - 1
            self.files.pendingInserts[key] = left > 0 ? left : nil
            if abandoned {
                self.log(.warn, "cache: stage '\(id)' passed but was not stored: the run ended before its insert did")
            } else if let f = failure.text {
                self.log(.warn, "cache: stage '\(id)' passed but could not be stored: \(f)")
            }
        }))
    }

    /// At the run's end: waits for the cache's inserts still under way (a signal abandons
    /// them, and each says so in the journal).
    func waitForInserts() {
        guard filesUsed, !files.pendingInserts.isEmpty else { return }
        _ = loop.wait(WaitLabel(.cache, "insert")) { self.files.pendingInserts.isEmpty }
    }
}
