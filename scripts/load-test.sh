#!/usr/bin/env bash
# Load test of `cloudlake serve` on loopback with wrk: the query endpoints over the bundled data.
#
#   scripts/load-test.sh [SECONDS] [CONNECTIONS]      (defaults: 20 s, 32 connections)
#
# Uses the release binary ($CLOUDLAKE_BIN, else $CARGO_TARGET_DIR/release/cloudlake, built if
# absent), builds a lake from datalake/landing in a scratch folder, makes an API key, starts the
# server, warms every answer once, then runs wrk (1 thread; the server gets the other core) over
# 6 queries x 20 orgs in rotation. Set CLOUDLAKE_CASSANDRA=host:port to serve from Cassandra.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${1:-20}"
CONNECTIONS="${2:-32}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cloudlake/target}"
BIN="${CLOUDLAKE_BIN:-$CARGO_TARGET_DIR/release/cloudlake}"
command -v wrk >/dev/null || { echo "load-test: wrk is missing; run scripts/setup.sh --test" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
  echo "load-test: building the release binary (long the first time)" >&2
  cargo build --release --bin cloudlake
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cloudlake-load.XXXXXX")
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

CLOUDLAKE_LOG=warn "$BIN" run --quiet --landing datalake/landing --lake "$WORK/lake" >/dev/null
"$BIN" api-key --name load-test >"$WORK/key.txt"
KEY=$(sed -n 2p "$WORK/key.txt" | tr -d ' ')
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
{
  echo "[api]"
  echo "listen = \"127.0.0.1:$PORT\""
  sed -n '/\[\[api.keys\]\]/,$p' "$WORK/key.txt"
} >"$WORK/cloudlake.toml"

CLOUDLAKE_LOG=warn "$BIN" serve --lake "$WORK/lake" --config "$WORK/cloudlake.toml" 2>"$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }

ORGS=$(curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/orgs?limit=20" |
  python3 -c 'import json, sys; print(" ".join(r["org_id"] for r in json.load(sys.stdin)["rows"]))')
PATHS=()
for org in $ORGS; do
  for q in daily-usage top-services critical-tickets revenue genai-tokens anomalies; do
    PATHS+=("/api/v1/queries/$q?org=$org")
  done
done
# Warm-up: every answer computed once (the cold cost is printed for reference).
start=$(date +%s.%N)
for p in "${PATHS[@]}"; do curl -fs -o /dev/null -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT$p"; done
end=$(date +%s.%N)
echo "warm-up: ${#PATHS[@]} distinct answers computed in $(python3 -c "print(round(($end - $start) * 1000))") ms"

{
  echo "local paths = {"
  for p in "${PATHS[@]}"; do echo "  \"$p\","; done
  echo "}"
  echo "local i = 0"
  echo "request = function()"
  echo "  i = i + 1"
  echo "  return wrk.format(\"GET\", paths[(i % #paths) + 1], { [\"Authorization\"] = \"Bearer $KEY\" })"
  echo "end"
} >"$WORK/rotate.lua"

echo "wrk: ${DURATION}s, $CONNECTIONS connections, 1 thread, ${#PATHS[@]} query URLs in rotation"
wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/rotate.lua" "http://127.0.0.1:$PORT"
