#!/bin/sh
# Stand-in for the 02luka tree of the WO durability plan: makes a git repository in $1
# where the apply_patch_processor was added, fixed, then deleted by a rollback, plus a
# LaunchAgent log that fails with exit 127 afterwards. Fixed dates, so tests can name them.
set -e
mkdir -p "$1" && cd "$1"
git init -q
git config user.email wo@test && git config user.name "WO test"
c() { GIT_AUTHOR_DATE="$1" GIT_COMMITTER_DATE="$1" git commit -q -m "$2"; }
mkdir -p agents/apply_patch_processor tools
printf '#!/bin/sh\necho v1\n' > agents/apply_patch_processor/apply_patch_processor.zsh
git add -A && c "2025-11-12T10:00:00Z" "add apply_patch_processor"
printf '#!/bin/sh\necho v2\n' > agents/apply_patch_processor/apply_patch_processor.zsh
git add -A && c "2025-11-13T01:50:00Z" "fix absolute paths in processor"
git rm -q -r agents/apply_patch_processor
c "2025-11-13T12:00:00Z" "rollback phase6 week1"
echo docs > README.md
git add -A && c "2025-11-13T23:00:00Z" "update docs"
mkdir -p logs
printf '2025-11-13 12:05 starting\n2025-11-13 12:05 zsh: no such file or directory: agents/apply_patch_processor/apply_patch_processor.zsh (exit 127)\n' > logs/apply_patch_processor.err
