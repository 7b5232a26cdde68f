import Foundation
import Testing

/// Issue 22, item 12: `baton log --stage` streams a log of any size in bounded memory.
extension IntegrityTests {
    /// Runs `baton ARGS` in `cwd` with stdout into `out` (a path); its exit status and peak
    /// resident memory in MiB, as /usr/bin/time measures it (wait4's ru_maxrss of a child
    /// forked from a small process: spawned from this test process, the kernel would count
    /// the test's own memory, which the child shares until its exec).
    static func peakRSS(_ args: [String], cwd: String, out: String = "/dev/null") -> (status: Int32, mib: Double) {
        let report = cwd + "/rss.txt"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/time")
        p.arguments = ["-f", "%M", "-o", report, Harness.binary] + args
        p.currentDirectoryURL = URL(fileURLWithPath: cwd)
        p.environment = Harness.environment([:])
        p.standardOutput = FileHandle(forWritingAtPath: out) ?? FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return (-1, -1) }
        p.waitUntilExit()
        let kib = Harness.read(report).flatMap { Double($0.split(separator: "\n").last.map(String.init) ?? "") } ?? -1
        return (p.terminationStatus, kib / 1024)
    }

    @Test func logOfAHugeStageStreamsInBoundedMemory() throws {
        let d = Harness.tempDir("biglog")
        Harness.write(d + "/r.lua", """
            runStage{id = 'big', cmd = 'yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 200000000'}
            runStage{id = 'utf8', cmd = {'sh', '-c', 'i=0; while [ $i -lt 3000 ]; do printf "é日本語\\\\t\\\\033[1mx\\\\n"; i=$((i+1)); done | tee /dev/stderr'}}
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d, timeout: 120)
        #expect(r.code == 0, "\(r.stderr)")
        defer { if let run = Harness.latestRun(d) { try? FileManager.default.removeItem(atPath: run + "/stages/big") } }
        // (/usr/bin/time is installed by scripts/deps; where it is missing the memory half is said skipped)
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/time") else {
            print("integrity: peak RSS of log --stage not measured: no /usr/bin/time")
            return
        }
        let copy = d + "/copy.out"
        FileManager.default.createFile(atPath: copy, contents: nil)
        let plain = Self.peakRSS(["log", "--stage", "big"], cwd: d, out: copy)
        print("integrity: log --stage of a 200 MB log: peak RSS \(plain.mib) MiB")
        #expect(plain.status == 0 && plain.mib <= 20, "log --stage: exit \(plain.status), \(plain.mib) MiB")
        var st = stat()
        #expect(stat(copy, &st) == 0 && st.st_size == 200_000_000, "copied \(st.st_size) bytes")
        try? FileManager.default.removeItem(atPath: copy)
        let json = Self.peakRSS(["log", "--stage", "big", "--json"], cwd: d)
        print("integrity: log --stage --json of a 200 MB log: peak RSS \(json.mib) MiB")
        #expect(json.status == 0 && json.mib <= 20, "log --stage --json: exit \(json.status), \(json.mib) MiB")
        // What streams is what was written: multi-byte characters across chunk ends, escapes.
        let u = try Harness.run(["log", "--stage", "utf8", "--json"], cwd: d)
        let doc = try JSONSerialization.jsonObject(with: Data(u.stdout.utf8)) as? [[String: Any]]
        let line = "é日本語\t\u{1B}[1mx\n"
        let want = String(repeating: line, count: 3000)
        #expect(doc?.first?["stdout"] as? String == want && doc?.first?["stderr"] as? String == want, "\(u.stdout.prefix(200))")
        let p = try Harness.run(["log", "--stage", "utf8"], cwd: d)
        #expect(p.stdout == want + "--- stderr ---\n" + want)
    }
}
