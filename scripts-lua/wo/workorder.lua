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
-- apply() writes every file (each atomically, with its mode) only after all of them
-- passed validation, and restores the earlier contents if a write fails half way.
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

--- Lexically normalises a relative path; nil, why when it is absolute or leaves its root.
function M.normalize(p)
  if type(p) ~= "string" or p == "" then return nil, "the path is empty" end
  if p:sub(1, 1) == "/" or p:sub(1, 1) == "~" then return nil, ("path %s is absolute; paths are relative to base"):format(p) end
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

--- Decodes and validates a work order file. Returns wo, or nil, reason and the wo_id
--- when the file had a usable one.
function M.load(file)
  local okRead, text = pcall(baton.fs.read, file)
  if not okRead then return nil, ("%s: cannot read: %s"):format(file, tostring(text)) end
  local ok, doc = pcall(baton.yaml.decode, text)
  if not ok then
    local msg = type(doc) == "table" and doc.message or tostring(doc)
    return nil, ("%s: invalid YAML: %s"):format(file, (msg:gsub("^.-invalid YAML: ", "")))
  end
  if type(doc) ~= "table" then return nil, ("%s: a work order must be a YAML mapping"):format(file) end
  local knownID = type(doc.wo_id) == "string" and doc.wo_id:match("^[%w_.%-]+$") and doc.wo_id or nil
  local function bad(field, why) return nil, ("%s: field '%s' %s"):format(file, field, why), knownID end
  if type(doc.wo_id) ~= "string" or not doc.wo_id:match("^[%w_.%-]+$") then
    return bad("wo_id", "is required: letters, digits, '.', '_', '-'")
  end
  if type(doc.files) ~= "table" or #doc.files == 0 then return bad("files", "must be a non-empty list") end
  local wo = {id = doc.wo_id, title = doc.title, type = doc.type, file = file, files = {}, tests = {}}
  for i, f in ipairs(doc.files) do
    local where = ("files[%d]"):format(i)
    if type(f) ~= "table" then return bad(where, "must be a mapping with path and content") end
    if type(f.path) ~= "string" then return bad(where .. ".path", "is required (a string)") end
    local content = f.content
    if type(content) == "number" or type(content) == "boolean" then content = tostring(content) end
    if type(content) ~= "string" then return bad(where .. ".content", "is required (a string)") end
    local path, why = M.normalize(f.path)
    if not path then return bad(where .. ".path", "refused: " .. why) end
    local mode, mwhy = M.mode(f.mode)
    if not mode then return bad(where .. ".mode", mwhy) end
    wo.files[#wo.files + 1] = {path = path, content = content, mode = mode}
  end
  if doc.tests ~= nil and type(doc.tests) ~= "table" then return bad("tests", "must be a list") end
  for i, t in ipairs(doc.tests or {}) do
    if type(t) ~= "table" or type(t.command) ~= "string" then return bad(("tests[%d].command"):format(i), "is required (a string)") end
    wo.tests[#wo.tests + 1] = {name = t.name or t.command, command = t.command, expected = t.expected}
  end
  return wo
end

--- The real path of base/rel with symlinks resolved (the file need not exist).
local function realpath(p)
  local out, ok = baton.sh({"realpath", "-m", "--", p}, {allowFail = true})
  return ok and trim(out) or nil
end

--- Checks every path stays inside base once symlinks are resolved.
function M.contained(base, wo)
  local root = realpath(base)
  if not root then return nil, "cannot resolve base " .. base end
  for _, f in ipairs(wo.files) do
    local real = realpath(base .. "/" .. f.path)
    if not real or real:sub(1, #root + 1) ~= root .. "/" then
      return nil, ("%s: path %s refused: it resolves to %s, outside base %s"):format(wo.file, f.path, tostring(real), root)
    end
  end
  return true
end

--- Writes the files; on a failed write restores what was written. true | nil, why.
function M.apply(base, wo)
  local done = {}
  for _, f in ipairs(wo.files) do
    local full = base .. "/" .. f.path
    local before = baton.fs.exists(full) and baton.fs.read(full) or nil
    local ok, err = pcall(baton.fs.write, full, f.content, {mode = f.mode})
    if not ok then
      for i = #done, 1, -1 do
        local d = done[i]
        if d.before then pcall(baton.fs.write, d.full, d.before) else os.remove(d.full) end
      end
      return nil, ("%s: writing %s failed: %s (earlier files of this work order restored)"):format(wo.file, f.path, tostring(err))
    end
    done[#done + 1] = {full = full, before = before}
  end
  return true
end

--- Runs the work order's tests in base. true | nil, why.
function M.test(base, wo)
  for _, t in ipairs(wo.tests) do
    local out, ok, code, err = baton.sh(t.command, {cwd = base, allowFail = true, timeout = 120})
    if t.expected ~= nil then
      if trim(out) ~= trim(t.expected) then
        return nil, ("test '%s' failed: expected %q, got %q%s"):format(t.name, trim(t.expected), trim(out), ok and "" or (" (exit " .. code .. ")"))
      end
    elseif not ok then
      return nil, ("test '%s' failed with exit %d: %s"):format(t.name, code, trim(err))
    end
  end
  return true
end

return M
