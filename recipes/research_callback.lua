-- An unattended research job: preflight, the job in the background under a signal-safe
-- wrapper, a watch on its artifacts, the callback, a locked registry append, a summary,
-- the best run, a rendered report. See docs/recipes/research_callback.md.
local args = require("kit.args")
local template = require("kit.template")
local wrapper = require("research.wrapper")
local registry = require("research.registry")

local USAGE = [[
usage: baton run [--dry-run] [--json] recipes/research_callback.lua job=CMD out=DIR run_id=ID
         [require=F,F...] [ready_timeout=S] [poll=S] [on_missing=fail|block|callback]
         [callback=CMD] [registry=FILE] [metric=NAME] [mode=max|min] [template=FILE]
         [timeout=S] [rerun=1] [tag=T,T...] [heartbeat=S]

  job=          the job, shell text; {out} and {run_id} are substituted, and it gets
                BATON_OUT and RUN_ID in its environment
  out=          the run's output directory (the job's metrics.json; status.json,
                summary.json, report.md)
  run_id=       the run's id in the registry (letters, digits, '.', '_', '-'); a run_id
                already in the registry is refused before the job starts
  rerun=1       run a run_id that is in the registry again, as a new attempt (earlier entries are kept)
  require=      files (relative to out) the job itself must leave (default: metrics.json; not
                status.json, summary.json or report.md, which Baton writes)
  ready_timeout= seconds to wait for them after the job ends (default: 600)
  poll=         seconds between checks for them (default: 5; files are also noticed as they appear)
  on_missing=   fail (exit 1), block (exit 6) or callback (call it anyway, then exit 1)
                (default: fail); the run is recorded in the registry in every case
  callback=     a command run after the artifacts are ready ({out}, {run_id}; BATON_OUT,
                RUN_ID, BATON_MISSING in its environment)
  registry=     the JSONL registry of every run (default: registry.jsonl next to out)
  metric=       the metric (in the job's metrics.json) that picks the best run; a job
                that does not report it has failed; mode=max|min (default: max)
  template=     a report template ({{run_id}}, {{status}}, {{metrics.NAME}}, {{best.run_id}}, ...)
  timeout=      seconds the job may run (default: 86400)
  tag=          incident tags, recorded in the registry and the report
  heartbeat=    seconds between heartbeats while the job runs (default: 60)

exit codes: 0 done, 1 the job or the callback failed, its artifacts or metric are missing,
3 bad options, 4 preflight failed (including a run_id already in the registry),
6 blocked on missing artifacts]]

local o = args.parse({
  usage = USAGE,
  options = {
    job = {required = true}, out = {required = true}, run_id = {required = true},
    require = {list = true, default = "metrics.json"},
    ready_timeout = {number = true, min = 0, default = "600"}, poll = {number = true, min = 0.01, default = "5"},
    on_missing = {choices = {"fail", "block", "callback"}, default = "fail"},
    callback = {}, registry = {}, metric = {}, mode = {choices = {"max", "min"}, default = "max"},
    template = {}, timeout = {number = true, min = 0.01, default = "86400"},
    rerun = {choices = {"0", "1"}, default = "0"}, tag = {list = true},
    heartbeat = {number = true, min = 0.05, default = "60"},
  },
})
if o.help then return end
if not o.run_id:match("^[%w_.%-]+$") then
  args.fail("run_id=" .. o.run_id .. ": use letters, digits, '.', '_' and '-' only", 3)
end
local rerun = o.rerun == "1"
-- The files Baton itself writes in out can never be the job's artifacts: a gate on them
-- would be satisfied by Baton, not by the job.
local OWN = {["status.json"] = "the wrapper's status file", ["summary.json"] = "the run's summary",
             ["report.md"] = "the run's report"}
for _, f in ipairs(o.require) do
  local parts = {}
  for part in f:gsub("^" .. o.out:gsub("/+$", ""):gsub("%p", "%%%0") .. "/", ""):gmatch("[^/]+") do
    if part == ".." then parts[#parts] = nil elseif part ~= "." then parts[#parts + 1] = part end
  end
  local name = table.concat(parts, "/")
  if OWN[name] then
    args.fail(("require=%s: %s is written by Baton (%s), not by the job, so it cannot show that the job did its work; "
      .. "name the files the job itself leaves (default: metrics.json)"):format(f, name, OWN[name]), 3)
  end
end
local tags = baton.json.array(o.tag or {})
local out = o.out:gsub("/+$", "")
if out == "" then out = "/" end
local parent = out:match("^(.*)/[^/]+$") or "."
if parent == "" then parent = "/" end
local registryPath = o.registry or (parent .. "/registry.jsonl")
local templateText = nil
if o.template then
  if not baton.fs.exists(o.template) then args.fail("template=" .. o.template .. ": no such file", 3) end
  templateText = baton.fs.read(o.template)
end
local function subst(cmd)
  return (cmd:gsub("{out}", args.shquote(out)):gsub("{run_id}", args.shquote(o.run_id)))
end
local job = subst(o.job)
local program = job:match("^%s*([^%s;&|]+)")

-- This runner (a resume of this baton run is another runner) and the registry's view of it.
local runner = ("%s/%d/%d"):format(baton.run.id, math.floor(baton.now() * 1000), math.random(1, 1 << 30))
local me = {baton_run = baton.run.id, runner = runner}
-- Runs whose runner died without a word (kill -9) are recorded `orphaned` by whoever sees them first.
local function sweep()
  if baton.run.dry_run then return end
  for _, e in ipairs(registry.sweep(registryPath, me)) do
    print(("%s: %s (attempt %d; %s)"):format(e.status:upper(), e.run_id, registry.attemptOf(e), e.reason))
    baton.log(("registry: run %s recorded as %s: %s"):format(e.run_id, e.status, e.reason),
      {level = "warn", run_id = e.run_id, orphaned = e.status == "orphaned", registry = registryPath})
  end
end
sweep()

local function readJSON(name)
  local path = out .. "/" .. name
  if not baton.fs.exists(path) then return nil, name .. " missing" end
  local ok, v = pcall(baton.json.decode, baton.fs.read(path))
  if not ok or type(v) ~= "table" then return nil, name .. " is not a JSON object" end
  return v
end

preflight{
  name = "research-launch",
  checks = {
    {name = "out's parent is writable", check = function()
      -- The nearest existing ancestor of out: the rest is created.
      local dir = parent
      while not baton.fs.exists(dir) and dir:find("/[^/]+$") do dir = dir:gsub("/[^/]+$", "") end
      if dir == "" then dir = "/" end
      if not baton.fs.exists(dir) then dir = "." end
      local _,
      ok = baton.sh({"sh", "-c", 'test -d "$1" && test -w "$1"', "sh", dir}, {allowFail = true, readOnly = true})
      return ok, ok and (dir .. " is writable") or (dir .. " is not a writable directory")
    end},
    {name = "the job's program", check = function()
      local path, ok = baton.sh({"sh", "-c", 'command -v "$1"', "sh", program}, {allowFail = true, readOnly = true})
      return ok, ok and path:gsub("%s+$", "") or (program .. ": not found on PATH")
    end},
    {pgrep = wrapper.pattern(o.run_id)},
    {name = "run_id not already running", check = function()
      local pids, found = baton.sh({"pgrep", "-f", wrapper.pattern(o.run_id)}, {allowFail = true, readOnly = true})
      return not found, found
          and ("run_id " .. o.run_id .. " is already running (pid " .. pids:gsub("%s+", " "):gsub(" $", "") .. ")")
              or "no other run"
    end},
    {name = "run_id not already recorded", check = function()
      local e
      for _, x in ipairs((registry.read(registryPath))) do
        if x.run_id == o.run_id
            and x.baton_run ~= baton.run.id then e = x end   -- (a resume of this run is not another run)
      end
      if not e then return true, "not in " .. registryPath end
      local what = ("run_id %s is already in %s (status %s, attempt %d, started %s)"):format(o.run_id, registryPath,
        tostring(e.status), registry.attemptOf(e), tostring(e.started_at))
      if rerun then return true, what .. "; rerun=1: a new attempt is recorded, the earlier entries stay" end
      return false, what .. "; pass rerun=1 to run it again as a new attempt"
    end},
    {name = "out holds no other run", check = function()
      local s = readJSON("status.json")
      if s and s.run_id ~= o.run_id then
        return false, ("%s holds run %s's artifacts; choose another out="):format(out, tostring(s.run_id))
      end
      return true, s and (out .. " holds this run_id's earlier artifacts") or (out .. " is free")
    end},
  },
}

local started = baton.now()
if not baton.run.dry_run then
  baton.fs.mkdir(out)
  -- Earlier artifacts (a rerun's) must not satisfy this run's artifact gate: set aside.
  local stale = {}
  local names = {"status.json", "metrics.json", "summary.json", "report.md"}
  for _, f in ipairs(o.require) do names[#names + 1] = f end
  local aside = out .. "/.previous-" .. baton.run.id
  for _, f in ipairs(names) do
    local from = out .. "/" .. f
    if baton.fs.exists(from) and not stale[f] then
      baton.fs.mkdir((aside .. "/" .. f):match("^(.*)/[^/]*$"))
      assert(os.rename(from, aside .. "/" .. f))
      stale[f] = true
      stale[#stale + 1] = f
    end
  end
  if #stale > 0 then
    baton.log(("earlier artifacts moved to %s: %s"):format(aside, table.concat(stale, ", ")),
              {moved = stale, to = aside})
  end
end
-- The attempt is recorded (`running`) before the job starts: a runner killed outright
-- leaves this line, which the next run, resume or summary records as orphaned.
local attempt = 1
if not baton.run.dry_run then
  local n, other = registry.start(registryPath,
                                  {run_id = o.run_id, status = "running", baton_run = baton.run.id, runner = runner,
    run_dir = baton.run.dir, started_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started)), out = out, job = job,
    tags = tags},
    {rerun = rerun})
  if not n then
    baton.fail(("run_id %s was recorded by another run (baton run %s, status %s) while this one started; pass "
            .. "rerun=1 to run it again")
      :format(o.run_id, tostring(other.baton_run), tostring(other.status)), {code = 4})
  end
  attempt = n
end
local env = {BATON_OUT = out, RUN_ID = o.run_id, RESEARCH_REGISTRY = registryPath, RESEARCH_JOB = job,
  RESEARCH_TAGS = table.concat(tags, ","), RESEARCH_ATTEMPT = tostring(attempt), RESEARCH_BATON_RUN = baton.run.id}
-- waitFor = "group": a job that launches its real work in the background and exits (a
-- launcher) has ended only when its whole process group has.
local h = runStage{id = "job", cmd = wrapper.command(out, o.run_id, job), env = wrapper.env(env), background = true,
                   grace = 5,
  waitFor = "group"}
if not baton.run.dry_run then
  -- The visibility heartbeat: one now, then one every heartbeat= seconds while the job runs (the watch's).
  baton.log(("heartbeat: job %s started (pid %d); a heartbeat every %ss while it runs"):format(
      o.run_id,
      h:pid(),
      o.heartbeat),
    {heartbeat = "startup", run_id = o.run_id, pid = h:pid(), every_s = o.heartbeat})
end

-- The run's status: the job's own (status.json, the wrapper's), then its artifacts and metric.
local function judge(missing, watchState)
  local st = readJSON("status.json") or {status = "failed", reason = "status.json missing"}
  local metrics, problem = readJSON("metrics.json")
  local status, reason = st.status or "failed", st.reason
  if status == "succeeded" then
    if watchState == "blocked" then
      status, reason = "blocked", "required files missing: " .. table.concat(missing, ", ")
    elseif #missing > 0 then
      status, reason = "failed", "required files missing: " .. table.concat(missing, ", ")
    elseif o.metric and not (metrics and tonumber(metrics[o.metric])) then
      status, reason = "failed", ("metric '%s' missing: %s"):format(o.metric,
                                                                    metrics and "not a number in metrics.json"
                                                                        or problem)
    end
  end
  return status, reason, metrics, problem, st
end

-- After the artifacts are ready (or not): callback, registry, summary, best, report.
local function record(missing, watchState, callbackFailure)
  local status, reason, metrics, problem, st = judge(missing, watchState)
  if callbackFailure and status == "succeeded" then status, reason = "failed", callbackFailure end
  local entry = {
    run_id = o.run_id, status = status, metrics = metrics or {}, missing = baton.json.array(missing),
    started_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started)),
    duration_s = math.floor((baton.now() - started) * 1000 + 0.5) / 1000,
    out = out, job = job, baton_run = baton.run.id, tags = tags, exit_code = st.exit_code,
    attempt = attempt, runner = runner, run_dir = baton.run.dir,
  }
  if reason then entry.reason = reason end
  if problem then entry.problem = problem end
  local appended = registry.finish(registryPath, entry)
  baton.log(("registry: run_id %s attempt %d %s in %s (%s)"):format(o.run_id, attempt, appended, registryPath, status),
    {run_id = o.run_id, registry = registryPath, status = status, tags = tags, attempt = attempt})
  sweep()
  local entries, bad = baton.fs.locked(registryPath, function() return registry.read(registryPath) end)
  if #bad > 0 then
    baton.log(("registry %s: lines %s are not JSON objects; skipped"):format(registryPath, table.concat(bad, ", ")),
              {level = "warn"})
  end
  local best = o.metric and registry.best(entries, o.metric, o.mode, {latest = true}) or nil
  local summary = {
    run_id = o.run_id, status = status, reason = reason, metrics = metrics or {}, missing = baton.json.array(missing),
    duration_s = entry.duration_s, registry = registryPath, appended = true, tags = tags, attempt = attempt,
    runs = registry.summary(entries, {latest = true}), best = best or baton.json.null,
  }
  baton.fs.write(out .. "/summary.json", baton.json.encode(summary, {pretty = true}) .. "\n")
  local vars = {run_id = o.run_id, status = status, reason = reason or "", metrics = metrics or {},
    missing = table.concat(missing, ", "), duration_s = entry.duration_s, job = job, out = out, registry = summary.runs,
    best = best or {}, metric = o.metric or "", mode = o.mode, tags = #tags > 0 and table.concat(tags, ", ") or "none"}
  local report, unknown = template.render(templateText or require("research.report"), vars)
  if #unknown > 0 then
    baton.log("report template: no value for " .. table.concat(unknown, ", "), {level = "warn", unknown = unknown})
  end
  baton.fs.write(out .. "/report.md", report)
  print(("RUN %s: %s%s"):format(o.run_id, status:upper(), reason and (" (" .. reason .. ")") or ""))
  print(("REGISTRY: %s (attempt %d; %d runs)"):format(registryPath, attempt, summary.runs.runs))
  if best then
    print(("BEST by %s (%s): %s = %s (from the %s)"):format(o.metric, o.mode, best.run_id, best.value, registry.BASIS))
  end
  print("REPORT: " .. out .. "/report.md")
  return {run_id = o.run_id, status = status, reason = reason, appended = true, recorded = appended, attempt = attempt,
    best = best or baton.json.null, summary = out .. "/summary.json", report = out .. "/report.md",
    metrics = metrics or {}, registry = registryPath, tags = tags}
end

local function afterwards(info)
  local missing = info.missing or {}
  local failure
  if o.callback then
    -- Under the callback's wrapper: a cancel now still marks status.json and the registry `cancelled`.
    local cbEnv = {BATON_OUT = out, RUN_ID = o.run_id, BATON_MISSING = table.concat(missing, ","),
                   RESEARCH_REGISTRY = registryPath,
      RESEARCH_JOB = job, RESEARCH_TAGS = table.concat(tags, ","), RESEARCH_ATTEMPT = tostring(attempt),
      RESEARCH_BATON_RUN = baton.run.id}
    local r = runStage{id = "callback", cmd = wrapper.callbackCommand(out, o.run_id, subst(o.callback)),
                       env = wrapper.callbackEnv(cbEnv),
      timeout = o.timeout, allowFail = true}
    if not r.ok then failure = "the callback failed: " .. (r.message or ("exit " .. tostring(r.exit))) end
  end
  return record(missing, "completed", failure)
end

local ok, w = pcall(watch, {
  id = "artifacts", handle = h, cwd = out, requireFiles = o.require,
  readyTimeoutSec = o.ready_timeout, readyPollSec = o.poll, onMissing = o.on_missing, timeoutSec = o.timeout,
  heartbeatSec = o.heartbeat, callback = afterwards,
})
if baton.run.dry_run then return {run_id = o.run_id, state = "dry_run"} end
local result
if ok and w.state == "blocked" then
  result = record(w.missing or {}, "blocked")
elseif ok then
  result = w.callback_result or {}
elseif type(w) == "table" and w.kind == "watch" and w.outcome then
  -- The watch failed (artifacts missing with on_missing=fail, or the job ran past timeout=): recorded all the same.
  result = record(w.outcome.missing or {}, "failed")
  if #(w.outcome.missing or {}) == 0 then result.status, result.reason = "failed", tostring(w) end
else
  persistFinal{run_id = o.run_id, state = "failed", error = tostring(w), out = out}
  error(w, 0)
end
if result.best == nil then result.best = baton.json.null end
result.state = ok and w.state or "failed"
result.missing = baton.json.array(ok and w.missing or (w.outcome and w.outcome.missing) or {})
persistFinal(result)
if result.status == "blocked" then
  args.fail("blocked: required files missing after " .. o.ready_timeout .. "s: " .. table.concat(result.missing, ", ")
    .. " (recorded as blocked)", 6)
end
if result.status ~= "succeeded" then
  args.fail(("job %s %s: %s (see %s/status.json)"):format(o.run_id, result.status or "failed",
    result.reason or "", out), 1)
end
return result
