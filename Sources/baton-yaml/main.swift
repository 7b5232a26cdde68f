// baton-yaml: reads YAML on stdin, writes it as JSON (keys in document order) on stdout.
// Exit 0, or 1 with the parser's message (line and column) on stderr.
import BatonBase
import Glibc
import Yams

func convert(_ n: Node) -> JSON {
    switch n {
    case let .scalar(s):
        if s.style == .plain {
            if ["~", "null", "Null", "NULL", ""].contains(s.string) { return .null }
            if let b = Bool.construct(from: s) { return .bool(b) }
            if let i = Int.construct(from: s) { return .int(Int64(i)) }
            if let d = Double.construct(from: s), s.string != "." { return .double(d) }
        }
        return .string(s.string)
    case let .mapping(m):
        return .object(m.map { (k, v) in (k.string ?? convert(k).encoded(), convert(v)) })
    case let .sequence(seq):
        return .array(seq.map(convert))
    case let .alias(a):
        return .string("*\(a.anchor)")
    }
}

let input = (try? FileIO.readFile("/dev/stdin")) ?? []
do {
    let node = try Yams.compose(yaml: String(decoding: input, as: UTF8.self))
    Console.out((node.map(convert) ?? .null).encoded())
    exit(0)
} catch {
    Console.err("\(error)".split(separator: "\n").map { $0.trimmingCharacters(in: " ") }.joined(separator: " "))
    exit(1)
}
