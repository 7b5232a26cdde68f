#!/bin/sh
# A stage that ignores SIGTERM, so only SIGKILL after the grace period ends it.
trap '' TERM
echo started
while :; do sleep 0.1; done
