#!/usr/bin/env bash
# Verify throughput of two builds in one run, alternated (old, new, old,
# new), each as a ratio to the ceiling measured beside it: the way a
# change that must not cost speed is checked (docs/performance.md).
#
#   git worktree add /tmp/old <rev> && (cd /tmp/old && cargo build --release --bin holdfast)
#   OLD_BIN=/tmp/old/target/release/holdfast benches/ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OLD_BIN=${OLD_BIN:?set OLD_BIN to the holdfast binary to compare against}
PAIRS=${PAIRS:-2}
cargo build --release --locked --bin holdfast >&2
for i in $(seq "$PAIRS"); do
  for which in old new; do
    if [ "$which" = old ]; then bin=$OLD_BIN; else bin=target/release/holdfast; fi
    echo "### round $i: $which ($bin)"
    RUNS="ceiling verify" BENCH_BIN=$bin benches/load.sh 2>/dev/null
  done
done
