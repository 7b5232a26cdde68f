import BatonBase
import Glibc

/// The cache across runs: `.baton/cache/` beside the runs directory, content-addressed.
///
///     lock                     flock: shared while a run inserts or restores, exclusive for gc and clear
///     objects/ab/abcd...       file contents by SHA-256, read-only
///     entries/<key>.json       one passed stage call: its outputs' objects, its logs, where it came from
///     stages/<hash of the id>  a stage's latest stored pass: what a later miss names as changed
///     tmp/                     what an insert writes before it renames it into place
///
/// An insert copies (or reflinks) every output into `tmp/`, checks each copy's hash, renames
/// it into `objects/`, and only then renames the entry into `entries/`: a runner killed at any
/// point leaves no entry, so no hit. An entry carries the SHA-256 of its own text, and an
/// object whose size or mtime changed since it was recorded is hashed again before use: a
/// corrupt entry is a miss (and is removed), never a wrong hit.
public struct CacheStore: Sendable {
    public let root: String
    public init(root: String) { self.root = root }
    /// `.baton/cache` for `.baton/runs`.
    public init(runsDir: String) { root = ProjectLayout.cacheRoot(runsDir: runsDir) }

    var objects: String { root + "/objects" }
    var entries: String { root + "/entries" }
    var tmp: String { root + "/tmp" }

    func objectPath(_ hash: String) -> String { objects + "/" + hash.prefix(2) + "/" + hash }
    func entryPath(_ key: String) -> String { entries + "/" + key + ".json" }

    // MARK: locking

    /// Runs `body` holding the cache's lock (shared, or exclusive for gc and clear).
    public func locked<T>(exclusive: Bool, _ body: () throws -> T) throws -> T {
        try FileIO.makeDirectories(root)
        let lock = try FileLock.block(root + "/lock", shared: !exclusive)
        defer { lock.release() }
        return try body()
    }

    // MARK: entries

    public struct Entry {
        public struct Object {
            public var rel: String
            public var hash: String
            public var size: Int64
            public var mtime: Int64
            public var exec: Bool
        }
        public struct Output {
            public var path: String
            public var isDir: Bool
            public var hash: String
            public var files: [Object]
        }
        public var key: String
        public var from: CachedFrom
        public var created: Double
        public var outputs: [Output]
        public var stdout: Object?
        public var stderr: Object?
        public var durationMs: Int64

        var json: JSON {
            func obj(_ o: Object) -> JSON {
                .object([("rel", .string(o.rel)), ("hash", .string(o.hash)), ("size", .int(o.size)),
                         ("mtime", .int(o.mtime)), ("exec", .bool(o.exec))])
            }
            var f: [(String, JSON)] = [("v", .int(1)), ("key", .string(key)), ("from", from.json),
                                       ("created", .double(created)),
                                       ("duration_ms", .int(durationMs))]
            f.append(("outputs", .array(outputs.map { o in
                .object([("path", .string(o.path)), ("dir", .bool(o.isDir)), ("hash", .string(o.hash)),
                         ("files", .array(o.files.map(obj)))])
            })))
            if let s = stdout { f.append(("stdout", obj(s))) }
            if let s = stderr { f.append(("stderr", obj(s))) }
            return .object(f)
        }

        init(key: String,
             from: CachedFrom,
             created: Double,
             outputs: [Output],
             stdout: Object?,
             stderr: Object?,
             durationMs: Int64) {
            self.key = key; self.from = from; self.created = created; self.outputs = outputs
            self.stdout = stdout; self.stderr = stderr; self.durationMs = durationMs
        }

        init?(_ j: JSON) {
            func obj(_ j: JSON?) -> Object? {
                guard let j, let h = j["hash"]?.stringValue else { return nil }
                return Object(rel: j["rel"]?.stringValue ?? "", hash: h, size: j["size"]?.intValue ?? 0,
                              mtime: j["mtime"]?.intValue ?? 0, exec: j["exec"]?.boolValue ?? false)
            }
            guard let k = j["key"]?.stringValue, let from = CachedFrom(j["from"]),
                  let outs = j["outputs"]?.arrayValue else {
                return nil
            }
            var outputs: [Output] = []
            for o in outs {
                guard let p = o["path"]?.stringValue, let h = o["hash"]?.stringValue,
                      let fs = o["files"]?.arrayValue else {
                    return nil
                }
                let files = fs.compactMap(obj)
                guard files.count == fs.count else { return nil }
                outputs.append(Output(path: p, isDir: o["dir"]?.boolValue ?? false, hash: h, files: files))
            }
            self.init(key: k, from: from, created: j["created"]?.doubleValue ?? 0, outputs: outputs,
                      stdout: obj(j["stdout"]), stderr: obj(j["stderr"]), durationMs: j["duration_ms"]?.intValue ?? 0)
        }

        var objects: [Object] { outputs.flatMap(\.files) + [stdout, stderr].compactMap { $0 } }
        public var size: Int64 { objects.reduce(0) { $0 + $1.size } }
    }

    /// Reads an entry: nil when absent; throws (with why) when it is corrupt.
    func read(_ key: String) throws -> Entry? {
        guard let bytes = try? FileIO.readFile(entryPath(key)) else { return nil }
        return try parse(bytes)
    }

    func parse(_ bytes: [UInt8]) throws -> Entry {
        // body line, then the SHA-256 of the body
        guard let nl = bytes.firstIndex(of: 10), bytes.count >= nl + 65 else {
            throw FileSetError("entry is truncated")
        }
        let body = Array(bytes[0..<nl])
        let sum = String(decoding: bytes[(nl + 1)..<(nl + 65)], as: UTF8.self)
        guard SHA256.hex(body) == sum else { throw FileSetError("entry does not match its checksum") }
        guard let j = try? JSON.parse(body), let e = Entry(j) else { throw FileSetError("entry is not readable") }
        return e
    }

    /// Checks that every object an entry names is there and unchanged (size, and mtime or hash).
    func verify(_ e: Entry) throws {
        for o in e.objects {
            let p = objectPath(o.hash)
            var st = stat()
            guard stat(p, &st) == 0 else { throw FileSetError("object \(o.hash.prefix(12)) is missing") }
            guard Int64(st.st_size) == o.size else {
                throw FileSetError("object \(o.hash.prefix(12)) has the wrong size")
            }
            // Small objects are always hashed again; large ones when their mtime moved.
            if o.size < 8 << 20 || StatCache.nanos(st.st_mtim) != o.mtime {
                guard (try? Hashing.file(p).hash) == o.hash else {
                    unlink(p)
                    throw FileSetError("object \(o.hash.prefix(12)) does not match its hash")
                }
            }
        }
    }

    /// The hit for `key`, verified; or nil and why not.
    public func lookup(_ key: String) -> (Entry?, String) {
        do {
            return try locked(exclusive: false) {
                guard let e = try read(key) else { return (nil, "no earlier pass with this fingerprint") }
                do { try verify(e) } catch {
                    unlink(entryPath(key))
                    return (nil, "entry from \(e.from.text) is corrupt (\(error)); removed")
                }
                // Least recently used goes first in gc: a hit is a use.
                utimensat(AT_FDCWD, entryPath(key), nil, 0)
                return (e, "outputs of \(e.from.text)")
            }
        } catch let e as FileSetError {
            unlink(entryPath(key))
            return (nil, "entry is corrupt (\(e)); removed")
        } catch {
            return (nil, "cache unavailable: \(error)")
        }
    }

    // MARK: restore

    /// Puts an entry's outputs in place under `base`: a reflink or (for large files) a hard
    /// link to the read-only object when the filesystem allows, a copy otherwise.
    public func restore(_ e: Entry, base: String) throws {
        for o in e.outputs {
            let dest = FileIO.join(base, FileGlob.split(o.path).joined(separator: "/"))
            var st = stat()
            if o.isDir {
                if lstat(dest, &st) == 0 { try FileIO.removeTree(dest) }
                try FileIO.makeDirectories(dest)
                for f in o.files { try place(f, FileIO.join(dest, f.rel)) }
            } else {
                if lstat(dest, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { try FileIO.removeTree(dest) }
                try place(o.files[0], dest)
            }
        }
    }

    /// Restores one object at `dest` (temp name, then rename: never half a file).
    func place(_ o: Entry.Object, _ dest: String) throws {
        try FileIO.makeDirectories(FileIO.dirname(dest))
        let src = objectPath(o.hash)
        let t = dest + ".baton-restore-\(getpid())"
        unlink(t)
        var done = false
        if o.size >= 1 << 20 && !o.exec && CacheStore.restoreMode != "copy" {
            done = try CacheStore.reflink(src, t, mode: 0o644) || link(src, t) == 0
        }
        if !done { try CacheStore.copy(src, t, mode: o.exec ? 0o755 : 0o644, expect: nil) }
        if rename(t, dest) != 0 { unlink(t); throw SystemError("rename", dest) }
        // rename(2) does nothing when both names are links to the same inode (dest already
        // was this object): the temporary name would stay.
        unlink(t)
    }

    /// Before a stage with declared outputs runs for real: an output an earlier hit restored as
    /// a hard link to the cache's read-only copy becomes a file of its own (same bytes,
    /// writable), so the stage can rewrite it in place and the cache's copy stays as it was.
    public static func unshare(_ outputs: [String], base: String) {
        for o in outputs {
            let abs = FileIO.join(base, FileGlob.split(o).joined(separator: "/"))
            var st = stat()
            guard lstat(abs, &st) == 0 else { continue }
            let files = (st.st_mode & S_IFMT) == S_IFDIR
                ? ((try? FileGlob.match(["?**"], base: abs, never: [])) ?? []).map(\.abs)
                : [abs]
            for f in files {
                guard lstat(f, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink > 1,
                      st.st_mode & 0o222 == 0 else {
                    continue
                }
                let t = f + ".baton-unshare-\(getpid())"
                if (try? copy(f, t, mode: 0o644, expect: nil)) != nil, rename(t, f) == 0 { continue }
                unlink(t)
            }
        }
    }

    /// BATON_CACHE_RESTORE=copy: always copy (never share an inode with the cache).
    static var restoreMode: String { Settings.string(Settings.cacheRestore) ?? "link" }

    /// A copy-on-write clone (btrfs, XFS); false where the filesystem cannot.
    static func reflink(_ src: String, _ dst: String, mode: mode_t) throws -> Bool {
        let s = open(src, O_RDONLY | O_CLOEXEC)
        if s < 0 { throw SystemError("open", src) }
        defer { close(s) }
        let d = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if d < 0 { throw SystemError("open", dst) }
        let ok = ioctl(d, 0x4004_9409, s) == 0     // FICLONE
        close(d)
        if !ok { unlink(dst) }
        return ok
    }

    /// Copies `src` to a new file `dst`, hashing what it copies; throws when `expect` is given
    /// and the copy's hash differs (the source changed meanwhile).
    @discardableResult
    static func copy(_ src: String, _ dst: String, mode: mode_t, expect: String?,
                     abandon: ThreadTask.Flag? = nil) throws -> String {
        let s = open(src, O_RDONLY | O_CLOEXEC)
        if s < 0 { throw SystemError("open", src) }
        defer { close(s) }
        let d = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        if d < 0 { throw SystemError("open", dst) }
        defer { close(d) }
        let h = SHA256Hasher()
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buf.deallocate() }
        while true {
            let n = Glibc.read(s, buf.baseAddress, buf.count)
            if n < 0 { if errno == EINTR { continue }; throw SystemError("read", src) }
            if n == 0 { break }
            if abandon?.isSet == true { throw FileSetError("abandoned: the run ended first") }
            let chunk = UnsafeRawBufferPointer(rebasing: buf[0..<n])
            if expect != nil { h.update(chunk) }
            try FileIO.writeAll(d, chunk, path: dst)
        }
        fchmod(d, mode)
        if let want = expect {
            let got = h.finalHex()
            if got != want {
                throw FileSetError("\(src) changed while it was stored (hash \(got.prefix(12)), expected "
                        + "\(want.prefix(12)))")
            }
            return got
        }
        return ""
    }

    // MARK: insert

    /// Test hook: BATON_TEST_CACHE_PAUSE=FILE makes an insert write FILE and wait (30 s at most)
    /// until it is removed, before its entry is renamed into place (the kill -9 test, and the
    /// test that an insert does not hold up the run).
    static var pauseFile: String? { Settings.string(Settings.testCachePause) }

    /// One insert: what a passed stage call leaves (its outputs as hashed after it exited, its
    /// logs) and what a later miss compares with (its fingerprint's parts, its inputs). Gathered
    /// on the loop's thread; the insert itself runs on a thread of its own (`ThreadTask`).
    public struct Insert: Sendable {
        public var key: String
        public var from: CachedFrom
        public var outputs: [OutputSnapshot]
        public var logs: StageLogs
        public var durationMs: Int64
        public var parts: FingerprintParts
        public var inputs: FileSet?
        var pause = CacheStore.pauseFile
    }

    /// Stores a passed stage call's outputs and logs, then its entry, then the stage's latest
    /// pass. `abandon` (the run ends first) stops it between blocks: no entry, so no hit.
    func insert(_ job: Insert, abandon: ThreadTask.Flag? = nil) throws {
        try locked(exclusive: false) {
            try FileIO.makeDirectories(tmp)
            try FileIO.makeDirectories(entries)
            var outs: [Entry.Output] = []
            for o in job.outputs {
                var files: [Entry.Object] = []
                for f in o.files {
                    var obj = try storeObject(f.abs, hash: f.hash, exec: f.exec, abandon: abandon)
                    obj.rel = f.rel
                    files.append(obj)
                }
                outs.append(Entry.Output(path: o.path, isDir: o.isDir, hash: o.hash, files: files))
            }
            func log(_ p: String) -> Entry.Object? {
                guard !p.isEmpty, let h = try? Hashing.file(p).hash else { return nil }
                return try? storeObject(p, hash: h, exec: false, abandon: abandon)
            }
            let e = Entry(key: job.key, from: job.from, created: Clock.now(), outputs: outs,
                          stdout: log(job.logs.stdout), stderr: log(job.logs.stderr), durationMs: job.durationMs)
            let body = Array(e.json.encoded().utf8)
            let text = body + [10] + Array(SHA256.hex(body).utf8) + [10]
            let t = tmp + "/entry-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            defer { unlink(t) }
            try FileIO.writeAtomically(t, text)
            if let p = job.pause { CacheStore.holdUp(p, abandon) }
            if abandon?.isSet == true { throw FileSetError("abandoned: the run ended first") }
            if rename(t, entryPath(job.key)) != 0 { throw SystemError("rename", entryPath(job.key)) }
            try? writeLastPass(job)
        }
    }

    /// Copies (or reflinks) one file into `objects/` under its hash, checking the copy's hash
    /// as it is made: an output changed since it was hashed is not stored.
    func storeObject(_ abs: String, hash h: String, exec: Bool, abandon: ThreadTask.Flag?) throws -> Entry.Object {
        var st = stat()
        func object() -> Entry.Object {
            Entry.Object(rel: "", hash: h, size: Int64(st.st_size), mtime: StatCache.nanos(st.st_mtim), exec: exec)
        }
        if stat(objectPath(h), &st) == 0 { return object() }
        let t = tmp + "/obj-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(t) }
        if !((try? CacheStore.reflink(abs, t, mode: 0o444)) == true && (try? Hashing.file(t).hash) == h) {
            unlink(t)
            try CacheStore.copy(abs, t, mode: 0o444, expect: h, abandon: abandon)
        }
        let dest = objectPath(h)
        try FileIO.makeDirectories(FileIO.dirname(dest))
        if rename(t, dest) != 0 { throw SystemError("rename", dest) }
        stat(dest, &st)
        return object()
    }

    /// The test hook's wait: writes `file` and waits until it is gone (30 s at most).
    static func holdUp(_ file: String, _ abandon: ThreadTask.Flag?) {
        try? FileIO.writeAtomically(file, Array("\(getpid())\n".utf8))
        let until = Clock.monotonic() + 30
        while FileIO.exists(file) && Clock.monotonic() < until && abandon?.isSet != true { usleep(20_000) }
    }

    // MARK: a stage's latest pass (what a miss names)

    /// `stages/<SHA-256 of the stage id>`: the latest stored pass of a stage (one per id), a JSON
    /// line (key, where from, the fingerprint's parts) then its inputs' manifest.
    func lastPassPath(_ id: String) -> String { root + "/stages/" + SHA256.hex(Array(id.utf8)) }

    func writeLastPass(_ job: Insert) throws {
        let head: JSON = .object([("key", .string(job.key)), ("from", job.from.json), ("parts", job.parts.json)])
        let p = lastPassPath(job.from.id)
        try FileIO.makeDirectories(FileIO.dirname(p))
        try FileIO.writeAtomically(p, Array(head.encoded().utf8) + [10] + (job.inputs?.manifest ?? []))
    }

    /// The latest stored pass of stage `id`: its key, where it came from, its fingerprint's
    /// parts and its inputs (path -> "hash x|-"); nil when none was stored.
    public func lastPass(of id: String)
        -> (key: String, from: CachedFrom, parts: FingerprintParts, inputs: [String: String])? {
        guard let bytes = try? FileIO.readFile(lastPassPath(id)), let nl = bytes.firstIndex(of: 10),
              let head = try? JSON.parse(Array(bytes[..<nl])), let key = head["key"]?.stringValue,
              let from = CachedFrom(head["from"]), let parts = FingerprintParts(head["parts"]) else { return nil }
        return (key, from, parts, FileSet.parseManifest(Array(bytes[(nl + 1)...])))
    }

    // MARK: ls, gc, clear

    public struct Listed { public var entry: Entry; public var lastUsed: Double; public var size: Int64 }

    /// Every readable entry, most recently used first.
    public func list() -> [Listed] {
        var out: [Listed] = []
        for name in FileIO.list(entries) where name.hasSuffix(".json") {
            let p = entries + "/" + name
            guard let bytes = try? FileIO.readFile(p), let e = try? parse(bytes) else { continue }
            out.append(Listed(entry: e, lastUsed: FileIO.mtime(p) ?? 0, size: e.size))
        }
        return out.sorted { $0.lastUsed > $1.lastUsed }
    }

    /// Bytes the objects take (each object once).
    public func objectsSize() -> Int64 {
        var total: Int64 = 0
        for d in FileIO.list(objects) {
            for o in FileIO.list(objects + "/" + d) { total += Int64(FileIO.size(objects + "/" + d + "/" + o) ?? 0) }
        }
        return total
    }

    /// Removes what no entry uses (and left-over temp files), then the least recently used
    /// entries until the objects take at most `maxSize` bytes. Returns (entries removed, bytes now).
    public func gc(maxSize: Int64) throws -> (removed: Int, size: Int64) {
        try locked(exclusive: true) {
            try? FileIO.removeTree(tmp)
            var entriesNow: [(path: String, used: Double, objects: Set<String>)] = []
            for name in FileIO.list(entries) {
                let p = entries + "/" + name
                guard name.hasSuffix(".json"), let bytes = try? FileIO.readFile(p), let e = try? parse(bytes) else {
                    unlink(p)
                    continue
                }
                entriesNow.append((p, FileIO.mtime(p) ?? 0, Set(e.objects.map(\.hash))))
            }
            var refs: [String: Int] = [:]
            for e in entriesNow { for h in e.objects { refs[h, default: 0] += 1 } }
            var sizes: [String: Int64] = [:]
            var total: Int64 = 0
            for d in FileIO.list(objects) {
                for o in FileIO.list(objects + "/" + d) {
                    let p = objects + "/" + d + "/" + o
                    if refs[o] == nil { unlink(p); continue }
                    let s = Int64(FileIO.size(p) ?? 0)
                    sizes[o] = s
                    total += s
                }
            }
            var removed = 0
            for e in entriesNow.sorted(by: { $0.used < $1.used }) where total > maxSize {
                unlink(e.path)
                removed += 1
                for h in e.objects {
                    refs[h]! -= 1
                    if refs[h] == 0 { unlink(objectPath(h)); total -= sizes[h] ?? 0 }
                }
            }
            return (removed, total)
        }
    }

    /// Removes every entry and object.
    public func clear() throws -> Int {
        try locked(exclusive: true) {
            let n = FileIO.list(entries).count
            for d in [entries, objects, tmp, root + "/stages"] { try? FileIO.removeTree(d) }
            return n
        }
    }
}
