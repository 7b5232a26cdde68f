-- gap09.worktree: what a stage changed in the work tree, and the snapshot that lets a
-- pipeline put the tree back when verification is exhausted (fail closed).
--
--   local wt = require("gap09.worktree")
--   local before = wt.fingerprint(cwd)        -- {path = hash}
--   ... a stage runs ...
--   local changed = wt.changed(before, wt.fingerprint(cwd))   -- sorted paths
--   local snap = wt.snapshot(cwd, dir)        -- a copy of the tree (without .git)
--   local r = wt.restore(cwd, snap)           -- {modified = {...}, added = {...}, deleted = {...}}
--
-- In a git work tree the fingerprint hashes only what `git status` lists (modified,
-- added, untracked, deleted), so it is cheap and says "from git"; elsewhere it hashes
-- every file. .git itself is never fingerprinted, copied or restored.
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

function M.isGit(cwd)
  local out = sh("git rev-parse --is-inside-work-tree 2>/dev/null", cwd)
  return out ~= nil and out:match("true") ~= nil
end

--- {path = hash} of the files that can have changed, and whether git said which.
function M.fingerprint(cwd)
  local fp = {}
  if M.isGit(cwd) then
    -- Paths relative to cwd; "deleted" for a tracked file that is gone.
    local prefix = (sh("git rev-parse --show-prefix", cwd) or ""):gsub("%s+$", "")
    local st = sh("git -c core.quotePath=false status --porcelain=v1 -uall --no-renames -- . 2>/dev/null", cwd) or ""
    for _, l in ipairs(lines(st)) do
      local code, path = l:sub(1, 2), l:sub(4)
      path = path:gsub('^"(.*)"$', "%1")
      if path:sub(1, #prefix) == prefix then
        path = path:sub(#prefix + 1)
        if code:find("D") then fp[path] = "deleted" else fp[path] = "?" end
      end
    end
    local paths = {}
    for p, h in pairs(fp) do if h == "?" then paths[#paths + 1] = p end end
    table.sort(paths)
    if #paths > 0 then
      local hashes = lines(baton.sh("git hash-object --stdin-paths", {cwd = cwd, stdin = table.concat(paths, "\n") .. "\n",
        allowFail = true, timeout = 300, readOnly = true}))
      for i, p in ipairs(paths) do fp[p] = hashes[i] or "?" end
    end
    return fp, "git"
  end
  local out = sh("find . -path ./.git -prune -o -type f -print0 | xargs -0 -r cksum", cwd) or ""
  for _, l in ipairs(lines(out)) do
    local sum, size, path = l:match("^(%d+) (%d+) %./(.*)$")
    if path then fp[path] = sum .. ":" .. size end
  end
  return fp, "files"
end

--- Paths whose state differs between two fingerprints, sorted.
function M.changed(before, after)
  local seen, out = {}, {}
  for p, h in pairs(after) do
    if before[p] ~= h then out[#out + 1] = p end
    seen[p] = true
  end
  for p, h in pairs(before) do
    -- In git mode a path that left `git status` went back to HEAD: changed too.
    if not seen[p] then out[#out + 1] = p end
  end
  table.sort(out)
  return out
end

--- Copies the tree (without .git) to dir/tree. Returns the snapshot, or nil and why.
function M.snapshot(cwd, dir)
  local tree = dir .. "/tree"
  local _, ok, _, err = baton.sh(("rm -rf %s && mkdir -p %s && tar -C %s --exclude=./.git -cf - . | tar -C %s -xf -")
    :format(q(tree), q(tree), q(cwd), q(tree)), {allowFail = true, timeout = 600})
  if not ok then return nil, (err or ""):gsub("%s+$", "") end
  local head = M.isGit(cwd) and (sh("git rev-parse HEAD 2>/dev/null", cwd) or ""):gsub("%s+$", "") or nil
  return {tree = tree, cwd = cwd, head = head ~= "" and head or nil, at = baton.now()}
end

local function files(root)
  local set = {}
  for _, p in ipairs(lines(sh("find . -path ./.git -prune -o \\( -type f -o -type l \\) -print", root))) do
    set[(p:gsub("^%./", ""))] = true
  end
  return set
end

--- Puts the work tree back as the snapshot has it. Returns {modified, added, deleted}
--- (sorted paths: restored, removed, brought back) and, when HEAD moved, head_moved.
function M.restore(cwd, snap)
  local now, was = files(cwd), files(snap.tree)
  local r = {modified = {}, added = {}, deleted = {}}
  for p in pairs(now) do
    if not was[p] then
      r.added[#r.added + 1] = p
    else
      local _, same = baton.sh({"cmp", "-s", snap.tree .. "/" .. p, cwd .. "/" .. p}, {allowFail = true, readOnly = true})
      if not same then r.modified[#r.modified + 1] = p end
    end
  end
  for p in pairs(was) do if not now[p] then r.deleted[#r.deleted + 1] = p end end
  for _, k in ipairs({"modified", "added", "deleted"}) do table.sort(r[k]) end
  for _, p in ipairs(r.added) do
    os.remove(cwd .. "/" .. p)
    -- Directories the pipeline made for it go too, when empty and not in the snapshot.
    local dir = p:match("^(.*)/[^/]+$")
    while dir do
      local _, had = baton.sh({"test", "-d", snap.tree .. "/" .. dir}, {allowFail = true, readOnly = true})
      if had or not os.remove(cwd .. "/" .. dir) then break end
      dir = dir:match("^(.*)/[^/]+$")
    end
  end
  local back = {}
  for _, p in ipairs(r.modified) do back[#back + 1] = p end
  for _, p in ipairs(r.deleted) do back[#back + 1] = p end
  if #back > 0 then
    baton.sh(("tar -C %s -cf - -- %s | tar -C %s -xf -"):format(q(snap.tree),
      table.concat((function() local t = {} for i, p in ipairs(back) do t[i] = q("./" .. p) end return t end)(), " "), q(cwd)),
      {timeout = 600})
  end
  if snap.head then
    local head = (sh("git rev-parse HEAD 2>/dev/null", cwd) or ""):gsub("%s+$", "")
    if head ~= snap.head then r.head_moved = {from = snap.head, to = head} end
  end
  return r
end

return M
