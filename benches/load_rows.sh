# Sourced by benches/load.sh (not run alone): the rows of the endpoints
# users call often besides verify and login, each against a limit measured
# in the same run (docs/performance.md, "How each row is measured"):
#
#   refresh     POST /auth/refresh against the store round trips it needs,
#               measured with pgbench and redis-benchmark on the same
#               private servers, adjacent to each refresh run
#   register    POST /auth/register against the Argon2 limit (as login)
#   apikey      GET /auth/verify with an API key      } against the verify
#   authz       POST /authz/check, decision cache hit } run beside it
#   introspect  POST /auth/introspect (API key, scope introspect)
#
# Uses load.sh's variables and functions (measure, verify, median, col,
# running, say, BASE, WORK, PG_PORT, REDIS_PORT, as_pg, ...).

REFRESH_CONNECTIONS=${REFRESH_CONNECTIONS:-32}
REFRESH_ROUNDS=${REFRESH_ROUNDS:-10}
REFRESH_ROUND=${REFRESH_ROUND:-2s}
REGISTER_ROUNDS=${REGISTER_ROUNDS:-5}
# Clients of pgbench and redis-benchmark: holdfast's PostgreSQL pool size
# (the most statements it can have in flight).
STORE_CLIENTS=${STORE_CLIENTS:-16}
REDIS_REQUESTS=${REDIS_REQUESTS:-50000}
EXTRA_ROUNDS=${EXTRA_ROUNDS:-$ROUNDS}

range() { sort -n "$1" | awk -v f="${2:-%.0f–%.0f %%}" -v m="${3:-100}" 'NR == 1 { lo = $1 } { hi = $1 } END { printf f, lo * m, hi * m }'; }
psql_bench() { "${as_pg[@]}" psql -h 127.0.0.1 -p "$PG_PORT" -U holdfast -d holdfast -qAtX "$@"; }
# A string field of a one-line JSON answer (which has no final newline).
json_field() { { cat; echo; } | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }
ROWS_MD="$WORK/rows.md"
: >"$ROWS_MD"
row() { printf '| %s |\n' "$(IFS='|'; echo "$*" | sed 's/|/ | /g')" >>"$ROWS_MD"; }

# The earlier rows may have paused PostgreSQL: its breaker may still be
# open (open_wait), and the setup below writes. Wait (bounded) for health.
for _ in $(seq 1 120); do
    curl -s "$BASE/health" | grep -q '"status":"healthy"' && break
    sleep 0.5
done

# ---- API key, authz cache hit, introspection: against verify ----
if running apikey || running authz || running introspect; then
    say "API key, authz check, introspection (each against verify, bracketed)"
    curl -sf "$BASE/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"benchadmin@example.com\",\"username\":\"benchadmin\",\"password\":\"$PASSWORD\"}" >/dev/null
    # The admin role (the introspect scope needs tokens:introspect), set in
    # the database before its first login, as `holdfast user create --role` would.
    psql_bench -c "INSERT INTO user_roles (user_id, role) SELECT id, 'admin' FROM users WHERE username = 'benchadmin'" >/dev/null
    ADMIN_TOKEN=$(curl -sf "$BASE/auth/login" -H 'content-type: application/json' \
        -d "{\"login\":\"benchadmin\",\"password\":\"$PASSWORD\"}" | json_field access_token)
    API_KEY=$(curl -sf "$BASE/api-keys" -H 'content-type: application/json' -H "Authorization: Bearer $ADMIN_TOKEN" \
        -d '{"name":"bench","scopes":["introspect","users"]}' | json_field key)
    [ -n "$API_KEY" ] || { echo "no API key was created" >&2; exit 1; }
    cat >"$WORK/authz.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"permission":"users:read"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $ADMIN_TOKEN"
LUA
    cat >"$WORK/introspect.lua" <<LUA
wrk.method = "POST"
wrk.body = "token=$TOKEN"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["X-API-Key"] = "$API_KEY"
LUA
    apikey() { measure -c"$CONNECTIONS" -d"$1" -H "X-API-Key: $API_KEY" "$BASE/auth/verify"; }
    authz() { measure -c"$CONNECTIONS" -d"$1" -s "$WORK/authz.lua" "$BASE/authz/check"; }
    introspect() { measure -c"$CONNECTIONS" -d"$1" -s "$WORK/introspect.lua" "$BASE/auth/introspect"; }
    curl -sf "$BASE/auth/introspect" -H "X-API-Key: $API_KEY" -d "token=$TOKEN" | grep -q '"active":true' ||
        { echo "introspection does not answer active" >&2; exit 1; }
    curl -sf "$BASE/authz/check" -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
        -d '{"permission":"users:read"}' | grep -q '"allowed":true' || { echo "authz check not allowed" >&2; exit 1; }
    # Each run sits between two verify runs; its ratio is to their mean.
    BEFORE=$(verify "$ROUND")
    for round in $(seq 1 "$EXTRA_ROUNDS"); do
        for what in apikey authz introspect; do running "$what" && "$what" "$ROUND" >>"$WORK/$what.runs"; done
        AFTER=$(verify "$ROUND")
        V_MEAN=$(echo "$BEFORE $AFTER" | awk '{ print ($1 + $6) / 2 }')
        echo "$V_MEAN" >>"$WORK/verify_bracket.runs"
        for what in apikey authz introspect; do
            running "$what" && tail -1 "$WORK/$what.runs" | awk -v v="$V_MEAN" '{ print $1 / v }' >>"$WORK/$what.ratio"
        done
        say "round $round: verify $V_MEAN req/s (mean of the bracket)$(for w in apikey authz introspect; do running "$w" && printf ', %s %s' "$w" "$(tail -1 "$WORK/$w.runs" | cut -d' ' -f1)"; done)"
        BEFORE=$AFTER
    done
    for what in apikey authz introspect; do
        running "$what" || continue
        case $what in
        apikey) label="GET /auth/verify, API key" ;;
        authz) label="POST /authz/check (decision cache hit)" ;;
        introspect) label="POST /auth/introspect (API key, JWT)" ;;
        esac
        bad=$(awk '{ b += $5 } END { print b }' "$WORK/$what.runs")
        row "$label" "$(printf "%'.0f req/s" "$(col "$WORK/$what.runs" 1)")" \
            "$(awk '{ print $2 }' "$WORK/$what.runs" | median | awk '{ printf "p50 %.2f ms", $1 / 1000 }'), $(awk '{ print $3 }' "$WORK/$what.runs" | median | awk '{ printf "p99 %.2f ms", $1 / 1000 }')" \
            "$(median <"$WORK/$what.ratio" | awk '{ printf "%.0f%%", $1 * 100 }') of verify ($(col "$WORK/verify_bracket.runs" 1 | xargs printf "%'.0f") req/s), runs $(range "$WORK/$what.ratio")" \
            "$bad failed"
    done
fi

# ---- refresh: against the store round trips ----
if running refresh; then
    say "POST /auth/refresh against PostgreSQL + Redis round trips"
    SECS=${REFRESH_ROUND%s}
    USER_ID=$(psql_bench -c "SELECT id FROM users WHERE username = 'bench1'")
    NOW=$(date +%s)
    # pgbench rotates sessions of its own (ids from its client number),
    # with the statements src/store/sql/sessions.rs and users.rs send for
    # one refresh: the transaction (BEGIN, the UPDATE ... RETURNING, the
    # used-hash INSERT, COMMIT) and the user read (one statement, roles
    # aggregated).
    psql_bench -c "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent, ip, roles)
        SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, '$USER_ID', md5(g::text) || md5(g::text),
               $NOW, $NOW, $NOW + 86400, 'Mozilla/5.0 (X11; Linux x86_64) bench', '127.0.0.1', ''
        FROM generate_series(1, $STORE_CLIENTS) g" >/dev/null
    SID="('00000000-0000-0000-0000-' || lpad((:client_id + 1)::text, 12, '0'))::uuid"
    cat >"$WORK/refresh.sql" <<SQL
\set h random(1, 1000000000000)
\set h2 :h + 1
BEGIN;
UPDATE sessions SET refresh_hash = md5(:h::text) || md5(:h2::text), last_used_at = $NOW, generation = generation + 1 WHERE id = $SID AND refresh_hash IS NOT NULL AND revoked_at IS NULL AND expires_at > $NOW RETURNING id, user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent, ip, revoked_at, roles, generation;
INSERT INTO used_refresh_tokens (token_hash, session_id, used_at) VALUES (md5(:h::text) || md5((:client_id)::text), $SID, $NOW) ON CONFLICT DO NOTHING;
COMMIT;
SELECT id, email, username, password_hash, password_normalized, status, not_before, security_version, created_at, updated_at, (SELECT string_agg(role, ',') FROM user_roles WHERE user_roles.user_id = users.id) AS roles FROM users WHERE id = '$USER_ID';
SQL
    chmod 644 "$WORK/refresh.sql"
    # Redis: the real scripts (src/store/redis.rs ROTATE, redis_limiter.rs
    # RESERVE) on a real session's JSON. The rotation always succeeds here
    # (its hash comparison removed: every presented hash is a fresh random).
    lua_of() { sed -n "/^const $1: &str = r#\"/,/^\"#;/p" "$2" | sed '1d;$d'; }
    ROTATE_SHA=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(lua_of ROTATE src/store/redis.rs | grep -v "return 'mismatch'")")
    RESERVE_SHA=$(redis-cli -p "$REDIS_PORT" SCRIPT LOAD "$(lua_of RESERVE src/store/redis_limiter.rs)")
    SAMPLE=$(redis-cli -p "$REDIS_PORT" --scan --pattern 'hf:session:*' | grep -v ':used$' | sed -n 1p)
    redis-cli -p "$REDIS_PORT" GET "$SAMPLE" | redis-cli -p "$REDIS_PORT" -x SET 'hf:session:{bench}' >/dev/null
    redis_rps() { # command...
        redis-benchmark -p "$REDIS_PORT" -c "$STORE_CLIENTS" -n "$REDIS_REQUESTS" -r 1000000000000 -q "$@" 2>/dev/null |
            tr '\r' '\n' | grep 'requests per second' | tail -1 | sed 's/.*: \([0-9.]*\) requests per second.*/\1/'
    }
    tokens() { # n logins → one refresh token per line
        for i in $(seq 1 "$1"); do
            curl -sf "$BASE/auth/login" -H 'content-type: application/json' \
                -d "{\"login\":\"bench$(( (i % ACCOUNTS) + 1 ))\",\"password\":\"$PASSWORD\"}" | json_field refresh_token
        done
    }
    for round in $(seq 1 "$REFRESH_ROUNDS"); do
        # One spare per thread: wrk calls the first thread's request() once
        # before it starts, to check the script, and that token is never sent.
        tokens $((REFRESH_CONNECTIONS + THREADS)) >"$WORK/tokens"
        [ "$(wc -l <"$WORK/tokens")" = $((REFRESH_CONNECTIONS + THREADS)) ] || { echo "logins for refresh tokens failed" >&2; exit 1; }
        "${as_pg[@]}" pgbench -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U holdfast -c "$STORE_CLIENTS" -j "$THREADS" \
            -T "$SECS" -f "$WORK/refresh.sql" holdfast >"$WORK/pgbench.out" 2>&1 || { grep -v "^ *[a-z ]*: [0-9]" "$WORK/pgbench.out" | head -8 >&2; exit 1; }
        P=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench.out")
        R_ROT=$(redis_rps EVALSHA "$ROTATE_SHA" 2 'hf:session:{bench}' 'hf:session:{bench}:used' \
            "p__rand_int__" "n__rand_int__" "$NOW")
        R_RES=$(redis_rps EVALSHA "$RESERVE_SHA" 1 'hf:rl:bench' "$(( NOW * 1000 ))" 60000 1000000000000 "m__rand_int__")
        measure -c"$REFRESH_CONNECTIONS" -d"$REFRESH_ROUND" -s benches/refresh.lua "$BASE/auth/refresh" -- "$WORK/tokens" "$THREADS" >>"$WORK/refresh.runs"
        # The stores doing one refresh's work back to back, each at its
        # own measured rate: 1 / (1/P + 1/R_rotate + 1/R_reserve).
        LIMIT=$(awk -v p="$P" -v a="$R_ROT" -v b="$R_RES" 'BEGIN { print 1 / (1 / p + 1 / a + 1 / b) }')
        echo "$P $R_ROT $R_RES $LIMIT" >>"$WORK/refresh_limit.runs"
        tail -1 "$WORK/refresh.runs" | awk -v l="$LIMIT" '{ ok = $4 ? $1 * ($4 - $5) / $4 : 0; print ok / l }' >>"$WORK/refresh.ratio"
        say "round $round: pgbench $P tx/s, rotate $R_ROT/s, reserve $R_RES/s → limit $LIMIT/s; refresh $(tail -1 "$WORK/refresh.runs" | cut -d' ' -f1)/s ($(tail -1 "$WORK/refresh.runs" | cut -d' ' -f5) failed), ratio $(tail -1 "$WORK/refresh.ratio")"
    done
    bad=$(awk '{ b += $5 } END { print b }' "$WORK/refresh.runs")
    row "POST /auth/refresh" "$(printf "%'.0f refreshes/s" "$(col "$WORK/refresh.runs" 1)")" \
        "$(col "$WORK/refresh.runs" 2 | awk '{ printf "p50 %.2f ms", $1 / 1000 }'), $(col "$WORK/refresh.runs" 3 | awk '{ printf "p99 %.2f ms", $1 / 1000 }')" \
        "$(median <"$WORK/refresh.ratio" | awk '{ printf "%.0f%%", $1 * 100 }') of the round-trip limit ($(col "$WORK/refresh_limit.runs" 4 | xargs printf "%'.0f")/s: PostgreSQL $(col "$WORK/refresh_limit.runs" 1 | xargs printf "%'.0f") tx/s, Redis rotate $(col "$WORK/refresh_limit.runs" 2 | xargs printf "%'.0f")/s, limiter $(col "$WORK/refresh_limit.runs" 3 | xargs printf "%'.0f")/s), runs $(range "$WORK/refresh.ratio") (≥ 50 %)" \
        "$bad failed"
fi

# ---- register: against the Argon2 limit ----
if running register; then
    say "POST /auth/register against the Argon2 limit"
    cat >"$WORK/register.lua" <<LUA
local next_id = 0
function setup(thread) thread:set("id", next_id); next_id = next_id + 1 end
local n = 0
function init(args) run = args[1] end
request = function()
    n = n + 1
    local name = "r" .. run .. "t" .. id .. "n" .. n
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
        '{"email":"' .. name .. '@example.com","username":"' .. name .. '","password":"$PASSWORD"}')
end
LUA
    BEFORE_MS=$("$BIN/examples/argon2_time" "$ARGON_HASHES")
    for round in $(seq 1 "$REGISTER_ROUNDS"); do
        measure -c"$LOGIN_CONNECTIONS" -d"$LOGIN_ROUND" -s "$WORK/register.lua" "$BASE/auth/register" -- "$round" >>"$WORK/register.runs"
        sleep 0.5 # the registrations still queued when wrk stopped are done
        AFTER_MS=$("$BIN/examples/argon2_time" "$ARGON_HASHES")
        HASH_MS=$(awk -v a="$BEFORE_MS" -v b="$AFTER_MS" 'BEGIN { print (a + b) / 2 }')
        echo "$HASH_MS" >>"$WORK/register_argon.runs"
        tail -1 "$WORK/register.runs" | awk -v ms="$HASH_MS" -v w="$HASH_WORKERS" \
            '{ ok = $4 ? $1 * ($4 - $5) / $4 : 0; print ok / (w / (ms / 1000)) }' >>"$WORK/register.ratio"
        say "round $round: one hash $BEFORE_MS → $AFTER_MS ms, registrations $(tail -1 "$WORK/register.runs" | cut -d' ' -f1)/s, ratio $(tail -1 "$WORK/register.ratio")"
        BEFORE_MS=$AFTER_MS
    done
    bad=$(awk '{ b += $5 } END { print b }' "$WORK/register.runs")
    hash=$(median <"$WORK/register_argon.runs")
    row "POST /auth/register" "$(col "$WORK/register.runs" 1 | xargs printf "%.1f registrations/s")" \
        "$(col "$WORK/register.runs" 2 | awk '{ printf "p50 %.2f ms", $1 / 1000 }'), $(col "$WORK/register.runs" 3 | awk '{ printf "p99 %.2f ms", $1 / 1000 }')" \
        "$(median <"$WORK/register.ratio" | awk '{ printf "%.0f%%", $1 * 100 }') of the Argon2 limit ($(awk -v w="$HASH_WORKERS" -v ms="$hash" 'BEGIN { printf "%.1f/s at %.1f ms a hash", w / (ms / 1000), ms }')), runs $(range "$WORK/register.ratio") (login's ≥ 85 %)" \
        "$bad failed"
fi

if [ -s "$ROWS_MD" ]; then
    echo
    echo "holdfast load benchmark, more endpoints — wrk $CONNECTIONS connections (refresh $REFRESH_CONNECTIONS, register $LOGIN_CONNECTIONS); pgbench and redis-benchmark $STORE_CLIENTS clients; medians of the runs"
    echo
    echo "| measurement | throughput | latency | against its limit | |"
    echo "|---|---|---|---|---|"
    cat "$ROWS_MD"
fi
