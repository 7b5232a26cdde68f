import Crypto
import Glibc
import Synchronization

/// SHA-256 through swift-crypto (BoringSSL's SHA-NI/AVX2 code, linked statically; chosen by
/// scripts/hashbench, docs/performance.md). The recipe hash in the journal, declared inputs
/// and outputs, the cache's content addresses.
public enum SHA256 {
    public static func hex(_ data: [UInt8]) -> String {
        data.withUnsafeBytes { hex($0) }
    }

    public static func hex(_ text: String) -> String {
        var t = text
        return t.withUTF8 { hex(UnsafeRawBufferPointer($0)) }
    }

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        var h = Crypto.SHA256()
        h.update(bufferPointer: bytes)
        return h.finalize().withUnsafeBytes { hexString(Array($0)) }
    }

    public static let digits: [UInt8] = Array("0123456789abcdef".utf8)
    public static func hexString(_ d: [UInt8]) -> String {
        String(unsafeUninitializedCapacity: d.count * 2) { p in
            for (i, b) in d.enumerated() { p[2 * i] = digits[Int(b >> 4)]; p[2 * i + 1] = digits[Int(b & 15)] }
            return d.count * 2
        }
    }
}

/// A running SHA-256 over several updates.
public final class SHA256Hasher {
    var h = Crypto.SHA256()
    public init() {}
    public func update(_ bytes: UnsafeRawBufferPointer) {
        if bytes.count > 0 { h.update(bufferPointer: bytes) }
    }
    public func update(_ text: String) {
        var t = text
        t.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }
    public func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public func finalHex() -> String {
        h.finalize().withUnsafeBytes { SHA256.hexString(Array($0)) }
    }
}

public enum Hashing {
    /// The SHA-256 of a file's content, read in 1 MiB blocks (no copy through Swift arrays).
    /// Also returns the stat of the descriptor it read, for the stat cache.
    public static func file(_ path: String) throws -> (hash: String, stat: stat) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw SystemError("open", path) }
        defer { close(fd) }
        var st = stat()
        fstat(fd, &st)
        return (try file(fd: fd, path: path, sizeHint: Int(st.st_size)), st)
    }

    /// Reusable read buffer, taken by one hash at a time (`bufferTaken`); a hash on another
    /// thread meanwhile (the cache's inserts) reads through a buffer of its own.
    nonisolated(unsafe) static var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    static let bufferTaken = Atomic<Bool>(false)

    public static func file(fd: Int32, path: String, sizeHint: Int = 0) throws -> String {
        if sizeHint >= 0 && sizeHint <= 4096 {
            // Small files: one read, one-shot digest.
            var small = [UInt8](repeating: 0, count: 4097)
            var got = 0
            while true {
                let n = small.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, $0.count - got) }
                if n < 0 { if errno == EINTR { continue }; throw SystemError("read", path) }
                if n == 0 { break }
                got += n
                if got == small.count { break }
            }
            if got < small.count {
                return small.withUnsafeBytes { SHA256.hex(UnsafeRawBufferPointer(rebasing: $0[0..<got])) }
            }
            let h = SHA256Hasher()
            small.withUnsafeBytes { h.update($0) }
            return try rest(fd, h, path)
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        return try rest(fd, SHA256Hasher(), path)
    }

    static func rest(_ fd: Int32, _ h: SHA256Hasher, _ path: String) throws -> String {
        let shared = bufferTaken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        let buf = shared ? buffer : UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { if shared { bufferTaken.store(false, ordering: .releasing) } else { buf.deallocate() } }
        while true {
            let n = read(fd, buf.baseAddress, buf.count)
            if n < 0 { if errno == EINTR { continue }; throw SystemError("read", path) }
            if n == 0 { break }
            h.update(UnsafeRawBufferPointer(rebasing: buf[0..<n]))
        }
        return h.finalHex()
    }
}
