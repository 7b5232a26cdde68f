import BatonBase
import BatonCore
import Foundation
import Glibc
import Testing

@Suite struct JSONTests {
    /// One top-level value, the others skipped: the same value the whole parse gives.
    @Test func topLevelValueSkipsTheRest() throws {
        let text = #"{"a": [1, {"x": "}]\"["}, -2.5e3, true, null], "s": "q\"uo}te", "n": 12, "result": {"ok": true, "k": ["v"]}, "z": {}}"#
        let bytes = Array(text.utf8)
        let whole = try JSON.parse(bytes)
        for k in ["a", "s", "n", "result", "z"] { #expect(try JSON.topLevelValue(k, in: bytes) == whole[k], "\(k)") }
        #expect(try JSON.topLevelValue("missing", in: bytes) == nil)
        #expect(try JSON.topLevelValue("a", in: Array("[1]".utf8)) == nil)
        #expect(throws: (any Error).self) { try JSON.topLevelValue("z", in: Array(#"{"a": [1, 2"#.utf8)) }
    }

    @Test func roundTrip() throws {
        let text = #"{"a":1,"b":[true,false,null],"c":"x\ny\"\u0001","d":1.5,"e":{},"f":[],"g":-0.25,"h":12345678901234}"#
        let v = try JSON.parse(text)
        #expect(v["a"] == .int(1) && v["d"] == .double(1.5) && v["h"] == .int(12345678901234))
        #expect(try JSON.parse(v.encoded()) == v)
        #expect(try JSON.parse(v.encoded(pretty: true)) == v)
        #expect(JSON.double(3).encoded() == "3.0", "a float stays a float")
        #expect(try JSON.parse("\"\\ud83d\\ude00\"") == .string("😀"))
    }

    @Test(arguments: ["", "{", "[1,", "{\"a\" 1}", "tru", "01", "1.", "\"abc", "{\"a\":1}x", "[\"\\x\"]", String(repeating: "[", count: 1000)])
    func rejectsInvalid(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    /// A number beyond a Double's range is refused, not read as infinity (which would encode
    /// back as null: the fuzz below found it).
    @Test func outOfRangeNumbersAreRefused() {
        #expect((try? JSON.parse(Array("1.5e399".utf8))) == nil)
        #expect((try? JSON.parse(Array("[-1e400]".utf8))) == nil)
        #expect((try? JSON.parse(Array("1e308".utf8))) == .double(1e308))
    }

    @Test func fuzzedInputNeverCrashes() {
        let seeds = [#"{"a":[1,2,{"b":"c"}],"d":null}"#, #"[1.5e3,-2,true]"#, #""\u00e9\n""#]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<3000 {
            var b = Array(seeds.randomElement(using: &rng)!.utf8)
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<b.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: b[i] = UInt8.random(in: 0...255, using: &rng)
                case 1: b.remove(at: i)
                default: b.insert(UInt8.random(in: 0...127, using: &rng), at: i)
                }
                if b.isEmpty { b = [UInt8(ascii: "{")] }
            }
            if let v = try? JSON.parse(b) { #expect((try? JSON.parse(v.encoded())) == v) }
        }
    }
}

@Suite struct FailureTests {
    @Test func signatureFoldsNumbersAndHex() {
        let a = FailureSignature.make(.transient, exit: 75, signal: nil, stderrTail: "x\nrequest 0x7f3a failed after 1532 ms (id deadbeef42)\n\n")
        let b = FailureSignature.make(.transient, exit: 75, signal: nil, stderrTail: "request 0x11 failed after 2 ms (id 0000cafe99)")
        #expect(a == b)
        #expect(a != FailureSignature.make(.deterministic, exit: 75, signal: nil, stderrTail: "request 0x11 failed after 2 ms (id 0000cafe99)"))
        #expect(a != FailureSignature.make(.transient, exit: 1, signal: nil, stderrTail: "request 0x11 failed after 2 ms (id 0000cafe99)"))
        #expect(a.count == 16)
        #expect(FailureSignature.fold("error at line 42 in face") == "error at line # in face", "words made of hex letters stay")
    }

    @Test func classify() {
        let rules = TransientRules(exitCodes: [75], stderrPatterns: ["rate limit"])
        #expect(rules.classify(timedOut: true, signal: nil, exit: nil, stderrTail: "") == .transient)
        #expect(rules.classify(timedOut: false, signal: 9, exit: nil, stderrTail: "") == .transient)
        #expect(rules.classify(timedOut: false, signal: nil, exit: 75, stderrTail: "") == .transient)
        #expect(rules.classify(timedOut: false, signal: nil, exit: 1, stderrTail: "429 rate limit") == .transient)
        #expect(rules.classify(timedOut: false, signal: nil, exit: 1, stderrTail: "syntax error") == .deterministic)
    }

    @Test func backoff() {
        let b = Backoff(initial: 1, factor: 2, max: 5)
        #expect((1...5).map { b.delay(afterAttempt: $0) } == [1, 2, 4, 5, 5])
    }
}

@Suite struct RunStoreTests {
    @Test func idsSortByStartTime() {
        let t = Clock.now()
        let ids = (0..<50).map { RunID.make(at: t + Double($0) * 0.0011) }
        #expect(ids == ids.sorted())
        #expect(ids.allSatisfy(RunID.isValid))
        #expect(!RunID.isValid("../x") && !RunID.isValid(".hidden") && !RunID.isValid(""))
    }

    @Test func resolveByIdPrefixAndLatest() throws {
        let store = RunStore(root: tempDir())
        #expect(throws: RunStoreError.self) { try store.resolve(nil) }
        for id in ["20260101-000000-0001", "20260101-000000-0002", "20260102-000000-0001"] { _ = try store.create(id: id) }
        #expect(try store.resolve(nil).id == "20260102-000000-0001")
        #expect(try store.resolve("latest").id == "20260102-000000-0001")
        #expect(try store.resolve("20260102").id == "20260102-000000-0001")
        #expect(throws: RunStoreError.self) { try store.resolve("20260101") }
        #expect(throws: RunStoreError.self) { try store.resolve("2027") }
        #expect(throws: RunStoreError.self) { try store.create(id: "20260101-000000-0001") }
    }

    @Test func rfc3339RoundTrip() {
        let t = 1_795_000_000.123
        let s = Clock.rfc3339(t)
        #expect(s.hasSuffix(".123Z") && s.count == 24)
        #expect(abs((Clock.parseRFC3339(s) ?? 0) - t) < 0.002)
    }

    /// The stamp's date arithmetic agrees with gmtime_r over leap years, centuries, month ends.
    @Test func rfc3339AgreesWithGmtime() {
        var rng = SystemRandomNumberGenerator()
        var samples: [Double] = [0, 951_782_400, 951_868_799.999, 4_107_542_399.5, 1_709_164_800, 1_735_689_599.25]
        for _ in 0..<2000 { samples.append(Double(Int64.random(in: 0..<4_102_444_800, using: &rng)) + Double(Int.random(in: 0..<1000, using: &rng)) / 1000) }
        for t in samples {
            var secs = time_t(t.rounded(.down))
            var tm = tm()
            gmtime_r(&secs, &tm)
            let want = String(format: "%04d-%02d-%02dT%02d:%02d:%02d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday),
                              Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
            let got = Clock.rfc3339(t)
            #expect(got.hasPrefix(want + ".") && got.hasSuffix("Z") && got.count == 24, "\(t): \(got) vs \(want)")
        }
    }

    @Test func lockIsExclusiveAndProbeable() throws {
        let p = tempDir() + "/lock"
        let a = try #require(try FileLock.tryAcquire(p))
        #expect(FileLock.isHeld(p))
        #expect(try FileLock.tryAcquire(p) == nil)
        a.release()
        #expect(!FileLock.isHeld(p))
        #expect(try FileLock.tryAcquire(p) != nil)
    }

    @Test func sha256() {
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}

@Suite struct PreflightCheckTests {
    @Test func kinds() {
        let d = tempDir()
        let env = ["PATH": "/usr/bin:/bin"]
        #expect(!PreflightCheck.path(d + "/nope", directory: false, executable: false).evaluate(environment: env, loop: EventLoop()).ok)
        #expect(PreflightCheck.path(d, directory: true, executable: false).evaluate(environment: env, loop: EventLoop()).ok)
        let file = d + "/plain.txt"
        try? FileIO.writeAtomically(file, Array("x".utf8), mode: 0o644)
        #expect(!PreflightCheck.path(file, directory: true, executable: false).evaluate(environment: env, loop: EventLoop()).ok)
        #expect(!PreflightCheck.path(file, directory: false, executable: true).evaluate(environment: env, loop: EventLoop()).ok)
        #expect(PreflightCheck.path("/bin/sh", directory: false, executable: true).evaluate(environment: env, loop: EventLoop()).ok)
        #expect(PreflightCheck.command(.argv(["true"]), cwd: nil, timeout: 5).evaluate(environment: env, loop: EventLoop()).ok)
        let failing = PreflightCheck.command(.shell("echo nope >&2; exit 3"), cwd: nil, timeout: 5).evaluate(environment: env, loop: EventLoop())
        #expect(!failing.ok && failing.detail.contains("exit code 3") && failing.detail.contains("nope"))
        #expect(PreflightCheck.command(.argv(["sleep", "5"]), cwd: nil, timeout: 0.1).evaluate(environment: env, loop: EventLoop()).detail.hasPrefix("timed out"))
        #expect(PreflightCheck.env("PATH").evaluate(environment: env, loop: EventLoop()).ok)
        #expect(PreflightCheck.env("BATON_SURELY_UNSET_VAR").evaluate(environment: env, loop: EventLoop()).detail == "not set or empty")
        #expect(!PreflightCheck.pgrep("python train.py").evaluate(environment: env, loop: EventLoop()).ok)
        #expect(PreflightCheck.pgrep("[p]ython train.py").evaluate(environment: env, loop: EventLoop()).ok)
    }
}

/// Survivors.end: a child that leaves on its signal is waited for (not for the whole grace);
/// one that ignores it is killed at the grace's end; both are reaped.
@Suite struct EndChildTests {
    func start(_ script: String) throws -> pid_t {
        try Spawner.spawn(argv: ["/bin/sh", "-c", script], env: Spawner.currentEnvironment(), cwd: nil,
                          stdin: 0, stdout: 2, stderr: 2)
    }

    @Test func aChildThatLeavesIsWaitedForAndOneThatStaysIsKilled() throws {
        let leaves = try start("exec sleep 30")
        var t = Clock.monotonic()
        Survivors.end(child: leaves, signal: SIGTERM, grace: 5)
        #expect(Clock.monotonic() - t < 2, "waited \(Clock.monotonic() - t) s for a child that left at once")
        #expect(kill(leaves, 0) != 0, "reaped")

        let stays = try start("trap '' TERM; while :; do sleep 0.05; done")
        // until its trap is set: SIGTERM in its ignored mask (/proc's SigIgn)
        func ignoresTerm() -> Bool {
            let status = (try? FileIO.readString("/proc/\(stays)/status")) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("SigIgn:") } ?? ""
            let mask = UInt64(line.dropFirst(7).trimmingCharacters(in: .whitespaces), radix: 16) ?? 0
            return mask & (1 << UInt64(SIGTERM - 1)) != 0
        }
        _ = EventLoop().wait(deadline: Clock.monotonic() + 5, pollEvery: 0.01) { ignoresTerm() }
        #expect(ignoresTerm())
        t = Clock.monotonic()
        Survivors.end(child: stays, signal: SIGTERM, grace: 0.5)
        let took = Clock.monotonic() - t
        #expect(took >= 0.45 && took < 3, "took \(took) s")
        #expect(kill(stays, 0) != 0, "killed and reaped")
    }
}
