#!/bin/sh
# Stand-in for a launcher job (seed 000's relay jobs): starts the real work in the
# background and exits at once. The work (in the launcher's process group) writes
# $BATON_OUT/metrics.json $1 seconds (default 2) after the launcher has exited, and
# $BATON_OUT/launched when the launcher is done.
mkdir -p "$BATON_OUT"
(
  sleep "${1:-2}"
  printf '{"score": %s, "run": "%s", "by": "background work"}\n' "${JOB_SCORE:-0.5}" "$RUN_ID" > "$BATON_OUT/metrics.json.tmp"
  mv "$BATON_OUT/metrics.json.tmp" "$BATON_OUT/metrics.json"
) </dev/null >/dev/null 2>&1 &
: > "$BATON_OUT/launched"
exit 0
