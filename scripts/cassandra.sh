#!/usr/bin/env bash
# A real Apache Cassandra 5.0 node for cloudlake's serving layer, run from the jars on Maven
# Central with Java 17 (no Docker, no package). Data and logs live outside the repository.
#
#   scripts/cassandra.sh start  [DIR]   start a node (first start formats DIR), wait until CQL answers
#   scripts/cassandra.sh stop   [DIR]   stop it (SIGTERM, then wait; SIGKILL after 60 s)
#   scripts/cassandra.sh kill   [DIR]   stop it with SIGKILL (crash tests)
#   scripts/cassandra.sh status [DIR]   print "running 127.0.0.1:PORT" or "stopped" (exit 1)
#   scripts/cassandra.sh fetch          download the jars only (cached)
#
# DIR defaults to $CLOUDLAKE_CASSANDRA_DIR or ~/.cache/cloudlake/cassandra. Ports come from
# CASSANDRA_PORT (CQL, default 9042) and CASSANDRA_STORAGE_PORT (default 7000) on the first start
# and are kept in DIR/ports.env for restarts. CASSANDRA_HEAP sets -Xmx (default 1G); -Xms stays
# 256M because Cassandra mlockall()s the committed heap when run as root.
# Jars are cached in $CLOUDLAKE_CACHE (default ~/.cache/cloudlake)/jars/cassandra-VERSION.
set -euo pipefail
# shellcheck source=scripts/server-common.sh
. "$(dirname "$0")/server-common.sh"

VERSION=5.0.9
CACHE="${CLOUDLAKE_CACHE:-$HOME/.cache/cloudlake}"
LIB="$CACHE/jars/cassandra-$VERSION"
cmd="${1:-}"
DIR="${2:-${CLOUDLAKE_CASSANDRA_DIR:-$CACHE/cassandra}}"

die() { echo "cassandra.sh: $*" >&2; exit 1; }

fetch() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Cassandra jars; run scripts/setup.sh"
  echo "cassandra.sh: fetching org.apache.cassandra:cassandra-all:$VERSION from Maven Central" >&2
  local tmp; tmp=$(mktemp -d)
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cloudlake</groupId><artifactId>cassandra-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>$VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIB.tmp"
  (cd "$tmp" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB.tmp") \
    || die "could not download the Cassandra jars (is Maven Central reachable?)"
  rm -rf "$tmp" "$LIB"
  mv "$LIB.tmp" "$LIB"
  touch "$LIB/.complete"
}

# The recorded pid is trusted only if it is still this folder's Cassandra (pids are reused).
pid_alive() {
  [ -f "$DIR/cassandra.pid" ] || return 1
  local pid; pid=$(cat "$DIR/cassandra.pid")
  process_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "CassandraDaemon" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/conf/"
}

# Cassandra 5.0 runs on Java 11 or 17 (not 21): the PATH's java, else an installed JDK 17.
find_java() {
  local candidate major
  for candidate in "${CASSANDRA_JAVA:-}" "$(command -v java || true)" /usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/java-11-openjdk-*/bin/java; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    major=$("$candidate" -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1)
    if [ "$major" = 17 ] || [ "$major" = 11 ]; then JAVA="$candidate"; return 0; fi
  done
  die "Cassandra 5.0 needs Java 17 (or 11); install openjdk-17-jre-headless or set CASSANDRA_JAVA"
}

load_ports() {
  if [ -f "$DIR/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
  else
    CQL_PORT="${CASSANDRA_PORT:-9042}"
    STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
  fi
}

write_conf() {
  mkdir -p "$DIR/conf" "$DIR/data" "$DIR/logs" "$DIR/triggers"
  printf 'CQL_PORT=%s\nSTORAGE_PORT=%s\n' "$CQL_PORT" "$STORAGE_PORT" >"$DIR/ports.env"
  cat >"$DIR/conf/cassandra.yaml" <<EOF
cluster_name: cloudlake
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [$DIR/data/data]
commitlog_directory: $DIR/data/commitlog
saved_caches_directory: $DIR/data/saved_caches
hints_directory: $DIR/data/hints
cdc_raw_directory: $DIR/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $CQL_PORT
start_native_transport: true
endpoint_snitch: SimpleSnitch
# cloudlake publishes one partition per unlogged batch: allow a month of one org's rows.
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 640KiB
EOF
  cat >"$DIR/conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$DIR/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
  # The JPMS block of Cassandra's conf/jvm17-server.options: without it Java 17 refuses access.
  {
    echo "-Djdk.attach.allowAttachSelf=true"
    echo "-Dio.netty.tryReflectionSetAccessible=true"
    for p in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
      java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql java.base/java.lang.ref \
      jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach; do
      echo "--add-exports=$p=ALL-UNNAMED"
    done
    for p in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
      java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
      java.base/jdk.internal.util.jar java.base/sun.nio.ch java.base/java.io java.base/java.lang.reflect \
      java.base/java.lang java.base/java.util jdk.management/com.sun.management.internal \
      jdk.compiler/com.sun.tools.javac; do
      echo "--add-opens=$p=ALL-UNNAMED"
    done
  } >"$DIR/conf/jvm17.args"
}

start() {
  fetch
  load_ports
  if pid_alive; then
    echo "cassandra.sh: already running (pid $(cat "$DIR/cassandra.pid")) on 127.0.0.1:$CQL_PORT" >&2
    return 0
  fi
  if port_open "$CQL_PORT"; then
    die "port $CQL_PORT is taken by another process; set CASSANDRA_PORT (and CASSANDRA_STORAGE_PORT) or stop it"
  fi
  write_conf
  local t0=$SECONDS
  find_java
  setsid "$JAVA" -Xms256M -Xmx"${CASSANDRA_HEAP:-1G}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    @"$DIR/conf/jvm17.args" \
    -Dcassandra.config="file://$DIR/conf/cassandra.yaml" \
    -Dlogback.configurationFile="$DIR/conf/logback.xml" \
    -Dcassandra.triggers_dir="$DIR/triggers" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon \
    >"$DIR/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$DIR/cassandra.pid"
  wait_listening cassandra.sh "$(cat "$DIR/cassandra.pid")" "$CQL_PORT" "${CASSANDRA_START_TIMEOUT:-120}" "$t0" \
    "$DIR/logs" "$DIR/logs/stdout.log" "$DIR/logs/system.log" || exit 1
  echo "cassandra.sh: running on 127.0.0.1:$CQL_PORT (pid $(cat "$DIR/cassandra.pid"), ready in $((SECONDS - t0)) s, data in $DIR)" >&2
}

stop() {
  local sig="${1:-TERM}"
  if ! pid_alive; then
    rm -f "$DIR/cassandra.pid"
    echo "cassandra.sh: not running" >&2
    return 0
  fi
  local pid; pid=$(cat "$DIR/cassandra.pid")
  kill "-$sig" "$pid"
  for _ in $(seq 1 600); do
    process_alive "$pid" || { rm -f "$DIR/cassandra.pid"; echo "cassandra.sh: stopped" >&2; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/cassandra.pid"
  echo "cassandra.sh: killed after 60 s" >&2
}

case "$cmd" in
  fetch) fetch ;;
  start) start ;;
  stop) stop TERM ;;
  kill) stop KILL ;;
  status)
    load_ports
    if pid_alive && port_open "$CQL_PORT"; then echo "running 127.0.0.1:$CQL_PORT"; else echo "stopped"; exit 1; fi
    ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
