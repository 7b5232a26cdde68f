#!/bin/sh
# A stage that leaves a grandchild behind: a background shell (its command line
# carries the marker $1) that sleeps, then the script waits, or exits at once
# when $2 is "exit".
marker="${1:-baton-forker}"
sh -c "sleep 300; : $marker" &
echo "grandchild $!"
if [ "$2" = "exit" ]; then exit 0; fi
sleep 300
