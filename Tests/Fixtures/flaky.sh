#!/bin/sh
# Fails with exit code $2 (default 75) the first $1 times it runs in this directory,
# then succeeds. The count is kept in ./flaky.count.
fails="${1:-1}"
code="${2:-75}"
n=$(cat flaky.count 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > flaky.count
if [ "$n" -le "$fails" ]; then
  echo "attempt $n: rate limit exceeded (request 0x$(printf %x $$))" >&2
  exit "$code"
fi
echo "attempt $n: ok"
