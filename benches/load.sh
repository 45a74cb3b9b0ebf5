#!/usr/bin/env bash
# The load benchmark (docs/performance.md): builds release, starts private
# PostgreSQL and Redis on free loopback ports in a temp dir, starts
# holdfast on them (production mode) and a bare axum server (the ceiling),
# drives them with wrk and prints one table. Everything it starts is
# stopped by PID at the end; the machine's own services are never touched.
#
#   benches/load.sh                       # 10 s per run, 64 connections
#   DURATION=30s CONNECTIONS=128 REPEAT=5 benches/load.sh
#   RUNS="ceiling verify" PROFILE=/tmp/verify.perf benches/load.sh   # perf profiles
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
LOGIN_CONNECTIONS=${LOGIN_CONNECTIONS:-8}
REPEAT=${REPEAT:-3}
HASH_WORKERS=${HASH_WORKERS:-2}
HASH_QUEUE=${HASH_QUEUE:-64}
# Enough logins to keep every hash worker busy and the queue full.
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-$((HASH_WORKERS + HASH_QUEUE))}
# For profiling one part: e.g. RUNS="ceiling verify". The table needs all.
RUNS=${RUNS:-"ceiling verify login flood paused"}
running() { [[ " $RUNS " == *" $1 "* ]]; }

say() { printf '== %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
    say "installing wrk"
    apt-get update -qq >/dev/null && apt-get install -y -qq wrk >/dev/null
fi
for tool in initdb postgres redis-server curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (scripts/test installs PostgreSQL and Redis)" >&2; exit 1; }
done

say "building release"
cargo build --release --locked --bin holdfast --example ceiling --example argon2_time >&2
BIN=target/release

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK=$(mktemp -d /tmp/holdfast-load-XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_PID=""
cleanup() {
    [ -n "$PG_PID" ] && kill -CONT "$PG_PID" $(pgrep -P "$PG_PID" || true) 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "$what did not start" >&2; exit 1
}

rss() { echo "rss after $1: $(awk '/VmRSS/ {print $2}' "/proc/$HF_PID/status") kB (peak $(awk '/VmHWM/ {print $2}' "/proc/$HF_PID/status") kB)" >&2; }

# PostgreSQL refuses to run as root: as the postgres user when we are root.
PG_PORT=$(free_port)
mkdir "$WORK/pg"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$WORK/pg"
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
"${as_pg[@]}" initdb -D "$WORK/pg/data" -U holdfast --auth=trust -E UTF8 --no-sync >/dev/null
"${as_pg[@]}" postgres -D "$WORK/pg/data" -p "$PG_PORT" -k "$WORK/pg" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100 >"$WORK/pg/log" 2>&1 &
PIDS+=($!)
PG_PID=$!
wait_for postgres pg_isready -h 127.0.0.1 -p "$PG_PORT" -U holdfast
"${as_pg[@]}" psql -h 127.0.0.1 -p "$PG_PORT" -U holdfast -d postgres -qc "CREATE DATABASE holdfast" >/dev/null

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for redis redis-cli -p "$REDIS_PORT" ping

ARGON_MS=$("$BIN/examples/argon2_time" 20)
echo "one Argon2id hash: $ARGON_MS ms" >&2

HF_PORT=$(free_port)
cat >"$WORK/holdfast.toml" <<TOML
env = "production"
listen = "127.0.0.1:$HF_PORT"
issuer = "https://auth.bench.test"
audience = "bench"
[database]
url = "postgres://holdfast@127.0.0.1:$PG_PORT/holdfast"
[redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
[rate_limit]
login_per_ip = "10000000/min"
register_per_ip = "1000/min"
[passwords]
hash_workers = $HASH_WORKERS
queue = $HASH_QUEUE
TOML
HOLDFAST_MASTER_KEY=$(head -c32 /dev/urandom | base64) \
    "$BIN/holdfast" --config "$WORK/holdfast.toml" serve >"$WORK/holdfast.log" 2>&1 &
HF_PID=$!
PIDS+=($HF_PID)
wait_for holdfast curl -sf "http://127.0.0.1:$HF_PORT/readyz"
rss start

CEILING_PORT=$(free_port)
"$BIN/examples/ceiling" "127.0.0.1:$CEILING_PORT" &
CEILING_PID=$!
PIDS+=($CEILING_PID)
wait_for ceiling curl -s "http://127.0.0.1:$CEILING_PORT/"

BASE="http://127.0.0.1:$HF_PORT/api/v1"
PASSWORD="tangerine-orbit-lamp"
# Logins rotate over many accounts: each account allows only a few
# attempts in flight (the lockout guard), a whole site does not.
ACCOUNTS=64
for i in $(seq 1 "$ACCOUNTS"); do
    curl -sf "$BASE/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"bench$i@example.com\",\"username\":\"bench$i\",\"password\":\"$PASSWORD\"}" >/dev/null
done
TOKEN=$(curl -sf "$BASE/auth/login" -H 'content-type: application/json' \
    -d "{\"login\":\"bench1\",\"password\":\"$PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

cat >"$WORK/login.lua" <<LUA
local bodies, n = {}, 0
for i = 1, $ACCOUNTS do
    bodies[i] = '{"login":"bench' .. i .. '","password":"$PASSWORD"}'
end
request = function()
    n = n + 1
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[(n % $ACCOUNTS) + 1])
end
LUA

# wrk --latency output → "rps p50 p99 total non2xx" (latencies in µs).
measure() {
    wrk --latency -t"$THREADS" "$@" | awk '
        function us(v) {
            if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000;
            if (v ~ /s$/) return v * 1000000; return v
        }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = us($2) }
        /^ +99%/ { p99 = us($2) }
        / requests in / { total = $1 }
        /Non-2xx/ { bad += $5 }
        /Socket errors/ { gsub(",", ""); bad += $4 + $6 + $8 + $10 }
        END { printf "%s %s %s %s %d\n", rps, p50, p99, total, bad }'
}

verify() { measure -c"$CONNECTIONS" -d"$1" -H "Authorization: Bearer $TOKEN" "$BASE/auth/verify"; }

# The ceiling and verify runs alternate REPEAT times and report medians:
# on a shared 2-core machine single runs vary by ±15 %.
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
: >"$WORK/ceiling.runs"
: >"$WORK/verify.runs"
for round in $(seq 1 "$REPEAT"); do
    if running ceiling; then
        say "ceiling: bare axum, 204 (round $round)"
        if [ -n "${PROFILE:-}" ] && [ "$round" = 1 ]; then
            perf record -e cpu-clock -F 2000 -g -p "$CEILING_PID" -o "$PROFILE.ceiling" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
            PERF=$!
        fi
        measure -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$CEILING_PORT/" >>"$WORK/ceiling.runs"
        [ -n "${PERF:-}" ] && wait "$PERF" && PERF=""
        echo "ceiling $(tail -1 "$WORK/ceiling.runs")" >&2
    fi
    if running verify; then
        say "GET /auth/verify (round $round)"
        if [ -n "${PROFILE:-}" ] && [ "$round" = 1 ]; then
            perf record -e cpu-clock -F 2000 -g -p "$HF_PID" -o "$PROFILE" -- sleep "${DURATION%s}" >/dev/null 2>&1 &
            PERF=$!
        fi
        verify "$DURATION" >>"$WORK/verify.runs"
        [ -n "${PERF:-}" ] && wait "$PERF" && PERF=""
        echo "verify $(tail -1 "$WORK/verify.runs")" >&2
    fi
done
if running ceiling; then
    C_RPS=$(col "$WORK/ceiling.runs" 1); C_P50=$(col "$WORK/ceiling.runs" 2); C_P99=$(col "$WORK/ceiling.runs" 3)
fi
if running verify; then
    V_RPS=$(col "$WORK/verify.runs" 1); V_P50=$(col "$WORK/verify.runs" 2); V_P99=$(col "$WORK/verify.runs" 3)
    V_TOTAL=$(awk '{ t += $4 } END { print t }' "$WORK/verify.runs")
    V_BAD=$(awk '{ b += $5 } END { print b }' "$WORK/verify.runs")
    echo "median: ceiling $C_RPS req/s, verify $V_RPS req/s" >&2
    rss verify
fi
if running switches; then
    # Context switches per request, server side (perf software counters).
    for target in "ceiling $CEILING_PID http://127.0.0.1:$CEILING_PORT/" "verify $HF_PID $BASE/auth/verify"; do
        set -- $target
        perf stat -e context-switches,cpu-migrations,task-clock -p "$2" -o "$WORK/stat.$1" -- sleep "${DURATION%s}" &
        STAT=$!
        read -r S_RPS _ _ S_TOTAL _ < <(measure -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $TOKEN" "$3")
        wait "$STAT"
        awk -v n="$S_TOTAL" -v name="$1" -v rps="$S_RPS" '
            /task-clock/ { ms = $1; gsub(",", "", ms) }
            /context-switches/ { cs = $1; gsub(",", "", cs) }
            END { printf "%s: %.0f req/s, server CPU %.2f us/request, %.3f context switches/request\n", name, rps, ms * 1000 / n, cs / n }
        ' "$WORK/stat.$1" >&2
    done
fi
if running livez; then
    read -r Z_RPS _ Z_P99 _ _ < <(measure -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:$HF_PORT/livez")
    echo "livez $Z_RPS req/s p99 ${Z_P99}us" >&2
fi
if [ -n "${SHOW:-}" ]; then
    curl -si -H "Authorization: Bearer $TOKEN" "$BASE/auth/verify" >&2
    curl -si "http://127.0.0.1:$CEILING_PORT/" >&2
fi
running login || exit 0
say "POST /auth/login"
read -r L_RPS L_P50 L_P99 L_TOTAL L_BAD < <(measure -c"$LOGIN_CONNECTIONS" -d"$DURATION" -s "$WORK/login.lua" "$BASE/auth/login")
rss login

say "GET /auth/verify during a login flood"
FLOOD_SECS=$(( ${DURATION%s} + 4 ))
wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${FLOOD_SECS}s" -s "$WORK/login.lua" "$BASE/auth/login" >"$WORK/flood.txt" 2>&1 &
FLOOD=$!
sleep 2
read -r F_RPS F_P50 F_P99 _ F_BAD < <(verify "$DURATION")
wait "$FLOOD" || true
rss flood

say "GET /auth/verify with PostgreSQL paused"
kill -STOP "$PG_PID" $(pgrep -P "$PG_PID") 2>/dev/null
read -r P_RPS P_P50 P_P99 P_TOTAL P_BAD < <(verify "$DURATION")
kill -CONT "$PG_PID" $(pgrep -P "$PG_PID") 2>/dev/null
rss paused

RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$HF_PID/status")

python3 - "$C_RPS" "$C_P50" "$C_P99" "$V_RPS" "$V_P50" "$V_P99" "$V_TOTAL" "$V_BAD" \
    "$L_RPS" "$L_P99" "$L_TOTAL" "$L_BAD" "$F_P99" "$F_BAD" "$P_RPS" "$P_P99" "$P_TOTAL" "$P_BAD" \
    "$RSS_KB" "$ARGON_MS" "$HASH_WORKERS" "$DURATION" "$CONNECTIONS" "$LOGIN_CONNECTIONS" "$FLOOD_CONNECTIONS" <<'PY'
import os, sys
(c_rps, c_p50, c_p99, v_rps, v_p50, v_p99, v_total, v_bad, l_rps, l_p99, l_total, l_bad,
 f_p99, f_bad, p_rps, p_p99, p_total, p_bad, rss_kb, argon_ms) = map(float, sys.argv[1:21])
workers, duration, conns, login_conns, flood_conns = sys.argv[21:26]
workers = int(workers)
limit = workers / (argon_ms / 1000)
l_ok = l_rps * (l_total - l_bad) / l_total if l_total else 0.0
ms = lambda us: f"{us / 1000:.2f} ms"
def check(ok): return "ok" if ok else "MISSED"
rows = [
    ("bare axum ceiling (204)", f"{c_rps:,.0f} req/s", f"p50 {ms(c_p50)}, p99 {ms(c_p99)}", "", ""),
    ("GET /auth/verify", f"{v_rps:,.0f} req/s", f"p50 {ms(v_p50)}, p99 {ms(v_p99)}",
     f"{v_rps / c_rps:.0%} of ceiling (≥ 70 %)", check(v_rps / c_rps >= 0.70 and v_bad == 0)),
    ("POST /auth/login", f"{l_ok:,.1f} logins/s", f"p99 {ms(l_p99)}",
     f"{l_ok / limit:.0%} of Argon2 limit {limit:.1f}/s (≥ 85 %)", check(l_ok / limit >= 0.85 and l_bad == 0)),
    ("verify during login flood", "", f"p99 {ms(f_p99)}",
     f"{f_p99 / v_p99:.2f}× p99 without (≤ 2×)", check(f_p99 <= 2 * v_p99 and f_bad == 0)),
    ("verify, PostgreSQL paused", f"{p_rps:,.0f} req/s", f"p99 {ms(p_p99)}",
     f"{(p_total - p_bad) / p_total:.2%} success (100 %)", check(p_bad == 0)),
    ("peak RSS of holdfast", f"{rss_kb / 1024:.1f} MiB ({rss_kb * 1.024 / 1000:.1f} MB)", "", "(< 100 MB)", check(rss_kb * 1.024 / 1000 < 100)),
]
print(f"\nholdfast load benchmark — {os.cpu_count()} CPUs, {duration} per run, wrk {conns} connections "
      f"(login {login_conns}, flood {flood_conns}), {workers} hash workers, one Argon2id hash {argon_ms:.1f} ms\n")
print("| measurement | throughput | latency | against the target | |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
