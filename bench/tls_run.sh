#!/usr/bin/env bash
# bench/tls_run.sh: chathub with and without TLS under the same loads, side
# by side in one run (issue 12): handshakes per second and server CPU per
# handshake, and broadcast deliveries per second and server CPU per delivery.
#
#   bench/tls_run.sh                  3 runs of each figure, median shown
#   RUNS=1 DURATION=3 bench/tls_run.sh
#
# It builds chathub (release) into $BUILD_DIR and bench/tls_bench.c with cc,
# makes a throwaway certificate with `openssl req`, and for each figure and
# each transport starts a fresh `chathub --no-persist --rate 0
# --max-conns-per-ip 0` pinned to CPU $SERVER_CPU, runs tls_bench pinned to
# CPU $CLIENT_CPU against it, and stops the server by its PID (also on errors
# and Ctrl-C). Every figure is the median of $RUNS runs; the raw key=value
# output of each run stays in $OUT_DIR. Benchmarks report figures: nothing
# here passes or fails on a number. Loopback only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-/tmp/tls-bench-build}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/chathub-tls-bench.XXXXXX)}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-5}"
WARMUP="${WARMUP:-1}"
CONNS="${CONNS:-1000}"       # fan-out: connections in the room
SENDERS="${SENDERS:-10}"     # of which publish
WINDOW="${WINDOW:-16}"       # own messages each sender keeps on their way
SIZE="${SIZE:-64}"           # payload bytes
INFLIGHT="${INFLIGHT:-64}"   # handshake run: connections opening at a time
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"

say() { printf '==> %s\n' "$*" >&2; }

say "building chathub (release) in $BUILD_DIR"
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  meson setup "$BUILD_DIR" "$ROOT" -Dbuildtype=release -Dintegration=disabled >/dev/null
fi
ninja -C "$BUILD_DIR" chathub >/dev/null
CHATHUB="$BUILD_DIR/chathub"
"$CHATHUB" --help | grep -q -- --tls-cert || { echo "this chathub has no TLS" >&2; exit 1; }
cc -O2 -D_GNU_SOURCE -o "$OUT_DIR/tls_bench" "$ROOT/bench/tls_bench.c" -luv -lssl -lcrypto
BENCH="$OUT_DIR/tls_bench"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$OUT_DIR/key.pem" -out "$OUT_DIR/cert.pem" 2>/dev/null
chmod 600 "$OUT_DIR/key.pem"
ulimit -n 65536 2>/dev/null || true

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap stop_server EXIT INT TERM

# start_server TLS(0|1) LOG: starts chathub, sets SERVER_PID and PORT.
start_server() {
  local tls_args=()
  [ "$1" = 1 ] && tls_args=(--tls-cert "$OUT_DIR/cert.pem" --tls-key "$OUT_DIR/key.pem")
  taskset -c "$SERVER_CPU" "$CHATHUB" --host 127.0.0.1 --port 0 --no-persist --rate 0 \
    --max-conns-per-ip 0 --log-level warn "${tls_args[@]}" >"$2.out" 2>"$2.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    PORT="$(sed -n 's|.*listening on https\?://[^:]*:\([0-9]*\)/.*|\1|p' "$2.out")"
    [ -n "$PORT" ] && return 0
    sleep 0.05
  done
  echo "chathub did not start: $(cat "$2.err")" >&2
  exit 1
}

# run NAME TLS ARGS...: one run of tls_bench against a fresh server.
run() {
  local name=$1 tls=$2
  shift 2
  local log="$OUT_DIR/$name"
  start_server "$tls" "$log"
  local t=()
  [ "$tls" = 1 ] && t=(--tls)
  taskset -c "$CLIENT_CPU" "$BENCH" --port "$PORT" --server-pid "$SERVER_PID" \
    --duration "$DURATION" --warmup "$WARMUP" "${t[@]}" "$@" >"$log.txt"
  stop_server
}

# median NAME KEY: the median of KEY over the runs of NAME.
median() {
  for f in "$OUT_DIR/$1".*.txt; do sed -n "s/^$2=//p" "$f"; done | sort -g |
    awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}

for i in $(seq "$RUNS"); do
  for tls in 0 1; do
    say "run $i/$RUNS, tls=$tls: handshakes"
    run "hs$tls.$i" "$tls" --handshake --inflight "$INFLIGHT"
    say "run $i/$RUNS, tls=$tls: fan-out to $CONNS"
    run "fan$tls.$i" "$tls" --conns "$CONNS" --senders "$SENDERS" --window "$WINDOW" --size "$SIZE"
  done
done

hs0=$(median hs0 handshakes_per_s); hs1=$(median hs1 handshakes_per_s)
hc0=$(median hs0 server_cpu_us_per_handshake); hc1=$(median hs1 server_cpu_us_per_handshake)
fd0=$(median fan0 deliveries_per_s); fd1=$(median fan1 deliveries_per_s)
fc0=$(median fan0 server_cpu_ns_per_delivery); fc1=$(median fan1 server_cpu_ns_per_delivery)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

cat <<EOF

chathub without and with TLS (median of $RUNS runs of ${DURATION} s; server on CPU $SERVER_CPU,
tls_bench on CPU $CLIENT_CPU; fan-out: $CONNS connections, $SENDERS senders, window $WINDOW,
$SIZE-byte messages; handshakes: $INFLIGHT at a time, full TLS handshakes + WebSocket upgrade)

| figure | ws:// | wss:// | wss / ws |
|---|---|---|---|
| handshakes/s | $hs0 | $hs1 | $(ratio "$hs1" "$hs0") |
| server CPU µs per handshake | $hc0 | $hc1 | $(ratio "$hc1" "$hc0") |
| broadcast deliveries/s | $fd0 | $fd1 | $(ratio "$fd1" "$fd0") |
| server CPU ns per delivery | $fc0 | $fc1 | $(ratio "$fc1" "$fc0") |

raw output: $OUT_DIR
EOF
