import Foundation
import Testing

/// Issue 22: integrity and containment, each item held by the binary on real processes,
/// files and signals.
@Suite struct IntegrityTests {
    // MARK: 3. every fatal signal leaves a final record

    static let fatalSignals: [(Int32, String)] = [
        (SIGQUIT, "SIGQUIT"), (SIGUSR1, "SIGUSR1"), (SIGUSR2, "SIGUSR2"), (SIGXCPU, "SIGXCPU"),
        (SIGXFSZ, "SIGXFSZ"), (SIGVTALRM, "SIGVTALRM"), (SIGPROF, "SIGPROF"), (SIGALRM, "SIGALRM"),
    ]

    /// Each signal whose default action ends a process ends the run with a final.json naming
    /// it and exit 128+N. SIGALRM is tried with a budget in force too: it must not pass for
    /// the budget running out.
    @Test(arguments: fatalSignals.map { $0.0 }, [false, true])
    func everyFatalSignalLeavesAFinal(sig: Int32, withBudget: Bool) throws {
        let name = Self.fatalSignals.first { $0.0 == sig }!.1
        let d = Harness.tempDir("fatal\(sig)")
        Harness.write(d + "/r.lua", "baton.log('sleeping')\nbaton.sleep(60)\n")
        let (p, _, _) = try Harness.start(["run"] + (withBudget ? ["--budget", "1h"] : []) + ["r.lua"], cwd: d)
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("sleeping") == true })
        kill(p.processIdentifier, sig)
        #expect(Harness.waitFor(20) { !p.isRunning }, "\(name) did not end the run")
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(p.terminationReason == .exit, "baton died of \(name) instead of ending the run")
        #expect(p.terminationStatus == 128 + sig)
        let run = try #require(Harness.latestRun(d))
        _ = Harness.journal(run)
        let f = try #require(Harness.final(run), "no final.json after \(name)")
        #expect(f["status"] as? String == "cancelled")
        #expect(f["exit_code"] as? Int == Int(128 + sig))
        #expect((f["reason"] as? String)?.contains(name) == true, "reason: \(f["reason"] ?? "nil")")
    }

    /// The budget still ends a run as the budget (124), distinct from an outside SIGALRM.
    @Test func theBudgetIsStillTheBudget() throws {
        let d = Harness.tempDir("budget")
        Harness.write(d + "/r.lua", "baton.sleep(60)\n")
        let r = try Harness.run(["run", "--budget", "1s", "r.lua"], cwd: d, timeout: 30)
        #expect(r.code == 124, "stderr: \(r.stderr)")
        let f = try #require(Harness.latestRun(d).flatMap { Harness.final($0) })
        #expect((f["reason"] as? String)?.contains("run budget") == true)
    }

    // MARK: 5. one stage, one log folder

    /// Ids that the old mapping folded together each get their own folder; `log --stage`
    /// shows each its own output; a run written with the old layout still reads.
    @Test func oneStageOneLogFolder() throws {
        let d = Harness.tempDir("folders")
        let ids = ["train/1", "train_1", "train%2F1", "train 1", ".hidden", "..", "Train_1"]
        Harness.write(d + "/r.lua", ids.enumerated().map { i, id in
            "runStage{id = \(luaQuote(id)), cmd = {'echo', 'output-\(i)'}}" }.joined(separator: "\n") + "\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "stderr: \(r.stderr)")
        let run = try #require(Harness.latestRun(d))
        let started = Harness.events(Harness.journal(run), type: "stage_started")
        // (journaled relative to the run directory: issue 22, item 6)
        let folders = started.compactMap { (($0["logs"] as? [String: Any])?["stdout"] as? String).map {
            (($0.hasPrefix("/") ? $0 : run + "/" + $0) as NSString).deletingLastPathComponent } }
        #expect(Set(folders).count == ids.count, "folders: \(folders)")
        for f in folders { #expect(f.hasPrefix(run + "/stages/") && !f.dropFirst(run.count + 8).contains("/"), "\(f)") }
        for (i, id) in ids.enumerated() {
            let l = try Harness.run(["log", "--stage", id], cwd: d)
            #expect(l.code == 0 && l.stdout == "output-\(i)\n", "log --stage \(id): \(l.stdout) \(l.stderr)")
        }
        // The old layout (every unsafe character as '_'): the journal's paths are followed.
        let old = run + "/stages/old_layout"
        try FileManager.default.moveItem(atPath: folders[0], toPath: old)
        let j = try #require(Harness.read(run + "/journal.jsonl"))
        let written = String(folders[0].dropFirst(run.count + 1))   // as journaled: relative
        try j.replacingOccurrences(of: "\"" + written + "/", with: "\"" + old + "/").write(toFile: run + "/journal.jsonl", atomically: true, encoding: .utf8)
        let l = try Harness.run(["log", "--stage", ids[0]], cwd: d)
        #expect(l.code == 0 && l.stdout == "output-0\n", "\(l.stdout) \(l.stderr)")
    }

    // MARK: 7. outputs go where the user said

    func finishedRun(_ tag: String) throws -> String {
        let d = Harness.tempDir(tag)
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\nrunStage{id = 'b', cmd = 'true'}\n")
        #expect(try Harness.run(["run", "r.lua"], cwd: d).code == 0)
        return d
    }

    @Test func reportOutputsGoWhereTheUserSaid() throws {
        let d = try finishedRun("outputs")
        // '-' is stdout
        let t = try Harness.run(["report", "--trace", "-"], cwd: d)
        #expect(t.code == 0, "\(t.stderr)")
        let doc = try? JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any]
        #expect(doc?["traceEvents"] != nil, "stdout: \(t.stdout.prefix(300))")
        #expect(!FileManager.default.fileExists(atPath: d + "/-"))
        let v = try Harness.run(["report", "--tsv", "-"], cwd: d)
        #expect(v.code == 0 && v.stdout.hasPrefix("task_id\t") || v.stdout.contains("\tstatus\t"), "stdout: \(v.stdout.prefix(300))")
        #expect(!FileManager.default.fileExists(atPath: d + "/-"))
        // a symlink to the process's stdout (what /dev/stdout is) is written through
        symlink("/proc/self/fd/1", d + "/mystdout")
        let s = try Harness.run(["report", "--tsv", "mystdout"], cwd: d)
        #expect(s.code == 0 && s.stdout.contains("\tstatus\t"), "stdout: \(s.stdout.prefix(300)) \(s.stderr)")
        #expect(isSymlink(d + "/mystdout"), "the link was replaced")
        // /dev/stdout itself, as root, in a mount namespace of its own whose /dev is a tmpfs
        // holding only that link (the bug replaced it with a regular file: never on the host)
        if getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") {
            let script = "mount -t tmpfs none /dev && ln -s /proc/self/fd/1 /dev/stdout && \"$0\" report --tsv /dev/stdout"
                + " && test -L /dev/stdout && echo STILL-A-LINK"
            let u = Process()
            u.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            u.arguments = ["--mount", "--propagation", "private", "sh", "-c", script, Harness.binary]
            u.currentDirectoryURL = URL(fileURLWithPath: d)
            u.environment = Harness.environment([:])
            let out = Pipe()
            u.standardOutput = out
            u.standardError = FileHandle.nullDevice
            try u.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            u.waitUntilExit()
            #expect(text.contains("\tstatus\t") && text.hasSuffix("STILL-A-LINK\n"), "/dev/stdout: \(text.suffix(300))")
        }
        // a FIFO is written, not replaced
        #expect(mkfifo(d + "/fifo", 0o600) == 0)
        final class Box: @unchecked Sendable { var text = "" }
        let got = Box()
        let reader = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            if let h = FileHandle(forReadingAtPath: d + "/fifo") { got.text = String(decoding: h.readDataToEndOfFile(), as: UTF8.self) }
            reader.signal()
        }
        let f = try Harness.run(["report", "--tsv", "fifo"], cwd: d, timeout: 20)
        if f.code != 0 || reader.wait(timeout: .now() + 10) == .timedOut {
            // unblock the reader
            let fd = open(d + "/fifo", O_WRONLY | O_NONBLOCK); if fd >= 0 { close(fd) }
            _ = reader.wait(timeout: .now() + 5)
        }
        #expect(f.code == 0, "\(f.stderr)")
        #expect(got.text.contains("\tstatus\t"), "the FIFO's reader got: \(got.text.prefix(200))")
        var st = stat()
        #expect(lstat(d + "/fifo", &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO, "the FIFO was replaced")
        // a character device is written, not replaced (our own /dev/null node)
        if mknod(d + "/null", S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0 {
            #expect(try Harness.run(["report", "--trace", "null"], cwd: d).code == 0)
            #expect(lstat(d + "/null", &st) == 0 && (st.st_mode & S_IFMT) == S_IFCHR, "the device was replaced")
        }
        // a symlink is followed to its target, existing or not; the link stays
        Harness.write(d + "/real.tsv", "old\n")
        symlink("real.tsv", d + "/link.tsv")
        #expect(try Harness.run(["report", "--tsv", "link.tsv"], cwd: d).code == 0)
        #expect(isSymlink(d + "/link.tsv"))
        #expect(Harness.read(d + "/real.tsv")?.contains("\tstatus\t") == true)
        symlink("sub/made.json", d + "/dangling.json")
        try FileManager.default.createDirectory(atPath: d + "/sub", withIntermediateDirectories: true)
        #expect(try Harness.run(["report", "--trace", "dangling.json"], cwd: d).code == 0)
        #expect(isSymlink(d + "/dangling.json"))
        #expect(Harness.read(d + "/sub/made.json")?.contains("traceEvents") == true)
        // a regular file is still replaced whole (temp + rename)
        #expect(try Harness.run(["report", "--tsv", "plain.tsv"], cwd: d).code == 0)
        #expect(Harness.read(d + "/plain.tsv")?.contains("\tstatus\t") == true)
    }

    func isSymlink(_ p: String) -> Bool {
        var st = stat()
        return lstat(p, &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
    }

    // MARK: 9. refusals reported as refusals

    @Test(arguments: [
        ("cmd", "runStage{id = 'a', cmd = 'echo a\\0b'}"),
        ("cmd", "runStage{id = 'a', cmd = {'echo', 'a\\0b'}}"),
        ("env", "runStage{id = 'a', cmd = 'true', env = {['K\\0X'] = 'v'}}"),
        ("env", "runStage{id = 'a', cmd = 'true', env = {K = 'v\\0w'}}"),
        ("cwd", "runStage{id = 'a', cmd = 'true', cwd = '.\\0/x'}"),
        ("requireFiles", "runStage{id = 'a', cmd = 'true', requireFiles = {'out\\0put'}}"),
        ("id", "runStage{id = 'a\\0b', cmd = 'true'}"),
        ("cmd", "baton.sh('echo a\\0b')"),
        ("command", "os.execute('echo a\\0b')"),
        ("path", "baton.fs.write('a\\0b', 'x')"),
        ("path", "preflight{checks = {{path = 'a\\0b'}}}"),
    ])
    func nulBytesAreAFieldError(field: String, line: String) throws {
        let d = Harness.tempDir("nul")
        Harness.write(d + "/r.lua", line + "\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 3, "\(line): exit \(r.code), stderr: \(r.stderr)")
        #expect(r.stderr.contains(field) && r.stderr.contains("NUL"), "\(line): \(r.stderr)")
        let f = Harness.latestRun(d).flatMap { Harness.final($0) }
        #expect(f?["exit_code"] as? Int == 3)
    }

    /// `baton cancel` of a run another user's runner owns: EPERM is said, exit 1, nothing
    /// says cancelled, the run goes on.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"),
                   "needs root and /usr/bin/setpriv to start a runner as another user"))
    func cancelThatMayNotSignalIsARefusal() throws {
        let d = Harness.tempDir("eperm")
        chmod(d, 0o755)
        Harness.write(d + "/r.lua", "baton.log('up')\nbaton.sleep(60)\n")
        // runs shared with other users (run directories are 0700 otherwise: they could not see it)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d, env: ["BATON_RUNS_MODE": "0755"])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("\"up\"") == true })
        let c = Process()
        c.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        c.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", Harness.binary, "cancel"]
        c.currentDirectoryURL = URL(fileURLWithPath: d)
        c.environment = Harness.environment([:])
        let out = Pipe(), err = Pipe()
        c.standardOutput = out; c.standardError = err
        try c.run()
        let o = Harness.Output(out), e = Harness.Output(err)
        let ended = Harness.waitFor(20) { !c.isRunning }
        if !ended { kill(c.processIdentifier, SIGKILL) }
        c.waitUntilExit()
        let text = o.all() + e.all()
        #expect(ended, "cancel did not give up: \(text)")
        #expect(c.terminationStatus == 1, "exit \(c.terminationStatus): \(text)")
        #expect(text.contains("not permitted"), "\(text)")
        #expect(!text.contains("cancelled"), "\(text)")
        #expect(p.isRunning, "the run must go on")
    }

    // MARK: 10. terminal-safe text

    @Test func controlCharactersAreShownEscaped() throws {
        let d = Harness.tempDir("ctl")
        let forged = "12:00:00.000 #99 final succeeded exit 0"
        Harness.write(d + "/r.lua", """
            baton.log("bell\\7 and \\27]0;title\\7")
            runStage{id = "evil\\n\(forged)", cmd = {"sh", "-c", "printf 'x\\\\033[31mred\\\\n' >&2; exit 1"}, allowFail = true}
            runStage{id = "slow\\27[2J", cmd = "sleep 30", background = true}
            baton.sleep(30)
            """)
        let (p, _, _) = try Harness.start(["run", "r.lua"], cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("slow") == true })
        func clean(_ what: String, _ r: Harness.Result, sourceLocation: SourceLocation = #_sourceLocation) {
            let text = r.stdout + r.stderr
            #expect(!text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" && $0 != "\t" || $0.value == 0x7f },
                    "\(what) printed a raw control character: \(text.debugDescription)", sourceLocation: sourceLocation)
            #expect(!text.split(separator: "\n").contains { $0.hasPrefix(forged) }, "\(what): a forged line", sourceLocation: sourceLocation)
        }
        let log = try Harness.run(["log"], cwd: d)
        clean("log", log)
        #expect(log.stdout.contains("evil\\n12:00"), "\(log.stdout)")
        #expect(log.stdout.contains("bell\\x07"), "\(log.stdout)")
        let st = try Harness.run(["status"], cwd: d)
        clean("status", st)
        #expect(st.stdout.contains("slow\\e[2J"), "\(st.stdout)")
        clean("runs", try Harness.run(["runs"], cwd: d))
        kill(p.processIdentifier, SIGTERM)
        #expect(Harness.waitFor(20) { !p.isRunning })
        // a reason with control characters
        let d2 = Harness.tempDir("ctl2")
        Harness.write(d2 + "/r.lua", "error('\\27[2Jgone\\7')\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d2)
        for cmd in [["status"], ["runs"], ["log"]] { clean(cmd[0], try Harness.run(cmd, cwd: d2)) }
        #expect(try Harness.run(["status"], cwd: d2).stdout.contains("\\e[2Jgone\\x07"))
    }

    /// The shell shows stage output, stage ids and reasons escaped, not as colours: a value
    /// as a Lua literal, `:status`, `:runs` and `:tail` with `\e`.
    @Test func theShellShowsControlCharactersEscaped() throws {
        let d = Harness.tempDir("ctlshell")
        Harness.write(d + "/r.lua", "runStage{id = 'c', cmd = {'printf', '\\27[32mGREEN'}}\nerror('\\27[2Jgone', 0)\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let run = try #require(Harness.latestRun(d))
        let id = (run as NSString).lastPathComponent
        let p = try Pane("ctl", cwd: d)
        defer { p.kill() }
        p.expectLine(#"runStage{id = "v", cmd = {"printf", "\027[31mRED"}}.stdout"#, #""\027[31mRED""#)
        p.expectLine(":status \(id)", #"reason   \e[2Jgone"#)
        p.expectLine(":runs", #"\e[2Jgone"#)
        p.expectLine(":tail \(id) c", #"\e[32mGREEN"#)
        p.expectLine(#"error("\027[2Jboom", 0)"#, #"\e[2Jboom"#)
        #expect(!p.rawScreen().contains("\u{1b}[32m") && !p.rawScreen().contains("\u{1b}[31m"), "raw colours reached the terminal")
    }

    // MARK: 11. bounded records

    @Test func aHugeErrorMessageDoesNotMakeAHugeFinal() throws {
        let d = Harness.tempDir("huge")
        Harness.write(d + "/r.lua", "error(string.rep('x', 50 * 1024 * 1024) .. 'END', 0)\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d, timeout: 120)
        #expect(r.code == 1)
        #expect(r.stderr.utf8.count < 64 << 10, "stderr is \(r.stderr.utf8.count) bytes")
        let run = try #require(Harness.latestRun(d))
        let size = (try? FileManager.default.attributesOfItem(atPath: run + "/final.json")[.size] as? Int) ?? -1
        #expect(size > 0 && size < 64 << 10, "final.json is \(size) bytes")
        let journalSize = (try? FileManager.default.attributesOfItem(atPath: run + "/journal.jsonl")[.size] as? Int) ?? -1
        #expect(journalSize < 256 << 10, "journal is \(journalSize) bytes")
        let f = try #require(Harness.final(run))
        let reason = try #require(f["reason"] as? String)
        #expect(reason.utf8.count <= 4096 + 200 && reason.contains("cut"), "\(reason.suffix(200))")
        let file = try #require(f["reason_file"] as? String, "final.json names the whole text's file")
        let whole = try #require(Harness.read(file.hasPrefix("/") ? file : run + "/" + file))
        #expect(whole.utf8.count == 50 * 1024 * 1024 + 3 && whole.hasSuffix("END"))
        let st = try Harness.run(["status"], cwd: d)
        #expect(st.stdout.utf8.count < 64 << 10)
    }

    // MARK: 13. the shell's runs are not `latest` outside it

    @Test func shellRunsAreNeverLatestOutsideTheShell() throws {
        let d = Harness.tempDir("latest")
        try FileManager.default.createDirectory(atPath: d + "/.baton", withIntermediateDirectories: true)
        Harness.write(d + "/stuck.lua", "baton.log('stuck')\nbaton.sleep(120)\n")
        let (p, _, _) = try Harness.start(["run", "stuck.lua"], cwd: d)
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        #expect(Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains("stuck") == true })
        let stuck = try #require(Harness.latestRun(d))
        let stuckID = (stuck as NSString).lastPathComponent
        usleep(20_000)
        // a shell session opens a run of its own (newer) and ends it
        let pane = try Pane("latest", cwd: d)
        pane.expectLine("runStage{id = 'x', cmd = 'true'}.ok", "true")
        pane.send(":quit")
        #expect(Harness.waitFor(10) { Harness.runDirs(d).count == 2 && Harness.runDirs(d).allSatisfy { Harness.final($0) != nil || $0 == stuck } })
        pane.kill()
        let st = try Harness.run(["status"], cwd: d)
        #expect(st.stdout.contains(stuckID), "status (latest) must be the stuck run: \(st.stdout)")
        let c = try Harness.run(["cancel"], cwd: d, timeout: 60)
        #expect(c.code == 0, "\(c.stderr)")
        #expect((c.stdout + c.stderr).contains(stuckID), "cancel says which run: \(c.stdout) \(c.stderr)")
        #expect(Harness.waitFor(20) { !p.isRunning })
        #expect(Harness.final(stuck)?["status"] as? String == "cancelled")
        // none live: says so, non-zero
        let none = try Harness.run(["cancel"], cwd: d)
        #expect(none.code == 1, "exit \(none.code): \(none.stderr)")
        #expect(none.stderr.contains("no live run"), "\(none.stderr)")
    }

    // MARK: 14. stock Lua where not deliberately changed

    @Test func printIsACFunctionAndRequireSaysWhereItLooked() throws {
        let d = Harness.tempDir("stock")
        Harness.write(d + "/r.lua", """
            print("print is " .. debug.getinfo(print).what)
            print("a", 1, nil, true, setmetatable({}, {__tostring = function() return "T" end}))
            local ok, err = pcall(require, "nosuch_mod")
            assert(not ok)
            print(err)
            """)
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        #expect(r.code == 0, "\(r.stderr)")
        #expect(r.stdout.contains("print is C\n"), "\(r.stdout)")
        #expect(r.stdout.contains("a\t1\tnil\ttrue\tT\n"), "\(r.stdout)")
        #expect(r.stdout.contains("module 'nosuch_mod' not found:"), "\(r.stdout)")
        #expect(r.stdout.contains("no field package.preload['nosuch_mod']"), "\(r.stdout)")
        #expect(r.stdout.contains("no file '"), "\(r.stdout)")
        #expect(r.stdout.contains("nosuch_mod.lua'"), "\(r.stdout)")
        #expect(!r.stdout.contains("\n\t\n"), "no empty line in the list: \(r.stdout)")
    }
}

func luaQuote(_ s: String) -> String {
    "\"" + s.unicodeScalars.map { u -> String in
        if u == "\"" || u == "\\" { return "\\" + String(u) }
        if u.value < 0x20 || u.value == 0x7f { return "\\\(u.value)" }
        return String(u)
    }.joined() + "\""
}
