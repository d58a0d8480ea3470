#!/usr/bin/env bash
# Starts a local redis-server and N chathub hubs sharing it, for trying the
# Redis engine on one machine:
#
#   scripts/cluster.sh [-n N] [-p BASE_PORT] [-r REDIS_PORT] [-P PREFIX] [-b BUILD_DIR] [-- extra chathub args]
#
# Hub i (1..N) listens on 127.0.0.1:BASE_PORT+i-1 (default 8081, 8082, ...) with
#   --redis redis://127.0.0.1:REDIS_PORT --node-id hub<i> --redis-prefix PREFIX
# Redis (default port 6390) runs in a temporary directory with the settings
# docs/operations.md recommends: appendonly yes, appendfsync always (nothing
# acked is lost if it restarts), no RDB snapshots, maxmemory-policy
# noeviction. Logs go to that directory. Ctrl-C (or any hub exiting) stops
# every process this script started, by PID: the hubs first (they drain),
# then Redis.
#
# Extra arguments after -- go to every hub, e.g. `-- --node-lease 5`.
# Examples:
#   scripts/cluster.sh                        3 hubs on 8081-8083, Redis on 6390
#   scripts/cluster.sh -n 2 -p 9001 -- --node-lease 5 --log-level debug
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=3
BASE=8081
REDIS_PORT=6390
PREFIX="chathub-try:"
BUILD="$ROOT/build"
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -p) BASE="$2"; shift 2 ;;
    -r) REDIS_PORT="$2"; shift 2 ;;
    -P) PREFIX="$2"; shift 2 ;;
    -b) BUILD="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$N" in ''|*[!0-9]*) echo "cluster.sh: -n wants a number" >&2; exit 2 ;; esac
[ "$N" -ge 1 ] || { echo "cluster.sh: -n must be at least 1" >&2; exit 2; }

BIN="$BUILD/chathub"
[ -x "$BIN" ] || { echo "cluster.sh: $BIN not built (ninja -C $BUILD)" >&2; exit 1; }
"$BIN" --help | grep -q -- '--node-id' ||
  { echo "cluster.sh: $BIN has no Redis engine (built without hiredis, or before --redis existed)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "cluster.sh: redis-server not installed (scripts/dev.sh installs it)" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "cluster.sh: redis-cli not installed (package redis-tools)" >&2; exit 1; }
if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "cluster.sh: something already answers on port $REDIS_PORT; pick another with -r" >&2
  exit 1
fi

TMP="$(mktemp -d /tmp/chathub-cluster-XXXXXX)"
REDIS_PID=""
HUB_PIDS=()
cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in "${HUB_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${HUB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ -n "$REDIS_PID" ]; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; echo "stopping"; exit 130' INT TERM

mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction \
  --daemonize no >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  kill -0 "$REDIS_PID" 2>/dev/null || break
  sleep 0.05
done
if ! redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "cluster.sh: redis-server did not start:" >&2
  cat "$TMP/redis.log" >&2
  exit 1
fi
echo "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, log $TMP/redis.log)"

for i in $(seq 1 "$N"); do
  port=$((BASE + i - 1))
  "$BIN" --host 127.0.0.1 --port "$port" --redis "redis://127.0.0.1:$REDIS_PORT" \
    --node-id "hub$i" --redis-prefix "$PREFIX" "$@" >"$TMP/hub$i.log" 2>&1 &
  pid=$!
  HUB_PIDS+=("$pid")
  url=""
  for _ in $(seq 1 100); do
    url="$(sed -n 's#.*listening on \(http://[^ ]*\).*#\1#p' "$TMP/hub$i.log" | head -1)"
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$url" ]; then
    echo "cluster.sh: hub$i did not start:" >&2
    cat "$TMP/hub$i.log" >&2
    exit 1
  fi
  echo "hub$i on $url (pid $pid, log $TMP/hub$i.log)"
done
echo "Open two of these URLs in two tabs and join the same room. Ctrl-C stops everything."
set +e
wait -n "${HUB_PIDS[@]}" "$REDIS_PID"
echo "a process exited; stopping the rest" >&2
exit 1
