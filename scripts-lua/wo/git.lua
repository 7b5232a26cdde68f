-- wo.git: history-aware diagnosis and forensics over git history and logs.
local M = {}

local SEP = "\31"
local FORMAT = "--format=%h" .. SEP .. "%aI" .. SEP .. "%s"

local function git(base, argv)
  local cmd = {"git", "-C", base}
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local out, ok, _, err = baton.sh(cmd, {allowFail = true, timeout = 60, readOnly = true})
  return ok and out or nil, err
end

local function commits(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local sha, date, subject = line:match("^([^\31]*)\31([^\31]*)\31(.*)$")
    if sha then out[#out + 1] = {sha = sha, date = date, subject = subject} end
  end
  return out
end

function M.isRepo(base)
  local out = git(base, {"rev-parse", "--is-inside-work-tree"})
  return out ~= nil and out:match("true") ~= nil
end

-- Exists but broken: an empty file, or a script (a #! line) that is not executable or
-- does not parse (sh -n / zsh -n / bash -n when that shell is installed).
local function broken(base, component)
  local full = base .. "/" .. component
  local _, isDir = baton.sh({"test", "-d", full}, {allowFail = true, readOnly = true})
  if isDir then return nil end
  local text = baton.fs.read(full)
  if text == "" then return "the file is empty" end
  local shebang = text:match("^#!%s*(%S+)[ \t]*(%S*)")
  if not shebang then return nil end
  local _, exec = baton.sh({"test", "-x", full}, {allowFail = true, readOnly = true})
  if not exec then return "a script that is not executable" end
  local interp = text:match("^#!%s*/usr/bin/env%s+(%S+)") or shebang:match("([^/]+)$")
  if interp == "sh" or interp == "bash" or interp == "zsh" or interp == "dash" then
    local _, has = baton.sh("command -v " .. interp, {allowFail = true, readOnly = true})
    if has then
      local _, parses, _, err = baton.sh({interp, "-n", full}, {allowFail = true, timeout = 30, readOnly = true})
      if not parses then return ("%s -n: %s"):format(interp, (err or ""):gsub("%s+$", "")) end
    end
  end
  return nil
end

--- When `component` was last present and which commit removed it.
--- Returns {component, state = present|broken|removed|deleted_uncommitted|never_existed,
--- last_present, removed_by, recent_commits (the last 10 in the window), rollback_mentions, answer}.
--- opts: {hours, rollback = {globs}, logs = {globs}}.
function M.history(base, component, opts)
  opts = opts or {}
  local r = {component = component}
  local touched = commits(git(base, {"log", "--all", "--full-history", FORMAT, "--", component}))
  r.commits = #touched
  local recent = commits(git(base,
                             {"log", "--all", "--full-history", FORMAT,
                              "--since=" .. (opts.hours or 24) .. " hours ago", "-n", "10", "--", component}))
  r.recent_commits = baton.json.array(recent)
  r.hours = opts.hours or 24
  r.rollback_mentions = baton.json.array(M.grepLogs(opts.rollback or {}, {component}))
  r.log_mentions = baton.json.array(M.grepLogs(opts.logs or {}, {component}, 10))
  local exists = baton.fs.exists(base .. "/" .. component)
  local why = exists and broken(base, component) or nil
  local function finish(state, answer)
    r.state = state
    r.answer = answer
    if #r.rollback_mentions > 0 then
      local m = r.rollback_mentions[1]
      r.answer = r.answer .. ("; named by rollback script %s:%d"):format(m.file, m.line)
    end
    return r
  end
  if #touched == 0 then
    if why then
      r.broken = why; return finish("broken",
                                    component .. " exists but is broken (" .. why .. "); it was never committed")
    end
    return finish(exists and "present" or "never_existed",
                  exists and (component .. " is present now but was never committed")
      or (component .. " never existed: no commit in this repository touched it"))
  end
  r.last_changed = touched[1]
  if exists then
    if why then
      r.broken = why
      return finish("broken",
                    ("%s exists but is broken (%s); last changed by %s (%s) %q"):format(component, why, touched[1].sha,
        touched[1].date, touched[1].subject))
    end
    return finish("present",
                  ("%s is present now; last changed by %s (%s) %q"):format(
                      component,
                      touched[1].sha,
                      touched[1].date,
                      touched[1].subject))
  end
  local removal = commits(git(base,
                              {"log", "-1", "--full-history", "--diff-filter=D", FORMAT, "HEAD", "--", component}))[1]
  if not removal then
    r.last_present = commits(git(base, {"log", "-1", FORMAT, "HEAD"}))[1]
    return finish("deleted_uncommitted",
                  ("%s is in HEAD (%s) but missing from the working tree: deleted without a commit"):format(component,
      r.last_present and r.last_present.sha or "?"))
  end
  r.removed_by = removal
  r.last_present = commits(git(base, {"log", "-1", FORMAT, removal.sha .. "^"}))[1]
  local lp = r.last_present or {sha = "?", date = "?", subject = "?"}
  return finish("removed",
                ("%s was working at %s: last present in %s %q; vanished at %s: removed by %s %q"):format(component,
    lp.date, lp.sha, lp.subject, removal.date, removal.sha, removal.subject))
end

local DESTRUCTIVE = {"reset", "revert", "rollback", "roll back", "checkout", "clean", "remove", "delete", "restore",
                     "wipe"}

--- Git events in the window, per-path history and deletions.
function M.forensics(base, paths, since, till)
  local f = {git_events = {}, path_history = {}, deletions = {}, destructive = {}}
  if not M.isRepo(base) then f.note = "not a git repository: no git history"; return f end
  local window = {}
  if since then window[#window + 1] = "--since=" .. since end
  if till then window[#window + 1] = "--until=" .. till end
  local function log(extra, pathspec)
    local argv = {"log", "--all", "--full-history", FORMAT}
    for _, w in ipairs(window) do argv[#argv + 1] = w end
    for _, e in ipairs(extra) do argv[#argv + 1] = e end
    if pathspec then argv[#argv + 1] = "--"; for _, p in ipairs(pathspec) do argv[#argv + 1] = p end end
    return commits(git(base, argv))
  end
  f.git_events = log({})
  for _, c in ipairs(f.git_events) do
    local s = c.subject:lower()
    for _, w in ipairs(DESTRUCTIVE) do if s:find(w, 1, true) then f.destructive[#f.destructive + 1] = c; break end end
  end
  for _, p in ipairs(paths) do
    f.path_history[p] = baton.json.array(log({}, {p}))
    for _, c in ipairs(log({"--diff-filter=D"}, {p})) do
      f.deletions[#f.deletions + 1] = {path = p, sha = c.sha, date = c.date, subject = c.subject}
    end
  end
  return f
end

--- Lines of the log files matching any of the patterns (plain text, case-insensitive).
function M.grepLogs(globs, patterns, limit)
  local matches = {}
  for _, g in ipairs(globs) do
    for _, file in ipairs(baton.fs.glob(g)) do
      local ok, text = pcall(baton.fs.read, file)
      if ok then
        local n = 0
        for line in (text .. "\n"):gmatch("([^\n]*)\n") do
          n = n + 1
          local low = line:lower()
          for _, p in ipairs(patterns) do
            if low:find(p:lower(), 1, true) then
              if #matches < (limit or 200) then
                matches[#matches + 1] = {file = file, line = n, text = line, pattern = p}
              end
              break
            end
          end
        end
      end
    end
  end
  return matches
end

--- One sentence: the most likely cause, from the strongest evidence.
function M.likelyCause(f, logs, scripts)
  if #f.deletions > 0 then
    local d = f.deletions[1]
    return ("commit %s (%s) %q deleted %s"):format(d.sha, d.date, d.subject, d.path)
  end
  if #f.destructive > 0 then
    local c = f.destructive[1]
    return ("a destructive operation in the window: commit %s (%s) %q"):format(c.sha, c.date, c.subject)
  end
  if scripts and #scripts > 0 then
    local m = scripts[1]
    return ("a rollback script names it: %s:%d: %s"):format(m.file, m.line, m.text)
  end
  if #logs > 0 then
    local m = logs[1]
    return ("the logs show the failure first at %s:%d: %s"):format(m.file, m.line, m.text)
  end
  return "unknown: no git or log evidence in the window (accept: rollback/tree mismatch)"
end

return M
