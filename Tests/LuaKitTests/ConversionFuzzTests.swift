import BatonBase
import BatonCore
import Glibc
import LuaKit
import Testing

/// Property-based fuzzing of JSON <-> Lua: random documents survive the round trip, and
/// random bytes never crash the parser or the Lua side.
@Suite struct ConversionFuzzTests {
    struct RNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 { state &+= 0x9E3779B97F4A7C15; var z = state; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return z ^ (z >> 31) }
    }

    /// Random JSON without nulls inside objects (Lua cannot hold a nil field) and with
    /// distinct keys.
    static func value(_ depth: Int, _ rng: inout RNG) -> JSON {
        switch Int.random(in: 0..<(depth > 3 ? 5 : 7), using: &rng) {
        case 0: return .bool(Bool.random(using: &rng))
        case 1: return .int(Int64.random(in: Int64.min...Int64.max, using: &rng))
        case 2: return .double(Double.random(in: -1e12...1e12, using: &rng))
        case 3: return .string(String((0..<Int.random(in: 0..<12, using: &rng)).map { _ in "aé\"\\\n\t😀x\u{1}".randomElement(using: &rng)! }))
        case 4: return .null
        case 5: return .array((0..<Int.random(in: 0..<5, using: &rng)).map { _ in value(depth + 1, &rng) })
        default:
            var keys = Set<String>()
            for _ in 0..<Int.random(in: 0..<5, using: &rng) { keys.insert("k\(Int.random(in: 0..<100, using: &rng))") }
            return .object(keys.sorted().compactMap { k in
                let v = value(depth + 1, &rng)
                if case .null = v { return nil }
                return (k, v)
            })
        }
    }

    @Test func roundTripThroughLua() throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        figure("fuzz: JSON <-> Lua seed \(seed)")
        var rng = RNG(state: seed)
        let l = LuaState()
        var n = 0
        for _ in 0..<3000 {
            let v = Self.value(0, &rng)
            l.push(json: v)
            let back = try l.toJSON(-1)
            l.pop()
            #expect(back == v, "seed \(seed): \(v.encoded()) came back as \(back.encoded())")
            #expect(try JSON.parse(v.encoded()) == v)
            n += 1
        }
        figure("fuzz: \(n) JSON <-> Lua documents")
    }

    @Test func luaDecodeOfMutatedJSONNeverCrashes() throws {
        let seed = UInt64.random(in: 1...UInt64(UInt32.max))
        var rng = RNG(state: seed)
        let l = LuaState()
        for _ in 0..<2000 {
            var b = Array(Self.value(0, &rng).encoded().utf8)
            for _ in 0..<Int.random(in: 0...3, using: &rng) where !b.isEmpty {
                b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if let v = try? JSON.parse(b) {
                l.push(json: v)
                _ = try? l.toJSON(-1)
                l.pop()
            }
        }
        #expect(l.top == 0, "seed \(seed): stack leaked")
    }
}

/// Prints a figure of the fault suite and flushes at once: the test runner may exit
/// without flushing a piped stdout.
func figure(_ s: String) {
    print(s)
    fflush(nil)  // all streams: no reference to the stdout global
}
