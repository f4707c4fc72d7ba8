#!/usr/bin/env bash
# The cost of the divergence guard (issue 14): training time of the digits preset, 300 steps, with the code before
# the guard (OLD_SRC, e.g. a `git worktree add /tmp/old bb215d0`) and with this tree's, alternating A/B three times
# on the same seed. Prints one line per run; quote the medians. Run it alone: two torch jobs on 2 cores distort it.
#   bash benchmarks/bench_guard.sh /tmp/old/src
set -eu
OLD_SRC=${1:?usage: bench_guard.sh OLD_SRC}
NEW_SRC=$(cd "$(dirname "$0")/../src" && pwd)
P=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
OUT=$(mktemp -d)
for rep in 1 2 3; do
  for side in old new; do
    src=$OLD_SRC; [ "$side" = new ] && src=$NEW_SRC
    PYTHONPATH=$src "$P" -m diffusionlab.cli train --preset digits --steps 300 --sample-every 100000 \
      --checkpoint-every 100000 --out "$OUT/$side-$rep" --progress lines > "$OUT/$side-$rep.log" 2>&1
    echo "$rep $side train_seconds=$(tail -1 "$OUT/$side-$rep/metrics.jsonl" | "$P" -c "import json,sys; print(json.load(sys.stdin)['elapsed_s'])")"
  done
done
rm -rf "$OUT"
