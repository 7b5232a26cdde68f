import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

/// `parallel(items, fn, opts)`: each item's `fn(item, index)` runs in its own Lua coroutine;
/// the stages an item starts run concurrently with the other items' stages on the one event
/// loop. Coroutines yield in Lua only (a runStage inside an item starts its stage in the
/// background and yields until it ends), so no yield ever crosses a Swift frame.
extension RecipeEnvironment {
    /// parallel's onFailure choices as a Lua set's fields (`["cancel"] = true, ...`).
    static let onFailureChoices = PrimitiveFields.parallelOptions[field: "onFailure"]!.choices
        .map { "[\"\($0)\"] = true" }.joined(separator: ", ")

    static let parallelSource = #"""
    local startStage, waitAny, cancelHandles, ncores, where, errmt, setLane, endFanOut, now, sleep, release = ...
    local calls = 0
    local create, resume, status, running, yield = coroutine.create, coroutine.resume, coroutine.status,
      coroutine.running, coroutine.yield
    local pairs, ipairs, type, rawget, setmetatable, tostring, error, mathtype = pairs, ipairs, type, rawget,
      setmetatable, tostring, error, math.type
    local concat, pcall, mmin = table.concat, pcall, math.min

    -- The coroutine of each running item: its index and its parallel call.
    local itemOf = setmetatable({}, {__mode = "k"})

    local function fail(message, code, kind, extra)
      local e = extra or {}
      e.message = where() .. message
      e.code = code
      e.kind = kind
      error(setmetatable(e, errmt), 0)
    end

    -- runStage inside an item: in the background, the item yielding until its stage ends.
    local function runStage(spec)
      local item = itemOf[running()]
      if item == nil or type(spec) ~= "table" or rawget(spec, "background") then return startStage(spec) end
      local id = rawget(spec, "id")
      if type(id) == "string" then
        local owner = item.call.owner[id]
        if owner ~= nil and owner ~= item.index then
          fail(("parallel: items %d and %d both start a stage with id '%s'; a stage's identity must not "
            .. "depend on which item finishes first: give each item's stages their own ids (e.g. '%s-' .. index)")
            :format(owner, item.index, id, id), 3, "usage")
        end
        item.call.owner[id] = item.index
      end
      local copy = {}
      for k, v in pairs(spec) do copy[k] = v end
      copy.background = true
      setLane(item.lane)
      local ok, h = pcall(startStage, copy)
      setLane("")
      if not ok then error(h, 0) end
      while not h:done() do yield(h) end
      -- The handle was ours, not the recipe's: let its execution go now rather than at the
      -- next garbage collection (a fan-out of thousands of items would keep them all).
      local ok, r = pcall(h.wait, h)
      release(h)
      if not ok then error(r, 0) end
      return r
    end

    -- baton.sleep inside an item: the item yields until then; the other items go on.
    local function itemSleep(seconds)
      if itemOf[running()] == nil or type(seconds) ~= "number" or seconds < 0 then return sleep(seconds) end
      local timer = {at = now() + seconds}
      yield(timer)
    end

    -- What an item waits on: a stage handle, or a timer (itemSleep).
    local function ready(w)
      if w.at then return now() >= w.at end
      return w:done()
    end

    local known = {\#(PrimitiveFields.parallelOptions.names.map { "\($0) = true" }.joined(separator: ", "))}
    local onFailureChoices = {\#(onFailureChoices)}

    local function parallel(items, fn, opts)
      if type(items) ~= "table" then fail("parallel: items must be a list, got " .. type(items), 3, "usage") end
      if type(fn) ~= "function" then fail("parallel: fn must be a function, got " .. type(fn), 3, "usage") end
      opts = opts or {}
      if type(opts) ~= "table" then fail("parallel: opts must be a table, got " .. type(opts), 3, "usage") end
      for k in pairs(opts) do
        if not known[k] then
          fail("parallel: unknown option '" .. tostring(k) .. "'; known:\#
     \#(PrimitiveFields.parallelOptions.names.joined(separator: ", "))", 3, "usage")
        end
      end
      if itemOf[running()] then
        fail("parallel: a parallel inside a parallel item is not supported; flatten the items into one list", 3,\#
     "usage")
      end
      local limit = opts.maxConcurrency or ncores
      if mathtype(limit) ~= "integer" or limit < 1 then
        fail("parallel: maxConcurrency must be an integer of at least 1, got " .. tostring(limit), 3, "usage")
      end
      local policy = opts.onFailure or "\#(PrimitiveFields.parallelOptions.string("onFailure"))"
      if not onFailureChoices[policy] then
        fail("parallel: onFailure must be 'cancel', 'drain' or 'continue', got '" .. tostring(policy) .. "'", 3,\#
     "usage")
      end
      local maxFailures = opts.maxFailures or (policy == "continue" and math.huge or 0)
      if type(maxFailures) ~= "number" or maxFailures < 0 then
        fail("parallel: maxFailures must be a number of at least 0", 3, "usage")
      end
      local n = #items
      calls = calls + 1
      local call = {owner = {}, number = calls}
      local results, outcomes, inflight = {}, {}, {}
      local nextIndex, failures, stopping = 1, 0, false

      local function step(slot, ...)
        local ok, value = resume(slot.co, ...)
        if not ok then
          outcomes[slot.index] = {ok = false, error = value}
          failures = failures + 1
          slot.done = true
        elseif status(slot.co) == "dead" then
          results[slot.index] = value
          outcomes[slot.index] = {ok = true, value = value}
          slot.done = true
        else
          slot.handle = value
        end
      end

      local function prune()
        local still = {}
        for _, s in ipairs(inflight) do if not s.done then still[#still + 1] = s end end
        inflight = still
      end

      while true do
        prune()
        while not stopping and nextIndex <= n and #inflight < limit and failures <= maxFailures do
          local i = nextIndex
          nextIndex = i + 1
          local slot = {co = create(fn), index = i}
          itemOf[slot.co] = {index = i, call = call, lane = call.number .. ":" .. i}
          step(slot, items[i], i)
          if not slot.done then inflight[#inflight + 1] = slot end
        end
        if failures > maxFailures and not stopping then
          stopping = true
          if policy == "cancel" then
            local hs = {}
            for _, s in ipairs(inflight) do
              if not s.handle.at then hs[#hs + 1] = s.handle end
              outcomes[s.index] = {ok = false, cancelled = true, error = "cancelled: another item failed"}
            end
            cancelHandles(hs)
            inflight = {}
          end
        end
        if #inflight == 0 and (stopping or nextIndex > n) then break end
        local hs, soonest = {}, nil
        for _, s in ipairs(inflight) do
          local w = s.handle
          if w.at then soonest = mmin(soonest or w.at, w.at) else hs[#hs + 1] = w end
        end
        waitAny(hs, soonest)
        for _, s in ipairs(inflight) do
          if ready(s.handle) then s.handle = nil; step(s) end
        end
      end
      endFanOut()
      for i = nextIndex, n do outcomes[i] = {ok = false, skipped = true, error = "not started: another item failed"} end
      if failures > 0 and policy ~= "continue" then
        local first, lines = nil, {}
        for i = 1, n do
          local o = outcomes[i]
          if o and not o.ok and not o.cancelled and not o.skipped then
            lines[#lines + 1] = ("item %d: %s"):format(i, tostring(o.error))
            first = first or o.error
          end
        end
        fail(("parallel: %d of %d items failed (%s): %s"):format(failures, n, policy, concat(lines, "; ")),
          type(first) == "table" and first.code or 1, "parallel", {results = results, outcomes = outcomes})
      end
      return results, outcomes
    end

    return parallel, runStage, itemSleep
    """#

    /// Installs `parallel` (global and `baton.parallel`) and the runStage that yields inside an item.
    func installParallel() throws {
        try lua.load(Array(RecipeEnvironment.parallelSource.utf8), name: "=baton.parallel")
        _ = lua.getGlobal("runStage")                                    // [chunk startStage]
        lua.pushFunction("baton.waitAny") { [unowned self] l in try self.waitAny(l) }
        lua.pushFunction("baton.cancelHandles") { [unowned self] l in try self.cancelHandles(l) }
        lua.push(max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
        lua.pushFunction("baton.where") { l in l.push(l.whereString(1)); return 1 }
        baton_getregistryfield(lua.L, "baton.error_mt")                  // [chunk startStage waitAny cancel n where mt]
        lua.pushFunction("baton.setLane") { [unowned self] l in self.context?.lane = l.string(1) ?? ""; return 0 }
        lua.pushFunction("baton.endFanOut") { [unowned self] _ in self.context?.endFanOut(); return 0 }
        _ = lua.getGlobal("baton")
        _ = lua.rawGetField(-1, "now")
        _ = lua.rawGetField(-2, "sleep")
        lua_rotate(lua.L, -3, -1); lua.pop()                             // [chunk ...8 now sleep]
        lua.pushFunction("baton.releaseHandle") { [unowned self] l in
            self.releaseHandle(l)
        }                                                                // [chunk ...8 now sleep release]
        try lua.pcall(nargs: 11, nresults: 3)                            // [parallel runStage sleep]
        _ = lua.getGlobal("baton")                                       // [parallel runStage sleep baton]
        lua_pushvalue(lua.L, -2); lua.setField(-2, "sleep")
        lua_pushvalue(lua.L, -3); lua.setField(-2, "runStage")
        lua_pushvalue(lua.L, -4); lua.setField(-2, "parallel")
        lua.pop(2)                                                       // [parallel runStage]
        lua.setGlobal("runStage")
        lua.setGlobal("parallel")
    }

    /// The stage executions behind a list of handles (argument 1).
    func executions(_ l: LuaState, _ fn: String) throws -> [StageExecution] {
        guard l.type(1) == LUA_TTABLE else { throw LuaRaise.usage("\(fn): expects a list of stage handles") }
        var out: [StageExecution] = []
        let n = Int(lua_rawlen(l.L, 1))
        for i in 0..<n {
            lua_rawgeti(l.L, 1, lua_Integer(i + 1))
            defer { l.pop() }
            guard let e = handleExecution(l, index: -1) else {
                throw LuaRaise.usage("\(fn): item \(i + 1) is not a stage handle")
            }
            out.append(e)
        }
        return out
    }

    /// Waits on the loop until at least one of the handles' stages has ended.
    /// (Argument 2, optional: a `baton.now()` time to return at anyway: an item's sleep ends.)
    func waitAny(_ l: LuaState) throws -> Int32 {
        let execs = try executions(l, "parallel")
        let ctx = try requireContext()
        let until = l.number(2).map { Clock.monotonic() + ($0 - Clock.now()) }
        if execs.contains(where: \.isFinished) || (execs.isEmpty && until == nil) { return 0 }
        let label = WaitLabel(.parallel,
                              execs.isEmpty ? "sleeping items" : execs.map(\.spec.id).joined(separator: ", "))
        let r = ctx.loop.wait(label, deadline: until) { execs.contains(where: \.isFinished) }
        try checkFatal()
        if r == .interrupted { throw RecipeEnvironment.abort }
        return 0
    }

    /// Ends the handles' stages (SIGTERM, SIGKILL after their grace) and waits until they have.
    func cancelHandles(_ l: LuaState) throws -> Int32 {
        let execs = try executions(l, "parallel")
        let ctx = try requireContext()
        for e in execs { e.cancel() }
        let r = ctx.loop.wait(WaitLabel(.parallel, "cancelling \(execs.count) items")) {
            execs.allSatisfy(\.isFinished)
        }
        if r == .interrupted { throw RecipeEnvironment.abort }
        return 0
    }
}
