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

--- A layout: every place under base (absolute overrides are kept).
function M.layout(base, o)
  local function at(p) return p:sub(1, 1) == "/" and p or (base .. "/" .. p) end
  return {
    base = base, inbox = at(o.inbox or M.DEFAULTS.inbox), state = at(o.state or M.DEFAULTS.state),
    telemetry = at(o.telemetry or M.DEFAULTS.telemetry), reports = at(o.reports or M.DEFAULTS.reports), at = at,
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

--- Processes one inbox file. Returns "completed", "skipped" or "failed", the reason and
--- the id. With `dry`, only validates: "would_apply" / "skipped" / "invalid", nothing written.
function M.process(L, file, dry)
  local stem = file:match("([^/]+)%.ya?ml$") or file
  local started = M.iso()
  local wo, why, knownID = workorder.load(file)
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
    ok, why = workorder.contained(L.base, wo)
    if ok then ok, why = workorder.apply(L.base, wo) end
    if ok then ok, why = workorder.test(L.base, wo) end
    if ok then
      local files = {}
      for _, f in ipairs(wo.files) do files[#files + 1] = {path = f.path, mode = ("%04o"):format(f.mode), bytes = #f.content} end
      writeState(L, {wo_id = wo.id, title = wo.title, type = wo.type, status = "completed", file = file,
        started_at = started, completed_at = M.iso(), files = files, tests = #wo.tests})
      M.emit(L, "wo_completed", {wo_id = wo.id, files = #wo.files, tests = #wo.tests})
      baton.log("work order " .. wo.id .. " completed", {wo_id = wo.id, files = #wo.files})
      return "completed", nil, wo.id
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
  local summary = {completed = {}, skipped = {}, failed = {}, would_apply = {}, invalid = {}}
  for _, f in ipairs(files) do
    local status, why, id = M.process(L, f, dry)
    local list = summary[status]
    list[#list + 1] = (status == "failed" or status == "invalid") and {wo_id = id, file = f, reason = why} or id
    print(("WO %s: %s%s"):format(id, status:upper():gsub("_", " "), why and status ~= "skipped" and (" (" .. why .. ")") or ""))
  end
  return summary, #files
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
