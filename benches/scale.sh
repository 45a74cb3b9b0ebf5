#!/usr/bin/env bash
# Scale curves (docs/performance.md, "How each cost grows"), each from one
# run: private PostgreSQL and Redis on free loopback ports in a temp dir,
# holdfast on them (production mode) restarted at each step, the bare axum
# ceiling beside it, data seeded in bulk. Prints the tables and draws
# docs/scale.png (gnuplot, installed with apt when missing and root).
# Everything it starts is stopped by PID at the end.
#
#   benches/scale.sh                                   # 0, 10k, 100k, 1M
#   SIZES="0 1000 10000" ROUNDS=3 benches/scale.sh     # a quick run
#   PLOT=/tmp/scale.png benches/scale.sh               # draw elsewhere
#
# 1. verify req/s (beside the ceiling), p99 and RSS with each of SIZES
#    revoked sessions in the ledger, loaded by a restarted node, and its
#    time from start to ready; at each start a session revoked just before
#    must be refused at the first answer (never ready before revocations
#    are loaded);
# 2. USERS users and SESSIONS active sessions seeded: PostgreSQL bytes per
#    user and per session, then the time to ready and RSS of a restart;
# 3. refresh p50/p99 with the few sessions of the run in Redis, then with
#    REDIS_SESSIONS more seeded (and Redis bytes per session key);
# 4. the validation cache from one entry to its bound: verify over working
#    sets of VALIDATION_SIZES distinct access tokens (minted by refresh).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"0 10000 100000 1000000"}
MAX=$(echo "$SIZES" | tr ' ' '\n' | sort -n | tail -1)
USERS=${USERS:-$MAX}
SESSIONS=${SESSIONS:-$MAX}
REDIS_SESSIONS=${REDIS_SESSIONS:-$MAX}
ROUNDS=${ROUNDS:-10}
ROUND=${ROUND:-1s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
REFRESH_CONNECTIONS=${REFRESH_CONNECTIONS:-32}
REFRESH_ROUND=${REFRESH_ROUND:-2s}
# Distinct tokens verified in turn; 100,000 is the validation cache's bound
# (src/auth/validation_cache.rs CAPACITY).
VALIDATION_SIZES=${VALIDATION_SIZES:-"1 1000 10000 100000"}
PLOT=${PLOT:-docs/scale.png}

say() { printf '== %s\n' "$*" >&2; }
for tool in wrk initdb postgres redis-server redis-cli curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (benches/load.sh installs wrk, scripts/test PostgreSQL and Redis)" >&2; exit 1; }
done
if ! command -v gnuplot >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "gnuplot is missing: apt-get install gnuplot-nox" >&2; exit 1; }
    say "installing gnuplot"
    apt-get update -qq >/dev/null && apt-get install -y -qq gnuplot-nox >/dev/null
fi

say "building release"
cargo build --release --locked --bin holdfast --example ceiling >&2
BIN=target/release
BENCH_BIN=${BENCH_BIN:-$BIN/holdfast}

# free_port, wait_for, start_postgres, start_redis, write_config.
. benches/servers.sh
WORK=$(mktemp -d /tmp/holdfast-scale-XXXXXX)
chmod 755 "$WORK"
PIDS=()
HF_PID=""
cleanup() {
    [ -n "$HF_PID" ] && kill "$HF_PID" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_postgres
sql() { "${as_pg[@]}" psql -h 127.0.0.1 -p "$PG_PORT" -U holdfast -d holdfast -qAtX -v ON_ERROR_STOP=1 "$@"; }
start_redis
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

CEILING_PORT=$(free_port)
"$BIN/examples/ceiling" "127.0.0.1:$CEILING_PORT" &
PIDS+=($!)
wait_for ceiling curl -s "http://127.0.0.1:$CEILING_PORT/"

HF_PORT=$(free_port)
BASE="http://127.0.0.1:$HF_PORT/api/v1"
write_config
MASTER_KEY=$(head -c32 /dev/urandom | base64)

rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$HF_PID/status"; }
json_field() { { cat; echo; } | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
PASSWORD="tangerine-orbit-lamp"
login() { # user → the login's JSON answer
    curl -sf "$BASE/auth/login" -H 'content-type: application/json' -d "{\"login\":\"$1\",\"password\":\"$PASSWORD\"}"
}

# Starts holdfast and times it to ready. Before, a session of `bench` is
# revoked (logout); from the start, its access token is presented until
# the node answers anything but 503: that answer must be 401. Prints
# "seconds_to_ready rss_kb_at_ready first_answer_to_the_revoked_token".
start() {
    local revoked=""
    if [ -n "$HF_PID" ]; then
        revoked=$(login bench | json_field access_token)
        curl -sf -X POST "$BASE/auth/logout" -H "Authorization: Bearer $revoked" >/dev/null
        kill "$HF_PID"
        wait "$HF_PID" 2>/dev/null || true
    fi
    local t0 answer="" ready=""
    t0=$(date +%s.%N)
    HOLDFAST_MASTER_KEY=$MASTER_KEY "$BENCH_BIN" --config "$WORK/holdfast.toml" serve >>"$WORK/holdfast.log" 2>&1 &
    HF_PID=$!
    for _ in $(seq 1 6000); do
        if [ -n "$revoked" ] && [ -z "$answer" ]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $revoked" "$BASE/auth/verify" || true)
            case $code in 000 | 503) ;; *) answer=$code ;; esac
        fi
        if curl -sf -o /dev/null "http://127.0.0.1:$HF_PORT/readyz"; then
            ready=$(date +%s.%N)
            break
        fi
        kill -0 "$HF_PID" 2>/dev/null || { tail -20 "$WORK/holdfast.log" >&2; exit 1; }
        sleep 0.01
    done
    [ -n "$ready" ] || { echo "holdfast not ready in time" >&2; tail -20 "$WORK/holdfast.log" >&2; exit 1; }
    local rss
    rss=$(rss_kb)
    if [ -n "$revoked" ] && [ -z "$answer" ]; then
        answer=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $revoked" "$BASE/auth/verify")
    fi
    echo "$(awk -v a="$t0" -v b="$ready" 'BEGIN { printf "%.3f", b - a }') $rss ${answer:--}"
}


# ROUNDS adjacent ceiling/verify pairs, both with the same wrk arguments
# (default: the bench token's header; after a "--", the script's
# arguments) → "verify_rps ceiling_rps ratio p50 p99 failed" (medians).
verify_pairs() {
    local opts=("$@") script_args=()
    [ ${#opts[@]} -gt 0 ] || opts=(-H "Authorization: Bearer $TOKEN")
    for ((k = 0; k < ${#opts[@]}; k++)); do
        if [ "${opts[k]}" = -- ]; then script_args=("${opts[@]:k}"); opts=("${opts[@]:0:k}"); break; fi
    done
    : >"$WORK/c.runs"; : >"$WORK/v.runs"; : >"$WORK/r.runs"
    for _ in $(seq 1 "$ROUNDS"); do
        measure -c"$CONNECTIONS" -d"$ROUND" "${opts[@]}" \
            "http://127.0.0.1:$CEILING_PORT/api/v1/auth/verify" "${script_args[@]}" >>"$WORK/c.runs"
        measure -c"$CONNECTIONS" -d"$ROUND" "${opts[@]}" "$BASE/auth/verify" "${script_args[@]}" >>"$WORK/v.runs"
        paste "$WORK/c.runs" "$WORK/v.runs" | tail -1 | awk '{ print $6 / $1 }' >>"$WORK/r.runs"
    done
    echo "$(col "$WORK/v.runs" 1) $(col "$WORK/c.runs" 1) $(median <"$WORK/r.runs") $(col "$WORK/v.runs" 2) $(col "$WORK/v.runs" 3) $(awk '{ b += $5 } END { print b }' "$WORK/v.runs")"
}

refresh_runs() { # rounds → "p50_us p99_us rps failed" (medians)
    : >"$WORK/f.runs"
    for _ in $(seq 1 "$1"); do
        for i in $(seq 1 $((REFRESH_CONNECTIONS + THREADS))); do login bench | json_field refresh_token; done >"$WORK/tokens"
        measure -c"$REFRESH_CONNECTIONS" -d"$REFRESH_ROUND" -s benches/refresh.lua "$BASE/auth/refresh" -- "$WORK/tokens" "$THREADS" >>"$WORK/f.runs"
    done
    echo "$(col "$WORK/f.runs" 2) $(col "$WORK/f.runs" 3) $(col "$WORK/f.runs" 1) $(awk '{ b += $5 } END { print b }' "$WORK/f.runs")"
}

size() { sql -c "SELECT pg_total_relation_size('$1')"; }
UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36'

# ---- start, the bench user ----
say "starting holdfast on an empty database"
start >"$WORK/start.out"  # not in a subshell: it sets HF_PID
read -r READY0 RSS0 _ <"$WORK/start.out"
curl -sf "$BASE/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"bench@example.com\",\"username\":\"bench\",\"password\":\"$PASSWORD\"}" >/dev/null
TOKEN=$(login bench | json_field access_token)
BENCH_ID=$(sql -c "SELECT id FROM users WHERE username = 'bench'")
PHC=$(sql -c "SELECT password_hash FROM users WHERE username = 'bench'")
NOW=$(date +%s)

# ---- users in bulk: PostgreSQL bytes per user ----
say "seeding $USERS users"
U0=$(size users)
sql -c "INSERT INTO users (id, email, username, password_hash, password_normalized, created_at, updated_at)
    SELECT gen_random_uuid(), 'user' || g || '@example.com', 'user' || g, '$PHC', true, $NOW, $NOW
    FROM generate_series(1, $USERS) g" >/dev/null
sql -c "ANALYZE users" >/dev/null
U1=$(size users)

# ---- verify with revoked sessions ----
: >"$WORK/revoked.dat"
S0=$(size sessions)
HELD=0
for n in $SIZES; do
    NOW=$(date +%s)
    # Revocations older than the horizon (access-token lifetime + leeway)
    # are no longer loaded: keep the earlier steps' ones recent.
    sql -c "UPDATE sessions SET revoked_at = $NOW WHERE revoked_at < $NOW - 300" >/dev/null
    if [ "$n" -gt "$HELD" ]; then
        say "seeding $((n - HELD)) revoked sessions (to $n)"
        sql -c "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent, ip, revoked_at, roles)
            SELECT gen_random_uuid(), '$BENCH_ID', md5(g::text) || md5((g + 1)::text), $NOW - 3600, $NOW - 60,
                   $NOW + 30 * 86400, '$UA', '203.0.113.7', $NOW, ''
            FROM generate_series(1, $((n - HELD))) g" >/dev/null
        HELD=$n
    fi
    say "$n revoked sessions: restart"
    start >"$WORK/start.out"
    read -r READY RSS_READY ANSWER <"$WORK/start.out"
    read -r V_RPS C_RPS RATIO V_P50 V_P99 V_BAD < <(verify_pairs)
    RSS_AFTER=$(rss_kb)
    echo "$n $V_RPS $C_RPS $RATIO $V_P50 $V_P99 $RSS_READY $RSS_AFTER $READY $ANSWER $V_BAD" | tee -a "$WORK/revoked.dat" >&2
done
S_REVOKED=$(size sessions)

# ---- active sessions in bulk: bytes per session, start-up ----
say "seeding $SESSIONS active sessions over the users"
NOW=$(date +%s)
sql -c "UPDATE sessions SET revoked_at = $NOW WHERE revoked_at < $NOW - 300" >/dev/null
S1=$(size sessions)
sql -c "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent, ip, roles)
    SELECT gen_random_uuid(), id, md5(id::text) || md5(username), $NOW - 3600, $NOW - 60, $NOW + 30 * 86400, '$UA', '203.0.113.7', ''
    FROM users LIMIT $SESSIONS" >/dev/null
sql -c "ANALYZE sessions" >/dev/null
S2=$(size sessions)
start >"$WORK/start.out"
read -r BIG_READY BIG_RSS BIG_ANSWER <"$WORK/start.out"
say "with $USERS users, $SESSIONS active and $HELD revoked sessions: ready in ${BIG_READY}s, RSS $BIG_RSS kB, revoked token answered $BIG_ANSWER"

# ---- refresh with sessions in Redis ----
say "refresh with $(rcli DBSIZE) keys in Redis"
read -r F0_P50 F0_P99 F0_RPS F0_BAD < <(refresh_runs 3)
say "seeding $REDIS_SESSIONS sessions into Redis"
SAMPLE=$(rcli --scan --pattern 'hf:session:*' | grep -v ':used$' | sed -n 1p)
TEMPLATE=$(rcli GET "$SAMPLE")
R0=$(rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
SEED_LUA="local n, base, json, exat = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
for i = base, base + n - 1 do
  local id = string.format('%08x-0000-4000-8000-%012x', i % 4294967296, i)
  local s = (string.gsub(json, '\"id\":\"[^\"]*\"', '\"id\":\"' .. id .. '\"', 1))
  redis.call('SET', 'hf:session:{' .. id .. '}', s, 'EXAT', exat)
end
return n"
done_n=0
while [ "$done_n" -lt "$REDIS_SESSIONS" ]; do
    chunk=$(( REDIS_SESSIONS - done_n < 100000 ? REDIS_SESSIONS - done_n : 100000 ))
    rcli EVAL "$SEED_LUA" 0 "$chunk" "$done_n" "$TEMPLATE" $((NOW + 30 * 86400)) >/dev/null
    done_n=$((done_n + chunk))
done
R1=$(rcli INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')
say "refresh with $(rcli DBSIZE) keys in Redis"
read -r F1_P50 F1_P99 F1_RPS F1_BAD < <(refresh_runs 3)

# ---- the validation cache from one entry to its bound ----
VC_MAX=$(echo "$VALIDATION_SIZES" | tr ' ' '\n' | sort -n | tail -1)
say "minting $VC_MAX access tokens by refresh"
minted() { cat "$WORK"/access.* 2>/dev/null | wc -l; }
while [ "$(minted)" -lt "$VC_MAX" ]; do
    for i in $(seq 1 $((REFRESH_CONNECTIONS + THREADS))); do login bench | json_field refresh_token; done >"$WORK/tokens"
    wrk -t"$THREADS" -c"$REFRESH_CONNECTIONS" -d10s -s benches/refresh.lua "$BASE/auth/refresh" \
        -- "$WORK/tokens" "$THREADS" "$WORK/access" >/dev/null
done
cat "$WORK"/access.* | awk -v n="$VC_MAX" 'NR <= n' >"$WORK/minted"  # all read: no SIGPIPE under pipefail
: >"$WORK/validation.dat"
for n in $VALIDATION_SIZES; do
    # One pass over the working set first, so each token has been
    # validated once (cold: signature, claims, revocations) and cached.
    WARM_SECS=$(( n / 5000 + 2 ))
    read -r W_RPS _ < <(measure -c"$CONNECTIONS" -d"${WARM_SECS}s" -s benches/tokens.lua "$BASE/auth/verify" -- "$WORK/minted" "$n")
    read -r V_RPS C_RPS RATIO V_P50 V_P99 V_BAD < <(verify_pairs -s benches/tokens.lua -- "$WORK/minted" "$n")
    echo "$n $V_RPS $C_RPS $RATIO $V_P50 $V_P99 $(rss_kb) $W_RPS $V_BAD" | tee -a "$WORK/validation.dat" >&2
done

# ---- tables ----
python3 - "$WORK/revoked.dat" "$USERS" "$SESSIONS" "$HELD" "$U0" "$U1" "$S0" "$S_REVOKED" "$S1" "$S2" \
    "$READY0" "$RSS0" "$BIG_READY" "$BIG_RSS" "$BIG_ANSWER" \
    "$F0_P50" "$F0_P99" "$F0_RPS" "$F0_BAD" "$F1_P50" "$F1_P99" "$F1_RPS" "$F1_BAD" "$REDIS_SESSIONS" "$R0" "$R1" \
    "$ROUNDS" "$ROUND" "$CONNECTIONS" "$REFRESH_CONNECTIONS" "$REFRESH_ROUND" "$WORK/plot.dat" "$WORK/validation.dat" <<'PY'
import os, sys
a = sys.argv[1:]
rows = [l.split() for l in open(a[0]) if l.strip()]
users, sessions, revoked = int(a[1]), int(a[2]), int(a[3])
u0, u1, s0, s_rev, s1, s2 = map(int, a[4:10])
ready0, rss0, big_ready, big_rss, big_answer = float(a[10]), int(a[11]), float(a[12]), int(a[13]), a[14]
f0 = list(map(float, a[15:19])); f1 = list(map(float, a[19:23]))
redis_n, r0, r1 = int(a[23]), int(a[24]), int(a[25])
rounds, round_len, conns, rconns, rround, plot, vdat = a[26:33]
vrows = [l.split() for l in open(vdat) if l.strip()]
n = lambda v: f"{int(v):,}"
ms = lambda us: f"{float(us) / 1000:.2f} ms"
mib = lambda kb: f"{int(kb) / 1024:.1f} MiB"
print(f"\nholdfast scale curves — {os.cpu_count()} CPUs; verify: medians of {rounds} adjacent ceiling/verify pairs "
      f"of {round_len}, wrk {conns} connections, after a restart that loads the revocations\n")
print("| revoked sessions | verify | ceiling (same request) | verify / ceiling | p50 | p99 | RSS at ready | RSS after the load | start to ready | revoked token's first answer | failed |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
base = rows[0]
for r in rows:
    print(f"| {n(r[0])} | {float(r[1]):,.0f} req/s | {float(r[2]):,.0f} req/s | {float(r[3]):.0%} | {ms(r[4])} | {ms(r[5])} "
          f"| {mib(r[6])} | {mib(r[7])} | {float(r[8]):.2f} s | {r[9]} | {r[10]} |")
last = rows[-1]
if int(last[0]) > 0 and int(base[0]) == 0:
    per = (int(last[6]) - int(base[6])) * 1024 / int(last[0])
    print(f"\nAt {n(last[0])} revoked: verify/ceiling {float(last[3]) / float(base[3]):.0%} of the empty state's (target ≥ 90 %), "
          f"RSS at ready {per:.0f} bytes per revoked session more than with none (target ≤ 200)")
print(f"\n| with | value |\n|---|---|")
print(f"| PostgreSQL bytes per user (`users`, heap + indexes + TOAST, {n(users)} seeded) | {(u1 - u0) / max(users, 1):.0f} |")
print(f"| PostgreSQL bytes per revoked session (`sessions`, {n(revoked)} seeded) | {(s_rev - s0) / max(revoked, 1):.0f} |")
print(f"| PostgreSQL bytes per active session (`sessions`, {n(sessions)} seeded) | {(s2 - s1) / max(sessions, 1):.0f} |")
print(f"| Redis `used_memory` per session key ({n(redis_n)} seeded, no `:used` set) | {(r1 - r0) / max(redis_n, 1):.0f} |")
print(f"| start to ready, empty database | {ready0:.2f} s, RSS {mib(rss0)} |")
print(f"| start to ready, {n(users)} users, {n(sessions)} active + {n(revoked)} revoked sessions | {big_ready:.2f} s, RSS {mib(big_rss)}; "
      f"revoked token first answered {big_answer} (target ≤ 5 s, 401) |")
print(f"| refresh, {rconns} connections, 3 runs of {rround}, few sessions in Redis | {f0[2]:,.0f}/s, p50 {ms(f0[0])}, p99 {ms(f0[1])}, {f0[3]:.0f} failed |")
print(f"| refresh, {n(redis_n)} more sessions in Redis | {f1[2]:,.0f}/s, p50 {ms(f1[0])}, p99 {ms(f1[1])}, {f1[3]:.0f} failed |")
print(f"\nThe validation cache: verify cycling over n distinct tokens, after one pass over them; "
      f"medians of {rounds} ceiling/verify pairs\n")
print("| tokens in turn | verify | ceiling | verify / ceiling | p50 | p99 | RSS after | warm-up run | failed |")
print("|---|---|---|---|---|---|---|---|---|")
for r in vrows:
    print(f"| {n(r[0])} | {float(r[1]):,.0f} req/s | {float(r[2]):,.0f} req/s | {float(r[3]):.0%} | {ms(r[4])} | {ms(r[5])} "
          f"| {mib(r[6])} | {float(r[7]):,.0f} req/s | {r[8]} |")
with open(plot, "w") as f:
    for r in rows:
        label = f"{int(r[0]) // 1000}k" if int(r[0]) >= 1000 else r[0]
        label = "1M" if int(r[0]) == 1_000_000 else label
        f.write(f"{label} {r[1]} {r[2]} {float(r[5]) / 1000} {int(r[6]) / 1024} {int(r[7]) / 1024} {r[8]}\n")
    f.write(f"\n\n0 {f0[1] / 1000}\n{redis_n} {f1[1] / 1000}\n")
    f.write("\n\n")
    for r in vrows:
        v = int(r[0])
        label = "1M" if v == 1_000_000 else (f"{v // 1000}k" if v >= 1000 else r[0])
        f.write(f"{label} {r[1]} {r[2]} {float(r[5]) / 1000}\n")
PY

say "drawing $PLOT"
gnuplot <<GP
set terminal pngcairo size 1200,800 font ",10"
set output "$PLOT"
set multiplot layout 2,3 title "holdfast scale curves (one run of benches/scale.sh; SIZES=\"$SIZES\")"
set grid
set style data linespoints
set key bottom left
set xlabel "revoked sessions"
set title "verify throughput"
set ylabel "req/s"
set yrange [0:*]
plot "$WORK/plot.dat" index 0 using 0:2:xtic(1) title "verify", "" index 0 using 0:3 title "ceiling (same request)"
set title "verify p99"
set ylabel "ms"
plot "$WORK/plot.dat" index 0 using 0:4:xtic(1) title "p99"
set title "holdfast RSS"
set ylabel "MiB"
plot "$WORK/plot.dat" index 0 using 0:5:xtic(1) title "at ready", "" index 0 using 0:6 title "after the verify load"
set title "start to ready"
set ylabel "s"
plot "$WORK/plot.dat" index 0 using 0:7:xtic(1) title "to /readyz 200"
set title "refresh p99"
set xlabel "sessions seeded into Redis"
set ylabel "ms"
set boxwidth 0.5
set xrange [-0.75:1.75]
plot "$WORK/plot.dat" index 1 using 0:2:xtic(1) with boxes fill solid 0.5 title "p99"
set title "validation cache: verify over n tokens in turn"
set xlabel "distinct tokens (the cache's bound: 100k)"
set ylabel "req/s"
set autoscale x
set style data linespoints
plot "$WORK/plot.dat" index 2 using 0:2:xtic(1) title "verify", "" index 2 using 0:3 title "ceiling (same requests)"
unset multiplot
GP
