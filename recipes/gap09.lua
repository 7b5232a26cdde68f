-- GAP-09 pipeline orchestrator: risk routing, discovery -> planning -> execution ->
-- fail-closed preflight -> verification (a gate of at most 2 iterations) -> ship.
-- See docs/recipes/gap09.md.
local args = require("kit.args")
local risk = require("gap09.risk")
local pipeline = require("gap09.pipeline")

local USAGE = [[
usage: baton run [--dry-run] [--json] recipes/gap09.lua TASK [risk=low|medium|high]
                 [agent=CMD] [preflight=CMD;CMD...] [cwd=DIR] [timeout=SECONDS]

  TASK          what to do (the words that are not name=value; or task=TEXT)
  risk=         override the assessed risk (low: execution onward, medium: planning
                onward, high: discovery onward)
  agent=        the agent command (default: $GAP09_AGENT), run as CMD STAGE SESSION_ID
                in cwd with the stage's prompt on stdin; its stdout is the stage's output
  preflight=    checks run fail-closed before every verification (default: ruff check .;mypy .)
  cwd=          the working directory of the agent and the checks (default: .)
  timeout=      seconds an agent call may take (default: 1800)

exit codes: 0 success, 1 stage failure, 2 verification rejected twice, 3 configuration
error, 4 preflight failure, 5 risk could not be assessed (empty task)]]

local o = args.parse({
  usage = USAGE,
  positional = "task",
  options = {
    risk = {choices = risk.levels}, agent = {}, preflight = {required = true, default = "ruff check .;mypy ."},
    cwd = {required = true, default = "."}, timeout = {number = true, min = 0.01, default = "1800"},
  },
})
if o.help then return end
local dry = baton.run.dry_run

-- INIT: assess the risk (GAP-09 failure matrix: an empty task exits 5).
local level, keywords, why = risk.assess(o.task)
if not level then args.fail(keywords, 5) end
if o.risk then level, why = o.risk, "set by risk=" end

local agent = o.agent or baton.env("GAP09_AGENT")
if agent == "" then agent = nil end
if not agent and not dry then
  args.fail("no agent configured: pass agent=CMD or set GAP09_AGENT (the agent runs as "
    .. "CMD STAGE SESSION_ID with the prompt on stdin; try --dry-run to see the plan without one)", 3)
end
if not baton.fs.exists(o.cwd .. "/.") then args.fail("cwd=" .. o.cwd .. ": not a directory", 3) end
if agent and not dry then
  local program = agent:match("^%s*(%S+)")
  local _, found = baton.sh("command -v " .. args.shquote(program), {allowFail = true, cwd = o.cwd})
  if not found then args.fail(("agent=%s: '%s' not found (check agent= or GAP09_AGENT)"):format(agent, program), 3) end
end

local p = pipeline.new{task = o.task, risk = level, agent = agent, cwd = o.cwd, timeout = o.timeout, dry = dry}
local route = risk.route[level]
print("PIPELINE: " .. o.task)
print(("RISK: %s (%s)"):format(level:upper(), why))
print(("STARTING: Stage %d%s"):format(pipeline.NUMBER[route[1]], dry and " (dry run: no agent is called)" or ""))
print("")

-- A stage that did not pass ends the pipeline: exit 3 for a model the agent does not
-- have, 1 for anything else (including a timeout).
local function mustPass(stage, r, rec, note)
  p:line(stage, r.ok and "PASS" or "FAIL", note)
  if r.ok then return end
  local kind = pipeline.failureKind(r)
  if kind == "model" then
    p:fail(3, ("stage %s: model not available: %s (check the agent's model configuration)"):format(stage, rec.error))
  end
  p:fail(1, ("stage %s failed: %s"):format(stage, rec.error))
end

local function stage(name, iteration, extra, note)
  local r, rec = p:call(name, pipeline.prompt(name, p, extra), iteration)
  mustPass(name, r, rec, note)
  return r
end

for _, name in ipairs({"discovery", "planning"}) do
  local runs = false
  for _, s in ipairs(route) do if s == name then runs = true end end
  if runs then stage(name) else p:skip(name) end
end
stage("execution")

-- The mandatory pre-verify gate: before every verification, fail-closed (exit 4).
local function preverify()
  local ok, err = pcall(preflight, {
    name = "pre-verify", policy = "fail",
    checks = pipeline.preflightChecks(args.split(o.preflight, ";"), o.cwd, o.timeout),
  })
  if not ok then
    if type(err) == "table" and err.code == 4 then p:fail(4, err.message) end
    error(err, 0)
  end
end

if dry then
  -- The gate approves without calling the verifier in a dry run: list the stage anyway.
  preverify()
  p:call("verification", pipeline.prompt("verification", p), 1)
  p:line("verification", "PASS", "(iteration 1/" .. pipeline.MAX_VERIFY .. ")")
end
local ok, err = pcall(gate, {
  name = "verification",
  maxIterations = pipeline.MAX_VERIFY,
  check = function(iteration)
    preverify()
    p.verifyIterations = iteration
    local r, rec = p:call("verification", pipeline.prompt("verification", p), iteration)
    if not r.ok then mustPass("verification", r, rec) end
    local v = pipeline.verdict(r.stdout)
    if not v then v = {approved = false, issues = {"verifier output was not a JSON object with \"approved\""}} end
    local issues = pipeline.issues(v)
    rec.status = v.approved and "pass" or "fail"
    if not v.approved then rec.error = table.concat(issues, "; ") end
    p:line("verification", v.approved and "PASS" or "FAIL",
      ("(iteration %d/%d)%s"):format(iteration, pipeline.MAX_VERIFY, v.approved and "" or (": " .. rec.error)))
    return {approved = v.approved, issues = issues}
  end,
  onReject = function(d, iteration)
    -- Rejected work goes back to execution (its own session), with the issues.
    stage("execution", iteration, {title = "Verifier issues to fix", text = "- " .. table.concat(d.issues, "\n- ")},
      ("(rework %d)"):format(iteration))
  end,
})
if not ok then
  if type(err) == "table" and err.kind == "gate" and err.code == 2 then
    p:fail(2, "verification rejected " .. pipeline.MAX_VERIFY .. " times: retry exhausted, escalate to human ("
      .. table.concat(pipeline.issues(err.decision), "; ") .. ")")
  end
  error(err, 0)
end

stage("ship")
return p:finish("success")
