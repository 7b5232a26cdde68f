-- gap09.pipeline: the parts of the GAP-09 orchestrator that are not the state
-- machine itself: session ids, prompts, calling the agent, the verifier's verdict,
-- the StageResult / PipelineResult records (GAP-09 spec v1.2, section 3.C) and the
-- one-line-per-stage report.
local kit = require("kit.args")
local worktree = require("gap09.worktree")
local shquote = kit.shquote

local M = {}

M.VERSION = "1.0.0"
M.STAGES = {"discovery", "planning", "execution", "verification", "ship"}
M.NUMBER = {discovery = 1, planning = 2, execution = 3, verification = 4, ship = 5}
-- GAP-09 data flow: discovery and planning share a session, execution has its own,
-- verification a separate one (verifier independence), ship (docs) its own.
M.SESSION_SLOT = {discovery = 1, planning = 1, execution = 2, verification = 3, ship = 4}
M.MAX_VERIFY = 2

local function iso(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(t))
end
M.iso = iso

function M.tokens(...)
  local n = 0
  for i = 1, select("#", ...) do n = n + #(select(i, ...) or "") end
  return math.ceil(n / 4)
end

--- The token usage an agent reported: the last stdout line that is a JSON object with
--- `usage` ({total_tokens} or {input_tokens, output_tokens}, also prompt_/completion_tokens)
--- or a numeric `tokens`. nil when it reported none.
function M.reportedTokens(stdout)
  local found
  for line in (stdout or ""):gmatch("[^\n]+") do
    if line:match("^%s*{") then
      local ok, v = pcall(baton.json.decode, line)
      if ok and type(v) == "table" then
        local u = type(v.usage) == "table" and v.usage or nil
        local n
        if u then
          n = tonumber(u.total_tokens) or ((tonumber(u.input_tokens or u.prompt_tokens) or 0)
            + (tonumber(u.output_tokens or u.completion_tokens) or 0))
        elseif tonumber(v.tokens) then
          n = tonumber(v.tokens)
        end
        if n then found = math.floor(n) end
      end
    end
  end
  return found
end

-- Documentation files: what a ship (docs) stage writes.
M.DOC_PATTERNS = {"%.md$", "%.rst$", "%.adoc$", "^docs?/", "/docs?/", "README[^/]*$", "CHANGELOG[^/]*$",
                  "CHANGES[^/]*$"}

function M.isDoc(path)
  for _, pat in ipairs(M.DOC_PATTERNS) do if path:find(pat) then return true end end
  return false
end

--- Whether ship must run: true, or false and the reason it is skipped.
--- `changed` is the list of files the pipeline changed (nil: unknown), `verdict` the
--- verifier's last verdict (it may say "docs_affected": false).
function M.shipNeeded(changed, verdict)
  if verdict and verdict.docs_affected == false then
    return false, "the verifier says no documentation is affected"
  end
  if changed == nil then return true end
  if #changed == 0 then return false, "no files changed: no documentation is affected" end
  local code = {}
  for _, f in ipairs(changed) do if not M.isDoc(f) then code[#code + 1] = f end end
  if #code == 0 then
    return false, "the change is documentation only (" .. table.concat(changed, ", ") .. "): nothing more to document"
  end
  return true
end

--- The verifier's verdict: the last JSON object with a boolean "approved" in its output.
function M.verdict(text)
  text = text or ""
  local ok, v = pcall(baton.json.decode, text)
  if ok and type(v) == "table" and type(v.approved) == "boolean" then return v end
  local stop = #text
  while true do
    local close = nil
    for i = stop, 1, -1 do if text:sub(i, i) == "}" then close = i; break end end
    if not close then return nil end
    for open = close, 1, -1 do
      if text:sub(open, open) == "{" then
        local ok2, w = pcall(baton.json.decode, text:sub(open, close))
        if ok2 and type(w) == "table" and type(w.approved) == "boolean" then return w end
      end
    end
    stop = close - 1
  end
end

--- Issues as a list of strings.
function M.issues(v)
  local out = {}
  local is = v and v.issues
  if type(is) == "string" then is = {is} end
  if type(is) == "table" then
    for _, x in ipairs(is) do
      out[#out + 1] = type(x) == "string" and x or baton.json.encode(x)
    end
  end
  return out
end

local PROMPTS = {
  discovery = "You are in Stage 1 DISCOVERY of a GAP-09 pipeline.\n" ..
    "Investigate the repository for this task: what exists, what must change, the risks.\n",
  planning = "You are in Stage 2 PLANNING of a GAP-09 pipeline.\n" ..
    "Write a step-by-step implementation plan (files to create/modify, tests, gates).\n",
  execution = "You are in Stage 3 EXECUTION of a GAP-09 pipeline.\n" ..
    "Implement the task in the working directory.\n",
  verification = "You are in Stage 4 VERIFICATION of a GAP-09 pipeline, in a session of your own.\n" ..
    "Verify the work against the task. Do not fix anything. Answer with one JSON object:\n" ..
    '{"approved": true|false, "issues": ["..."]}\n',
  ship = "You are in Stage 5 SHIP of a GAP-09 pipeline.\n" ..
    "Document the change (changelog, docs). Do not change code.\n",
}

--- The prompt for a stage: its instructions, the task, and what earlier stages said.
function M.prompt(stage, p, extra)
  local parts = {PROMPTS[stage], "\nTASK: " .. p.task .. "\nRISK: " .. p.risk:upper() .. "\n"}
  local function add(title, text)
    if text and text ~= "" then parts[#parts + 1] = "\n## " .. title .. "\n" .. text .. "\n" end
  end
  if stage == "planning" then add("Discovery", p.outputs.discovery) end
  if stage == "execution" then add("Plan", p.outputs.planning) end
  if stage == "verification" then add("Execution report", p.outputs.execution) end
  if stage == "ship" then add("Execution report", p.outputs.execution) end
  if extra then add(extra.title, extra.text) end
  return table.concat(parts)
end

local Pipeline = {}
Pipeline.__index = Pipeline

--- A pipeline run: new{task, risk, agents, cwd, timeout, dry, plan_only, say}.
--- `agents` maps each stage to {agent = CMD, models = {...}} (see gap09.agents);
--- `plan_only` (the recipe's own --dry-run) records the plan and calls no agent.
function M.new(o)
  local base = baton.run and baton.run.id or tostring(math.floor(baton.now()))
  local p = setmetatable({
    task = o.task, risk = o.risk, agents = o.agents or {}, cwd = o.cwd, timeout = o.timeout, dry = o.dry,
    planOnly = o.plan_only, started = baton.now(), stages = {}, outputs = {}, verifyIterations = 0, executed = {},
    sessions = {}, say = o.say or print, plan = {}, changed = {}, changedKnown = false,
  }, Pipeline)
  for i = 1, 4 do p.sessions[i] = ("gap09-%s-s%d"):format(base, i) end
  return p
end

function Pipeline:line(stage, status, note)
  if (self.dry or self.planOnly) and status == "PASS" then status = "WOULD RUN" end
  self.say(("STAGE %d %s: %s%s"):format(M.NUMBER[stage], stage:upper(), status, note and (" " .. note) or ""))
end

function Pipeline:skip(stage, reason)
  local now = iso(baton.now())
  self.stages[#self.stages + 1] = {stage = stage, status = "skip", started_at = now, ended_at = now, reason = reason}
  self:line(stage, "SKIP", reason and ("(" .. reason .. ")"))
end

--- The agent command for a stage and model: `AGENT STAGE SESSION_ID`, `{model}` in the
--- agent's text replaced by the model.
function Pipeline:command(stage, session, model)
  local agent = (self.agents[stage] or {}).agent or "<agent>"
  if agent:find("{model}", 1, true) then agent = agent:gsub("{model}", (shquote(model or ""):gsub("%%", "%%%%"))) end
  return agent .. " " .. shquote(stage) .. " " .. shquote(session)
end

local function mentions(r, pattern)
  local text = ((r.stderr or "") .. "\n" .. (r.stdout or "")):lower()
  return text:find(pattern) ~= nil
end

--- Why an agent call failed: "model", "session", "timeout" or "stage".
function M.failureKind(r)
  if r.status == "timed_out" then return "timeout" end
  if mentions(r, "session[^\n]-not found") or mentions(r, "invalid session") then return "session" end
  if mentions(r, "model[^\n]-not found") or mentions(r, "model[^\n]-not available")
     or mentions(r, "unknown model") then return "model" end
  return "stage"
end

local function lastLine(s)
  local last
  for l in (s or ""):gmatch("[^\n]+") do if l:match("%S") then last = l end end
  return last
end

--- Runs the agent for a stage: `AGENT STAGE SESSION_ID` in cwd, the prompt on stdin,
--- GAP09_MODEL in its environment. With several models for the stage (dual discovery),
--- one call per model, in order; their outputs are joined. Returns the stage result and
--- its StageResult (never raises for a failed agent; see failureKind).
-- `inputs`: the stage's declared inputs (runStage's field): their content is part of its fingerprint.
function Pipeline:call(stage, prompt, iteration, extraEnv, inputs)
  local cfg = self.agents[stage] or {}
  local models = cfg.models or {}
  if #models == 0 then models = {false} end
  local outputs, r, rec = {}, nil, nil
  for i, model in ipairs(models) do
    r, rec = self:callOne(stage, prompt, iteration, model or nil, #models > 1 and i or nil, extraEnv, inputs)
    if not r.ok then return r, rec end
    outputs[#outputs + 1] = #models > 1 and ("### " .. tostring(model) .. "\n" .. (r.stdout or "")) or (r.stdout or "")
  end
  if #models > 1 then self.outputs[stage] = table.concat(outputs, "\n") end
  return r, rec
end

function Pipeline:callOne(stage, prompt, iteration, model, part, extraEnv, inputs)
  local slot = M.SESSION_SLOT[stage]
  local agent = (self.agents[stage] or {}).agent
  local id = part and (stage .. "-" .. part) or stage
  local function run()
    local session = self.sessions[slot]
    local cmd = self:command(stage, session, model)
    local t0 = baton.now()
    if self.planOnly then
      self.plan[#self.plan + 1] = ("stage %s: %s%s"):format(id, cmd, model and (" (model " .. model .. ")") or "")
      return {ok = true, dry = true, stdout = "", stderr = ""}, session, t0
    end
    local env = {GAP09_STAGE = stage, GAP09_SESSION_ID = session, GAP09_RISK = self.risk}
    if model then env.GAP09_MODEL = model end
    for k, v in pairs(extraEnv or {}) do env[k] = v end
    -- Cancelled during this call: the result says so (no Lua code runs after a cancel).
    self:armCancel({stage = stage, status = "cancelled", started_at = iso(t0), session_id = session,
      model = model or baton.json.null, agent = agent or baton.json.null, iteration = iteration or 0,
      error = "the run was cancelled during this stage"})
    local r = runStage{id = id, cmd = cmd, cwd = self.cwd, stdin = prompt, timeout = self.timeout, grace = 2,
      env = env, allowFail = true, inputs = inputs}
    if r.dry then
      self.plan[#self.plan + 1] = ("stage %s: %s%s"):format(id, cmd, model and (" (model " .. model .. ")") or "")
    end
    return r, session, t0
  end
  local dry = self.dry or self.planOnly
  local before = not dry and worktree.fingerprint(self.cwd) or nil
  local r, session, t0 = run()
  if not r.ok and M.failureKind(r) == "session" then
    -- GAP-09 failure matrix: an invalid session id starts a new session, with a warning.
    local old = self.sessions[slot]
    self.sessions[slot] = ("%s-r%d"):format(old:gsub("%-r%d+$", ""), (tonumber(old:match("%-r(%d+)$")) or 0) + 1)
    baton.log(("stage %s: session %s not found; starting a new session %s"):format(stage, old, self.sessions[slot]),
      {level = "warn", stage = stage, old_session = old, new_session = self.sessions[slot]})
    r, session, t0 = run()
  end
  local rec = {
    stage = stage, status = r.ok and "pass" or "fail", started_at = iso(t0), ended_at = iso(baton.now()),
    session_id = session, model = model or baton.json.null, agent = agent or baton.json.null,
    output = r.stdout or "", iteration = iteration or 0,
  }
  if part then rec.part = part end
  if dry then
    -- An honest dry run: nothing ran, so nothing passed and no token was spent.
    rec.status, rec.tokens, rec.tokens_source = "planned", 0, "none"
  else
    local reported = M.reportedTokens(r.stdout)
    if reported then
      rec.tokens, rec.tokens_source, rec.tokens_reported = reported, "reported", reported
    else
      rec.tokens, rec.tokens_source = M.tokens(prompt, r.stdout), "estimated"
      rec.tokens_estimated = rec.tokens
    end
    rec.changed_files = baton.json.array(worktree.changed(before, (worktree.fingerprint(self.cwd))))
    for _, f in ipairs(rec.changed_files) do self.changed[f] = true end
  end
  if not r.ok then
    rec.error = r.message or lastLine(r.stderr) or ("exit " .. tostring(r.exit))
    if r.status == "timed_out" then rec.error = ("timed out after %ss"):format(self.timeout) end
  end
  self.stages[#self.stages + 1] = rec
  self.executed[stage] = true
  if r.ok then self.outputs[stage] = r.stdout end
  if not dry then self:armCancel() end
  return r, rec
end

--- What final.json's result (and, with `json`, stdout) says if the run is cancelled from
--- now on: this PipelineResult with status "cancelled", `current` the stage in progress.
function Pipeline:armCancel(current)
  if self.dry or self.planOnly then return end
  if current then self.stages[#self.stages + 1] = current end
  persistFinal({}, {cancelled = self:result("cancelled"), stdout = self.json == true})
  if current then table.remove(self.stages) end
end

--- Files changed by the pipeline's stages so far, sorted.
function Pipeline:changedFiles()
  local out = {}
  for f in pairs(self.changed) do out[#out + 1] = f end
  table.sort(out)
  return out
end

local function tailLines(text, n)
  local all = {}
  for l in (text or ""):gmatch("[^\n]+") do if l:match("%S") then all[#all + 1] = l end end
  local out = {}
  for i = math.max(1, #all - n + 1), #all do out[#out + 1] = all[i] end
  return out
end
M.tailLines = tailLines

--- The step report after a stage (GAP-09 section 7): session, model, changed files,
--- tokens; for verification the pre-flight gates (PASS/FAIL with their last lines of
--- output), the verdict and the re-verify count. Printed and journaled.
function Pipeline:report(rec, extra)
  extra = extra or {}
  local out = {}
  local function add(s) out[#out + 1] = "  " .. s end
  add(("STEP %d STATUS: %s"):format(M.NUMBER[rec.stage] or 0,
                                    (rec.status == "pass" and "PASS") or (rec.status == "fail" and "FAIL")
    or tostring(rec.status):upper()))
  add(("session: %s  model: %s"):format(rec.session_id or "-",
                                        rec.model ~= baton.json.null and rec.model or "(agent default)"))
  if extra.checks then
    add("pre-flight gates:")
    for _, c in ipairs(extra.checks) do
      add(("  - %s: %s"):format(c.name,
                                c.ok and "PASS"
                                    or (c.detail:match("^FAIL") and c.detail or ("FAIL (" .. c.detail .. ")"))))
      for _, l in ipairs(c.tail or {}) do add("      | " .. l) end
    end
  end
  if rec.changed_files then
    add("changed files: " .. (#rec.changed_files > 0 and table.concat(rec.changed_files, ", ") or "none"))
  end
  if extra.verdict ~= nil then
    add("verification: " .. (extra.verdict and "PASS" or "FAIL") .. (extra.issues and #extra.issues > 0
      and (" (issues: " .. table.concat(extra.issues, "; ") .. ")") or ""))
    add(("re-verify count: %d/%d"):format(rec.iteration or 0, self.maxVerify or M.MAX_VERIFY))
  end
  if rec.tokens_source == "reported" then
    add(("tokens: %d (reported by the agent)"):format(rec.tokens))
  elseif rec.tokens_source == "estimated" then
    add(("tokens: ~%d (estimated: the agent reported none)"):format(rec.tokens))
  else
    add("tokens: 0 (nothing ran)")
  end
  if extra.next then
    add("Next:")
    add("- " .. extra.next)
  end
  for _, l in ipairs(out) do self.say(l) end
  if extra.checks then rec.checks = baton.json.array(extra.checks) end
  baton.log(("step report: %s %s"):format(rec.stage, rec.status), {stage = rec.stage, status = rec.status,
    changed_files = rec.changed_files, tokens = rec.tokens, tokens_source = rec.tokens_source, model = rec.model,
    checks = extra.checks and baton.json.array(extra.checks) or nil, iteration = rec.iteration})
end

--- Preflight checks for `preflight{}` from shell commands ("ruff check ."): a command
--- whose program is not installed fails with "<tool> not installed - required tool
--- missing" (GAP-09 failure matrix); any other non-zero exit fails with its last line.
--- Each check's outcome, with its last `tail` lines of output, is added to `sink`.
function M.preflightChecks(commands, cwd, timeout, sink, tail)
  local checks = {}
  sink = sink or {}
  for _, c in ipairs(commands) do
    local tool = c:match("^%s*([^%s;&|]+)")
    checks[#checks + 1] = {name = c, check = function()
      local function done(ok, detail, text)
        sink[#sink + 1] = {name = c, ok = ok, detail = detail, tail = baton.json.array(tailLines(text, tail or 5))}
        return ok, detail
      end
      local _, found = baton.sh("command -v " .. shquote(tool), {allowFail = true, cwd = cwd, readOnly = true})
      if not found then return done(false, tool .. " not installed - required tool missing", "") end
      local out, ok, exit, err = baton.sh("(" .. c .. ") 2>&1", {cwd = cwd, allowFail = true, timeout = timeout})
      if ok then return done(true, "PASS", out) end
      local detail = lastLine(err) or lastLine(out)
      return done(false, ("FAIL (exit %s)%s"):format(tostring(exit), detail and (": " .. detail) or ""),
                  (out or "") .. "\n" .. (err or ""))
    end}
  end
  return checks
end

--- GAP-09's PipelineResult.
function Pipeline:result(status)
  local tokens, estimated, reported, executed = 0, 0, 0, 0
  for _, s in ipairs(self.stages) do
    tokens = tokens + (s.tokens or 0)
    estimated = estimated + (s.tokens_estimated or 0)
    reported = reported + (s.tokens_reported or 0)
  end
  for _, name in ipairs(M.STAGES) do if self.executed[name] then executed = executed + 1 end end
  local dry = self.dry or self.planOnly
  local r = {
    version = M.VERSION, task = self.task, risk = self.risk, status = dry and "dry_run" or status,
    stages = baton.json.array(self.stages),
    sessions = {
      discovery_planning = self.sessions[1], execution = self.sessions[2],
      verification = self.sessions[3], ship = self.sessions[4],
    },
    metrics = {
      total_time_seconds = math.floor((baton.now() - self.started) * 1000 + 0.5) / 1000,
      total_tokens = tokens,
      total_tokens_estimated = estimated,
      total_tokens_reported = reported,
      verification_iterations = self.verifyIterations,
      stages_executed = dry and 0 or executed,
      stages_planned = dry and executed or 0,
      stages_skipped = #M.STAGES - executed,
    },
  }
  if dry then r.dry_run = true; r.plan = baton.json.array(self.plan) end
  if self.reverted then r.reverted = self.reverted end
  if self.startStage then r.start_stage = self.startStage end
  if self.single then r.single_stage = self.single end
  return r
end

--- Records the result in final.json and prints the summary lines (and, with `json`,
--- the PipelineResult itself on stdout).
function Pipeline:finish(status, why)
  local res = self:result(status)
  persistFinal(res)
  local dry = self.dry or self.planOnly
  if dry then
    self.say("")
    self.say("PLAN (dry run: nothing ran, no tokens spent):")
    for i, l in ipairs(self.plan) do self.say(("  %d. %s"):format(i, l)) end
  end
  self.say("")
  self.say("RESULT: " .. (dry and "DRY RUN" or status == "success" and "SUCCESS" or "FAILURE")
           .. (why and (" (" .. why .. ")") or ""))
  self.say(("TIME: %ss"):format(math.floor(res.metrics.total_time_seconds + 0.5)))
  local m = res.metrics
  if dry then self.say("TOKENS: 0 (dry run)")
  elseif m.total_tokens_reported > 0 and m.total_tokens_estimated > 0 then
    self.say(("TOKENS: %d (%d reported, ~%d estimated)"):format(m.total_tokens, m.total_tokens_reported,
                                                                m.total_tokens_estimated))
  elseif m.total_tokens_reported > 0 then self.say(("TOKENS: %d (reported)"):format(m.total_tokens))
  else self.say(("TOKENS: ~%d (estimated)"):format(m.total_tokens)) end
  if self.json then io.stdout:write(baton.json.encode(res, {pretty = true}), "\n") end
  return res
end

--- Ends the run as failed: the result is recorded, then the exit code is chosen.
function Pipeline:fail(code, message)
  self:finish("failure", message)
  kit.fail(message, code)
end

return M
