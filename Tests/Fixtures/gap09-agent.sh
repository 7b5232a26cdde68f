#!/bin/sh
# Stand-in for the GAP-09 agent CLI (`droid exec`): called as `gap09-agent.sh STAGE SESSION_ID`
# in the pipeline's cwd with the stage's prompt on stdin; its stdout is the stage's output.
# Every call is appended to $AGENT_STATE/agent.log (default ./) as "STAGE SESSION_ID"; prompts
# go to $AGENT_STATE/prompts/ (keep AGENT_STATE outside the work tree to keep it clean).
# Behaviour, from the environment:
#   AGENT_FAIL_STAGE=S     stage S fails (exit 1, "tests broke" on stderr)
#   AGENT_MODEL_MISSING=S  stage S fails with "model 'gpt-x' not found"
#   AGENT_BAD_SESSION=S    stage S answers "session not found" the first time it runs
#   AGENT_REJECT=N         verification rejects the first N times, with an issue
#   AGENT_GARBAGE=1        verification prints no JSON
#   AGENT_SLEEP_STAGE=S    stage S sleeps 30 s (for timeouts)
#   AGENT_EDITS="F G"      execution edits these files (appends a line) instead of work.txt;
#                          "-" edits nothing
#   AGENT_USAGE=1|S        every stage (or stage S) prints a usage line {"usage": {"input_tokens": 100, "output_tokens": 20}}
#   AGENT_NO_DOCS=1        verification adds "docs_affected": false to its verdict
#   AGENT_COMMIT=1         execution commits its change (git add -A; git commit)
#   AGENT_REJECT_IF=F      verification rejects while file F exists in cwd
#   AGENT_VERIFY_EDITS="F" the first verification appends a line to these files (a verifier
#                          that changes the code)
#   AGENT_FAIL_REWORK=1    execution fails from its second call on (a rework that crashes)
# Every call also appends "STAGE MODEL" to ./models.log (GAP09_MODEL, "-" when unset).
stage="$1"; session="$2"
st="${AGENT_STATE:-.}"
mkdir -p "$st/prompts"
n=$(grep -c "^$stage " "$st/agent.log" 2>/dev/null || true)
n=$(( ${n:-0} + 1 ))
echo "$stage $session" >> "$st/agent.log"
echo "$stage ${GAP09_MODEL:--}" >> "$st/models.log"
if [ "${AGENT_USAGE:-}" = "1" ] || [ "${AGENT_USAGE:-}" = "$stage" ]; then echo '{"usage": {"input_tokens": 100, "output_tokens": 20}}'; fi
cat > "$st/prompts/$stage.$n.txt"
if [ "${AGENT_BAD_SESSION:-}" = "$stage" ] && [ ! -e "$st/bad-session.$stage" ]; then
  : > "$st/bad-session.$stage"
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
if [ "${AGENT_FAIL_REWORK:-}" = "1" ] && [ "$stage" = execution ] && [ "$n" -ge 2 ]; then
  echo "rework crashed" >&2
  exit 1
fi
if [ "${AGENT_SLEEP_STAGE:-}" = "$stage" ]; then
  sleep 30
fi
case "$stage" in
  execution)
    if [ -n "${AGENT_EDITS:-}" ]; then
      for f in $AGENT_EDITS; do [ "$f" = "-" ] || { mkdir -p "$(dirname "$f")"; echo "change $n" >> "$f"; }; done
    else
      echo "change $n" >> work.txt
    fi
    if [ "${AGENT_COMMIT:-}" = "1" ]; then
      git add -A && git -c user.email=agent@x -c user.name=agent commit -qm "agent change $n" >/dev/null
    fi
    echo "executed (run $n) in session $session" ;;
  verification)
    if [ -n "${AGENT_VERIFY_EDITS:-}" ] && [ "$n" = 1 ]; then
      for f in $AGENT_VERIFY_EDITS; do echo "verifier was here" >> "$f"; done
    fi
    if [ "${AGENT_GARBAGE:-}" = "1" ]; then echo "looks fine to me"; exit 0; fi
    if [ -n "${AGENT_REJECT_IF:-}" ] && [ -e "${AGENT_REJECT_IF}" ]; then
      echo "{\"approved\": false, \"issues\": [\"${AGENT_REJECT_IF} is broken\"]}"; exit 0
    fi
    if [ "$n" -le "${AGENT_REJECT:-0}" ]; then
      echo "checking..."
      echo "{\"approved\": false, \"issues\": [\"missing test for change $n\"]}"
    else
      if [ "${AGENT_NO_DOCS:-}" = "1" ]; then echo '{"approved": true, "issues": [], "docs_affected": false}'
      else echo "{\"approved\": true, \"issues\": []}"; fi
    fi ;;
  ship) echo "CHANGELOG updated"; echo "- shipped" >> CHANGELOG.md ;;
  *) echo "$stage notes for session $session" ;;
esac
