-- kit.lint: what `baton check` finds in a recipe's source without running it.
--
--   local findings = require("kit.lint").check(source, file, knownGlobals, primitiveFields)
--
-- Each finding is {file, line, column, code, message}:
--   undefined-global  a name that is no local, no global of the recipe environment and
--                     never assigned in the file (`runStag{...}`), with a did-you-mean
--   unknown-field     a misspelt field in a literal primitive table (`retrys = 2`)
--   field-type        a literal of the wrong type (`timeout = "10"`)
local M = {}

local keywords = {}
for w in ("and break do else elseif end false for function goto if in local nil not or repeat return then true until while"):gmatch("%a+") do
  keywords[w] = true
end

--- The tokens of `src`: {t = "name"|"kw"|"string"|"number"|"op"|"eof", v, line, col}.
function M.tokens(src)
  local toks, i, n, line, lineStart = {}, 1, #src, 1, 1
  local function add(t, v, pos) toks[#toks + 1] = {t = t, v = v, line = line, col = pos - lineStart + 1} end
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
  while i <= n do
    local c = src:sub(i, i)
    if c == "\n" then
      line, i = line + 1, i + 1
      lineStart = i
    elseif c:match("%s") then
      i = i + 1
    elseif src:sub(i, i + 1) == "--" then
      local e = longBracket(i + 2)
      if e then skip(i, e) else i = (src:find("\n", i, true) or n + 1) end
    elseif c:match("[%a_]") then
      local w = src:match("^[%w_]+", i)
      add(keywords[w] and "kw" or "name", w, i)
      i = i + #w
    elseif c:match("%d") or (c == "." and src:sub(i + 1, i + 1):match("%d")) then
      local num = src:match("^0[xX][%x%.]*[pP][%+%-]?%d+", i) or src:match("^0[xX][%x%.]*", i)
        or src:match("^[%d%.]+[eE][%+%-]?%d+", i) or src:match("^[%d%.]+", i)
      add("number", num, i)
      i = i + #num
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= n do
        local d = src:sub(j, j)
        if d == "\\" then j = j + 2 elseif d == c or d == "\n" then break else j = j + 1 end
      end
      add("string", src:sub(i + 1, j - 1), i)
      skip(i, math.min(j, n))
    elseif c == "[" and src:match("^%[=*%[", i) then
      local e = longBracket(i)
      add("string", "", i)
      skip(i, e)
    else
      local op = src:match("^%.%.%.", i) or src:match("^[=~<>]=", i) or src:match("^//", i) or src:match("^::", i)
        or src:match("^<<", i) or src:match("^>>", i) or src:match("^%.%.", i) or c
      add("op", op, i)
      i = i + #op
    end
  end
  add("eof", "", i)
  return toks
end

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
  if t.t == "string" then return "string" end
  if t.t == "number" or (t.v == "-" and toks[k + 1].t == "number") then return "number" end
  if t.t == "kw" and (t.v == "true" or t.v == "false") then return "boolean" end
  if t.t == "kw" and t.v == "function" then return "function" end
  if t.v == "{" then return "table" end
  return nil
end

-- Literal value types each primitive's fields accept (names from the runtime's own lists).
M.fieldTypes = {
  runStage = {id = "string", cmd = "string|table", cwd = "string", env = "table", stdin = "string", timeout = "number",
    grace = "number", retries = "number", retryOn = "table", backoff = "table", transient = "table", breaker = "number",
    requireFiles = "table", background = "boolean", allowFail = "boolean",
    inputs = "table|function|string", outputs = "table|string", cache = "boolean"},
  preflight = {name = "string", policy = "string", checks = "table", timeout = "number"},
  watch = {id = "string", handle = "table", pid = "number", pattern = "string", file = "string", requireFiles = "table",
    readyTimeoutSec = "number", readyPollSec = "number", onMissing = "string", timeoutSec = "number",
    heartbeatSec = "number", callback = "function", cwd = "string", allowFail = "boolean"},
  gate = {name = "string", maxIterations = "number", check = "function", cmd = "string|table", onReject = "function",
    fallback = "table", cwd = "string", env = "table", timeout = "number"},
}

--- Checks the fields of the literal table opening at toks[k] (a `{`) given to `fn`.
local function checkTable(toks, k, fn, allowed, add)
  local depth, known = 0, {}
  for _, f in ipairs(allowed) do known[f] = true end
  while toks[k].t ~= "eof" do
    local t = toks[k]
    if t.v == "{" or t.v == "(" or t.v == "[" then depth = depth + 1
    elseif t.v == "}" or t.v == ")" or t.v == "]" then
      depth = depth - 1
      if depth == 0 then return end
    elseif depth == 1 and t.t == "name" and toks[k + 1].v == "=" and (toks[k - 1].v == "{" or toks[k - 1].v == "," or toks[k - 1].v == ";") then
      if not known[t.v] then
        local hint = closest(t.v, allowed)
        add(t, "unknown-field", ("%s: unknown field '%s'%s; known fields: %s"):format(fn, t.v,
          hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(allowed, ", ")))
      else
        local want, got = (M.fieldTypes[fn] or {})[t.v], literalType(toks, k + 2)
        if want and got and not ("|" .. want .. "|"):find("|" .. got .. "|", 1, true) then
          add(toks[k + 2], "field-type", ("%s: field '%s' must be a %s, got a %s"):format(fn, t.v, want:gsub("|", " or "), got))
        end
      end
    end
    k = k + 1
  end
end

--- Findings in `src`. `known`: the recipe environment's globals (a set); `fields`:
--- primitive name -> its allowed field names.
function M.check(src, file, known, fields)
  local toks = M.tokens(src)
  local findings = {}
  local function add(t, code, message)
    findings[#findings + 1] = {file = file, line = t.line, column = t.col, code = code, message = message}
  end
  local function prevIsAccess(k) local p = toks[k - 1]; return p and (p.v == "." or p.v == ":" or p.v == "::" or p.v == "goto") end
  local brackets = {}
  local function isKey(k)
    local p = toks[k - 1]
    return brackets[#brackets] == "{" and toks[k + 1].v == "=" and p and (p.v == "{" or p.v == "," or p.v == ";")
  end
  -- Pass 1: globals the file assigns (`x = 1`, `a, b = ...`, `function f()`), usable anywhere.
  local assigned = {}
  for k, t in ipairs(toks) do
    if t.v == "{" or t.v == "(" or t.v == "[" then brackets[#brackets + 1] = t.v
    elseif t.v == "}" or t.v == ")" or t.v == "]" then brackets[#brackets] = nil
    elseif t.t == "name" and not prevIsAccess(k) and not isKey(k) then
      local j = k + 1
      while toks[j].v == "," and toks[j + 1].t == "name" do j = j + 2 end
      if toks[j].v == "=" or (toks[k - 1] and toks[k - 1].v == "function" and toks[k + 1].v == "(") then assigned[t.v] = true end
    end
  end
  -- Pass 2: scopes, undefined globals, literal primitive tables.
  local names = {}
  for g in pairs(known) do names[#names + 1] = g end
  table.sort(names)
  local scopes, pending, blocks = {{}}, nil, {}
  brackets = {}
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
  local k = 1
  while toks[k].t ~= "eof" do
    local t = toks[k]
    if t.t == "kw" then
      if t.v == "local" then
        if toks[k + 1].v == "function" then
          declare(toks[k + 2].v)
        else
          local j = k + 1
          while toks[j].t == "name" do
            declare(toks[j].v)
            j = j + 1
            if toks[j].v == "<" then j = j + 3 end
            if toks[j].v ~= "," then break end
            j = j + 1
          end
        end
      elseif t.v == "function" then
        local j, params = k + 1, {}
        while toks[j].t == "name" or toks[j].v == "." or toks[j].v == ":" do
          if toks[j].v == ":" then params[#params + 1] = "self" end
          j = j + 1
        end
        j = j + 1 -- "("
        while toks[j].v ~= ")" and toks[j].t ~= "eof" do
          if toks[j].t == "name" then params[#params + 1] = toks[j].v end
          j = j + 1
        end
        pending = params
        open("function")
        -- The function's name (toks[k+1]) is still checked below as a reference.
      elseif t.v == "for" then
        local j, vars = k + 1, {}
        while toks[j].t == "name" or toks[j].v == "," do
          if toks[j].t == "name" then vars[#vars + 1] = toks[j].v end
          j = j + 1
        end
        pending = vars
        k = j -- past the loop variables
        goto continue
      elseif t.v == "do" or t.v == "repeat" or t.v == "if" then
        -- `while`/`for` open nothing: their `do` does (with a for's variables).
        open(t.v)
      elseif t.v == "elseif" or t.v == "else" then
        scopes[#scopes] = {}
      elseif t.v == "end" or t.v == "until" then
        close()
      end
    elseif t.v == "{" or t.v == "(" or t.v == "[" then
      brackets[#brackets + 1] = t.v
    elseif t.v == "}" or t.v == ")" or t.v == "]" then
      brackets[#brackets] = nil
    elseif t.t == "name" and not prevIsAccess(k) and not isKey(k) and not isLocal(t.v) then
      local fn = t.v
      if fn == "baton" and toks[k + 1].v == "." and toks[k + 2].t == "name" and fields[toks[k + 2].v] then fn = toks[k + 2].v end
      local after = fn == t.v and k + 1 or k + 3
      if fields[fn] and (known[t.v] or assigned[t.v]) then
        if toks[after].v == "{" then checkTable(toks, after, fn, fields[fn], add)
        elseif toks[after].v == "(" and toks[after + 1].v == "{" then checkTable(toks, after + 1, fn, fields[fn], add) end
      end
      if not known[t.v] and not assigned[t.v] then
        local hint = closest(t.v, names)
        add(t, "undefined-global", ("undefined global '%s'%s"):format(t.v, hint and (" (did you mean '" .. hint .. "'?)") or ""))
      end
    end
    k = k + 1
    ::continue::
  end
  return findings
end

return M
