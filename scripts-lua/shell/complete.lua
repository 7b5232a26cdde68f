-- shell.complete: Tab completion of Lua names for the interactive shell.
--
-- candidates("baton.fs.ex") lists the completions of a dotted name: globals, the
-- fields of any table reachable from them (following __index tables, never
-- calling an __index function), and methods after ':' (a string's come from the
-- string library). Each candidate is the whole name with a hint of what follows:
-- "." after a table, "(" after a function.
local M = {}

M.keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch("%a+") do M.keywords[#M.keywords + 1] = w end

local function isident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

-- The table to search after `v`'s own fields: its metatable's __index, if a table.
local function parent(v)
  local mt = getmetatable(v)
  if type(mt) ~= "table" then return nil end
  local idx = rawget(mt, "__index")
  if type(idx) == "table" then return idx end
  return nil
end

local function lookup(v, k)
  for _ = 1, 16 do
    if type(v) == "table" then
      local x = rawget(v, k)
      if x ~= nil then return x end
    end
    v = parent(v)
    if v == nil then return nil end
  end
end
M.lookup = lookup

local function keys(v)
  local out, seen = {}, {}
  for _ = 1, 16 do
    if v == nil then break end
    if type(v) == "table" then
      for k in next, v do
        if isident(k) and not seen[k] then seen[k] = true; out[#out + 1] = k end
      end
    end
    v = parent(v)
  end
  return out
end

local function hint(v)
  local t = type(v)
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__call") then return "(" end
    return "."
  end
  if t == "function" then return "(" end
  return ""
end

--- Completions of `chain` (a dotted name, perhaps ending in '.' or ':'),
--- looked up in `env` (default _G). Sorted.
function M.candidates(chain, env)
  env = env or _G
  local out = {}
  local base, sep, partial = chain:match("^(.-)([.:])([%w_]*)$")
  if not base then
    if chain ~= "" and not isident(chain) then return out end
    for _, k in ipairs(keys(env)) do
      if k:sub(1, #chain) == chain then out[#out + 1] = k .. hint(lookup(env, k)) end
    end
    if chain ~= "" then
      for _, k in ipairs(M.keywords) do
        if k:sub(1, #chain) == chain and lookup(env, k) == nil then out[#out + 1] = k end
      end
    end
  else
    local v = env
    for part in (base .. "."):gmatch("(.-)%.") do
      if not isident(part) then return out end
      v = lookup(v, part)
      if v == nil then return out end
    end
    for _, k in ipairs(keys(v)) do
      if k:sub(1, #partial) == partial then
        local x = lookup(v, k)
        if sep == "." or type(x) == "function" or hint(x) == "(" then
          out[#out + 1] = base .. sep .. k .. (sep == ":" and "(" or hint(x))
        end
      end
    end
  end
  table.sort(out)
  return out
end

return M
