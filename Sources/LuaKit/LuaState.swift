import BatonBase
import CLua
import LuaShim

/// An error raised into Lua by a Swift function. It reaches Lua as a table
/// `{message = "file:line: ...", code = N, kind = "..."}` whose `__tostring` is the
/// message (so it prints with the recipe's file:line); `extra` may add fields.
// @unchecked: `extra` runs on the thread that raised, inside the trampoline, never elsewhere.
public struct LuaRaise: Error, CustomStringConvertible, @unchecked Sendable {
    public var message: String
    public var code: Int?
    public var kind: String
    public var extra: ((LuaState) -> Void)?
    /// A Lua error value kept in the registry, raised again unchanged.
    var passthrough: Int32?
    /// false: the message already says where (an error coming back from Lua code).
    public var addWhere = true

    public init(_ message: String, code: Int? = nil, kind: String = "error", extra: ((LuaState) -> Void)? = nil) {
        self.message = message; self.code = code; self.kind = kind; self.extra = extra
    }

    /// An error that ends the run with `status` unless the recipe catches it.
    public init(_ message: String, status: ExitStatus, kind: String, extra: ((LuaState) -> Void)? = nil) {
        self.init(message, code: Int(status.rawValue), kind: kind, extra: extra)
    }

    /// A usage error: wrong type, missing or unknown field (exit code 3).
    public static func usage(_ message: String) -> LuaRaise { LuaRaise(message, status: .usage, kind: "usage") }

    public var description: String { message }
}

/// Lua's status codes for a failed load or call (lua.h), kept so no caller reads messages.
public enum LuaStatus: Int32, Sendable {
    case yield = 1         // LUA_YIELD
    case runtime = 2       // LUA_ERRRUN
    case syntax = 3        // LUA_ERRSYNTAX
    case memory = 4        // LUA_ERRMEM
    case handler = 5       // LUA_ERRERR: the message handler itself failed
    case file = 6          // LUA_ERRFILE
}

/// The error a protected call returned: Lua's status, its value as text, its traceback,
/// and the fields of a Baton error table when it was one.
public struct LuaCallError: Error, CustomStringConvertible {
    public var status: LuaStatus
    public var message: String
    public var traceback: String
    public var code: Int?
    public var kind: String?
    /// The error value, kept in the registry so it can be raised again unchanged.
    public var ref: Int32
    public var description: String { message }
    /// A syntax error at the end of the text: the chunk is unfinished (lua.c's `incomplete`).
    public var isIncomplete: Bool { status == .syntax && message.hasSuffix("<eof>") }
}

final class FunctionBox {
    let name: String
    let body: (LuaState) throws -> Int32
    unowned let state: LuaState
    init(name: String, state: LuaState, body: @escaping (LuaState) throws -> Int32) {
        self.name = name; self.state = state; self.body = body
    }
}

/// Called by the C trampoline. Runs the Swift body; a thrown error becomes the
/// error value on the stack and -1, and the trampoline raises it after we return.
private func luaKitDispatch(_ L: OpaquePointer?, _ ctx: UnsafeMutableRawPointer?) -> Int32 {
    let box = Unmanaged<FunctionBox>.fromOpaque(ctx!).takeUnretainedValue()
    let state = box.state
    // The calling thread may be a coroutine: work on its stack for the length of the call.
    let outer = state.L
    state.L = L!
    defer { state.L = outer }
    if baton_abort_reason(L) != 0 {
        lua_pushstring(L, BATON_ABORT_MESSAGE)
        return -1
    }
    do {
        return try box.body(state)
    } catch let r as LuaRaise {
        state.pushError(r)
        return -1
    } catch {
        state.pushError(LuaRaise("\(box.name): \(error)"))
        return -1
    }
}

public final class LuaState {
    /// The thread Swift code works on: the main thread, or while a Swift function called from
    /// a coroutine runs, that coroutine (its arguments and results are on its stack).
    public fileprivate(set) var L: OpaquePointer
    /// The state's main thread (what closes it).
    public let mainThread: OpaquePointer
    private var boxes: [Unmanaged<FunctionBox>] = []
    /// The light userdata that stands for JSON null (`baton.json.null`).
    public let nullSentinel: UnsafeMutableRawPointer

    public init(memoryLimit: Int = 0) {
        mainThread = baton_newstate(memoryLimit, luaKitDispatch)!
        L = mainThread
        luaL_openlibs(L)
        nullSentinel = baton_pushnulsentinel(L)
        baton_pop(L, 1)
        try! run("""
            local mt = {__tostring = function(e) return tostring(rawget(e, "message")) end, __name = "baton.error"}
            debug.getregistry()["baton.error_mt"] = mt
            debug.getregistry()["baton.json.array_mt"] = {__name = "baton.json.array"}
            """, name: "=baton.bridge")
    }

    deinit {
        baton_closestate(mainThread)
        for b in boxes { b.release() }
    }

    public var top: Int32 {
        get { lua_gettop(L) }
        set { lua_settop(L, newValue) }
    }

    public func pop(_ n: Int32 = 1) { baton_pop(L, n) }
    public func absIndex(_ i: Int32) -> Int32 { lua_absindex(L, i) }
    public func type(_ i: Int32) -> Int32 { lua_type(L, i) }
    public func typeName(_ i: Int32) -> String { String(cString: lua_typename(L, lua_type(L, i))) }

    // MARK: pushing

    public func push(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            buf.withMemoryRebound(to: CChar.self) { cb in _ = lua_pushlstring(L, cb.baseAddress, cb.count) }
        }
    }
    public func push(bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { cb in _ = lua_pushlstring(L, cb.baseAddress, cb.count) }
        }
    }
    public func push(_ i: Int) { lua_pushinteger(L, lua_Integer(i)) }
    public func push(_ d: Double) { lua_pushnumber(L, d) }
    public func push(_ b: Bool) { lua_pushboolean(L, b ? 1 : 0) }
    public func pushNil() { lua_pushnil(L) }
    public func newTable(narr: Int32 = 0, nrec: Int32 = 0) { lua_createtable(L, narr, nrec) }

    /// t[key] = value-on-top (raw), t at `table` (absolute or negative before the push).
    public func setField(_ table: Int32, _ key: String) {
        let t = absIndex(table)      // [.. t .. value]
        push(key)                    // [.. t .. value key]
        lua_rotate(L, -2, 1)         // [.. t .. key value]
        lua_rawset(L, t)             // [.. t ..]
    }

    /// Sets fields on the table on top of the stack from Swift values.
    public func setFields(_ fields: [(String, LuaValue)]) {
        for (k, v) in fields { push(v); setField(-2, k) }
    }

    /// `setFields` for a table just created here (no metatable yet, so lua_setfield is a raw
    /// set): the keys are static C strings, which Lua's string cache finds by address without
    /// hashing them again (a resume builds ten thousand result tables).
    public func setFieldsOfNewTable(_ fields: [(StaticString, LuaValue)]) {
        for (k, v) in fields {
            push(v)
            k.withUTF8Buffer { b in b.withMemoryRebound(to: CChar.self) { lua_setfield(L, -2, $0.baseAddress) } }
        }
    }

    public func rawGetField(_ table: Int32, _ key: String) -> Int32 {
        let t = absIndex(table)
        push(key)
        return lua_rawget(L, t)
    }

    /// _G[name] = value-on-top (popped), raw: a recipe's metatable on _G (a __newindex that
    /// raises) never runs under a Swift frame, where its error would be a Lua panic.
    public func setGlobal(_ name: String) {
        pushGlobals()                // [.. value G]
        lua_rotate(L, -2, 1)         // [.. G value]
        setField(-2, name)           // [.. G]
        pop()
    }

    /// Pushes _G[name], raw (no __index runs), and returns its type.
    public func getGlobal(_ name: String) -> Int32 {
        pushGlobals()
        let t = rawGetField(-1, name)
        lua_rotate(L, -2, 1)
        pop()
        return t
    }

    /// The globals table, from the registry (LUA_RIDX_GLOBALS), raw.
    public func pushGlobals() { lua_rawgeti(L, baton_registryindex(), lua_Integer(LUA_RIDX_GLOBALS)) }

    /// Gives the table at `index` the metatable kept in registry[name], if that is still a
    /// table (lua_setmetatable must never get anything else).
    public func setMetatable(fromRegistry name: String, on index: Int32) {
        let i = absIndex(index)
        if baton_getregistryfield(L, name) == LUA_TTABLE { lua_setmetatable(L, i) } else { pop() }
    }

    /// Pushes the registry's metatable called `name`, creating it when it is missing or
    /// was replaced by something that is not a table (`debug.getregistry()` is reachable
    /// from Lua). Raw throughout, unlike luaL_newmetatable. Returns true when created.
    @discardableResult
    public func pushNamedMetatable(_ name: String) -> Bool {
        if baton_getregistryfield(L, name) == LUA_TTABLE { return false }
        pop()
        newTable()
        push(name); setField(-2, "__name")
        lua_pushvalue(L, -1)
        push(name)                   // [.. mt mt name]
        lua_rotate(L, -2, 1)         // [.. mt name mt]
        lua_rawset(L, baton_registryindex())
        return true
    }

    // MARK: Swift functions

    /// Pushes a Swift function. Its body reads arguments from the stack, pushes
    /// results and returns their count, or throws (LuaRaise) to raise a Lua error.
    public func pushFunction(_ name: String, _ body: @escaping (LuaState) throws -> Int32) {
        let box = Unmanaged.passRetained(FunctionBox(name: name, state: self, body: body))
        boxes.append(box)
        baton_pushswiftfunction(L, box.toOpaque())
    }

    /// Registers functions as fields of the table on top of the stack.
    public func register(_ functions: [(String, (LuaState) throws -> Int32)], prefix: String = "") {
        for (name, body) in functions { pushFunction(prefix + name, body); setField(-2, name) }
    }

    /// "recipe.lua:12:" for the Lua code `level` frames up (1: the caller of a Swift function).
    public func whereString(_ level: Int32 = 1) -> String {
        baton_where(L, level)
        let s = string(-1) ?? ""
        pop()
        return s
    }

    func pushError(_ r: LuaRaise) {
        if let ref = r.passthrough {
            lua_rawgeti(L, baton_registryindex(), lua_Integer(ref))
            luaL_unref(L, baton_registryindex(), ref)
            return
        }
        let w = r.addWhere ? whereString(1) : ""
        let msg = w + r.message   // luaL_where ends in ": "
        newTable()
        push(msg); setField(-2, "message")
        if let c = r.code { push(c); setField(-2, "code") }
        push(r.kind); setField(-2, "kind")
        if w.hasSuffix(": ") { push(String(w.dropLast(2))); setField(-2, "where") }
        r.extra?(self)
        setMetatable(fromRegistry: "baton.error_mt", on: -1)
    }

    /// The error a Lua call raised, made into a LuaRaise that raises it again unchanged.
    public func rethrow(_ e: LuaCallError) -> LuaRaise {
        var r = LuaRaise(e.message, code: e.code, kind: e.kind ?? "error")
        r.passthrough = e.ref
        return r
    }

    // MARK: reading

    public func string(_ i: Int32) -> String? {
        guard lua_type(L, i) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = baton_tolstring(L, i, &len) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }

    public func bytes(_ i: Int32) -> [UInt8]? {
        guard lua_type(L, i) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = baton_tolstring(L, i, &len) else { return nil }
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }

    public func isInteger(_ i: Int32) -> Bool { baton_isinteger(L, i) != 0 }
    public func integer(_ i: Int32) -> Int? {
        lua_type(L, i) == LUA_TNUMBER && isInteger(i) ? Int(baton_tointeger(L, i)) : nil
    }
    public func number(_ i: Int32) -> Double? { lua_type(L, i) == LUA_TNUMBER ? baton_tonumber(L, i) : nil }
    public func bool(_ i: Int32) -> Bool { lua_toboolean(L, i) != 0 }

    /// A human description of a value's type for error messages.
    public func describeType(_ i: Int32) -> String {
        switch lua_type(L, i) {
        case LUA_TNUMBER: return isInteger(i) ? "integer" : "number"
        default: return typeName(i)
        }
    }

    // MARK: references

    /// Keeps the value on top of the stack (popping it) and returns a registry ref.
    public func ref() -> Int32 { luaL_ref(L, baton_registryindex()) }
    public func unref(_ r: Int32) { luaL_unref(L, baton_registryindex(), r) }
    public func pushRef(_ r: Int32) { lua_rawgeti(L, baton_registryindex(), lua_Integer(r)) }

    // MARK: loading and calling

    /// Loads a text chunk (binary chunks are refused) and leaves the function on the stack.
    public func load(_ bytes: [UInt8], name: String) throws {
        let st = bytes.withUnsafeBufferPointer { buf in
            buf.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(1, buf.count)) {
                baton_loadbuffer(L, $0, buf.count, name)
            }
        }
        if st != LUA_OK { throw takeError(status: st, traceback: false) }
    }

    /// Protected call of the function under `nargs` arguments; every call into Lua goes here.
    public func pcall(nargs: Int32, nresults: Int32) throws {
        let st = baton_pcall(L, nargs, nresults)
        if st != LUA_OK { throw takeError(status: st, traceback: true) }
    }

    /// Runs a chunk of Lua text (bridge-internal set-up code).
    public func run(_ code: String, name: String) throws {
        try load(Array(code.utf8), name: name)
        try pcall(nargs: 0, nresults: 0)
    }

    /// Pops the error value and describes it.
    func takeError(status st: Int32, traceback: Bool) -> LuaCallError {
        var msg: String
        var code: Int? = nil
        var kind: String? = nil
        switch lua_type(L, -1) {
        case LUA_TSTRING:
            msg = string(-1) ?? ""
        case LUA_TTABLE:
            if rawGetField(-1, "message") == LUA_TSTRING { msg = string(-1) ?? "" } else { msg = "(error table)" }
            pop()
            if rawGetField(-1, "code") == LUA_TNUMBER { code = integer(-1) ?? number(-1).map { Int($0) } }
            pop()
            if rawGetField(-1, "kind") == LUA_TSTRING { kind = string(-1) }
            pop()
        case LUA_TNIL: msg = "nil"
        default: msg = "(error object is a \(typeName(-1)) value)"
        }
        var tb = ""
        if traceback {
            if baton_getregistryfield(L, "baton.traceback") == LUA_TSTRING { tb = string(-1) ?? "" }
            pop()
        }
        if msg == BATON_ABORT_MESSAGE || abortReason != 0 { kind = kind ?? "abort" }
        let r = ref()
        return LuaCallError(status: LuaStatus(rawValue: st) ?? .runtime,
                            message: msg,
                            traceback: tb,
                            code: code,
                            kind: kind,
                            ref: r)
    }

    public var memoryUsed: Int { baton_memory_used(L) }

    // MARK: the kill switch (per state)

    /// Why Lua code in this state is being stopped: a signal number, BATON_ABORT_EXIT, or 0.
    public var abortReason: Int32 { baton_abort_reason(L) }
    /// From now on every Lua instruction raises "interrupted" (a recipe's pcall cannot swallow it).
    public func requestAbort(_ reason: Int32) { baton_abort_request(L, reason) }
    public func clearAbort() { baton_abort_clear(L) }
}

/// Swift values that can be pushed.
public enum LuaValue {
    case `nil`
    case bool(Bool)
    case int(Int)
    case number(Double)
    case string(String)
    case bytes([UInt8])
    case json(JSON)
    case ref(Int32)
}

extension LuaState {
    public func push(_ v: LuaValue) {
        switch v {
        case .nil: pushNil()
        case let .bool(b): push(b)
        case let .int(i): push(i)
        case let .number(d): push(d)
        case let .string(s): push(s)
        case let .bytes(b): push(bytes: b)
        case let .json(j): push(json: j)
        case let .ref(r): pushRef(r)
        }
    }
}
