import BatonBase
import CLua
import LuaShim

/// Lua values <-> JSON.
///
/// Lua -> JSON: nil and `baton.json.null` are null; integers stay integers, floats stay
/// floats; a table whose keys are exactly 1..n is an array, any other non-empty table an
/// object with its keys sorted (string keys, or integers written in decimal); an empty
/// table is `{}` unless marked with `baton.json.array`. Cycles, functions, userdata and
/// other keys are refused with the path where they were found.
///
/// JSON -> Lua: objects and arrays become tables (arrays marked so that they encode back
/// as arrays even when empty); null is nil in objects and `baton.json.null` in arrays.
public struct LuaJSONError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension LuaState {
    public func toJSON(_ index: Int32, maxDepth: Int = 200) throws -> JSON {
        var visiting = Set<UnsafeRawPointer>()
        return try toJSON(absIndex(index), path: "$", depth: 0, maxDepth: maxDepth, visiting: &visiting)
    }

    private func toJSON(_ i: Int32, path: String, depth: Int, maxDepth: Int,
                        visiting: inout Set<UnsafeRawPointer>) throws -> JSON {
        switch lua_type(L, i) {
        case LUA_TNIL, LUA_TNONE: return .null
        case LUA_TBOOLEAN: return .bool(bool(i))
        case LUA_TNUMBER:
            if isInteger(i) { return .int(Int64(baton_tointeger(L, i))) }
            let d = baton_tonumber(L, i)
            guard d.isFinite else { throw LuaJSONError(message: "cannot encode \(d) at \(path) as JSON") }
            return .double(d)
        case LUA_TSTRING: return .string(string(i) ?? "")
        case LUA_TLIGHTUSERDATA where lua_touserdata(L, i) == nullSentinel: return .null
        case LUA_TTABLE:
            return try tableToJSON(i, path: path, depth: depth, maxDepth: maxDepth, visiting: &visiting)
        default:
            throw LuaJSONError(message: "cannot encode a \(typeName(i)) value at \(path) as JSON")
        }
    }

    /// A table: an array when its keys are 1...n (or it is empty and marked as an array),
    /// else an object with its keys sorted.
    private func tableToJSON(_ i: Int32, path: String, depth: Int, maxDepth: Int,
                             visiting: inout Set<UnsafeRawPointer>) throws -> JSON {
        guard depth < maxDepth else { throw LuaJSONError(message: "table nested deeper than \(maxDepth) at \(path)") }
        let p = lua_topointer(L, i)!
        guard !visiting.contains(p) else { throw LuaJSONError(message: "cycle: the table at \(path) contains itself") }
        visiting.insert(p)
        defer { visiting.remove(p) }
        guard lua_checkstack(L, 4) != 0 else { throw LuaJSONError(message: "out of Lua stack at \(path)") }
        // Collect keys: count, max integer key, and whether all keys are positive integers.
        var count = 0
        var maxInt = 0
        var allInts = true
        var stringKeys: [String] = []
        lua_pushnil(L)
        while lua_next(L, i) != 0 {
            count += 1
            switch lua_type(L, -2) {
            case LUA_TNUMBER where isInteger(-2):
                let k = Int(baton_tointeger(L, -2))
                if k >= 1 { maxInt = max(maxInt, k) } else { allInts = false }
            case LUA_TSTRING:
                allInts = false
                stringKeys.append(string(-2) ?? "")
            default:
                let t = describeType(-2)
                pop(2)
                throw LuaJSONError(message: "cannot encode a table with a \(t) key at \(path) as JSON")
            }
            pop()
        }
        if count == 0 {
            if lua_getmetatable(L, i) != 0 {
                baton_getregistryfield(L, "baton.json.array_mt")
                let isArray = lua_rawequal(L, -1, -2) != 0
                pop(2)
                if isArray { return .array([]) }
            }
            return .object([])
        }
        if allInts && maxInt == count {
            var items: [JSON] = []
            items.reserveCapacity(count)
            for k in 1...count {
                lua_rawgeti(L, i, lua_Integer(k))
                do {
                    items.append(try toJSON(absIndex(-1), path: "\(path)[\(k)]", depth: depth + 1, maxDepth: maxDepth,
                                            visiting: &visiting))
                } catch { pop(); throw error }
                pop()
            }
            return .array(items)
        }
        // An object: string keys, plus integer keys written in decimal.
        var keys: [(String, Int?)] = stringKeys.map { ($0, nil) }
        if stringKeys.count < count {
            lua_pushnil(L)
            while lua_next(L, i) != 0 {
                if lua_type(L, -2) == LUA_TNUMBER {
                    let k = Int(baton_tointeger(L, -2))
                    keys.append((String(k), k))
                }
                pop()
            }
        }
        keys.sort { $0.0 < $1.0 }
        var pairs: [(String, JSON)] = []
        pairs.reserveCapacity(keys.count)
        for (name, intKey) in keys {
            if let k = intKey { lua_rawgeti(L, i, lua_Integer(k)) } else { _ = rawGetField(i, name) }
            do {
                pairs.append((name, try toJSON(absIndex(-1), path: "\(path).\(name)", depth: depth + 1,
                                               maxDepth: maxDepth, visiting: &visiting)))
            } catch { pop(); throw error }
            pop()
        }
        return .object(pairs)
    }

    /// Pushes a JSON value as Lua.
    public func push(json: JSON) {
        _ = lua_checkstack(L, 4)
        switch json {
        case .null: lua_pushlightuserdata(L, nullSentinel)
        case let .bool(b): push(b)
        case let .int(i): lua_pushinteger(L, lua_Integer(i))
        case let .double(d): push(d)
        case let .string(s): push(s)
        case let .array(items):
            newTable(narr: Int32(min(items.count, 1 << 20)))
            for (k, v) in items.enumerated() {
                push(json: v)
                lua_rawseti(L, -2, lua_Integer(k + 1))
            }
            setMetatable(fromRegistry: "baton.json.array_mt", on: -1)
        case let .object(pairs):
            newTable(nrec: Int32(min(pairs.count, 1 << 20)))
            for (k, v) in pairs {
                if case .null = v { continue }
                push(json: v)
                setField(-2, k)
            }
        }
    }
}
