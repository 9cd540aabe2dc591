#!/usr/bin/env bash
# Accepted notifications per second and the latency of the 202: 32 concurrent connections on
# loopback, a ~1.6 KB Qualifio v2 payload (bench/payload.json), SQLite with synchronous=FULL.
#
#   cargo build --release && bench/accept.sh            # accept only (no destination)
#   MODE=file bench/accept.sh                           # while a file destination delivers
#
# Needs wrk and curl (apt-get install -y wrk curl).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HOOKFAN_BIN:-target/release/hookfan}
DURATION=${DURATION:-30s}
CONNECTIONS=${CONNECTIONS:-32}
MODE=${MODE:-none}
PORT=${PORT:-18080}
dir=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT

cat > "$dir/hookfan.toml" <<TOML
[server]
listen = "127.0.0.1:$PORT"

[sources.qualifio]
token = "bench-token-0123456789"

[destinations.archive]
type = "file"
enabled = $([ "$MODE" = file ] && echo true || echo false)
path = "archive.jsonl"

[destinations.archive.fields]
id = "{{ participation.id }}"
email = "{{ participant.email }}"
TOML

RUST_LOG=warn "$BIN" serve --config "$dir/hookfan.toml" 2>"$dir/serve.log" &
pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

echo "mode=$MODE connections=$CONNECTIONS duration=$DURATION payload=$(wc -c < bench/payload.json) bytes"
HOOKFAN_BENCH_PAYLOAD=bench/payload.json wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s bench/accept.lua "http://127.0.0.1:$PORT"
if [ "$MODE" = file ]; then
    sleep 2
    echo "lines delivered to the file so far: $(wc -l < "$dir/archive.jsonl" 2>/dev/null || echo 0)"
fi
