#!/usr/bin/env bash
# Throwaway Redis servers on loopback for tests (Swift KVDRemoteTests, later pytest e2e): a single
# node, or a 3-master cluster without replicas. Everything a server writes (pid file, log, cluster
# config) goes into the directory given, so stopping the servers and removing it cleans up fully.
# Persistence is off (no RDB, no AOF): the data is disposable.
#
#   redis.sh start-node    DIR PORT [redis-server options...]   one node, waits until it answers PING
#   redis.sh start-cluster DIR PORT1 PORT2 PORT3                3 masters, waits for cluster_state:ok
#   redis.sh start-cluster-node DIR PORT                        one cluster node again (after a stop)
#   redis.sh stop-node     DIR PORT                             SIGTERM one node, waits for it to exit
#   redis.sh kill-node     DIR PORT                             SIGKILL one node (a crash)
#   redis.sh stop          DIR                                  stops every node started in DIR
#
# Cluster nodes also use PORT+10000 (the cluster bus), so pick PORT below 55536 with both free.
# Servers bind 127.0.0.1 only: never another address.
set -euo pipefail

host=127.0.0.1

die() { echo "redis.sh: $*" >&2; exit 1; }

need_tools() {
  for t in redis-server redis-cli; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found; run scripts/install-deps.sh (it installs redis-server and redis-tools)"
  done
}

check_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] || die "bad port '$1'"
}

cli() { redis-cli -h "$host" -p "$1" "${@:2}"; }

# Polls `what` (a command whose output must contain `want`) for up to `tries` × 0.05 s.
wait_for() {
  local tries=$1 want=$2; shift 2
  for _ in $(seq "$tries"); do
    if "$@" 2>/dev/null | grep -q "$want"; then return 0; fi
    sleep 0.05
  done
  return 1
}

pidfile() { echo "$1/redis-$2.pid"; }

start_node() {
  local dir=$1 port=$2; shift 2
  check_port "$port"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # --daemonize writes the pid file once the server is set up; --dir keeps every file in $dir.
  redis-server --bind "$host" --port "$port" --save "" --appendonly no --daemonize yes \
    --pidfile "$(pidfile "$dir" "$port")" --dir "$dir" --logfile "$dir/redis-$port.log" "$@" \
    || die "redis-server on $host:$port did not start; see $dir/redis-$port.log"
  wait_for 100 PONG cli "$port" ping \
    || die "redis-server on $host:$port does not answer PING after 5 s (port taken?); see $dir/redis-$port.log"
}

# One cluster node; started again on the same port and directory, it reads its nodes-PORT.conf and
# rejoins its cluster with the slots it had.
start_cluster_node() {
  # cluster-require-full-coverage no: when one master is down, the others keep serving their
  # slots (the default stops the whole cluster, which is not what a cache tier wants).
  # cluster-node-timeout 5000: failure detection in seconds, not the default 15.
  start_node "$1" "$2" --cluster-enabled yes --cluster-config-file "nodes-$2.conf" \
    --cluster-node-timeout 5000 --cluster-require-full-coverage no
}

start_cluster() {
  local dir=$1; shift
  [ $# -eq 3 ] || die "start-cluster needs 3 ports"
  local p
  for p in "$@"; do
    check_port "$p"
    [ "$p" -le 55535 ] || die "port $p: its cluster bus port $((p + 10000)) would be out of range"
    start_cluster_node "$dir" "$p"
  done
  redis-cli --cluster create "$host:$1" "$host:$2" "$host:$3" --cluster-replicas 0 --cluster-yes \
    >"$dir/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed; see $dir/cluster-create.log"
  for p in "$@"; do
    wait_for 200 cluster_state:ok cli "$p" cluster info \
      || die "node $host:$p: cluster_state is not ok after 10 s; see $dir/redis-$p.log"
  done
}

# Whether process `pid` still runs. A zombie counts as gone: its sockets are closed, and a
# container's init may take seconds to reap a daemonized server (its parent).
alive() {
  if [ -r "/proc/$1/stat" ]; then
    local st
    st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "${st:0:1}" != Z ]
  else
    kill -0 "$1" 2>/dev/null
  fi
}

# Sends `signal` to the node on `port` and waits (up to 5 s) until the process is gone. A node that
# outlives SIGTERM gets SIGKILL: it may have been started with SIGTERM blocked (a child inherits its
# parent's signal mask), and a test's cleanup must not leave it running.
signal_node() {
  local dir=$1 port=$2 signal=$3 pf pid
  pf=$(pidfile "$dir" "$port")
  [ -f "$pf" ] || return 0
  pid=$(cat "$pf")
  kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    alive "$pid" || { rm -f "$pf"; return 0; }
    sleep 0.05
  done
  if [ "$signal" != KILL ]; then
    echo "redis.sh: redis-server $pid ($host:$port) still running 5 s after SIG$signal; sending SIGKILL" >&2
    signal_node "$dir" "$port" KILL
    return
  fi
  die "redis-server $pid ($host:$port) still running after SIGKILL"
}

cmd=${1:-}
[ $# -ge 2 ] || die "usage: redis.sh start-node|start-cluster|start-cluster-node|stop-node|kill-node|stop DIR [PORT...]"
shift
case "$cmd" in
  start-node) need_tools; [ $# -ge 2 ] || die "start-node DIR PORT"; start_node "$@" ;;
  start-cluster) need_tools; start_cluster "$@" ;;
  start-cluster-node) need_tools; [ $# -eq 2 ] || die "start-cluster-node DIR PORT"; start_cluster_node "$@" ;;
  stop-node) [ $# -eq 2 ] || die "stop-node DIR PORT"; signal_node "$1" "$2" TERM ;;
  kill-node) [ $# -eq 2 ] || die "kill-node DIR PORT"; signal_node "$1" "$2" KILL ;;
  stop)
    [ $# -eq 1 ] || die "stop DIR"
    for pf in "$1"/redis-*.pid; do
      [ -f "$pf" ] || continue
      port=${pf##*/redis-}; port=${port%.pid}
      signal_node "$1" "$port" TERM
    done
    ;;
  *) die "unknown command '$cmd'" ;;
esac
