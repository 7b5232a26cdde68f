import BatonBase
import BatonCore
import CLua
import LuaKit

/// Reads a spec table passed to a primitive, checking every field's type and refusing
/// unknown (misspelt) fields. Errors name the function and the field; the raise path
/// adds the recipe's file:line.
struct SpecTable {
    let lua: LuaState
    let index: Int32
    let fn: String
    /// The keys the table has (known when `init` checked them): a field that is not among
    /// them is nil without a lookup. runStage reads ~25 optional fields and a call sets
    /// two or three; each lookup pushed its key's string into Lua.
    private var present: [String]? = nil

    /// Checks that argument `arg` is a table and that all its keys are in `allowed`.
    init(_ lua: LuaState, arg: Int32, fn: String, allowed: [String]) throws {
        self.lua = lua
        self.fn = fn
        self.index = lua.absIndex(arg)
        guard lua.type(index) == LUA_TTABLE else {
            throw LuaRaise.usage("\(fn) expects a table argument, got \(lua.describeType(index))")
        }
        present = try checkKeys(allowed, context: fn)
    }

    init(nested lua: LuaState, index: Int32, fn: String) {
        self.lua = lua; self.index = lua.absIndex(index); self.fn = fn
    }

    /// Every key must be a string in `allowed`; returns the keys. lua_next needs the key
    /// left on the stack for the next step, so only the value is popped while iterating.
    @discardableResult
    func checkKeys(_ allowed: [String], context: String) throws -> [String] {
        var keys: [String] = []
        lua.pushNil()
        while lua_next(lua.L, index) != 0 {
            lua.pop()                                   // [.. key]
            guard let k = lua.string(-1) else {
                let t = lua.describeType(-1)
                let item = lua.integer(-1)
                lua.pop()
                if let i = item {
                    throw LuaRaise.usage("\(context): unexpected list item [\(i)]; fields are named (known fields: "
                            + "\(allowed.joined(separator: ", ")))")
                }
                throw LuaRaise.usage("\(context): field names must be strings (found a \(t) key)")
            }
            if !allowed.contains(k) {
                lua.pop()
                let hint = suggestion(k, allowed).map { " (did you mean '\($0)'?)" } ?? ""
                throw LuaRaise.usage("\(context): unknown field '\(k)'\(hint); known fields: "
                        + "\(allowed.joined(separator: ", "))")
            }
            keys.append(k)
        }
        return keys
    }

    /// Pushes the field's value and returns its Lua type.
    @discardableResult
    func get(_ key: String) -> Int32 {
        if let present, !present.contains(key) { lua.pushNil(); return LUA_TNIL }
        return lua.rawGetField(index, key)
    }

    func has(_ key: String) -> Bool { let t = get(key); lua.pop(); return t != LUA_TNIL }

    private func wrongType(_ key: String, _ want: String) -> LuaRaise {
        let got = lua.describeType(-1)
        lua.pop()
        return LuaRaise.usage("\(fn): field '\(key)' must be \(want), got \(got)")
    }

    private func missing(_ key: String, _ want: String) -> LuaRaise {
        LuaRaise.usage("\(fn): field '\(key)' is required (\(want))")
    }

    /// Fields whose text may hold any byte (it is data, not a command, a name or a path).
    static let binaryFields: Set<String> = ["stdin"]

    func string(_ key: String, required: Bool = false, nonEmpty: Bool = false) throws -> String? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); if required { throw missing(key, "a string") }; return nil }
        guard t == LUA_TSTRING else { throw wrongType(key, "a string") }
        let s = lua.string(-1) ?? ""
        lua.pop()
        if !SpecTable.binaryFields.contains(key) { try noNUL(s, "\(fn): field '\(key)'") }
        if nonEmpty && s.isEmpty { throw LuaRaise.usage("\(fn): field '\(key)' must not be empty") }
        return s
    }

    func number(_ key: String, min: Double? = nil, max: Double? = nil) throws -> Double? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TNUMBER, let v = lua.number(-1) else { throw wrongType(key, "a number") }
        lua.pop()
        guard v.isFinite else { throw LuaRaise.usage("\(fn): field '\(key)' must be a finite number") }
        if let lo = min, v < lo {
            throw LuaRaise.usage("\(fn): field '\(key)' must be at least \(fmt(lo)), got \(fmt(v))")
        }
        if let hi = max, v > hi {
            throw LuaRaise.usage("\(fn): field '\(key)' must be at most \(fmt(hi)), got \(fmt(v))")
        }
        return v
    }

    func integer(_ key: String, min: Int? = nil, max: Int? = nil) throws -> Int? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TNUMBER else { throw wrongType(key, "an integer") }
        let v: Int
        if let i = lua.integer(-1) { v = i }
        else if let d = lua.number(-1), d.rounded() == d, abs(d) < 1e15 { v = Int(d) }
        else { throw wrongType(key, "an integer") }
        lua.pop()
        if let lo = min, v < lo { throw LuaRaise.usage("\(fn): field '\(key)' must be at least \(lo), got \(v)") }
        if let hi = max, v > hi { throw LuaRaise.usage("\(fn): field '\(key)' must be at most \(hi), got \(v)") }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TBOOLEAN else { throw wrongType(key, "a boolean") }
        let b = lua.bool(-1)
        lua.pop()
        return b
    }

    func choice(_ key: String, _ options: [String]) throws -> String? {
        guard let s = try string(key) else { return nil }
        guard options.contains(s) else {
            let hint = suggestion(s, options).map { " (did you mean '\($0)'?)" } ?? ""
            throw LuaRaise.usage("\(fn): field '\(key)' must be one of "
                    + "\(options.map { "'\($0)'" }.joined(separator: ", ")), got '\(s)'\(hint)")
        }
        return s
    }

    /// A choice decoded once into its enum (luaL_checkoption's idea); the error lists the choices.
    func option<E: RawRepresentable & CaseIterable>(_ key: String, _ type: E.Type) throws -> E?
    where E.RawValue == String {
        guard let s = try choice(key, E.allCases.map(\.rawValue)) else { return nil }
        return E(rawValue: s)
    }

    /// A list of strings (a single string is accepted as a list of one).
    func stringList(_ key: String) throws -> [String]? {
        let l = try list(key, of: "a string", single: LUA_TSTRING) { lua.string(-1) }
        for (i, s) in (l ?? []).enumerated() {
            try noNUL(s, "\(fn): field '\(key)'\(l!.count > 1 || i > 0 ? "[\(i + 1)]" : "")")
        }
        return l
    }

    func intList(_ key: String) throws -> [Int]? {
        try list(key, of: "an integer", single: LUA_TNUMBER) { lua.integer(-1) }
    }

    /// A list of values read by `item` from the top of the stack (nil: the wrong type); a
    /// single value of type `single` is accepted as a list of one.
    private func list<T>(_ key: String, of what: String, single: Int32, _ item: () -> T?) throws -> [T]? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        if t == single, let v = item() { lua.pop(); return [v] }
        guard t == LUA_TTABLE else { throw wrongType(key, "a list of \(what.split(separator: " ").last ?? "")s") }
        defer { lua.pop() }
        return try listItems(key) { i in
            guard let v = item() else {
                throw LuaRaise.usage("\(fn): field '\(key)'[\(i)] must be \(what), got \(lua.describeType(-1))")
            }
            return v
        }
    }

    /// Items 1..n of the table on top of the stack; refuses holes and non-integer keys.
    private func listItems<T>(_ key: String, _ read: (Int) throws -> T) throws -> [T] {
        let n = Int(lua_rawlen(lua.L, -1))
        var out: [T] = []
        out.reserveCapacity(n)
        for i in 0..<n where true {
            lua_rawgeti(lua.L, -1, lua_Integer(i + 1))
            do { out.append(try read(i + 1)) } catch { lua.pop(); throw error }
            lua.pop()
        }
        // Any key beyond 1..n is a mistake (a map where a list was expected).
        lua.pushNil()
        while lua_next(lua.L, -2) != 0 {
            lua.pop()
            if let k = lua.integer(-1), k >= 1, k <= n { continue }
            lua.pop()
            throw LuaRaise.usage("\(fn): field '\(key)' must be a list (found a non-list key)")
        }
        return out
    }

    /// A string -> string map (numbers and booleans are converted).
    func stringMap(_ key: String) throws -> [String: String]? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TTABLE else { throw wrongType(key, "a table of strings") }
        defer { lua.pop() }
        var out: [String: String] = [:]
        lua.pushNil()
        while lua_next(lua.L, -2) != 0 {
            guard let k = lua.string(-2) else {
                lua.pop(2)
                throw LuaRaise.usage("\(fn): field '\(key)' must have string keys")
            }
            do { try noNUL(k, "\(fn): field '\(key)' key") } catch { lua.pop(2); throw error }
            switch lua.type(-1) {
            case LUA_TSTRING:
                let v = lua.string(-1)!
                do { try noNUL(v, "\(fn): field '\(key).\(k)'") } catch { lua.pop(2); throw error }
                out[k] = v
            case LUA_TNUMBER: out[k] = lua.integer(-1).map(String.init) ?? String(lua.number(-1)!)
            case LUA_TBOOLEAN: out[k] = lua.bool(-1) ? "1" : "0"
            default:
                let tn = lua.describeType(-1)
                lua.pop(2)
                throw LuaRaise.usage("\(fn): field '\(key).\(k)' must be a string, got \(tn)")
            }
            lua.pop()
        }
        return out
    }

    /// A nested table as its own SpecTable (pushed; the caller pops with `lua.pop()`).
    func table(_ key: String, allowed: [String]? = nil) throws -> SpecTable? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TTABLE else { throw wrongType(key, "a table") }
        let sub = SpecTable(nested: lua, index: -1, fn: "\(fn): field '\(key)'")
        if let allowed {
            do { try sub.checkKeys(allowed, context: "\(fn): field '\(key)'") } catch { lua.pop(); throw error }
        }
        return sub
    }

    /// A record of numbers given either as a list in the order of `names` (`{1, 2, 60}`)
    /// or by name (`{initial = 1, factor = 2, max = 60}`), not both. Absent items are nil;
    /// `min` bounds each item by name.
    func numberRecord(_ key: String, names: [String], min: [String: Double] = [:]) throws -> [String: Double]? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        let shape =
            "a list {\(names.joined(separator: ", "))} or a table "
                + "{\(names.map { "\($0) = ..." }.joined(separator: ", "))}"
        guard t == LUA_TTABLE else { throw wrongType(key, shape) }
        defer { lua.pop() }
        let tbl = lua.absIndex(-1)
        var named = false, positional = false
        lua.pushNil()
        while lua_next(lua.L, tbl) != 0 {
            lua.pop()
            if lua.type(-1) == LUA_TSTRING { named = true } else { positional = true }
        }
        if named && positional {
            throw LuaRaise.usage("\(fn): field '\(key)' must be \(shape), not a mix of both")
        }
        var out: [String: Double] = [:]
        func item(_ index: Int?, _ name: String) throws {
            let label = index.map { "\(key)[\($0)]' (\(name))" } ?? "\(key).\(name)'"
            let ty = lua.type(-1)
            if ty == LUA_TNIL { return }
            guard ty == LUA_TNUMBER, let v = lua.number(-1) else {
                throw LuaRaise.usage("\(fn): field '\(label) must be a number, got \(lua.describeType(-1))")
            }
            guard v.isFinite else { throw LuaRaise.usage("\(fn): field '\(label) must be a finite number") }
            if let lo = min[name], v < lo {
                throw LuaRaise.usage("\(fn): field '\(label) must be at least \(fmt(lo)), got \(fmt(v))")
            }
            out[name] = v
        }
        if named {
            let sub = SpecTable(nested: lua, index: tbl, fn: fn)
            try sub.checkKeys(names, context: "\(fn): field '\(key)'")
            for n in names {
                _ = lua.rawGetField(tbl, n)
                defer { lua.pop() }
                try item(nil, n)
            }
        } else if positional {
            let n = Int(lua_rawlen(lua.L, tbl))
            guard n <= names.count else {
                throw LuaRaise.usage("\(fn): field '\(key)' has \(n) items; at most \(names.count) "
                        + "({\(names.joined(separator: ", "))})")
            }
            lua.pushNil()
            while lua_next(lua.L, tbl) != 0 {
                lua.pop()                               // [.. key]
                if let k = lua.integer(-1), k >= 1, k <= n { continue }
                lua.pop()
                throw LuaRaise.usage("\(fn): field '\(key)' must be \(shape) (found a key that is not 1..\(n))")
            }
            for i in 0..<n {
                lua_rawgeti(lua.L, tbl, lua_Integer(i + 1))
                defer { lua.pop() }
                try item(i + 1, names[i])
            }
        }
        return out
    }

    /// A function field, kept in the registry; returns its ref.
    func function(_ key: String) throws -> Int32? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); return nil }
        guard t == LUA_TFUNCTION else { throw wrongType(key, "a function") }
        return lua.ref()
    }

    /// `cmd`: an argv list of strings, or a string for /bin/sh -c.
    func command(_ key: String, required: Bool = true) throws -> Command? {
        let t = get(key)
        if t == LUA_TNIL { lua.pop(); if required { throw missing(key, "an argv list or a shell string") }; return nil }
        if t == LUA_TSTRING {
            let s = lua.string(-1)!
            lua.pop()
            if s.trimmingWhitespace().isEmpty { throw LuaRaise.usage("\(fn): field '\(key)' is an empty command") }
            try noNUL(s, "\(fn): field '\(key)'")
            return .shell(s)
        }
        lua.pop()
        guard let argv = try stringList(key) else { return nil }
        if argv.isEmpty || argv[0].isEmpty { throw LuaRaise.usage("\(fn): field '\(key)' is an empty argv list") }
        return .argv(argv)
    }
}

/// A command, an argument, a name, an environment variable or a path cannot hold a NUL
/// byte (the system would cut it there, and the journal would record what did not run).
func noNUL(_ s: String, _ what: String) throws {
    guard let i = s.utf8.firstIndex(of: 0) else { return }
    throw LuaRaise.usage("\(what) contains a NUL byte (at byte \(s.utf8.distance(from: s.utf8.startIndex, to: i) + 1))")
}

func fmt(_ d: Double) -> String { d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d) }
