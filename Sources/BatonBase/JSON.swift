import Glibc

// A small JSON value with keys kept in insertion order, a fast encoder and a
// strict parser. Journal lines, final.json and baton.json all go through it.

public enum JSON: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (a: JSON, b: JSON) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public subscript(key: String) -> JSON? {
        if case let .object(pairs) = self {
            for (k, v) in pairs where k == key { return v }
        }
        return nil
    }

    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var intValue: Int64? {
        switch self {
        case let .int(i): return i
        case let .double(d) where d.rounded() == d && abs(d) < 9.2e18: return Int64(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }
    public var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var arrayValue: [JSON]? { if case let .array(a) = self { return a }; return nil }
    public var objectValue: [(String, JSON)]? { if case let .object(o) = self { return o }; return nil }

    /// Returns a copy with `key` set (replacing an existing key in place).
    public func setting(_ key: String, _ value: JSON) -> JSON {
        guard case var .object(pairs) = self else { return .object([(key, value)]) }
        if let i = pairs.firstIndex(where: { $0.0 == key }) { pairs[i].1 = value } else { pairs.append((key, value)) }
        return .object(pairs)
    }
}

// MARK: - Encoding

extension JSON {
    public func encoded(pretty: Bool = false) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        encode(into: &out, pretty: pretty, indent: 0)
        return String(decoding: out, as: UTF8.self)
    }

    public func encodedBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        encode(into: &out, pretty: false, indent: 0)
        return out
    }

    public func encode(into out: inout [UInt8], pretty: Bool, indent: Int) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case let .bool(b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case let .int(i): out.append(contentsOf: String(i).utf8)
        case let .double(d): JSON.encodeDouble(d, into: &out)
        case let .string(s): JSON.encodeString(s, into: &out)
        case let .array(items):
            JSON.encodeArray(count: items.count, into: &out, pretty: pretty, indent: indent) {
                items[$0].encode(into: &$1, pretty: pretty, indent: $2)
            }
        case let .object(pairs):
            JSON.encodeObject(keys: pairs.map(\.0), into: &out, pretty: pretty, indent: indent) {
                pairs[$0].1.encode(into: &$1, pretty: pretty, indent: $2)
            }
        }
    }

    /// An array written item by item, as `.array` is: `item(i, &out, indent)` writes item i
    /// (a list of 100,000 need not be built as JSON values first).
    public static func encodeArray(count: Int, into out: inout [UInt8], pretty: Bool, indent: Int,
                                   item: (Int, inout [UInt8], Int) -> Void) {
        if count == 0 { out.append(contentsOf: "[]".utf8); return }
        out.append(UInt8(ascii: "["))
        for i in 0..<count {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            if pretty { JSON.newline(&out, indent + 1) }
            item(i, &out, indent + 1)
        }
        if pretty { JSON.newline(&out, indent) }
        out.append(UInt8(ascii: "]"))
    }

    /// An object written value by value, as `.object` is: `value(i, &out, indent)` writes the
    /// value of `keys[i]`.
    public static func encodeObject(keys: [String], into out: inout [UInt8], pretty: Bool, indent: Int,
                                    value: (Int, inout [UInt8], Int) -> Void) {
        if keys.isEmpty { out.append(contentsOf: "{}".utf8); return }
        out.append(UInt8(ascii: "{"))
        for (i, k) in keys.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            if pretty { JSON.newline(&out, indent + 1) }
            JSON.encodeString(k, into: &out)
            out.append(UInt8(ascii: ":"))
            if pretty { out.append(UInt8(ascii: " ")) }
            value(i, &out, indent + 1)
        }
        if pretty { JSON.newline(&out, indent) }
        out.append(UInt8(ascii: "}"))
    }

    private static func newline(_ out: inout [UInt8], _ indent: Int) {
        out.append(UInt8(ascii: "\n"))
        for _ in 0..<indent { out.append(contentsOf: [32, 32]) }
    }

    static func encodeDouble(_ d: Double, into out: inout [UInt8]) {
        guard d.isFinite else { out.append(contentsOf: "null".utf8); return }
        // Swift's description is the shortest round-trip form; "1.0" stays a float.
        out.append(contentsOf: d.description.utf8)
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    public static func encodeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most strings (ids, paths, hashes) need no escape: copy them whole.
        var s = s
        let plain = s.withUTF8 { buf -> Bool in
            guard buf.allSatisfy({ $0 >= 0x20 && $0 != 0x22 && $0 != 0x5C && $0 != 0x7F }) else { return false }
            out.append(contentsOf: buf)
            return true
        }
        if plain { out.append(UInt8(ascii: "\"")); return }
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [92, 34])
            case UInt8(ascii: "\\"): out.append(contentsOf: [92, 92])
            case 0x0A: out.append(contentsOf: [92, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [92, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [92, UInt8(ascii: "t")])
            case 0..<0x20, 0x7F:
                out.append(contentsOf: [92, UInt8(ascii: "u"), 48, 48, hex[Int(b >> 4)], hex[Int(b & 15)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

// MARK: - Parsing

public struct JSONParseError: Error, CustomStringConvertible, Equatable {
    public let offset: Int
    public let message: String
    public var description: String { "\(message) at byte \(offset)" }
}

extension JSON {
    public static func parse(_ text: String) throws -> JSON {
        var bytes = Array(text.utf8)
        return try bytes.withUnsafeMutableBufferPointer { try parse(UnsafeBufferPointer($0)) }
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSON {
        try bytes.withUnsafeBufferPointer { try parse($0) }
    }

    public static func parse(_ buf: UnsafeBufferPointer<UInt8>, maxDepth: Int = 512) throws -> JSON {
        var p = Parser(buf: buf, maxDepth: maxDepth)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        if p.i != buf.count { throw p.error("unexpected trailing characters") }
        return v
    }

    /// The value of one key of a top-level object, the other values skipped without being
    /// built (a resume wants only final.json's `result`, not its ten thousand stages).
    /// nil if the text is not an object or has no such key; throws on malformed JSON.
    public static func topLevelValue(_ key: String, in bytes: [UInt8]) throws -> JSON? {
        var found: JSON? = nil
        _ = try walkTopLevel(bytes) { k, p in
            guard k == key else { try p.skipValue(); return true }
            found = try p.value(depth: 1)
            return false
        }
        return found
    }

    /// The pairs of a top-level object before the key `stop`, the rest not read (final.json's
    /// head, before its stage list); nil if the text is not an object or `stop` is not reached.
    public static func topLevelPairs(before stop: String, in bytes: [UInt8]) throws -> [(String, JSON)]? {
        var pairs: [(String, JSON)] = [], reached = false
        _ = try walkTopLevel(bytes) { k, p in
            if k == stop { reached = true; return false }
            pairs.append((k, try p.value(depth: 1)))
            return true
        }
        return reached ? pairs : nil
    }

    /// Calls `each` with every key of a top-level object and the parser at its value, which
    /// `each` reads or skips; it returns false to stop. false if the text is not an object.
    private static func walkTopLevel(_ bytes: [UInt8], _ each: (String, inout Parser) throws -> Bool) throws -> Bool {
        try bytes.withUnsafeBufferPointer { buf in
            var p = Parser(buf: buf, maxDepth: 512)
            p.skipSpace()
            guard p.i < buf.count, buf[p.i] == UInt8(ascii: "{") else { return false }
            p.i += 1
            p.skipSpace()
            if p.i < buf.count, buf[p.i] == UInt8(ascii: "}") { return true }
            while true {
                p.skipSpace()
                guard p.i < buf.count, buf[p.i] == UInt8(ascii: "\"") else { throw p.error("expected a string key") }
                let k = try p.key()
                p.skipSpace()
                guard p.i < buf.count, buf[p.i] == UInt8(ascii: ":") else { throw p.error("expected ':'") }
                p.i += 1
                p.skipSpace()
                guard try each(k, &p) else { return true }
                p.skipSpace()
                guard p.i < buf.count else { throw p.error("unexpected end of input") }
                if buf[p.i] == UInt8(ascii: ",") { p.i += 1; continue }
                if buf[p.i] == UInt8(ascii: "}") { return true }
                throw p.error("expected ',' or '}'")
            }
        }
    }

    struct Parser {
        let buf: UnsafeBufferPointer<UInt8>
        let maxDepth: Int
        var i = 0

        init(buf: UnsafeBufferPointer<UInt8>, maxDepth: Int) { self.buf = buf; self.maxDepth = maxDepth }

        func error(_ m: String) -> JSONParseError { JSONParseError(offset: i, message: m) }

        mutating func skipSpace() {
            while i < buf.count, buf[i] == 32 || buf[i] == 9 || buf[i] == 10 || buf[i] == 13 { i += 1 }
        }

        mutating func literal(_ word: String, _ v: JSON) throws -> JSON {
            let w = Array(word.utf8)
            let n = w.count
            guard i + n <= buf.count else { throw error("unexpected end of input") }
            for k in 0..<n where buf[i + k] != w[k] { throw error("invalid literal") }
            i += n
            return v
        }

        mutating func value(depth: Int) throws -> JSON {
            guard depth < maxDepth else { throw error("nesting deeper than \(maxDepth)") }
            guard i < buf.count else { throw error("unexpected end of input") }
            switch buf[i] {
            case UInt8(ascii: "{"):
                i += 1
                var pairs: [(String, JSON)] = []
                pairs.reserveCapacity(16)
                skipSpace()
                if i < buf.count, buf[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
                while true {
                    skipSpace()
                    guard i < buf.count, buf[i] == UInt8(ascii: "\"") else { throw error("expected a string key") }
                    let k = try key()
                    skipSpace()
                    guard i < buf.count, buf[i] == UInt8(ascii: ":") else { throw error("expected ':'") }
                    i += 1
                    skipSpace()
                    let v = try value(depth: depth + 1)
                    pairs.append((k, v))
                    skipSpace()
                    guard i < buf.count else { throw error("unexpected end of input") }
                    if buf[i] == UInt8(ascii: ",") { i += 1; continue }
                    if buf[i] == UInt8(ascii: "}") { i += 1; return .object(pairs) }
                    throw error("expected ',' or '}'")
                }
            case UInt8(ascii: "["):
                i += 1
                var items: [JSON] = []
                skipSpace()
                if i < buf.count, buf[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    guard i < buf.count else { throw error("unexpected end of input") }
                    if buf[i] == UInt8(ascii: ",") { i += 1; continue }
                    if buf[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                    throw error("expected ',' or ']'")
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try literal("true", .bool(true))
            case UInt8(ascii: "f"): return try literal("false", .bool(false))
            case UInt8(ascii: "n"): return try literal("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("unexpected character")
            }
        }

        /// Moves past one value without building it (strings, escapes and nesting respected;
        /// not validated beyond what finding its end needs).
        mutating func skipValue() throws {
            var depth = 0
            repeat {
                guard i < buf.count else { throw error("unexpected end of input") }
                switch buf[i] {
                case UInt8(ascii: "\""):
                    i += 1
                    while i < buf.count, buf[i] != UInt8(ascii: "\"") { i += buf[i] == UInt8(ascii: "\\") ? 2 : 1 }
                    guard i < buf.count else { throw error("unterminated string") }
                    i += 1
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1; i += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1; i += 1
                    if depth < 0 { throw error("unbalanced brackets") }
                case UInt8(ascii: ","), UInt8(ascii: ":"), 32, 9, 10, 13: i += 1
                default:
                    // a number or literal: up to the next delimiter
                    while i < buf.count, !",:]}\" \t\r\n".utf8.contains(buf[i]) { i += 1 }
                }
                if depth == 0 { return }
            } while true
        }

        mutating func number() throws -> JSON {
            let start = i
            var isFloat = false
            if buf[i] == UInt8(ascii: "-") { i += 1 }
            guard i < buf.count, (48...57).contains(buf[i]) else { throw error("invalid number") }
            if buf[i] == 48 { i += 1 } else { while i < buf.count, (48...57).contains(buf[i]) { i += 1 } }
            if i < buf.count, buf[i] == UInt8(ascii: ".") {
                isFloat = true; i += 1
                guard i < buf.count, (48...57).contains(buf[i]) else { throw error("invalid number") }
                while i < buf.count, (48...57).contains(buf[i]) { i += 1 }
            }
            if i < buf.count, buf[i] == UInt8(ascii: "e") || buf[i] == UInt8(ascii: "E") {
                isFloat = true; i += 1
                if i < buf.count, buf[i] == UInt8(ascii: "+") || buf[i] == UInt8(ascii: "-") { i += 1 }
                guard i < buf.count, (48...57).contains(buf[i]) else { throw error("invalid number") }
                while i < buf.count, (48...57).contains(buf[i]) { i += 1 }
            }
            if !isFloat, i - start <= 18 {   // fits an Int64: no String on the way
                var v: Int64 = 0
                var k = start
                let negative = buf[k] == UInt8(ascii: "-")
                if negative { k += 1 }
                while k < i { v = v * 10 + Int64(buf[k] - 48); k += 1 }
                return .int(negative ? -v : v)
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<i]), as: UTF8.self)
            if !isFloat, let v = Int64(text) { return .int(v) }
            guard let d = Double(text) else { throw JSONParseError(offset: start, message: "invalid number") }
            // 1e999 parses as infinity, which JSON cannot say: encoded back it would be null, a
            // different document. Refused, as Go's encoding/json does.
            guard d.isFinite else { throw JSONParseError(offset: start, message: "number out of range") }
            return .double(d)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= buf.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = buf[i]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                case 97...102: d = UInt32(c - 87)
                default: throw error("invalid \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        /// An object key: the journal's own keys are recognised by their bytes and returned
        /// as shared strings (a long journal has hundreds of thousands of them). The known keys
        /// are told apart by (length, first byte, last byte), so one probe of a small table and
        /// one memcmp find a key, with no reference counting on the way.
        mutating func key() throws -> String {
            let start = i + 1
            var end = start
            while end < buf.count, buf[end] != UInt8(ascii: "\""), buf[end] != UInt8(ascii: "\\") { end += 1 }
            let n = end - start
            if end < buf.count, buf[end] == UInt8(ascii: "\""), n > 0, n <= KnownKeys.maxLength,
               let k = KnownKeys.shared.find(buf.baseAddress! + start, n) {
                i = end + 1
                return k
            }
            return try string()
        }

        mutating func string() throws -> String {
            i += 1 // opening quote
            let start = i
            // Fast path: no escapes.
            while i < buf.count {
                let c = buf[i]
                if c == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<i]), as: UTF8.self)
                    i += 1
                    return s
                }
                if c == UInt8(ascii: "\\") || c < 0x20 { break }
                i += 1
            }
            var out = Array(UnsafeBufferPointer(rebasing: buf[start..<i]))
            while i < buf.count {
                let c = buf[i]
                if c == UInt8(ascii: "\"") { i += 1; return String(decoding: out, as: UTF8.self) }
                if c < 0x20 { throw error("control character in string") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                i += 1
                guard i < buf.count else { break }
                let e = buf[i]; i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(34)
                case UInt8(ascii: "\\"): out.append(92)
                case UInt8(ascii: "/"): out.append(47)
                case UInt8(ascii: "b"): out.append(8)
                case UInt8(ascii: "f"): out.append(12)
                case UInt8(ascii: "n"): out.append(10)
                case UInt8(ascii: "r"): out.append(13)
                case UInt8(ascii: "t"): out.append(9)
                case UInt8(ascii: "u"):
                    var cp = try hex4()
                    if (0xD800..<0xDC00).contains(cp), i
                        + 6 <= buf.count, buf[i] == 92, buf[i + 1] == UInt8(ascii: "u") {
                        i += 2
                        let lo = try hex4()
                        if (0xDC00..<0xE000).contains(lo) {
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                        } else {
                            cp = 0xFFFD
                        }
                    }
                    let scalar = Unicode.Scalar(cp) ?? "\u{FFFD}"
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default: throw error("invalid escape")
                }
            }
            throw error("unterminated string")
        }
    }
}

/// The journal's own object keys (the envelope's and the stage events'), for the parser.
/// Built once; read through plain pointers (no array access, no exclusivity checks, no
/// reference counting until the one String returned).
final class KnownKeys: @unchecked Sendable {
    static let names = ["v", "seq", "ts", "run", "type", "id", "occurrence", "attempt", "argv", "shell", "cwd",
                        "fingerprint",
                        "fingerprint_parts", "logs", "stdout", "stderr", "pid", "exit", "signal", "status",
                        "failure_class",
                        "signature", "duration_ms", "replayed", "final", "message", "command", "env", "stdin"]
    static let maxLength = names.map(\.utf8.count).max()!
    static let shared = KnownKeys()

    private let keys: [String]
    private let bytes: UnsafeMutablePointer<UInt8>     // every name's bytes, one after another
    private let offsets: UnsafeMutablePointer<Int>
    private let lengths: UnsafeMutablePointer<Int>
    private let slots: UnsafeMutablePointer<Int16>     // 256, open addressing on (length, first, last)

    private init() {
        keys = KnownKeys.names
        let total = keys.reduce(0) { $0 + $1.utf8.count }
        bytes = .allocate(capacity: total)
        offsets = .allocate(capacity: keys.count)
        lengths = .allocate(capacity: keys.count)
        slots = .allocate(capacity: 256)
        slots.initialize(repeating: -1, count: 256)
        var at = 0
        for (idx, k) in keys.enumerated() {
            let u = Array(k.utf8)
            offsets[idx] = at
            lengths[idx] = u.count
            for b in u { bytes[at] = b; at += 1 }
            var h = KnownKeys.hash(u.count, u[0], u[u.count - 1])
            while slots[h] >= 0 { h = (h + 1) & 255 }
            slots[h] = Int16(idx)
        }
    }

    @inline(__always)
    private static func hash(_ n: Int, _ first: UInt8, _ last: UInt8) -> Int {
        (n &* 131 &+ Int(first) &* 31 &+ Int(last)) & 255
    }

    /// The shared string for the `n` bytes at `p`, if they are a known key.
    func find(_ p: UnsafePointer<UInt8>, _ n: Int) -> String? {
        var h = KnownKeys.hash(n, p[0], p[n - 1])
        while true {
            let idx = Int(slots[h])
            if idx < 0 { return nil }
            if lengths[idx] == n, memcmp(bytes + offsets[idx], p, n) == 0 { return keys[idx] }
            h = (h + 1) & 255
        }
    }
}
