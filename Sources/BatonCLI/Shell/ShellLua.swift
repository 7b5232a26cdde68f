import BatonBase
import BatonCore
import BatonLua
import CLua
import LuaKit
import LuaShim

/// The shell's Lua side: the value printer (shell.pretty) and the name completer
/// (shell.complete), both built into the binary, kept as registry references.
final class ShellLua {
    let lua: LuaState
    private var showRef: Int32 = LUA_NOREF
    private var candidatesRef: Int32 = LUA_NOREF

    /// Loads Baton's own copies (a repo's scripts-lua/shell/ cannot shadow them).
    static let bootstrap = ControlLua.builtin + """
        return builtin("shell.pretty").show, builtin("shell.complete").candidates
        """

    init(lua: LuaState) throws {
        self.lua = lua
        let base = lua.top
        try lua.load(Array(ShellLua.bootstrap.utf8), name: "=baton.shell")
        try lua.pcall(nargs: 0, nresults: 2)   // [show candidates]
        candidatesRef = lua.ref()              // [show]
        showRef = lua.ref()                    // []
        lua.top = base
    }

    /// Formats the `n` values on top of the stack (popping them).
    func show(count n: Int32) -> String {
        lua.pushRef(showRef)
        lua_rotate(lua.L, -(n + 1), 1)         // [show v1 .. vn]
        do {
            try lua.pcall(nargs: n, nresults: 1)
            defer { lua.pop() }
            return lua.string(-1) ?? ""
        } catch let e as LuaCallError {
            lua.unref(e.ref)
            return "(the value cannot be printed: \(e.message))"
        } catch {
            return "(the value cannot be printed: \(error))"
        }
    }

    /// Completions of a dotted Lua name.
    func candidates(_ chain: String) -> [String] { lua.strings(calling: candidatesRef, with: chain) }

    /// Evaluates `return <expression>` and formats its values (tests, and nothing else).
    func format(expression: String) throws -> String {
        let base = lua.top
        defer { lua.top = base }
        try lua.load(Array("return \(expression)".utf8), name: "=test")
        try lua.pcall(nargs: 0, nresults: LUA_MULTRET)
        return show(count: lua.top - base)
    }
}
