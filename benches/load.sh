#!/usr/bin/env bash
# The load benchmark (docs/performance.md): builds release, starts private
# PostgreSQL and Redis on free loopback ports in a temp dir, starts
# holdfast on them (production mode) and a bare axum server (the ceiling),
# drives them with wrk and prints one table. Everything it starts is
# stopped by PID at the end; the machine's own services are never touched.
#
#   benches/load.sh                       # both tables, 64 connections, 7-9 minutes
#   ROUNDS=12 ROUND=5s CONNECTIONS=128 LOGIN_ROUNDS=20 benches/load.sh
#   RUNS="ceiling verify bare" benches/load.sh   # also against the header-less ceiling
#   RUNS="ceiling verify" PROFILE=/tmp/verify.perf benches/load.sh   # perf profiles
#   RUNS=switches BENCH_BIN=/tmp/holdfast-old benches/load.sh      # CPU, instructions, switches per request
#   RUNS="refresh" benches/load.sh        # one of the rows of benches/load_rows.sh alone
#   RUNS="apikey authz introspect" EXTRA_ROUNDS=5 benches/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Ceiling/verify and flood/no-flood are measured as ROUNDS adjacent pairs
# of ROUND-long runs, and each ratio is the median of the pairs' ratios:
# on a shared machine throughput drifts by 2x over tens of seconds, far
# more than within one pair. Login is measured in pairs too (below).
# DURATION is for the single runs (PostgreSQL paused, diagnostics).
ROUNDS=${ROUNDS:-20}
ROUND=${ROUND:-1s}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
LOGIN_CONNECTIONS=${LOGIN_CONNECTIONS:-8}
# Login is measured as LOGIN_ROUNDS runs of LOGIN_ROUND, each between two
# timings of ARGON_HASHES single hashes.
LOGIN_ROUNDS=${LOGIN_ROUNDS:-10}
LOGIN_ROUND=${LOGIN_ROUND:-3s}
ARGON_HASHES=${ARGON_HASHES:-10}
HASH_WORKERS=${HASH_WORKERS:-2}
HASH_QUEUE=${HASH_QUEUE:-64}
# Enough logins to keep every hash worker busy and the queue full.
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-$((HASH_WORKERS + HASH_QUEUE))}
# For profiling one part: e.g. RUNS="ceiling verify". The table needs all.
# refresh register apikey authz introspect: benches/load_rows.sh.
RUNS=${RUNS:-"ceiling verify login flood paused refresh register apikey authz introspect"}
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
# Another holdfast build to measure (A/B comparisons); the ceiling and the
# Argon2 timer always come from this tree.
BENCH_BIN=${BENCH_BIN:-$BIN/holdfast}

# free_port, wait_for, start_postgres, start_redis, write_config.
. benches/servers.sh

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

rss() { echo "rss after $1: $(awk '/VmRSS/ {print $2}' "/proc/$HF_PID/status") kB (peak $(awk '/VmHWM/ {print $2}' "/proc/$HF_PID/status") kB)" >&2; }

start_postgres
start_redis

ARGON_MS=$("$BIN/examples/argon2_time" 20)
echo "one Argon2id hash (idle machine): $ARGON_MS ms" >&2

HF_PORT=$(free_port)
write_config
cat >>"$WORK/holdfast.toml" <<TOML
[passwords]
hash_workers = $HASH_WORKERS
queue = $HASH_QUEUE
TOML
HOLDFAST_MASTER_KEY=$(head -c32 /dev/urandom | base64) \
    "$BENCH_BIN" --config "$WORK/holdfast.toml" serve >"$WORK/holdfast.log" 2>&1 &
HF_PID=$!
PIDS+=($HF_PID)
wait_for holdfast curl -sf "http://127.0.0.1:$HF_PORT/readyz" || { tail -20 "$WORK/holdfast.log" >&2; exit 1; }
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


verify() { measure -c"$CONNECTIONS" -d"$1" -H "Authorization: Bearer $TOKEN" "$BASE/auth/verify"; }
# The ceiling gets the very same request (path, token header) as verify, so
# the ratio prices holdfast's work, not the 0.5 KB the token adds to every
# request's bytes on the wire. `bare` (RUNS="... bare") is the earlier
# ceiling, a header-less GET /, for comparison with older figures.
CEILING_URL="http://127.0.0.1:$CEILING_PORT/api/v1/auth/verify"
ceiling() { measure -c"$CONNECTIONS" -d"$1" -H "Authorization: Bearer $TOKEN" "$CEILING_URL"; }
bare() { measure -c"$CONNECTIONS" -d"$1" "http://127.0.0.1:$CEILING_PORT/"; }

: >"$WORK/ceiling.runs"
: >"$WORK/verify.runs"
: >"$WORK/ratio.runs"
: >"$WORK/bare.runs"
for round in $(seq 1 "$ROUNDS"); do
    running ceiling && running verify || break
    profile() { # pid, file: a perf profile of the first round
        [ -n "${PROFILE:-}" ] && [ "$round" = 1 ] || return 0
        perf record -e cpu-clock -F 2000 -g -p "$1" -o "$2" -- sleep "${ROUND%s}" >/dev/null 2>&1 &
        PERF=$!
    }
    profile "$CEILING_PID" "${PROFILE:-}.ceiling"
    ceiling "$ROUND" >>"$WORK/ceiling.runs"
    [ -n "${PERF:-}" ] && wait "$PERF" && PERF=""
    running bare && bare "$ROUND" | awk '{ print $1 }' >>"$WORK/bare.runs"
    profile "$HF_PID" "${PROFILE:-}"
    verify "$ROUND" >>"$WORK/verify.runs"
    [ -n "${PERF:-}" ] && wait "$PERF" && PERF=""
    paste "$WORK/ceiling.runs" "$WORK/verify.runs" | tail -1 | awk '{ print $6 / $1 }' >>"$WORK/ratio.runs"
    say "round $round: ceiling $(tail -1 "$WORK/ceiling.runs" | cut -d' ' -f1) req/s, verify $(tail -1 "$WORK/verify.runs" | cut -d' ' -f1) req/s, ratio $(tail -1 "$WORK/ratio.runs")"
done
if running ceiling && running verify; then
    C_RPS=$(col "$WORK/ceiling.runs" 1); C_P50=$(col "$WORK/ceiling.runs" 2); C_P99=$(col "$WORK/ceiling.runs" 3)
    V_RPS=$(col "$WORK/verify.runs" 1); V_P50=$(col "$WORK/verify.runs" 2); V_P99=$(col "$WORK/verify.runs" 3)
    V_TOTAL=$(awk '{ t += $4 } END { print t }' "$WORK/verify.runs")
    V_BAD=$(awk '{ b += $5 } END { print b }' "$WORK/verify.runs")
    V_RATIO=$(median <"$WORK/ratio.runs")
    V_RATIO_RANGE=$(sort -n "$WORK/ratio.runs" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f %%", lo * 100, hi * 100 }')
    echo "median: ceiling $C_RPS req/s, verify $V_RPS req/s, ratio $V_RATIO ($V_RATIO_RANGE)" >&2
    if running bare; then
        paste "$WORK/bare.runs" "$WORK/verify.runs" | awk '{ print $2 / $1 }' >"$WORK/bare_ratio.runs"
        echo "against a header-less GET / instead: $(col "$WORK/bare.runs" 1) req/s, ratio $(median <"$WORK/bare_ratio.runs")" >&2
    fi
    rss verify
fi
if running switches; then
    # Context switches per request, server side (perf software counters).
    for target in "ceiling $CEILING_PID $CEILING_URL" "verify $HF_PID $BASE/auth/verify"; do
        set -- $target
        # voluntary (parked: no work) and involuntary (preempted) switches, summed per thread name
        threads() { for t in /proc/"$1"/task/*; do echo "$(cat "$t/comm" | tr ' ' _) $(awk '/^voluntary_ctxt/ { v = $2 } /^nonvoluntary_ctxt/ { n = $2 } END { print v, n }' "$t/status")"; done; }
        threads "$2" >"$WORK/threads.before"
        perf stat -e context-switches,task-clock,instructions:u,instructions:k,cycles:u,cycles:k -p "$2" -o "$WORK/stat.$1" -- sleep "${DURATION%s}" &
        STAT=$!
        read -r S_RPS _ _ S_TOTAL _ < <(measure -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $TOKEN" "$3")
        wait "$STAT"
        threads "$2" | awk 'NR == FNR { v[$1] -= $2; n[$1] -= $3; next } { v[$1] += $2; n[$1] += $3 }
            END { for (k in v) if (v[k] + n[k] > 100) printf "  %s: %d voluntary, %d involuntary switches\n", k, v[k], n[k] }' "$WORK/threads.before" - >&2
        awk -v n="$S_TOTAL" -v name="$1" -v rps="$S_RPS" '
            /task-clock/ { ms = $1; gsub(",", "", ms) }
            /context-switches/ { cs = $1; gsub(",", "", cs) }
            /instructions:u/ { iu = $1; gsub(",", "", iu) }
            /instructions:k/ { ik = $1; gsub(",", "", ik) }
            /cycles:u/ { cu = $1; gsub(",", "", cu) }
            /cycles:k/ { ck = $1; gsub(",", "", ck) }
            END { printf "%s: %.0f req/s, server CPU %.2f us/request, instructions/request %.0f user + %.0f kernel, cycles/request %.0f user + %.0f kernel, %.3f context switches/request\n", name, rps, ms * 1000 / n, iu / n, ik / n, cu / n, ck / n, cs / n }
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
if running login; then
    # LOGIN_ROUNDS login runs of LOGIN_ROUND, each bracketed by single-hash
    # timings (ARGON_HASHES hashes; a run shares each with its neighbour);
    # a run's ratio is its logins/s over hash workers / the mean of its two
    # timings. The machine's speed drifts by tens of percent from one few
    # seconds to the next, so a limit timed minutes from the logins
    # measured the drift.
    say "POST /auth/login"
    : >"$WORK/login.runs"
    : >"$WORK/login_ratio.runs"
    : >"$WORK/argon.runs"
    BEFORE_MS=$("$BIN/examples/argon2_time" "$ARGON_HASHES")
    for round in $(seq 1 "$LOGIN_ROUNDS"); do
        measure -c"$LOGIN_CONNECTIONS" -d"$LOGIN_ROUND" -s "$WORK/login.lua" "$BASE/auth/login" >>"$WORK/login.runs"
        sleep 0.5 # the logins still queued when wrk stopped are done
        AFTER_MS=$("$BIN/examples/argon2_time" "$ARGON_HASHES")
        HASH_MS=$(python3 -c "print(($BEFORE_MS + $AFTER_MS) / 2)")
        echo "$HASH_MS" >>"$WORK/argon.runs"
        tail -1 "$WORK/login.runs" | awk -v ms="$HASH_MS" -v w="$HASH_WORKERS" \
            '{ ok = $4 ? $1 * ($4 - $5) / $4 : 0; print ok / (w / (ms / 1000)) }' >>"$WORK/login_ratio.runs"
        say "round $round: one hash $BEFORE_MS → $AFTER_MS ms, logins $(tail -1 "$WORK/login.runs" | cut -d' ' -f1)/s, ratio $(tail -1 "$WORK/login_ratio.runs")"
        BEFORE_MS=$AFTER_MS
    done
    L_RPS=$(col "$WORK/login.runs" 1); L_P99=$(col "$WORK/login.runs" 3)
    L_TOTAL=$(awk '{ t += $4 } END { print t }' "$WORK/login.runs")
    L_BAD=$(awk '{ b += $5 } END { print b }' "$WORK/login.runs")
    ARGON_MS=$(median <"$WORK/argon.runs")
    L_RATIO=$(median <"$WORK/login_ratio.runs")
    L_RATIO_RANGE=$(sort -n "$WORK/login_ratio.runs" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f %%", lo * 100, hi * 100 }')
    echo "login $L_RPS/s p99 ${L_P99}us, $L_BAD failed; ratio $L_RATIO ($L_RATIO_RANGE); one hash $ARGON_MS ms (median)" >&2
    rss login
fi
# Refresh, register, API key, authz, introspection (benches/load_rows.sh):
# after the rows above, whichever of them run, so those keep their order
# and machine state; their own table last.
finish() { source benches/load_rows.sh; exit 0; }

running flood || finish

say "GET /auth/verify without and during a login flood"
: >"$WORK/calm.runs"
: >"$WORK/flood.runs"
: >"$WORK/flood_ratio.runs"
FLOOD_SECS=$(( ${ROUND%s} + 2 ))
for round in $(seq 1 "$ROUNDS"); do
    verify "$ROUND" >>"$WORK/calm.runs"
    wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${FLOOD_SECS}s" -s "$WORK/login.lua" "$BASE/auth/login" >"$WORK/flood.txt" 2>&1 &
    FLOOD=$!
    sleep 1 # the hash pool busy and its queue full before measuring
    verify "$ROUND" >>"$WORK/flood.runs"
    wait "$FLOOD" || true
    sleep 2 # the queued logins drained before the next run without the flood
    paste "$WORK/calm.runs" "$WORK/flood.runs" | tail -1 | awk '{ print $8 / $3 }' >>"$WORK/flood_ratio.runs"
    say "round $round: verify p99 $(tail -1 "$WORK/calm.runs" | cut -d' ' -f3) us, during the flood $(tail -1 "$WORK/flood.runs" | cut -d' ' -f3) us, ratio $(tail -1 "$WORK/flood_ratio.runs")"
done
Q_P99=$(col "$WORK/calm.runs" 3)
F_P99=$(col "$WORK/flood.runs" 3)
F_BAD=$(awk '{ b += $5 } END { print b }' "$WORK/flood.runs")
F_RATIO=$(median <"$WORK/flood_ratio.runs")
F_RATIO_RANGE=$(sort -n "$WORK/flood_ratio.runs" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f–%.2f×", lo, hi }')
echo "verify p99 ${Q_P99}us, during a login flood ${F_P99}us: ratio $F_RATIO ($F_RATIO_RANGE)" >&2
rss flood

running paused && running login && running verify || finish
say "GET /auth/verify with PostgreSQL paused"
kill -STOP "$PG_PID" $(pgrep -P "$PG_PID") 2>/dev/null
read -r P_RPS P_P50 P_P99 P_TOTAL P_BAD < <(verify "$DURATION")
kill -CONT "$PG_PID" $(pgrep -P "$PG_PID") 2>/dev/null
rss paused

RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$HF_PID/status")

python3 - "$C_RPS" "$C_P50" "$C_P99" "$V_RPS" "$V_P50" "$V_P99" "$V_TOTAL" "$V_BAD" "$V_RATIO" \
    "$L_RPS" "$L_P99" "$L_TOTAL" "$L_BAD" "$Q_P99" "$F_P99" "$F_BAD" "$F_RATIO" \
    "$P_RPS" "$P_P99" "$P_TOTAL" "$P_BAD" "$RSS_KB" "$ARGON_MS" \
    "$HASH_WORKERS" "$ROUNDS" "$ROUND" "$DURATION" "$CONNECTIONS" "$LOGIN_CONNECTIONS" "$FLOOD_CONNECTIONS" \
    "$V_RATIO_RANGE" "$F_RATIO_RANGE" "$L_RATIO" "$L_RATIO_RANGE" "$LOGIN_ROUNDS" "$LOGIN_ROUND" <<'PY'
import os, sys
(c_rps, c_p50, c_p99, v_rps, v_p50, v_p99, v_total, v_bad, v_ratio, l_rps, l_p99, l_total, l_bad,
 q_p99, f_p99, f_bad, f_ratio, p_rps, p_p99, p_total, p_bad, rss_kb, argon_ms) = map(float, sys.argv[1:24])
(workers, rounds, round_len, duration, conns, login_conns, flood_conns, v_range, f_range,
 l_ratio, l_range, login_rounds, login_round) = sys.argv[24:37]
workers, l_ratio = int(workers), float(l_ratio)
limit = workers / (argon_ms / 1000)
l_ok = l_rps * (l_total - l_bad) / l_total if l_total else 0.0
ms = lambda us: f"{us / 1000:.2f} ms"
def check(ok): return "ok" if ok else "MISSED"
rows = [
    ("bare axum ceiling (204), same request", f"{c_rps:,.0f} req/s", f"p50 {ms(c_p50)}, p99 {ms(c_p99)}", "", ""),
    ("GET /auth/verify", f"{v_rps:,.0f} req/s", f"p50 {ms(v_p50)}, p99 {ms(v_p99)}",
     f"{v_ratio:.0%} of ceiling, pairs {v_range} (≥ 70 %)", check(v_ratio >= 0.70 and v_bad == 0)),
    ("POST /auth/login", f"{l_ok:,.1f} logins/s", f"p99 {ms(l_p99)}",
     f"{l_ratio:.0%} of Argon2 limit ({limit:.1f}/s at the median hash), pairs {l_range} (≥ 85 %)",
     check(l_ratio >= 0.85 and l_bad == 0)),
    ("verify during a login flood", "", f"p99 {ms(f_p99)} (without: {ms(q_p99)})",
     f"{f_ratio:.2f}× p99 without, pairs {f_range} (≤ 2×)", check(f_ratio <= 2 and f_bad == 0)),
    ("verify, PostgreSQL paused", f"{p_rps:,.0f} req/s", f"p99 {ms(p_p99)}",
     f"{(p_total - p_bad) / p_total:.2%} success (100 %)", check(p_bad == 0)),
    ("peak RSS of holdfast", f"{rss_kb / 1024:.1f} MiB ({rss_kb * 1.024 / 1000:.1f} MB)", "", "(< 100 MB)", check(rss_kb * 1.024 / 1000 < 100)),
]
print(f"\nholdfast load benchmark — {os.cpu_count()} CPUs; ratios are medians of {rounds} adjacent pairs of "
      f"{round_len} runs (login: {login_rounds} runs of {login_round}, each between two single-hash timings), "
      f"throughputs and latencies medians of those runs; paused {duration}; "
      f"wrk {conns} connections (login {login_conns}, flood {flood_conns}), {workers} hash workers, "
      f"one Argon2id hash {argon_ms:.1f} ms (median)\n")
print("| measurement | throughput | latency | against the target | |")
print("|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
PY
finish
