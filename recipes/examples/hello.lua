-- A small, real pipeline: check the ground, make data, count it, verify, record.
-- baton run recipes/examples/hello.lua [words=N]
local words = tonumber(baton.args.words or "100")

preflight{
  name = "tools",
  checks = {
    {cmd = {"sh", "-c", "command -v wc && command -v sort"}},
    {path = ".", dir = true},
  },
}

local out = baton.run.dir .. "/work"
baton.fs.mkdir(out)

runStage{
  id = "generate",
  cmd = {"sh", "-c",
         "i=0; while [ $i -lt " .. words .. " ]; do echo word$((i % 7)); i=$((i+1)); done > " .. out .. "/words.txt"},
  requireFiles = {out .. "/words.txt"},
  timeout = 60,
}

local count = runStage{id = "count", cmd = "sort " .. out .. "/words.txt | uniq -c | sort -rn", timeout = 60}

local lines = runStage{id = "total", cmd = {"wc", "-l", out .. "/words.txt"}}
local total = tonumber(lines.stdout:match("(%d+)"))

gate{
  name = "verify",
  maxIterations = 1,
  check = function()
    local issues = {}
    if total ~= words then issues[#issues + 1] = ("expected %d words, found %s"):format(words, tostring(total)) end
    return {approved = #issues == 0, issues = issues}
  end,
}

local top = count.stdout:match("^%s*(%d+)%s+(%S+)")
persistFinal{words = total, distinct = select(2, count.stdout:gsub("\n", "\n"))}
print(("counted %d words; the commonest appears %s times"):format(total, top or "?"))
return {ok = true}
