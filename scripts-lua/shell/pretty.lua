-- shell.pretty: how the interactive shell prints values.
--
-- Tables are nested and sorted by key (the array part first, in order), long ones
-- are elided, a table inside itself is marked <cycle>, strings are quoted with
-- escapes, and Baton's own results (runStage's and friends') list their
-- important fields first with their output shortened. Only raw access is used:
-- printing never runs an __index or __len metamethod (a __tostring, if present,
-- is called under pcall).
local M = {}

M.defaults = {
  width = 100,   -- a table that fits on one line this wide is printed on one line
  depth = 6,     -- deeper tables print as {...}
  items = 40,    -- entries shown per table before "... (N more)"
  string = 400,  -- bytes of a string shown before it is cut
}

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function isident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not keywords[k]
end
M.isident = isident

local escapes = {["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\",
                 ["\a"] = "\\a", ["\b"] = "\\b", ["\f"] = "\\f", ["\v"] = "\\v"}

--- A string as a Lua literal; longer than `max` bytes: cut, with its size said.
function M.quote(s, max)
  local n, cut = #s, false
  if max and n > max then
    s = s:sub(1, max)
    -- do not end inside a UTF-8 sequence
    s = s:gsub("[\xC0-\xFF][\x80-\xBF]*$", "")
    cut = true
  end
  local q = '"' .. s:gsub('[%c"\\]', function(c) return escapes[c] or ("\\%03d"):format(c:byte()) end) .. '"'
  if cut then q = q .. ("... (%d bytes)"):format(n) end
  return q
end

local typeorder = {number = 1, string = 2, boolean = 3}

local function keyless(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then
    local oa, ob = typeorder[ta] or 9, typeorder[tb] or 9
    if oa ~= ob then return oa < ob end
    return ta < tb
  end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return (not a) and b end
  return tostring(a) < tostring(b)
end

-- Baton's results: these fields first, in this order; false flags left out.
local layouts = {
  ["baton.stage_result"] = {
    first = {"id", "occurrence", "status", "ok", "exit", "signal", "attempts", "duration", "failure_class",
             "message", "stdout", "stderr", "logs"},
    quiet = {replayed = false, dry = false, occurrence = 1},
    digits = {duration = 3},
    string = 240,
  },
  -- :attach's run.stages
  ["baton.run_stage"] = {
    first = {"id", "occurrence", "status", "exit", "signal", "attempt", "duration_ms", "age_s", "failure_class",
             "message", "cmd", "started_at", "ended_at"},
    quiet = {replayed = false, occurrence = 1},
  },
  -- :attach's run
  ["baton.run_state"] = {
    first = {"id", "state", "live", "recipe", "current", "started_at", "ended_at", "duration_ms", "exit_code",
             "reason", "runner_pid", "stages", "final"},
    quiet = {},
    collapse = {events = true},   -- print run.events to see them
  },
}

local null = type(baton) == "table" and type(baton.json) == "table" and baton.json.null or nil

local fmt

local function fmtkey(k, o, depth, path, indent)
  if isident(k) then return k end
  return "[" .. fmt(k, o, depth + 1, path, indent) .. "]"
end

local function fmttable(t, o, depth, path, indent, layout)
  if path[t] then return "<cycle>" end
  local count = 0
  for _ in next, t do count = count + 1 end
  if count == 0 then return "{}" end
  if depth >= o.depth then return ("{... %d item%s}"):format(count, count == 1 and "" or "s") end
  path[t] = true
  local parts, shown = {}, 0
  local strmax = layout and layout.string or o.string
  local function add(s)
    shown = shown + 1
    if shown <= o.items then parts[#parts + 1] = s end
  end
  local function value(v, k)
    if type(v) == "string" then return M.quote(v, strmax) end
    if layout and layout.collapse and layout.collapse[k] and type(v) == "table" then
      local c = 0
      for _ in next, v do c = c + 1 end
      return ("{... %d item%s}"):format(c, c == 1 and "" or "s")
    end
    local digits = layout and layout.digits and layout.digits[k]
    if digits and math.type(v) == "float" then
      return (("%." .. digits .. "f"):format(v):gsub("0+$", ""):gsub("%.$", ".0"))
    end
    return fmt(v, o, depth + 1, path, indent + 2)
  end
  -- the array part, in order
  local n = 0
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  for i = 1, n do add(value(rawget(t, i))) end
  -- then the layout's fields, then every other key, sorted
  local done = {}
  if layout then
    for _, k in ipairs(layout.first) do
      local v = rawget(t, k)
      done[k] = true
      if v ~= nil and layout.quiet[k] ~= v then add(k .. " = " .. value(v, k)) end
    end
  end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) and not done[k] then keys[#keys + 1] = k end
  end
  table.sort(keys, keyless)
  for _, k in ipairs(keys) do
    local v = rawget(t, k)
    if not (layout and layout.quiet[k] == v) then
      add(fmtkey(k, o, depth, path, indent) .. " = " .. value(v, k))
    end
  end
  path[t] = nil
  if shown > o.items then parts[#parts + 1] = ("... (%d more)"):format(shown - o.items) end
  local one = "{" .. table.concat(parts, ", ") .. "}"
  if indent + #one <= o.width and not one:find("\n", 1, true) then return one end
  local pad = string.rep(" ", indent + 2)
  return "{\n" .. pad .. table.concat(parts, ",\n" .. pad) .. ",\n" .. string.rep(" ", indent) .. "}"
end

fmt = function(v, o, depth, path, indent)
  local t = type(v)
  if t == "string" then return M.quote(v, o.string) end
  if t == "nil" or t == "boolean" or t == "number" then return tostring(v) end
  if null ~= nil and v == null then return "null" end
  if t == "function" then
    local info = debug.getinfo(v, "S")
    -- C functions, and Baton's own Lua (print, the prelude, the built-in library)
    if info.what == "C" or info.source:find("^=baton") or info.source:find("^@baton:") then
      return "function: builtin"
    end
    return ("function: %s:%d"):format(info.short_src, info.linedefined)
  end
  local mt = getmetatable(v)
  local name = type(mt) == "table" and rawget(mt, "__name") or nil
  if t == "table" then
    local layout = layouts[name]
    if layout then return fmttable(v, o, depth, path, indent, layout) end
    if type(mt) == "table" and rawget(mt, "__tostring") ~= nil then
      local ok, s = pcall(tostring, v)
      if ok and type(s) == "string" then return s end
    end
    return fmttable(v, o, depth, path, indent)
  end
  local ok, s = pcall(tostring, v)
  return ok and s or ("<" .. t .. ">")
end

--- One value as text. `opts` overrides fields of M.defaults.
function M.format(v, opts)
  local o = M.defaults
  if opts then
    o = setmetatable({}, {__index = M.defaults})
    for k, x in pairs(opts) do o[k] = x end
  end
  return fmt(v, o, 0, {}, 0)
end

--- The values an expression returned, as the shell prints them: tab-separated,
--- or one per line when any takes several lines.
function M.show(...)
  local n = select("#", ...)
  local parts, multi = {}, false
  for i = 1, n do
    parts[i] = M.format((select(i, ...)))
    if parts[i]:find("\n", 1, true) then multi = true end
  end
  return table.concat(parts, multi and "\n" or "\t")
end

return M
