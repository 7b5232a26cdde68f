-- kit.args: command-line words for recipes.
--
--   local args = require("kit.args")
--   local o = args.parse{
--     usage = USAGE,                       -- printed for `help`, `--help`, `-h` (optional: without
--                                          -- it the usage is made from the options)
--     description = "what it does",         -- under a made usage
--     -- each option may say `help = "what it is for"`: --help lists it with its form and default
--     options = {risk = {choices = {"low", "medium", "high"}}, cwd = {}, poll = {number = true, min = 0.01}},
--     positional = "task",                 -- other words are joined into o.task (optional)
--   }
--   if o.help then return end               -- usage was printed
--
-- A word is an option when it looks like `name=value` with `name` an identifier, or
-- `--name value`, `--name=value` (dashes in the name read as '_'), or `--name` for an
-- option with `flag = true` (a boolean; `name=1`/`name=0` work too). Words after `--` are
-- positional.
-- An unknown option, a bad choice or a bad number ends the run with exit code 3
-- (a usage error) and a message naming the option; nothing having run, the run
-- directory is removed (no failed run is left behind).
local M = {}

M.USAGE_CODE = 3

local Failure = {__tostring = function(e) return e.message end, __name = "baton.failure"}

--- Ends the run with exit code `code` and a message prefixed with the recipe's file
--- name (not the line inside a library module, which would tell the user nothing).
function M.fail(message, code, kind)
  local recipe = (arg and arg[0] or "recipe"):match("([^/]+)$")
  error(setmetatable({message = recipe .. ": " .. message, code = code or 1, kind = kind or "fail"}, Failure), 0)
end

local function usageError(msg, usage)
  if usage then io.stderr:write(usage, "\n") end
  -- kind "args": the runner reports it as a usage error and keeps no run directory.
  M.fail(msg, M.USAGE_CODE, "args")
end

-- The closest known name, for a "did you mean" hint (edit distance <= 2).
local function closest(name, known)
  return require("kit.suggest").closest(name, known, {within = function(d) return d <= 2 end})
end
M.closest = closest

local function isHelp(w)
  return w == "help" or w == "--help" or w == "-h"
end

--- One option as `--help` shows it: its form, its help text and what it accepts.
local function describe(name, opt)
  local form = "--" .. name:gsub("_", "-")
      .. (opt.flag and "" or ("=" .. (opt.choices and table.concat(opt.choices, "|") or
    (opt.number and "N" or (opt.list and "A,B,..." or "VALUE")))))
  local notes = {}
  if opt.required then notes[#notes + 1] = "required" end
  if opt.number and opt.min then notes[#notes + 1] = "at least " .. opt.min end
  if opt.default ~= nil then notes[#notes + 1] = "default " .. tostring(opt.default) end
  local text = opt.help or ""
  if #notes > 0 then text = text .. (text ~= "" and " " or "") .. "(" .. table.concat(notes, "; ") .. ")" end
  return (("  %-28s %s"):format(form, text):gsub("%s+$", ""))
end

--- The text `help`, `--help` and `-h` print: the recipe's `usage`, then every option that
--- has a `help` text; with no `usage`, one made from the options (each also as name=value).
function M.usage(spec)
  local names = {}
  for k, opt in pairs(spec.options or {}) do
    if opt.help or not spec.usage then names[#names + 1] = k end
  end
  table.sort(names)
  local lines = {}
  if spec.usage then
    lines[1] = spec.usage
  else
    local recipe = arg and arg[0] or "RECIPE"
    lines[1] = ("usage: baton run %s [options]%s"):format(recipe,
                                                          spec.positional and (" [" .. spec.positional .. "]") or "")
    if spec.description then lines[#lines + 1] = "\n" .. spec.description end
  end
  if #names > 0 then
    lines[#lines + 1] = "\noptions (--name value, --name=value or name=value):"
    for _, k in ipairs(names) do lines[#lines + 1] = describe(k, spec.options[k]) end
  end
  return table.concat(lines, "\n")
end

--- One option's value checked against its declaration (required, choices, number, flag,
--- list) and converted in `o`.
local function checkOption(o, name, opt, usage)
  local v = o[name]
  if v == nil and opt.default ~= nil then v = opt.default; o[name] = v end
  if v ~= nil then
    if opt.required and v == "" then usageError(("option '%s' must not be empty"):format(name), usage) end
    if opt.choices then
      local okv = false
      for _, c in ipairs(opt.choices) do if v == c then okv = true end end
      if not okv then
        usageError(("option '%s' must be one of %s, got '%s'"):format(name, table.concat(opt.choices, "|"), v), usage)
      end
    end
    if opt.number then
      local n = tonumber(v)
      if not n or n ~= n or n == math.huge or n == -math.huge then
        usageError(("option '%s' must be a number, got '%s'"):format(name, tostring(v)), usage)
      end
      if opt.min and n < opt.min then
        usageError(("option '%s' must be at least %s, got %s"):format(name, opt.min, v), usage)
      end
      o[name] = n
    end
    if opt.flag then
      local b = ({["1"] = true, ["true"] = true, yes = true, ["0"] = false, ["false"] = false, no = false})[tostring(v)]
      if b == nil then usageError(("option '%s' is a flag: 1 or 0, got '%s'"):format(name, tostring(v)), usage) end
      o[name] = b
    end
    if opt.list and type(o[name]) == "string" then o[name] = M.split(o[name], opt.sep or ",") end
  elseif opt.required then
    usageError(("option '%s=...' is required"):format(name), usage)
  end
end

--- Splits `words` (default: the recipe's `arg`) into options and positional words.
function M.parse(spec, words)
  words = words or arg or {}
  local options = spec.options or {}
  local known = {}
  for k in pairs(options) do known[#known + 1] = k end
  table.sort(known)
  local o, rest = {}, {}
  if (#words == 1 and isHelp(words[1])) or (#words >= 1 and (words[1] == "--help" or words[1] == "-h")) then
    print(M.usage(spec))
    baton.usageOnly() -- nothing runs: the runner keeps no run directory
    o.help = true
    return o
  end
  local i, onlyWords = 0, false
  while i < #words do
    i = i + 1
    local w = words[i]
    local k, v = w:match("^([%a_][%w_]*)=(.*)$")
    if onlyWords then
      k = nil
    elseif w == "--" then
      onlyWords = true
      goto continue
    elseif w:match("^%-%-[%a_]") then
      -- The usual command-line forms too: --name value, --name=value, --flag.
      local name, value = w:match("^%-%-([%w_%-]+)=(.*)$")
      name = (name or w:sub(3)):gsub("%-", "_")
      local opt = options[name]
      if not opt then
        local hint = closest(name, known)
        usageError(("unknown option '--%s'%s; known options: %s"):format(name:gsub("_", "-"),
          hint and (" (did you mean '--" .. hint:gsub("_", "-") .. "'?)") or "", table.concat(known, ", ")), spec.usage)
      end
      if value == nil and opt.flag then
        value = "1"
      elseif value == nil then
        i = i + 1
        value = words[i]
        if value == nil then usageError(("option '--%s' needs a value"):format(w:sub(3)), spec.usage) end
      end
      k, v = name, value
    end
    if k then
      local opt = options[k]
      if not opt and k ~= spec.positional then
        local hint = closest(k, known)
        usageError(("unknown option '%s'%s; known options: %s"):format(k,
          hint and (" (did you mean '" .. hint .. "'?)") or "", table.concat(known, ", ")), spec.usage)
      end
      if k == spec.positional and not opt then
        rest[#rest + 1] = v
      else
        o[k] = v
      end
    else
      rest[#rest + 1] = w
    end
    ::continue::
  end
  if not spec.positional and #rest > 0 then
    usageError(("unexpected word '%s' (options are name=value)"):format(rest[1]), spec.usage)
  end
  if spec.positional then o[spec.positional] = table.concat(rest, " ") end
  for name, opt in pairs(options) do checkOption(o, name, opt, spec.usage) end
  return o
end

--- Splits on a separator, trimming blanks and dropping empty items.
function M.split(s, sep)
  local out = {}
  for item in (s .. sep):gmatch("(.-)" .. sep:gsub("%p", "%%%0")) do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then out[#out + 1] = item end
  end
  return out
end

--- Quotes a word for /bin/sh.
function M.shquote(s)
  s = tostring(s)
  if s:match("^[%w%._/:=@%-]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

return M
