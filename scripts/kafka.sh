#!/usr/bin/env bash
# A real Apache Kafka 4.3 broker (KRaft combined mode: broker and controller in one process) for
# cloudlake's stream, run from the jars on Maven Central with Java 17 (no Docker, no package).
# Data and logs live outside the repository.
#
#   scripts/kafka.sh start  [DIR]   start a broker (first start formats DIR), wait until it listens
#   scripts/kafka.sh stop   [DIR]   stop it (SIGTERM, then wait; SIGKILL after 60 s)
#   scripts/kafka.sh kill   [DIR]   stop it with SIGKILL (crash tests; `start` recovers the data)
#   scripts/kafka.sh status [DIR]   print "running 127.0.0.1:PORT" or "stopped" (exit 1)
#   scripts/kafka.sh fetch          download the jars only (cached)
#
# DIR defaults to $CLOUDLAKE_KAFKA_DIR or ~/.cache/cloudlake/kafka. Ports come from KAFKA_PORT
# (clients, default 9092) and KAFKA_CONTROLLER_PORT (KRaft, default 9093) on the first start and
# are kept in DIR/ports.env (`. DIR/ports.env` sets both) for restarts, which keep topics and
# offsets. KAFKA_HEAP sets -Xmx (default 1G); KAFKA_START_TIMEOUT the wait (default 90 s).
# Jars are cached in $CLOUDLAKE_CACHE (default ~/.cache/cloudlake)/jars/kafka-VERSION.
set -euo pipefail
# shellcheck source=scripts/server-common.sh
. "$(dirname "$0")/server-common.sh"

VERSION=4.3.1
LOG4J_VERSION=2.25.4
CACHE="${CLOUDLAKE_CACHE:-$HOME/.cache/cloudlake}"
LIB="$CACHE/jars/kafka-$VERSION"
cmd="${1:-}"
DIR="${2:-${CLOUDLAKE_KAFKA_DIR:-$CACHE/kafka}}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

# One spelling per folder (absolute, no trailing slash): the config paths in the broker's command
# line are how pid_alive recognises it, and they must not depend on the caller's directory.
absolute_dir() { if [ -d "$DIR" ]; then DIR=$(CDPATH='' cd -- "$DIR" && pwd); fi; }
absolute_dir

fetch() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch the Kafka jars; run scripts/setup.sh"
  echo "kafka.sh: fetching org.apache.kafka:kafka_2.13:$VERSION from Maven Central" >&2
  local tmp; tmp=$(mktemp -d)
  # Kafka 4.3 brings slf4j-api 1.7 and log4j-core but no binding between them: add it.
  cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>cloudlake</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIB.tmp"
  (cd "$tmp" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB.tmp") \
    || die "could not download the Kafka jars (is Maven Central reachable?)"
  rm -rf "$tmp" "$LIB"
  mv "$LIB.tmp" "$LIB"
  touch "$LIB/.complete"
}

# The recorded pid is trusted only if it is still this folder's broker (pids are reused).
pid_alive() {
  [ -f "$DIR/kafka.pid" ] || return 1
  local pid; pid=$(cat "$DIR/kafka.pid")
  process_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka\.Kafka" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR/conf/"
}

# The Kafka 4.x broker needs Java 17 or newer (its classes are Java 17 bytecode; 11 cannot load
# them): KAFKA_JAVA, else the PATH's java, else an installed JDK 17 or 21.
find_java() {
  local candidate major
  for candidate in "${KAFKA_JAVA:-}" "$(command -v java || true)" \
    /usr/lib/jvm/java-17-openjdk-*/bin/java /usr/lib/jvm/java-21-openjdk-*/bin/java; do
    [ -x "$candidate" ] || continue  # also skips an empty KAFKA_JAVA and unmatched globs
    major=$("$candidate" -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1)
    if [ -n "$major" ] && [ "$major" -ge 17 ]; then JAVA="$candidate"; return 0; fi
  done
  die "Kafka $VERSION needs Java 17 (or 21); install openjdk-17-jre-headless or set KAFKA_JAVA"
}

load_ports() {
  if [ -f "$DIR/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$DIR/ports.env"
  else
    KAFKA_PORT="${KAFKA_PORT:-9092}"
    KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
  fi
}

write_conf() {
  mkdir -p "$DIR/conf" "$DIR/data" "$DIR/logs"
  printf 'KAFKA_PORT=%s\nKAFKA_CONTROLLER_PORT=%s\n' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" >"$DIR/ports.env"
  # Replication factors of 1 everywhere: with the defaults (3) a single broker cannot create
  # __consumer_offsets, and group consumers receive nothing.
  cat >"$DIR/conf/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  # Everything to logs/server.log; warnings also on stderr (which goes to logs/stdout.log). No
  # log4j shutdown hook: it would stop the log before the broker's own shutdown is logged.
  cat >"$DIR/conf/log4j2.properties" <<EOF
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.console.type = Console
appender.console.name = CONSOLE
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
rootLogger.appenderRef.console.ref = CONSOLE
EOF
}

# The first start formats the log folder with a new cluster id (kept in DIR/cluster.id).
format() {
  [ -f "$DIR/data/meta.properties" ] && return 0
  local id=""
  [ -f "$DIR/cluster.id" ] && id=$(cat "$DIR/cluster.id")
  if [ -z "$id" ]; then
    # What `StorageTool random-uuid` prints (16 random bytes, URL-safe base64 without padding,
    # not starting with "-"), without a second JVM start.
    until [[ "$id" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; do
      id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    done
    echo "$id" >"$DIR/cluster.id"
  fi
  (cd "$DIR" && "$JAVA" "-Dlog4j2.configurationFile=$DIR/conf/log4j2.properties" -cp "$LIB/*" \
    kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$DIR/conf/server.properties") \
    >>"$DIR/logs/format.log" 2>&1 || { tail -n 20 "$DIR/logs/format.log" >&2; die "could not format $DIR/data"; }
}

# Waits until the client port accepts connections (or the broker dies, or the time is up).
wait_ready() {
  wait_listening kafka.sh "$(cat "$DIR/kafka.pid")" "$KAFKA_PORT" "${KAFKA_START_TIMEOUT:-90}" "$1" "$DIR/logs" \
    "$DIR/logs/stdout.log" "$DIR/logs/server.log" || exit 1
}

start() {
  fetch
  mkdir -p "$DIR"
  absolute_dir
  load_ports
  local t0=$SECONDS
  if pid_alive; then
    # Already started (possibly by a start still under way): just wait until it listens.
    wait_ready "$t0"
    echo "kafka.sh: already running (pid $(cat "$DIR/kafka.pid")) on 127.0.0.1:$KAFKA_PORT" >&2
    return 0
  fi
  [ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT are both $KAFKA_PORT"
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_open "$port"; then
      die "port $port is taken by another process; set KAFKA_PORT and KAFKA_CONTROLLER_PORT (first start) or stop it"
    fi
  done
  write_conf
  find_java
  format
  (cd "$DIR" && exec setsid "$JAVA" -Xms256M -Xmx"${KAFKA_HEAP:-1G}" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    "-Dlog4j2.configurationFile=$DIR/conf/log4j2.properties" "-Dkafka.logs.dir=$DIR/logs" \
    -cp "$LIB/*" kafka.Kafka "$DIR/conf/server.properties" \
    >>"$DIR/logs/stdout.log" 2>&1 </dev/null) &
  echo $! >"$DIR/kafka.pid"
  wait_ready "$t0"
  echo "kafka.sh: running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$DIR/kafka.pid"), ready in $((SECONDS - t0)) s, data in $DIR)" >&2
}

stop() {
  local sig="${1:-TERM}"
  if ! pid_alive; then
    rm -f "$DIR/kafka.pid"
    echo "kafka.sh: not running" >&2
    return 0
  fi
  local pid; pid=$(cat "$DIR/kafka.pid")
  kill "-$sig" "$pid"
  for _ in $(seq 1 600); do
    process_alive "$pid" || { rm -f "$DIR/kafka.pid"; echo "kafka.sh: stopped" >&2; return 0; }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/kafka.pid"
  echo "kafka.sh: killed after 60 s" >&2
}

case "$cmd" in
  fetch) fetch ;;
  start) start ;;
  stop) stop TERM ;;
  kill) stop KILL ;;
  status)
    load_ports
    if pid_alive && port_open "$KAFKA_PORT"; then echo "running 127.0.0.1:$KAFKA_PORT"; else echo "stopped"; exit 1; fi
    ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
