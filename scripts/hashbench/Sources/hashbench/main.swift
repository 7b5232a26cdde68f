import COpenSSLBench
import Crypto
import Glibc

// Throughput over one buffer (MiB from argv, default 256), best of 3, and the cost of
// hashing many small inputs (4 KiB x 10,000: the shape of a tree of source files).
let mib = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 256 : 256
let buf = [UInt8](unsafeUninitializedCapacity: mib << 20) { p, n in
    for i in 0..<(mib << 20) { p[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
    n = mib << 20
}
func now() -> Double { var ts = timespec(); clock_gettime(CLOCK_MONOTONIC, &ts); return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 }
func best(_ f: () -> Void) -> Double { var b = 1e9; for _ in 0..<3 { let t = now(); f(); b = min(b, now() - t) }; return b }

func swiftCrypto(_ bytes: UnsafeRawBufferPointer, chunk: Int) -> Int {
    var h = Crypto.SHA256()
    var off = 0
    while off < bytes.count { let n = min(chunk, bytes.count - off); h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[off..<off + n])); off += n }
    return h.finalize().withUnsafeBytes { Int($0[0]) }
}
func openssl(_ bytes: UnsafeRawBufferPointer, chunk: Int) -> Int {
    let ctx = EVP_MD_CTX_new(); defer { EVP_MD_CTX_free(ctx) }
    EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    var off = 0
    while off < bytes.count { let n = min(chunk, bytes.count - off); EVP_DigestUpdate(ctx, bytes.baseAddress! + off, n); off += n }
    var out = [UInt8](repeating: 0, count: 32); var len: UInt32 = 0
    EVP_DigestFinal_ex(ctx, &out, &len)
    return Int(out[0])
}
var sink = 0
buf.withUnsafeBytes { b in
    let tc = best { sink &+= swiftCrypto(b, chunk: 1 << 20) }
    let to = best { sink &+= openssl(b, chunk: 1 << 20) }
    print(String(format: "one buffer of %d MiB: swift-crypto %.0f MiB/s, libcrypto %.0f MiB/s", mib, Double(mib) / tc, Double(mib) / to))
    let small = UnsafeRawBufferPointer(rebasing: b[0..<4096])
    let sc = best { for _ in 0..<10_000 { sink &+= swiftCrypto(small, chunk: 4096) } }
    let so = best { for _ in 0..<10_000 { sink &+= openssl(small, chunk: 4096) } }
    print(String(format: "10,000 inputs of 4 KiB: swift-crypto %.1f ms, libcrypto %.1f ms", sc * 1000, so * 1000))
}
if sink == 42 { print("") }
