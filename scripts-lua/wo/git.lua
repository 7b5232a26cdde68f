-- wo.git: history-aware diagnosis and forensics over git history and logs.
local M = {}

local SEP = "\31"
local FORMAT = "--format=%h" .. SEP .. "%aI" .. SEP .. "%s"

local function git(base, argv)
  local cmd = {"git", "-C", base}
  for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
  local out, ok, _, err = baton.sh(cmd, {allowFail = true, timeout = 60})
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

--- When `component` was last present and which commit removed it.
--- Returns {component, state = present|removed|deleted_uncommitted|never_existed, last_present, removed_by, touched_by}.
function M.history(base, component)
  local r = {component = component}
  local touched = commits(git(base, {"log", "--all", "--full-history", FORMAT, "--", component}))
  r.commits = #touched
  local exists = baton.fs.exists(base .. "/" .. component)
  if #touched == 0 then
    r.state = exists and "present" or "never_existed"
    r.answer = exists and (component .. " is present now but was never committed")
      or (component .. " never existed: no commit in this repository touched it")
    return r
  end
  r.last_changed = touched[1]
  if exists then
    r.state = "present"
    r.answer = ("%s is present now; last changed by %s (%s) %q"):format(component, touched[1].sha, touched[1].date, touched[1].subject)
    return r
  end
  local removal = commits(git(base, {"log", "-1", "--full-history", "--diff-filter=D", FORMAT, "HEAD", "--", component}))[1]
  if not removal then
    r.state = "deleted_uncommitted"
    r.last_present = commits(git(base, {"log", "-1", FORMAT, "HEAD"}))[1]
    r.answer = ("%s is in HEAD (%s) but missing from the working tree: deleted without a commit"):format(component,
      r.last_present and r.last_present.sha or "?")
    return r
  end
  r.state = "removed"
  r.removed_by = removal
  r.last_present = commits(git(base, {"log", "-1", FORMAT, removal.sha .. "^"}))[1]
  local lp = r.last_present or {sha = "?", date = "?", subject = "?"}
  r.answer = ("%s was last present in %s (%s) %q; removed by %s (%s) %q"):format(component,
    lp.sha, lp.date, lp.subject, removal.sha, removal.date, removal.subject)
  return r
end

local DESTRUCTIVE = {"reset", "revert", "rollback", "roll back", "checkout", "clean", "remove", "delete", "restore", "wipe"}

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
              if #matches < (limit or 200) then matches[#matches + 1] = {file = file, line = n, text = line, pattern = p} end
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
function M.likelyCause(f, logs)
  if #f.deletions > 0 then
    local d = f.deletions[1]
    return ("commit %s (%s) %q deleted %s"):format(d.sha, d.date, d.subject, d.path)
  end
  if #f.destructive > 0 then
    local c = f.destructive[1]
    return ("a destructive operation in the window: commit %s (%s) %q"):format(c.sha, c.date, c.subject)
  end
  if #logs > 0 then
    local m = logs[1]
    return ("the logs show the failure first at %s:%d: %s"):format(m.file, m.line, m.text)
  end
  return "unknown: no git or log evidence in the window (accept: rollback/tree mismatch)"
end

return M
