import Foundation
import Testing

/// Issue 22's fault suite: every item, tried with seeded random variations (which signal,
/// which escape, which ender, which field, which bytes, which file is a planted link, how
/// big). The seed is printed (`reliability: integrity faults seed N`); BATON_FAULT_SEED=N
/// replays it. The figures (faults tried and survived, bad inputs tried and refused with a
/// clear error) are printed for docs/reliability.md.
extension ReliabilityTests {
    final class Tally: @unchecked Sendable {
        var tried = 0, survived = 0, inputs = 0, clear = 0
        var failures: [String] = []
        func fault(_ what: String, _ ok: Bool) {
            tried += 1
            if ok { survived += 1 } else { failures.append(what) }
        }
        func input(_ what: String, _ ok: Bool) {
            inputs += 1
            if ok { clear += 1 } else { failures.append(what) }
        }
    }

    static func pick<T>(_ xs: [T], _ rng: inout RNG) -> T { xs[Int(rng.next() % UInt64(xs.count))] }

    static func sleeps(_ marker: String) -> [Int32] {
        Harness.processes(matching: "sleep \(marker)").filter { Harness.read("/proc/\($0)/comm") == "sleep\n" }
    }

    /// Starts `baton run` of `recipe` in a fresh directory; waits until the journal holds `ready`.
    static func live(_ tag: String, _ recipe: String, args: [String] = [], env: [String: String] = [:],
                     ready: String) throws -> (d: String, p: Process, run: String) {
        let d = Harness.tempDir(tag)
        Harness.write(d + "/r.lua", recipe)
        let (p, _, _) = try Harness.start(["run"] + args + ["r.lua"], cwd: d, env: env)
        _ = Harness.waitFor { Harness.latestRun(d).flatMap { Harness.read($0 + "/journal.jsonl") }?.contains(ready) == true }
        return (d, p, Harness.latestRun(d) ?? d)
    }

    static func ended(_ p: Process, within: Double) -> Bool {
        let ok = Harness.waitFor(within) { !p.isRunning }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        return ok
    }

    @Test func integrityFaultsAtRandom() throws {
        var rng = RNG(state: Self.seed("integrity faults"))
        let t = Tally()
        let rounds = Int(ProcessInfo.processInfo.environment["BATON_FAULT_ROUNDS"] ?? "") ?? 2
        for _ in 0..<rounds {
            try item1(&rng, t); try item2(&rng, t); try item3(&rng, t); try item4(&rng, t); try item5(&rng, t)
            try item6(&rng, t); try item7(&rng, t); try item8(&rng, t); try item9(&rng, t); try item10(&rng, t)
            try item11(&rng, t); try item12(&rng, t); try item13(&rng, t); try item14(&rng, t)
        }
        figure("reliability: integrity faults tried \(t.tried), survived \(t.survived); bad inputs tried \(t.inputs), refused with a clear error \(t.clear)")
        #expect(t.failures.isEmpty, "failed (replay with the seed above): \(t.failures)")
    }

    // 1. an escape (setsid, setsid env -i, a double fork into a new session), ended by the
    // stage's end, cancel, SIGTERM or the budget, with either mechanism
    func item1(_ rng: inout RNG, _ t: Tally) throws {
        let marker = "63\(rng.next() % 10).\(100_000 + rng.next() % 900_000)"
        let escape = Self.pick(["setsid sleep \(marker) &", "setsid env -i sleep \(marker) &",
                                "(setsid env -i sleep \(marker) &) ;", "nohup setsid sleep \(marker) >/dev/null 2>&1 &"], &rng)
        let mech = Self.pick(["cgroup", "subreaper"], &rng)
        let how = Self.pick(["stage end", "cancel", "SIGTERM", "budget"], &rng)
        let what = "1: \(escape) ended by \(how) (\(mech))"
        let tail = how == "stage end" ? "echo ok'}\nrunStage{id = 'next', cmd = 'sleep 0.5'}\n" : "sleep 600'}\n"
        let (d, p, run) = try Self.live("f1", "baton.log('go')\nrunStage{id = 'esc', cmd = '\(escape) \(tail)",
                                        args: how == "budget" ? ["--budget", "2s"] : [], env: ["BATON_CONTAINMENT": mech], ready: "go")
        defer { for pid in Self.sleeps(marker) { kill(pid, SIGKILL) } }
        if how == "stage end" {
            _ = Harness.waitFor { Harness.read(run + "/journal.jsonl")?.contains("\"id\":\"next\"") == true }
            t.fault(what, Harness.waitFor(1) { Self.sleeps(marker).isEmpty })
            _ = Self.ended(p, within: 20)
            return
        }
        _ = Harness.waitFor { !Self.sleeps(marker).isEmpty }
        if how == "cancel" { _ = try Harness.run(["cancel", (run as NSString).lastPathComponent], cwd: d, timeout: 30) }
        if how == "SIGTERM" { kill(p.processIdentifier, SIGTERM) }
        t.fault(what, Self.ended(p, within: 20) && Harness.waitFor(2) { Self.sleeps(marker).isEmpty })
    }

    // 2. stuck in a C call, ended by SIGINT, SIGTERM, cancel or the budget
    func item2(_ rng: inout RNG, _ t: Tally) throws {
        let how = Self.pick(["SIGINT", "SIGTERM", "cancel", "budget"], &rng)
        let reps = Self.pick([10, 12, 14], &rng)
        let (d, p, run) = try Self.live("f2", "baton.log('stuck')\nlocal s = string.rep('a', 3000)\ns:find(string.rep('a*', \(reps)) .. 'b')\n",
                                        args: how == "budget" ? ["--budget", "2s"] : [], ready: "stuck")
        usleep(200_000)
        if how == "SIGINT" { kill(p.processIdentifier, SIGINT) }
        if how == "SIGTERM" { kill(p.processIdentifier, SIGTERM) }
        if how == "cancel" { _ = try Harness.run(["cancel", (run as NSString).lastPathComponent], cwd: d, timeout: 30) }
        let ok = Self.ended(p, within: how == "budget" ? 6 : 4)
        let f = Harness.final(run)
        t.fault("2: a C call ended by \(how)", ok && f?["status"] as? String == "cancelled" && f?["ended_at"] is String)
    }

    // 3. a fatal signal at a random moment
    func item3(_ rng: inout RNG, _ t: Tally) throws {
        let sigs: [(Int32, String)] = [(SIGQUIT, "SIGQUIT"), (SIGUSR1, "SIGUSR1"), (SIGUSR2, "SIGUSR2"), (SIGXCPU, "SIGXCPU"),
                                       (SIGXFSZ, "SIGXFSZ"), (SIGVTALRM, "SIGVTALRM"), (SIGPROF, "SIGPROF"), (SIGALRM, "SIGALRM"),
                                       (SIGINT, "SIGINT"), (SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP")]
        let (sig, name) = Self.pick(sigs, &rng)
        let (_, p, run) = try Self.live("f3", "baton.log('up')\nrunStage{id = 'a', cmd = 'sleep 60'}\n", ready: "up")
        usleep(UInt32(rng.next() % 300_000))
        kill(p.processIdentifier, sig)
        let ok = Self.ended(p, within: 20)
        let f = Harness.final(run)
        t.fault("3: \(name)", ok && p.terminationStatus == 128 + sig && (f?["reason"] as? String)?.contains(name) == true)
    }

    // 4. os.exit in one of its forms, typed at attach
    func item4(_ rng: inout RNG, _ t: Tally) throws {
        let line = Self.pick(["os.exit(0)", "os.exit(true)", "os.exit()", "local e = os.exit; e(0)", "pcall(os.exit, 0)",
                              "coroutine.wrap(function() os.exit(0) end)()"], &rng)
        let (d, p, run) = try Self.live("f4", "baton.log('up')\nbaton.sleep(60)\n", ready: "up")
        _ = Harness.waitFor { FileManager.default.fileExists(atPath: run + "/control.sock") }
        let a = try Harness.run(["attach"], cwd: d, stdin: line + "\n", timeout: 30)
        usleep(200_000)
        t.input("4: \(line) at attach", (a.stdout + a.stderr).contains(":cancel") && p.isRunning && Harness.final(run) == nil)
        _ = try Harness.run(["attach"], cwd: d, stdin: ":cancel\n", timeout: 30)
        let ok = Self.ended(p, within: 20)
        t.fault("4: :cancel", ok && Harness.final(run)?["ended_by"] != nil && Harness.final(run)?["status"] as? String == "cancelled")
    }

    // 5. two random ids that an unsafe mapping could fold together
    func item5(_ rng: inout RNG, _ t: Tally) throws {
        let alphabet = Array("a/_ %.-Z\\:")
        // ("k" first: an id that starts with '-' would be an option to `log --stage`)
        func id() -> String { "k" + String((0..<Int(1 + rng.next() % 5)).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] }) }
        let ids = Array(Set([id(), id(), id()])).filter { !$0.isEmpty }
        let d = Harness.tempDir("f5")
        Harness.write(d + "/r.lua", ids.enumerated().map { "runStage{id = \(luaQuote($0.element)), cmd = {'echo', 'out-\($0.offset)'}}" }
            .joined(separator: "\n") + "\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        var ok = true
        for (i, s) in ids.enumerated() {
            let l = try Harness.run(["log", "--stage", s], cwd: d)
            ok = ok && l.stdout == "out-\(i)\n"
        }
        t.fault("5: ids \(ids)", ok)
    }

    // 6. the project moved to a random name
    func item6(_ rng: inout RNG, _ t: Tally) throws {
        let base = Harness.tempDir("f6")
        let d = base + "/p"
        try FileManager.default.createDirectory(atPath: d + "/.baton", withIntermediateDirectories: true)
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo moved'}\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let d2 = base + "/q\(rng.next() % 1000) x"
        try FileManager.default.moveItem(atPath: d, toPath: d2)
        let l = try Harness.run(["log", "--stage", "a"], cwd: d2)
        let r = try Harness.run(["resume"], cwd: d2)
        t.fault("6: moved to \(d2)", l.stdout == "moved\n" && r.code == 0)
    }

    // 7. a report written to stdout, a FIFO or through a symlink
    func item7(_ rng: inout RNG, _ t: Tally) throws {
        let d = Harness.tempDir("f7")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'true'}\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let kind = Self.pick(["-", "link"], &rng)
        if kind == "-" {
            let r = try Harness.run(["report", "--tsv", "-"], cwd: d)
            t.fault("7: --tsv -", r.code == 0 && r.stdout.contains("\tstatus\t") && !FileManager.default.fileExists(atPath: d + "/-"))
        } else {
            Harness.write(d + "/target.tsv", "")
            symlink(d + "/target.tsv", d + "/out.tsv")
            let r = try Harness.run(["report", "--tsv", "out.tsv"], cwd: d)
            var st = stat()
            t.fault("7: --tsv through a link", r.code == 0 && lstat(d + "/out.tsv", &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK
                        && Harness.read(d + "/target.tsv")?.contains("\tstatus\t") == true)
        }
    }

    // 8. a planted symbolic link: the run directory, or one of its files
    func item8(_ rng: inout RNG, _ t: Tally) throws {
        let d = Harness.tempDir("f8")
        Harness.write(d + "/r.lua", "runStage{id = 'a', cmd = 'echo hi'}\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let run = try #require(Harness.latestRun(d))
        let id = (run as NSString).lastPathComponent
        let victim = Harness.tempDir("f8v") + "/precious"
        Harness.write(victim, "precious\n")
        let file = Self.pick(["final.json", "journal.jsonl", "lock", "stages/a/1.out"], &rng)
        try FileManager.default.removeItem(atPath: run + "/" + file)
        symlink(victim, run + "/" + file)
        let cmd = Self.pick([["cancel", id], ["resume", id], ["report", id]], &rng)
        let r = try Harness.run(cmd, cwd: d, timeout: 60)
        t.input("8: \(cmd[0]) with \(file) a link", r.code == 1 && r.stderr.contains("symbolic link") && Harness.read(victim) == "precious\n")
    }

    // 9. a NUL byte in a random field
    func item9(_ rng: inout RNG, _ t: Tally) throws {
        let (field, stage) = Self.pick([("cmd", "cmd = 'echo a\\0b'"), ("cmd", "cmd = {'echo', 'a\\0b'}"),
                                        ("cwd", "cmd = 'true', cwd = '/tmp\\0x'"), ("env", "cmd = 'true', env = {A = 'x\\0y'}")], &rng)
        let d = Harness.tempDir("f9")
        Harness.write(d + "/r.lua", "runStage{id = 'a', \(stage)}\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        t.input("9: NUL in \(field)", r.code == 3 && r.stderr.contains(field))
    }

    // 10. control characters in a stage id and its output
    func item10(_ rng: inout RNG, _ t: Tally) throws {
        let ctl = Self.pick(["\\27[2J", "\\7", "\\27]0;x\\7", "\\n12:00 forged"], &rng)
        let d = Harness.tempDir("f10")
        Harness.write(d + "/r.lua", "runStage{id = 'x\(ctl)', cmd = {'printf', 'o\(ctl)'}}\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let s = try Harness.run(["status"], cwd: d)
        let l = try Harness.run(["log"], cwd: d)
        t.input("10: \(ctl)", !(s.stdout + l.stdout).contains("\u{1B}") && !(s.stdout + l.stdout).contains("\u{7}")
                    && !l.stdout.contains("\n12:00 forged"))
    }

    // 11. an error of random size
    func item11(_ rng: inout RNG, _ t: Tally) throws {
        let mb = 1 + Int(rng.next() % 20)
        let d = Harness.tempDir("f11")
        Harness.write(d + "/r.lua", "error(string.rep('e', \(mb) * 1048576))\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        let run = try #require(Harness.latestRun(d))
        let size = (try? FileManager.default.attributesOfItem(atPath: run + "/final.json")[.size] as? Int) ?? Int.max
        t.input("11: a \(mb) MB error", r.code == 1 && size < 256 << 10 && r.stderr.utf8.count < 256 << 10)
    }

    // 12. a stage log of random size, streamed
    func item12(_ rng: inout RNG, _ t: Tally) throws {
        let n = 1_000_000 + Int(rng.next() % 20_000_000)
        let d = Harness.tempDir("f12")
        Harness.write(d + "/r.lua", "runStage{id = 'big', cmd = 'yes abcdefghij | head -c \(n)'}\n")
        _ = try Harness.run(["run", "r.lua"], cwd: d)
        let json = rng.next() % 2 == 0
        let m = IntegrityTests.peakRSS(["log", "--stage", "big"] + (json ? ["--json"] : []), cwd: d)
        t.fault("12: a \(n)-byte log\(json ? " as JSON" : "")", m.status == 0 && m.mib <= 20)
    }

    // 13. a shell run (journaled as the shell's) newer than a live run: cancel never takes it
    func item13(_ rng: inout RNG, _ t: Tally) throws {
        let (d, p, run) = try Self.live("f13", "baton.log('up')\nbaton.sleep(60)\n", ready: "up")
        let shellRun = d + "/.baton/runs/29990101-000000-shel"
        try FileManager.default.createDirectory(atPath: shellRun, withIntermediateDirectories: true)
        let line = "{\"v\":1,\"seq\":1,\"ts\":\"2999-01-01T00:00:00.000Z\",\"run\":\"29990101-000000-shel\",\"type\":\"run_started\","
            + "\"recipe\":\"<shell>\",\"recipe_sha256\":\"\",\"args\":[],\"pid\":1,\"host\":\"vm\",\"baton_version\":\"0.2.0\",\"dry_run\":false,\"cwd\":\"/\"}\n"
        Harness.write(shellRun + "/journal.jsonl", line)
        let c = try Harness.run(["cancel"], cwd: d, timeout: 30)
        t.fault("13: cancel with a newer shell run", c.code == 0 && c.stderr.contains((run as NSString).lastPathComponent) && Self.ended(p, within: 20))
    }

    // 14. require of a random missing module
    func item14(_ rng: inout RNG, _ t: Tally) throws {
        let name = "nomod\(rng.next() % 100_000)"
        let d = Harness.tempDir("f14")
        Harness.write(d + "/r.lua", "assert(debug.getinfo(print).what == 'C')\nrequire('\(name)')\n")
        let r = try Harness.run(["run", "r.lua"], cwd: d)
        t.input("14: require '\(name)'", r.code == 1 && r.stderr.contains("module '\(name)' not found") && r.stderr.contains("no file"))
    }
}
