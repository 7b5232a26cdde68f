-- kit.lint: what `baton check` finds in a recipe's source without running it.
--
--   local findings = require("kit.lint").check(source, file, knownGlobals, primitiveFields)
--
-- Each finding is {file, line, column, code, message}:
--   undefined-global  a name that is no local, no global of the recipe environment and
--                     never assigned in the file (`runStag{...}`), with a did-you-mean
--   unknown-field     a misspelt field in a literal primitive table (`retrys = 2`)
--   field-type        a literal of the wrong type (`timeout = "10"`)
--   field-value       a literal string a field does not take (`onMissing = "explode"`)
--   arg-count         a primitive called with too few or too many arguments (`parallel(items)`)
-- A finding with `certain = true` is an error the run would certainly raise when it gets
-- there: `baton run` stops on those before the first stage (undefined globals only when
-- called or indexed: a bare read such as `if jit then` is legal Lua).
local M = {}

local keywords = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true "
        .. "until while"):gmatch("%a+") do
  keywords[w] = true
end

--- The tokens of `src`: {type, value, line, col} (positional: `baton run` lints every recipe
--- before it starts, and an array is cheaper to build than a record); type is "name",
--- "kw", "string", "number", "op" or "eof".
function M.tokens(src)
  local toks, i, n, line, lineStart, count = {}, 1, #src, 1, 1, 0
  local function add(t, v, pos) count = count + 1; toks[count] = {t, v, line, pos - lineStart + 1} end
  -- Moves past src[from..to], counting the newlines inside.
  local function skip(from, to)
    local p = from
    while true do
      local nl = src:find("\n", p, true)
      if not nl or nl > to then break end
      line, lineStart, p = line + 1, nl + 1, nl + 1
    end
    i = to + 1
  end
  local function longBracket(at)
    local eq = src:match("^%[(=*)%[", at)
    if not eq then return nil end
    local _, e = src:find("]" .. eq .. "]", at, true)
    return e or n
  end
  if src:sub(1, 1) == "#" then i = (src:find("\n", 1, true) or n + 1) end
  -- Bytes, not one-character strings: `baton run` lints every recipe before it starts.
  local byte, find, match, char = string.byte, string.find, string.match, string.char
  while i <= n do
    local b = byte(src, i)
    if b == 10 then
      line, i = line + 1, i + 1
      lineStart = i
    elseif b == 32 or b == 9 or b == 13 or b == 11 or b == 12 then
      local _, e = find(src, "^[ \t\r\v\f]+", i)
      i = e + 1
    elseif b == 45 and byte(src, i + 1) == 45 then -- "--"
      local e = longBracket(i + 2)
      if e then skip(i, e) else i = (find(src, "\n", i, true) or n + 1) end
    elseif b == 95 or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) then
      local w = match(src, "^[%w_]+", i)
      count = count + 1
      toks[count] = {keywords[w] and "kw" or "name", w, line, i - lineStart + 1}
      i = i + #w
    elseif (b >= 48 and b <= 57) or (b == 46 and match(src, "^%d", i + 1)) then
      local num = match(src, "^0[xX][%x%.]*[pP][%+%-]?%d+", i) or match(src, "^0[xX][%x%.]*", i)
        or match(src, "^[%d%.]+[eE][%+%-]?%d+", i) or match(src, "^[%d%.]+", i)
      add("number", num, i)
      i = i + #num
    elseif b == 34 or b == 39 then
      local j = i + 1
      while j <= n do
        local d = byte(src, j)
        if d == 92 then j = j + 2 elseif d == b or d == 10 then break else j = j + 1 end
      end
      add("string", src:sub(i + 1, j - 1), i)
      skip(i, math.min(j, n))
    elseif b == 91 and match(src, "^%[=*%[", i) then
      local e = longBracket(i)
      add("string", "", i)
      skip(i, e)
    elseif not (b == 46 or b == 61 or b == 126 or b == 60 or b == 62 or b == 47 or b == 58) then
      count = count + 1 -- no operator of two characters starts with it
      toks[count] = {"op", char(b), line, i - lineStart + 1}
      i = i + 1
    else
      local op = match(src, "^%.%.%.", i) or match(src, "^[=~<>]=", i) or match(src, "^//", i) or match(src, "^::", i)
        or match(src, "^<<", i) or match(src, "^>>", i) or match(src, "^%.%.", i) or src:sub(i, i)
      add("op", op, i)
      i = i + #op
    end
  end
  add("eof", "", i)
  return toks
end

local opens, closes = {["{"] = true, ["("] = true, ["["] = true}, {["}"] = true, [")"] = true, ["]"] = true}

local function closest(name, known)
  local best, bestD
  for _, k in ipairs(known) do
    local a, b = name:lower(), k:lower()
    local prev = {}
    for j = 0, #b do prev[j] = j end
    for x = 1, #a do
      local cur = {[0] = x}
      for j = 1, #b do
        cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a:sub(x, x) == b:sub(j, j) and 0 or 1))
      end
      prev = cur
    end
    local d = prev[#b]
    if d <= math.max(2, #a // 3) and d < #a and (not bestD or d < bestD) then best, bestD = k, d end
  end
  return best
end

-- The type of the value whose first token is toks[k] (nil: not a literal).
local function literalType(toks, k)
  local t = toks[k]
  if t[1] == "string" then return "string" end
  if t[1] == "number" or (t[2] == "-" and toks[k + 1][1] == "number") then return "number" end
  if t[1] == "kw" and (t[2] == "true" or t[2] == "false") then return "boolean" end
  if t[1] == "kw" and t[2] == "function" then return "function" end
  if t[2] == "{" then return "table" end
  return nil
end

-- The field names, literal types, string values and argument counts come from the
-- declaration in Swift (BatonLua/PrimitiveFields.swift, each executor's options), passed
-- to M.check: the same lists the runtime checks with.

-- Names through which a recipe can make globals the linter cannot see.
local dynamic = {_G = true, _ENV = true, rawset = true, load = true, loadstring = true, dofile = true, loadfile = true,
  setfenv = true, getfenv = true, debug = true}

--- Whether `src` may define globals the linter cannot see: it names _G, _ENV, rawset,
--- load, dofile, ... or requires a module by a computed name.
function M.dynamicGlobals(src, toks)
  toks = toks or M.tokens(src)
  for k, t in ipairs(toks) do
    if t[1] == "name" and dynamic[t[2]] and not (toks[k - 1] and (toks[k - 1][2] == "." or toks[k - 1][2] == ":")) then
      return true
    end
    if t[1] == "name" and t[2] == "require" then
      local n = toks[k + 1]
      if not (n[1] == "string" or (n[2] == "(" and toks[k + 2][1] == "string" and toks[k + 3][2] == ")")) then
        return true
      end
    end
  end
  return false
end

-- The string literals that are the items of the list opening at toks[k] (`{"a", "b"}`), or
-- nil when it holds anything else.
local function stringItems(toks, k)
  local items, j = {}, k + 1
  while not (toks[j][1] == "op" and toks[j][2] == "}") do
    local t = toks[j]
    if t[1] == "string" then items[#items + 1] = t
    elseif t[2] ~= "," and t[2] ~= ";" then return nil end
    j = j + 1
  end
  return items
end

-- The tables that are items of the list opening at toks[k] (`{{...}, {...}}`): the index of
-- each one's `{`, or nil when the list holds anything else at its top level.
local function tableItems(toks, k)
  local items, depth, j = {}, 0, k
  while toks[j][1] ~= "eof" do
    local v = toks[j][2]
    if opens[v] then
      if depth == 1 then
        if v ~= "{" then return nil end
        items[#items + 1] = j
      end
      depth = depth + 1
    elseif closes[v] then
      depth = depth - 1
      if depth == 0 then return items end
    elseif depth == 1 and v ~= "," and v ~= ";" then
      return nil
    end
    j = j + 1
  end
  return nil
end

local function oneOf(values, v)
  for _, c in ipairs(values) do if c == v then return true end end
  return false
end

--- Checks the fields of the literal table opening at toks[k] (a `{`) given to `fn` (a key of
--- spec.fields). A field whose value is a literal table with a list of its own in spec.fields
--- ("fn.field": runStage's `transient`, an executor's options) is checked too, and so is each
--- table item of a literal list with one ("fn.field[]": preflight's checks); `label` names it
--- in findings.
local function checkTable(toks, k, fn, add, spec, label)
  label = label or fn
  local allowed = spec.fields[fn]
  local types, values = spec.types[fn] or {}, spec.values[fn] or {}
  local depth, known, open = 0, {}, k
  for _, f in ipairs(allowed) do known[f] = true end
  -- For the combinations: the fields given (`maybe`) and those given a literal that is not
  -- nil (`surely`); `opaque` when an item is not `name = value` (its keys are unknown here).
  local maybe, surely, opaque = {}, {}, false
  while toks[k][1] ~= "eof" do
    local t = toks[k]
    local p = toks[k - 1][2]
    if depth == 1
        and (p == "{" or p == "," or p == ";")
        and t[2] ~= "}"
        and not (t[1] == "name" and toks[k + 1][2] == "=") then
      opaque = true
    end
    if opens[t[2]] then depth = depth + 1
    elseif closes[t[2]] then
      depth = depth - 1
      if depth == 0 then
        if not opaque then M.checkCombinations(toks[open], fn, label, maybe, surely, add, spec) end
        return
      end
    elseif depth == 1 and t[1] == "name" and toks[k + 1][2] == "=" and (p == "{" or p == "," or p == ";") then
      local name = t[2]
      maybe[name] = true
      local lt = literalType(toks, k + 2)
      if lt then surely[name] = true end
      if not known[name] and not (spec.open or {})[fn] then
        local hint = closest(name, allowed)
        add(t, "unknown-field", ("%s: unknown field '%s'%s; known fields: %s"):format(label, name,
          hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(allowed, ", ")), true)
      else
        local v = toks[k + 2]
        if v[2] == "{" and spec.fields[fn .. "." .. name] then
          checkTable(toks, k + 2, fn .. "." .. name, add, spec, ("%s: field '%s'"):format(label, name))
        end
        if v[2] == "{" and spec.fields[fn .. "." .. name .. "[]"] then
          for i, at in ipairs(tableItems(toks, k + 2) or {}) do
            checkTable(toks, at, fn .. "." .. name .. "[]", add, spec, ("%s: %s[%d]"):format(label, name, i))
          end
        end
        local want, got = types[name], literalType(toks, k + 2)
        if want and got and not ("|" .. want .. "|"):find("|" .. got .. "|", 1, true) then
          add(v, "field-type",
              ("%s: field '%s' must be a %s, got a %s"):format(label, name, want:gsub("|", " or "), got), true)
        end
        local choices = values[name]
        local function bad(s, at, what)
          local hint = closest(s[2], choices)
          add(s, "field-value",
              ("%s: field %s must be one of '%s', got '%s'%s"):format(label, what, table.concat(choices, "', '"), s[2],
            hint and (" (did you mean '" .. hint .. "'?)") or ""), true)
        end
        if choices
            and v[1] == "string"
            and (toks[k + 3][2] == "," or toks[k + 3][2] == ";" or toks[k + 3][2] == "}") then
          if not oneOf(choices, v[2]) then bad(v, k + 2, "'" .. name .. "'") end
        elseif choices and v[2] == "{" then
          -- A list of strings, each one of the choices (`retryOn = {"transient"}`).
          for i, s in ipairs(stringItems(toks, k + 2) or {}) do
            if not oneOf(choices, s[2]) then bad(s, nil, ("'%s'[%d]"):format(name, i)) end
          end
        end
      end
    end
    k = k + 1
  end
end

--- The declared combinations (spec.combinations[fn]: of `fields`, at least `min` and at most
--- `max`) of a literal table at token `at`: `maybe` holds the fields it names, `surely` those
--- it gives a literal (not nil).
function M.checkCombinations(at, fn, label, maybe, surely, add, spec)
  for _, rule in ipairs((spec.combinations or {})[fn] or {}) do
    local given, sure = {}, 0
    for _, f in ipairs(rule.fields) do
      if maybe[f] then given[#given + 1] = f end
      if surely[f] then sure = sure + 1 end
    end
    if #given < rule.min or sure > rule.max then
      local want = rule.min == rule.max and "exactly one" or rule.max == 1 and "at most one" or "at least one"
      add(at, "field-combination", ("%s: give %s of %s (found %s)"):format(label, want, table.concat(rule.fields, ", "),
        #given == 0 and "none" or table.concat(given, ", ")), true)
    end
  end
end

--- The globals `src` assigns (`x = 1`, `function f()`): what a module adds for its requirer.
function M.assignedGlobals(src)
  local names = {}
  local toks = M.tokens(src)
  local depth = 0
  -- Over-approximates (a `local a, b = ...` counts too): fewer findings, never a false one.
  for k, t in ipairs(toks) do
    if t[2] == "{" or t[2] == "(" or t[2] == "[" then depth = depth + 1
    elseif t[2] == "}" or t[2] == ")" or t[2] == "]" then depth = depth - 1
    elseif depth == 0
        and t[1] == "name"
        and not (toks[k - 1] and (toks[k - 1][2] == "." or toks[k - 1][2] == ":" or toks[k - 1][2] == "local")) then
      if toks[k + 1][2] == "=" or toks[k + 1][2] == "," or (toks[k - 1] and toks[k - 1][2] == "function") then
        names[#names + 1] = t[2]
      end
    end
  end
  return names
end

--- The arguments of the call whose `(` is toks[k]: how many, and where each starts.
local function countArgs(toks, k)
  if toks[k + 1][2] == ")" then return 0, {} end
  local depth, n, starts = 0, 1, {k + 1}
  while toks[k][1] ~= "eof" do
    local v = toks[k][2]
    if v == "(" or v == "{" or v == "[" then depth = depth + 1
    elseif v == ")" or v == "}" or v == "]" then
      depth = depth - 1
      if depth == 0 then return n, starts end
    elseif v == "," and depth == 1 then n = n + 1; starts[n] = k + 1
    elseif toks[k][1] == "kw" and v == "function" then
      -- A function body's own commas and brackets are inside `function ... end`.
      local nest = 1
      k = k + 1
      while toks[k][1] ~= "eof" and nest > 0 do
        local w = toks[k]
        if w[1] == "kw" and (w[2] == "function" or w[2] == "do" or w[2] == "then" or w[2] == "repeat") then
          nest = nest + 1   -- `while`/`for` open with their `do`, `if`/`elseif` with `then`
        elseif w[1] == "kw" and (w[2] == "end" or w[2] == "until") then nest = nest - 1
        elseif w[1] == "kw" and (w[2] == "elseif") then nest = nest - 1
        end
        k = k + 1
      end
      k = k - 1
    end
    k = k + 1
  end
  return nil
end

--- toks[k] follows `.`, `:`, `::` or `goto`: a field or a label, not a variable.
local function prevIsAccess(toks, k)
  local p = toks[k - 1]
  return p and (p[2] == "." or p[2] == ":" or p[2] == "::" or p[2] == "goto")
end

--- toks[k] is a key in a table constructor (`{name = ...}`); `brackets`: the open brackets.
local function isKey(toks, brackets, k)
  local p = toks[k - 1]
  return brackets[#brackets] == "{" and toks[k + 1][2] == "=" and p and (p[2] == "{" or p[2] == "," or p[2] == ";")
end

--- Pass 1: globals the file assigns (`x = 1`, `a, b = ...`, `function f()`), usable anywhere.
local function assignedGlobals(toks)
  local assigned, brackets = {}, {}
  for k, t in ipairs(toks) do
    local v = t[2]
    if opens[v] then brackets[#brackets + 1] = v
    elseif closes[v] then brackets[#brackets] = nil
    elseif t[1] == "name" and not prevIsAccess(toks, k) and not isKey(toks, brackets, k) then
      local j = k + 1
      while toks[j][2] == "," and toks[j + 1][1] == "name" do j = j + 2 end
      if toks[j][2] == "=" or (toks[k - 1] and toks[k - 1][2] == "function" and toks[k + 1][2] == "(") then
        assigned[t[2]] = true
      end
    end
  end
  return assigned
end

--- The names a `local` at toks[k] declares (`local a <const>, b = ...`, `local function f`).
local function localNames(toks, k)
  if toks[k + 1][2] == "function" then return {toks[k + 2][2]} end
  local names, j = {}, k + 1
  while toks[j][1] == "name" do
    names[#names + 1] = toks[j][2]
    j = j + 1
    if toks[j][2] == "<" then j = j + 3 end
    if toks[j][2] ~= "," then break end
    j = j + 1
  end
  return names
end

--- The parameters of the function whose `function` keyword is toks[k] (`self` for a method).
local function functionParams(toks, k)
  local j, params = k + 1, {}
  while toks[j][1] == "name" or toks[j][2] == "." or toks[j][2] == ":" do
    if toks[j][2] == ":" then params[#params + 1] = "self" end
    j = j + 1
  end
  j = j + 1 -- "("
  while toks[j][2] ~= ")" and toks[j][1] ~= "eof" do
    if toks[j][1] == "name" then params[#params + 1] = toks[j][2] end
    j = j + 1
  end
  return params
end

--- A variable reference at toks[k] that is not a local: a primitive's literal table checked,
--- its argument count, or an undefined global. `ctx`: {known, assigned, fields, arities,
--- names, spec, add, findings}.
local function checkReference(toks, k, ctx)
  local t = toks[k]
  local known, assigned, fields, arities = ctx.known, ctx.assigned, ctx.fields, ctx.arities
  local names, findings, spec, add = ctx.names, ctx.findings, ctx.spec, ctx.add
  local fn, after = t[2], k + 1
  if fn == "baton" and toks[k + 1][2] == "." and toks[k + 2][1] == "name" then
    local m = toks[k + 2][2]
    -- baton.runStage is runStage; baton.sh's tables are keyed "baton.sh", baton.fs.write's
    -- "baton.fs.write".
    if fields[m] or arities[m] then fn = m else fn = "baton." .. m end
    after = k + 3
    if toks[k + 3][2] == "." and toks[k + 4][1] == "name" then fn, after = fn .. "." .. toks[k + 4][2], k + 5 end
  end
  local fromEnv = known[t[2]] or assigned[t[2]]
  if fields[fn] and fromEnv then
    if toks[after][2] == "{" then checkTable(toks, after, fn, add, spec)
    elseif toks[after][2] == "(" and toks[after + 1][2] == "{" then checkTable(toks, after + 1, fn, add, spec) end
  end
  local arity = arities[fn]
  local called = fromEnv and toks[after][2] == "(" and not (toks[k - 1] and toks[k - 1][2] == "function")
  local n, starts
  if called then n, starts = countArgs(toks, after) end
  -- Option tables given as a later argument (`parallel(items, fn, {maxConcurrency = 2})`).
  for i, at in ipairs(starts or {}) do
    local key = fn .. "#" .. i
    if i > 1 and fields[key] and toks[at][2] == "{" then
      checkTable(toks, at, key, add, spec, fn .. "'s options")
    end
  end
  if arity and called and known[t[2]] and not assigned[t[2]] then
    if n and (n < arity[1] or n > arity[2]) then
      local want = arity[1] == arity[2] and tostring(arity[1]) or (arity[1] .. " or " .. arity[2])
      add(t, "arg-count", ("%s takes %s argument%s, given %d"):format(fn, want, arity[2] == 1 and "" or "s", n),
          true)
    end
  end
  if not known[t[2]] and not assigned[t[2]] then
    local hint = closest(t[2], names)
    local n = toks[k + 1]
    -- Called or indexed: `runstage{...}`, `foo()`, `x.y` raise when they run.
    local certain = n[2] == "(" or n[2] == "{" or n[2] == "." or n[2] == ":" or n[2] == "[" or n[1] == "string"
    add(t, "undefined-global",
        ("undefined global '%s'%s"):format(t[2], hint and (" (did you mean '" .. hint .. "'?)") or ""), certain)
    findings[#findings].name = t[2]
  end
end

--- Findings in `src`. `known`: the recipe environment's globals (a set); `spec`: what the
--- declaration says, {fields = {key = names}, types = {key = {field = "string|table"}},
--- values = {key = {field = choices}}, arity = {fn = {min, max}}} (a bare `fields` table
--- is taken as spec.fields).
function M.check(src, file, known, spec)
  spec = spec or {}
  if not spec.fields then spec = {fields = spec} end
  spec.types, spec.values, spec.arity = spec.types or {}, spec.values or {}, spec.arity or {}
  local fields, arities = spec.fields, spec.arity
  local toks = M.tokens(src)
  local findings = {}
  local function add(t, code, message, certain)
    findings[#findings + 1] = {file = file, line = t[3], column = t[4], code = code, message = message,
                               certain = certain or nil}
  end
  local assigned = assignedGlobals(toks)
  -- Pass 2: scopes, undefined globals, literal primitive tables.
  local names = {}
  for g in pairs(known) do names[#names + 1] = g end
  table.sort(names)
  local scopes, pending, blocks, brackets = {{}}, nil, {}, {}
  local function declare(name) scopes[#scopes][name] = true end
  local function isLocal(name)
    for s = #scopes, 1, -1 do if scopes[s][name] then return true end end
    return false
  end
  local function open(kind)
    blocks[#blocks + 1] = kind
    scopes[#scopes + 1] = {}
    for _, p in ipairs(pending or {}) do declare(p) end
    pending = nil
  end
  local function close()
    blocks[#blocks] = nil
    if #scopes > 1 then scopes[#scopes] = nil end
  end
  local ctx = {known = known, assigned = assigned, fields = fields, arities = arities, names = names, spec = spec,
               add = add, findings = findings}
  local k = 1
  while toks[k][1] ~= "eof" do
    local t = toks[k]
    if t[1] == "kw" then
      if t[2] == "local" then
        for _, name in ipairs(localNames(toks, k)) do declare(name) end
      elseif t[2] == "function" then
        pending = functionParams(toks, k)
        open("function")
        -- The function's name (toks[k+1]) is still checked below as a reference.
      elseif t[2] == "for" then
        local j, vars = k + 1, {}
        while toks[j][1] == "name" or toks[j][2] == "," do
          if toks[j][1] == "name" then vars[#vars + 1] = toks[j][2] end
          j = j + 1
        end
        pending = vars
        k = j -- past the loop variables
        goto continue
      elseif t[2] == "do" or t[2] == "repeat" or t[2] == "if" then
        -- `while`/`for` open nothing: their `do` does (with a for's variables).
        open(t[2])
      elseif t[2] == "elseif" or t[2] == "else" then
        scopes[#scopes] = {}
      elseif t[2] == "end" or t[2] == "until" then
        close()
      end
    elseif opens[t[2]] then
      brackets[#brackets + 1] = t[2]
    elseif closes[t[2]] then
      brackets[#brackets] = nil
    elseif t[1] == "name" and not prevIsAccess(toks, k) and not isKey(toks, brackets, k) and not isLocal(t[2]) then
      checkReference(toks, k, ctx)
    end
    k = k + 1
    ::continue::
  end
  return findings
end

return M
