import BatonBase

/// One value of an executor's option, as the recipe gave it (checked against its declared kind).
public enum OptionValue: Sendable, Equatable {
    case string(String)
    case number(Double)
    case strings([String])

    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var number: Double? { if case let .number(n) = self { return n }; return nil }
    public var strings: [String]? { if case let .strings(s) = self { return s }; return nil }
}

/// An executor's options: its table in `runStage{<name> = {...}}` or `baton.executor(name, {...})`,
/// read by the recipe environment by the executor's declaration, decoded by the executor.
public struct ExecutorOptions: Sendable, Equatable {
    public var values: [String: OptionValue] = [:]
    public init(_ values: [String: OptionValue] = [:]) { self.values = values }

    public subscript(_ name: String) -> OptionValue? {
        get { values[name] }
        set { values[name] = newValue }
    }

    /// These options over `base` (a stage's over the run's defaults): a value given here wins;
    /// lists are joined, base's first.
    public func over(_ base: ExecutorOptions) -> ExecutorOptions {
        var o = base
        for (k, v) in values {
            if case let .strings(mine) = v, case let .strings(theirs)? = base.values[k] {
                o.values[k] = .strings(theirs + mine)
            } else {
                o.values[k] = v
            }
        }
        return o
    }
}

/// One option an executor takes: the one declaration that the runtime's field checks,
/// `baton check`, `baton types` and the docs all read.
public struct ExecutorOption: Sendable {
    public enum Kind: Sendable, Equatable {
        case string
        case integer(min: Int)
        case number(min: Double)
        /// A string in the executor's words, or a number (the executor says what it counts).
        case stringOrNumber(min: Double)
        case stringOrInteger(min: Int)
        /// A list of strings (a single string is a list of one).
        case stringList
    }

    public let name: String
    public let kind: Kind
    /// One line for people (`baton types`, docs).
    public let doc: String
    /// A setting of the executor for the whole run, allowed only in `baton.executor(name, {...})`.
    public let runWide: Bool

    public init(_ name: String, _ kind: Kind, _ doc: String, runWide: Bool = false) {
        self.name = name; self.kind = kind; self.doc = doc; self.runWide = runWide
    }

    /// Its type in LuaCATS.
    public var luaType: String {
        switch kind {
        case .string: return "string"
        case .integer: return "integer"
        case .number: return "number"
        case .stringOrNumber: return "string|number"
        case .stringOrInteger: return "string|integer"
        case .stringList: return "string|string[]"
        }
    }
}

/// What the registry needs to make an executor.
public struct ExecutorSetup {
    /// The environment its tools and jobs start from.
    public var environment: [String: String]
    /// Where its warnings go (the run's journal), prefixed with its name.
    public var warn: (String) -> Void
    public init(environment: [String: String], warn: @escaping (String) -> Void = { _ in }) {
        self.environment = environment; self.warn = warn
    }
}

/// An executor as a plug-in: its name, its options, and how one is made. Each executor's
/// folder declares one; the registry (`Executors`) lists them, one line each.
public struct ExecutorKind: Sendable {
    public let name: String
    /// One line for `run --help` and docs: where this executor runs stages.
    public let summary: String
    /// Its options (`runStage{<name> = {...}}`; the `runWide` ones only in `baton.executor`).
    public let options: [ExecutorOption]
    /// The `KEY=VALUE` its jobs' processes carry in their environment when they must be spared
    /// by the end-of-run sweep of the run's processes (they are the executor's to end).
    public let jobMark: String?
    public let make: @Sendable (ExecutorSetup) -> Executor

    public init(name: String, summary: String, options: [ExecutorOption] = [], jobMark: String? = nil,
                make: @escaping @Sendable (ExecutorSetup) -> Executor) {
        self.name = name; self.summary = summary; self.options = options; self.jobMark = jobMark; self.make = make
    }

    /// The option names a stage's table takes.
    public var stageOptionNames: [String] { options.filter { !$0.runWide }.map(\.name) }
    /// The option names `baton.executor(name, {...})` takes.
    public var runOptionNames: [String] { options.map(\.name) }
}
