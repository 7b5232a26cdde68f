import BatonBase
import BatonCore
import BatonLua
import CBatonLine
import Glibc

/// The shell's history: `$XDG_STATE_HOME/baton/history` (default
/// `~/.local/state/baton/history`), the newest `limit` entries, saved after every
/// entry (through a temporary file renamed over the old one) and on leaving.
/// A multi-line chunk is one entry (libedit escapes its newlines in the file).
final class History {
    let path: String
    let limit: Int32
    private var last: String?

    init(path: String, limit: Int32 = 1000) { self.path = path; self.limit = limit }

    static func defaultPath() -> String? {
        if let s = getenv("XDG_STATE_HOME"), s.pointee != 0, String(cString: s).hasPrefix("/") {
            return String(cString: s) + "/baton/history"
        }
        guard let h = getenv("HOME"), h.pointee != 0 else { return nil }
        return String(cString: h) + "/.local/state/baton/history"
    }

    func load() {
        guard FileIO.exists(path) else { return }
        _ = baton_line_history_load(path)
    }

    /// Adds an entry (not twice in a row) and saves.
    func add(_ entry: String) {
        guard !entry.isEmpty, entry != last else { return }
        last = entry
        baton_line_history_add(entry)
        save()
    }

    func save() {
        let dir = FileIO.dirname(path)
        if !FileIO.isDirectory(dir) { try? FileIO.makeDirectories(dir, mode: 0o700) }
        let r = baton_line_history_save(path, limit)
        if r != 0 && !History.warned {
            History.warned = true
            diag("baton: cannot save the shell history to \(path): \(String(cString: strerror(r)))")
        }
    }

    nonisolated(unsafe) static var warned = false
}
