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
  catalog=      the models that exist (JSON/YAML: a list, or agent -> list; also the
                config's catalog: key): every stage's model must be in it
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
local config = agents.load(configPath, o.config ~= nil)
local table_ = agents.resolve(o, config, baton.env("GAP09_AGENT"))

-- The pre-verify commands: checked now, before any stage, so that a typo in preflight=
-- does not surface after the agent already changed the tree.
local preflightCommands = args.split(o.preflight, ";")
if #preflightCommands == 0 then
  args.fail("preflight=" .. o.preflight
            .. ": no command (give ;-separated commands, e.g. preflight='ruff check .;mypy .')",
            3)
end
for _, c in ipairs(preflightCommands) do
  local _, okSyntax, _, err = baton.sh({"sh", "-n", "-c", c}, {allowFail = true, readOnly = true})
  if not okSyntax then
    args.fail(("preflight=: '%s' is not a valid shell command: %s"):format(
        c,
        ((err or ""):gsub("^sh: %d*:?%s*", ""):gsub("%s+$", ""))),
              3)
  end
end

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
    local program = agents.program(a) or a
    local _, found = baton.sh("command -v " .. args.shquote(program), {allowFail = true, cwd = o.cwd, readOnly = true})
    if not found then
      args.fail(("agent=%s: '%s' not found (check agent=, agent_%s=, the config or GAP09_AGENT)"):format(a, program, s),
                3)
    end
  end
end

-- The models: with a catalog, every stage's model must be in it (before any agent runs).
agents.checkCatalog(agents.catalog(o, config, configPath), table_, runs)

local p = pipeline.new{task = o.task, risk = level, agents = table_, cwd = o.cwd, timeout = o.timeout,
                       dry = baton.run.dry_run,
  plan_only = planOnly, say = say}
p.json = o.json
if o.stage or single then p.startStage = start end
p.single = single
p.maxVerify = single and 1 or pipeline.MAX_VERIFY
p:armCancel()
say("PIPELINE: " .. o.task)
say(("RISK: %s (%s)"):format(level:upper(), why))
say(("STARTING: Stage %d%s%s"):format(pipeline.NUMBER[start], single and (" only (" .. single .. ")") or "",
  dry and " (dry run: no agent is called)" or ""))
say("")

-- Fail closed: the work tree as it was before the first execution of this run, to put
-- back when verification is exhausted (or the pipeline fails after a rejection). Taken
-- once per run and journaled: a resumed run reuses it, never retakes it from a tree the
-- first execution already changed.
local snapshot
local revertsFile = baton.run.dir and (baton.run.dir .. "/gap09-reverts") or nil
local rejected = false   -- a rejection happened and no approval since: the tree holds rejected work
local function takeSnapshot()
  if snapshot ~= nil or dry then return end
  local dir = baton.run.dir .. "/gap09-snapshot"
  local meta = dir .. "/snapshot.json"
  if baton.fs.exists(meta) then
    local ok, s = pcall(baton.json.decode, baton.fs.read(meta))
    if ok and type(s) == "table" and s.tree and baton.fs.exists(s.tree) then
      snapshot = s
      baton.log("work tree snapshot reused: the one taken before this run's first execution, at "
                .. pipeline.iso(s.at or 0),
        {snapshot = s.tree, head = s.head})
      return
    end
  end
  local s, err = worktree.snapshot(o.cwd, dir)
  if not s then p:fail(1, "cannot snapshot the work tree before execution: " .. tostring(err)) end
  baton.fs.write(meta, baton.json.encode(s))
  snapshot = s
  baton.log("work tree snapshot before execution: " .. s.tree, {snapshot = s.tree, head = s.head, ref = s.ref})
end

local function names(list, suffix)
  local out = {}
  for i, x in ipairs(list) do out[i] = x .. (suffix or "") end
  return table.concat(out, ", ")
end

-- Puts the tree back as the snapshot has it; prints and records what it did. Returns the
-- words for the run's reason.
local function revert()
  if not snapshot then
    p.reverted = {note = "no execution ran in this pipeline: nothing to revert"}
    say("REVERTED: nothing (no execution ran in this pipeline)")
    return "nothing to revert"
  end
  local r = worktree.restore(o.cwd, snapshot, {keep = "baton/rejected/" .. baton.run.id})
  baton.fs.write(revertsFile,
                 tostring((tonumber(baton.fs.exists(revertsFile) and baton.fs.read(revertsFile) or "0") or 0) + 1))
  local A = baton.json.array
  p.reverted = {modified = A(r.modified), added = A(r.added), deleted = A(r.deleted),
                directories_added = A(r.dirs_added),
    directories_deleted = A(r.dirs_deleted), directories_mode = A(r.dirs_mode), snapshot = snapshot.tree,
    head_moved = r.head_moved, complete = #r.differs == 0, still_different = #r.differs > 0 and A(r.differs) or nil}
  local pl = worktree.plural
  local parts = {pl(#r.modified, "file") .. " restored", pl(#r.added, "created file") .. " removed",
    pl(#r.deleted, "deleted file") .. " brought back"}
  if #r.dirs_added > 0 then
    parts[#parts + 1] = pl(#r.dirs_added, "created directory", "created directories") .. " removed"
  end
  if #r.dirs_deleted > 0 then
    parts[#parts + 1] = pl(#r.dirs_deleted, "deleted directory", "deleted directories") .. " brought back"
  end
  if #r.dirs_mode > 0 then parts[#parts + 1] = pl(#r.dirs_mode, "directory mode") .. " restored" end
  local summary = table.concat(parts, ", ")
  if #r.modified + #r.added + #r.deleted + #r.dirs_added + #r.dirs_deleted + #r.dirs_mode == 0 then
    summary = "no file had changed"
  end
  say((#r.differs == 0 and "REVERTED: the work tree is back as it was before execution: "
    or "REVERT INCOMPLETE: the work tree could not be put back entirely: ") .. summary)
  if #r.modified > 0 then say("  restored: " .. names(r.modified)) end
  if #r.added > 0 then say("  removed (added by the pipeline): " .. names(r.added)) end
  if #r.dirs_added > 0 then say("  removed directories (made by the pipeline): " .. names(r.dirs_added, "/")) end
  if #r.deleted > 0 then say("  brought back (deleted by the pipeline): " .. names(r.deleted)) end
  if #r.dirs_deleted > 0 then say("  directories brought back: " .. names(r.dirs_deleted, "/")) end
  local m = r.head_moved
  if m then
    if m.commits > 0 then
      say(("  %s undone: HEAD back at %s; kept on branch %s"):format(pl(m.commits, "commit"), m.from:sub(1, 12),
        m.branch or "(the branch could not be made)"))
      summary = summary .. ", " .. pl(m.commits, "commit") .. " undone (kept on " .. tostring(m.branch) .. ")"
    else
      say(("  HEAD back at %s (it had moved to %s)"):format(m.from:sub(1, 12), m.to:sub(1, 12)))
    end
    if m.error then say("  warning: git: " .. m.error) end
  end
  if #r.differs > 0 then
    say("  warning: these paths still differ from the snapshot: " .. names(r.differs))
    summary = summary .. "; still different: " .. names(r.differs)
  end
  baton.log("reverted the work tree to the snapshot before execution", {reverted = p.reverted})
  return "work tree reverted: " .. summary
end

-- Ends the run; once work was rejected, fail closed: the tree is put back first.
local function failRun(code, reason)
  if rejected and not p.reverted then reason = reason .. "; " .. revert() end
  p:fail(code, reason)
end

-- The step after `name` in this run, for the report's Next: line.
local function nextAfter(name)
  local on = false
  for _, s in ipairs(pipeline.STAGES) do
    if on and runs[s] then
      return ("Proceed to Step %d (%s)"):format(pipeline.NUMBER[s],
                                                s == "verification" and "pre-verify, verification" or s)
    end
    if s == name then on = true end
  end
  return "Done"
end

-- A stage that did not pass ends the pipeline: exit 3 for a model the agent does not
-- have, 1 for anything else (including a timeout).
local function mustPass(stage, r, rec, note)
  p:line(stage, r.ok and "PASS" or "FAIL", note)
  if r.ok then return end
  local kind = pipeline.failureKind(r)
  p:report(rec,
           {next = ("STOP (stage %s failed%s)"):format(stage,
                                                       rejected and snapshot and ": the rejected work is reverted"
                                                           or "")})
  if kind == "model" then
    failRun(3, ("stage %s: model not available: %s (check the agent's model configuration)"):format(stage, rec.error))
  end
  failRun(1, ("stage %s failed: %s"):format(stage, rec.error))
end

local function stage(name, iteration, extra, note)
  local env
  if name == "execution" then
    takeSnapshot()
    -- After a revert (a resume of a run that was reverted) the work is gone: execution runs
    -- again instead of replaying a pass whose changes were undone.
    local n = tonumber(baton.fs.exists(revertsFile) and baton.fs.read(revertsFile) or "0") or 0
    if n > 0 then env = {GAP09_REVERTS = tostring(n)} end
  end
  local r, rec = p:call(name, pipeline.prompt(name, p, extra), iteration, env)
  mustPass(name, r, rec, note)
  p:report(rec, {next = nextAfter(name)})
  return r
end

for _, name in ipairs({"discovery", "planning", "execution"}) do
  if runs[name] then stage(name) else p:skip(name,
                                             single and "single stage"
                                                 or (pipeline.NUMBER[name] < pipeline.NUMBER[start]
    and ("starts at " .. start) or nil)) end
end

-- The mandatory pre-verify gate: before every verification, fail-closed (exit 4).
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
      p:report({stage = "verification", status = "fail", session_id = p.sessions[3], model = baton.json.null,
                iteration = p.verifyIterations + 1,
        tokens = 0, tokens_source = "none"},
        {checks = sink, next = "STOP (pre-flight gates failed: fix them, then run again)"})
      failRun(4, err.message)
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
  p:line("verification", "PASS", "(iteration 1/" .. p.maxVerify .. ")")
  p:report(rec, {next = nextAfter("verification")})
elseif runs.verification then
  local ok, err = pcall(gate, {
    name = "verification",
    maxIterations = p.maxVerify,
    check = function(iteration)
      local checks = preverify()
      p.verifyIterations = iteration
      -- The tree as verified is the call's declared input (the work tree but .git, the runs
      -- directory and git-ignored files): a resumed run replays an approval only for the very
      -- same tree, and `baton log --why` names the files that changed. The verifier must not
      -- change it.
      local excl = worktree.excluded(o.cwd)
      local before = worktree.codeManifest(o.cwd, excl)
      local guard, gerr = worktree.snapshot(o.cwd, baton.run.dir .. "/gap09-verify", {files = true})
      if not guard then p:fail(1, "cannot snapshot the work tree before verification: " .. tostring(gerr)) end
      local r, rec = p:call("verification", pipeline.prompt("verification", p), iteration, nil, worktree.inputs(o.cwd))
      local edited = {}
      do
        local after = worktree.codeManifest(o.cwd, excl)
        local function show(k, v) return v:sub(1, 1) == "d" and (k .. "/") or k end
        for k, v in pairs(after) do if before[k] ~= v then edited[#edited + 1] = show(k, v) end end
        for k, v in pairs(before) do if not after[k] then edited[#edited + 1] = show(k, v) end end
        if #edited > 0 then
          worktree.restore(o.cwd, guard, {files = true})
          table.sort(edited)
          baton.log("the verifier changed files; they are put back as verified: " .. table.concat(edited, ", "),
            {level = "warn", files = baton.json.array(edited)})
        end
      end
      if not r.ok then mustPass("verification", r, rec) end
      local v = pipeline.verdict(r.stdout)
      if not v then v = {approved = false, issues = {"verifier output was not a JSON object with \"approved\""}} end
      local issues = pipeline.issues(v)
      if #edited > 0 then
        -- A verifier that changes the code is not verifying it: a rejection, whatever it said.
        table.insert(issues, 1, "verification changed files: " .. table.concat(edited, ", "))
        v = {approved = false, issues = issues}
      end
      lastVerdict = v
      rec.status = v.approved and "pass" or "fail"
      if not v.approved then rec.error = table.concat(issues, "; ") end
      p:line("verification", v.approved and "PASS" or "FAIL",
        ("(iteration %d/%d)%s"):format(iteration, p.maxVerify, v.approved and "" or (": " .. rec.error)))
      local nxt
      if v.approved then nxt = nextAfter("verification")
      elseif iteration < p.maxVerify then
        nxt = ("Back to Step 3 (rework the verifier's issues, iteration %d/%d)"):format(iteration + 1, p.maxVerify)
      else
        nxt = ("STOP (verification rejected %d/%d: %s; escalate to a human)"):format(iteration, p.maxVerify,
          snapshot and "the work tree is reverted" or "nothing to revert")
      end
      p:report(rec, {checks = checks, verdict = v.approved, issues = issues, next = nxt})
      rejected = not v.approved
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
      p:fail(2, why .. "; " .. revert())
    end
    error(err, 0)
  end
end

if runs.ship then
  local changed = p:changedFiles()
  local known = p.executed.execution and not dry
  if snapshot and not dry then
    -- What this run changed since its snapshot (true across a resume, where replayed
    -- stages report no change).
    changed, known = worktree.changedSince(o.cwd, snapshot), true
  end
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
