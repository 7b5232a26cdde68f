-- gap09.agents: which agent and which model(s) serve each stage.
--
-- From, highest first: the command line (agent_STAGE=CMD, model_STAGE=M[,M...]),
-- the config file's `stages.STAGE`, the command line's agent= / model=, the config
-- file's top-level `agent` / `model`, and $GAP09_AGENT. The config file (YAML or JSON,
-- default `gap09.yaml` in the working directory, optional) is meant to be checked
-- into the repository:
--
--   agent: droid exec --model {model}        # default for every stage
--   model: swe-1-5
--   stages:
--     discovery:    {models: [gemini-2.5-pro, gpt-5.3-codex]}   # dual discovery
--     planning:     {model: claude-opus-4-5}
--     execution:    {agent: "codex exec", model: gpt-5.3-codex}
--     verification: {model: gpt-5.3-codex}
--     ship:         {model: swe-1-5}
--
-- `{model}` in an agent command is replaced by the stage's model; the model is also in
-- the agent's environment as GAP09_MODEL. A list of models runs the stage once per model.
local kit = require("kit.args")

local M = {}

M.STAGES = {"discovery", "planning", "execution", "verification", "ship"}

--- The options the recipe accepts for the table: agent_STAGE and model_STAGE.
function M.options(into)
  for _, s in ipairs(M.STAGES) do into["agent_" .. s] = {}; into["model_" .. s] = {list = true} end
  into.model = {list = true}
  into.config = {}
  into.catalog = {}
  return into
end

local function models(v)
  if v == nil then return nil end
  if type(v) == "string" then return kit.split(v, ",") end
  if type(v) == "table" then
    local out = {}
    for _, m in ipairs(v) do out[#out + 1] = tostring(m) end
    return out
  end
  return {tostring(v)}
end

--- Reads the config file: the table, or nil, or raises a usage error (exit 3).
function M.load(path, explicit)
  if not baton.fs.exists(path) then
    if explicit then kit.fail("config=" .. path .. ": no such file", 3) end
    return nil
  end
  local text = baton.fs.read(path)
  local ok, doc = pcall(path:match("%.json$") and baton.json.decode or baton.yaml.decode, text)
  if not ok or type(doc) ~= "table" then
    kit.fail(("config %s: not a YAML/JSON mapping: %s"):format(path,
                                                               type(doc) == "table" and tostring(doc.message)
                                                                   or tostring(doc)),
             3)
  end
  local known = {agent = true, model = true, models = true, stages = true, catalog = true}
  for k in pairs(doc) do
    if not known[k] then
      kit.fail(("config %s: unknown key '%s' (agent, model, models, stages, catalog)"):format(path, tostring(k)), 3)
    end
  end
  for name, st in pairs(doc.stages or {}) do
    local isStage = false
    for _, s in ipairs(M.STAGES) do if s == name then isStage = true end end
    if not isStage then
      kit.fail(("config %s: stages.%s is not a stage (%s)"):format(path, tostring(name), table.concat(M.STAGES, ", ")),
               3)
    end
    if type(st) ~= "table" then kit.fail(("config %s: stages.%s must be a mapping"):format(path, name), 3) end
  end
  return doc
end

--- The program an agent command runs: its first word after `env` and VAR=value words.
function M.program(cmd)
  local words = {}
  for w in (cmd or ""):gmatch("%S+") do words[#words + 1] = w end
  local i = 1
  if words[i] == "env" then
    i = i + 1
    while words[i] and (words[i]:match("^[%a_][%w_]*=") or words[i]:match("^%-")) do i = i + 1 end
  else
    while words[i] and words[i]:match("^[%a_][%w_]*=") do i = i + 1 end
  end
  return words[i]
end

--- The model catalog: from `catalog=FILE` or the config's `catalog:` (a file name, relative
--- to the config file, or the list / object inline). A list of model names, or an object
--- from agent name to such a list. Returns {all = {...}, byAgent = {name = {...}} or nil,
--- from = where}, or nil when there is none; raises exit 3 when it cannot be read.
function M.catalog(o, config, configPath)
  local doc, from = nil, nil
  local function readFile(path, what)
    if not baton.fs.exists(path) then kit.fail(("%s%s: no such file"):format(what, path), 3) end
    local ok, d = pcall(path:match("%.json$") and baton.json.decode or baton.yaml.decode, baton.fs.read(path))
    if not ok or type(d) ~= "table" then
      kit.fail(("%s%s: not a YAML/JSON list of models or agent -> models mapping: %s"):format(what, path,
        type(d) == "table" and tostring(d.message) or tostring(d)), 3)
    end
    return d
  end
  if o.catalog then doc, from = readFile(o.catalog, "catalog="), o.catalog
  elseif config and config.catalog ~= nil then
    if type(config.catalog) == "string" then
      local path = config.catalog
      if not path:match("^/") then path = (configPath:match("^(.*)/[^/]*$") or ".") .. "/" .. path end
      doc, from = readFile(path, "config " .. configPath .. ": catalog: "), path
    else
      doc, from = config.catalog, configPath .. " (catalog:)"
    end
  end
  if doc == nil then return nil end
  local function names(list, where)
    if type(list) ~= "table" then kit.fail(("catalog %s: %s must be a list of model names"):format(from, where), 3) end
    local out = {}
    for _, m in ipairs(list) do out[#out + 1] = tostring(m) end
    table.sort(out)
    return out
  end
  local c = {from = from}
  if #doc > 0 or next(doc) == nil then
    c.all = names(doc, "the catalog")
  else
    c.byAgent, c.all = {}, {}
    local seen = {}
    for agent, list in pairs(doc) do
      c.byAgent[tostring(agent)] = names(list, "the list of " .. tostring(agent))
      for _, m in ipairs(c.byAgent[tostring(agent)]) do if not seen[m] then seen[m] =
          true; c.all[#c.all + 1] = m end end
    end
    table.sort(c.all)
  end
  return c
end

--- The closest name to `name` in `known` (edit distance, case-insensitive).
function M.closest(name, known)
  return require("kit.suggest").closest(name, known, {fold = true})
end

--- Checks every model of the stages that run against the catalog: exit 3 naming the
--- stage, the models available and the closest one, before any agent is called.
function M.checkCatalog(c, t, runs)
  if not c then return end
  for _, s in ipairs(M.STAGES) do
    local cfg = t[s]
    if runs[s] and cfg.agent then
      local available, whose = c.all, ""
      if c.byAgent then
        local prog = M.program(cfg.agent) or cfg.agent
        available = c.byAgent[cfg.agent] or c.byAgent[prog] or c.byAgent[(prog:match("([^/]+)$"))]
        if not available then
          local agents = {}
          for a in pairs(c.byAgent) do agents[#agents + 1] = a end
          table.sort(agents)
          kit.fail(("agent '%s' (stage %s) is not in the catalog %s (agents: %s)"):format(
              prog,
              s,
              c.from,
              table.concat(agents, ", ")),
                   3)
        end
        whose = " for agent " .. prog
      end
      local set = {}
      for _, m in ipairs(available) do set[m] = true end
      for _, m in ipairs(cfg.models or {}) do
        if not set[m] then
          local near = M.closest(m, available)
          kit.fail(("model '%s' (stage %s) is not in the catalog %s%s; available: %s%s"):format(m, s, c.from, whose,
            #available > 0 and table.concat(available, ", ") or "none", near and ("; closest: " .. near) or ""), 3)
        end
      end
    end
  end
end

--- The table {stage = {agent, models, from}} from the parsed options and the config.
function M.resolve(o, config, envAgent)
  config = config or {}
  local t = {}
  for _, s in ipairs(M.STAGES) do
    local st = (config.stages or {})[s] or {}
    local agent = o["agent_" .. s] or st.agent or o.agent or config.agent or envAgent
    if agent == "" then agent = nil end
    local ms = o["model_" .. s] or models(st.models or st.model) or o.model or models(config.models or config.model)
        or {}
    t[s] = {agent = agent, models = ms}
  end
  return t
end

return M
