import BatonBase
import Glibc

/// What git's index does for `git status`: a file whose (size, mtime ns, ctime ns) are those
/// recorded with its hash, under its (device, inode), is not read again. Kept in the runs
/// directory (`.statcache`), shared by the project's runs; a lost or corrupt file only costs
/// a re-hash. Keyed by (device, inode) rather than path, its records sorted by that key: the
/// file is read as it is and searched in place (binary search), nothing built per entry.
///
/// Racy files: a file changed within the clock's granularity of being hashed could keep its
/// stat; an entry whose mtime or ctime is less than `racyWindow` before the hash is not kept
/// (which also covers an inode reused by a new file of the same size in the same tick).
public final class StatCache {
    struct FileID: Hashable { var dev: UInt64, ino: UInt64 }
    struct Entry {
        var size: Int64, mtime: Int64, ctime: Int64
        var hash: (UInt64, UInt64, UInt64, UInt64)
    }
    public let path: String
    /// The file's records (after the magic), sorted by (device, inode).
    private var stored: [UInt8] = []
    private var loaded = false
    private var loader: Background?
    private var loadedBox: (() -> [UInt8])?
    /// What this process hashed (kept, and written by `save` when `unsaved`).
    var fresh: [FileID: Entry] = [:]
    private var unsaved = false
    public private(set) var hits = 0, misses = 0
    static let racyWindow: Int64 = 2_000_000_000

    public init(path: String) { self.path = path }

    /// The runs directory's cache file.
    public convenience init(runsDir: String) { self.init(path: ProjectLayout.statCachePath(runsDir: runsDir)) }

    /// Reads the cache file on a second thread (until the first lookup).
    public func preload() {
        guard !loaded, loader == nil else { return }
        let p = path
        final class Box: @unchecked Sendable { var records: [UInt8] = [] }
        let box = Box()
        loadedBox = { box.records }
        loader = Background { box.records = StatCache.records(p) }
    }

    private func ensureLoaded() {
        guard !loaded else { return }
        loaded = true
        if let l = loader {
            l.join()
            stored = loadedBox!()
            loader = nil; loadedBox = nil
        } else {
            stored = StatCache.records(path)
        }
    }

    /// The stored entry for `id`: a binary search over the sorted records.
    func storedEntry(_ id: FileID) -> Entry? {
        stored.withUnsafeBytes { b -> Entry? in
            func word(_ at: Int) -> UInt64 {
                UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
            }
            var lo = 0, hi = b.count / StatCache.record
            while lo < hi {
                let mid = (lo + hi) / 2, at = mid * StatCache.record
                let dev = word(at + 56), ino = word(at + 64)
                if dev == id.dev && ino == id.ino {
                    return Entry(size: Int64(bitPattern: word(at + 32)), mtime: Int64(bitPattern: word(at + 40)),
                                 ctime: Int64(bitPattern: word(at + 48)),
                                 hash: (word(at), word(at + 8), word(at + 16), word(at + 24)))
                }
                if dev < id.dev || (dev == id.dev && ino < id.ino) { lo = mid + 1 } else { hi = mid }
            }
            return nil
        }
    }

    static func nanos(_ t: timespec) -> Int64 { Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec) }

    /// The content hash of `path`, whose stat the caller has: from the cache when the stat
    /// matches, else read and hashed (and kept unless racy).
    public func hash(_ file: @autoclosure () -> String, _ st: stat) throws -> String {
        ensureLoaded()
        let size = Int64(st.st_size), m = StatCache.nanos(st.st_mtim), c = StatCache.nanos(st.st_ctim)
        let id = FileID(dev: UInt64(st.st_dev), ino: UInt64(st.st_ino))
        if let e = (fresh.isEmpty ? nil : fresh[id]) ?? storedEntry(id), e.size == size, e.mtime == m, e.ctime == c {
            hits += 1
            return StatCache.hex(e.hash)
        }
        misses += 1
        let path = file()
        let (h, st2) = try Hashing.file(path)
        // Changed while read, or too recent to trust its stat: not kept.
        let now = Int64(Clock.now() * 1e9)
        if Int64(st2.st_size) == size, StatCache.nanos(st2.st_mtim) == m, StatCache.nanos(st2.st_ctim) == c,
           max(m, c) < now - StatCache.racyWindow, let raw = StatCache.raw(h) {
            fresh[id] = Entry(size: size, mtime: m, ctime: c, hash: raw)
            unsaved = true
        }
        return h
    }

    /// Writes what this process learnt, merged over what other runs wrote meanwhile
    /// (temp file and rename: a reader sees the old file or the new one).
    public func save() {
        guard unsaved else { return }
        var all = StatCache.load(path)
        for (k, v) in fresh { all[k] = v }
        var out = [UInt8](repeating: 0, count: StatCache.magic.count + all.count * StatCache.record)
        let keys = all.keys.sorted { $0.dev != $1.dev ? $0.dev < $1.dev : $0.ino < $1.ino }
        out.withUnsafeMutableBytes { b in
            for (i, m) in StatCache.magic.enumerated() { b[i] = m }
            var at = StatCache.magic.count
            for k in keys {
                let e = all[k]!
                for v in [e.hash.0, e.hash.1, e.hash.2, e.hash.3, UInt64(bitPattern: e.size),
                          UInt64(bitPattern: e.mtime),
                          UInt64(bitPattern: e.ctime), k.dev, k.ino] {
                    b.storeBytes(of: v.littleEndian, toByteOffset: at, as: UInt64.self)
                    at += 8
                }
            }
        }
        try? FileIO.writeAtomically(path, out)
        unsaved = false
    }

    /// The file: this magic, then one 72-byte record per file (nine little-endian 64-bit words:
    /// the SHA-256 as four, size, mtime ns, ctime ns, device, inode), sorted by (device, inode).
    /// Binary and searched in place, so reading 10,000 entries is one read of 720 KB.
    static let magic = Array("baton-statcache 4\n".utf8)
    static let record = 72

    /// The file's records (whole ones only; none when the file is absent or of another version).
    static func records(_ path: String) -> [UInt8] {
        guard let bytes = try? FileIO.readFile(path), bytes.starts(with: magic) else { return [] }
        let n = (bytes.count - magic.count) / record
        return Array(bytes[magic.count..<(magic.count + n * record)])
    }

    static func load(_ path: String) -> [FileID: Entry] {
        guard let bytes = try? FileIO.readFile(path), bytes.starts(with: magic) else { return [:] }
        let n = (bytes.count - magic.count) / record
        var map: [FileID: Entry] = [:]
        map.reserveCapacity(n)
        bytes.withUnsafeBytes { b in
            var at = magic.count
            func word() -> UInt64 {
                let v = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
                at += 8
                return v
            }
            for _ in 0..<n {
                let h = (word(), word(), word(), word())
                let size = Int64(bitPattern: word()), m = Int64(bitPattern: word()), c = Int64(bitPattern: word())
                let dev = word(), ino = word()
                map[FileID(dev: dev, ino: ino)] = Entry(size: size, mtime: m, ctime: c, hash: h)
            }
        }
        return map
    }

    static func nibble(_ c: UInt8) -> UInt64? {
        switch c {
        case 48...57: return UInt64(c - 48)
        case 97...102: return UInt64(c - 87)
        default: return nil
        }
    }

    static func raw(_ hex: UnsafeBufferPointer<UInt8>) -> (UInt64, UInt64, UInt64, UInt64)? {
        guard hex.count == 64 else { return nil }
        func word(_ at: Int) -> UInt64? {
            var w: UInt64 = 0
            for j in at..<(at + 16) { guard let v = nibble(hex[j]) else { return nil }; w = w << 4 | v }
            return w
        }
        guard let a = word(0), let b = word(16), let c = word(32), let d = word(48) else { return nil }
        return (a, b, c, d)
    }

    static func raw(_ hex: String) -> (UInt64, UInt64, UInt64, UInt64)? {
        var h = hex
        return h.withUTF8 { raw($0) }
    }

    static func hex(_ h: (UInt64, UInt64, UInt64, UInt64)) -> String {
        let digits = SHA256.digits
        return String(unsafeUninitializedCapacity: 64) { p in
            func put(_ w: UInt64, _ at: Int) {
                var s: UInt64 = 60
                for k in at..<(at + 16) { p[k] = digits[Int((w >> s) & 15)]; s &-= 4 }
            }
            put(h.0, 0); put(h.1, 16); put(h.2, 32); put(h.3, 48)
            return 64
        }
    }
}
