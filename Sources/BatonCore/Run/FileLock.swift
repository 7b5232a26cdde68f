import BatonBase
import Glibc

/// An flock on a file (exclusive, or shared with `block(shared: true)`), held until `release` or process death.
/// flock belongs to the open file description: the descriptor is O_CLOEXEC so
/// stages never inherit (and never prolong) the lock.
public final class FileLock: @unchecked Sendable {
    public let path: String
    private var fd: Int32

    private init(path: String, fd: Int32) { self.path = path; self.fd = fd }

    /// Takes the lock without waiting; nil when another process holds it.
    public static func tryAcquire(_ path: String, mode: mode_t = 0o644) throws -> FileLock? {
        try take(path, mode: mode, how: LOCK_EX | LOCK_NB)
    }

    /// Takes the lock (`shared`: a reader's, which many hold at once), blocking the calling
    /// thread until it is free: for locks held briefly (the cache's) or off the event loop.
    public static func block(_ path: String, shared: Bool, mode: mode_t = 0o644) throws -> FileLock {
        try take(path, mode: mode, how: shared ? LOCK_SH : LOCK_EX)!
    }

    private static func take(_ path: String, mode: mode_t, how: Int32) throws -> FileLock? {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode)
        if fd < 0 { throw SystemError("open", path) }
        while flock(fd, how) != 0 {
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
        _ = loop.wait(WaitLabel(.lock, path), deadline: Clock.monotonic() + timeout, pollEvery: 0.02) {
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
