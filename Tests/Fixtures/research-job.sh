#!/bin/sh
# Stand-in for a research training job (the seed's vr_run.sh payload): writes
# $BATON_OUT/metrics.json with a score and a loss, after $1 seconds (default 0).
#   JOB_FAIL=N        exit N after writing partial metrics (no status)
#   JOB_NO_METRICS=1  write nothing
#   JOB_BAD_METRICS=1 write invalid JSON
#   JOB_SCORE=X       the score (default 0.5)
#   JOB_NO_SCORE=1    write metrics.json without the score (forgets the ranking metric)
#   JOB_EXTRA=F       also write $BATON_OUT/F
# Writes $BATON_OUT/started when it begins.
mkdir -p "$BATON_OUT"
: > "$BATON_OUT/started"
sleep "${1:-0}"
if [ -n "${JOB_NO_METRICS:-}" ]; then exit "${JOB_FAIL:-0}"; fi
if [ -n "${JOB_BAD_METRICS:-}" ]; then echo '{"score": ' > "$BATON_OUT/metrics.json"; exit 0; fi
if [ -n "${JOB_NO_SCORE:-}" ]; then echo '{"loss": 0.25}' > "$BATON_OUT/metrics.json"; exit "${JOB_FAIL:-0}"; fi
printf '{"score": %s, "loss": 0.25, "run": "%s"}\n' "${JOB_SCORE:-0.5}" "$RUN_ID" > "$BATON_OUT/metrics.json"
if [ -n "${JOB_EXTRA:-}" ]; then echo data > "$BATON_OUT/$JOB_EXTRA"; fi
exit "${JOB_FAIL:-0}"
