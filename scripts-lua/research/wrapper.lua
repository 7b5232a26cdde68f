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

local prelude = [=[
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
record_cancelled() { # reason: this attempt's registry line says cancelled, under the registry's flock
  [ -n "${RESEARCH_REGISTRY:-}" ] && command -v python3 >/dev/null 2>&1 || return 0
  python3 - "$RESEARCH_REGISTRY" "$rid" "$1" "$started" "$out" <<'PY' || true
import fcntl, json, os, sys, time
reg, rid, reason, started, out = sys.argv[1:6]
env = os.environ
brun = env.get("RESEARCH_BATON_RUN") or env.get("BATON_RUN_ID", "")
try:
    attempt = int(env.get("RESEARCH_ATTEMPT", "1"))
except ValueError:
    attempt = 1
entry = {"run_id": rid, "status": "cancelled", "reason": reason, "metrics": {}, "missing": [],
         "started_at": started, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
         "out": out, "job": env.get("RESEARCH_JOB", ""), "baton_run": brun, "attempt": attempt,
         "tags": [t for t in env.get("RESEARCH_TAGS", "").split(",") if t], "recorded_by": "wrapper"}
os.makedirs(os.path.dirname(reg) or ".", exist_ok=True)
with open(reg, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    lines = [l for l in f.read().split("\n") if l.strip()]
    def mine(line):
        try:
            v = json.loads(line)
        except Exception:
            return None
        if (isinstance(v, dict) and v.get("run_id") == rid and v.get("baton_run") == brun
                and int(v.get("attempt") or 1) == attempt):
            return v
        return None
    at = [i for i, l in enumerate(lines) if mine(l) is not None]
    if at and mine(lines[at[-1]]).get("status") != "running":
        sys.exit(0)  # this attempt already ended: its record stands
    line = json.dumps(entry, sort_keys=True)
    if at:
        prev = mine(lines[at[-1]])
        for k in ("started_at", "job", "out", "tags", "run_dir", "runner"):
            if k in prev:
                entry[k] = prev[k]
        lines[at[-1]] = json.dumps(entry, sort_keys=True)
        f.seek(0); f.truncate()
        f.write("".join(l + "\n" for l in lines))
    else:
        f.seek(0, 2)
        if f.tell() > 0:
            f.seek(f.tell() - 1); last = f.read(1)
            if last != "\n":
                f.write("\n")
        f.write(line + "\n")
    f.flush()
    os.fsync(f.fileno())
PY
}
]=]

M.script = prelude .. [=[
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

-- The callback's wrapper: the job has ended (status.json is its), and a signal now
-- (a cancel of the run during the callback) marks status.json and this attempt's
-- registry line `cancelled`, because no recipe code runs after a cancel.
M.callbackScript = prelude .. [=[
cancel_status() { # reason code
  if command -v python3 >/dev/null 2>&1; then
    python3 - "$status" "$rid" "$1" "$2" <<'PY' && return 0
import json, os, sys, time
path, rid, reason, code = sys.argv[1:5]
try:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        data = {}
except Exception:
    data = {}
job = {k: data.get(k) for k in ("status", "exit_code", "reason") if k in data}
data.update({"status": "cancelled", "run_id": rid, "reason": reason, "exit_code": int(code), "job": job,
             "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
tmp = "%s.tmp.%d" % (path, os.getpid())
with open(tmp, "w") as f:
    json.dump(data, f, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, path)
PY
  fi
  write_plain cancelled "$2" "$1" ""
}
on_signal() { # name code
  trap '' TERM INT HUP
  cancel_status "cancelled by $1 during the callback" "$2"
  record_cancelled "cancelled by $1 during the callback"
  if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi
  exit "$2"
}
trap 'on_signal SIGTERM 143' TERM
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGHUP 129' HUP
sh -c "$job" &
child=$!
wait "$child"
exit $?
]=]

--- The argv that runs `cmd` (shell text) under `script`, tagged for pgrep, and the env that
--- carries the script (RESEARCH_WRAPPER), so the journal and the plan show a short command line.
local function wrapped(script, tag)
  local function command(out, runID, cmd)
    return {"sh", "-c", 'eval "$RESEARCH_WRAPPER"', tag .. runID, out, runID, cmd}
  end
  local function env(extra)
    local e = {RESEARCH_WRAPPER = script}
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
  end
  return command, env
end

--- The callback under its wrapper (pass M.callbackEnv() as the stage's env).
M.callbackCommand, M.callbackEnv = wrapped(M.callbackScript, "research-callback:")
--- The job under the wrapper (pass M.env() as the stage's env).
M.command, M.env = wrapped(M.script, "research-job:")

--- A pgrep pattern for the wrapper of this run that does not match its own watcher.
function M.pattern(runID)
  local escaped = runID:gsub("[%.%-]", function(c) return c == "." and "\\." or c end)
  return "[r]esearch-job:" .. escaped .. "( |$)"
end

return M
