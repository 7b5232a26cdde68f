import BatonBase

/// A run paused at a breakpoint (`baton run --break ID`, `baton.breakpoint`, or after a
/// `:step`): what it is paused at, why, and the recipe's line.
public struct PauseRecord: Sendable {
    /// "before stage deploy", "after stage build", "baton.breakpoint".
    public var at: String
    /// "--break deploy*", the breakpoint's own words, ":step".
    public var why: String
    /// The stage it is paused before (what `:skip` skips), if any.
    public var stage: String?
    /// "recipe.lua:12": the recipe's frame.
    public var line: String

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case `where`, why, stage, line
    }
    public static let fieldNames = Key.names

    public init(at: String, why: String, stage: String?, line: String) {
        self.at = at; self.why = why; self.stage = stage; self.line = line
    }

    init(_ f: inout Fields<Key>) {
        at = f.string(.where) ?? ""
        why = f.string(.why) ?? ""
        stage = f.string(.stage)
        line = f.string(.line) ?? ""
    }

    var fields: FieldList<Key> {
        var o: FieldList<Key> = [(.where, .string(at)), (.why, .string(why))]
        if let s = stage { o.add(.stage, .string(s)) }
        o.add(.line, .string(line))
        return o
    }

    /// "before stage deploy (--break deploy*) at recipe.lua:12".
    public var text: String { "\(at) (\(why))" + (line.isEmpty ? "" : " at \(line)") }
}

/// A paused run goes on: how (continue, step, skip, timeout) and after how long.
public struct PauseResumed: Sendable {
    public var how: String
    public var pausedMs: Int64

    /// Its keys, in the order the encoder writes them (the wire's names).
    public enum Key: String, JournalKeys {
        case how, pausedMs = "paused_ms"
    }
    public static let fieldNames = Key.names

    public init(how: String, pausedMs: Int64) { self.how = how; self.pausedMs = pausedMs }

    init(_ f: inout Fields<Key>) {
        how = f.string(.how) ?? ""
        pausedMs = f.int(.pausedMs) ?? 0
    }

    var fields: FieldList<Key> { [(.how, .string(how)), (.pausedMs, .int(pausedMs))] }
}

extension RunDirectory {
    /// The exact recipe text the run ran (its latest life), kept for `baton debug`.
    public var recipeCopy: String { path + "/recipe.lua" }
    /// The project's modules the recipe required, as `modules/NAME/WITH/SLASHES.lua`.
    public var modulesDir: String { path + "/modules" }
}

extension CommandRecord {
    /// What the `stdout` of a command event keeps: text of at most 4 KiB, else nothing.
    public static func journaledOutput(_ bytes: [UInt8]) -> String? {
        guard bytes.count <= 4096, let s = String(validating: bytes, as: UTF8.self) else { return nil }
        return s
    }
}
