-- gap09.pipeline: the parts of the GAP-09 orchestrator that are not the state
-- machine itself: session ids, prompts, calling the agent, the verifier's verdict,
-- the StageResult / PipelineResult records (GAP-09 spec v1.2, section 3.C) and the
-- one-line-per-stage report.
local kit = require("kit.args")
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

--- A pipeline run: new{task, risk, agent, cwd, timeout, dry}.
function M.new(o)
  local base = baton.run and baton.run.id or tostring(math.floor(baton.now()))
  local p = setmetatable({
    task = o.task, risk = o.risk, agent = o.agent, cwd = o.cwd, timeout = o.timeout, dry = o.dry,
    started = baton.now(), stages = {}, outputs = {}, verifyIterations = 0, executed = {},
    sessions = {}, say = o.say or print,
  }, Pipeline)
  for i = 1, 4 do p.sessions[i] = ("gap09-%s-s%d"):format(base, i) end
  return p
end

function Pipeline:line(stage, status, note)
  if self.dry and status == "PASS" then status = "WOULD RUN" end
  self.say(("STAGE %d %s: %s%s"):format(M.NUMBER[stage], stage:upper(), status, note and (" " .. note) or ""))
end

function Pipeline:skip(stage)
  local now = iso(baton.now())
  self.stages[#self.stages + 1] = {stage = stage, status = "skip", started_at = now, ended_at = now}
  self:line(stage, "SKIP")
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

--- Runs the agent for a stage: `AGENT STAGE SESSION_ID` in cwd, the prompt on stdin.
--- Returns the stage result (never raises for a failed agent; see failureKind).
function Pipeline:call(stage, prompt, iteration)
  local slot = M.SESSION_SLOT[stage]
  local function run()
    local session = self.sessions[slot]
    local cmd = (self.agent or "<agent>") .. " " .. shquote(stage) .. " " .. shquote(session)
    local t0 = baton.now()
    local r = runStage{
      id = stage, cmd = cmd, cwd = self.cwd, stdin = prompt, timeout = self.timeout, grace = 2,
      env = {GAP09_STAGE = stage, GAP09_SESSION_ID = session, GAP09_RISK = self.risk}, allowFail = true,
    }
    return r, session, t0
  end
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
    session_id = session, output = r.stdout or "", iteration = iteration or 0,
    tokens_estimated = M.tokens(prompt, r.stdout),
  }
  if not r.ok then
    rec.error = r.message or lastLine(r.stderr) or ("exit " .. tostring(r.exit))
    if r.status == "timed_out" then rec.error = ("timed out after %ss"):format(self.timeout) end
  end
  self.stages[#self.stages + 1] = rec
  self.executed[stage] = true
  if r.ok then self.outputs[stage] = r.stdout end
  return r, rec
end

--- Preflight checks for `preflight{}` from shell commands ("ruff check ."): a command
--- whose program is not installed fails with "<tool> not installed - required tool
--- missing" (GAP-09 failure matrix); any other non-zero exit fails with its last line.
function M.preflightChecks(commands, cwd, timeout)
  local checks = {}
  for _, c in ipairs(commands) do
    local tool = c:match("^%s*([^%s;&|]+)")
    checks[#checks + 1] = {name = c, check = function()
      local _, found = baton.sh("command -v " .. shquote(tool), {allowFail = true, cwd = cwd})
      if not found then return false, tool .. " not installed - required tool missing" end
      local out, ok, exit, err = baton.sh(c, {cwd = cwd, allowFail = true, timeout = timeout})
      if ok then return true, "PASS" end
      local detail = lastLine(err) or lastLine(out)
      return false, ("FAIL (exit %s)%s"):format(tostring(exit), detail and (": " .. detail) or "")
    end}
  end
  return checks
end

--- GAP-09's PipelineResult.
function Pipeline:result(status)
  local tokens, executed = 0, 0
  for _, s in ipairs(self.stages) do tokens = tokens + (s.tokens_estimated or 0) end
  for _, name in ipairs(M.STAGES) do if self.executed[name] then executed = executed + 1 end end
  return {
    version = M.VERSION, task = self.task, risk = self.risk, status = status,
    stages = baton.json.array(self.stages),
    sessions = {
      discovery_planning = self.sessions[1], execution = self.sessions[2],
      verification = self.sessions[3], ship = self.sessions[4],
    },
    metrics = {
      total_time_seconds = math.floor((baton.now() - self.started) * 1000 + 0.5) / 1000,
      total_tokens_estimated = tokens,
      verification_iterations = self.verifyIterations,
      stages_executed = executed,
      stages_skipped = #M.STAGES - executed,
    },
  }
end

--- Records the result in final.json and prints the summary lines.
function Pipeline:finish(status, why)
  local res = self:result(status)
  persistFinal(res)
  self.say("")
  self.say("RESULT: " .. (status == "success" and "SUCCESS" or "FAILURE") .. (why and (" (" .. why .. ")") or ""))
  self.say(("TIME: %ss"):format(math.floor(res.metrics.total_time_seconds + 0.5)))
  self.say(("TOKENS: ~%d"):format(res.metrics.total_tokens_estimated))
  return res
end

--- Ends the run as failed: the result is recorded, then the exit code is chosen.
function Pipeline:fail(code, message)
  self:finish("failure", message)
  kit.fail(message, code)
end

return M
