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
# and Ctrl-C). The reference is bench/tls_lws_ref.c on Debian's libwebsockets
# (apt-get install libwebsockets-dev; without it those columns are left out),
# under the same loads. Every figure is the median of $RUNS runs; the raw key=value
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
LWS=""
if pkg-config --exists libwebsockets 2>/dev/null &&
   cc -O2 -o "$OUT_DIR/tls_lws_ref" "$ROOT/bench/tls_lws_ref.c" \
     $(pkg-config --cflags --libs libwebsockets) 2>"$OUT_DIR/lws-build.log"; then
  LWS="$OUT_DIR/tls_lws_ref"
else
  say "libwebsockets-dev is missing or did not build: no reference columns"
fi

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

# start_server KIND(hub|lws) TLS(0|1) LOG: starts the server, sets
# SERVER_PID and PORT.
start_server() {
  local tls_args=()
  [ "$2" = 1 ] && tls_args=(--tls-cert "$OUT_DIR/cert.pem" --tls-key "$OUT_DIR/key.pem")
  if [ "$1" = hub ]; then
    taskset -c "$SERVER_CPU" "$CHATHUB" --host 127.0.0.1 --port 0 --no-persist --rate 0 \
      --max-conns-per-ip 0 --log-level warn "${tls_args[@]}" >"$3.out" 2>"$3.err" &
  else
    taskset -c "$SERVER_CPU" "$LWS" --port 0 "${tls_args[@]}" >"$3.out" 2>"$3.err" &
  fi
  SERVER_PID=$!
  shift
  for _ in $(seq 100); do
    PORT="$(sed -n 's|.*listening on https\?://[^:]*:\([0-9]*\)/.*|\1|p' "$2.out")"
    [ -n "$PORT" ] && return 0
    sleep 0.05
  done
  echo "chathub did not start: $(cat "$2.err")" >&2
  exit 1
}

# run KIND NAME TLS ARGS...: one run of tls_bench against a fresh server.
run() {
  local kind=$1 name=$2 tls=$3
  shift 3
  local log="$OUT_DIR/$name"
  start_server "$kind" "$tls" "$log"
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

KINDS="hub"
[ -n "$LWS" ] && KINDS="hub lws"
for i in $(seq "$RUNS"); do
  for kind in $KINDS; do
    for tls in 0 1; do
      say "run $i/$RUNS, $kind tls=$tls: handshakes"
      run "$kind" "hs-$kind$tls.$i" "$tls" --handshake --inflight "$INFLIGHT"
      say "run $i/$RUNS, $kind tls=$tls: fan-out to $CONNS"
      run "$kind" "fan-$kind$tls.$i" "$tls" --conns "$CONNS" --senders "$SENDERS" \
        --window "$WINDOW" --size "$SIZE"
    done
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# row LABEL RUN KEY: chathub ws, wss, wss/ws, then lws ws, wss, chathub wss / lws wss.
row() {
  local h0 h1 l0="-" l1="-"
  h0=$(median "$2-hub0" "$3"); h1=$(median "$2-hub1" "$3")
  if [ -n "$LWS" ]; then l0=$(median "$2-lws0" "$3"); l1=$(median "$2-lws1" "$3"); fi
  echo "| $1 | $h0 | $h1 | $(ratio "$h1" "$h0") | $l0 | $l1 | $(ratio "$h1" "$l1") |"
}

cat <<EOF

chathub without and with TLS (median of $RUNS runs of ${DURATION} s; server on CPU $SERVER_CPU,
tls_bench on CPU $CLIENT_CPU; fan-out: $CONNS connections, $SENDERS senders, window $WINDOW,
$SIZE-byte messages; handshakes: $INFLIGHT at a time, full TLS handshakes + WebSocket upgrade)

| figure | chathub ws:// | chathub wss:// | wss / ws | lws ws:// | lws wss:// | chathub / lws (wss) |
|---|---|---|---|---|---|---|
$(row "handshakes/s" hs handshakes_per_s)
$(row "server CPU µs per handshake" hs server_cpu_us_per_handshake)
$(row "broadcast deliveries/s" fan deliveries_per_s)
$(row "server CPU ns per delivery" fan server_cpu_ns_per_delivery)

raw output: $OUT_DIR
EOF
