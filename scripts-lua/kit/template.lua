-- kit.template: renders "{{ name }}" and "{{ a.b.c }}" placeholders from a table.
-- Strings and numbers are inserted as they are, tables as JSON, booleans as
-- true/false; a name with no value renders as "" and is reported.
--
--   local text, unknown = require("kit.template").render("Best: {{best.run_id}}", vars)
local M = {}

local function lookup(vars, path)
  local v = vars
  for part in path:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    v = v[tonumber(part) or part]
    if v == nil then v = nil; break end
  end
  return v
end

function M.render(text, vars)
  local unknown, seen = {}, {}
  local out = text:gsub("{{%s*([%w_%.]+)%s*}}", function(path)
    local v = lookup(vars, path)
    if v == nil or v == baton.json.null then
      if not seen[path] then seen[path] = true; unknown[#unknown + 1] = path end
      return ""
    end
    if type(v) == "table" then return baton.json.encode(v) end
    if type(v) == "number" and math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
      return tostring(math.floor(v))
    end
    return tostring(v)
  end)
  return out, unknown
end

return M
