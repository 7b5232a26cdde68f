-- gap09.risk: GAP-09's risk router. A task's words are matched against a keyword
-- table; the highest level with a match wins. A task with no keyword is MEDIUM
-- (planning before execution: the cautious default). Generic verbs (add, fix,
-- update, create) are in no list: "Fix typo in README.md" is LOW because of "typo"
-- and "readme", "Add JWT authentication" HIGH because of "jwt" and "auth*".
-- An empty task cannot be
-- assessed: assess() returns nil and a reason (the recipe exits 5).
--
-- Keywords are whole words, case-insensitive. A keyword ending in "*" matches any
-- word starting with it ("auth*" matches "authentication", "authorize"). A keyword
-- with a space matches consecutive words ("database schema").
--
-- Recipes may change the table before assessing:
--   local risk = require("gap09.risk")
--   table.insert(risk.keywords.high, "billing")
local M = {}

M.levels = {"low", "medium", "high"}

M.keywords = {
  high = {
    "auth*", "jwt", "oauth*", "login", "password*", "secret*", "credential*", "token*",
    "security", "vulnerab*", "encrypt*", "decrypt*", "crypto*", "permission*", "rbac",
    "payment*", "billing", "migration*", "migrate", "schema", "database", "delete", "drop",
    "production", "deploy*", "infra*", "concurrency", "race", "distributed",
  },
  medium = {
    "implement*", "feature*", "endpoint*", "api", "apis", "refactor*", "integrat*", "upgrade*",
    "dependenc*", "performance", "optimi*", "cache", "caching", "config*", "module*", "service*",
    "workflow*", "pipeline*", "concurrent",
  },
  low = {
    "typo*", "readme", "doc", "docs", "documentation", "comment*", "spelling", "rename",
    "format*", "lint", "whitespace", "wording", "changelog", "copy",
  },
}

-- Lower-case words of the task (letters, digits, '_' and '-').
local function words(task)
  local out = {}
  for w in task:lower():gmatch("[%w_%-]+") do out[#out + 1] = w end
  return out
end
M.words = words

local function matches(keyword, ws)
  local kw = keyword:lower()
  if kw:find(" ", 1, true) then
    local parts = words(kw)
    for i = 1, #ws - #parts + 1 do
      local all = true
      for j = 1, #parts do if ws[i + j - 1] ~= parts[j] then all = false; break end end
      if all then return true end
    end
    return false
  end
  local prefix = kw:match("^(.-)%*$")
  for _, w in ipairs(ws) do
    if prefix then
      if w:sub(1, #prefix) == prefix then return true end
    elseif w == kw then
      return true
    end
  end
  return false
end

--- assess(task) -> level, matched keywords, why | nil, reason
function M.assess(task)
  if type(task) ~= "string" or not task:match("%S") then
    return nil, "Task description required"
  end
  local ws = words(task)
  if #ws == 0 then return nil, "Task description has no words to assess" end
  for i = #M.levels, 1, -1 do
    local level = M.levels[i]
    local hit = {}
    for _, kw in ipairs(M.keywords[level] or {}) do
      if matches(kw, ws) then hit[#hit + 1] = kw:gsub("%*$", "") end
    end
    if #hit > 0 then
      return level, hit, ("keywords: %s"):format(table.concat(hit, ", "))
    end
  end
  return "medium", {}, "no keyword matched; medium by default"
end

--- Stages run for a level, in order (verification and ship always follow).
M.route = {
  high = {"discovery", "planning", "execution"},
  medium = {"planning", "execution"},
  low = {"execution"},
}

return M
