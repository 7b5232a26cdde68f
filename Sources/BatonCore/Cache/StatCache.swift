import BatonBase
import Glibc

/// What git's index does for `git status`: a file whose (size, mtime ns, inode, ctime ns)
/// are those recorded with its hash is not read again. Kept in the runs directory
/// (`.statcache`), shared by the project's runs; a lost or corrupt file only costs a re-hash.
///
/// Racy files: a file changed within the clock's granularity of being hashed could keep its
/// stat; an entry whose mtime or ctime is less than `racyWindow` before the hash is not kept.
public final class StatCache {
    struct Entry {
        var size: Int64, mtime: Int64, ino: UInt64, ctime: Int64
        var hash: String
    }
    public let path: String
    var entries: [String: Entry] {
        get { if !loaded { finishLoading() }; return stored }
        set { stored = newValue }
    }
    private var stored: [String: Entry] = [:]
    private var loaded = false
    private var loader: Background?
    var fresh: [String: Entry] = [:]
    public private(set) var hits = 0, misses = 0
    static let racyWindow: Int64 = 2_000_000_000

    public init(path: String) {
        self.path = path
    }

    /// Reads the cache file on a second thread (until the first lookup).
    public func preload() {
        guard !loaded, loader == nil else { return }
        let p = path
        final class Box: @unchecked Sendable { var map: [String: Entry] = [:] }
        let box = Box()
        loadedBox = { box.map }
        loader = Background { box.map = StatCache.load(p) }
    }
    private var loadedBox: (() -> [String: Entry])?

    private func finishLoading() {
        loaded = true
        if let l = loader {
            l.join()
            stored = loadedBox!()
            loader = nil; loadedBox = nil
        } else {
            stored = StatCache.load(path)
        }
    }

    /// The runs directory's cache file.
    public convenience init(runsDir: String) { self.init(path: FileIO.join(runsDir, ".statcache")) }

    static func nanos(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }

    /// The content hash of `path` (absolute), whose stat the caller has: from the cache when
    /// the stat matches, else read and hashed (and kept unless racy).
    public func hash(_ path: String, _ st: stat) throws -> String {
        let size = Int64(st.st_size), m = StatCache.nanos(st.st_mtim), c = StatCache.nanos(st.st_ctim), ino = UInt64(st.st_ino)
        if let e = entries[path], e.size == size, e.mtime == m, e.ctime == c, e.ino == ino {
            hits += 1
            return e.hash
        }
        misses += 1
        let (h, st2) = try Hashing.file(path)
        // Changed while read, or too recent to trust its stat: not kept.
        let now = Int64(Clock.now() * 1e9)
        if Int64(st2.st_size) == size, StatCache.nanos(st2.st_mtim) == m, StatCache.nanos(st2.st_ctim) == c,
           max(m, c) < now - StatCache.racyWindow, !path.contains("\n") {
            let e = Entry(size: size, mtime: m, ino: ino, ctime: c, hash: h)
            entries[path] = e
            fresh[path] = e
        }
        return h
    }

    /// Writes what this process learnt, merged over what other runs wrote meanwhile
    /// (temp file and rename: a reader sees the old file or the new one).
    public func save() {
        guard !fresh.isEmpty else { return }
        var all = StatCache.load(path)
        for (k, v) in fresh { all[k] = v }
        var out: [UInt8] = []
        out.reserveCapacity(all.count * 120)
        out += Array("baton-statcache 1\n".utf8)
        for (k, e) in all {
            out += Array("\(e.hash) \(e.size) \(e.mtime) \(e.ino) \(e.ctime) \(k)\n".utf8)
        }
        try? FileIO.writeAtomically(path, out)
        fresh = [:]
    }

    static func load(_ path: String) -> [String: Entry] {
        guard let bytes = try? FileIO.readFile(path) else { return [:] }
        var map: [String: Entry] = [:]
        bytes.withUnsafeBufferPointer { b in
            var i = 0
            let n = b.count
            // header line
            while i < n && b[i] != 10 { i += 1 }
            if i >= n || !bytes.starts(with: Array("baton-statcache 1".utf8)) { return }
            i += 1
            map.reserveCapacity(n / 110)
            while i < n {
                let start = i
                var fields: [Int] = []   // the positions of the first five spaces
                while i < n && b[i] != 10 {
                    if b[i] == 32 && fields.count < 5 { fields.append(i) }
                    i += 1
                }
                defer { i += 1 }
                guard i < n, fields.count == 5, fields[0] - start == 64 else { continue }
                func num(_ a: Int, _ z: Int) -> Int64? {
                    var v: Int64 = 0
                    if a >= z { return nil }
                    for j in a..<z { let d = b[j] &- 48; if d > 9 { return nil }; v = v &* 10 &+ Int64(d) }
                    return v
                }
                guard let size = num(fields[0] + 1, fields[1]), let m = num(fields[1] + 1, fields[2]),
                      let ino = num(fields[2] + 1, fields[3]), let c = num(fields[3] + 1, fields[4]) else { continue }
                let hash = String(decoding: UnsafeBufferPointer(rebasing: b[start..<fields[0]]), as: UTF8.self)
                let p = String(decoding: UnsafeBufferPointer(rebasing: b[(fields[4] + 1)..<i]), as: UTF8.self)
                map[p] = Entry(size: size, mtime: m, ino: UInt64(ino), ctime: c, hash: hash)
            }
        }
        return map
    }
}
