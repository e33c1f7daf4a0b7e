# shellcheck shell=bash
# Shell functions shared by scripts/cassandra.sh and scripts/kafka.sh (sourced, not run).

# A process with a thread that has not exited. After SIGKILL the main thread of a JVM is a zombie
# at once while its other threads, which still hold the ports and the data folder, are torn down;
# and an exited server may stay an unreaped zombie for a while: neither may count as running, and
# the first must not count as stopped.
process_alive() {
  local stat line state
  for stat in /proc/"$1"/task/*/stat; do
    read -r line 2>/dev/null <"$stat" || continue
    state=${line##*) }
    case "${state%% *}" in Z | X | "") ;; *) return 0 ;; esac
  done
  return 1
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until a server this script just launched (PID) listens on PORT. Until then the PID is
# judged by process_alive alone: right after the fork it is still a copy of this shell that has
# not exec'd java yet (a few milliseconds, longer on a loaded machine), so its command line does
# not name the server. Prints the logs' tails and fails if it exits or TIMEOUT seconds pass.
wait_listening() {
  local name=$1 pid=$2 port=$3 timeout=$4 t0=$5 logs=$6
  shift 6
  until port_open "$port"; do
    if ! process_alive "$pid"; then
      tail -n 20 "$@" >&2 2>/dev/null || true
      echo "$name: exited during start-up; logs in $logs" >&2
      return 1
    fi
    if [ $((SECONDS - t0)) -ge "$timeout" ]; then
      echo "$name: did not open port $port within ${timeout}s; logs in $logs" >&2
      return 1
    fi
    sleep 0.1
  done
}
