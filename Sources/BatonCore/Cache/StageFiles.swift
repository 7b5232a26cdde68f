import BatonBase
import Glibc

/// One declared output after a pass: a file, or a directory (every file under it).
public struct OutputSnapshot: Sendable {
    public struct File: Sendable {
        public var rel: String, abs: String, hash: String
        public var size: Int64
        public var exec: Bool
    }
    public var path: String
    public var isDir: Bool
    public var hash: String
    public var files: [File]

    /// Hashes the output `path` (relative to `base`); nil when it does not exist.
    public static func take(_ path: String, base: String) throws -> OutputSnapshot? {
        let clean = FileGlob.split(path).joined(separator: "/")
        let abs = clean.isEmpty ? base : FileIO.join(base, clean)
        var st = stat()
        guard stat(abs, &st) == 0 else { return nil }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            var files: [File] = []
            for f in try FileGlob.match(["?**"], base: abs, never: []) {
                let h = try Hashing.file(f.abs).hash
                files.append(File(rel: f.rel,
                                  abs: f.abs,
                                  hash: h,
                                  size: Int64(f.st.st_size),
                                  exec: f.st.st_mode & 0o100 != 0))
            }
            return OutputSnapshot(path: path,
                                  isDir: true,
                                  hash: FileSet(files: files.map { ($0.rel, $0.hash) }).digest,
                                  files: files)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        let (h, st2) = try Hashing.file(abs)
        return OutputSnapshot(path: path, isDir: false, hash: h,
                              files: [File(rel: "",
                                           abs: abs,
                                           hash: h,
                                           size: Int64(st2.st_size),
                                           exec: st2.st_mode & 0o100 != 0)])
    }
}

extension StageExecution {
    /// After a zero exit: every declared output must exist (else the attempt fails,
    /// deterministic); their hashes go into the result and the journal. Hashed on a thread of
    /// their own (a large output takes ~0.5 s per GiB; the loop goes on), then `then` is called
    /// on the loop's thread with the result.
    func checkOutputs(_ r0: StageResult, then: @escaping (StageResult) -> Void) {
        phase = .checking
        let (outputs, base) = (spec.outputs, spec.resolvedCwd)
        final class Found: @unchecked Sendable {   // written by the work, read once it ended
            var snaps: [OutputSnapshot] = []
            var failure: String?
        }
        let found = Found()
        context.loop.add(ThreadTask({ _ in
            for o in outputs {
                do {
                    guard let s = try OutputSnapshot.take(o, base: base) else {
                        found.failure = "declared output missing: \(o)"
                        return
                    }
                    found.snaps.append(s)
                } catch {
                    found.failure = "declared output unreadable: \(o): \(error)"
                    return
                }
            }
        }, done: { [unowned self] _ in
            var r = r0
            if let f = found.failure {
                r.status = .failed
                r.message = f
            } else {
                r.outputs = found.snaps.map { ($0.path, $0.hash) }
                self.outputSnapshots = found.snaps
            }
            then(r)
        }))
    }
}
