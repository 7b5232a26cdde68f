#!/bin/sh
# A stage that leaves a grandchild behind: `sleep` runs in the background, marked by
# its argument, then the script waits (or exits at once with "exit" as $2).
marker="${1:-baton-forker}"
sh -c "exec sleep 300 # $marker" &
echo "grandchild $!"
if [ "$2" = "exit" ]; then exit 0; fi
sleep 300
