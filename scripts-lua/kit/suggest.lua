-- kit.suggest: the closest of some names, for "did you mean" hints (kit.args, kit.lint,
-- gap09.agents: one edit distance for them all).
--
--   local suggest = require("kit.suggest")
--   suggest.closest("--cuont", {"count", "risk"})     --> "count"
local M = {}

local byte, min = string.byte, math.min

--- The edit distance between `a` and `b`: the insertions, deletions and substitutions that
--- make one the other.
function M.distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur, ai = {[0] = i}, byte(a, i)
    for j = 1, #b do
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ai == byte(b, j) and 0 or 1))
    end
    prev = cur
  end
  return prev[#b]
end

--- The name in `known` nearest to `name` (the first of equals), or nil when none is near
--- enough. `o.within(d, name)`: whether a distance is near enough (default: any);
--- `o.fold`: compare lower-cased.
function M.closest(name, known, o)
  o = o or {}
  local best, bestD
  local a = o.fold and name:lower() or name
  for _, k in ipairs(known) do
    local d = M.distance(a, o.fold and k:lower() or k)
    if (not o.within or o.within(d, a)) and (not bestD or d < bestD) then best, bestD = k, d end
  end
  return best
end

return M
