#!/usr/bin/env bash
# The newcomer's path, timed: a fresh clone, then the README's two commands (`make demo`, `make test`), with an empty
# segloss cache (demo base model, converted GGUF). Writes WORKDIR/times.txt (and each command's output beside it).
#
#   scripts/newcomer.sh                 # clones this checkout into a temporary folder
#   scripts/newcomer.sh REPO WORKDIR    # another repository or folder
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${1:-$here}
work=${2:-$(mktemp -d)}
mkdir -p "$work"
git clone -q "$repo" "$work/segloss"
# The raw datasets sit beside the checkout (../shared/data), as on the project's machines.
if [ -d "$here/../shared" ] && [ ! -e "$work/shared" ]; then ln -s "$(cd "$here/../shared" && pwd)" "$work/shared"; fi
export XDG_CACHE_HOME="$work/cache"
# Every test's time, for the by-folder table of docs/benchmarks.md (benchmarks/suite_durations.py reads test.log).
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:---durations=0}"
cd "$work/segloss"
for target in demo test; do
  echo "make $target: start $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)" >> "$work/times.txt"
  /usr/bin/time -a -o "$work/times.txt" -f "make $target: %e s wall, %U s user, %S s sys, exit %x" \
    make "$target" > "$work/$target.log" 2>&1 || true
done
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$work/times.txt"
cat "$work/times.txt"
