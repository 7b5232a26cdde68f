import CBatonSys
import Glibc

public enum FileIO {
    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", path)
            }
            off += n
        }
    }

    /// A pipe whose ends are close-on-exec from their creation (no stage started meanwhile
    /// inherits them); nil with errno set when the system refuses one.
    public static func pipe(nonblocking: Bool = false) -> (read: Int32, write: Int32)? {
        var fds: [Int32] = [-1, -1]
        guard baton_pipe_cloexec(&fds, nonblocking ? 1 : 0) == 0 else { return nil }
        return (fds[0], fds[1])
    }

    /// The bytes of the file open as `fd` from `offset` to its end as it is now, handed over
    /// in chunks of at most `size` (never the whole file at once). Returns how many bytes,
    /// or nil when a read fails (the chunks before it were handed over).
    @discardableResult
    public static func readChunks(_ fd: Int32, from offset: Int = 0, size: Int = 64 << 10,
                                  _ chunk: ([UInt8]) -> Void) -> Int? {
        var buf = [UInt8](repeating: 0, count: size)
        var at = offset, total = 0
        while true {
            let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(at)) }
            if n < 0, errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { return total }
            chunk(Array(buf[0..<n]))
            at += n
            total += n
        }
    }

    public static func readFile(_ path: String, limit: Int = Int.max) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open", path) }
        defer { close(fd) }
        // A regular file is read straight into one buffer of its size (an 8 MB journal was
        // read in 64 KiB pieces into an array that grew, copying itself on the way).
        var out: [UInt8] = []
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size > 0 {
            let want = min(Int(st.st_size), limit)
            var got = 0
            var failed = false
            let whole = [UInt8](unsafeUninitializedCapacity: want) { b, count in
                while got < want {
                    let n = read(fd, b.baseAddress! + got, want - got)
                    if n < 0 { if errno == EINTR { continue }; failed = true; break }
                    if n == 0 { break }
                    got += n
                }
                count = got
            }
            if failed { throw SystemError("read", path) }
            if got < want || got == limit { return whole }
            out = whole   // a file that grew meanwhile: the rest is read below, as from a pipe
        }
        var buf = [UInt8](repeating: 0, count: 65536)
        while out.count < limit {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, limit - out.count)) }
            if n < 0 { if errno == EINTR { continue }; throw SystemError("read", path) }
            if n == 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }

    public static func readString(_ path: String) throws -> String {
        String(decoding: try readFile(path), as: UTF8.self)
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func size(_ path: String) -> Int? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int(st.st_size)
    }

    /// mkdir -p
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        if isDirectory(path) { return }
        let parent = dirname(path)
        if parent != path, !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0, errno != EEXIST { throw SystemError("mkdir", path) }
    }

    public static func dirname(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func basename(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    public static func join(_ a: String, _ b: String) -> String {
        if b.hasPrefix("/") || a.isEmpty { return b }
        return a.hasSuffix("/") ? a + b : a + "/" + b
    }

    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        return join(currentDirectory(), path)
    }

    /// This program's own executable (/proc/self/exe).
    public static func selfExecutable() -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(cBuffer: buf) : CommandLine.arguments[0]
    }

    /// The working directory, asked of the kernel once: every change of it goes through
    /// `changeDirectory` (a stage's default cwd is resolved per stage, twice; a syscall and a
    /// 4 KiB buffer each time added up in a fan-out of short stages).
    public static func currentDirectory() -> String {
        if let c = cachedDirectory { return c }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return "." }
        let c = String(cBuffer: buf)
        cachedDirectory = c
        return c
    }

    /// chdir(2), keeping `currentDirectory` true. Returns whether it succeeded.
    @discardableResult
    public static func changeDirectory(_ path: String) -> Bool {
        cachedDirectory = nil
        return chdir(path) == 0
    }

    nonisolated(unsafe) private static var cachedDirectory: String?

    /// When `path` was last modified (seconds since the epoch), nil if it cannot be stat'ed.
    public static func mtime(_ path: String) -> Double? {
        var st = stat()
        return stat(path, &st) == 0 ? st.mtime : nil
    }

    public static func fsyncDirectory(_ dir: String) {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    /// Atomic replace: write a temp file beside the target, fsync it, rename it over the
    /// target, fsync the directory. A reader sees the old file or the new one, never half.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        let dir = dirname(path)
        let tmp = join(dir, ".\(basename(path)).tmp.\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if fd < 0 { throw SystemError("create", tmp) }
        do {
            try bytes.withUnsafeBytes { try writeAll(fd, $0, path: path) }
            if fchmod(fd, mode) != 0 { throw SystemError("chmod", tmp) }
            if fsync(fd) != 0 { throw SystemError("fsync", path) }
        } catch {
            close(fd); unlink(tmp); throw error
        }
        close(fd)
        if rename(tmp, path) != 0 { let e = SystemError("rename", path); unlink(tmp); throw e }
        fsyncDirectory(dir)
    }

    /// Appends one record under an exclusive flock of the file itself, as one write.
    /// Concurrent appenders (other processes too) never interleave.
    /// A record that a writer cut short (no final newline) is closed first, so it cannot
    /// swallow the new one. `alreadyLocked`: the caller holds the flock (FileLock.exclusive).
    public static func appendLocked(_ path: String, _ bytes: [UInt8], alreadyLocked: Bool = false) throws {
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("open", path) }
        defer { close(fd) }
        if !alreadyLocked {
            while flock(fd, LOCK_EX) != 0 { if errno != EINTR { throw SystemError("lock", path) } }
        }
        defer { if !alreadyLocked { flock(fd, LOCK_UN) } }
        var out = bytes
        var st = stat()
        if fstat(fd, &st) == 0, st.st_size > 0 {
            var last: UInt8 = 0
            if pread(fd, &last, 1, st.st_size - 1) == 1, last != 10 { out.insert(10, at: 0) }
        }
        try out.withUnsafeBytes { try writeAll(fd, $0, path: path) }
        if fdatasync(fd) != 0 { throw SystemError("fdatasync", path) }
    }

    /// rm -r, without following symbolic links.
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { if errno == ENOENT { return }; throw SystemError("lstat", path) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in list(path) { try removeTree(path + "/" + name) }
            if rmdir(path) != 0 { throw SystemError("rmdir", path) }
        } else if unlink(path) != 0 {
            throw SystemError("unlink", path)
        }
    }

    /// Entries of a directory, without `.` and `..`.
    public static func list(_ dir: String) -> [String] { entries(dir).map(\.name) }

    /// Entries of a directory (without `.` and `..`), each with whether it is a symbolic link:
    /// from its directory entry, so a directory of 100,000 logs costs no lstat per file
    /// (lstat only where the file system does not say).
    public static func entries(_ dir: String) -> [(name: String, isLink: Bool)] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [(name: String, isLink: Bool)] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard name != "." && name != ".." else { continue }
            var link = e.pointee.d_type == UInt8(DT_LNK)
            if e.pointee.d_type == UInt8(DT_UNKNOWN) {
                var st = stat()
                link = lstat(dir + "/" + name, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
            }
            out.append((name, link))
        }
        return out
    }
}

extension String {
    /// A NUL-terminated C buffer as a String.
    public init(cBuffer buf: [CChar]) {
        let end = buf.firstIndex(of: 0) ?? buf.count
        self = String(decoding: buf[0..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension stat {
    /// st_mtim in seconds since the epoch.
    public var mtime: Double { Double(st_mtim.tv_sec) + Double(st_mtim.tv_nsec) / 1e9 }
}
