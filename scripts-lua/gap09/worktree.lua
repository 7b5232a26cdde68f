-- gap09.worktree: what a stage changed in the work tree, and the snapshot that lets a
-- pipeline put the tree back when verification is exhausted (fail closed).
--
--   local wt = require("gap09.worktree")
--   local before = wt.fingerprint(cwd)        -- {path = hash}
--   ... a stage runs ...
--   local changed = wt.changed(before, wt.fingerprint(cwd))   -- sorted paths
--   local snap = wt.snapshot(cwd, dir)        -- a copy of the tree (without .git and the runs)
--   local r = wt.restore(cwd, snap)           -- {modified = {...}, added = {...}, deleted = {...}, ...}
--   local m = wt.manifest(cwd)                -- {path = "f MODE SHA1" | "d MODE" | "l TARGET"}
--   wt.hash(m)                                -- one hash for the whole tree
--
-- In a git work tree the fingerprint hashes only what `git status` lists (modified,
-- added, untracked, deleted), so it is cheap and says "from git"; elsewhere it hashes
-- every file. `.git` and Baton's runs directory (wherever it is: ./.baton/runs, --runs-dir,
-- BATON_RUNS_DIR) are never fingerprinted, copied, restored or removed.
local kit = require("kit.args")
local q = kit.shquote

local M = {}

local function sh(cmd, cwd)
  local out, ok = baton.sh(cmd, {cwd = cwd, allowFail = true, timeout = 300, readOnly = true})
  return ok and out or nil
end

local function lines(text)
  local out = {}
  for l in (text or ""):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function trim(s) return ((s or ""):gsub("%s+$", "")) end

local function realpath(p)
  return trim(sh("cd " .. q(p) .. " 2>/dev/null && pwd -P", nil))
end

--- The paths (relative to cwd, no leading ./) that are never part of the work tree:
--- .git and, when it lies inside cwd, the runs directory of this run.
function M.excluded(cwd)
  local out = {".git"}
  if baton.run and baton.run.dir then
    local root, runs = realpath(cwd), realpath(baton.run.dir .. "/..")
    if root ~= "" and runs ~= "" and runs:sub(1, #root + 1) == root .. "/" then out[#out + 1] = runs:sub(#root + 2) end
  end
  return out
end

local function underAny(path, excl)
  for _, e in ipairs(excl) do
    if path == e or path:sub(1, #e + 1) == e .. "/" then return true end
  end
  return false
end

local function prune(excl)
  local t = {}
  for _, e in ipairs(excl) do t[#t + 1] = "-path " .. q("./" .. e) end
  return "\\( " .. table.concat(t, " -o ") .. " \\) -prune -o"
end

function M.isGit(cwd)
  local out = sh("git rev-parse --is-inside-work-tree 2>/dev/null", cwd)
  return out ~= nil and out:match("true") ~= nil
end

-- The commit a git fingerprint was taken at (weak keys: fingerprints are not kept).
local heads = setmetatable({}, {__mode = "k"})

--- {path = hash} of the files that can have changed, and whether git said which.
function M.fingerprint(cwd)
  local fp = {}
  local excl = M.excluded(cwd)
  if M.isGit(cwd) then
    local head = trim(sh("git rev-parse -q --verify HEAD 2>/dev/null", cwd))
    if head ~= "" then heads[fp] = {head = head, cwd = cwd, excl = excl} end
    -- Paths relative to cwd; "deleted" for a tracked file that is gone.
    local prefix = trim(sh("git rev-parse --show-prefix", cwd))
    local st = sh("git -c core.quotePath=false status --porcelain=v1 -uall --no-renames -- . 2>/dev/null", cwd) or ""
    for _, l in ipairs(lines(st)) do
      local code, path = l:sub(1, 2), l:sub(4)
      path = path:gsub('^"(.*)"$', "%1")
      if path:sub(1, #prefix) == prefix then
        path = path:sub(#prefix + 1)
        if not underAny(path, excl) then
          if code:find("D") then fp[path] = "deleted" else fp[path] = "?" end
        end
      end
    end
    local paths = {}
    for p, h in pairs(fp) do if h == "?" then paths[#paths + 1] = p end end
    table.sort(paths)
    if #paths > 0 then
      local hashes = lines(baton.sh("git hash-object --stdin-paths",
                                    {cwd = cwd, stdin = table.concat(paths, "\n") .. "\n",
        allowFail = true, timeout = 300, readOnly = true}))
      for i, p in ipairs(paths) do fp[p] = hashes[i] or "?" end
    end
    return fp, "git"
  end
  local out = sh("find . " .. prune(excl) .. " -type f -print0 | xargs -0 -r cksum", cwd) or ""
  for _, l in ipairs(lines(out)) do
    local sum, size, path = l:match("^(%d+) (%d+) %./(.*)$")
    if path then fp[path] = sum .. ":" .. size end
  end
  return fp, "files"
end

--- Paths whose state differs between two fingerprints, sorted. In git, files that
--- commits made in between changed count too (a stage that commits its work changed it).
function M.changed(before, after)
  local seen, out = {}, {}
  for p, h in pairs(after) do
    if before[p] ~= h then out[#out + 1] = p end
    seen[p] = true
  end
  for p in pairs(before) do
    -- In git mode a path that left `git status` went back to HEAD: changed too.
    if not seen[p] then out[#out + 1] = p; seen[p] = true end
  end
  local b, a = heads[before], heads[after]
  if b and a and b.head ~= a.head then
    local names = sh("git -c core.quotePath=false diff --name-only --no-renames --relative " .. q(b.head) .. " "
                     .. q(a.head)
      .. " -- . 2>/dev/null", a.cwd)
    for _, p in ipairs(lines(names)) do
      if not seen[p] and not underAny(p, a.excl) then out[#out + 1] = p; seen[p] = true end
    end
  end
  table.sort(out)
  return out
end

--- Every entry of the tree under `root` but the excluded paths: {path = "f MODE SHA1"
--- (files), "d MODE" (directories), "l TARGET" (symbolic links)}. Two equal manifests are
--- the same tree: same files, bytes and modes, no other file or directory.
function M.manifest(root, excl)
  excl = excl or {".git"}
  local out = sh("find . " .. prune(excl) .. " -printf '%y %m %P\\t%l\\n'; echo '--- sums'; find . " .. prune(excl)
    .. " -type f -print0 | xargs -0 -r sha1sum", root) or ""
  local m, sums = {}, false
  for _, l in ipairs(lines(out)) do
    if l == "--- sums" then sums = true
    elseif sums then
      local h, p = l:match("^(%x+)  %./(.*)$")
      if p and m[p] then m[p] = m[p] .. " " .. h end
    else
      local y, mode, p, target = l:match("^(%a) (%d+) (.-)\t(.*)$")
      if p and p ~= "" then
        if y == "l" then m[p] = "l " .. target
        elseif y == "d" then m[p] = "d " .. mode
        else m[p] = y .. " " .. mode end
      end
    end
  end
  return m
end

--- The manifest of what counts as the code: in a git work tree, without the files git
--- ignores (caches and build output a verifier's test run may write: .pytest_cache,
--- __pycache__, .mypy_cache, when .gitignore lists them); elsewhere every file.
function M.codeManifest(cwd, excl)
  local m = M.manifest(cwd, excl)
  if not M.isGit(cwd) then return m end
  local ignored = lines(sh("git ls-files --others --ignored --exclude-standard --directory 2>/dev/null", cwd))
  if #ignored == 0 then return m end
  local drop = {}
  for i, x in ipairs(ignored) do drop[i] = (x:gsub("/$", "")) end
  for path in pairs(m) do
    if underAny(path, drop) then m[path] = nil end
  end
  return m
end

--- The work tree as a stage's declared inputs (runStage's `inputs`): every file under `cwd`
--- but git-ignored ones (Baton itself never includes .git and the runs directory).
function M.inputs(cwd)
  local out = {"?."}
  if M.isGit(cwd) then
    for _, x in ipairs(lines(sh("git ls-files --others --ignored --exclude-standard --directory 2>/dev/null", cwd))) do
      out[#out + 1] = "!" .. x
    end
  end
  return out
end

--- Copies the tree (without .git and the runs directory) to dir/tree, modes kept; in git,
--- also HEAD, the branch and the index. Returns the snapshot, or nil and why.
function M.snapshot(cwd, dir, opts)
  opts = opts or {}
  local tree = dir .. "/tree"
  local excl = M.excluded(cwd)
  local ex = {}
  for _, e in ipairs(excl) do ex[#ex + 1] = "--exclude=" .. q("./" .. e) end
  local _, ok, _, err = baton.sh(("rm -rf %s && mkdir -p %s && tar -C %s %s -cf - . | tar -C %s -xpf -")
    :format(q(tree), q(tree), q(cwd), table.concat(ex, " "), q(tree)), {allowFail = true, timeout = 600})
  if not ok then return nil, trim(err) end
  local snap = {tree = tree, cwd = cwd, at = baton.now(), excluded = excl}
  if not opts.files and M.isGit(cwd) then
    local head = trim(sh("git rev-parse HEAD 2>/dev/null", cwd))
    snap.head = head ~= "" and head or nil
    local ref = trim(sh("git symbolic-ref -q HEAD 2>/dev/null", cwd))
    snap.ref = ref ~= "" and ref or nil
    local index = trim(sh("git rev-parse --path-format=absolute --git-path index 2>/dev/null", cwd))
    if index ~= "" and baton.fs.exists(index) then
      local _, copied = baton.sh({"cp", "-p", index, dir .. "/index"}, {allowFail = true})
      if copied then snap.index = dir .. "/index" end
    end
  end
  return snap
end

local function plural(n, one, many)
  return ("%d %s"):format(n, n == 1 and one or (many or one .. "s"))
end
M.plural = plural

--- Undoes the commits made since the snapshot: HEAD (and its branch) back to the snapshot's
--- commit, the index as it was; the commits are kept on branch `keep`. Returns nil when
--- HEAD did not move, else {from, to, commits, branch}.
local function undoCommits(cwd, snap, keep)
  if not snap.head then return nil end
  local head = trim(sh("git rev-parse HEAD 2>/dev/null", cwd))
  local ref = trim(sh("git symbolic-ref -q HEAD 2>/dev/null", cwd))
  if head == snap.head and (ref ~= "" and ref or nil) == snap.ref then return nil end
  local moved = {from = snap.head, to = head}
  moved.commits = tonumber(trim(sh("git rev-list --count " .. q(snap.head) .. ".." .. q(head) .. " 2>/dev/null",
                                   cwd))) or 0
  local function git(cmd)
    local _, ok, _, err = baton.sh("git " .. cmd, {cwd = cwd, allowFail = true, timeout = 120})
    if not ok then moved.error = (moved.error and (moved.error .. "; ") or "") .. trim(err) end
    return ok
  end
  if head ~= "" and moved.commits > 0 and keep then
    if git("branch -f " .. q(keep) .. " " .. q(head)) then moved.branch = keep end
  end
  -- Back to the branch (or detached commit) of before, at its commit; the work tree is
  -- restored from the snapshot afterwards.
  if snap.ref then
    git("symbolic-ref HEAD " .. q(snap.ref))
    git("update-ref -m " .. q("baton: revert of rejected work") .. " HEAD " .. q(snap.head))
  else
    git("update-ref --no-deref HEAD " .. q(snap.head))
  end
  if snap.index then
    local index = trim(sh("git rev-parse --path-format=absolute --git-path index 2>/dev/null", cwd))
    if index ~= "" then baton.sh({"cp", "-p", snap.index, index}, {allowFail = true}) end
  else
    git("reset -q")
  end
  return moved
end

--- The files (and links) that differ between the snapshot and the tree now, sorted: what
--- the pipeline changed since, also across a resume (a replayed stage reports no change).
function M.changedSince(cwd, snap)
  local now, was = M.manifest(cwd, snap.excluded or M.excluded(cwd)), M.manifest(snap.tree, {".git"})
  local out = {}
  for p, v in pairs(now) do if was[p] ~= v and v:sub(1, 1) ~= "d" then out[#out + 1] = p end end
  for p, w in pairs(was) do if not now[p] and w:sub(1, 1) ~= "d" then out[#out + 1] = p end end
  table.sort(out)
  return out
end

--- Puts the work tree back as the snapshot has it: same files, bytes and modes, no file or
--- directory that was not there, deleted ones back; in git, commits made since are undone
--- and kept on branch `opts.keep`. Never touches .git's files or the runs directory.
--- Returns {modified, added, deleted} (files and links, sorted: restored, removed, brought
--- back), {dirs_added, dirs_deleted, dirs_mode}, head_moved, and `differs` (paths that
--- still differ afterwards: empty when the revert is complete).
function M.restore(cwd, snap, opts)
  opts = opts or {}
  local r = {modified = {}, added = {}, deleted = {}, dirs_added = {}, dirs_deleted = {}, dirs_mode = {}}
  if not opts.files then r.head_moved = undoCommits(cwd, snap, opts.keep) end
  local excl = snap.excluded or M.excluded(cwd)
  local now, was = M.manifest(cwd, excl), M.manifest(snap.tree, {".git"})
  local back, gone = {}, {}
  for p, v in pairs(now) do
    local w = was[p]
    local isDir = v:sub(1, 1) == "d"
    if not w then
      if isDir then r.dirs_added[#r.dirs_added + 1] = p else r.added[#r.added + 1] = p end
    elseif w ~= v then
      if isDir and w:sub(1, 1) == "d" then r.dirs_mode[#r.dirs_mode + 1] = p; back[#back + 1] = p
      else
        r.modified[#r.modified + 1] = p
        -- A type change (file to directory, ...): the new one goes, the old one comes back.
        if w:sub(1, 1) ~= v:sub(1, 1) then gone[#gone + 1] = p end
        back[#back + 1] = p
      end
    end
  end
  for p, w in pairs(was) do
    if not now[p] then
      if w:sub(1, 1) == "d" then r.dirs_deleted[#r.dirs_deleted + 1] = p else r.deleted[#r.deleted + 1] = p end
      back[#back + 1] = p
    end
  end
  for _, k in ipairs({"modified", "added", "deleted", "dirs_added", "dirs_deleted", "dirs_mode"}) do
    table.sort(r[k])
  end
  for _, p in ipairs(r.added) do os.remove(cwd .. "/" .. p) end
  for _, p in ipairs(gone) do baton.sh({"rm", "-rf", "--", cwd .. "/" .. p}, {allowFail = true}) end
  -- Deepest first: a directory the pipeline made is empty once its files are gone.
  local dirs = {table.unpack(r.dirs_added)}
  table.sort(dirs, function(a, b) return #a > #b end)
  for _, p in ipairs(dirs) do
    if not os.remove(cwd .. "/" .. p) then baton.sh({"rm", "-rf", "--", cwd .. "/" .. p}, {allowFail = true}) end
  end
  table.sort(back)
  if #back > 0 then
    local list = {}
    for i, p in ipairs(back) do list[i] = "./" .. p end
    -- Parents first (sorted), no recursion: exactly these entries, with their modes.
    baton.sh(("tar -C %s --no-recursion -T - -cf - | tar -C %s -xpf -"):format(q(snap.tree), q(cwd)),
      {stdin = table.concat(list, "\n") .. "\n", timeout = 600})
  end
  local after = M.manifest(cwd, excl)
  r.differs = {}
  for p, v in pairs(after) do if was[p] ~= v then r.differs[#r.differs + 1] = p end end
  for p in pairs(was) do if not after[p] then r.differs[#r.differs + 1] = p end end
  table.sort(r.differs)
  return r
end

return M
