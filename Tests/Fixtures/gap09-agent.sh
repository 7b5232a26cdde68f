#!/bin/sh
# Stand-in for the GAP-09 agent CLI (`droid exec`): called as `gap09-agent.sh STAGE SESSION_ID`
# in the pipeline's cwd with the stage's prompt on stdin; its stdout is the stage's output.
# Every call is appended to ./agent.log as "STAGE SESSION_ID"; prompts go to ./prompts/.
# Behaviour, from the environment:
#   AGENT_FAIL_STAGE=S     stage S fails (exit 1, "tests broke" on stderr)
#   AGENT_MODEL_MISSING=S  stage S fails with "model 'gpt-x' not found"
#   AGENT_BAD_SESSION=S    stage S answers "session not found" the first time it runs
#   AGENT_REJECT=N         verification rejects the first N times, with an issue
#   AGENT_GARBAGE=1        verification prints no JSON
#   AGENT_SLEEP_STAGE=S    stage S sleeps 30 s (for timeouts)
stage="$1"; session="$2"
mkdir -p prompts
n=$(grep -c "^$stage " agent.log 2>/dev/null || true)
n=$(( ${n:-0} + 1 ))
echo "$stage $session" >> agent.log
cat > "prompts/$stage.$n.txt"
if [ "${AGENT_BAD_SESSION:-}" = "$stage" ] && [ ! -e "bad-session.$stage" ]; then
  : > "bad-session.$stage"
  echo "error: session $session not found" >&2
  exit 1
fi
if [ "${AGENT_MODEL_MISSING:-}" = "$stage" ]; then
  echo "error: model 'gpt-x' not found; available: swe-1-5" >&2
  exit 1
fi
if [ "${AGENT_FAIL_STAGE:-}" = "$stage" ]; then
  echo "working on it"
  echo "tests broke: 3 failures" >&2
  exit 1
fi
if [ "${AGENT_SLEEP_STAGE:-}" = "$stage" ]; then
  sleep 30
fi
case "$stage" in
  execution) echo "change $n" >> work.txt; echo "executed (run $n) in session $session" ;;
  verification)
    if [ "${AGENT_GARBAGE:-}" = "1" ]; then echo "looks fine to me"; exit 0; fi
    if [ "$n" -le "${AGENT_REJECT:-0}" ]; then
      echo "checking..."
      echo "{\"approved\": false, \"issues\": [\"missing test for change $n\"]}"
    else
      echo "{\"approved\": true, \"issues\": []}"
    fi ;;
  ship) echo "CHANGELOG updated"; echo "- shipped" >> CHANGELOG.md ;;
  *) echo "$stage notes for session $session" ;;
esac
