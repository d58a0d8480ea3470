#!/usr/bin/env bash
# Starts a local redis-server and N chathub nodes sharing it, for trying the
# Redis engine on one machine:
#
#   scripts/cluster.sh [-n N] [-p BASE_PORT] [-r REDIS_PORT] [-b BUILD_DIR] [-- extra chathub args]
#
# Node i (1..N) listens on BASE_PORT+i-1 (default 8081, 8082, ...) with
#   --redis redis://127.0.0.1:REDIS_PORT --node-id hub<i> --data-dir <tmp>/hub<i>
# Redis (default port 6390) runs with appendonly yes, appendfsync always (so
# nothing acked is lost if it restarts) in its own directory under the same
# temporary root. Ctrl-C stops every process this script started, by PID.
#
# Flags the hub must understand (wired by server.c/main.c):
#   --redis URL      redis://[:password@]host:port[/db]; repeat it to shard rooms
#   --node-id ID     this node's id (1..64 of A-Z a-z 0-9 . _ -); random if absent
#   --data-dir DIR   as today (the memory engine's SQLite store; with --redis
#                    history lives in Redis and the directory is unused)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N=3
BASE=8081
REDIS_PORT=6390
BUILD="$ROOT/build"
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -p) BASE="$2"; shift 2 ;;
    -r) REDIS_PORT="$2"; shift 2 ;;
    -b) BUILD="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

BIN="$BUILD/chathub"
[ -x "$BIN" ] || { echo "cluster.sh: $BIN not built (ninja -C $BUILD)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "cluster.sh: redis-server not installed (scripts/dev.sh installs it)" >&2; exit 1; }

TMP="$(mktemp -d /tmp/chathub-cluster-XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" \
  --appendonly yes --appendfsync always --save "" --maxmemory-policy noeviction \
  --daemonize no >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done
echo "redis-server on 127.0.0.1:$REDIS_PORT (pid ${PIDS[0]}, log $TMP/redis.log)"

for i in $(seq 1 "$N"); do
  port=$((BASE + i - 1))
  mkdir -p "$TMP/hub$i"
  "$BIN" --port "$port" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "hub$i" \
    --data-dir "$TMP/hub$i" "$@" >"$TMP/hub$i.log" 2>&1 &
  PIDS+=($!)
  echo "hub$i on http://127.0.0.1:$port/ (pid $!, log $TMP/hub$i.log)"
done
echo "Ctrl-C stops them all."
wait -n "${PIDS[@]}" || true
echo "a process exited; stopping the rest" >&2
