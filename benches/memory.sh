#!/usr/bin/env bash
# Memory per held thing (docs/scaling.md, docs/performance.md): starts a
# private, empty redis-server on a free loopback port in a temp dir, runs
# `cargo bench --bench memory` against it and stops it by PID. The
# machine's own Redis is never touched.
#
#   benches/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server is missing (scripts/test installs it)" >&2; exit 1; }

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
    --daemonize no >"$dir/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
HOLDFAST_BENCH_REDIS_URL="redis://127.0.0.1:$port" cargo bench --bench memory
