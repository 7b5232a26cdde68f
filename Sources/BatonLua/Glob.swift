import BatonBase
import BatonCore
import CBatonSys
import Glibc

enum Glob {
    /// Paths matching a shell pattern, sorted; none is an empty list.
    static func match(_ pattern: String) -> [String] {
        var g = glob_t()
        defer { globfree(&g) }
        guard glob(pattern, 0, nil, &g) == 0 else { return [] }
        var out: [String] = []
        for i in 0..<Int(g.gl_pathc) { if let p = g.gl_pathv[i] { out.append(String(cString: p)) } }
        return out.sorted()
    }
}

/// The signal flags of CBatonSys, for code that waits without a run.
enum CSignals {
    static var pending: Bool { baton_signal_pending() != 0 }
    static var fd: Int32 { baton_signal_fd() }
}
