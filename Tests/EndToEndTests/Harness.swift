import Foundation
import Testing

/// Runs the built `baton` binary as a user would: real processes, files and signals.
enum Harness {
    static let packageRoot: URL = {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { u.deleteLastPathComponent() }
        return u
    }()

    static let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures").path

    static let binary: String = {
        if let b = ProcessInfo.processInfo.environment["BATON_BIN"] { return b }
        // The test bundle sits next to the products.
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        for _ in 0..<4 {
            let cand = dir.appendingPathComponent("baton").path
            if FileManager.default.isExecutableFile(atPath: cand) { return cand }
            dir.deleteLastPathComponent()
        }
        return packageRoot.appendingPathComponent(".build/debug/baton").path
    }()

    struct Result {
        var code: Int32
        var stdout: String
        var stderr: String
        var signaled: Bool
    }

    /// A fresh directory for one test.
    static func tempDir(_ name: String = "t") -> String {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("baton-e2e-\(name)-\(UUID().uuidString.prefix(8))").path
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func write(_ path: String, _ text: String, mode: Int = 0o644) {
        try! FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try! text.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, mode_t(mode))
    }

    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    static func environment(_ extra: [String: String], unset: [String] = []) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["NO_COLOR"] = "1"
        env["PATH"] = "\(fixtures):" + (env["PATH"] ?? "/usr/bin:/bin")
        env.removeValue(forKey: "BATON_RUNS_DIR")
        // Runs are found in the nearest .baton from the test's directory up: never a stray
        // one in the temporary directory itself.
        env["BATON_CEILING_DIRS"] = FileManager.default.temporaryDirectory.path
        for k in unset { env.removeValue(forKey: k) }
        for (k, v) in extra { env[k] = v }
        return env
    }

    /// `unset`: variables removed from the environment baton gets (e.g. SWIFT_BACKTRACE,
    /// to run as a user's default environment does).
    static func start(_ args: [String], cwd: String, env: [String: String] = [:], unset: [String] = [],
                      stdin: String? = nil) throws -> (Process, Pipe, Pipe) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.environment = environment(env, unset: unset)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        if let s = stdin {
            let inp = Pipe()
            p.standardInput = inp
            try p.run()
            inp.fileHandleForWriting.write(s.data(using: .utf8)!)
            try inp.fileHandleForWriting.close()
        } else {
            p.standardInput = FileHandle.nullDevice
            try p.run()
        }
        return (p, out, err)
    }

    /// Runs baton to completion (bounded: killed after `timeout` seconds).
    @discardableResult
    static func run(_ args: [String], cwd: String, env: [String: String] = [:], stdin: String? = nil, timeout: Double = 120) throws -> Result {
        let (p, out, err) = try start(args, cwd: cwd, env: env, stdin: stdin)
        final class Box: @unchecked Sendable { var data = Data() }
        let outBox = Box(), errBox = Box()
        let g = DispatchGroup()
        g.enter(); DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        g.enter(); DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        g.wait()
        return Result(code: p.terminationStatus, stdout: String(decoding: outBox.data, as: UTF8.self),
                      stderr: String(decoding: errBox.data, as: UTF8.self), signaled: p.terminationReason == .uncaughtSignal)
    }

    /// A pipe's output, collected as it comes (on a background thread): `text` is what has
    /// come so far, `all()` waits for the writer to close the pipe.
    final class Output: @unchecked Sendable {
        private let lock = NSLock()
        private var data = Data()
        private let closed = DispatchSemaphore(value: 0)

        init(_ pipe: Pipe) {
            let h = pipe.fileHandleForReading
            DispatchQueue.global().async {
                while case let chunk = h.availableData, !chunk.isEmpty {
                    self.lock.lock(); self.data.append(chunk); self.lock.unlock()
                }
                self.closed.signal()
            }
        }

        var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }

        func all() -> String { closed.wait(); closed.signal(); return text }
    }

    /// Polls `condition` until it holds or `timeout` passes. Returns whether it held.
    @discardableResult
    static func waitFor(_ timeout: Double = 20, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    // MARK: run directories

    static func runDirs(_ cwd: String) -> [String] {
        let root = cwd + "/.baton/runs"
        let ids = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        return ids.map { root + "/" + $0 }
    }

    static func latestRun(_ cwd: String) -> String? { runDirs(cwd).last }

    static func final(_ runDir: String) -> [String: Any]? {
        guard let d = FileManager.default.contents(atPath: runDir + "/final.json") else { return nil }
        return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
    }

    /// Journal events; asserts every line is valid JSON with seq 1..n and run_started first.
    static func journal(_ runDir: String, allowTornTail: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) -> [[String: Any]] {
        guard let text = read(runDir + "/journal.jsonl") else {
            Issue.record("no journal in \(runDir)", sourceLocation: sourceLocation); return []
        }
        var events: [[String: Any]] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for (i, line) in lines.enumerated() where !line.isEmpty {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                if allowTornTail && i == lines.count - 1 { continue }
                Issue.record("journal line \(i + 1) is not valid JSON: \(line.prefix(200))", sourceLocation: sourceLocation)
                continue
            }
            events.append(obj)
        }
        let seqs = events.compactMap { $0["seq"] as? Int }
        #expect(seqs == Array(1...max(1, seqs.count)).prefix(seqs.count).map { $0 }, "seq must be 1..n", sourceLocation: sourceLocation)
        #expect(events.first?["type"] as? String == "run_started", "the first event must be run_started", sourceLocation: sourceLocation)
        for e in events {
            #expect(e["v"] as? Int == 1 && e["ts"] is String && e["run"] is String, "event lacks v/ts/run: \(e)", sourceLocation: sourceLocation)
        }
        return events
    }

    static func events(_ events: [[String: Any]], type: String) -> [[String: Any]] {
        events.filter { $0["type"] as? String == type }
    }

    /// Pids of live processes whose environment carries this marker (BATON_RUN_ID=...).
    static func processes(withEnv marker: String) -> [Int32] {
        let me = getpid()
        var out: [Int32] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), pid != me else { continue }
            guard let env = FileManager.default.contents(atPath: "/proc/\(name)/environ") else { continue }
            if env.split(separator: 0).contains(where: { $0.elementsEqual(marker.utf8) }) {
                if let stat = read("/proc/\(name)/stat"), let close = stat.lastIndex(of: ")"),
                   stat[stat.index(close, offsetBy: 2)] == "Z" { continue }
                out.append(pid)
            }
        }
        return out
    }

    /// Processes whose command line contains `needle`.
    static func processes(matching needle: String) -> [Int32] {
        var out: [Int32] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), pid != getpid(), let d = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { continue }
            let cmd = String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            if cmd.contains(needle) {
                if let stat = read("/proc/\(name)/stat"), let close = stat.lastIndex(of: ")"),
                   stat[stat.index(close, offsetBy: 2)] == "Z" { continue }
                out.append(pid)
            }
        }
        return out
    }
}
