-- research.registry: a JSONL registry of runs, one JSON object per line with a
-- "run_id", recorded at most once (see M.append).
local M = {}

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end

--- Appends `entry` (a table with run_id) unless its run_id is there already.
--- Returns "appended" or "duplicate". With `opts.replace`, the earlier lines of that
--- run_id are removed first (the file is rewritten in place, so the lock stays on the
--- same file) and it returns "replaced". The check and the write happen under one
--- exclusive flock of the registry (baton.fs.locked; the lock baton.fs.append and the
--- wrapper's cancel record take), so concurrent runs never interleave lines and a
--- run_id is recorded at most once.
function M.append(path, entry, opts)
  opts = type(opts) == "table" and opts or {timeout = opts}
  assert(type(entry.run_id) == "string" and entry.run_id:match("^[%w_.%-]+$"), "registry: a run_id of letters, digits, '.', '_', '-' is required")
  baton.fs.mkdir(dirname(path))
  local line = baton.json.encode(entry)
  return baton.fs.locked(path, function()
    local keep, found = {}, false
    for _, l in ipairs(M.lines(path)) do
      local ok, v = pcall(baton.json.decode, l)
      if ok and type(v) == "table" and v.run_id == entry.run_id then found = true else keep[#keep + 1] = l end
    end
    if found and not opts.replace then return "duplicate" end
    if found then
      local f = assert(io.open(path, "w"))   -- truncates the same file: the held lock stays valid
      f:write(table.concat(keep, "\n"), #keep > 0 and "\n" or "", line, "\n")
      f:close()
      return "replaced"
    end
    baton.fs.append(path, line .. "\n")   -- closes a torn last line first
    return "appended"
  end, {timeout = opts.timeout or 60})
end

--- The registry entry of a run_id, or nil.
function M.find(path, runID)
  for _, e in ipairs((M.read(path))) do
    if e.run_id == runID then return e end
  end
  return nil
end

--- The non-empty lines of the file.
function M.lines(path)
  local out = {}
  if not baton.fs.exists(path) then return out end
  for l in (baton.fs.read(path) .. "\n"):gmatch("([^\n]*)\n") do
    if l:match("%S") then out[#out + 1] = l end
  end
  return out
end

--- Every entry, and the numbers of the lines that are not JSON objects.
function M.read(path)
  local entries, bad = {}, {}
  if not baton.fs.exists(path) then return entries, bad end
  local n = 0
  for line in (baton.fs.read(path) .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:match("%S") then
      local ok, v = pcall(baton.json.decode, line)
      if ok and type(v) == "table" then entries[#entries + 1] = v else bad[#bad + 1] = n end
    end
  end
  return entries, bad
end

local function metricOf(e, name)
  local m = e.metrics
  local v = type(m) == "table" and m[name]
  if v == nil then v = e[name] end
  return tonumber(v)
end

--- The best succeeded run by a numeric metric: mode "max" (default) or "min".
--- Returns {run_id, metric, mode, value, candidates} or nil when no run has the metric.
function M.best(entries, metric, mode)
  mode = mode or "max"
  local best, value, n = nil, nil, 0
  for _, e in ipairs(entries) do
    local v = metricOf(e, metric)
    if e.status == "succeeded" and v and v == v then
      n = n + 1
      if value == nil or (mode == "max" and v > value) or (mode == "min" and v < value) then best, value = e, v end
    end
  end
  if not best then return nil end
  return {run_id = best.run_id, metric = metric, mode = mode, value = value, candidates = n}
end

--- Counts by status.
function M.summary(entries)
  local s = {runs = #entries, succeeded = 0, failed = 0, cancelled = 0, blocked = 0, other = 0}
  for _, e in ipairs(entries) do
    if s[e.status] and e.status ~= "runs" and e.status ~= "other" then s[e.status] = s[e.status] + 1 else s.other = s.other + 1 end
  end
  return s
end

return M
