#!/usr/bin/env bash
# The long chaos drill (issue 14, item 5; the short one runs in the suite as
# tests/api/chaos.rs): three `holdfast serve` processes on private
# PostgreSQL and Redis under a steady mix of verify, login, refresh and
# logout, through a node kill, a PostgreSQL pause and a Redis restart. It
# prints one table per event (markdown) and fails if an acknowledged write
# was lost, a verification was wrong or failed, or logins stayed down.
#
#   benches/chaos.sh                    # 10 s pause, 16 workers, 64 users
#   CHAOS_PAUSE_SECS=30 benches/chaos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_PAUSE_SECS=${CHAOS_PAUSE_SECS:-10}
export CHAOS_SETTLE_SECS=${CHAOS_SETTLE_SECS:-5}
export CHAOS_WORKERS=${CHAOS_WORKERS:-16}
export CHAOS_USERS=${CHAOS_USERS:-64}
cargo test --release --locked --test api -- chaos:: --nocapture --test-threads 1 2>&1 |
    grep -v '^\s*$' | grep -v '^running\|^test result\|Finished\|Running\|Compiling'
