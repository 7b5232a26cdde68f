-- The work-order pipeline rebuild (four phases from the WO durability plan): forensics,
-- rebuild (work orders from the inbox, applied atomically), a canary, a guardrail and a
-- history-aware diagnosis. See docs/recipes/wo_rebuild.md.
local args = require("kit.args")
local wo = require("wo.pipeline")
local git = require("wo.git")

local USAGE = [[
usage: baton run [--json] recipes/wo_rebuild.lua base=DIR phase=forensics|rebuild|canary|guardrail|history|all
         [critical=P,P...] [dirs=P,P...] [component=P] [since=T] [until=T]
         [paths=P,P...] [logs=GLOB,GLOB...] [patterns=TEXT,TEXT...]
         [inbox=DIR] [state=DIR] [telemetry=FILE] [reports=DIR]

  base=       the tree the pipeline lives in (paths below are relative to it)
  phase=      forensics  git history of `paths` in [since, until] and log matches -> reports/forensic_wo_pipeline_*.json
              rebuild    apply every work order in the inbox (once), with state files and telemetry
              canary     drop a canary work order and prove the pipeline end to end
              guardrail  check the critical files (present, executable) and dirs: healthy or drift (exit 1)
              history    when `component` was last present and which commit removed it
              all        forensics, rebuild, canary, guardrail (and history when component= is given)
  critical=   critical files (default: the seed's four processors)
  dirs=       critical directories (default: g/followup/state, bridge/inbox/CLC, bridge/inbox/ENTRY)
  component=  the path history= asks about
  since= until=  the forensics window, as git understands it ("2025-11-13 01:50", "2 days ago")
  paths=      paths forensics follows (default: critical files and the state directory)
  logs=       log files forensics greps (default: logs/*.log,logs/*.err)
  patterns=   what it greps for, besides the paths (default: exit 127,command not found,No such file)
  inbox= state= telemetry= reports=   the layout (defaults: bridge/inbox/CLC, g/followup/state,
              g/telemetry/unified.jsonl, g/reports)

exit codes: 0 done, 1 a work order failed / the canary failed / drift found, 3 bad options]]

local o = args.parse({
  usage = USAGE,
  options = {
    base = {required = true}, phase = {required = true, choices = {"forensics", "rebuild", "canary", "guardrail", "history", "all"}},
    critical = {list = true}, dirs = {list = true}, component = {}, since = {}, ["until"] = {},
    paths = {list = true}, logs = {list = true}, patterns = {list = true, sep = ","},
    inbox = {}, state = {}, telemetry = {}, reports = {},
  },
})
if o.help then return end
local base = o.base:gsub("/+$", "")
if not baton.fs.exists(base .. "/.") then args.fail("base=" .. o.base .. ": not a directory", 3) end
if o.phase == "history" and not o.component then args.fail("phase=history needs component=PATH", 3) end
local L = wo.layout(base, o)
local critical = o.critical or wo.DEFAULTS.critical
local dirs = o.dirs or wo.DEFAULTS.dirs
local dry = baton.run.dry_run -- a dry run reads and checks, and writes nothing
local result, problems = {phase = o.phase, base = base, dry_run = dry}, {}
local function runs(phase) return o.phase == phase or (o.phase == "all" and (phase ~= "history" or o.component)) end

-- Phase 1: forensics, into a JSON report.
if runs("forensics") then
  local paths = o.paths or {table.unpack(critical)}
  if not o.paths then paths[#paths + 1] = wo.DEFAULTS.state end
  local f = git.forensics(base, paths, o.since, o["until"])
  local globs = {}
  for _, g in ipairs(o.logs or {"logs/*.log", "logs/*.err"}) do globs[#globs + 1] = L.at(g) end
  local patterns = o.patterns or {"exit 127", "command not found", "No such file"}
  for _, p in ipairs(paths) do patterns[#patterns + 1] = p end
  local logs = git.grepLogs(globs, patterns)
  local report = {
    investigation_date = wo.iso(), base = base,
    time_window = {since = o.since or baton.json.null, ["until"] = o["until"] or baton.json.null},
    paths = paths,
    findings = {
      git_events = baton.json.array(f.git_events), path_history = f.path_history, deletions = baton.json.array(f.deletions),
      destructive_commits = baton.json.array(f.destructive), log_matches = baton.json.array(logs),
      likely_cause = git.likelyCause(f, logs), note = f.note,
    },
    recommendation = "rebuild",
  }
  local path = ("%s/forensic_wo_pipeline_%s.json"):format(L.reports, os.date("!%Y%m%dT%H%M%SZ", math.floor(baton.now())))
  if not dry then baton.fs.write(path, baton.json.encode(report, {pretty = true}) .. "\n") end
  print(("FORENSICS: %d commits in the window, %d deletions, %d log matches; likely cause: %s")
    :format(#f.git_events, #f.deletions, #logs, report.findings.likely_cause))
  print((dry and "REPORT (dry run, not written): " or "REPORT: ") .. path)
  result.forensics = {report = path, likely_cause = report.findings.likely_cause}
end

-- Phase 2: apply the inbox.
if runs("rebuild") then
  local s, n = wo.rebuild(L, dry)
  if dry then
    print(("REBUILD (dry run): %d work orders: %d would be applied, %d already done, %d invalid"):format(n, #s.would_apply, #s.skipped, #s.invalid))
  else
    print(("REBUILD: %d work orders: %d completed, %d already done, %d failed"):format(n, #s.completed, #s.skipped, #s.failed))
  end
  result.rebuild = {completed = baton.json.array(s.completed), skipped = baton.json.array(s.skipped), failed = baton.json.array(s.failed)}
  if dry then result.rebuild.would_apply, result.rebuild.invalid = baton.json.array(s.would_apply), baton.json.array(s.invalid) end
  for _, f in ipairs(s.failed) do problems[#problems + 1] = "work order " .. f.wo_id .. " failed: " .. f.reason end
end

-- The canary: the seed's canary work order through the whole pipeline.
if runs("canary") and dry then
  print("CANARY (dry run): would drop WO-CANARY-" .. baton.run.id .. "-TEST into " .. L.inbox .. " and process it")
elseif runs("canary") then
  local id = "WO-CANARY-" .. baton.run.id .. "-TEST"
  local file = L.inbox .. "/" .. id .. ".yaml"
  baton.fs.write(file, wo.canary(id))
  local status, why = wo.process(L, file)
  local tele = baton.fs.exists(L.telemetry) and baton.fs.read(L.telemetry) or ""
  local proofs = {
    {"the canary file", baton.fs.exists(base .. "/tmp/canary_test.txt")},
    {"its state file", (wo.readState(L, id) or {}).status == "completed"},
    {"wo_started telemetry", tele:find('"event":"wo_started"[^\n]*"wo_id":"' .. id:gsub("%p", "%%%0") .. '"') ~= nil},
    {"wo_completed telemetry", tele:find('"event":"wo_completed"[^\n]*"wo_id":"' .. id:gsub("%p", "%%%0") .. '"') ~= nil},
  }
  local missing = {}
  for _, p in ipairs(proofs) do if not p[2] then missing[#missing + 1] = p[1] end end
  local ok = status == "completed" and #missing == 0
  print(("CANARY %s: %s%s"):format(id, ok and "PASS" or "FAIL", ok and "" or (" (" .. (why or ("missing: " .. table.concat(missing, ", "))) .. ")")))
  result.canary = {wo_id = id, ok = ok, missing = baton.json.array(missing)}
  if not ok then problems[#problems + 1] = "the canary failed: " .. (why or table.concat(missing, ", ")) end
end

-- Phase 3: the guardrail (a preflight that warns, then telemetry).
if runs("guardrail") then
  local checks = {}
  for _, f in ipairs(critical) do checks[#checks + 1] = {path = base .. "/" .. f, executable = true, name = f} end
  for _, d in ipairs(dirs) do checks[#checks + 1] = {path = base .. "/" .. d, dir = true, name = d} end
  local report = preflight{name = "wo-guardrail", policy = "warn", checks = checks}
  local drift = {}
  for i, c in ipairs(report.checks) do
    if not c.ok then
      local item = i <= #critical and critical[i] or dirs[i - #critical]
      drift[#drift + 1] = item
      if not dry then wo.emit(L, "wo_pipeline_drift", {agent = "guardrail", ok = false, missing = item, detail = c.detail}) end
      baton.log("wo_pipeline_drift: " .. item .. " " .. c.detail, {level = "warn", missing = item, detail = c.detail})
      print(("DRIFT: %s (%s)"):format(item, c.detail))
    end
  end
  if #drift == 0 then
    if not dry then wo.emit(L, "wo_pipeline_healthy", {agent = "guardrail", ok = true, files = #critical, dirs = #dirs}) end
    baton.log("wo_pipeline_healthy", {files = #critical, dirs = #dirs})
    print(("GUARDRAIL: healthy (%d files, %d dirs)"):format(#critical, #dirs))
  else
    problems[#problems + 1] = ("guardrail: %d item%s missing: %s"):format(#drift, #drift == 1 and "" or "s", table.concat(drift, ", "))
  end
  result.guardrail = {healthy = #drift == 0, drift = baton.json.array(drift)}
end

-- Phase 4: history-aware diagnosis.
if runs("history") then
  if not git.isRepo(base) then args.fail("phase=history: " .. base .. " is not in a git repository", 3) end
  local h = git.history(base, o.component)
  print("HISTORY: " .. h.answer)
  result.history = h
end

persistFinal(result)
if #problems > 0 and not dry then args.fail(table.concat(problems, "; "), 1) end
if #problems > 0 then print("DRY RUN: would fail: " .. table.concat(problems, "; ")) end
return result
