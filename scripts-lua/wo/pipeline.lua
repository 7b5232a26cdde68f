-- wo.pipeline: the WO pipeline's layout, telemetry and state files, and the rebuild loop.
local workorder = require("wo.workorder")

local M = {}

M.DEFAULTS = {
  inbox = "bridge/inbox/CLC", state = "g/followup/state", telemetry = "g/telemetry/unified.jsonl", reports = "g/reports",
  critical = {
    "agents/apply_patch_processor/apply_patch_processor.zsh", "agents/json_wo_processor/json_wo_processor.zsh",
    "agents/wo_executor/wo_executor.zsh", "tools/followup_tracker_update.zsh",
  },
  dirs = {"g/followup/state", "bridge/inbox/CLC", "bridge/inbox/ENTRY"},
}

function M.iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t or baton.now())) end

--- A layout: every place under base (absolute overrides are kept). `opts` for the work
--- orders: absolute base, allow-list, home, units directory, logs.
function M.layout(base, o, abs)
  local function at(p) return p:sub(1, 1) == "/" and p or (base .. "/" .. p) end
  local home = baton.env("HOME") or "/"
  local function absolute(p)
    if p:sub(1, 2) == "~/" then return workorder.absolute(home .. "/" .. p:sub(3)) end
    return workorder.absolute(p:sub(1, 1) == "/" and p or (abs .. "/" .. p))
  end
  local allow = {}
  for _, a in ipairs(o.allow or {}) do allow[#allow + 1] = absolute(a) end
  return {
    base = base, inbox = at(o.inbox or M.DEFAULTS.inbox), state = at(o.state or M.DEFAULTS.state),
    telemetry = at(o.telemetry or M.DEFAULTS.telemetry), reports = at(o.reports or M.DEFAULTS.reports), at = at,
    opts = {base = abs, allow = allow, home = home, units = absolute(o.units or "~/.config/systemd/user"), logs = abs .. "/logs"},
  }
end

--- One telemetry line (JSONL, appended under a lock).
function M.emit(L, event, fields)
  local e = {ts = M.iso(), agent = fields and fields.agent or "wo_pipeline", event = event}
  for k, v in pairs(fields or {}) do if k ~= "agent" then e[k] = v end end
  baton.fs.mkdir(L.telemetry:match("^(.*)/[^/]*$") or ".")
  baton.fs.append(L.telemetry, baton.json.encode(e) .. "\n")
  return e
end

function M.statePath(L, id) return L.state .. "/" .. id .. ".json" end

function M.readState(L, id)
  local p = M.statePath(L, id)
  if not baton.fs.exists(p) then return nil end
  local ok, v = pcall(baton.json.decode, baton.fs.read(p))
  return ok and v or nil
end

local function writeState(L, s)
  baton.fs.mkdir(L.state)
  baton.fs.write(M.statePath(L, s.wo_id), baton.json.encode(s, {pretty = true}) .. "\n")
end

local launchd = require("wo.launchd")

-- Whether systemctl --user works, asked once per run.
local svcCache
function M.services()
  if not svcCache then
    local ok, why = launchd.userManager()
    svcCache = {available = ok, why = why}
  end
  return svcCache
end

local function printSteps(kind, results)
  for _, r in ipairs(results or {}) do
    print(("  %s %s: %s%s"):format(kind, r.name, r.status, r.reason and (" (" .. r.reason .. ")") or ""))
  end
end

--- Processes one inbox file. Returns "completed", "skipped", "failed" or "rolled_back",
--- the reason, the id and the details. With `dry`, only validates: "would_apply" /
--- "skipped" / "invalid", nothing written.
--- Order: validate every path (allow-list), snapshot what will be replaced into
--- backups/<wo_id>/<time>/, write, verify generated units, post_verify, tests; when
--- anything after the first write fails, the snapshot is restored (state rolled_back).
function M.process(L, file, dry)
  local stem = file:match("([^/]+)%.ya?ml$") or file
  local started = M.iso()
  local wo, why, knownID = workorder.load(file, L.opts)
  local details = {}
  if wo then
    local prior = M.readState(L, wo.id)
    if prior and prior.status == "completed" then
      baton.log(("work order %s already completed at %s; not applied again"):format(wo.id, tostring(prior.completed_at)),
        {wo_id = wo.id, file = file, skipped = true})
      return "skipped", "already completed", wo.id
    end
    if dry then return "would_apply", nil, wo.id end
    M.emit(L, "wo_started", {wo_id = wo.id, title = wo.title, file = file})
    local ok
    ok, why = workorder.contained(L.base, wo, L.opts.allow)
    local manifest
    if ok then
      manifest = workorder.backup(wo, ("%s/backups/%s/%s"):format(L.base, wo.id, os.date("!%Y%m%dT%H%M%SZ", math.floor(baton.now()))))
      details.backup = manifest.dir
      baton.log(("work order %s: snapshot of %d file(s) before writing: %s"):format(wo.id, #manifest.files, manifest.dir),
        {wo_id = wo.id, backup = manifest.dir})
      ok, why = workorder.apply(L.base, wo)
    end
    if ok and #wo.units > 0 then
      local paths = {}
      for _, u in ipairs(wo.units) do paths[#paths + 1] = u.path end
      local vok, out = launchd.verify(paths)
      details.units = baton.json.array(wo.units)
      details.units_verified = vok == nil and ("not verified: " .. out) or (vok and "systemd-analyze verify: ok" or out)
      print(("  units: %s (%s)"):format(table.concat((function() local t = {} for i, u in ipairs(wo.units) do t[i] = u.name end return t end)(), ", "),
        vok == false and "systemd-analyze verify FAILED" or details.units_verified))
      if vok == false then ok, why = nil, ("%s: systemd-analyze verify failed: %s"):format(file, out) end
    end
    if ok then
      local pok, results = workorder.steps(L.base, wo.post_verify, M.services())
      details.post_verify = baton.json.array(results)
      printSteps("post_verify", results)
      if not pok then
        for _, r in ipairs(results) do if r.status == "FAIL" then why = ("post_verify '%s' failed: %s"):format(r.name, r.reason); break end end
        ok = nil
      end
    end
    if ok then
      local results
      ok, why, results = workorder.test(L.base, wo, M.services())
      details.tests = baton.json.array(results or {})
      printSteps("test", results)
    end
    if ok then
      local files = {}
      for _, f in ipairs(wo.files) do files[#files + 1] = {path = f.path, mode = ("%04o"):format(f.mode), bytes = #f.content} end
      writeState(L, {wo_id = wo.id, title = wo.title, type = wo.type, status = "completed", file = file,
        started_at = started, completed_at = M.iso(), files = files, tests = #wo.tests, backup = details.backup,
        units = details.units, units_verified = details.units_verified, post_verify = details.post_verify, test_results = details.tests})
      M.emit(L, "wo_completed", {wo_id = wo.id, files = #wo.files, tests = #wo.tests})
      baton.log("work order " .. wo.id .. " completed", {wo_id = wo.id, files = #wo.files})
      details.files = files
      return "completed", nil, wo.id, details
    end
    if manifest then
      local rb = workorder.rollback(manifest)
      details.rolled_back = rb
      writeState(L, {wo_id = wo.id, title = wo.title, status = "rolled_back", file = file, started_at = started,
        failed_at = M.iso(), reason = why, backup = manifest.dir,
        restored = baton.json.array(rb.restored), removed = baton.json.array(rb.removed),
        units_verified = details.units_verified, post_verify = details.post_verify, test_results = details.tests})
      M.emit(L, "wo_failed", {wo_id = wo.id, file = file, reason = why, rolled_back = true, restored = #rb.restored, removed = #rb.removed})
      baton.log(("work order %s failed and was rolled back: %s (restored %d, removed %d)"):format(wo.id, why, #rb.restored, #rb.removed),
        {level = "error", wo_id = wo.id, reason = why, restored = rb.restored, removed = rb.removed})
      return "rolled_back", why, wo.id, details
    end
  end
  local id = wo and wo.id or knownID or stem
  if dry then return "invalid", why, id end
  local prior = M.readState(L, id)
  if not (prior and prior.status == "completed") then -- never overwrite a completed work order's state
    writeState(L, {wo_id = id, title = wo and wo.title, status = "failed", file = file, started_at = started, failed_at = M.iso(), reason = why})
  end
  M.emit(L, "wo_failed", {wo_id = id, file = file, reason = why})
  baton.log("work order " .. id .. " failed: " .. why, {level = "error", wo_id = id, file = file, reason = why})
  return "failed", why, id
end

--- Every *.yaml / *.yml in the inbox, in name order.
function M.rebuild(L, dry)
  local files = baton.fs.glob(L.inbox .. "/*.yaml")
  for _, f in ipairs(baton.fs.glob(L.inbox .. "/*.yml")) do files[#files + 1] = f end
  table.sort(files)
  local summary = {completed = {}, skipped = {}, failed = {}, would_apply = {}, invalid = {}, rolled_back = {}, details = {}}
  for _, f in ipairs(files) do
    local status, why, id, details = M.process(L, f, dry)
    local list = status == "rolled_back" and summary.failed or summary[status]
    local item = (status == "failed" or status == "invalid" or status == "rolled_back") and {wo_id = id, file = f, reason = why} or id
    if status == "rolled_back" then
      item.rolled_back = true
      summary.rolled_back[#summary.rolled_back + 1] = id
    end
    list[#list + 1] = item
    if details then summary.details[#summary.details + 1] = {wo_id = id, status = status, reason = why, details = details} end
    print(("WO %s: %s%s"):format(id, status:upper():gsub("_", " "), why and status ~= "skipped" and (" (" .. why .. ")") or ""))
  end
  return summary, #files
end

--- The deployment report (seed Task 2.4): what was installed, the verification results,
--- known issues and the rollback procedure. Returns its text.
function M.deploymentReport(L, s)
  local out = {"# WO pipeline rebuild: deployment report", "",
    "- deployed: " .. M.iso(), "- base: " .. L.base, "- baton run: " .. tostring(baton.run.id), ""}
  local function add(l) out[#out + 1] = l end
  add("## Components installed")
  add("")
  local any = false
  for _, d in ipairs(s.details) do
    if d.status == "completed" then
      any = true
      add("### " .. d.wo_id)
      for _, f in ipairs(d.details.files or {}) do add(("- `%s` (mode %s, %d bytes)"):format(f.path, f.mode, f.bytes)) end
      for _, u in ipairs(d.details.units or {}) do add(("- systemd user unit `%s` (from `%s`)"):format(u.name, u.from)) end
    end
  end
  if not any then add("- none") end
  add("")
  add("## Verification results")
  add("")
  for _, d in ipairs(s.details) do
    add("### " .. d.wo_id .. ": " .. d.status:gsub("_", " "))
    if d.details.units_verified then add("- units: " .. d.details.units_verified) end
    for _, kind in ipairs({"post_verify", "tests"}) do
      for _, r in ipairs(d.details[kind] or {}) do
        add(("- %s `%s`: %s%s"):format(kind == "tests" and "test" or "post_verify", r.name, r.status, r.reason and (" (" .. r.reason .. ")") or ""))
      end
    end
  end
  add("")
  add("## Known issues")
  add("")
  local issues = 0
  for _, f in ipairs(s.failed) do
    issues = issues + 1
    add(("- %s %s: %s"):format(f.wo_id, f.rolled_back and "failed and was rolled back" or "failed", f.reason))
  end
  for _, d in ipairs(s.details) do
    for _, kind in ipairs({"post_verify", "tests"}) do
      for _, r in ipairs(d.details[kind] or {}) do
        if r.status == "SKIPPED" then issues = issues + 1; add(("- %s: `%s` skipped: %s"):format(d.wo_id, r.name, r.reason)) end
      end
    end
  end
  if issues == 0 then add("- none") end
  add("")
  add("## Rollback procedure")
  add("")
  local steps = 0
  for _, d in ipairs(s.details) do
    if d.status == "completed" then
      for _, u in ipairs(d.details.units or {}) do
        if u.name:match("%.timer$") or not u.name:match("%.service$") then
          steps = steps + 1; add(("%d. `systemctl --user disable --now %s`"):format(steps, u.name))
        end
      end
      if d.details.backup then
        steps = steps + 1
        add(("%d. Restore %s from its snapshot: every file in `%s/manifest.json` with `existed: true` is copied back from "
          .. "its `backup`; the others are removed (`rm`)."):format(steps, d.wo_id, d.details.backup))
      end
      steps = steps + 1
      add(("%d. `rm %s/%s.json` so the work order can be applied again."):format(steps, L.state, d.wo_id))
    end
  end
  if steps == 0 then add("Nothing was installed: nothing to roll back.") end
  add("")
  return table.concat(out, "\n")
end

--- The seed's canary work order, with an id of its own for this run.
function M.canary(id)
  return ([[
wo_id: %s
title: "Pipeline Health Check - Canary"
priority: P2
owner: auto-test
type: apply_patch

files:
  - path: tmp/canary_test.txt
    content: |
      Pipeline test at %s
      If you see this file and a state file, pipeline is working.
]]):format(id, M.iso())
end

return M
