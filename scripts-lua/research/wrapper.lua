-- research.wrapper: the signal-safe wrapper a research job runs under.
--
--   runStage{id = "job", cmd = wrapper.command(out, run_id, job_shell_text), env = wrapper.env{...}, background = true}
--
-- The wrapper's own file is OUT/status.json: a JSON object whose "status" is
-- "succeeded" (exit 0), "failed" (non-zero exit) or "cancelled" (SIGTERM/SIGINT/SIGHUP:
-- written at once on the signal, before the job is stopped, and again after it ends),
-- with run_id, exit_code, reason, started_at, ended_at. It records status only: the
-- job's artifacts (metrics.json, ...) are the job's alone, so a job that exits 0 without
-- writing them does not pass an artifact gate on the wrapper's account.
-- A job's metrics.json that is not valid JSON is moved to metrics.json.invalid and
-- status.json's "metrics_error" says why. Writes are atomic (temp file, fsync, rename).
-- Before the job starts, a provisional status.json says "cancelled" (replacing any stale
-- one), so even a SIGKILL of the whole group leaves a valid file; the final write
-- replaces it.
-- On a signal the wrapper also records the run in the registry (RESEARCH_REGISTRY) with
-- status "cancelled", under the registry's flock, because the recipe's Lua code does not
-- run again once its run is cancelled. python3 does the JSON work; without it, a plain
-- status.json is written and the cancelled run is not recorded.
-- The wrapper's command line carries "research-job:RUN_ID" (for the pgrep guard).
local M = {}

M.script = [=[
unset RESEARCH_WRAPPER
out=$1; rid=$2; job=$3
status="$out/status.json"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
child=
finalize() { # status exit_code reason
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$out" "$1" "$2" "$rid" "$3" "$started" <<'PY' && return 0
import json, os, sys, time
out, status, code, rid, reason, started = sys.argv[1:7]
data = {"status": status, "run_id": rid, "exit_code": int(code), "started_at": started,
        "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
if reason:
    data["reason"] = reason
metrics = os.path.join(out, "metrics.json")
try:
    with open(metrics) as f:
        json.load(f)
except FileNotFoundError:
    pass
except Exception as e:
    try:
        os.replace(metrics, metrics + ".invalid")
    except OSError:
        pass
    data["metrics_error"] = "the job's metrics.json was not valid JSON (kept as metrics.json.invalid): %s" % e
path = os.path.join(out, "status.json")
tmp = "%s.tmp.%d" % (path, os.getpid())
with open(tmp, "w") as f:
    json.dump(data, f, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)
PY
  fi
  write_plain "$1" "$2" "$3" ""
}
write_plain() { # status exit_code reason extra
  printf '{"status":"%s","run_id":"%s","exit_code":%s,"reason":"%s","started_at":"%s"%s}\n' \
    "$1" "$rid" "$2" "$3" "$started" "$4" > "$status.tmp.$$" && mv -f "$status.tmp.$$" "$status"
}
record_cancelled() { # reason: one registry line, under the registry's flock
  [ -n "${RESEARCH_REGISTRY:-}" ] && command -v python3 >/dev/null 2>&1 || return 0
  python3 - "$RESEARCH_REGISTRY" "$rid" "$1" "$started" "$out" <<'PY' || true
import fcntl, json, os, sys, time
reg, rid, reason, started, out = sys.argv[1:6]
env = os.environ
entry = {"run_id": rid, "status": "cancelled", "reason": reason, "metrics": {}, "missing": [],
         "started_at": started, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "out": out, "job": env.get("RESEARCH_JOB", ""), "baton_run": env.get("BATON_RUN_ID", ""),
         "tags": [t for t in env.get("RESEARCH_TAGS", "").split(",") if t], "recorded_by": "wrapper"}
os.makedirs(os.path.dirname(reg) or ".", exist_ok=True)
with open(reg, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    lines = f.read().split("\n")
    def rid_of(line):
        try:
            return json.loads(line).get("run_id")
        except Exception:
            return None
    same = [l for l in lines if l.strip() and rid_of(l) == rid]
    if same and env.get("RESEARCH_RERUN") != "1":
        sys.exit(0)
    line = json.dumps(entry, sort_keys=True)
    if same:
        keep = [l for l in lines if l.strip() and rid_of(l) != rid]
        f.seek(0); f.truncate()
        f.write("".join(l + "\n" for l in keep))
    elif lines[-1] != "":
        f.write("\n")
    f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())
PY
}
on_signal() { # name code
  trap '' TERM INT HUP
  finalize cancelled "$2" "cancelled by $1"
  record_cancelled "cancelled by $1"
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  finalize cancelled "$2" "cancelled by $1"
  exit "$2"
}
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGHUP 129' HUP
mkdir -p "$out"
# Until the job ends the file says "cancelled": if the wrapper is killed outright
# (SIGKILL, which no trap can catch) a valid status.json is still there.
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
