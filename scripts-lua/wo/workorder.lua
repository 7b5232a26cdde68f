-- wo.workorder: work orders as in the WO pipeline seed. A work order is a YAML file:
--
--   wo_id: WO-20251113-EXAMPLE          # letters, digits, '.', '_', '-'
--   title: "..."
--   type: apply_patch
--   files:
--     - path: agents/x/x.zsh             # relative to base; may not leave it
--       mode: "0755"                     # optional, default 0644
--       content: |
--         ...
--   tests:                               # optional: run in base after the files are written
--     - name: "x exists"
--       command: "test -x agents/x/x.zsh && echo ok"
--       expected: "ok"                   # compared with the trimmed stdout
--
--   post_verify:                          # optional: run after the files are written
--     - mkdir -p g/followup/state         # a command (passes on exit 0), or
--     - {command: "...", expected: "..."}
--
-- Paths leave base only into the allow-list (opts.allow). A LaunchAgent plist (a
-- `*.plist` under `LaunchAgents/`) becomes systemd user units in opts.units (see
-- wo.launchd); `launchctl` steps become `systemctl --user` steps, skipped with the reason
-- when there is no user service manager.
--
-- apply() writes every file (each atomically, with its mode) only after all of them
-- passed validation, copies what it replaces to backups/ first, and restores the earlier
-- contents if a write fails half way; rollback() puts everything back.
local launchd = require("wo.launchd")

local M = {}

local function trim(s) return (tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", "")) end

--- "0755", 0755 read as the number 755, or 493: the mode as an integer. nil, why when invalid.
function M.mode(v)
  if v == nil then return 420 end -- 0644
  local s = trim(v)
  if type(v) == "number" and math.type(v) == "integer" and not s:match("^[0-7]+$") then
    if v >= 0 and v <= 4095 then return v end
  elseif s:match("^0?[oO]?[0-7]+$") then
    local n = tonumber((s:gsub("^0?[oO]", "")), 8)
    if n and n <= 4095 then return n end
  end
  return nil, ("mode %s is not an octal file mode like \"0755\""):format(tostring(v))
end

--- A wo_id names files (state/<wo_id>.json, backups/<wo_id>/): a plain name only.
function M.plainName(id)
  return type(id) == "string" and id:match("^[%w_.%-]+$") ~= nil and id ~= "." and id ~= ".."
end

--- systemd unit files a work order writes itself are verified like generated ones.
local UNIT_SUFFIXES = {service = true, timer = true, socket = true, path = true, target = true, mount = true,
                       automount = true, slice = true}
function M.isUnitFile(path)
  local ext = path:match("%.([%w]+)$")
  return ext ~= nil and UNIT_SUFFIXES[ext] == true
end

--- Lexically normalises a relative path; nil, why when it is absolute or leaves its root.
function M.normalize(p)
  if type(p) ~= "string" or p == "" then return nil, "the path is empty" end
  if p:sub(1, 1) == "/" or p:sub(1, 1) == "~" then
    return nil, ("path %s is absolute; paths are relative to base"):format(p)
  end
  local parts = {}
  for part in p:gmatch("[^/]+") do
    if part == ".." then
      if #parts == 0 then return nil, ("path %s leaves base"):format(p) end
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  if #parts == 0 then return nil, ("path %s names base itself"):format(p) end
  return table.concat(parts, "/")
end

--- A lexically normalised absolute path.
function M.absolute(p)
  local parts = {}
  for part in p:gmatch("[^/]+") do
    if part == ".." then parts[#parts] = nil elseif part ~= "." then parts[#parts + 1] = part end
  end
  return "/" .. table.concat(parts, "/")
end

local function within(path, dir)
  return dir == "/" or path == dir or path:sub(1, #dir + 1) == dir .. "/"
end
M.within = within

--- Where a work-order path goes: the absolute target and a label, or nil and why.
--- opts: {base (absolute), allow = {absolute dirs}, home}.
function M.target(p, opts)
  if type(p) ~= "string" or p == "" then return nil, "the path is empty" end
  local allowText = #(opts.allow or {}) > 0 and table.concat(opts.allow, ", ") or "none"
  local hint = ("; paths outside base are allowed only through allow=DIR,... (allow-list: %s)"):format(allowText)
  local abs
  if p:sub(1, 2) == "~/" and opts.home then abs = M.absolute(opts.home .. "/" .. p:sub(3))
  elseif p:sub(1, 1) == "/" then abs = M.absolute(p)
  elseif p:sub(1, 1) == "~" then return nil, ("path %s: only ~/ is understood"):format(p)
  else abs = M.absolute(opts.base .. "/" .. p) end
  if abs == opts.base then return nil, ("path %s names base itself"):format(p) end
  if within(abs, opts.base) then return abs, abs:sub(#opts.base + 2) end
  for _, dir in ipairs(opts.allow or {}) do
    if within(abs, dir) then return abs, abs end
  end
  if p:sub(1, 1) == "/" or p:sub(1, 1) == "~" then
    return nil, ("path %s is absolute and outside base (%s)%s"):format(p, abs, hint)
  end
  return nil, ("path %s leaves base (it is %s)%s"):format(p, abs, hint)
end

--- Decodes and validates a work order file. Returns wo, or nil, reason and the wo_id
--- when the file had a usable one. opts: {base, allow, home, units, logs} (absolute).
function M.load(file, opts)
  local okRead, text = pcall(baton.fs.read, file)
  if not okRead then return nil, ("%s: cannot read: %s"):format(file, tostring(text)) end
  local ok, doc = pcall(baton.yaml.decode, text)
  if not ok then
    local msg = type(doc) == "table" and doc.message or tostring(doc)
    return nil, ("%s: invalid YAML: %s"):format(file, (msg:gsub("^.-invalid YAML: ", "")))
  end
  if type(doc) ~= "table" then return nil, ("%s: a work order must be a YAML mapping"):format(file) end
  local knownID = M.plainName(doc.wo_id) and doc.wo_id or nil
  local function bad(field, why) return nil, ("%s: field '%s' %s"):format(file, field, why), knownID end
  if not knownID then
    return bad("wo_id", ("is required: a plain name of letters, digits, '.', '_', '-' (not '.' or '..'), got %s")
      :format(type(doc.wo_id) == "string" and ("%q"):format(doc.wo_id) or type(doc.wo_id)))
  end
  if type(doc.files) ~= "table" or #doc.files == 0 then return bad("files", "must be a non-empty list") end
  local wo = {id = doc.wo_id, title = doc.title, type = doc.type, file = file, files = {}, tests = {}, post_verify = {},
              units = {}}
  for i, f in ipairs(doc.files) do
    local where = ("files[%d]"):format(i)
    if type(f) ~= "table" then return bad(where, "must be a mapping with path and content") end
    if type(f.path) ~= "string" then return bad(where .. ".path", "is required (a string)") end
    local content = f.content
    if type(content) == "number" or type(content) == "boolean" then content = tostring(content) end
    if type(content) ~= "string" then return bad(where .. ".content", "is required (a string)") end
    local mode, mwhy = M.mode(f.mode)
    if not mode then return bad(where .. ".mode", mwhy) end
    if launchd.isLaunchAgent(f.path) then
      -- On Linux a LaunchAgent is systemd user units in opts.units.
      local agent, perr = launchd.parse(content)
      if not agent then return bad(where .. ".content", "is not a LaunchAgent plist: " .. perr) end
      local units, uerr = launchd.units(agent, {base = opts.base, home = opts.home, logs = opts.logs, source = f.path})
      if not units then return bad(where .. ".content", uerr) end
      for _, u in ipairs(units) do
        local full = M.target(opts.units .. "/" .. u.name, opts)
        if not full then
          return bad(where .. ".path",
                     ("refused: %s is a LaunchAgent; on Linux it becomes %s in %s, outside base; paths outside "
            .. "base are allowed only through allow=DIR,... (allow-list: %s)"):format(f.path, u.name, opts.units,
            #(opts.allow or {}) > 0 and table.concat(opts.allow, ", ") or "none"))
        end
        wo.files[#wo.files + 1] = {path = full, full = full, content = u.text, mode = 420, unit = u.name, from = f.path}
        wo.units[#wo.units + 1] = {name = u.name, path = full, label = agent.Label, from = f.path}
      end
    else
      local full, label = M.target(f.path, opts)
      if not full then return bad(where .. ".path", "refused: " .. label) end
      wo.files[#wo.files + 1] = {path = label, full = full, content = content, mode = mode}
      if M.isUnitFile(full) then
        wo.units[#wo.units + 1] = {name = full:match("([^/]+)$"), path = full, from = f.path, direct = true}
      end
    end
  end
  if doc.tests ~= nil and type(doc.tests) ~= "table" then return bad("tests", "must be a list") end
  for i, t in ipairs(doc.tests or {}) do
    if type(t) ~= "table" or type(t.command) ~= "string" then
      return bad(("tests[%d].command"):format(i), "is required (a string)")
    end
    wo.tests[#wo.tests + 1] = {name = t.name or t.command, command = t.command, expected = t.expected}
  end
  if doc.post_verify ~= nil and type(doc.post_verify) ~= "table" then return bad("post_verify", "must be a list") end
  for i, st in ipairs(doc.post_verify or {}) do
    if type(st) == "string" then
      wo.post_verify[#wo.post_verify + 1] = {name = st, command = st}
    elseif type(st) == "table" and type(st.command) == "string" then
      wo.post_verify[#wo.post_verify + 1] = {name = st.name or st.command, command = st.command, expected = st.expected}
    else
      return bad(("post_verify[%d]"):format(i), "must be a command or {command, expected}")
    end
  end
  return wo
end

--- The real path of base/rel with symlinks resolved (the file need not exist).
local function realpath(p)
  local out, ok = baton.sh({"realpath", "-m", "--", p}, {allowFail = true, readOnly = true})
  return ok and trim(out) or nil
end

--- Checks every path stays inside base (or an allowed directory) once symlinks are resolved.
function M.contained(base, wo, allow)
  local root = realpath(base)
  if not root then return nil, "cannot resolve base " .. base end
  local roots = {root}
  for _, a in ipairs(allow or {}) do roots[#roots + 1] = realpath(a) end
  for _, f in ipairs(wo.files) do
    local real = realpath(f.full)
    local ok = false
    for _, r in ipairs(roots) do if real and within(real, r) and real ~= r then ok = true end end
    if not ok then
      return nil, ("%s: path %s refused: it resolves to %s, outside base %s%s"):format(
          wo.file,
          f.path,
          tostring(real),
          root,
        #(allow or {}) > 0 and (" and the allow-list (" .. table.concat(allow, ", ") .. ")") or "")
    end
  end
  return true
end

--- Copies what the work order will replace to backupDir (a snapshot before a
--- destructive step). Returns the manifest {dir, files = {{path, full, existed, backup}}}.
function M.backup(wo, backupDir)
  local m = {dir = backupDir, files = {}, created_dirs = {}}
  -- The directories writing the files will create (mkdir -p): removed again by a rollback.
  local seen = {}
  for _, f in ipairs(wo.files) do
    local dir = f.full:match("^(.*)/[^/]*$")
    while dir and dir ~= "" and not baton.fs.exists(dir) and not seen[dir] do
      seen[dir] = true
      m.created_dirs[#m.created_dirs + 1] = dir
      dir = dir:match("^(.*)/[^/]*$")
    end
  end
  table.sort(m.created_dirs, function(a, b) return #a > #b end)
  for i, f in ipairs(wo.files) do
    local e = {path = f.path, full = f.full, existed = baton.fs.exists(f.full)}
    if e.existed then
      e.backup = ("%s/%d/%s"):format(backupDir, i, f.full:match("([^/]+)$"))
      baton.fs.mkdir(e.backup:match("^(.*)/[^/]*$"))
      baton.sh({"cp", "-p", "--", f.full, e.backup})
    end
    m.files[#m.files + 1] = e
  end
  baton.fs.mkdir(backupDir)
  baton.fs.write(backupDir .. "/manifest.json", baton.json.encode({wo_id = wo.id, files = m.files,
    created_dirs = baton.json.array(m.created_dirs)}, {pretty = true}) .. "\n")
  return m
end

--- Puts back what the manifest recorded: earlier files restored, new files removed, and
--- the directories the writes created removed once empty (deepest first).
--- Returns {restored = {...}, removed = {...}, removed_dirs = {...}}.
function M.rollback(manifest)
  local r = {restored = {}, removed = {}, removed_dirs = {}}
  for i = #manifest.files, 1, -1 do
    local e = manifest.files[i]
    if e.existed then
      baton.sh({"cp", "-p", "--", e.backup, e.full})
      r.restored[#r.restored + 1] = e.path
    elseif baton.fs.exists(e.full) then
      os.remove(e.full)
      r.removed[#r.removed + 1] = e.path
    end
  end
  table.sort(r.restored)
  table.sort(r.removed)
  return r
end

M.TREE_COPY_LIMIT = 256 * 1024 * 1024

--- A copy (a tar of the regular files in a tree listing, taken before the first write), so
--- a rollback can restore what a work order's steps changed or deleted. Returns the tar's
--- path, or nil and why (more than `limit` bytes, or tar failed).
function M.copyTree(tree, tarPath, limit)
  local files, total = {}, 0
  for p, v in pairs(tree) do
    if v:sub(1, 1) == "f" then
      files[#files + 1] = p:sub(2)
      total = total + (tonumber(v:match("^%S+ (%S+)")) or 0)
    end
  end
  limit = limit or M.TREE_COPY_LIMIT
  if total > limit then
    return nil, ("its files are %d MiB, more than the %d MiB a rollback copies"):format(
        total // 1048576,
        limit // 1048576)
  end
  table.sort(files)
  baton.fs.mkdir(tarPath:match("^(.*)/[^/]*$"))
  local _, ok, _, err = baton.sh({"tar", "-C", "/", "-cf", tarPath, "--verbatim-files-from", "-T", "-"},
    {stdin = table.concat(files, "\n") .. (#files > 0 and "\n" or ""), allowFail = true, timeout = 600})
  if not ok then return nil, "tar: " .. tostring(err):gsub("%s+$", "") end
  return tarPath
end

--- Restores `paths` (absolute) from a copyTree tar. Returns the ones restored.
function M.restoreFromCopy(tarPath, paths)
  if #paths == 0 then return {} end
  local rel = {}
  for i, p in ipairs(paths) do rel[i] = p:sub(2) end
  baton.sh({"tar", "-C", "/", "-xpf", tarPath, "--verbatim-files-from", "-T", "-"},
    {stdin = table.concat(rel, "\n") .. "\n", allowFail = true, timeout = 600})
  local done = {}
  for _, p in ipairs(paths) do if baton.fs.exists(p) then done[#done + 1] = p end end
  return done
end

--- Removes the directories the manifest says the writes created, deepest first, when empty.
function M.removeCreatedDirs(manifest, r)
  for _, dir in ipairs(manifest.created_dirs or {}) do
    if baton.fs.exists(dir) and os.remove(dir) then r.removed_dirs[#r.removed_dirs + 1] = dir end
  end
end

--- Every path under the roots (that exist), as {path = "type size mtime"}, leaving out
--- the paths under `skip` (the pipeline's own directories). A rollback compares two of
--- these to find what a work order's steps created or changed.
function M.tree(roots, skip)
  local t = {}
  local function skipped(p)
    for _, s in ipairs(skip or {}) do if within(p, s) then return true end end
    return false
  end
  for _, root in ipairs(roots) do
    if baton.fs.exists(root) then
      local out = baton.sh({"find", root, "-xdev", "-printf", "%y %s %T@ %p\\n"}, {allowFail = true, readOnly = true})
      for rec in (out or ""):gmatch("[^\n]+") do
        local kind, size, mtime, path = rec:match("^(%S+) (%S+) (%S+) (.*)$")
        if path and not skipped(path) then t[path] = kind .. " " .. size .. " " .. mtime end
      end
    end
  end
  return t
end

--- After a rollback: removes what is in `after` but not in `before` (files first, then
--- directories deepest first, when empty). Returns removed, removedDirs, and the regular
--- files of `before` that were changed or deleted since.
function M.undoNew(before, after)
  local files, dirs, changed = {}, {}, {}
  for p, v in pairs(after) do
    if not before[p] then
      if v:sub(1, 1) == "d" then dirs[#dirs + 1] = p else files[#files + 1] = p end
    elseif before[p] ~= v and before[p]:sub(1, 1) == "f" then
      changed[#changed + 1] = p
    end
  end
  for p, v in pairs(before) do
    if not after[p] and v:sub(1, 1) == "f" then changed[#changed + 1] = p end
  end
  local removed, removedDirs = {}, {}
  table.sort(files)
  for _, p in ipairs(files) do if os.remove(p) then removed[#removed + 1] = p end end
  table.sort(dirs, function(a, b) return #a > #b end)
  for _, p in ipairs(dirs) do if os.remove(p) then removedDirs[#removedDirs + 1] = p end end
  table.sort(changed)
  return removed, removedDirs, changed
end

--- Writes the files; on a failed write restores what was written. true | nil, why.
function M.apply(base, wo)
  local done = {}
  for _, f in ipairs(wo.files) do
    local full = f.full or (base .. "/" .. f.path)
    local before = baton.fs.exists(full) and baton.fs.read(full) or nil
    local ok, err = pcall(baton.fs.write, full, f.content, {mode = f.mode})
    if not ok then
      for i = #done, 1, -1 do
        local d = done[i]
        if d.before then pcall(baton.fs.write, d.full, d.before) else os.remove(d.full) end
      end
      return nil, ("%s: writing %s failed: %s (earlier files of this work order restored)"):format(
          wo.file,
          f.path,
          tostring(err))
    end
    done[#done + 1] = {full = full, before = before}
  end
  return true
end

--- Runs steps (post_verify or tests) in base, each with its expected result. A step
--- that uses launchctl runs as its systemctl --user equivalent where a user service
--- manager exists, otherwise it is skipped with the reason; a `sleep` after service
--- steps that were all skipped is skipped too (it waits for services that did not start).
--- Returns ok (no step failed) and the results {{name, command, status = PASS|FAIL|SKIPPED,
--- expected, got, reason}}.
function M.steps(base, steps, svc, run)
  local results, ok = {}, true
  local services, skippedServices = 0, 0
  for _, st in ipairs(steps) do
    local res = {name = st.name, command = st.command, expected = st.expected}
    local cmd = st.command
    local isService = cmd:find("launchctl", 1, true) ~= nil or cmd:find("systemctl", 1, true) ~= nil
    if isService then
      services = services + 1
      local translated, what = launchd.translate(cmd)
      if cmd:find("launchctl", 1, true) and not translated then
        res.status, res.reason = "SKIPPED", what
      elseif not svc.available then
        res.status, res.reason = "SKIPPED", svc.why
      end
      if translated then res.linux = translated; cmd = translated end
      -- The units this step starts (a rollback stops and disables them).
      local label = st.command:match("launchctl%s+load%s+%S-([%w_.@%-]+)%.plist")
      if label then res.starts = {label .. ".timer", label .. ".service"} end
      local direct = st.command:match("systemctl%s+%-%-user%s+enable%s+(.*)$")
          or st.command:match("systemctl%s+%-%-user%s+start%s+(.*)$")
      if direct then
        res.starts = {}
        for u in direct:gmatch("[^%s;&|]+") do if not u:match("^%-") then res.starts[#res.starts + 1] = u end end
      end
      if res.status == "SKIPPED" then skippedServices = skippedServices + 1 end
    elseif cmd:match("^%s*sleep%s+[%d.]+%s*$") and services > 0 and skippedServices == services then
      res.status, res.reason = "SKIPPED", "it waits for services, and every service step before it was skipped"
    end
    if not res.status then
      local out, good, code, err
      if run then out, good, code, err = run(cmd) else out, good, code, err = baton.sh(
          cmd,
          {cwd = base, allowFail = true, timeout = 120}) end
      res.got = trim(out)
      res.exit = code
      if st.expected ~= nil then
        good = trim(out) == trim(st.expected)
        if not good then
          res.reason = ("expected %q, got %q%s"):format(trim(st.expected), trim(out),
                                                        code ~= 0 and (" (exit " .. code .. ")") or "")
        end
      elseif not good then
        res.reason = ("exit %d: %s"):format(code, trim(err) ~= "" and trim(err) or trim(out))
      end
      res.status = good and "PASS" or "FAIL"
      if not good then ok = false end
    end
    results[#results + 1] = res
  end
  return ok, results
end

--- Runs the work order's tests in base. true | nil, why, and the results.
function M.test(base, wo, svc, run)
  local ok, results = M.steps(base, wo.tests, svc or {available = true}, run)
  if ok then return true, nil, results end
  for _, r in ipairs(results) do
    if r.status == "FAIL" then return nil, ("test '%s' failed: %s"):format(r.name, r.reason), results end
  end
end

return M
