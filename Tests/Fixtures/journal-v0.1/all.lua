-- Exercises every journal event type (used to make Tests/Fixtures/journal-v0.1).
preflight{name = "tools", policy = "warn", checks = {{path = "all.lua"}, {env = "HOME"}, {cmd = {"true"}}, {path = "/nonexistent"}}}
runStage{id = "build", cmd = {"sh", "-c", "echo built; sleep 0.4"}}
local r = runStage{id = "flaky", cmd = "echo oops >&2; exit 75", retries = 1, backoff = {initial = 0.05},
                   transient = {exit = {75}}, allowFail = true}
runStage{id = "build", cmd = {"true"}}
local bg = runStage{id = "job", cmd = "sleep 0.2; mkdir -p out; echo 1 > out/m.json", background = true}
watch{id = "w", handle = bg, requireFiles = {"out/m.json"}, readyTimeoutSec = 5, heartbeatSec = 0.1,
      callback = function(info) return {seen = true} end}
local n = 0
gate{name = "review", maxIterations = 2, check = function(i) n = n + 1; return {approved = n > 1, issues = n > 1 and {} or {"too short"}} end,
     onReject = function() end}
baton.log("halfway", {k = 1})
persistFinal{partial = true}
return {done = true}
