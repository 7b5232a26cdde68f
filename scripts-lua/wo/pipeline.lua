-- wo.pipeline: the WO pipeline's layout, telemetry and state files, and the rebuild loop.
local workorder = require("wo.workorder")

local M = {}

M.DEFAULTS = {
  inbox = "bridge/inbox/CLC", state = "g/followup/state", telemetry = "g/telemetry/unified.jsonl",
  reports = "g/reports",
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
    abs = function(p) return workorder.absolute(p:sub(1, 1) == "/" and p or (abs .. "/" .. p:sub(#base + 2))) end,
    unconfined = o.unconfined == true, allowUnverified = o.allow_unverified == true,
    opts = {base = abs, allow = allow, home = home, units = absolute(o.units or "~/.config/systemd/user"),
            logs = abs .. "/logs"},
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

-- The read-only view the steps run under: bwrap (Debian: bubblewrap), probed once per run.
local sandboxCache
function M.sandbox()
  if not sandboxCache then
    local _, found = baton.sh("command -v bwrap", {allowFail = true, readOnly = true})
    if not found then
      sandboxCache = {ok = false, why = "bwrap is not installed (Debian package bubblewrap; scripts/deps installs it)"}
    else
      local out, ok, code, err = baton.sh({"bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--",
                                           "true"},
        {allowFail = true, readOnly = true, timeout = 30})
      local first = ((err or "") .. (out or "")):match("[^\n]+")
      sandboxCache = ok and {ok = true}
          or {ok = false,
              why = ("bwrap cannot set up its sandbox here (exit %s: %s)"):format(
                  tostring(code),
                  first or "no message")}
    end
  end
  return sandboxCache
end

--- What runs a step: under bwrap, the file system read-only except base, the allow-list
--- and a private TMPDIR; or, with unconfined=1, as is. Returns run(cmd) and a cleanup.
local function stepRunner(L)
  local base = L.base
  if L.unconfined then return nil, function() end end
  local tmp = baton.sh({"mktemp", "-d", "-t", "baton-wo-step.XXXXXX"}):gsub("%s+$", "")
  local argv = {"bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", L.opts.base, L.opts.base}
  for _, a in ipairs(L.opts.allow) do
    for _, x in ipairs({"--bind-try", a, a}) do argv[#argv + 1] = x end
  end
  for _, x in ipairs({"--bind", tmp, tmp, "--setenv", "TMPDIR", tmp, "--die-with-parent", "--chdir", L.opts.base, "--",
                      "sh", "-c"}) do
    argv[#argv + 1] = x
  end
  local function run(cmd)
    local full = {table.unpack(argv)}
    full[#full + 1] = cmd
    return baton.sh(full, {cwd = base, allowFail = true, timeout = 120})
  end
  return run, function() baton.sh({"rm", "-rf", "--", tmp}, {allowFail = true}) end
end

local function printSteps(kind, results)
  for _, r in ipairs(results or {}) do
    print(("  %s %s: %s%s"):format(kind, r.name, r.status, r.reason and (" (" .. r.reason .. ")") or ""))
  end
end

--- What is there before the first write (a rollback removes whatever the order or its steps
--- created), the snapshot of what it replaces, and, with steps, a copy of base's files (not
--- the allow-list's: there the service manager keeps its own state, undone through systemctl),
--- so what the steps change can be put back.
local function snapshot(L, wo, hasSteps, details)
  local roots = {L.opts.base}
  for _, a in ipairs(L.opts.allow) do roots[#roots + 1] = a end
  local skip = {L.abs(L.state), L.abs(L.telemetry):match("^(.*)/[^/]*$"), L.abs(L.reports), L.abs(L.inbox),
                L.opts.base .. "/backups", L.opts.base .. "/.git"}
  local treeBefore = workorder.tree(roots, skip)
  local stamp = os.date("!%Y%m%dT%H%M%SZ", math.floor(baton.now()))
  local manifest = workorder.backup(wo, ("%s/backups/%s/%s"):format(L.base, wo.id, stamp))
  details.backup = manifest.dir
  if hasSteps then
    local baseTree = {}
    for p, v in pairs(treeBefore) do if workorder.within(p, L.opts.base) then baseTree[p] = v end end
    manifest.copy, manifest.copy_why = workorder.copyTree(baseTree, manifest.dir .. "/base.tar")
  end
  baton.log(("work order %s: snapshot of %d file(s) before writing: %s"):format(wo.id, #manifest.files, manifest.dir),
    {wo_id = wo.id, backup = manifest.dir})
  return {manifest = manifest, treeBefore = treeBefore, roots = roots, skip = skip}
end

--- After the write: the generated units verified, then post_verify, then the tests.
--- Returns ok, why (the first failure).
local function verify(L, wo, file, hasSteps, details)
  local ok, why = true, nil
  if #wo.units > 0 then
    local paths, names = {}, {}
    for i, u in ipairs(wo.units) do paths[i] = u.path; names[i] = u.name end
    local vok, out = launchd.verify(paths)
    details.units = baton.json.array(wo.units)
    details.units_verified = vok == nil and ("not verified: " .. out) or (vok and "systemd-analyze verify: ok" or out)
    print(("  units: %s (%s)"):format(table.concat(names, ", "),
      vok == false and "systemd-analyze verify FAILED" or details.units_verified))
    if vok == false then return nil, ("%s: systemd-analyze verify failed: %s"):format(file, out) end
  end
  local run, cleanup
  if hasSteps then
    run, cleanup = stepRunner(L)
    if L.unconfined then print("  post_verify and tests: unconfined (unconfined=1): not under a read-only view") end
  end
  local pok, results = workorder.steps(L.base, wo.post_verify, M.services(), run)
  details.post_verify = baton.json.array(results)
  printSteps("post_verify", results)
  if not pok then
    for _, r in ipairs(results) do
      if r.status == "FAIL" then
        why = ("post_verify '%s' failed: %s"):format(r.name, r.reason)
        break
      end
    end
    ok = nil
  end
  if ok then
    ok, why, results = workorder.test(L.base, wo, M.services(), run)
    details.tests = baton.json.array(results or {})
    printSteps("test", results)
  end
  if cleanup then cleanup() end
  return ok, why
end

--- The checks that were skipped (skipped checks are not passes): their reasons and names.
local function skippedChecks(details)
  local skipped, names = {}, {}
  for _, kind in ipairs({"post_verify", "tests"}) do
    for _, r in ipairs(details[kind] or {}) do
      if r.status == "SKIPPED" then
        skipped[#skipped + 1] = ("%s '%s': %s"):format(kind == "tests" and "test" or kind, r.name, r.reason)
        names[#names + 1] = ("%s '%s'"):format(kind == "tests" and "test" or kind, r.name)
      end
    end
  end
  if details.units_verified and details.units_verified:match("^not verified") then
    skipped[#skipped + 1] = "units " .. details.units_verified
    names[#names + 1] = "units verification"
  end
  return skipped, names
end

local function fileList(wo)
  local files = {}
  for _, f in ipairs(wo.files) do
    files[#files + 1] = {path = f.path, mode = ("%04o"):format(f.mode), bytes = #f.content}
  end
  return files
end

--- Stops the units a work order's steps started (rollback). Returns their names.
local function stopStartedUnits(details)
  if not M.services().available then return {} end
  local units = {}
  for _, kind in ipairs({"post_verify", "tests"}) do
    for _, r in ipairs(details[kind] or {}) do
      for _, u in ipairs(r.starts or {}) do if r.status ~= "SKIPPED" then units[#units + 1] = u end end
    end
  end
  if #units > 0 then
    local cmd = {"systemctl", "--user", "disable", "--now"}
    for _, u in ipairs(units) do cmd[#cmd + 1] = u end
    local out, sok, _, err = baton.sh(cmd, {allowFail = true, timeout = 60})
    if not sok then
      baton.log("rollback: systemctl --user disable --now: " .. ((err or "") .. (out or "")):gsub("%s+$", ""),
                {level = "warn"})
    end
  end
  return units
end

--- Undoes everything: the units its steps started, its files, what its steps created, the
--- directories; what its steps changed or deleted is put back from the copy of base.
local function rollback(L, wo, file, started, why, details, snap)
  local manifest = snap.manifest
  local stopped = stopStartedUnits(details)
  local rb = workorder.rollback(manifest)
  local gone, goneDirs, changed = workorder.undoNew(snap.treeBefore, workorder.tree(snap.roots, snap.skip))
  for _, dir in ipairs(goneDirs) do rb.removed_dirs[#rb.removed_dirs + 1] = dir end
  workorder.removeCreatedDirs(manifest, rb)
  if #stopped > 0 then baton.sh({"systemctl", "--user", "daemon-reload"}, {allowFail = true, timeout = 60}) end
  local replaced = {}
  for _, f in ipairs(wo.files) do replaced[f.full] = true end
  local fromCopy, notRestored = {}, {}
  for _, c in ipairs(changed) do
    if not replaced[c] then
      if manifest.copy and workorder.within(c, L.opts.base) then
        fromCopy[#fromCopy + 1] = c
      else
        notRestored[#notRestored + 1] = c
      end
    end
  end
  local back = manifest.copy and workorder.restoreFromCopy(manifest.copy, fromCopy) or {}
  local backSet = {}
  for _, p in ipairs(back) do backSet[p] = true end
  for _, p in ipairs(fromCopy) do if not backSet[p] then notRestored[#notRestored + 1] = p end end
  table.sort(notRestored)
  rb.units_stopped, rb.removed_created = stopped, gone
  rb.changed_not_restored, rb.restored_from_copy = notRestored, back
  details.rolled_back = rb
  if #back > 0 then print(("  rollback: %d file%s its steps changed or deleted put back from the copy of base")
    :format(#back, #back == 1 and "" or "s")) end
  if #notRestored > 0 then
    print("  rollback: changed by its steps and not restorable (" .. (manifest.copy_why or "outside base") .. "): "
      .. table.concat(notRestored, ", "))
  end
  writeState(L, {wo_id = wo.id, title = wo.title, status = "rolled_back", file = file, started_at = started,
    failed_at = M.iso(), reason = why, backup = manifest.dir,
    restored = baton.json.array(rb.restored), removed = baton.json.array(rb.removed),
    removed_dirs = baton.json.array(rb.removed_dirs), removed_created = baton.json.array(gone),
    units_stopped = baton.json.array(stopped), changed_not_restored = baton.json.array(notRestored),
    restored_from_copy = baton.json.array(back),
    units_verified = details.units_verified, post_verify = details.post_verify, test_results = details.tests})
  M.emit(L, "wo_failed", {wo_id = wo.id, file = file, reason = why, rolled_back = true, restored = #rb.restored,
    removed = #rb.removed, units_stopped = #stopped, removed_dirs = #rb.removed_dirs, removed_created = #gone})
  baton.log(("work order %s failed and was rolled back: %s (restored %d, removed %d)")
    :format(wo.id, why, #rb.restored, #rb.removed),
    {level = "error", wo_id = wo.id, reason = why, restored = rb.restored, removed = rb.removed})
  return "rolled_back", why, wo.id, details
end

--- Applied and verified: its state (completed, or unverified when checks were skipped and
--- allow_unverified=1 does not allow it) written and announced.
local function finish(L, wo, file, started, details, skipped, names)
  local files = fileList(wo)
  details.files = files
  local unverified = #skipped > 0
  local plural = #skipped == 1 and "" or "s"
  if unverified and not L.allowUnverified then
    local why = ("%d check%s skipped: %s (the reasons are in its state file's `skipped`)")
      :format(#skipped, plural, table.concat(names, ", "))
    writeState(L, {wo_id = wo.id, title = wo.title, type = wo.type, status = "unverified", file = file, reason = why,
      skipped = baton.json.array(skipped), started_at = started, applied_at = M.iso(), files = files,
      backup = details.backup, units = details.units, units_verified = details.units_verified,
      post_verify = details.post_verify, test_results = details.tests})
    M.emit(L, "wo_unverified", {wo_id = wo.id, files = #wo.files, skipped = #skipped, reason = why})
    baton.log(("work order %s applied but UNVERIFIED: %s"):format(wo.id, why),
              {level = "warn", wo_id = wo.id, skipped = skipped})
    return "unverified", why, wo.id, details
  end
  writeState(L, {wo_id = wo.id, title = wo.title, type = wo.type, status = "completed", file = file,
    started_at = started, completed_at = M.iso(), files = files, tests = #wo.tests, backup = details.backup,
    units = details.units, units_verified = details.units_verified, post_verify = details.post_verify,
    test_results = details.tests,
    unverified_allowed = unverified or nil, skipped = unverified and baton.json.array(skipped) or nil})
  M.emit(L, "wo_completed",
         {wo_id = wo.id, files = #wo.files, tests = #wo.tests, unverified_allowed = unverified or nil})
  baton.log("work order " .. wo.id .. " completed", {wo_id = wo.id, files = #wo.files})
  return "completed", unverified
    and ("unverified: %d check%s skipped; allowed by allow_unverified=1"):format(#skipped, plural) or nil,
    wo.id, details
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
      baton.log(("work order %s already completed at %s; not applied again")
        :format(wo.id, tostring(prior.completed_at)), {wo_id = wo.id, file = file, skipped = true})
      return "skipped", "already completed", wo.id
    end
    if dry then
      local units = #wo.units > 0 and (", " .. #wo.units .. " unit" .. (#wo.units == 1 and "" or "s")) or ""
      return "would_apply", ("%d file%s%s; would record state %s and telemetry wo_started, wo_completed"):format(
        #wo.files, #wo.files == 1 and "" or "s", units, M.statePath(L, wo.id)), wo.id
    end
    M.emit(L, "wo_started", {wo_id = wo.id, title = wo.title, file = file})
    local ok
    ok, why = workorder.contained(L.base, wo, L.opts.allow)
    local hasSteps = #wo.post_verify + #wo.tests > 0
    if ok and hasSteps and not L.unconfined then
      -- The steps may write only in base and the allow-list; without that view they do not run.
      local sb = M.sandbox()
      if not sb.ok then
        ok, why = nil, ("%s: its post_verify and tests must run under a read-only view of the file system outside "
          .. "base and the allow-list, and that cannot be set up: %s; nothing was written; pass unconfined=1 to run "
          .. "them without it"):format(file, sb.why)
      end
    end
    local snap
    if ok then
      snap = snapshot(L, wo, hasSteps, details)
      ok, why = workorder.apply(L.base, wo)
    end
    if ok then ok, why = verify(L, wo, file, hasSteps, details) end
    if ok then return finish(L, wo, file, started, details, skippedChecks(details)) end
    if snap then return rollback(L, wo, file, started, why, details, snap) end
  end
  local id = wo and wo.id or knownID or stem
  if dry then return "invalid", why, id end
  local prior = M.readState(L, id)
  if not (prior and prior.status == "completed") then -- never overwrite a completed work order's state
    writeState(L, {wo_id = id, title = wo and wo.title, status = "failed", file = file, started_at = started,
                   failed_at = M.iso(), reason = why})
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
  local summary = {completed = {}, skipped = {}, failed = {}, would_apply = {}, invalid = {}, rolled_back = {},
                   unverified = {}, details = {}}
  for _, f in ipairs(files) do
    local status, why, id, details = M.process(L, f, dry)
    local list = status == "rolled_back" and summary.failed or summary[status]
    local item = (status == "failed" or status == "invalid" or status == "rolled_back" or status == "unverified")
        and {wo_id = id, file = f, reason = why} or id
    if status == "rolled_back" then
      item.rolled_back = true
      summary.rolled_back[#summary.rolled_back + 1] = id
    end
    list[#list + 1] = item
    if details then
      summary.details[#summary.details + 1] = {wo_id = id, status = status, reason = why, details = details}
    end
    print(("WO %s: %s%s"):format(id, status:upper():gsub("_", " "),
                                 why and status ~= "skipped" and (" (" .. why .. ")") or ""))
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
    if d.status == "completed" or d.status == "unverified" then
      any = true
      add("### " .. d.wo_id .. (d.status == "unverified" and " (UNVERIFIED)" or ""))
      for _, f in ipairs(d.details.files or {}) do
        add(("- `%s` (mode %s, %d bytes)"):format(f.path, f.mode, f.bytes))
      end
      for _, u in ipairs(d.details.units or {}) do
        add(("- systemd user unit `%s` (from `%s`)"):format(u.name, u.from))
      end
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
        add(("- %s `%s`: %s%s"):format(kind == "tests" and "test" or "post_verify", r.name, r.status,
                                       r.reason and (" (" .. r.reason .. ")") or ""))
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
  for _, u in ipairs(s.unverified) do
    issues = issues + 1
    add(("- %s is UNVERIFIED: %s"):format(u.wo_id, u.reason))
  end
  for _, d in ipairs(s.details) do
    for _, kind in ipairs({"post_verify", "tests"}) do
      for _, r in ipairs(d.details[kind] or {}) do
        if r.status == "SKIPPED" then
          issues = issues + 1
          add(("- %s: `%s` skipped: %s"):format(d.wo_id, r.name, r.reason))
        end
      end
    end
  end
  if issues == 0 then add("- none") end
  add("")
  add("## Rollback procedure")
  add("")
  local steps = 0
  for _, d in ipairs(s.details) do
    if d.status == "completed" or d.status == "unverified" then
      for _, u in ipairs(d.details.units or {}) do
        if u.name:match("%.timer$") or not u.name:match("%.service$") then
          steps = steps + 1; add(("%d. `systemctl --user disable --now %s`"):format(steps, u.name))
        end
      end
      if d.details.backup then
        steps = steps + 1
        add(("%d. Restore %s from its snapshot: every file in `%s/manifest.json` with `existed: true` is copied "
          .. "back from its `backup`; the others are removed (`rm`)."):format(steps, d.wo_id, d.details.backup))
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
