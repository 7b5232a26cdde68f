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
    kit.fail(("config %s: not a YAML/JSON mapping: %s"):format(path, type(doc) == "table" and tostring(doc.message) or tostring(doc)), 3)
  end
  local known = {agent = true, model = true, models = true, stages = true}
  for k in pairs(doc) do
    if not known[k] then kit.fail(("config %s: unknown key '%s' (agent, model, models, stages)"):format(path, tostring(k)), 3) end
  end
  for name, st in pairs(doc.stages or {}) do
    local isStage = false
    for _, s in ipairs(M.STAGES) do if s == name then isStage = true end end
    if not isStage then kit.fail(("config %s: stages.%s is not a stage (%s)"):format(path, tostring(name), table.concat(M.STAGES, ", ")), 3) end
    if type(st) ~= "table" then kit.fail(("config %s: stages.%s must be a mapping"):format(path, name), 3) end
  end
  return doc
end

--- The table {stage = {agent, models, from}} from the parsed options and the config.
function M.resolve(o, config, envAgent)
  config = config or {}
  local t = {}
  for _, s in ipairs(M.STAGES) do
    local st = (config.stages or {})[s] or {}
    local agent = o["agent_" .. s] or st.agent or o.agent or config.agent or envAgent
    if agent == "" then agent = nil end
    local ms = o["model_" .. s] or models(st.models or st.model) or o.model or models(config.models or config.model) or {}
    t[s] = {agent = agent, models = ms}
  end
  return t
end

return M
