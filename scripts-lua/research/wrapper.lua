-- research.wrapper: the signal-safe wrapper a research job runs under.
--
--   runStage{id = "job", cmd = wrapper.command(out, run_id, job_shell_text), background = true}
--
-- It runs the job (`sh -c JOB`) and, whatever happens, leaves a valid JSON object in
-- OUT/metrics.json with a "status": "succeeded" (exit 0), "failed" (non-zero exit) or
-- "cancelled" (SIGTERM/SIGINT/SIGHUP: written at once on the signal, before the job is
-- stopped, and again after it ends). The job's own metrics.json is kept and merged
-- (status, run_id, exit_code, reason, started_at and ended_at are added); an invalid one
-- is moved to metrics.json.invalid. Writes are atomic (temp file, fsync, rename).
-- Before the job starts, a provisional metrics.json says "cancelled" (replacing any
-- stale one), so even a SIGKILL of the whole group leaves a valid file; the final
-- write replaces it.
-- Merging uses python3; without it, the job's file is kept as metrics.json.unmerged and
-- a minimal metrics.json is written.
-- The wrapper's command line carries "research-job:RUN_ID" (for the pgrep guard).
local M = {}

M.script = [=[
unset RESEARCH_WRAPPER
out=$1; rid=$2; job=$3
metrics="$out/metrics.json"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
child=
finalize() { # status exit_code reason
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$metrics" "$1" "$2" "$rid" "$3" "$started" <<'PY' && return 0
import json, os, sys, time
path, status, code, rid, reason, started = sys.argv[1:7]
data = {}
try:
    with open(path) as f:
        v = json.load(f)
    data = v if isinstance(v, dict) else {"value": v}
    if data.get("provisional") is True:
        data = {}
except FileNotFoundError:
    pass
except Exception as e:
    try:
        os.replace(path, path + ".invalid")
    except OSError:
        pass
    data = {"metrics_error": "the job's metrics.json was not valid JSON (kept as metrics.json.invalid): %s" % e}
data["status"] = status
data.setdefault("run_id", rid)
data["exit_code"] = int(code)
data["started_at"] = data.get("started_at", started)
data["ended_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
if reason:
    data["reason"] = reason
tmp = "%s.tmp.%d" % (path, os.getpid())
with open(tmp, "w") as f:
    json.dump(data, f, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)
PY
  fi
  if [ -s "$metrics" ] && ! grep -q '"provisional":true' "$metrics"; then mv -f "$metrics" "$metrics.unmerged"; fi
  write_plain "$1" "$2" "$3" ""
}
write_plain() { # status exit_code reason extra
  printf '{"status":"%s","run_id":"%s","exit_code":%s,"reason":"%s","started_at":"%s"%s}\n' \
    "$1" "$rid" "$2" "$3" "$started" "$4" > "$metrics.tmp.$$" && mv -f "$metrics.tmp.$$" "$metrics"
}
on_signal() { # name code
  trap '' TERM INT HUP
  finalize cancelled "$2" "cancelled by $1"
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  finalize cancelled "$2" "cancelled by $1"
  exit "$2"
}
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGHUP 129' HUP
mkdir -p "$out"
# Until the job ends the file says "cancelled": if the wrapper is killed outright
# (SIGKILL, which no trap can catch) a valid metrics.json with a status is still there.
write_plain cancelled 137 "the wrapper ended before the job did" ',"provisional":true'
sh -c "$job" &
child=$!
wait "$child"
rc=$?
if [ "$rc" -eq 0 ]; then finalize succeeded 0 ""; else finalize failed "$rc" "job exited with code $rc"; fi
exit "$rc"
]=]

--- The argv that runs `job` (shell text) under the wrapper.
--- The script travels in the environment (RESEARCH_WRAPPER; pass M.env() as the stage's env),
--- so the journal and the plan show a short command line.
function M.command(out, runID, job)
  return {"sh", "-c", 'eval "$RESEARCH_WRAPPER"', "research-job:" .. runID, out, runID, job}
end

function M.env(extra)
  local e = {RESEARCH_WRAPPER = M.script}
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

--- A pgrep pattern for the wrapper of this run that does not match its own watcher.
function M.pattern(runID)
  local escaped = runID:gsub("[%.%-]", function(c) return c == "." and "\\." or c end)
  return "[r]esearch-job:" .. escaped .. "( |$)"
end

return M
