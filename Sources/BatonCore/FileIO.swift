import Glibc

/// An error from the operating system, with the operation and path it concerns.
public struct SystemError: Error, CustomStringConvertible {
    public let op: String
    public let path: String
    public let code: Int32

    public init(_ op: String, _ path: String, _ code: Int32 = errno) {
        self.op = op; self.path = path; self.code = code
    }

    public var isNoSpace: Bool { code == ENOSPC || code == EFBIG || code == EDQUOT }

    public var description: String {
        let why: String
        switch code {
        case ENOSPC: why = "no space left on device"
        case EFBIG: why = "file size limit exceeded (no space for the file to grow)"
        case EDQUOT: why = "disk quota exceeded"
        default: why = String(cString: strerror(code))
        }
        return "\(op) \(path): \(why)"
    }
}

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
    public static func list(_ dir: String) -> [String] {
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// An exclusive flock on a file, held until `release` or process death.
/// flock belongs to the open file description: the descriptor is O_CLOEXEC so
/// stages never inherit (and never prolong) the lock.
public final class FileLock: @unchecked Sendable {
    public let path: String
    private var fd: Int32

    private init(path: String, fd: Int32) { self.path = path; self.fd = fd }

    /// Takes the lock without waiting; nil when another process holds it.
    public static func tryAcquire(_ path: String) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("open", path) }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { return nil }
            throw SystemError("lock", path, e)
        }
        return FileLock(path: path, fd: fd)
    }

    /// Takes the lock, waiting up to `timeout` seconds on `loop` (everything else goes on
    /// meanwhile); nil on timeout or when the wait is interrupted.
    public static func acquire(_ path: String, timeout: Double, loop: EventLoop) throws -> FileLock? {
        if let l = try tryAcquire(path) { return l }
        var got: FileLock? = nil
        var failure: Error? = nil
        _ = loop.wait(WaitLabel("lock", path), deadline: Clock.monotonic() + timeout, pollEvery: 0.02) {
            do { got = try tryAcquire(path) } catch { failure = error; return true }
            return got != nil
        }
        if let failure { throw failure }
        return got
    }

    /// True when some process holds the lock on `path` (probes without keeping it).
    public static func isHeld(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return false }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 { flock(fd, LOCK_UN); return false }
        return errno == EWOULDBLOCK
    }

    /// Records who holds it (for "live, pid N" messages); the lock is what counts.
    public func writeOwner(_ text: String) {
        ftruncate(fd, 0)
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    public func release() {
        if fd >= 0 { flock(fd, LOCK_UN); close(fd); fd = -1 }
    }

    deinit { release() }
}

extension String {
    /// A NUL-terminated C buffer as a String.
    public init(cBuffer buf: [CChar]) {
        let end = buf.firstIndex(of: 0) ?? buf.count
        self = String(decoding: buf[0..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Human output: one line to stdout or stderr, written whole (no buffering, so lines from
/// Baton and from its stages interleave in order).
public enum Console {
    public static func out(_ s: String) { write(1, s) }
    public static func err(_ s: String) { write(2, s) }

    /// A command's error: "baton: message" on stderr, or with `--json` the object
    /// `{"error": message, "exit_code": n}` on stdout (docs/cli.md). Returns the exit code.
    public static func error(_ message: String, json: Bool, code: ExitStatus = .usage) -> Int32 {
        if json {
            out(JSON.object([("error", .string(message)), ("exit_code", .int(Int64(code.rawValue)))]).encoded(pretty: true))
        } else {
            err("baton: \(message)")
        }
        return code.rawValue
    }

    /// `text` as it is, plus a newline unless `newline` is false.
    public static func write(_ fd: Int32, _ text: String, newline: Bool = true) {
        var bytes = Array(text.utf8)
        if newline { bytes.append(10) }
        write(fd, bytes: bytes)
    }

    /// Raw bytes (a stage's log, NULs and all), retrying short writes.
    public static func write(_ fd: Int32, bytes: [UInt8]) {
        _ = try? bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: fd == 1 ? "stdout" : "stderr") }
    }
}

extension stat {
    /// st_mtim in seconds since the epoch.
    public var mtime: Double { Double(st_mtim.tv_sec) + Double(st_mtim.tv_nsec) / 1e9 }
}
