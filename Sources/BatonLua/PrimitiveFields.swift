import BatonBase
import BatonCore

/// What a field holds, as far as the runtime's checks, `baton check` and `baton types` care.
public enum FieldKind: Sendable {
    case string, number, integer, boolean, table, function
    /// An argv list of strings, or a string for /bin/sh -c.
    case command
    /// A list of strings (a single string is a list of one).
    case stringList
    /// Paths and globs: a string, a list (lists inside it flattened), or a function returning one.
    case paths

    /// The literal types `baton check` accepts for it (kit.lint's words).
    var lintType: String {
        switch self {
        case .string: return "string"
        case .number, .integer: return "number"
        case .boolean: return "boolean"
        case .table: return "table"
        case .function: return "function"
        case .command, .stringList: return "string|table"
        case .paths: return "string|table|function"
        }
    }
}

/// One field of a primitive's table or of an option table: the one declaration that the
/// runtime's field checks (the allowed names, the choices), `baton check` (kit.lint's
/// names, types, values), `baton types` (the `---@field` lines) and docs/primitives.md
/// (held to it by `DeclarationTests`) read. Adding a field is one line here.
public struct FieldDecl: Sendable {
    public let name: String
    public let kind: FieldKind
    public let required: Bool
    /// The strings it takes (for a list: each item's); empty: any.
    public let choices: [String]
    /// Its type in LuaCATS.
    public let luaType: String
    /// One line for people (`baton types`).
    public let doc: String
    /// The docs table's "type" cell, where the table has one.
    public let docType: String
    /// The value the runtime takes when the field is absent, where it is a constant.
    public let value: JSON?
    /// The docs table's "default" cell ("" for none; by default the `value`).
    public let docDefault: String

    public init(_ name: String, _ kind: FieldKind, _ doc: String = "", required: Bool = false, choices: [String] = [],
                lua: String? = nil, type docType: String? = nil, value: JSON? = nil,
                default docDefault: String? = nil) {
        self.name = name; self.kind = kind; self.required = required; self.choices = choices; self.doc = doc
        self.value = value
        switch value {
        case let .int(i)?: self.docDefault = docDefault ?? String(i)
        case let .double(d)?: self.docDefault = docDefault ?? fmt(d)
        case let .string(s)?: self.docDefault = docDefault ?? "`\"\(s)\"`"
        case let .bool(b)?: self.docDefault = docDefault ?? String(b)
        default: self.docDefault = docDefault ?? ""
        }
        let union = choices.map { "\"\($0)\"" }.joined(separator: "|")
        switch kind {
        case .string where !choices.isEmpty: luaType = lua ?? union
        case .stringList where !choices.isEmpty: luaType = lua ?? "(\(union))[]"
        case .string: luaType = lua ?? "string"
        case .number: luaType = lua ?? "number"
        case .integer: luaType = lua ?? "integer"
        case .boolean: luaType = lua ?? "boolean"
        case .table: luaType = lua ?? "table"
        case .function: luaType = lua ?? "function"
        case .command: luaType = lua ?? "baton.Command"
        case .stringList: luaType = lua ?? "string[]"
        case .paths: luaType = lua ?? "string|string[]|fun(): string[]"
        }
        self.docType = docType ?? (choices.isEmpty ? "" : choices.map { "`\"\($0)\"`" }.joined(separator: " or "))
    }

    /// `---@field name? type doc`
    var luaCATS: String {
        "---@field \(name)\(required ? "" : "?") \(luaType)" + (doc.isEmpty ? "" : " " + doc)
    }
}

/// Every primitive's and option table's fields, declared once.
public enum PrimitiveFields {
    private typealias F = FieldDecl

    /// runStage's own fields (each executor's table is added from the executor's declaration).
    public static let runStage: [FieldDecl] = [
        F("id",
          .string,
          "the same id may run again: occurrence 2, 3, ...",
          required: true,
          type: "string",
          default: "required"),
        F("cmd", .command, "", required: true, type: "list of strings, or string", default: "required"),
        F("cwd", .string, "working directory (default: the current one)", type: "string", default: "current directory"),
        F("env", .table, "added to the stage's environment", lua: "table<string, string>", type: "table"),
        F("stdin", .string, "text on the stage's stdin", type: "string", default: "empty"),
        F("timeout",
          .number,
          "seconds, then SIGTERM to the stage's process group",
          type: "number (s)",
          default: "none"),
        F("grace", .number, "seconds between SIGTERM and SIGKILL (default 10)", type: "number (s)", value: .int(10)),
        F("retries",
          .integer,
          "further attempts, for the classes in retryOn (default 0)",
          type: "integer",
          value: .int(0)),
        F("retryOn",
          .stringList,
          "default {\"transient\"}",
          choices: FailureClass.allCases.map(\.rawValue),
          type: "list",
          default: "`{\"transient\"}`"),
        F("backoff", .table, "default {1, 2, 60}", lua: "{initial?: number, factor?: number, max?: number}",
          type: "`{initial, factor, max}`", default: "`{1, 2, 60}`"),
        F("transient", .table, "rules that make a failure transient", lua: "{exit?: integer[], stderr?: string[]}",
          type: "`{exit = {75}, stderr = {\"rate limit\"}}`"),
        F("breaker",
          .integer,
          "the same failure signature this many times in the run: stop",
          type: "integer",
          default: "none"),
        F("requireFiles", .stringList, "must exist and be non-empty after a zero exit", type: "list"),
        F("background", .boolean, "return a handle at once", type: "boolean", value: .bool(false)),
        F("allowFail", .boolean, "return a failed result instead of raising", type: "boolean", value: .bool(false)),
        F("pool", .string, "a pool declared with baton.pool(name, n): at most n of its stages at once", type: "string"),
        F("noOutputTimeout", .number, "seconds without output (or heartbeatFile touch): end it as \"stalled\"",
          type: "number (s)", default: "none"),
        F("heartbeatFile", .string, "a file the job touches to say it is alive", type: "string"),
        F("stallWarnSec", .number, "silence after which one stage_stalled event is journaled (default 600)",
          type: "number (s)", default: "600 (`BATON_STALL_WARN_SEC`)"),
        F("executor", .string, "where it runs (default: the run's, else local)", choices: Executors.names,
          default: "the run's (`baton.executor`, `run --executor`, else local)"),
        F("waitFor", .string, "the stage ends when its leader exits (default) or when its whole process group is empty",
          choices: ["leader", "group"], value: .string("leader")),
        F("inputs",
          .paths,
          "files the stage reads, globs from cwd (\"src/**/*.py\", \"!src/tests/**\", \"?docs/**\" optional); "
          + "their content is in the fingerprint", lua: "string[]|fun(): string[]",
          type: "list of paths and globs, or a function returning one"),
        F("outputs",
          .paths,
          "files or directories the stage makes: must exist after a zero exit; hashed, journaled, cached",
          lua: "string[]", type: "list of paths"),
        F("cache",
          .boolean,
          "use the cache across runs (default: on with `baton run --cache` when outputs are declared)",
          type: "boolean", default: "`baton run --cache`: on when `outputs` are declared"),
    ]

    /// runStage's `transient` table.
    public static let transient: [FieldDecl] = [
        F("exit", .table, "exit codes", lua: "integer[]"),
        F("stderr", .stringList, "patterns of stderr"),
    ]

    /// runStage's `backoff`, by name (or a list in this order).
    public static let backoff: [FieldDecl] = [
        F("initial", .number), F("factor", .number), F("max", .number),
    ]

    public static let preflight: [FieldDecl] = [
        F("name", .string, "default \"preflight\"", value: .string("preflight")),
        F("policy",
          .string,
          "default \"fail\" (exit code 4)",
          choices: PreflightPolicy.allCases.map(\.rawValue),
          value: .string("fail")),
        F("checks", .table, "", required: true, lua: "baton.Check[]"),
        F("timeout", .number, "default timeout of cmd checks (30 s)", value: .int(30)),
    ]

    /// One item of preflight's `checks` (in the order the runtime lists them).
    public static let preflightCheck: [FieldDecl] = [
        F("path", .string, "passes when the path exists"),
        F("cmd", .command, "passes when it exits 0 within the timeout"),
        F("env", .string, "passes when the variable is set and non-empty"),
        F("pgrep", .string, "passes when a pgrep -f wait would not match itself"),
        F("check", .function, "", lua: "fun(): boolean, string?"),
        F("name", .string),
        F("timeout", .number),
        F("executable", .boolean, "with path: executable"),
        F("dir", .boolean, "with path: a directory"),
        F("cwd", .string),
    ]
    /// The fields of a check item of which exactly one is given.
    public static let preflightCheckKinds = ["path", "cmd", "env", "pgrep", "check"]

    public static let watch: [FieldDecl] = [
        F("id", .string, required: true, default: "required"),
        F("handle", .table, "a background stage", lua: "baton.StageHandle"),
        F("pid", .integer, "any process (pidfd)"),
        F("pattern", .string, "processes whose command line matches"),
        F("file", .string, "a file appearing"),
        F("requireFiles", .stringList, "must exist and be non-empty before the callback"),
        F("readyTimeoutSec", .number, "default 600", value: .int(600)),
        F("readyPollSec", .number, "default 5", value: .int(5)),
        F("onMissing",
          .string,
          "default \"fail\"",
          choices: OnMissing.allCases.map(\.rawValue),
          value: .string("fail")),
        F("timeoutSec", .number, "default 86400", value: .int(86400)),
        F("heartbeatSec", .number, "default 60", value: .int(60)),
        F("callback", .function, "", lua: "fun(info: baton.WatchInfo): any"),
        F("cwd", .string, "", default: "current directory"),
        F("allowFail", .boolean, "", value: .bool(false)),
    ]

    public static let gate: [FieldDecl] = [
        F("name", .string, required: true),
        F("maxIterations", .integer, "default 1", value: .int(1)),
        F("check", .function, "", lua: "fun(iteration: integer): baton.Decision"),
        F("cmd", .command, "prints a JSON object {\"approved\": bool, \"issues\": [...]}"),
        F("onReject", .function, "", lua: "fun(decision: baton.Decision, iteration: integer)"),
        F("fallback", .table, "", lua: "baton.Decision"),
        F("cwd", .string),
        F("env", .table, "", lua: "table<string, string>"),
        F("timeout", .number),
    ]

    /// parallel's third argument.
    public static let parallelOptions: [FieldDecl] = [
        F("maxConcurrency",
          .integer,
          "items in flight at once (default: the number of cores)",
          default: "the number of cores"),
        F("onFailure",
          .string,
          "default \"cancel\"",
          choices: ["cancel", "drain", "continue"],
          value: .string("cancel")),
        F("maxFailures",
          .integer,
          "failures tolerated before onFailure applies",
          default: "0 (`\"continue\"`: no limit)"),
    ]

    /// persistFinal's second argument.
    public static let persistFinalOptions: [FieldDecl] = [
        F("cancelled", .table), F("stdout", .boolean),
    ]

    /// baton.sh's second argument.
    public static let shOptions: [FieldDecl] = [
        F("cwd", .string), F("env", .table, "", lua: "table<string, string>"), F("stdin", .string),
        F("timeout", .number),
        F("allowFail", .boolean, "return stdout, ok, exit, stderr instead of raising"),
        F("readOnly", .boolean, "the command only reads: it runs in a dry run too"),
    ]
    /// baton.log's second argument: any fields (journaled with the message); `level` is read.
    public static let logFields: [FieldDecl] = [
        F("level", .string, choices: LogLevel.allCases.map(\.rawValue), value: .string("info")),
    ]
    /// Tables that take fields beyond the declared ones (kit.lint reports no unknown field there).
    public static let open: Set<String> = ["baton.log#2"]
    public static let fsWriteOptions: [FieldDecl] = [F("mode", .integer, value: .int(0o644))]
    public static let fsLockedOptions: [FieldDecl] = [F("timeout", .number, value: .int(60))]
    public static let failOptions: [FieldDecl] = [F("code", .integer, value: .int(1))]

    /// Which combinations of fields are errors: of `fields`, a table (by kit.lint's key, see
    /// `linted`) gives at least `min` and at most `max`.
    public struct Combination: Sendable {
        public let key: String
        public let fields: [String]
        public let min: Int
        public let max: Int
    }
    public static let combinations: [Combination] = [
        Combination(key: "preflight.checks[]", fields: preflightCheckKinds, min: 1, max: 1),
        Combination(key: "watch", fields: watchTargets, min: 0, max: 1),
        Combination(key: "watch", fields: watchTargets + ["requireFiles"], min: 1, max: .max),
        Combination(key: "gate", fields: ["check", "cmd"], min: 1, max: 1),
    ]
    /// What a watch waits for (at most one; with requireFiles, at least one of them all).
    public static let watchTargets = ["handle", "pid", "pattern", "file"]

    /// How many arguments each primitive takes.
    public static let arity: [(String, Int, Int)] = [
        ("runStage", 1, 1), ("preflight", 1, 1), ("watch", 1, 1), ("gate", 1, 1), ("persistFinal", 1, 2),
        ("parallel", 2, 3),
    ]

    /// The tables `baton check` looks into, by kit.lint's key: "fn" (its table argument),
    /// "fn.field" (a table in a field), "fn.field[]" (each table in a list field),
    /// "fn#n" (the n-th argument).
    public static var linted: [(String, [FieldDecl])] {
        [("runStage", runStage), ("runStage.transient", transient), ("preflight", preflight),
         ("preflight.checks[]", preflightCheck), ("watch", watch), ("gate", gate), ("parallel#3", parallelOptions),
         ("persistFinal#2", persistFinalOptions), ("baton.sh#2", shOptions), ("baton.fail#2", failOptions),
         ("baton.log#2", logFields), ("baton.fs.write#3", fsWriteOptions), ("baton.fs.locked#3", fsLockedOptions)]
    }

    /// `---@field` lines of a table, one per field.
    public static func luaCATS(_ fields: [FieldDecl]) -> String {
        fields.map(\.luaCATS).joined(separator: "\n")
    }

    /// An inline LuaCATS table type: `{name?: type, ...}`.
    public static func inline(_ fields: [FieldDecl]) -> String {
        "{" + fields.map { "\($0.name)\($0.required ? "" : "?"): \($0.luaType)" }.joined(separator: ", ") + "}"
    }
}

extension Array where Element == FieldDecl {
    /// The names, in declared order (the runtime's allowed-field lists).
    public var names: [String] { map(\.name) }
    public subscript(field name: String) -> FieldDecl? { first { $0.name == name } }

    /// The declared default of a field (`value`), as the runtime reads it.
    func number(_ name: String) -> Double { self[field: name]!.value!.doubleValue! }
    func integer(_ name: String) -> Int { Int(self[field: name]!.value!.intValue!) }
    func bool(_ name: String) -> Bool {
        if case let .bool(b)? = self[field: name]?.value { return b }
        fatalError("\(name): no boolean default")
    }
    func string(_ name: String) -> String { self[field: name]!.value!.stringValue! }
}
