-- The work-order pipeline rebuild (four phases from the WO durability plan): forensics,
-- rebuild (work orders from the inbox, applied atomically), a canary, a guardrail and a
-- history-aware diagnosis. See docs/recipes/wo_rebuild.md.
local args = require("kit.args")
local wo = require("wo.pipeline")
local git = require("wo.git")

local USAGE = [[
usage: baton run [--json] recipes/wo_rebuild.lua base=DIR
         phase=forensics|rebuild|canary|guardrail|schedule|heartbeats|history|all
         [critical=P,P...] [dirs=P,P...] [component=P] [hours=N] [since=T] [until=T]
         [paths=P,P...] [logs=GLOB,GLOB...] [patterns=TEXT,TEXT...] [rollback=GLOB,GLOB...]
         [allow=DIR,DIR...] [units=DIR] [strict=1] [interval=S] [inbox=DIR] [state=DIR]
         [telemetry=FILE] [reports=DIR] [allow_unverified=1] [unconfined=1]

  base=       the tree the pipeline lives in (paths below are relative to it)
  phase=      forensics  git history of `paths` in [since, until] and log matches -> reports/forensic_wo_pipeline_*.json
              rebuild    apply every work order in the inbox (once): snapshot to backups/, write,
                         LaunchAgents as systemd user units, post_verify, tests, roll back on failure;
                         then a deployment report with the rollback plan
              canary     drop a canary work order and prove the pipeline end to end
              guardrail  one guardrail run (the seed's): alerts to logs/guardrail_alerts.log, telemetry,
                         a heartbeat; exit 0 (strict=1: exit 1 on drift)
              schedule   write the guardrail's systemd user timer (every interval= s, default 300) and
                         cron line, verify them, enable the timer where systemctl --user works
              heartbeats count the guardrail's heartbeats in the last hours= (288 a day at 300 s)
              history    the component's state (present, removed, exists but broken, never existed),
                         its last 10 commits, rollback scripts and logs that name it
              all        forensics, rebuild, canary, guardrail (and history when component= is given)
  critical=   critical files (default: the seed's four processors)
  dirs=       critical directories (default: g/followup/state, bridge/inbox/CLC, bridge/inbox/ENTRY)
  component=  the path history= asks about
  hours=      the window of forensics and history: the last N hours (default: 24, the seed's)
  since= until=  the forensics window instead, as git understands it ("2025-11-13 01:50")
  rollback=   rollback scripts and logs to grep (default: tools/rollback_*.zsh,logs/rollback_*.log)
  allow=      directories outside base that work orders may write (default: none)
  units=      where LaunchAgents become systemd user units (default: ~/.config/systemd/user)
  allow_unverified=1  a work order whose checks were skipped (no user service manager, a launchctl
              step with no systemd equivalent) counts as completed (default: UNVERIFIED, exit 6)
  unconfined=1  run post_verify and tests without the read-only view (bwrap) where it cannot be set up
              (default: such work orders are refused before they write anything)
  strict=1    guardrail: exit 1 when something is missing (the seed's guardrail exits 0)
  interval=   seconds between guardrail runs for schedule and heartbeats (default: 300)
  paths=      paths forensics follows (default: critical files and the state directory)
  logs=       log files forensics greps (default: logs/*.log,logs/*.err)
  patterns=   what it greps for, besides the paths (default: exit 127,command not found,No such file)
  inbox= state= telemetry= reports=   the layout (defaults: bridge/inbox/CLC, g/followup/state,
              g/telemetry/unified.jsonl, g/reports)

exit codes: 0 done, 1 a work order failed / the canary failed / drift found with strict=1 /
heartbeat alerts, 3 bad options, 6 a work order is UNVERIFIED (its checks were skipped)]]

local o = args.parse({
  usage = USAGE,
  options = {
    base = {required = true},
    phase = {required = true,
             choices = {"forensics", "rebuild", "canary", "guardrail", "schedule", "heartbeats", "history", "all"}},
    critical = {list = true}, dirs = {list = true}, component = {}, since = {}, ["until"] = {},
    paths = {list = true}, logs = {list = true}, patterns = {list = true, sep = ","},
    inbox = {}, state = {}, telemetry = {}, reports = {}, hours = {number = true, min = 0.001, default = "24"},
    rollback = {list = true}, allow = {list = true}, units = {}, strict = {flag = true},
    interval = {number = true, min = 1, default = "300"},
    allow_unverified = {flag = true}, unconfined = {flag = true},
  },
})
if o.help then return end
local base = o.base:gsub("/+$", "")
if not baton.fs.exists(base .. "/.") then args.fail("base=" .. o.base .. ": not a directory", 3) end
if o.phase == "history" and not o.component then args.fail("phase=history needs component=PATH", 3) end
local absBase = baton.sh({"realpath", "--", base}, {readOnly = true}):gsub("%s+$", "")
local L = wo.layout(base, o, absBase)
local critical = o.critical or wo.DEFAULTS.critical
local dirs = o.dirs or wo.DEFAULTS.dirs
local dry = baton.run.dry_run -- a dry run reads and checks, and writes nothing
local result, problems, unverified = {phase = o.phase, base = base, dry_run = dry}, {}, {}
local function runs(phase)
  if o.phase == phase then return true end
  if o.phase ~= "all" or phase == "schedule" or phase == "heartbeats" then return false end
  return phase ~= "history" or o.component ~= nil
end

-- The window: since=/until=, or the last hours= hours (the seed's default, 24).
local since, till = o.since, o["until"]
if not since then since = os.date("%Y-%m-%d %H:%M", math.floor(baton.now() - o.hours * 3600)) end
local function windowText()
  -- As the seed writes it: "2025-11-13 01:50 - 22:43".
  local tillText = till or os.date("%Y-%m-%d %H:%M", math.floor(baton.now()))
  if since:sub(1, 11) == tillText:sub(1, 11) and #since == 16 and #tillText == 16 then tillText = tillText:sub(12) end
  return since .. " - " .. tillText
end
local rollbackGlobs = {}
for _, g in ipairs(o.rollback or {"tools/rollback_*.zsh", "logs/rollback_*.log"}) do
  rollbackGlobs[#rollbackGlobs + 1] = L.at(g)
end

-- Phase 1: forensics, into a JSON report.
if runs("forensics") then
  local paths = o.paths or {table.unpack(critical)}
  if not o.paths then paths[#paths + 1] = wo.DEFAULTS.state end
  local f = git.forensics(base, paths, since, till)
  local globs = {}
  for _, g in ipairs(o.logs or {"logs/*.log", "logs/*.err"}) do globs[#globs + 1] = L.at(g) end
  local patterns = o.patterns or {"exit 127", "command not found", "No such file"}
  for _, p in ipairs(paths) do patterns[#patterns + 1] = p end
  local logs = git.grepLogs(globs, patterns)
  -- The seed greps the rollback scripts for the components' directories
  -- ("agents/apply_patch_processor\|g/followup/state"): each path and its directory.
  local names, seen = {}, {}
  for _, p in ipairs(paths) do
    for _, n in ipairs({p, p:match("^(.*)/[^/]+$")}) do
      if n and not seen[n] then seen[n] = true; names[#names + 1] = n end
    end
  end
  local scripts = git.grepLogs(rollbackGlobs, names)
  local report = {
    investigation_date = wo.iso(), base = base,
    time_window = windowText(),
    window = {since = since, ["until"] = till or baton.json.null, hours = not o.since and o.hours or baton.json.null},
    paths = paths,
    findings = {
      git_events = baton.json.array(f.git_events), path_history = f.path_history,
      deletions = baton.json.array(f.deletions),
      destructive_commits = baton.json.array(f.destructive),
      rollback_scripts = baton.json.array(scripts),
      -- The seed's LaunchAgent logs; on Linux the services' logs (StandardOutput/StandardError of the units).
      launchagent_failures = baton.json.array(logs),
      likely_cause = git.likelyCause(f, logs, scripts), note = f.note,
    },
    recommendation = "rebuild",
  }
  local path = ("%s/forensic_wo_pipeline_%s.json"):format(L.reports,
                                                          os.date("!%Y%m%dT%H%M%SZ", math.floor(baton.now())))
  if not dry then baton.fs.write(path, baton.json.encode(report, {pretty = true}) .. "\n") end
  print(("FORENSICS (%s): %d commits in the window, %d deletions, %d rollback script lines, %d log matches; likely "
         .. "cause: %s")
    :format(report.time_window, #f.git_events, #f.deletions, #scripts, #logs, report.findings.likely_cause))
  print((dry and "REPORT (dry run, not written): " or "REPORT: ") .. path)
  result.forensics = {report = path, likely_cause = report.findings.likely_cause, time_window = report.time_window}
end

-- Phase 2: apply the inbox.
if runs("rebuild") then
  local s, n = wo.rebuild(L, dry)
  if dry then
    print(("REBUILD (dry run): %d work orders: %d would be applied, %d already done, %d invalid"):format(
        n,
        #s.would_apply,
        #s.skipped,
        #s.invalid))
  else
    print(("REBUILD: %d work orders: %d completed, %d unverified, %d already done, %d failed (%d rolled back)"):format(
        n,
        #s.completed,
      #s.unverified, #s.skipped, #s.failed, #s.rolled_back))
  end
  result.rebuild = {completed = baton.json.array(s.completed), skipped = baton.json.array(s.skipped),
                    failed = baton.json.array(s.failed),
    rolled_back = baton.json.array(s.rolled_back), unverified = baton.json.array(s.unverified)}
  if dry then
    result.rebuild.would_apply, result.rebuild.invalid = baton.json.array(s.would_apply), baton.json.array(s.invalid)
  end
  if not dry and #s.details > 0 then
    local path = ("%s/wo_pipeline_rebuild_deployment_%s.md"):format(L.reports,
                                                                    os.date("!%Y%m%dT%H%M%SZ", math.floor(baton.now())))
    baton.fs.write(path, wo.deploymentReport(L, s))
    print("DEPLOYMENT REPORT: " .. path)
    result.rebuild.deployment_report = path
  end
  for _, f in ipairs(s.failed) do problems[#problems + 1] = "work order " .. f.wo_id .. " failed: " .. f.reason end
  for _, u in ipairs(s.unverified) do
    unverified[#unverified + 1] = "work order " .. u.wo_id .. " is UNVERIFIED: " .. u.reason
  end
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
    {"wo_completed telemetry",
     tele:find('"event":"wo_completed"[^\n]*"wo_id":"' .. id:gsub("%p", "%%%0") .. '"') ~= nil},
  }
  local missing = {}
  for _, p in ipairs(proofs) do if not p[2] then missing[#missing + 1] = p[1] end end
  local ok = status == "completed" and #missing == 0
  print(("CANARY %s: %s%s"):format(id, ok and "PASS" or "FAIL",
                                   ok and "" or (" (" .. (why or ("missing: " .. table.concat(missing, ", "))) .. ")")))
  result.canary = {wo_id = id, ok = ok, missing = baton.json.array(missing)}
  if not ok then problems[#problems + 1] = "the canary failed: " .. (why or table.concat(missing, ", ")) end
end

-- Phase 3: the guardrail, as the seed's tools/wo_pipeline_guardrail.zsh: a preflight that
-- warns, an alert line per missing item in logs/guardrail_alerts.log, telemetry, and a
-- heartbeat every run. Exit 0 (the seed's), or 1 on drift with strict=1.
if runs("guardrail") then
  local checks = {}
  for _, f in ipairs(critical) do checks[#checks + 1] = {path = base .. "/" .. f, executable = true, name = f} end
  for _, d in ipairs(dirs) do checks[#checks + 1] = {path = base .. "/" .. d, dir = true, name = d} end
  local report = preflight{name = "wo-guardrail", policy = "warn", checks = checks}
  local drift = {}
  local alerts = base .. "/logs/guardrail_alerts.log"
  for i, c in ipairs(report.checks) do
    if not c.ok then
      local isFile = i <= #critical
      local item = isFile and critical[i] or dirs[i - #critical]
      drift[#drift + 1] = item
      if not dry then
        baton.fs.mkdir(base .. "/logs")
        baton.fs.append(alerts,
                        ("[%s] ALERT: %s: %s\n"):format(wo.iso(),
                                                        isFile and "Missing or not executable" or "Missing directory",
                                                        item))
        wo.emit(L, "wo_pipeline_drift", {agent = "guardrail", ok = false, missing = item, detail = c.detail})
      end
      baton.log("wo_pipeline_drift: " .. item .. " " .. c.detail, {level = "warn", missing = item, detail = c.detail})
      print(("DRIFT: %s (%s)"):format(item, c.detail))
    end
  end
  if #drift == 0 then
    if not dry then
      wo.emit(L, "wo_pipeline_healthy", {agent = "guardrail", ok = true, files = #critical, dirs = #dirs})
    end
    baton.log("wo_pipeline_healthy", {files = #critical, dirs = #dirs})
    print(("GUARDRAIL: healthy (%d files, %d dirs)"):format(#critical, #dirs))
  else
    if dry then
      print(("GUARDRAIL (dry run): %d alert%s would be recorded in %s (nothing written)"):format(
          #drift,
          #drift == 1 and "" or "s",
          alerts))
    else
      print(("GUARDRAIL: %d alert%s recorded in %s"):format(#drift, #drift == 1 and "" or "s", alerts))
    end
    if o.strict then
      problems[#problems + 1] = ("guardrail: %d item%s missing: %s"):format(
          #drift,
          #drift == 1 and "" or "s",
          table.concat(drift, ", "))
    end
  end
  -- One heartbeat per run, healthy or not: 288 a day at the 5-minute schedule.
  if not dry then
    wo.emit(L, "guardrail_heartbeat", {agent = "guardrail", ok = #drift == 0, drift = #drift, baton_run = baton.run.id})
  end
  baton.log("heartbeat: guardrail ran", {heartbeat = "guardrail", drift = #drift})
  result.guardrail = {healthy = #drift == 0, drift = baton.json.array(drift), alerts = alerts,
                      strict = o.strict == true}
end

-- The guardrail's schedule: systemd user units (service + timer) and a cron line.
if runs("schedule") then
  local exe = baton.sh("readlink /proc/$PPID/exe", {readOnly = true}):gsub("%s+$", "")
  local recipe = baton.sh({"realpath", "--", arg[0]}, {readOnly = true}):gsub("%s+$", "")
  local sched = require("wo.schedule")
  local r = sched.write{baton = exe, recipe = recipe, base = absBase, units = L.opts.units, reports = L.reports,
    interval = o.interval, critical = o.critical, dirs = o.dirs, dry = dry}
  result.schedule = r
  if r.verified == false then
    problems[#problems + 1] = "schedule: systemd-analyze verify failed: " .. r.verify_output
  end
end

-- The heartbeats of the guardrail in the last hours=: judged by their spread, not their
-- count. A stretch longer than twice the period without one (from the window's start, between
-- two, up to now) and a repeated timestamp are alerts.
if runs("heartbeats") then
  local now = baton.now()
  local since_t = now - o.hours * 3600
  local times = {}
  local tele = baton.fs.exists(L.telemetry) and baton.fs.read(L.telemetry) or ""
  for line in tele:gmatch("[^\n]+") do
    if line:find('"event":"guardrail_heartbeat"', 1, true) then
      local okj, e = pcall(baton.json.decode, line)
      if okj and type(e) == "table" and type(e.ts) == "string" then
        local y, mo, d, h, mi, se = e.ts:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z$")
        if y then
          -- os.time reads the fields as local time; correct by the UTC offset at that moment.
          local t = os.time{year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
                            min = tonumber(mi), sec = tonumber(se)}
          local off = os.time(os.date("*t", t)) - os.time(os.date("!*t", t))
          if t + off >= since_t then times[#times + 1] = t + off end
        end
      end
    end
  end
  table.sort(times)
  local n, limit = #times, 2 * o.interval
  local expected = math.floor(o.hours * 3600 / o.interval)
  local alerts = {}
  local function at(t) return wo.iso(t) end
  if n == 0 then
    alerts[#alerts + 1] = ("no heartbeat in the last %sh"):format(o.hours)
  else
    if times[1] - since_t > limit then
      alerts[#alerts + 1] = ("no heartbeat for %ds (from the window's start %s to the first at %s; more than 2 x %ss)")
        :format(math.floor(times[1] - since_t), at(since_t), at(times[1]), o.interval)
    end
    local i = 2
    while i <= n do
      local gap = times[i] - times[i - 1]
      if gap == 0 then
        local j = i
        while j + 1 <= n and times[j + 1] == times[i] do j = j + 1 end
        alerts[#alerts + 1] = ("repeated timestamp %s (%d heartbeats)"):format(at(times[i]), j - i + 2)
        i = j + 1
      else
        if gap > limit then
          alerts[#alerts + 1] = ("no heartbeat for %ds (%s to %s; more than 2 x %ss)"):format(
              math.floor(gap),
              at(times[i - 1]),
              at(times[i]),
              o.interval)
        end
        i = i + 1
      end
    end
    if now - times[n] > limit then
      alerts[#alerts + 1] = ("no heartbeat for %ds (since the last at %s; more than 2 x %ss)"):format(
          math.floor(now - times[n]),
          at(times[n]),
          o.interval)
    end
  end
  local ok = #alerts == 0
  print(("HEARTBEATS: %d in the last %sh (expected %d, one every %ss): %s"):format(n, o.hours, expected, o.interval,
    ok and "OK" or (#alerts .. " alert" .. (#alerts == 1 and "" or "s"))))
  for _, a in ipairs(alerts) do
    print("  ALERT: " .. a)
    baton.log("heartbeat alert: " .. a, {level = "warn", heartbeat = "guardrail"})
  end
  result.heartbeats = {count = n, expected = expected, hours = o.hours, interval = o.interval, ok = ok,
                       alerts = baton.json.array(alerts)}
  if not ok then
    problems[#problems + 1] = ("heartbeats: %d alert%s in the last %sh: %s"):format(
        #alerts,
        #alerts == 1 and "" or "s",
        o.hours,
        alerts[1])
  end
end

-- Phase 4: history-aware diagnosis.
if runs("history") then
  if not git.isRepo(base) then args.fail("phase=history: " .. base .. " is not in a git repository", 3) end
  local h = git.history(base, o.component,
                        {hours = o.hours, rollback = rollbackGlobs, logs = {L.at("logs/*.log"), L.at("logs/*.err")}})
  print("HISTORY: " .. h.answer)
  result.history = h
end

persistFinal(result)
if #problems > 0 and not dry then args.fail(table.concat(problems, "; "), 1) end
if #unverified > 0 and not dry then
  args.fail(table.concat(unverified, "; ")
            .. " (pass allow_unverified=1 to accept work orders whose checks were skipped)",
            6)
end
if #problems > 0 then print("DRY RUN: would fail: " .. table.concat(problems, "; ")) end
return result
