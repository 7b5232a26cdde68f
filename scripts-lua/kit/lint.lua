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

local keywords, chars = {}, {}
for c = 0, 255 do chars[c] = string.char(c) end
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true "
        .. "until while"):gmatch("%a+") do
  keywords[w] = true
end

--- The tokens of `src`, as parallel arrays (`baton run` lints every recipe before it starts:
--- a table per token would cost a third of it): `t[k]` the type ("name", "kw", "string",
--- "number", "op" or "eof"), `v[k]` the value, `p[k]` the byte where it starts; `n` tokens.
--- Lines and columns are worked out only for findings (M.position).
function M.tokens(src)
  local T, V, P, count = {}, {}, {}, 0
  local i, n = 1, #src
  local byte, find, match, sub = string.byte, string.find, string.match, string.sub
  local function longBracket(at)
    local eq = match(src, "^%[(=*)%[", at)
    if not eq then return nil end
    local _, e = find(src, "]" .. eq .. "]", at, true)
    return e or n
  end
  if byte(src, 1) == 35 then i = (find(src, "\n", 1, true) or n + 1) end
  while true do
    local b = byte(src, i)
    if b == 32 or b == 10 or b == 9 or b == 13 or b == 11 or b == 12 then
      i = find(src, "[^ \t\r\n\v\f]", i + 1)
      if not i then break end
      b = byte(src, i)
    elseif not b then
      break
    end
    count = count + 1
    P[count] = i
    if b == 95 or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) then
      local w, e = match(src, "^([%w_]+)[ \t]*()", i) -- (and the blanks after it)
      T[count], V[count] = keywords[w] and "kw" or "name", w
      i = e
    elseif b == 45 and byte(src, i + 1) == 45 then -- "--": a comment, no token
      count = count - 1
      local e = longBracket(i + 2)
      i = e and e + 1 or (find(src, "\n", i, true) or n + 1)
    elseif (b >= 48 and b <= 57) or (b == 46 and match(src, "^%d", i + 1)) then
      local num = match(src, "^0[xX][%x%.]*[pP][%+%-]?%d+", i) or match(src, "^0[xX][%x%.]*", i)
        or match(src, "^[%d%.]+[eE][%+%-]?%d+", i) or match(src, "^[%d%.]+", i)
      T[count], V[count] = "number", num
      i = i + #num
    elseif b == 34 or b == 39 then
      local j = i + 1
      while true do -- to the closing quote (or the line's end: an unfinished string)
        j = find(src, b == 34 and '["\\\n]' or "['\\\n]", j)
        if not j then j = n + 1; break end
        if byte(src, j) == 92 then j = j + 2 else break end
      end
      T[count], V[count] = "string", sub(src, i + 1, j - 1)
      i = j + 1
    elseif b == 91 and match(src, "^%[=*%[", i) then
      T[count], V[count] = "string", ""
      i = longBracket(i) + 1
    elseif not (b == 46 or b == 61 or b == 126 or b == 60 or b == 62 or b == 47 or b == 58) then
      T[count], V[count] = "op", chars[b] -- no operator of two characters starts with it
      i = i + 1
    else -- . = ~ < > / : may start one of two or three: ... .. == ~= <= >= // :: << >>
      local c, op = byte(src, i + 1), chars[b]
      if b == 46 then
        if c == 46 then op = byte(src, i + 2) == 46 and "..." or ".." end
      elseif c == 61 and b ~= 47 and b ~= 58 then
        op = op .. "="
      elseif c == b and b ~= 61 and b ~= 126 then
        op = op .. op
      end
      T[count], V[count] = "op", op
      i = i + #op
    end
  end
  count = count + 1
  T[count], V[count], P[count] = "eof", "", n + 1
  return {t = T, v = V, p = P, n = count, src = src}
end

--- The line and column of token k (1-based).
function M.position(toks, k)
  local lines = toks.lines
  if not lines then -- where each line starts: made for the first finding only
    lines = {1}
    local find, src, at = string.find, toks.src, 1
    while true do
      at = find(src, "\n", at, true)
      if not at then break end
      at = at + 1
      lines[#lines + 1] = at
    end
    toks.lines = lines
  end
  local p, lo, hi = toks.p[k], 1, #lines
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if lines[mid] <= p then lo = mid else hi = mid - 1 end
  end
  return lo, p - lines[lo] + 1
end

local opens, closes = {["{"] = true, ["("] = true, ["["] = true}, {["}"] = true, [")"] = true, ["]"] = true}


-- Near enough for a hint: within a third of the name (at least 2), and not all of it.
local function near(d, name) return d <= math.max(2, #name // 3) and d < #name end
-- (kit.suggest is loaded for the first hint only: `baton run` lints every recipe before it starts.)
local function closest(name, known) return require("kit.suggest").closest(name, known, {within = near, fold = true}) end

-- The type of the value whose first token is toks[k] (nil: not a literal).
local function literalType(T, V, k)
  local t, v = T[k], V[k]
  if t == "string" then return "string" end
  if t == "number" or (v == "-" and T[k + 1] == "number") then return "number" end
  if t == "kw" and (v == "true" or v == "false") then return "boolean" end
  if t == "kw" and v == "function" then return "function" end
  if v == "{" then return "table" end
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
  local T, V = toks.t, toks.v
  for k = 1, toks.n do
    if T[k] == "name" and dynamic[V[k]] and not (V[k - 1] == "." or V[k - 1] == ":") then return true end
    if T[k] == "name" and V[k] == "require" then
      if not (T[k + 1] == "string" or (V[k + 1] == "(" and T[k + 2] == "string" and V[k + 3] == ")")) then
        return true
      end
    end
  end
  return false
end

-- The string literals that are the items of the list opening at token k (`{"a", "b"}`), as
-- token indices, or nil when it holds anything else.
local function stringItems(T, V, k)
  local items, j = {}, k + 1
  while not (T[j] == "op" and V[j] == "}") do
    if T[j] == "string" then items[#items + 1] = j
    elseif V[j] ~= "," and V[j] ~= ";" or T[j] == "eof" then return nil end
    j = j + 1
  end
  return items
end

-- The tables that are items of the list opening at token k (`{{...}, {...}}`): the index of
-- each one's `{`, or nil when the list holds anything else at its top level.
local function tableItems(T, V, k)
  local items, depth, j = {}, 0, k
  while T[j] ~= "eof" do
    local v = T[j] == "op" and V[j]
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
      return nil -- (a string, a name, a number: v is false)
    end
    j = j + 1
  end
  return nil
end

local function oneOf(values, v)
  for _, c in ipairs(values) do if c == v then return true end end
  return false
end

-- The `end` of the function whose `function` is token k (its body's own commas, brackets and
-- `name =` are inside `function ... end`).
local function functionEnd(T, V, k)
  local nest = 1
  k = k + 1
  while T[k] ~= "eof" and nest > 0 do
    if T[k] == "kw" then
      local w = V[k]
      if w == "function" or w == "do" or w == "then" or w == "repeat" then
        nest = nest + 1   -- `while`/`for` open with their `do`, `if`/`elseif` with `then`
      elseif w == "end" or w == "until" or w == "elseif" then nest = nest - 1
      end
    end
    k = k + 1
  end
  return k - 1
end

-- What checkTable needs of the table `fn`, worked out once per spec: its fields as a set, the
-- keys of the tables its fields hold ("fn.field", "fn.field[]"), each field's literal types.
local function tableInfo(spec, fn)
  spec.info = spec.info or {}
  local info = spec.info[fn]
  if info then return info end
  info = {known = {}, sub = {}, items = {}, typeset = {}}
  for _, f in ipairs(spec.fields[fn]) do
    info.known[f] = true
    if spec.fields[fn .. "." .. f] then info.sub[f] = fn .. "." .. f end
    if spec.fields[fn .. "." .. f .. "[]"] then info.items[f] = fn .. "." .. f .. "[]" end
  end
  for name, want in pairs(spec.types[fn] or {}) do
    info.typeset[name] = {}
    for w in want:gmatch("[^|]+") do info.typeset[name][w] = true end
  end
  spec.info[fn] = info
  return info
end

-- A field-value finding at token s: `what` names the field, `choices` what it takes.
local function badValue(V, s, add, label, what, choices)
  local hint = closest(V[s], choices)
  add(s, "field-value",
      ("%s: field %s must be one of '%s', got '%s'%s"):format(label, what, table.concat(choices, "', '"),
    V[s], hint and (" (did you mean '" .. hint .. "'?)") or ""), true)
end

--- Checks the fields of the literal table opening at token k (a `{`) given to `fn` (a key of
--- spec.fields). A field whose value is a literal table with a list of its own in spec.fields
--- ("fn.field": runStage's `transient`, an executor's options) is checked too, and so is each
--- table item of a literal list with one ("fn.field[]": preflight's checks); `label` names it
--- in findings. `add(k, code, message, certain)` records a finding at token k.
local function checkTable(toks, k, fn, add, spec, label)
  label = label or fn
  local T, V = toks.t, toks.v
  local allowed, info = spec.fields[fn], tableInfo(spec, fn)
  local known, values, isOpen = info.known, spec.values[fn] or {}, spec.open[fn]
  local depth, open = 0, k
  -- For the combinations: the fields given (`maybe`) and those given a literal that is not
  -- nil (`surely`); `opaque` when an item is not `name = value` (its keys are unknown here).
  local maybe, surely, opaque = {}, {}, false
  while T[k] ~= "eof" do
    local v, p, op = V[k], V[k - 1], T[k] == "op"
    local item = depth == 1 and (p == "{" or p == "," or p == ";")
    if item and v ~= "}" and not (T[k] == "name" and V[k + 1] == "=") then
      opaque = true
    end
    if T[k] == "kw" and v == "function" then k = functionEnd(T, V, k)
    elseif op and opens[v] then depth = depth + 1
    elseif op and closes[v] then
      depth = depth - 1
      if depth == 0 then
        if not opaque then M.checkCombinations(open, fn, label, maybe, surely, add, spec) end
        return
      end
    elseif item and T[k] == "name" and V[k + 1] == "=" then
      local name = v
      maybe[name] = true
      local got = literalType(T, V, k + 2)
      if got then surely[name] = true end
      if not known[name] and not isOpen then
        local hint = closest(name, allowed)
        add(k, "unknown-field", ("%s: unknown field '%s'%s; known fields: %s"):format(label, name,
          hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(allowed, ", ")), true)
      else
        local at = k + 2
        if V[at] == "{" and info.sub[name] then
          checkTable(toks, at, info.sub[name], add, spec, ("%s: field '%s'"):format(label, name))
        end
        if V[at] == "{" and info.items[name] then
          for i, item in ipairs(tableItems(T, V, at) or {}) do
            checkTable(toks, item, info.items[name], add, spec, ("%s: %s[%d]"):format(label, name, i))
          end
        end
        local want = info.typeset[name]
        if want and got and not want[got] then
          local wanted = spec.types[fn][name]:gsub("|", " or ")
          add(at, "field-type", ("%s: field '%s' must be a %s, got a %s"):format(label, name, wanted, got), true)
        end
        local choices = values[name]
        if choices and T[at] == "string" and (V[at + 1] == "," or V[at + 1] == ";" or V[at + 1] == "}") then
          if not oneOf(choices, V[at]) then badValue(V, at, add, label, "'" .. name .. "'", choices) end
        elseif choices and V[at] == "{" then
          -- A list of strings, each one of the choices (`retryOn = {"transient"}`).
          for i, s in ipairs(stringItems(T, V, at) or {}) do
            if not oneOf(choices, V[s]) then badValue(V, s, add, label, ("'%s'[%d]"):format(name, i), choices) end
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
  local T, V = toks.t, toks.v
  local depth = 0
  -- Over-approximates (a `local a, b = ...` counts too): fewer findings, never a false one.
  for k = 1, toks.n do
    local v = V[k]
    if T[k] == "op" and opens[v] then depth = depth + 1
    elseif T[k] == "op" and closes[v] then depth = depth - 1
    elseif depth == 0 and T[k] == "name" and not (V[k - 1] == "." or V[k - 1] == ":" or V[k - 1] == "local") then
      if V[k + 1] == "=" or V[k + 1] == "," or V[k - 1] == "function" then names[#names + 1] = v end
    end
  end
  return names
end

--- The arguments of the call whose `(` is token k: how many, and where each starts.
local function countArgs(T, V, k)
  if V[k + 1] == ")" then return 0, {} end
  local depth, n, starts = 0, 1, {k + 1}
  while T[k] ~= "eof" do
    local v = V[k]
    if T[k] == "op" and opens[v] then depth = depth + 1
    elseif T[k] == "op" and closes[v] then
      depth = depth - 1
      if depth == 0 then return n, starts end
    elseif v == "," and depth == 1 and T[k] == "op" then n = n + 1; starts[n] = k + 1
    elseif T[k] == "kw" and v == "function" then
      k = functionEnd(T, V, k)
    end
    k = k + 1
  end
  return nil
end

--- Token k, a name, refers to a variable: not after `.`, `:`, `::` or `goto`, and not a key
--- (`{name = ...}`; `top`: the innermost open bracket).
local function isVariable(V, top, k)
  local p = V[k - 1]
  if p == "." or p == ":" or p == "::" or p == "goto" then return false end
  return not (top == "{" and V[k + 1] == "=" and (p == "{" or p == "," or p == ";"))
end

--- Pass 1: globals the file assigns (`x = 1`, `a, b = ...`, `function f()`), usable anywhere.
local function assignedIn(toks)
  local T, V = toks.t, toks.v
  local assigned, brackets, nb = {}, {}, 0
  for k = 1, toks.n do
    local t, v = T[k], V[k]
    if t == "op" then
      if opens[v] then nb = nb + 1; brackets[nb] = v
      elseif closes[v] and nb > 0 then brackets[nb] = nil; nb = nb - 1 end
    elseif t == "name" then
      local after = V[k + 1]
      local named = after == "=" or after == "," or (after == "(" and V[k - 1] == "function")
      if named and isVariable(V, brackets[nb], k) then
        local j = k + 1
        while V[j] == "," and T[j + 1] == "name" do j = j + 2 end
        if V[j] == "=" or (V[k - 1] == "function" and V[k + 1] == "(") then assigned[v] = true end
      end
    end
  end
  return assigned
end

--- The names a `local` at token k declares (`local a <const>, b = ...`, `local function f`).
local function localNames(T, V, k)
  if V[k + 1] == "function" then return {V[k + 2]} end
  local names, j = {}, k + 1
  while T[j] == "name" do
    names[#names + 1] = V[j]
    j = j + 1
    if V[j] == "<" then j = j + 3 end
    if V[j] ~= "," then break end
    j = j + 1
  end
  return names
end

--- The parameters of the function whose `function` keyword is token k (`self` for a method).
local function functionParams(T, V, k)
  local j, params = k + 1, {}
  while T[j] == "name" or V[j] == "." or V[j] == ":" do
    if V[j] == ":" then params[#params + 1] = "self" end
    j = j + 1
  end
  j = j + 1 -- "("
  while V[j] ~= ")" and T[j] ~= "eof" do
    if T[j] == "name" then params[#params + 1] = V[j] end
    j = j + 1
  end
  return params
end

--- The primitive a reference at token k names ("runStage", "baton.sh", "baton.fs.write") and
--- the token after it.
local function primitiveAt(T, V, k, fields, arities)
  local fn, after = V[k], k + 1
  if fn == "baton" and V[k + 1] == "." and T[k + 2] == "name" then
    local m = V[k + 2]
    -- baton.runStage is runStage; baton.sh's tables are keyed "baton.sh", baton.fs.write's
    -- "baton.fs.write".
    if fields[m] or arities[m] then fn = m else fn = "baton." .. m end
    after = k + 3
    if V[k + 3] == "." and T[k + 4] == "name" then fn, after = fn .. "." .. V[k + 4], k + 5 end
  end
  return fn, after
end

--- A variable reference at token k that is not a local: a primitive's literal table checked,
--- its argument count, or an undefined global. `ctx`: {known, assigned, spec, add, findings}.
local function checkReference(toks, k, ctx)
  local T, V, v = toks.t, toks.v, toks.v[k]
  local known, assigned, spec, add = ctx.known, ctx.assigned, ctx.spec, ctx.add
  local fields, arities = spec.fields, spec.arity
  local fn, after = primitiveAt(T, V, k, fields, arities)
  local fromEnv = known[v] or assigned[v]
  if fields[fn] and fromEnv then
    if V[after] == "{" then checkTable(toks, after, fn, add, spec)
    elseif V[after] == "(" and V[after + 1] == "{" then checkTable(toks, after + 1, fn, add, spec) end
  end
  local arity = arities[fn]
  local called = fromEnv and V[after] == "(" and V[k - 1] ~= "function"
  local n, starts
  if called then n, starts = countArgs(T, V, after) end
  -- Option tables given as a later argument (`parallel(items, fn, {maxConcurrency = 2})`).
  for i, at in ipairs(starts or {}) do
    local key = fn .. "#" .. i
    if i > 1 and fields[key] and V[at] == "{" then checkTable(toks, at, key, add, spec, fn .. "'s options") end
  end
  if arity and called and known[v] and not assigned[v] and n and (n < arity[1] or n > arity[2]) then
    local want = arity[1] == arity[2] and tostring(arity[1]) or (arity[1] .. " or " .. arity[2])
    add(k, "arg-count", ("%s takes %s argument%s, given %d"):format(fn, want, arity[2] == 1 and "" or "s", n), true)
  end
  if not fromEnv then
    if not ctx.names then -- the known names, sorted, for hints: only when one is needed
      ctx.names = {}
      for g in pairs(known) do ctx.names[#ctx.names + 1] = g end
      table.sort(ctx.names)
    end
    local hint = closest(v, ctx.names)
    local nt, nv = T[k + 1], V[k + 1]
    -- Called or indexed: `runstage{...}`, `foo()`, `x.y` raise when they run.
    local certain = nv == "(" or nv == "{" or nv == "." or nv == ":" or nv == "[" or nt == "string"
    local mean = hint and (" (did you mean '" .. hint .. "'?)") or ""
    add(k, "undefined-global", ("undefined global '%s'%s"):format(v, mean), certain)
    ctx.findings[#ctx.findings].name = v
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
  spec.open = spec.open or {}
  local toks = M.tokens(src)
  local T, V = toks.t, toks.v
  local findings = {}
  local function add(k, code, message, certain)
    local line, column = M.position(toks, k)
    findings[#findings + 1] = {file = file, line = line, column = column, code = code, message = message,
                               certain = certain or nil}
  end
  local ctx = {known = known, assigned = assignedIn(toks), spec = spec, add = add, findings = findings}
  -- Pass 2: scopes, undefined globals, literal primitive tables.
  local scopes, pending, brackets, nb = {{}}, nil, {}, 0
  local function isLocal(name)
    for s = #scopes, 1, -1 do if scopes[s][name] then return true end end
    return false
  end
  local function open()
    scopes[#scopes + 1] = {}
    for _, p in ipairs(pending or {}) do scopes[#scopes][p] = true end
    pending = nil
  end
  local k = 1
  while T[k] ~= "eof" do
    local t, v = T[k], V[k]
    if t == "kw" then
      if v == "local" then
        for _, name in ipairs(localNames(T, V, k)) do scopes[#scopes][name] = true end
      elseif v == "function" then
        pending = functionParams(T, V, k)
        open()
        -- The function's name (token k+1) is still checked below as a reference.
      elseif v == "for" then
        local j, vars = k + 1, {}
        while T[j] == "name" or V[j] == "," do
          if T[j] == "name" then vars[#vars + 1] = V[j] end
          j = j + 1
        end
        pending = vars
        k = j -- past the loop variables
        goto continue
      elseif v == "do" or v == "repeat" or v == "if" then
        open() -- `while`/`for` open nothing: their `do` does (with a for's variables).
      elseif v == "elseif" or v == "else" then
        scopes[#scopes] = {}
      elseif (v == "end" or v == "until") and #scopes > 1 then
        scopes[#scopes] = nil
      end
    elseif t == "op" then
      if opens[v] then nb = nb + 1; brackets[nb] = v
      elseif closes[v] and nb > 0 then brackets[nb] = nil; nb = nb - 1 end
    elseif t == "name" and isVariable(V, brackets[nb], k) and not isLocal(v) then
      checkReference(toks, k, ctx)
    end
    k = k + 1
    ::continue::
  end
  return findings
end

return M
