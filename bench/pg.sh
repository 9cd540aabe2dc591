#!/usr/bin/env bash
# SQLite beside PostgreSQL with one and with two instances, in one run on one machine, each
# figure also as a ratio to the no-store ceiling measured in the same run:
#
#   ceiling   GET /healthz under the same load (one instance; and two, each with half of it)
#   accept    POST of a ~1.6 KB Qualifio v2 payload, a new id each time, no destination:
#             accepted/s
#   drain     a backlog (what one instance accepts in $DURATION) of deliveries to a webhook
#             whose loopback sink answers 204 at once: delivered/s, from the instances' start
#             until nothing is waiting
#
#   cargo build --release && bench/pg.sh
#
# Needs wrk, curl, psql, python3 and caddy (the sink; apt-get install -y wrk curl
# postgresql-client python3 caddy), and a PostgreSQL server: HOOKFAN_BENCH_POSTGRES_URL, else
# HOOKFAN_TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/test. Each run works in a
# schema of its own there, dropped at the end. Everything (load generator, relay, database,
# sink) shares the machine: the load average is printed at each step, as other work on the
# machine moves the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HOOKFAN_BIN:-target/release/hookfan}
PG=${HOOKFAN_BENCH_POSTGRES_URL:-${HOOKFAN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
BASE_PORT=${BASE_PORT:-18100}
SINK_PORT=$((BASE_PORT + 90))

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for s in $(psql -Atq "$PG" -c "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hookfan_bench_$$_%'"); do
        psql -q "$PG" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

# A new, empty store for each figure, so none measures another's leftovers.
sqlite_store() { echo "sqlite://$dir/$1.db"; }
pg_store() {
    psql -q "$PG" -c "CREATE SCHEMA hookfan_bench_$$_$1" >/dev/null
    local sep
    sep=$([[ "$PG" == *\?* ]] && echo '&' || echo '?')
    echo "$PG${sep}options[search_path]=hookfan_bench_$$_$1"
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

# config NAME PORT STORAGE DESTINATION: DESTINATION is none, sink, or ingest (the sink's
# destination at 1 call per hour, so a backlog piles up).
config() {
    local name=$1 port=$2 storage=$3 destination=$4
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n\n[storage]\nurl = "%s"\n\n' "$port" "$storage"
        printf '[sources.qualifio]\ntoken = "bench-token-0123456789"\n\n'
        if [ "$destination" != none ]; then
            printf '[destinations.sink]\ntype = "webhook"\nurl = "http://127.0.0.1:%s/in"\nconcurrency = 16\n' "$SINK_PORT"
            [ "$destination" = ingest ] && printf 'rate_limit = "1/1h"\n'
            printf '[destinations.sink.fields]\nid = "{{ participation.id }}"\nemail = "{{ participant.email }}"\n'
        fi
    } > "$dir/$name.toml"
}

# start NAME: runs the relay with config NAME, waits until it answers.
start() {
    local port
    port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$dir/$1.toml")
    RUST_LOG=warn "$BIN" serve --config "$dir/$1.toml" 2>>"$dir/$1.log" &
    pids+=($!)
    for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.05; done
    echo "$1 did not start:" >&2
    cat "$dir/$1.log" >&2
    exit 1
}

stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

# wrk_rate THREADS CONNECTIONS URL [SCRIPT]: requests per second; answers that were not 2xx
# are reported on stderr.
wrk_rate() {
    local t=$1 c=$2 url=$3 script=${4:-}
    local out
    if [ -n "$script" ]; then
        out=$(HOOKFAN_BENCH_RUN="$(date +%s%N)-${url##*:}" HOOKFAN_BENCH_PAYLOAD=bench/payload.json wrk -t"$t" -c"$c" -d"$DURATION" -s "$script" "$url")
    else
        out=$(wrk -t"$t" -c"$c" -d"$DURATION" "$url/healthz")
    fi
    local errors
    errors=$(echo "$out" | sed -n 's/^  Non-2xx or 3xx responses: \([0-9]*\)/\1/p')
    [ -n "$errors" ] && echo "    ($errors answers were not 2xx)" >&2
    echo "$out" | sed -n 's/^Requests\/sec: *\([0-9.]*\)/\1/p'
}

# rate_on SCRIPT PORTS...: the same load (two wrk threads, $CONNECTIONS connections) spread
# over the instances at once (SCRIPT empty: GET /healthz), their rates summed.
rate_on() {
    local script=$1
    shift
    local per=$((CONNECTIONS / $#)) threads=$((2 / $#)) files=() waits=()
    [ "$threads" -ge 1 ] || threads=1
    for port in "$@"; do
        local f="$dir/rate-$port"
        files+=("$f")
        wrk_rate "$threads" "$per" "http://127.0.0.1:$port" "$script" > "$f" &
        waits+=($!)
    done
    wait "${waits[@]}"
    python3 -c 'import sys; print(round(sum(float(open(f).read() or 0) for f in sys.argv[1:])))' "${files[@]}"
}

waiting() {
    "$BIN" stats --json --config "$1" | python3 -c '
import json, sys
print(sum(n for d in json.load(sys.stdin) for s, n in d["counts"].items() if s in ("pending", "retrying")))'
}

delivered() {
    "$BIN" stats --json --config "$1" | python3 -c '
import json, sys
print(sum(d["counts"].get("delivered", 0) for d in json.load(sys.stdin)))'
}

# backlog STORAGE: deliveries waiting for the sink, as many as one instance accepts in
# $DURATION (its destination makes one call an hour, so they pile up).
backlog() {
    config ingest $((BASE_PORT + 50)) "$1" ingest
    start ingest
    wrk_rate 2 "$CONNECTIONS" "http://127.0.0.1:$((BASE_PORT + 50))" bench/accept.lua >/dev/null
    stop_all
}

# drain STORAGE INSTANCES: seconds until the backlog is delivered, as delivered/s.
drain() {
    local storage=$1 instances=$2 names=()
    for i in $(seq "$instances"); do
        config "drain$i" $((BASE_PORT + 60 + i)) "$storage" sink
        names+=("drain$i")
    done
    local before
    before=$(delivered "$dir/drain1.toml")
    local t0
    t0=$(date +%s.%N)
    for n in "${names[@]}"; do start "$n"; done
    local deadline=$((SECONDS + 600))
    while [ "$(waiting "$dir/drain1.toml")" -gt 0 ]; do
        if [ "$SECONDS" -gt "$deadline" ]; then
            echo "the backlog was not delivered within 10 minutes:" >&2
            "$BIN" stats --config "$dir/drain1.toml" >&2
            exit 1
        fi
        sleep 0.2
    done
    local t1
    t1=$(date +%s.%N)
    local after
    after=$(delivered "$dir/drain1.toml")
    stop_all
    python3 -c 'import sys; n=int(sys.argv[3])-int(sys.argv[2]); t=float(sys.argv[1]); print(round(n/t), n, round(t,1))' \
        "$(python3 -c "print($t1-$t0)")" "$before" "$after"
}

ratio() { python3 -c 'import sys; print(f"{100*float(sys.argv[1])/float(sys.argv[2]):.1f}%")' "$1" "$2"; }

# The sink: Caddy answering 204 at once.
printf '{\n\tadmin off\n\tauto_https off\n}\n:%s {\n\trespond 204\n}\n' "$SINK_PORT" > "$dir/Sinkfile"
caddy run --adapter caddyfile --config "$dir/Sinkfile" >"$dir/sink.log" 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$SINK_PORT/in" && break; sleep 0.05; done
if ! curl -fs -o /dev/null "http://127.0.0.1:$SINK_PORT/in"; then
    echo "the sink did not start:" >&2
    cat "$dir/sink.log" >&2
    exit 1
fi

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "load average at start: $(load); busiest processes (% of one core, since they started):"
ps -eo pcpu,comm --sort=-pcpu | sed -n '2,6p' | sed 's/^/   /'
echo "wrk: $CONNECTIONS connections in all, $DURATION per figure; PostgreSQL $(psql -Atq "$PG" -c 'SHOW server_version') on this machine"
echo

echo "--- ceiling: GET /healthz (load $(load))"
config a "$BASE_PORT" "$(sqlite_store ceiling)" none
config b $((BASE_PORT + 1)) "$(sqlite_store ceiling)" none
start a
ceiling1=$(rate_on "" "$BASE_PORT")
start b
ceiling2=$(rate_on "" "$BASE_PORT" $((BASE_PORT + 1)))
stop_all
echo "  one instance:  $ceiling1/s"
echo "  two instances: $ceiling2/s"

accept() {
    local label=$1 storage=$2 instances=$3 ceiling=$4
    echo "--- accept: $label (load $(load))" >&2
    local ports=()
    for i in $(seq "$instances"); do
        config "acc$i" $((BASE_PORT + 10 + i)) "$storage" none
        start "acc$i"
        ports+=($((BASE_PORT + 10 + i)))
    done
    local r
    r=$(rate_on bench/accept.lua "${ports[@]}")
    stop_all
    echo "  $label: $r accepted/s, $(ratio "$r" "$ceiling") of the ceiling" >&2
    echo "$r"
}
sqlite_accept=$(accept "SQLite, one instance" "$(sqlite_store accept)" 1 "$ceiling1")
pg1_accept=$(accept "PostgreSQL, one instance" "$(pg_store accept1)" 1 "$ceiling1")
pg2_accept=$(accept "PostgreSQL, two instances" "$(pg_store accept2)" 2 "$ceiling2")

drain_report() {
    local label=$1 storage=$2 instances=$3 ceiling=$4
    echo "--- drain: $label (load $(load))" >&2
    backlog "$storage"
    read -r rate n secs < <(drain "$storage" "$instances")
    echo "  $label: $n deliveries in ${secs}s: $rate delivered/s, $(ratio "$rate" "$ceiling") of the ceiling" >&2
    echo "$rate"
}
sqlite_drain=$(drain_report "SQLite, one instance" "$(sqlite_store drain)" 1 "$ceiling1")
pg1_drain=$(drain_report "PostgreSQL, one instance" "$(pg_store drain1)" 1 "$ceiling1")
pg2_drain=$(drain_report "PostgreSQL, two instances" "$(pg_store drain2)" 2 "$ceiling2")

echo
echo "load average at the end: $(load)"
echo
echo "| store | instances | ceiling (GET /healthz) | accepted/s | ratio | delivered/s (drain) | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
echo "| SQLite | 1 | $ceiling1 | $sqlite_accept | $(ratio "$sqlite_accept" "$ceiling1") | $sqlite_drain | $(ratio "$sqlite_drain" "$ceiling1") |"
echo "| PostgreSQL | 1 | $ceiling1 | $pg1_accept | $(ratio "$pg1_accept" "$ceiling1") | $pg1_drain | $(ratio "$pg1_drain" "$ceiling1") |"
echo "| PostgreSQL | 2 | $ceiling2 | $pg2_accept | $(ratio "$pg2_accept" "$ceiling2") | $pg2_drain | $(ratio "$pg2_drain" "$ceiling2") |"
