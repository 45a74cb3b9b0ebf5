# Sourced by benches/load.sh and benches/scale.sh (not run alone): the
# private servers both drive, each on a free loopback port in the
# caller's $WORK, stopped by PID by the caller's cleanup (PIDS), and how
# both read wrk. The machine's own PostgreSQL and Redis are never touched.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "$what did not start" >&2; return 1
}

# PostgreSQL (database `holdfast`, trust auth): sets PG_PORT, PG_PID and
# as_pg (initdb refuses root: run as the postgres user when we are root).
start_postgres() {
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
    PG_PID=$!
    PIDS+=("$PG_PID")
    wait_for postgres pg_isready -h 127.0.0.1 -p "$PG_PORT" -U holdfast
    "${as_pg[@]}" psql -h 127.0.0.1 -p "$PG_PORT" -U holdfast -d postgres -qc "CREATE DATABASE holdfast" >/dev/null
}

# Redis without persistence: sets REDIS_PORT.
start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    wait_for redis redis-cli -p "$REDIS_PORT" ping
}

# The start of holdfast's configuration on those servers (production
# mode, limits that never bite a load generator on one address); the
# caller appends its own sections.
write_config() {
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
register_per_ip = "10000000/min"
refresh_per_ip = "10000000/min"
TOML
}

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

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# The median of column $2 of file $1.
col() { awk -v c="$2" '{ print $c }' "$1" | median; }
