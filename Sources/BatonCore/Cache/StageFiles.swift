import BatonBase
import Glibc

/// One declared output after a pass: a file, or a directory (every file under it).
public struct OutputSnapshot {
    public struct File {
        public var rel: String
        public var abs: String
        public var hash: String
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
    /// deterministic); their hashes go into the result and the journal.
    func checkOutputs(_ r: inout StageResult) {
        let base = spec.resolvedCwd
        var snaps: [OutputSnapshot] = []
        for o in spec.outputs {
            do {
                guard let s = try OutputSnapshot.take(o, base: base) else {
                    r.status = .failed
                    r.message = "declared output missing: \(o)"
                    return
                }
                snaps.append(s)
            } catch {
                r.status = .failed
                r.message = "declared output unreadable: \(o): \(error)"
                return
            }
        }
        r.outputs = snaps.map { ($0.path, $0.hash) }
        outputSnapshots = snaps
    }
}
