#!/usr/bin/env bash
# Sets up the machine, then runs every check CI runs: format, lints (warnings are errors) and
# every test (unit and integration, one dev-profile build shared by all), including the tests
# against a real Cassandra node, a real Kafka broker and an S3-compatible server (moto), which this
# script starts (fresh folders, free ports) and stops.
#
# Builds go to $CARGO_TARGET_DIR, by default ~/.cache/cloudlake/target (outside the clone, so a
# second clone or a CI rerun reuses the compiled dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh --test
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cloudlake/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
CASSANDRA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cloudlake-test-cassandra.XXXXXX")
KAFKA_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cloudlake-test-kafka.XXXXXX")
S3_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cloudlake-test-s3.XXXXXX")
cassandra_start=""
kafka_start=""
s3_start=""
cleanup() {
  # A start still under way (fetching jars, booting) is stopped before the server is.
  for p in $cassandra_start $kafka_start $s3_start; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  ./scripts/cassandra.sh stop "$CASSANDRA_DIR" >/dev/null 2>&1 || true
  ./scripts/kafka.sh stop "$KAFKA_DIR" >/dev/null 2>&1 || true
  ./scripts/s3.sh stop "$S3_DIR" >/dev/null 2>&1 || true
  rm -rf "$CASSANDRA_DIR" "$KAFKA_DIR" "$S3_DIR"
}
trap cleanup EXIT
step "start Cassandra, Kafka and S3 for the serving, stream and object-storage tests (in the background, while the build runs)"
CASSANDRA_PORT=$(free_port) CASSANDRA_STORAGE_PORT=$(free_port) ./scripts/cassandra.sh start "$CASSANDRA_DIR" &
cassandra_start=$!
KAFKA_PORT=$(free_port) KAFKA_CONTROLLER_PORT=$(free_port) ./scripts/kafka.sh start "$KAFKA_DIR" &
kafka_start=$!
S3_PORT=$(free_port) ./scripts/s3.sh start "$S3_DIR" &
s3_start=$!

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# A start that failed (a port taken in between by another process, say) is retried once, with
# fresh ports and a fresh folder, before the run gives up: retry_start NAME SCRIPT DIR PORT_VARS...
retry_start() {
  local name=$1 script=$2 dir=$3 var
  shift 3
  echo "test-all: $name did not start; retrying once on other ports" >&2
  "$script" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir" && mkdir -p "$dir"
  local ports=()
  for var in "$@"; do ports+=("$var=$(free_port)"); done
  env "${ports[@]}" "$script" start "$dir" ||
    { echo "test-all: $name did not start; see the log tails above" >&2; exit 1; }
}
step "wait for Cassandra"
wait "$cassandra_start" ||
  retry_start Cassandra ./scripts/cassandra.sh "$CASSANDRA_DIR" CASSANDRA_PORT CASSANDRA_STORAGE_PORT
CLOUDLAKE_TEST_CASSANDRA="127.0.0.1:$(. "$CASSANDRA_DIR/ports.env"; echo "$CQL_PORT")"
export CLOUDLAKE_TEST_CASSANDRA
step "wait for Kafka"
wait "$kafka_start" || retry_start Kafka ./scripts/kafka.sh "$KAFKA_DIR" KAFKA_PORT KAFKA_CONTROLLER_PORT
CLOUDLAKE_TEST_KAFKA="127.0.0.1:$(. "$KAFKA_DIR/ports.env"; echo "$KAFKA_PORT")"
export CLOUDLAKE_TEST_KAFKA
step "wait for the S3-compatible server"
wait "$s3_start" || retry_start S3 ./scripts/s3.sh "$S3_DIR" S3_PORT
eval "$(./scripts/s3.sh env "$S3_DIR")"
export CLOUDLAKE_TEST_S3="s3://cloudlake"

step "cargo test"
cargo test --locked --all-targets
