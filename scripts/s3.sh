#!/usr/bin/env bash
# A local S3-compatible server for an object-storage lake: moto's server (PyPI `moto[server]`,
# pinned), installed in a virtualenv outside the repository. It keeps objects in memory, so a
# restart empties it: it is for tests and trials, not for keeping data.
#
#   scripts/s3.sh start  [DIR]   start the server, create the bucket, wait until it answers
#   scripts/s3.sh stop   [DIR]   stop it
#   scripts/s3.sh status [DIR]   print "running http://127.0.0.1:PORT" or "stopped" (exit 1)
#   scripts/s3.sh env    [DIR]   print the exports that point cloudlake (and the AWS tools) at it
#   scripts/s3.sh fetch          install the server only (cached)
#
# DIR (pid, log, ports.env) defaults to $CLOUDLAKE_S3_DIR or ~/.cache/cloudlake/s3. The port comes
# from S3_PORT (default 9000) on the first start and is kept in DIR/ports.env; the bucket from
# S3_BUCKET (default cloudlake). The virtualenv is $CLOUDLAKE_CACHE (default ~/.cache/cloudlake)/moto-VERSION.
#
#   eval "$(scripts/s3.sh env)" && cloudlake --lake s3://cloudlake/lake run
set -euo pipefail
# shellcheck source=scripts/server-common.sh
. "$(dirname "$0")/server-common.sh"

VERSION=5.2.5
CACHE="${CLOUDLAKE_CACHE:-$HOME/.cache/cloudlake}"
VENV="$CACHE/moto-$VERSION"
cmd="${1:-}"
DIR="${2:-${CLOUDLAKE_S3_DIR:-$CACHE/s3}}"

die() { echo "s3.sh: $*" >&2; exit 1; }

absolute_dir() { if [ -d "$DIR" ]; then DIR=$(CDPATH='' cd -- "$DIR" && pwd); fi; }
absolute_dir

fetch() {
  [ -f "$VENV/.complete" ] && return 0
  command -v python3 >/dev/null || die "python3 is needed for the S3 server; run scripts/setup.sh"
  echo "s3.sh: installing moto[server]==$VERSION from PyPI into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "could not create a virtualenv (install python3-venv; scripts/setup.sh does)"
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$VERSION" ||
    die "could not install moto[server] $VERSION (is PyPI reachable?)"
  touch "$VENV/.complete"
}

pid_alive() {
  [ -f "$DIR/s3.pid" ] || return 1
  local pid; pid=$(cat "$DIR/s3.pid")
  process_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "moto_server"
}

load_ports() {
  if [ -f "$DIR/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
  else
    S3_PORT="${S3_PORT:-9000}"
    S3_BUCKET="${S3_BUCKET:-cloudlake}"
  fi
}

print_env() {
  load_ports
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=cloudlake
export AWS_SECRET_ACCESS_KEY=cloudlake
export AWS_REGION=us-east-1
EOF
}

create_bucket() {
  "$VENV/bin/python" - "$S3_PORT" "$S3_BUCKET" <<'EOF' || die "could not create bucket $S3_BUCKET"
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT"), timeout=10)
EOF
}

start() {
  fetch
  mkdir -p "$DIR"
  absolute_dir
  load_ports
  local t0=$SECONDS
  if pid_alive; then
    wait_listening s3.sh "$(cat "$DIR/s3.pid")" "$S3_PORT" 30 "$t0" "$DIR" "$DIR/server.log" || exit 1
    echo "s3.sh: already running (pid $(cat "$DIR/s3.pid")) on http://127.0.0.1:$S3_PORT" >&2
    return 0
  fi
  port_open "$S3_PORT" && die "port $S3_PORT is taken by another process; set S3_PORT (first start) or stop it"
  printf 'S3_PORT=%s\nS3_BUCKET=%s\n' "$S3_PORT" "$S3_BUCKET" >"$DIR/ports.env"
  (exec setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >>"$DIR/server.log" 2>&1 </dev/null) &
  echo $! >"$DIR/s3.pid"
  wait_listening s3.sh "$(cat "$DIR/s3.pid")" "$S3_PORT" "${S3_START_TIMEOUT:-30}" "$t0" "$DIR" "$DIR/server.log" || exit 1
  create_bucket
  echo "s3.sh: running on http://127.0.0.1:$S3_PORT, bucket $S3_BUCKET (pid $(cat "$DIR/s3.pid"), ready in $((SECONDS - t0)) s)" >&2
}

stop() {
  if ! pid_alive; then
    rm -f "$DIR/s3.pid"
    echo "s3.sh: not running" >&2
    return 0
  fi
  local pid; pid=$(cat "$DIR/s3.pid")
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    process_alive "$pid" || break
    sleep 0.1
  done
  process_alive "$pid" && kill -KILL "$pid"
  rm -f "$DIR/s3.pid"
  echo "s3.sh: stopped" >&2
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status)
    load_ports
    if pid_alive; then echo "running http://127.0.0.1:$S3_PORT"; else echo "stopped"; exit 1; fi
    ;;
  env) print_env ;;
  fetch) fetch ;;
  *) die "usage: scripts/s3.sh start|stop|status|env|fetch [DIR]" ;;
esac
