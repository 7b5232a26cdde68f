import BatonBase
import BatonCore
import BatonLua
import Glibc

/// `baton types` and `baton init`: what an editor (lua-language-server, through LuaCATS
/// annotations and .luarc.json) and luacheck (.luacheckrc) need to know of the recipe
/// environment. `TypesTests` holds these lists to what a recipe really sees.
public enum Types {
    /// The globals a recipe has beyond standard Lua 5.4.
    public static let globals = ["baton", "gate", "parallel", "persistFinal", "preflight", "runStage", "watch"]
    /// The `baton` table's fields, and the fields of its sub-tables.
    public static let batonFields: [(String, [String])] = [
        ("args", []), ("breakpoint", []), ("budget", []), ("env", []), ("executor", []), ("fail", []),
        ("fs", ["append", "exists", "glob", "locked", "mkdir", "read", "write"]),
        ("gate", []), ("json", ["array", "decode", "encode", "null"]), ("log", []), ("now", []), ("parallel", []),
        ("persistFinal", []),
        ("pool", []),
        ("preflight", []), ("runStage", []), ("run", ["id", "dir", "dry_run"]), ("sh", []), ("sleep", []),
        ("usageOnly", []), ("watch", []), ("yaml", ["decode"]),
    ]

    /// .luacheckrc: Lua 5.4 plus the recipe globals, read-only, so a misspelt
    /// `runStag{...}` is an undefined global (W113) and `baton.fs.wirte` an undefined field (W143).
    public static var luacheckrc: String {
        let fields = batonFields.map { name, sub in
            // baton.args holds whatever key=value words the run was given.
            if name == "args" { return "      args = {other_fields = true}," }
            return sub.isEmpty ? "      \(name) = {}," : "      \(name) = {fields = {" + sub.map {
                "\($0) = {}"
            }.joined(separator: ", ") + "}},"
        }
        return """
            -- Written by `baton init`: the recipe environment for luacheck (docs/cli.md).
            std = "lua54"
            max_line_length = false
            read_globals = {
              \(globals.filter { $0 != "baton" }.map { "\"\($0)\"" }.joined(separator: ", ")),
              baton = {fields = {
            \(fields.joined(separator: "\n"))
              }},
            }
            exclude_files = {"\(ProjectLayout.dir)/"}

            """
    }

    /// .luarc.json for lua-language-server: Lua 5.4, the annotations as a library.
    public static let luarc = """
        {
          "$schema": "https://raw.githubusercontent.com/LuaLS/vscode-lua/master/setting/schema.json",
          "runtime.version": "Lua 5.4",
          "workspace.library": ["\(ProjectLayout.types)"],
          "diagnostics.globals": [\(globals.map { "\"\($0)\"" }.joined(separator: ", "))]
        }

        """

    /// LuaCATS annotations of the primitives and helpers (docs/primitives.md).
    /// The executors a stage may name, as a LuaCATS union ("local"|...), from the registry.
    static let executorChoice = Executors.names.map { "\"\($0)\"" }.joined(separator: "|")
    /// Each executor's table in a stage spec, from the options its kind declares.
    static let executorTables = Executors.kinds.filter { !$0.stageOptionNames.isEmpty }.map { kind in
        let fields = kind.options.filter { !$0.runWide }.map { "\($0.name)?: \($0.luaType)" }
        return "---@field \(kind.name)? {\(fields.joined(separator: ", "))} \(kind.summary)"
    }.joined(separator: "\n")
    /// persistFinal's options table, inline.
    static let persistFinalOptions = PrimitiveFields.inline(PrimitiveFields.persistFinalOptions)

    public static let luaCATS = #"""
        ---@meta baton
        -- Baton's recipe environment, for lua-language-server (written by `baton types` / `baton init`).

        ---@alias baton.Command string|string[] argv (no shell), or text for /bin/sh -c

        ---@class baton.StageSpec
        \#(PrimitiveFields.luaCATS(PrimitiveFields.runStage))
        \#(executorTables)

        ---@class baton.StageResult
        ---@field id string
        ---@field occurrence integer
        ---@field ok boolean
        ---@field status "passed"|"failed"|"timed_out"|"cancelled"
        ---@field exit? integer
        ---@field signal? integer
        ---@field attempts integer
        ---@field duration number seconds
        ---@field stdout string the last 64 KiB
        ---@field stderr string the last 64 KiB
        ---@field logs {stdout: string, stderr: string} the full logs on disk
        ---@field failure_class? \#(FailureClass.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: "|"))
        ---@field signature? string
        ---@field message? string
        ---@field breaker_open? boolean
        ---@field skipped? boolean skipped at a breakpoint (:skip): the only other field is id
        ---@field replayed boolean
        ---@field dry boolean
        ---@field pid? integer
        ---@field outputs? table<string, string> declared outputs: path -> SHA-256
        ---@field cached_from? {run: string, id: string, occurrence: integer} answered by the cache: the call that\#
         made the outputs

        ---@class baton.StageHandle
        ---@field wait fun(self: baton.StageHandle): baton.StageResult
        ---@field pid fun(self: baton.StageHandle): integer?
        ---@field cancel fun(self: baton.StageHandle)
        ---@field done fun(self: baton.StageHandle): boolean

        ---Runs a stage (its own process group), journaled; raises on failure unless allowFail.
        ---@param spec baton.StageSpec
        ---@return baton.StageResult|baton.StageHandle
        function runStage(spec) end

        ---@class baton.Check
        \#(PrimitiveFields.luaCATS(PrimitiveFields.preflightCheck))

        ---@class baton.PreflightSpec
        \#(PrimitiveFields.luaCATS(PrimitiveFields.preflight))

        ---@class baton.PreflightReport
        ---@field name string
        ---@field policy "fail"|"warn"
        ---@field ok boolean
        ---@field checks {kind: string, target: string, ok: boolean, detail: string}[]

        ---Checks before acting; fail-closed (exit code 4) unless policy = "warn".
        ---@param spec baton.PreflightSpec
        ---@return baton.PreflightReport
        function preflight(spec) end

        ---@class baton.WatchInfo
        ---@field id string
        ---@field exit? integer
        ---@field signal? integer
        ---@field status string
        ---@field files string[]
        ---@field missing string[]

        ---@class baton.WatchSpec
        \#(PrimitiveFields.luaCATS(PrimitiveFields.watch))

        ---@class baton.WatchOutcome
        ---@field id string
        ---@field state string
        ---@field ok boolean
        ---@field reason string
        ---@field exit? integer
        ---@field signal? integer
        ---@field files string[]
        ---@field missing string[]
        ---@field duration number
        ---@field transitions table[]
        ---@field callback_result any

        ---Waits for a process or file, then for its artifacts, then calls back.
        ---@param spec baton.WatchSpec
        ---@return baton.WatchOutcome
        function watch(spec) end

        ---@class baton.Decision
        ---@field approved boolean
        ---@field issues? string[]
        ---@field iteration? integer

        ---@class baton.GateSpec
        \#(PrimitiveFields.luaCATS(PrimitiveFields.gate))

        ---Approves or rejects, up to maxIterations times (then exit code 2).
        ---@param spec baton.GateSpec
        ---@return baton.Decision
        function gate(spec) end

        ---Merges fields into final.json's result and writes final.json at once.
        ---@param fields table
        ---@param opts? {cancelled?: table, stdout?: boolean} result fields for a cancelled ending; print it on stdout
        function persistFinal(fields, opts) end

        ---@class baton.ShOptions
        \#(PrimitiveFields.luaCATS(PrimitiveFields.shOptions))

        ---@class baton.fs
        ---@field exists fun(path: string): boolean
        ---@field read fun(path: string): string
        ---@field write fun(path: string, text: string, opts?:\#
         \#(PrimitiveFields.inline(PrimitiveFields.fsWriteOptions))) atomic
        ---@field append fun(path: string, text: string) one write under an exclusive flock
        ---@field glob fun(pattern: string): string[]
        ---@field mkdir fun(path: string)
        ---@field locked fun(path: string, fn: function, opts?:\#
         \#(PrimitiveFields.inline(PrimitiveFields.fsLockedOptions))): ...

        ---@class baton.json
        ---@field encode fun(value: any, opts?: {pretty?: boolean}): string
        ---@field decode fun(text: string): any
        ---@field null userdata
        ---@field array fun(t?: table): table

        ---@class baton.lib
        ---@field args table<string, string> key=value words after the recipe
        ---@field run {id: string, dir: string, dry_run: boolean}
        ---@field log fun(message: string, fields?: \#(PrimitiveFields.inline(PrimitiveFields.logFields).dropLast()),\#
         [string]: any})
        ---@field fail fun(message: string, opts?: \#(PrimitiveFields.inline(PrimitiveFields.failOptions)))
        ---@field json baton.json
        ---@field yaml {decode: fun(text: string): any}
        ---@field fs baton.fs
        ---@field sh fun(cmd: baton.Command, opts?: baton.ShOptions): string, boolean?, integer?, string?
        ---@field sleep fun(seconds: number)
        ---@field pool fun(name: string, limit: integer) a pool for runStage{pool = name}
        ---@field executor fun(name: \#(executorChoice), opts?: table) where stages run unless they say otherwise\#
         (docs/primitives.md)
        ---@field breakpoint fun(why?: string) pause the run here (baton attach opens its prompt in this frame;\#
         docs/shell.md)
        ---@field budget fun(duration: string|number) end the whole run after this long ("2h", "30m", seconds): exit 124
        ---@field parallel fun(items: any[], fn: fun(item: any, index: integer): any, opts?: baton.ParallelOptions):\#
         any[], table[]
        ---@field now fun(): number
        ---@field env fun(name: string): string?
        ---@field usageOnly fun() the run only printed its usage: keep no run directory
        ---@field runStage fun(spec: baton.StageSpec): baton.StageResult|baton.StageHandle
        ---@field preflight fun(spec: baton.PreflightSpec): baton.PreflightReport
        ---@field watch fun(spec: baton.WatchSpec): baton.WatchOutcome
        ---@field gate fun(spec: baton.GateSpec): baton.Decision
        ---@field persistFinal fun(fields: table, opts?: \#(persistFinalOptions))

        ---@class baton.ParallelOptions
        \#(PrimitiveFields.luaCATS(PrimitiveFields.parallelOptions))

        ---Runs fn(item, index) for every item, each in its own coroutine; their stages run at once.
        ---@param items any[]
        ---@param fn fun(item: any, index: integer): any
        ---@param opts? baton.ParallelOptions
        ---@return any[] results in input order
        ---@return table[] outcomes {ok, value} / {ok = false, error} / {cancelled} / {skipped}
        function parallel(items, fn, opts) end

        ---@type baton.lib
        baton = {}

        """#

    /// `baton types`: the annotations on stdout.
    public static func types() -> Int32 {
        Console.write(1, luaCATS, newline: false)
        return ExitStatus.success.rawValue
    }

    /// `baton init [DIR]`: `.baton/` (where runs are found from below), the annotations in
    /// `.baton/types/baton.lua`, `.luarc.json` and `.luacheckrc` (kept when they exist,
    /// unless `force`).
    public static func initialize(dir: String, force: Bool, json: Bool) -> Int32 {
        let root = FileIO.absolute(dir)
        let files: [(String, String, Bool)] = [
            (ProjectLayout.types + "/baton.lua", luaCATS, true), (".luarc.json", luarc, force),
            (".luacheckrc", luacheckrc, force),
        ]
        var written: [String] = [], kept: [String] = []
        do {
            try FileIO.makeDirectories(root + "/" + ProjectLayout.types)
            for (name, text, replace) in files {
                let path = root + "/" + name
                if FileIO.exists(path) && !replace { kept.append(name); continue }
                try FileIO.writeAtomically(path, Array(text.utf8))
                written.append(name)
            }
        } catch {
            return Console.error("cannot initialise \(root): \(error)", json: json)
        }
        if json {
            Console.out(JSON.object([("dir", .string(root)), ("written", .array(written.map(JSON.string))),
                                     ("kept", .array(kept.map(JSON.string)))]).encoded(pretty: true))
        } else {
            for w in written { Console.out("wrote \(w)") }
            for k in kept { Console.out("kept \(k) (exists; --force replaces it)") }
        }
        return ExitStatus.success.rawValue
    }
}
