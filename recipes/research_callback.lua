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
         [timeout=S]

  job=          the job, shell text; {out} and {run_id} are substituted, and it gets
                BATON_OUT and RUN_ID in its environment
  out=          the run's output directory (metrics.json, summary.json, report.md)
  run_id=       the run's id in the registry (letters, digits, '.', '_', '-')
  require=      files (relative to out) the job must leave (default: metrics.json)
  ready_timeout= seconds to wait for them after the job ends (default: 600)
  poll=         seconds between checks for them (default: 5; files are also noticed as they appear)
  on_missing=   fail (exit 1), block (nothing recorded, exit 6) or callback (go on) (default: fail)
  callback=     a command run after the artifacts are ready ({out}, {run_id}; BATON_OUT,
                RUN_ID, BATON_MISSING in its environment)
  registry=     the JSONL registry (default: registry.jsonl next to out)
  metric=       the metric (in metrics.json) that picks the best run; mode=max|min (default: max)
  template=     a report template ({{run_id}}, {{status}}, {{metrics.NAME}}, {{best.run_id}}, ...)
  timeout=      seconds the job may run (default: 86400)

exit codes: 0 done, 1 the job or the callback failed or artifacts missing (on_missing=fail),
3 bad options, 4 preflight failed, 6 blocked on missing artifacts]]

local o = args.parse({
  usage = USAGE,
  options = {
    job = {required = true}, out = {required = true}, run_id = {required = true},
    require = {list = true, default = "metrics.json"},
    ready_timeout = {number = true, min = 0, default = "600"}, poll = {number = true, min = 0.01, default = "5"},
    on_missing = {choices = {"fail", "block", "callback"}, default = "fail"},
    callback = {}, registry = {}, metric = {}, mode = {choices = {"max", "min"}, default = "max"},
    template = {}, timeout = {number = true, min = 0.01, default = "86400"},
  },
})
if o.help then return end
if not o.run_id:match("^[%w_.%-]+$") then
  args.fail("run_id=" .. o.run_id .. ": use letters, digits, '.', '_' and '-' only", 3)
end
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

preflight{
  name = "research-launch",
  checks = {
    {name = "out's parent is writable", check = function()
      -- The nearest existing ancestor of out: the rest is created.
      local dir = parent
      while not baton.fs.exists(dir) and dir:find("/[^/]+$") do dir = dir:gsub("/[^/]+$", "") end
      if dir == "" then dir = "/" end
      if not baton.fs.exists(dir) then dir = "." end
      local _, ok = baton.sh({"sh", "-c", 'test -d "$1" && test -w "$1"', "sh", dir}, {allowFail = true})
      return ok, ok and (dir .. " is writable") or (dir .. " is not a writable directory")
    end},
    {name = "the job's program", check = function()
      local path, ok = baton.sh({"sh", "-c", 'command -v "$1"', "sh", program}, {allowFail = true})
      return ok, ok and path:gsub("%s+$", "") or (program .. ": not found on PATH")
    end},
    {pgrep = wrapper.pattern(o.run_id)},
    {name = "run_id not already running", check = function()
      local pids, found = baton.sh({"pgrep", "-f", wrapper.pattern(o.run_id)}, {allowFail = true})
      return not found, found and ("run_id " .. o.run_id .. " is already running (pid " .. pids:gsub("%s+", " "):gsub(" $", "") .. ")") or "no other run"
    end},
  },
}

local started = baton.now()
if not baton.run.dry_run then baton.fs.mkdir(out) end
local env = {BATON_OUT = out, RUN_ID = o.run_id}
local h = runStage{id = "job", cmd = wrapper.command(out, o.run_id, job), env = wrapper.env(env), background = true, grace = 5}

local function readMetrics()
  local path = out .. "/metrics.json"
  if not baton.fs.exists(path) then return nil, "metrics.json missing" end
  local ok, v = pcall(baton.json.decode, baton.fs.read(path))
  if not ok or type(v) ~= "table" then return nil, "metrics.json is not a JSON object" end
  return v
end

-- After the artifacts are ready (or on_missing=callback): callback, registry, summary, best, report.
local function afterwards(info)
  local missing = info.missing or {}
  if o.callback then
    local cbEnv = {BATON_OUT = out, RUN_ID = o.run_id, BATON_MISSING = table.concat(missing, ",")}
    runStage{id = "callback", cmd = subst(o.callback), env = cbEnv, timeout = o.timeout}
  end
  local metrics, problem = readMetrics()
  local status = metrics and metrics.status or "failed"
  local entry = {
    run_id = o.run_id, status = status, metrics = metrics or {}, missing = baton.json.array(missing),
    started_at = os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(started)),
    duration_s = math.floor((baton.now() - started) * 1000 + 0.5) / 1000,
    out = out, job = job, baton_run = baton.run.id,
  }
  if problem then entry.problem = problem end
  local appended = registry.append(registryPath, entry)
  if appended == "duplicate" then
    baton.log(("registry: run_id %s is already in %s; not appended"):format(o.run_id, registryPath),
      {level = "warn", run_id = o.run_id, registry = registryPath, duplicate = true})
  else
    baton.log(("registry: run_id %s appended to %s"):format(o.run_id, registryPath), {run_id = o.run_id, registry = registryPath})
  end
  local entries, bad = registry.read(registryPath)
  if #bad > 0 then
    baton.log(("registry %s: lines %s are not JSON objects; skipped"):format(registryPath, table.concat(bad, ", ")), {level = "warn"})
  end
  local best = o.metric and registry.best(entries, o.metric, o.mode) or nil
  local summary = {
    run_id = o.run_id, status = status, metrics = metrics or {}, missing = baton.json.array(missing),
    duration_s = entry.duration_s, registry = registryPath, appended = appended == "appended",
    runs = registry.summary(entries), best = best or baton.json.null,
  }
  baton.fs.write(out .. "/summary.json", baton.json.encode(summary, {pretty = true}) .. "\n")
  local vars = {run_id = o.run_id, status = status, metrics = metrics or {}, missing = table.concat(missing, ", "),
    duration_s = entry.duration_s, job = job, out = out, registry = summary.runs, best = best or {},
    metric = o.metric or "", mode = o.mode}
  local report, unknown = template.render(templateText or require("research.report"), vars)
  if #unknown > 0 then
    baton.log("report template: no value for " .. table.concat(unknown, ", "), {level = "warn", unknown = unknown})
  end
  baton.fs.write(out .. "/report.md", report)
  print(("RUN %s: %s%s"):format(o.run_id, status:upper(), #missing > 0 and (" (missing: " .. table.concat(missing, ", ") .. ")") or ""))
  print(("REGISTRY: %s (%s; %d runs)"):format(registryPath, appended, summary.runs.runs))
  if best then print(("BEST by %s (%s): %s = %s"):format(o.metric, o.mode, best.run_id, best.value)) end
  print("REPORT: " .. out .. "/report.md")
  return {run_id = o.run_id, status = status, appended = appended == "appended", best = best or baton.json.null,
    summary = out .. "/summary.json", report = out .. "/report.md", metrics = metrics or {}, registry = registryPath}
end

local ok, w = pcall(watch, {
  id = "artifacts", handle = h, cwd = out, requireFiles = o.require,
  readyTimeoutSec = o.ready_timeout, readyPollSec = o.poll, onMissing = o.on_missing, timeoutSec = o.timeout,
  heartbeatSec = math.max(1, math.min(60, o.poll * 12)), callback = afterwards,
})
if not ok then
  persistFinal{run_id = o.run_id, state = "failed", error = tostring(w), out = out}
  error(w, 0)
end
if baton.run.dry_run then return {run_id = o.run_id, state = "dry_run"} end

local result = w.callback_result or {}
if result.best == nil then result.best = baton.json.null end
result.state = w.state
result.missing = baton.json.array(w.missing or {})
if w.state == "blocked" then
  persistFinal{run_id = o.run_id, state = "blocked", missing = result.missing, best = baton.json.null}
  args.fail("blocked: required files missing after " .. o.ready_timeout .. "s: " .. table.concat(w.missing or {}, ", ")
    .. " (nothing was recorded)", 6)
end
persistFinal(result)
if result.status ~= "succeeded" then
  args.fail(("job %s %s (see %s/metrics.json)"):format(o.run_id, result.status or "failed", out), 1)
end
return result
