import CBatonSys
import Glibc

/// How a stage's command is given: argv (no shell) or shell text for `/bin/sh -c`.
public enum Command: Equatable, Sendable {
    case argv([String])
    case shell(String)

    public var argv: [String] {
        switch self {
        case let .argv(a): return a
        case let .shell(s): return ["/bin/sh", "-c", s]
        }
    }

    public var display: String {
        switch self {
        case let .argv(a): return a.map(Command.quote).joined(separator: " ")
        case let .shell(s): return s
        }
    }

    public var json: JSON {
        switch self {
        case let .argv(a): return .array(a.map(JSON.string))
        case let .shell(s): return .string(s)
        }
    }

    public static func quote(_ s: String) -> String {
        if !s.isEmpty, s.utf8.allSatisfy({ c in
            (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) || "-_./=:,+@%".utf8.contains(c)
        }) { return s }
        return "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

extension String {
    public func replacingOccurrences(of a: String, with b: String) -> String {
        guard !a.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: a) {
            out += rest[..<r.lowerBound]
            out += b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

extension Substring {
    public func range(of needle: String) -> Range<Substring.Index>? {
        let n = Array(needle.utf8)
        let h = Array(self.utf8)
        guard n.count <= h.count, !n.isEmpty else { return nil }
        for i in 0...(h.count - n.count) where h[i] == n[0] && Array(h[i..<(i + n.count)]) == n {
            let lo = self.utf8.index(self.utf8.startIndex, offsetBy: i)
            let hi = self.utf8.index(lo, offsetBy: n.count)
            return lo..<hi
        }
        return nil
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public let message: String
    /// The exit code a shell gives the same failure: 127 not found, 126 found but not
    /// executable (permission denied, a directory, not an executable format).
    public var exitCode: Int32
    public init(message: String, exitCode: Int32 = Termination.notFound) {
        self.message = message
        self.exitCode = exitCode
    }
    public var description: String { message }
}

public enum Spawner {
    /// The environment of this process, as a dictionary.
    public static func currentEnvironment() -> [String: String] {
        var env: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return env
    }

    /// What looking a command up found.
    public enum Lookup: Equatable {
        case found(String)
        case notExecutable(String)   // exists, but exec would fail with EACCES (126)
        case notFound                // 127
    }

    /// Finds `name` as execvp would, in the PATH the stage will have. As execvp does, a
    /// match without the execute bit does not stop the search, but if nothing better is
    /// found the answer is "permission denied", not "not found".
    public static func lookup(_ name: String, path: String?, cwd: String?) -> Lookup {
        func check(_ full: String) -> Lookup {
            var st = stat()
            guard stat(full, &st) == 0 else { return .notFound }
            if (st.st_mode & S_IFMT) == S_IFREG, access(full, X_OK) == 0 { return .found(full) }
            return .notExecutable(full)
        }
        if name.contains("/") {
            return check(name.hasPrefix("/") ? name : FileIO.join(cwd ?? FileIO.currentDirectory(), name))
        }
        var denied: String? = nil
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":", omittingEmptySubsequences: false) {
            let d = dir.isEmpty ? "." : String(dir)
            switch check(FileIO.join(d, name)) {
            case let .found(full): return .found(full)
            case let .notExecutable(full): if denied == nil { denied = full }
            case .notFound: break
            }
        }
        return denied.map { .notExecutable($0) } ?? .notFound
    }

    /// Starts argv in its own process group (or session) with the given descriptors.
    public static func spawn(argv: [String], env: [String: String], cwd: String?,
                             stdin: Int32, stdout: Int32, stderr: Int32,
                             newSession: Bool = false, dieWithParent: Bool = true) throws -> pid_t {
        try spawn(argv: argv, env: env, cwd: cwd, stdin: stdin, stdout: stdout, stderr: stderr,
                  newSession: newSession, dieWithParent: dieWithParent, pidfd: nil)
    }

    /// A process `start` began: its pid, a pidfd (-1 if none could be made) and the memory
    /// it runs on until its exec, which `release` frees once the process has been reaped.
    public struct Started {
        public let pid: pid_t
        public let pidfd: Int32
        let block: UnsafeMutableRawPointer?
        /// Frees the child's start-up memory: only after waitpid has returned its pid.
        public func release() { if let block { baton_spawn_release(block) } }
    }

    /// Starts argv as `spawn` does, without waiting for its exec (the stage path: the runner
    /// goes on while the kernel loads the program). A failure after the command was found
    /// (not an executable format, a vanished directory) ends the process with 126 or 127 and
    /// a line on its stderr, as a shell reports it.
    public static func start(argv: [String], env: [String: String], cwd: String?,
                             stdin: Int32, stdout: Int32, stderr: Int32) throws -> Started {
        var fd: Int32 = -1
        var block: UnsafeMutableRawPointer? = nil
        let pid = try spawn(argv: argv, env: env, cwd: cwd, stdin: stdin, stdout: stdout, stderr: stderr,
                            newSession: false, dieWithParent: true, pidfd: &fd, block: &block)
        return Started(pid: pid, pidfd: fd, block: block)
    }

    private static func spawn(argv: [String], env: [String: String], cwd: String?,
                              stdin: Int32, stdout: Int32, stderr: Int32,
                              newSession: Bool, dieWithParent: Bool, pidfd: UnsafeMutablePointer<Int32>?,
                              block: UnsafeMutablePointer<UnsafeMutableRawPointer?>? = nil) throws -> pid_t {
        guard let first = argv.first, !first.isEmpty else { throw SpawnError(message: "empty command") }
        if let cwd, !FileIO.isDirectory(cwd) { throw SpawnError(message: "working directory \(cwd) does not exist") }
        let path: String
        switch lookup(first, path: env["PATH"], cwd: cwd) {
        case let .found(p): path = p
        case let .notExecutable(p):
            throw SpawnError(message: "permission denied: \(first)" + (p == first ? "" : " (\(p))")
                             + " is not an executable file",
                             exitCode: Termination.notExecutable)
        case .notFound: throw SpawnError(message: "command not found: \(first)")
        }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { cArgv.forEach { free($0) }; cEnv.forEach { free($0) } }
        var pid: pid_t = 0
        let err: Int32 = path.withCString { cPath in
            cArgv.withUnsafeBufferPointer { av in
                cEnv.withUnsafeBufferPointer { ev in
                    let run = { (cwdPtr: UnsafePointer<CChar>?) -> Int32 in
                        var o = baton_spawn_opts(path: cPath, argv: av.baseAddress, envp: ev.baseAddress, cwd: cwdPtr,
                                                 stdin_fd: stdin, stdout_fd: stdout, stderr_fd: stderr,
                                                 new_session: newSession ? 1 : 0,
                                                 pdeathsig: dieWithParent ? SIGKILL : 0)
                        if let block { return baton_spawn_async(&o, &pid, pidfd, block) }
                        return baton_spawn(&o, &pid, pidfd)
                    }
                    if let cwd { return cwd.withCString { run($0) } }
                    return run(nil)
                }
            }
        }
        if err != 0 {
            throw SpawnError(message: "cannot start \(first): \(String(cString: strerror(err)))",
                             exitCode: err == ENOENT ? Termination.notFound : Termination.notExecutable)
        }
        return pid
    }
}

extension String {
    /// The first occurrence of `needle` (Foundation-free).
    public func range(of needle: String) -> Range<String.Index>? { Substring(self).range(of: needle) }
    public func contains(_ needle: String) -> Bool { needle.isEmpty || range(of: needle) != nil }
}
