-- wo.launchd: the seed's macOS LaunchAgents on Linux. A LaunchAgent plist in a work
-- order becomes a systemd user service (and a timer when it has StartInterval), and
-- `launchctl` steps become `systemctl --user` steps.
--
--   local ld = require("wo.launchd")
--   local agent = ld.parse(plistText)            -- {Label = ..., ProgramArguments = {...}, ...}
--   local units = ld.units(agent, {base = ..., sot = ..., home = ..., logs = ...})  -- {{name, text}, ...}
--   local ok, out = ld.verify({"/path/x.service", "/path/x.timer"})
--   local cmd, why = ld.translate("launchctl load ~/Library/LaunchAgents/com.x.plist")
local kit = require("kit.args")

local M = {}

--- Whether a work-order path is a LaunchAgent plist.
function M.isLaunchAgent(path)
  return path:match("%.plist$") ~= nil and path:find("LaunchAgents/", 1, true) ~= nil
end

local function unescape(s)
  return (s:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&apos;", "'"):gsub("&amp;", "&"))
end

--- Parses a property list (XML): dict, array, key, string, integer, real, true, false.
--- Returns the top-level value, or nil and why.
function M.parse(text)
  local toks = {}
  local i = 1
  text = text:gsub("<%?.-%?>", ""):gsub("<!%-%-.-%-%->", ""):gsub("<!DOCTYPE.->", "")
  while true do
    local s, e, close, name, selfClose = text:find("<(/?)([%w_]+)[^>]-(/?)>", i)
    if not s then break end
    local between = text:sub(i, s - 1)
    if between:match("%S") then toks[#toks + 1] = {text = unescape(between)} end
    toks[#toks + 1] = {tag = name, close = close == "/", empty = selfClose == "/"}
    i = e + 1
  end
  local pos = 1
  local value
  local function expectText(tag)
    local t = toks[pos]
    local s = ""
    if t and t.text then s = t.text; pos = pos + 1 end
    local c = toks[pos]
    if not (c and c.tag == tag and c.close) then error("plist: <" .. tag .. "> not closed") end
    pos = pos + 1
    return s
  end
  function value()
    local t = toks[pos]
    if not t or not t.tag or t.close then error("plist: a value expected") end
    pos = pos + 1
    if t.tag == "plist" then
      local v = value()
      if toks[pos] and toks[pos].tag == "plist" and toks[pos].close then pos = pos + 1 end
      return v
    elseif t.tag == "true" or t.tag == "false" then
      if not t.empty then pos = pos + 1 end
      return t.tag == "true"
    elseif t.tag == "string" then
      return t.empty and "" or expectText("string")
    elseif t.tag == "integer" or t.tag == "real" then
      return tonumber((expectText(t.tag):gsub("%s", "")))
    elseif t.tag == "array" then
      local a = {}
      if t.empty then return a end
      while not (toks[pos] and toks[pos].tag == "array" and toks[pos].close) do a[#a + 1] = value() end
      pos = pos + 1
      return a
    elseif t.tag == "dict" then
      local d = {}
      if t.empty then return d end
      while not (toks[pos] and toks[pos].tag == "dict" and toks[pos].close) do
        local k = toks[pos]
        if not (k and k.tag == "key") then error("plist: <key> expected in <dict>") end
        pos = pos + 1
        local key = expectText("key")
        d[key] = value()
      end
      pos = pos + 1
      return d
    end
    error("plist: unsupported <" .. t.tag .. ">")
  end
  local ok, v = pcall(value)
  if not ok then return nil, tostring(v):gsub("^.-plist:", "plist:") end
  return v
end

-- A systemd command-line word, quoted when it needs to be.
function M.word(s)
  s = tostring(s)
  if s:match("^[%w%._/:=@%-+,]+$") then return s end
  return '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
end
local word = M.word

--- Maps a macOS path of the seed to this machine: the plist's LUKA_SOT to base,
--- ~/Library/Logs to logs, another /Users/NAME to home.
function M.mapPath(p, o)
  if type(p) ~= "string" then return p end
  if o.sot and o.sot ~= "" and p:sub(1, #o.sot) == o.sot then return o.base .. p:sub(#o.sot + 1) end
  local rest = p:match("^/Users/[^/]+/Library/Logs/(.*)$")
  if rest then return o.logs .. "/" .. rest end
  rest = p:match("^/Users/[^/]+/(.*)$")
  if rest then return o.home .. "/" .. rest end
  return p
end

--- The unit name of a LaunchAgent: its Label.
function M.name(agent) return agent.Label end

--- systemd user units for a LaunchAgent: {{name = "x.service", text = ...}, {name = "x.timer", ...}}.
--- `o`: {base, home, logs, source (the plist's path, for the header)}.
function M.units(agent, o)
  if type(agent) ~= "table" or type(agent.Label) ~= "string" or not agent.Label:match("^[%w_.@%-]+$") then
    return nil, "a LaunchAgent needs a Label of letters, digits, '.', '_', '-'"
  end
  local argv = agent.ProgramArguments or (agent.Program and {agent.Program})
  if type(argv) ~= "table" or #argv == 0 then
    return nil, "LaunchAgent " .. agent.Label .. " has no ProgramArguments"
  end
  local env = type(agent.EnvironmentVariables) == "table" and agent.EnvironmentVariables or {}
  local m = {base = o.base, home = o.home, logs = o.logs, sot = env.LUKA_SOT}
  local exec = {}
  for i, a in ipairs(argv) do exec[i] = word(M.mapPath(a, m)) end
  local lines = {
    "# Generated by Baton (recipes/wo_rebuild.lua) from the LaunchAgent " .. (o.source or agent.Label) .. ".",
    "[Unit]",
    "Description=" .. agent.Label .. " (the LaunchAgent, as a systemd user service)",
    "",
    "[Service]",
  }
  local interval = tonumber(agent.StartInterval)
  if interval then
    lines[#lines + 1] = "Type=oneshot"
  elseif agent.KeepAlive == true then
    lines[#lines + 1] = "Type=simple"
    lines[#lines + 1] = "Restart=always"
    lines[#lines + 1] = "RestartSec=1"
  else
    lines[#lines + 1] = "Type=oneshot"
  end
  lines[#lines + 1] = "ExecStart=" .. table.concat(exec, " ")
  local keys = {}
  for k in pairs(env) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do lines[#lines + 1] = "Environment=" .. word(k .. "=" .. M.mapPath(env[k], m)) end
  if agent.WorkingDirectory then lines[#lines + 1] = "WorkingDirectory=" .. M.mapPath(agent.WorkingDirectory, m) end
  if agent.StandardOutPath then lines[#lines + 1] = "StandardOutput=append:" .. M.mapPath(agent.StandardOutPath, m) end
  if agent.StandardErrorPath then
    lines[#lines + 1] = "StandardError=append:" .. M.mapPath(agent.StandardErrorPath, m)
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "[Install]"
  lines[#lines + 1] = "WantedBy=default.target"
  local units = {{name = agent.Label .. ".service", text = table.concat(lines, "\n") .. "\n"}}
  if interval then
    local t = {
      "# Generated by Baton (recipes/wo_rebuild.lua): StartInterval " .. interval .. " of the LaunchAgent "
        .. (o.source or agent.Label) .. ".",
      "[Unit]",
      "Description=Run " .. agent.Label .. " every " .. interval .. " s",
      "",
      "[Timer]",
      -- RunAtLoad: at once when the timer starts; then every StartInterval.
      agent.RunAtLoad == false and ("OnActiveSec=" .. interval .. "s") or "OnActiveSec=0",
      "OnUnitActiveSec=" .. interval .. "s",
      "AccuracySec=1s",
      "Unit=" .. agent.Label .. ".service",
      "",
      "[Install]",
      "WantedBy=timers.target",
    }
    units[#units + 1] = {name = agent.Label .. ".timer", text = table.concat(t, "\n") .. "\n"}
  end
  return units
end

--- `systemd-analyze verify` of unit files: true | false, its output | nil, why it did not run.
function M.verify(paths)
  local _, found = baton.sh("command -v systemd-analyze", {allowFail = true, readOnly = true})
  if not found then return nil, "systemd-analyze is not installed (Debian: systemd)" end
  local cmd = {"systemd-analyze", "verify"}
  for _, p in ipairs(paths) do cmd[#cmd + 1] = p end
  local out, ok, _, err = baton.sh(cmd, {allowFail = true, timeout = 120, readOnly = true})
  local text = ((out or "") .. (err or "")):gsub("%s+$", "")
  return ok, text
end

--- Whether `systemctl --user` works here: true | false, why.
function M.userManager()
  local _, found = baton.sh("command -v systemctl", {allowFail = true, readOnly = true})
  if not found then return false, "systemctl is not installed" end
  local _, ok, _, err = baton.sh({"systemctl", "--user", "show-environment"},
                                 {allowFail = true, timeout = 20, readOnly = true})
  if ok then return true end
  local first = (err or ""):match("[^\n]+") or "no user service manager"
  return false, "systemctl --user is not available here (" .. first .. ")"
end

--- A seed step mentioning launchctl, as a systemctl --user step. Returns the command (or
--- nil when it is not a service step) and what it does.
function M.translate(cmd)
  if not cmd:find("launchctl", 1, true) then return nil end
  local label = cmd:match("launchctl%s+load%s+%S-([%w_.@%-]+)%.plist")
  if label then
    return ("systemctl --user daemon-reload && systemctl --user enable --now %s.timer 2>/dev/null || systemctl "
            .. "--user enable --now %s.service")
      :format(kit.shquote(label), kit.shquote(label)), "start " .. label
  end
  label = cmd:match("launchctl%s+unload%s+%S-([%w_.@%-]+)%.plist")
  if label then
    return ("systemctl --user disable --now %s.timer %s.service"):format(
        kit.shquote(label),
        kit.shquote(label)), "stop " .. label
  end
  if cmd:find("launchctl%s+list") then
    return (cmd:gsub("launchctl%s+list", "systemctl --user list-units --all --plain --no-legend")), "list the services"
  end
  return nil, "a launchctl command with no systemd equivalent: " .. cmd
end

return M
