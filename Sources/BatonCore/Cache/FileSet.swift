import BatonBase
import Glibc

/// A declared input or output list that cannot be honoured (a glob matching nothing).
public struct FileSetError: Error, CustomStringConvertible {
    public let message: String
    public init(_ m: String) { message = m }
    public var description: String { message }
}

/// The files a stage declares as its inputs, resolved: relative path -> content hash,
/// sorted by path, and one digest over them (what the fingerprint holds).
public struct FileSet: Sendable {
    public var files: [(path: String, hash: String)]
    /// The files with an execute bit (as git, the one mode bit that is part of the content).
    public var executable: Set<String> = []
    public var digest: String

    public init(files: [(path: String, hash: String)], executable: Set<String> = []) {
        self.files = files
        self.executable = executable
        // "path NUL hash [NUL x] LF" per file, hashed in one call (10,000 files: ~1 MB).
        var text: [UInt8] = []
        text.reserveCapacity(files.count * 100)
        for f in files {
            text += f.path.utf8; text.append(0); text += f.hash.utf8
            if !executable.isEmpty && executable.contains(f.path) { text += [0, 120] }
            text.append(10)
        }
        digest = SHA256.hex(text)
    }

    /// "hash x|- path" lines: what `inputs/<digest>` in the run directory holds, for resume's diff.
    public var manifest: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(files.count * 100)
        for f in files { out += Array("\(f.hash) \(executable.contains(f.path) ? "x" : "-") \(f.path)\n".utf8) }
        return out
    }

    /// path -> "hash x|-".
    public static func parseManifest(_ bytes: [UInt8]) -> [String: String] {
        var m: [String: String] = [:]
        for line in bytes.split(separator: 10) where line.count > 67 {
            m[String(decoding: line[line.startIndex + 67..<line.endIndex], as: UTF8.self)] =
                String(decoding: line[line.startIndex..<line.startIndex + 66], as: UTF8.self)
        }
        return m
    }

    /// The files that differ from an earlier manifest (content or execute bit): changed, added, removed (sorted).
    public func diff(from old: [String: String]) -> (changed: [String], added: [String], removed: [String]) {
        var changed: [String] = [], added: [String] = []
        var seen = Set<String>()
        for f in files {
            seen.insert(f.path)
            let now = f.hash + (executable.contains(f.path) ? " x" : " -")
            if let h = old[f.path] { if h != now { changed.append(f.path) } } else { added.append(f.path) }
        }
        let removed = old.keys.filter { !seen.contains($0) }.sorted()
        return (changed, added, removed)
    }
}

/// Globs over a stage's working directory: `**` any number of directories, `*`, `?` and
/// `[...]` within a name (fnmatch), `!pattern` excludes, a leading `?` makes a pattern
/// optional, a directory means every file under it. `.git` and the given directories (the
/// runs directory, the cache) are never entered.
public struct FileGlob {
    struct Pattern {
        var parts: [String]
        var optional: Bool
        var text: String
        var literal: Bool { !parts.contains { FileGlob.isGlob($0) } }
    }

    static func isGlob(_ s: String) -> Bool { s.utf8.contains { $0 == 42 || $0 == 63 || $0 == 91 } }   // * ? [

    static func split(_ p: String) -> [String] {
        p.split(separator: "/", omittingEmptySubsequences: true).map(String.init).filter { $0 != "." }
    }

    /// Resolves `patterns` against `base` (absolute). Throws for an include that matches nothing
    /// (unless optional). Returns relative paths (from `base`) with their absolute path and stat.
    public static func match(_ patterns: [String], base: String, never: [String]) throws -> [Matched] {
        let (includes, excludes) = try parse(patterns)
        let neverSet = Set(never.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 })
        // Only several includes can match a file twice.
        let w = Walker(excludes: excludes, never: neverSet, dedupe: includes.count > 1)
        defer { for fd in w.dirFDs { close(fd) } }
        for inc in includes {
            if try w.include(inc, base: base) == 0 && !inc.optional {
                throw FileSetError("input '\(inc.text)' matches no file (write '?\(inc.text)' if it may be absent)")
            }
        }
        statAll(w.pending, into: &w.found)
        // Sorted through their indices: a Matched (with its stat) is ~200 bytes to move.
        let found = w.found
        return found.indices.sorted { found[$0].rel < found[$1].rel }.map { found[$0] }
    }

    /// The include and exclude patterns, in order.
    static func parse(_ patterns: [String]) throws -> (includes: [Pattern], excludes: [Pattern]) {
        var includes: [Pattern] = [], excludes: [Pattern] = []
        for raw in patterns {
            var p = raw
            var optional = false, exclude = false
            if p.hasPrefix("!") { exclude = true; p.removeFirst() }
            if p.hasPrefix("?") && !p.hasPrefix("?/") { optional = true; p.removeFirst() }
            if p.hasPrefix("/") {
                throw FileSetError("'\(raw)': paths are relative to the stage's working directory")
            }
            let parts = split(p)
            if exclude { excludes.append(Pattern(parts: parts, optional: optional, text: raw)) } else {
                includes.append(Pattern(parts: parts, optional: optional, text: raw))
            }
        }
        return (includes, excludes)
    }

    /// One resolution's walk: what it found, what it saw, the files still to stat and the
    /// directory descriptors kept open for them.
    final class Walker {
        let excludes: [Pattern]
        let hasExcludes: Bool
        let neverSet: Set<String>
        var found: [Matched] = []
        var seen: Set<String>?
        // Regular files known from readdir's d_type, stat'ed afterwards.
        // (Each pending file names its directory's descriptor, kept open until then: fstatat of
        // one name costs the kernel far less than a whole path.)
        var pending: [Pending] = []
        var dirFDs: [Int32] = []

        init(excludes: [Pattern], never: Set<String>, dedupe: Bool) {
            self.excludes = excludes
            hasExcludes = !excludes.isEmpty
            neverSet = never
            seen = dedupe ? [] : nil
        }

        func excluded(_ rel: [String]) -> Bool {
            for e in excludes {
                if FileGlob.matches(e.parts[...], rel[...]) { return true }
                // a directory excluded excludes what is under it
                for k in 1..<max(1, rel.count) where k < rel.count && FileGlob.matches(e.parts[...], rel[0..<k]) {
                    return true
                }
            }
            return false
        }

        func add(_ rel: String, _ abs: String, _ st: stat) {
            if seen != nil { guard seen!.insert(rel).inserted else { return } }
            found.append(Matched(rel: rel, st: st, dir: abs, name: ""))
        }

        func addPending(_ rel: String, _ dirAbs: String, _ dir: Int32, _ name: String) {
            if seen != nil { guard seen!.insert(rel).inserted else { return } }
            pending.append(Pending(rel: rel, dirAbs: dirAbs, dir: dir, name: name))
        }

        /// The files one include pattern matches (how many: an include that matches none may be an error).
        func include(_ inc: Pattern, base: String) throws -> Int {
            var count = 0
            let lit = inc.parts.prefix { !FileGlob.isGlob($0) && $0 != "**" }
            let dirRel = Array(lit)
            let dirRelStr = dirRel.joined(separator: "/")
            let startAbs = dirRel.isEmpty ? base : base + "/" + dirRelStr
            if inc.literal {
                var st = stat()
                if stat(startAbs, &st) == 0 {
                    if (st.st_mode & S_IFMT) == S_IFDIR {
                        if !neverSet.contains(startAbs) && !dirRel.contains(".git") {
                            walk(startAbs, dirRelStr, dirRel, nil, &count)
                        }
                    } else if (st.st_mode & S_IFMT) == S_IFREG, !excluded(dirRel) {
                        add(dirRelStr, startAbs, st)
                        count = 1
                    }
                }
            } else {
                let parts = inc.parts
                // A match of a directory means all of it: a file matches when the pattern matches
                // the file or any directory above it.
                walk(startAbs, dirRelStr, dirRel, { rel in
                    if FileGlob.matches(parts[...], rel[...]) { return true }
                    for k in 1..<max(1, rel.count) where k < rel.count && FileGlob.matches(parts[...], rel[0..<k]) {
                        return true
                    }
                    return false
                }, &count)
            }
            return count
        }

        // Every file under `abs` (relative `relStr`, components `rel`), pruning .git, `never`
        // and excluded directories. The common case (a directory, no globs, no excludes)
        // builds no component arrays per file.
        func walk(_ abs: String, _ relStr: String, _ rel: [String], _ want: (([String]) -> Bool)?, _ out: inout Int) {
            guard let d = opendir(abs) else { return }
            defer { closedir(d) }
            let fd = dirfd(d)
            // A descriptor of its own for the deferred stats (at most 512 directories kept open;
            // beyond, files are stat'ed as they are found).
            var keep: Int32 = -1
            if dirFDs.count < 512 { keep = fcntl(fd, F_DUPFD_CLOEXEC, 0); if keep >= 0 { dirFDs.append(keep) } }
            while let e = readdir(d) {
                let type = e.pointee.d_type
                let name = withUnsafePointer(to: &e.pointee.d_name) { p in
                    p.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name == "." || name == ".." || name == ".git" { continue }
                if type == DT_REG && keep >= 0 {
                    let childRelStr = relStr.isEmpty ? name : relStr + "/" + name
                    if want != nil || hasExcludes {
                        let childRel = rel + [name]
                        if let w = want, !w(childRel) { continue }
                        if hasExcludes && excluded(childRel) { continue }
                    }
                    addPending(childRelStr, abs, keep, name)
                    out += 1
                    continue
                }
                var st = stat()
                // Follow a symlink to a file; never descend through one (no loops).
                if fstatat(fd, name, &st, 0) != 0 { continue }
                let childAbs = abs == "/" ? "/" + name : abs + "/" + name
                let childRelStr = relStr.isEmpty ? name : relStr + "/" + name
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    if type == DT_LNK || type == DT_UNKNOWN {
                        var lst = stat()
                        if fstatat(fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0, (lst.st_mode & S_IFMT) == S_IFLNK {
                            continue
                        }
                    }
                    let childRel = rel + [name]
                    if neverSet.contains(childAbs) || (hasExcludes && excluded(childRel)) { continue }
                    walk(childAbs, childRelStr, childRel, want, &out)
                } else if (st.st_mode & S_IFMT) == S_IFREG {
                    if want != nil || hasExcludes {
                        let childRel = rel + [name]
                        if let w = want, !w(childRel) { continue }
                        if hasExcludes && excluded(childRel) { continue }
                    }
                    add(childRelStr, childAbs, st)
                    out += 1
                }
            }
        }
    }

    /// Stats `files` (a file that vanished meanwhile is left out).
    struct Pending { var rel: String; var dirAbs: String; var dir: Int32; var name: String }

    /// A matched file: its path relative to the base, its stat, and its absolute path (made
    /// only when asked: most fingerprints never need it).
    public struct Matched {
        public var rel: String
        public var st: stat
        var dir: String
        var name: String
        public var abs: String { name.isEmpty ? dir : dir == "/" ? "/" + name : dir + "/" + name }
    }

    static func statAll(_ files: [Pending], into found: inout [Matched]) {
        let n = files.count
        if n == 0 { return }
        let sts = UnsafeMutablePointer<stat>.allocate(capacity: n)
        let ok = UnsafeMutablePointer<Bool>.allocate(capacity: n)
        defer { sts.deallocate(); ok.deallocate() }
        final class Shared: @unchecked Sendable {
            let files: [Pending]; let sts: UnsafeMutablePointer<stat>; let ok: UnsafeMutablePointer<Bool>
            init(_ f: [Pending], _ s: UnsafeMutablePointer<stat>, _ o: UnsafeMutablePointer<Bool>) {
                files = f
                sts = s
                ok = o
            }
            func run(_ r: Range<Int>) { for i in r { ok[i] = fstatat(files[i].dir, files[i].name, sts + i, 0) == 0 } }
        }
        // (Two threads were measured too: no faster on this 2-core machine, where git status
        // with its preloaded index is the contender; docs/performance.md.)
        Shared(files, sts, ok).run(0..<n)
        found.reserveCapacity(found.count + n)
        for i in 0..<n where ok[i] && (sts[i].st_mode & S_IFMT) == S_IFREG {
            found.append(Matched(rel: files[i].rel, st: sts[i], dir: files[i].dirAbs, name: files[i].name))
        }
    }

    /// Whether path components `s` match pattern components `p` (`**` = zero or more components).
    static func matches(_ p: ArraySlice<String>, _ s: ArraySlice<String>) -> Bool {
        guard let first = p.first else { return s.isEmpty }
        if first == "**" {
            let rest = p.dropFirst()
            if rest.isEmpty { return true }
            var i = s.startIndex
            while i <= s.endIndex {
                if matches(rest, s[i...]) { return true }
                i += 1
            }
            return false
        }
        guard let name = s.first else { return false }
        if isGlob(first) {
            if fnmatch(first, name, 0) != 0 { return false }
        } else if first != name { return false }
        return matches(p.dropFirst(), s.dropFirst())
    }

    /// Resolves and hashes inputs through the stat cache.
    public static func resolve(_ patterns: [String],
                               base: String,
                               never: [String],
                               cache: StatCache) throws -> FileSet {
        cache.preload()   // read while the tree is walked
        return try hash(try match(patterns, base: base, never: never), cache: cache)
    }

    /// Hashes matched files through the stat cache.
    public static func hash(_ m: [Matched], cache: StatCache) throws -> FileSet {
        var files: [(path: String, hash: String)] = []
        var exec = Set<String>()
        files.reserveCapacity(m.count)
        for f in m {
            do { files.append((f.rel, try cache.hash(f.abs, f.st))) } catch {
                throw FileSetError("input '\(f.rel)' cannot be read: \(error)")
            }
            if f.st.st_mode & 0o111 != 0 { exec.insert(f.rel) }
        }
        return FileSet(files: files, executable: exec)
    }
}
