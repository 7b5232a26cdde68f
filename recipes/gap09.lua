-- GAP-09 pipeline orchestrator: risk routing, discovery -> planning -> execution ->
-- fail-closed preflight -> verification (a gate of at most 2 iterations) -> ship.
-- See docs/recipes/gap09.md.
local args = require("kit.args")
local risk = require("gap09.risk")
local pipeline = require("gap09.pipeline")
local agents = require("gap09.agents")
local worktree = require("gap09.worktree")

local USAGE = [[
usage: baton run [--dry-run] [--json] recipes/gap09.lua [run] TASK [options]
       baton run recipes/gap09.lua stage STAGE TASK [options]

  TASK          what to do (the words that are not options; or task=TEXT)
  run           the seed's subcommand: the whole pipeline (the default)
  stage STAGE   the seed's subcommand: that one stage only
options, as name=value or --name value (--json, --dry-run: flags):
  risk=         low|medium|high: override the assessed risk (low: execution onward,
                medium: planning onward, high: discovery onward)
  stage=        discovery|planning|execution|verification|ship: start at this stage
  agent=        the agent command (default: the config file, then $GAP09_AGENT), run as
                CMD STAGE SESSION_ID in cwd with the stage's prompt on stdin; {model} in it
                is replaced by the stage's model; its stdout is the stage's output
  agent_STAGE=  the agent for one stage (agent_verification=..., ...)
  model=        the model for every stage (GAP09_MODEL; M,M runs a stage once per model)
  model_STAGE=  the model(s) for one stage (model_discovery=a,b: dual discovery)
  config=       the per-stage agent/model table, YAML or JSON (default: gap09.yaml in cwd,
                optional)
  preflight=    checks run fail-closed before every verification (default: ruff check .;mypy .)
  cwd=          the working directory of the agent and the checks (default: .)
  timeout=      seconds an agent call may take (default: 1800)
  ship=         auto|always|never: auto skips ship when no documentation is affected
  json          (--json) print the PipelineResult on stdout, the report on stderr
  dry_run       (--dry-run) plan only: no agent is called, the plan is printed

exit codes: 0 success, 1 stage failure, 2 verification rejected twice (the work tree is
put back as it was before execution), 3 configuration error, 4 preflight failure,
5 risk could not be assessed (empty task)]]

-- The seed's subcommands: `run TASK` and `stage STAGE TASK`.
local words = {table.unpack(arg or {})}
local single
if words[1] == "run" then table.remove(words, 1)
elseif words[1] == "stage" then
  table.remove(words, 1)
  single = table.remove(words, 1)
  local known = false
  for _, s in ipairs(pipeline.STAGES) do if s == single then known = true end end
  if not known then
    args.fail(("stage %s: not a stage (%s)"):format(tostring(single), table.concat(pipeline.STAGES, ", ")), 3)
  end
end

local o = args.parse({
  usage = USAGE,
  positional = "task",
  options = agents.options({
    risk = {choices = risk.levels}, agent = {}, preflight = {required = true, default = "ruff check .;mypy ."},
    cwd = {required = true, default = "."}, timeout = {number = true, min = 0.01, default = "1800"},
    stage = {choices = pipeline.STAGES}, json = {flag = true}, dry_run = {flag = true},
    ship = {choices = {"auto", "always", "never"}, default = "auto"},
  }),
}, words)
if o.help then return end
local planOnly = o.dry_run and not baton.run.dry_run
local dry = baton.run.dry_run or planOnly
local say = o.json and function(s) io.stderr:write(s, "\n") end or print

-- INIT: assess the risk (GAP-09 failure matrix: an empty task exits 5).
local level, keywords, why = risk.assess(o.task)
if not level then args.fail(keywords, 5) end
if o.risk then level, why = o.risk, "set by risk=" end

if not baton.fs.exists(o.cwd .. "/.") then args.fail("cwd=" .. o.cwd .. ": not a directory", 3) end
local configPath = o.config or (o.cwd .. "/gap09.yaml")
local table_ = agents.resolve(o, agents.load(configPath, o.config ~= nil), baton.env("GAP09_AGENT"))

-- The stages this run goes through.
local route = risk.route[level]
local start = single or o.stage or route[1]
local runs = {}
do
  local on = false
  for _, s in ipairs(pipeline.STAGES) do
    if s == start then on = true end
    if on and (not single or s == single) then runs[s] = true end
  end
end

for _, s in ipairs(pipeline.STAGES) do
  local a = table_[s].agent
  if runs[s] and not a and not dry then
    args.fail(("no agent configured for stage %s: pass agent=CMD (or agent_%s=CMD), set GAP09_AGENT or write %s "
      .. "(the agent runs as CMD STAGE SESSION_ID with the prompt on stdin; try --dry-run to see the plan without one)")
      :format(s, s, configPath), 3)
  end
  if runs[s] and a and not dry then
    local program = a:match("^%s*(%S+)")
    local _, found = baton.sh("command -v " .. args.shquote(program), {allowFail = true, cwd = o.cwd, readOnly = true})
    if not found then args.fail(("agent=%s: '%s' not found (check agent=, agent_%s=, the config or GAP09_AGENT)"):format(a, program, s), 3) end
  end
end

local p = pipeline.new{task = o.task, risk = level, agents = table_, cwd = o.cwd, timeout = o.timeout, dry = baton.run.dry_run,
  plan_only = planOnly, say = say}
p.json = o.json
if o.stage or single then p.startStage = start end
p.single = single
say("PIPELINE: " .. o.task)
say(("RISK: %s (%s)"):format(level:upper(), why))
say(("STARTING: Stage %d%s%s"):format(pipeline.NUMBER[start], single and (" only (" .. single .. ")") or "",
  dry and " (dry run: no agent is called)" or ""))
say("")

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

-- Fail closed: the work tree as it was before the first execution, to put back when
-- verification is exhausted.
local snapshot
local function takeSnapshot()
  if snapshot ~= nil or dry then return end
  local s, err = worktree.snapshot(o.cwd, baton.run.dir .. "/gap09-snapshot")
  if not s then p:fail(1, "cannot snapshot the work tree before execution: " .. tostring(err)) end
  snapshot = s
  baton.log("work tree snapshot before execution: " .. s.tree, {snapshot = s.tree, head = s.head})
end

local function stage(name, iteration, extra, note)
  if name == "execution" then takeSnapshot() end
  local r, rec = p:call(name, pipeline.prompt(name, p, extra), iteration)
  mustPass(name, r, rec, note)
  p:report(rec)
  return r
end

for _, name in ipairs({"discovery", "planning", "execution"}) do
  if runs[name] then stage(name) else p:skip(name, single and "single stage" or (pipeline.NUMBER[name] < pipeline.NUMBER[start]
    and ("starts at " .. start) or nil)) end
end

-- The mandatory pre-verify gate: before every verification, fail-closed (exit 4).
local preflightCommands = args.split(o.preflight, ";")
local function preverify()
  local sink = {}
  if planOnly then
    p.plan[#p.plan + 1] = "preflight pre-verify (fail-closed): " .. table.concat(preflightCommands, "; ")
    return sink
  end
  if dry then p.plan[#p.plan + 1] = "preflight pre-verify (fail-closed): " .. table.concat(preflightCommands, "; ") end
  local ok, err = pcall(preflight, {
    name = "pre-verify", policy = "fail",
    checks = pipeline.preflightChecks(preflightCommands, o.cwd, o.timeout, sink, 5),
  })
  if not ok then
    if type(err) == "table" and err.code == 4 then
      p:line("verification", "FAIL", "(pre-flight gates failed)")
      p:report({stage = "verification", status = "fail", session_id = p.sessions[3], model = baton.json.null, iteration = p.verifyIterations + 1,
        tokens = 0, tokens_source = "none"}, {checks = sink})
      p:fail(4, err.message)
    end
    error(err, 0)
  end
  return sink
end

local lastVerdict
if runs.verification and dry then
  -- The gate approves without calling the verifier in a dry run: list the stage anyway.
  preverify()
  local _, rec = p:call("verification", pipeline.prompt("verification", p), 1)
  p:line("verification", "PASS", "(iteration 1/" .. pipeline.MAX_VERIFY .. ")")
  p:report(rec)
elseif runs.verification then
  local ok, err = pcall(gate, {
    name = "verification",
    maxIterations = single and 1 or pipeline.MAX_VERIFY,
    check = function(iteration)
      local checks = preverify()
      p.verifyIterations = iteration
      local r, rec = p:call("verification", pipeline.prompt("verification", p), iteration)
      if not r.ok then mustPass("verification", r, rec) end
      local v = pipeline.verdict(r.stdout)
      if not v then v = {approved = false, issues = {"verifier output was not a JSON object with \"approved\""}} end
      lastVerdict = v
      local issues = pipeline.issues(v)
      rec.status = v.approved and "pass" or "fail"
      if not v.approved then rec.error = table.concat(issues, "; ") end
      p:line("verification", v.approved and "PASS" or "FAIL",
        ("(iteration %d/%d)%s"):format(iteration, pipeline.MAX_VERIFY, v.approved and "" or (": " .. rec.error)))
      p:report(rec, {checks = checks, verdict = v.approved, issues = issues})
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
      local why = "verification rejected " .. p.verifyIterations .. " time" .. (p.verifyIterations == 1 and "" or "s")
        .. ": retry exhausted, escalate to human (" .. table.concat(pipeline.issues(err.decision), "; ") .. ")"
      -- Fail closed: put the work tree back as it was before execution.
      if snapshot then
        local r = worktree.restore(o.cwd, snapshot)
        r.snapshot = snapshot.tree
        p.reverted = {modified = baton.json.array(r.modified), added = baton.json.array(r.added),
          deleted = baton.json.array(r.deleted), snapshot = snapshot.tree, head_moved = r.head_moved}
        local n = #r.modified + #r.added + #r.deleted
        say(("REVERTED: the work tree is back as it was before execution (%d file%s)"):format(n, n == 1 and "" or "s"))
        if #r.modified > 0 then say("  restored: " .. table.concat(r.modified, ", ")) end
        if #r.added > 0 then say("  removed (added by the pipeline): " .. table.concat(r.added, ", ")) end
        if #r.deleted > 0 then say("  brought back (deleted by the pipeline): " .. table.concat(r.deleted, ", ")) end
        if r.head_moved then
          say(("  warning: HEAD moved from %s to %s; commits are not undone"):format(r.head_moved.from, r.head_moved.to))
        end
        baton.log("reverted the work tree after exhausted verification", {reverted = p.reverted})
        why = why .. "; work tree reverted (" .. n .. " file" .. (n == 1 and "" or "s") .. ")"
      else
        p.reverted = {note = "no execution ran in this pipeline: nothing to revert"}
        say("REVERTED: nothing (no execution ran in this pipeline)")
      end
      p:fail(2, why)
    end
    error(err, 0)
  end
end

if runs.ship then
  local changed = p:changedFiles()
  local known = p.executed.execution and not dry
  if not known and not dry and worktree.isGit(o.cwd) then
    -- Execution did not run here: the uncommitted changes in the work tree are the change.
    local fp = worktree.fingerprint(o.cwd)
    changed = {}
    for f in pairs(fp) do changed[#changed + 1] = f end
    table.sort(changed)
    known = true
  end
  local need, reason = true, nil
  if o.ship == "never" then need, reason = false, "ship=never"
  elseif o.ship == "auto" and not dry then need, reason = pipeline.shipNeeded(known and changed or nil, lastVerdict) end
  if need then
    stage("ship")
  else
    p:skip("ship", reason)
  end
else
  p:skip("ship", single and "single stage" or nil)
end
return p:finish("success")
