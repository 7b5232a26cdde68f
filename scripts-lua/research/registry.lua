-- research.registry: a JSONL registry of runs, one JSON object per line with a
-- "run_id". The research recipe records each attempt of a run: a `running` line before
-- the job starts (M.start, with its attempt number), replaced by the attempt's end
-- (M.finish); a rerun (rerun=1) is a new attempt, a new line, and the earlier ones stay.
-- Lines left `running` by a runner that died are recorded `orphaned` (M.sweep). The
-- best run and the summary look at the latest entry of each run id (M.latest).
-- M.append is the older record-once append (a duplicate run_id is not appended).
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
  assert(type(entry.run_id) == "string" and entry.run_id:match("^[%w_.%-]+$"),
         "registry: a run_id of letters, digits, '.', '_', '-' is required")
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

--- The lines of the file (under its lock), with a function that writes lines back in
--- place (the file is truncated, not replaced, so the held lock stays valid).
local function rewrite(path, lines)
  local f = assert(io.open(path, "w"))
  f:write(table.concat(lines, "\n"), #lines > 0 and "\n" or "")
  f:close()
end

local function decode(l)
  local ok, v = pcall(baton.json.decode, l)
  if ok and type(v) == "table" then return v end
end

local function attemptOf(e) return math.tointeger(tonumber(e.attempt)) or 1 end
M.attemptOf = attemptOf

--- The start of a run's attempt: a `running` line, recorded before the job starts, so a
--- runner that dies without a word (SIGKILL) still leaves its trace. Under the lock: when
--- another baton run already recorded the run_id and `opts.rerun` is not set, nothing is
--- written and it returns nil and that entry; otherwise the attempt number (one more than
--- the run_id's highest).
function M.start(path, entry, opts)
  opts = opts or {}
  baton.fs.mkdir(dirname(path))
  return baton.fs.locked(path, function()
    local top, other = 0, nil
    for _, l in ipairs(M.lines(path)) do
      local v = decode(l)
      if v and v.run_id == entry.run_id then
        top = math.max(top, attemptOf(v))
        if v.baton_run ~= entry.baton_run then other = v end
      end
    end
    if other and not opts.rerun then return nil, other end
    entry.attempt = top + 1
    entry.status = entry.status or "running"
    baton.fs.append(path, baton.json.encode(entry) .. "\n")
    return entry.attempt
  end, {timeout = opts.timeout or 60})
end

--- Records the end of an attempt: its line (same run_id, baton_run and attempt) is
--- replaced by `entry`, or `entry` is appended when there is no such line. Returns
--- "recorded", or "kept" when the attempt already ended (recorded by the wrapper on a
--- signal: that record stands).
function M.finish(path, entry, opts)
  baton.fs.mkdir(dirname(path))
  return baton.fs.locked(path, function()
    local lines, at = M.lines(path), nil
    for i, l in ipairs(lines) do
      local v = decode(l)
      if v and v.run_id == entry.run_id and v.baton_run == entry.baton_run and attemptOf(v) == attemptOf(entry) then
        if v.status ~= "running" then return "kept" end
        at = i
      end
    end
    local line = baton.json.encode(entry)
    if at then
      lines[at] = line
      rewrite(path, lines)
    else
      baton.fs.append(path, line .. "\n")
    end
    return "recorded"
  end, {timeout = (opts or {}).timeout or 60})
end

--- Whether the baton run that wrote a `running` entry is still alive: its runner holds
--- the run's lock (baton's flock on RUN_DIR/lock).
local function runnerAlive(e)
  if type(e.run_dir) ~= "string" or not baton.fs.exists(e.run_dir .. "/lock") then return false end
  local _, free = baton.sh({"flock", "-n", "-s", e.run_dir .. "/lock", "true"}, {allowFail = true, readOnly = true})
  return not free
end

--- Records as `orphaned` every `running` entry whose runner is gone: a runner of another
--- baton run that no longer holds its run's lock, or an earlier runner of this baton run
--- (`me = {baton_run, runner}`: a resume); as `cancelled` when that run's final.json says
--- it was cancelled. Returns the entries it recorded.
function M.sweep(path, me)
  if not baton.fs.exists(path) then return {} end
  return baton.fs.locked(path, function()
    local lines, found = M.lines(path), {}
    for i, l in ipairs(lines) do
      local v = decode(l)
      if v and v.status == "running" then
        local dead
        if v.baton_run == me.baton_run then dead = v.runner ~= me.runner else dead = not runnerAlive(v) end
        if dead then
          -- A run cancelled before it could record its end (no recipe code runs after a
          -- cancel) says so in its final.json; any other silent end is an orphan.
          local final = type(v.run_dir) == "string" and v.run_dir .. "/final.json"
          local okf, f = false, nil
          if final and baton.fs.exists(final) then okf, f = pcall(baton.json.decode, baton.fs.read(final)) end
          if okf and type(f) == "table" and f.status == "cancelled" then
            v.status = "cancelled"
            v.reason = ("cancelled before it recorded its end (baton run %s: %s); recorded by baton run %s")
              :format(tostring(v.baton_run), tostring(f.reason), tostring(me.baton_run))
          else
            v.status = "orphaned"
            v.reason = ("its runner (baton run %s) ended without recording the run (killed?); recorded by baton run %s")
              :format(tostring(v.baton_run), tostring(me.baton_run))
          end
          v.orphaned_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(baton.now()))
          lines[i] = baton.json.encode(v)
          found[#found + 1] = v
        end
      end
    end
    if #found > 0 then rewrite(path, lines) end
    return found
  end, {timeout = 60})
end

--- The latest entry of each run_id (the last line of that run_id), in the order of those lines.
function M.latest(entries)
  local last, order = {}, {}
  for i, e in ipairs(entries) do
    if e.run_id ~= nil then last[e.run_id] = i end
  end
  for i, e in ipairs(entries) do
    if e.run_id == nil or last[e.run_id] == i then order[#order + 1] = e end
  end
  return order
end

M.BASIS = "latest entry of each run id"

local function metricOf(e, name)
  local m = e.metrics
  local v = type(m) == "table" and m[name]
  if v == nil then v = e[name] end
  return tonumber(v)
end

--- The best succeeded run by a numeric metric: mode "max" (default) or "min".
--- Returns {run_id, metric, mode, value, candidates} or nil when no run has the metric.
--- With `opts.latest`, only the latest entry of each run id is a candidate (`basis` says so).
function M.best(entries, metric, mode, opts)
  mode = mode or "max"
  if opts and opts.latest then entries = M.latest(entries) end
  local best, value, n = nil, nil, 0
  for _, e in ipairs(entries) do
    local v = metricOf(e, metric)
    if e.status == "succeeded" and v and v == v then
      n = n + 1
      if value == nil or (mode == "max" and v > value) or (mode == "min" and v < value) then best, value = e, v end
    end
  end
  if not best then return nil end
  return {run_id = best.run_id, metric = metric, mode = mode, value = value, candidates = n, attempt = best.attempt,
    basis = opts and opts.latest and M.BASIS or nil}
end

--- Counts by status. With `opts.latest`, over the latest entry of each run id (`runs`),
--- with `entries` (every line) and `basis` saying so.
function M.summary(entries, opts)
  local all = entries
  if opts and opts.latest then entries = M.latest(entries) end
  local s = {runs = #entries, succeeded = 0, failed = 0, cancelled = 0, blocked = 0, orphaned = 0, other = 0}
  for _, e in ipairs(entries) do
    if type(e.status) == "string"
        and s[e.status]
        and e.status ~= "runs"
        and e.status ~= "other" then s[e.status] = s[e.status] + 1 else s.other = s.other + 1 end
  end
  if opts and opts.latest then s.entries = #all; s.basis = M.BASIS end
  return s
end

return M
