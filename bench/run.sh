#!/usr/bin/env bash
# bench/run.sh: measures chathub (raw mode and JSON mode) and the Node.js
# `ws` tutorial server under the same loads and prints one markdown table.
#
#   bench/run.sh                 the full benchmark (about 6-10 minutes)
#   QUICK=1 bench/run.sh         a smoke run: tiny loads, one run each
#   RUNS=5 DURATION=20 bench/run.sh
#   LOADS=idle SERVERS="raw json" bench/run.sh   only some loads and servers
#
# What it does, in order: builds chathub (release) and bench/loadgen into
# $BUILD_DIR, installs the reference server's npm dependencies if they are
# missing, then for each server and each load starts a fresh server pinned
# to CPU 0, runs loadgen pinned to CPU 1 against it, stops the server, and
# keeps loadgen's key=value output in $OUT_DIR. Every figure in the table is
# the median of $RUNS runs. See bench/README.md for what each figure means.
#
# Invariants: every server it starts is stopped by its PID (SIGTERM, then
# SIGKILL), also when the script fails or is interrupted; it never signals a
# process it did not start. All traffic stays on 127.0.0.1. Benchmarks are
# report figures: a slow result never fails the script, only a run that
# could not be measured does.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- configuration (environment) ---------------------------------------
SRC_DIR="${SRC_DIR:-$ROOT}"              # the chathub tree to build and measure
BUILD_DIR="${BUILD_DIR:-/tmp/bench-build}"
OUT_DIR="${OUT_DIR:-}"                   # default: a new /tmp/chathub-bench.XXXXXX
SERVERS="${SERVERS:-raw json ws}"        # which columns to measure
LOADS="${LOADS:-fanout rate idle}"       # which loads (rows) to run
QUICK="${QUICK:-0}"
if [ "$QUICK" = 1 ]; then
  RUNS="${RUNS:-1}"
  DURATION="${DURATION:-1}"
  WARMUP="${WARMUP:-0.2}"
  DRAIN="${DRAIN:-1}"
  FANOUT_CONNS="${FANOUT_CONNS:-100}"
  IDLE_CONNS="${IDLE_CONNS:-500}"
  HOLD="${HOLD:-0.3}"
else
  RUNS="${RUNS:-3}"
  DURATION="${DURATION:-10}"
  WARMUP="${WARMUP:-2}"
  DRAIN="${DRAIN:-15}" # at most: loadgen stops waiting once everything arrived
  FANOUT_CONNS="${FANOUT_CONNS:-1000}"
  IDLE_CONNS="${IDLE_CONNS:-10000}"
  HOLD="${HOLD:-2}"
fi
SENDERS="${SENDERS:-10}"    # publishers among the fan-out connections
SIZE="${SIZE:-64}"          # payload bytes
WINDOW="${WINDOW:-16}"      # saturation: messages per sender still on their way
MAX_PENDING="${MAX_PENDING:-256}" # handshakes loadgen keeps in flight (idle/handshake runs)
RATE="${RATE:-2}"           # sustained run: messages per second per sender
PERSIST="${PERSIST:-1}"     # 1: chathub's default SQLite history (fresh per run); 0: --no-persist
NICE="${NICE:--15}"        # niceness of server and loadgen (as root), against other work
SERVER_CPU="${SERVER_CPU:-0}"
LOADGEN_CPU="${LOADGEN_CPU:-1}"
BUSY_WARN="${BUSY_WARN:-15}" # warn when other work uses more than this % of the machine
QUIET_WAIT="${QUIET_WAIT:-$([ "$QUICK" = 1 ] && echo 0 || echo 15)}" # seconds to wait for it to calm down

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 1; }

# ---- the server under test, and cleanup ----------------------------------
SERVER_PID=""
SERVER_PORT=""

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  local pid="$SERVER_PID" i
  SERVER_PID=""
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "server $pid did not stop on SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

on_exit() {
  local rc=$?
  stop_server
  exit "$rc"
}
trap on_exit EXIT
trap 'say interrupted; exit 130' INT TERM

# start_server KIND LOG: starts a fresh server pinned to $SERVER_CPU and waits
# for its "listening on http://HOST:PORT/" line.
start_server() {
  local kind="$1" log="$2" history=()
  case "$PERSIST" in
    1) history=(--data-dir "$log.data") ;;
    0) history=(--no-persist) ;;
  esac
  case "$kind" in
    raw | json)
      "${PRIO[@]}" taskset -c "$SERVER_CPU" "$CHATHUB" --host 127.0.0.1 --port 0 --rate 0 \
        --max-conns-per-ip 0 --max-conns 0 --drain-timeout 1 --log-level warn \
        "${history[@]}" >"$log.out" 2>"$log.err" &
      ;;
    ws)
      "${PRIO[@]}" taskset -c "$SERVER_CPU" node "$ROOT/bench/reference/server.js" --host 127.0.0.1 --port 0 \
        >"$log.out" 2>"$log.err" &
      ;;
  esac
  SERVER_PID=$!
  local i
  for i in $(seq 1 100); do
    SERVER_PORT="$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)/.*#\1#p' "$log.out" 2>/dev/null || true)"
    [ -n "$SERVER_PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log.err" >&2 || true
  die "$kind server did not start (see $log.err)"
}

# busy_pct: how much of the machine other work used over half a second, so
# that figures taken next to a compiler or a fuzzer are flagged.
busy_pct() {
  local a b
  a=($(head -1 /proc/stat))
  sleep 0.5
  b=($(head -1 /proc/stat))
  local total=0 idle i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$((b[4] - a[4] + b[5] - a[5]))
  [ "$total" -gt 0 ] && echo $(((total - idle) * 100 / total)) || echo 0
}

# ---- one measured run -----------------------------------------------------
# run_load KIND LOAD N: one run of LOAD (fanout, rate, idle) against a fresh
# server of KIND; loadgen's output goes to $OUT_DIR/KIND-LOAD-N.txt.
run_load() {
  local kind="$1" load="$2" n="$3"
  local base="$OUT_DIR/$kind-$load-$n" args=() mode=()
  local busy=0 waited=0
  [ "$QUICK" = 1 ] || busy="$(busy_pct)"
  while [ "$busy" -gt "$BUSY_WARN" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 0.5 # busy_pct itself takes another half second
    waited=$((waited + 1))
    busy="$(busy_pct)"
  done
  start_server "$kind" "$base.server"
  case "$kind" in
    raw | ws) mode=(--path /ws/bench) ;;
    json) mode=(--path /ws/bench --json --room bench) ;;
  esac
  case "$load" in
    fanout)
      args=(--conns "$FANOUT_CONNS" --senders "$SENDERS" --size "$SIZE" --rate 0
        --window "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN"
        --stall 10)
      ;;
    rate)
      args=(--conns "$FANOUT_CONNS" --senders "$SENDERS" --size "$SIZE" --rate "$RATE"
        --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN")
      ;;
    idle)
      args=(--conns "$IDLE_CONNS" --idle --hold "$HOLD" --ramp 0 --max-pending "$MAX_PENDING")
      ;;
  esac
  local rc=0
  "${PRIO[@]}" taskset -c "$LOADGEN_CPU" "$LOADGEN" --host 127.0.0.1 --port "$SERVER_PORT" "${mode[@]}" \
    "${args[@]}" --server-pid "$SERVER_PID" --server-cpu "$SERVER_CPU" \
    >"$base.txt" 2>"$base.loadgen.err" || rc=$?
  echo "background_busy_pct=$busy" >>"$base.txt"
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    say "$kind server died during $load run $n; its log:"
    tail -20 "$base.server.err" >&2 || true
    echo "server_died=1" >>"$base.txt"
  fi
  stop_server
  if [ -s "$base.loadgen.err" ]; then
    sed 's/^/    /' "$base.loadgen.err" | head -8 >&2
  fi
  if [ "$busy" -gt "$BUSY_WARN" ]; then
    say "warning: other processes used ${busy}% of the machine before this run"
    NOISY=$((NOISY + 1))
  fi
  [ "$rc" -eq 0 ] || say "loadgen exited $rc for $kind $load run $n (see $base.loadgen.err)"
  local keys
  case "$load" in
    fanout) keys='connected|failures|deliveries_per_sec|missing_pct|server_cpu_ns_per_delivery|latency_p99_us' ;;
    rate) keys='failures|missing_pct|latency_p50_us|latency_p99_us|latency_max_us|server_cpu_ns_per_delivery' ;;
    idle) keys='connected|failures|handshakes_per_sec|rss_per_conn_bytes|server_rss_kb' ;;
  esac
  say "$kind $load run $n/$RUNS: $(grep -E "^($keys)=" "$base.txt" | tr '\n' ' ')"
}

# ---- summarising ------------------------------------------------------------
# value KIND LOAD KEY: the median of KEY over the runs, or "n/a".
value() {
  local kind="$1" load="$2" key="$3" f
  local vals=()
  for f in "$OUT_DIR/$kind-$load-"*.txt; do
    [ -f "$f" ] || continue
    local v
    v="$(sed -n "s/^$key=//p" "$f" | head -1)"
    [ -n "$v" ] && vals+=("$v")
  done
  if [ "${#vals[@]}" -eq 0 ]; then
    echo "n/a"
    return
  fi
  printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'
}

# fmt VALUE: a readable number (thousands grouped, at most 3 significant
# decimals below 10).
fmt() {
  awk -v v="$1" 'BEGIN {
    if (v == "n/a" || v == "") { print "n/a"; exit }
    a = (v < 0) ? -v : v
    if (a >= 100) { s = sprintf("%.0f", v); n = ""
      while (length(s) > 3) { n = "," substr(s, length(s) - 2) n; s = substr(s, 1, length(s) - 3) }
      print s n }
    else if (a >= 10) printf "%.1f\n", v
    else if (a >= 1) printf "%.2f\n", v
    else printf "%.3g\n", v }'
}

# ratio A B: A / B as "0.12x", or "n/a".
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "n/a" || b == "n/a" || b + 0 == 0) { print "n/a"; exit }
    r = a / b
    if (r >= 10) printf "%.0fx\n", r; else if (r >= 1) printf "%.1fx\n", r; else printf "%.2fx\n", r }'
}

has() { case " $SERVERS " in *" $1 "*) return 0 ;; esac; return 1; }

row() {
  local label="$1" load="$2" key="$3" noratio="${4:-}"
  local r j w
  r="$(has raw && value raw "$load" "$key" || echo n/a)"
  j="$(has json && value json "$load" "$key" || echo n/a)"
  w="$(has ws && value ws "$load" "$key" || echo n/a)"
  if [ -n "$noratio" ]; then
    printf '| %s | %s | %s | %s | |\n' "$label" "$(fmt "$r")" "$(fmt "$j")" "$(fmt "$w")"
    return
  fi
  printf '| %s | %s | %s | %s | %s (%s) |\n' "$label" "$(fmt "$r")" "$(fmt "$j")" "$(fmt "$w")" \
    "$(ratio "$r" "$w")" "$(ratio "$j" "$w")"
}

print_table() {
  local d="$DURATION"
  echo
  local hist="SQLite history (default)"
  [ "$PERSIST" = 0 ] && hist="history in memory (--no-persist)"
  [ "$PERSIST" = none ] && hist="no persistence in this build"
  echo "### chathub vs Node.js ws: median of $RUNS run(s), server on CPU $SERVER_CPU, loadgen on CPU $LOADGEN_CPU; chathub: $hist"
  echo
  echo "| figure | chathub raw | chathub JSON | node ws | ratio chathub/ws: raw (JSON) |"
  echo "|---|---:|---:|---:|---:|"
  row "(a) fan-out: deliveries/s, higher is better" fanout deliveries_per_sec
  row "(a) fan-out: server CPU ns per delivery, lower is better" fanout server_cpu_ns_per_delivery
  row "(a) fan-out: server core ns per delivery incl. softirq" fanout server_core_ns_per_delivery
  row "(a) fan-out: latency p99 µs (queueing under the window)" fanout latency_p99_us
  row "(a) fan-out: missing %" fanout missing_pct noratio
  row "(a) fan-out: server RSS KiB" fanout server_rss_kb
  row "(b) $RATE msg/s x $SENDERS senders: latency p50 µs" rate latency_p50_us
  row "(b) latency p90 µs" rate latency_p90_us
  row "(b) latency p99 µs" rate latency_p99_us
  row "(b) latency p99.9 µs" rate latency_p999_us
  row "(b) latency max µs" rate latency_max_us
  row "(b) deliveries/s" rate deliveries_per_sec
  row "(b) server CPU ns per delivery" rate server_cpu_ns_per_delivery
  row "(b) missing %" rate missing_pct noratio
  row "(c) idle: RSS per connection, bytes, lower is better" idle rss_per_conn_bytes
  row "(c) idle: server RSS KiB with all connected" idle server_rss_kb
  row "(d) handshakes/s, higher is better" idle handshakes_per_sec
  row "(d) server CPU µs per handshake" idle server_cpu_us_per_handshake
  row "connection failures (fan-out)" fanout failures noratio
  row "connection failures (idle)" idle failures noratio
  echo
  echo "Loads: (a) $FANOUT_CONNS connections in one room, $SENDERS of them publishing $SIZE-byte"
  echo "messages as fast as a window of $WINDOW undelivered messages per sender allows, ${d} s"
  echo "measured after ${WARMUP} s warm-up; (b) the same room at $RATE msg/s per sender; (c, d)"
  echo "$IDLE_CONNS connections opened as fast as loadgen can ($MAX_PENDING handshakes in flight), held idle."
  echo "Ratios divide the chathub figure by the ws figure; for rows where lower is better,"
  echo "a ratio below 1 favours chathub. Raw files: $OUT_DIR"
}

# ---- main --------------------------------------------------------------------
command -v taskset >/dev/null || die "taskset is missing (apt-get install util-linux)"
[ "$(nproc)" -ge 2 ] || say "warning: fewer than 2 CPUs; server and loadgen will share one"

# A negative niceness keeps compilers and tests that others run on the same
# machine from taking the benchmark's cores; only root may ask for it.
PRIO=()
if [ "$NICE" != 0 ] && [ "$(id -u)" = 0 ]; then
  PRIO=(nice -n "$NICE")
fi

# Every connection is a descriptor, in the server and in loadgen alike.
want=$((IDLE_CONNS + FANOUT_CONNS + 1024))
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  say "warning: open-file limit $(ulimit -n) is below $want; idle runs may fail"
fi

if [ -z "$OUT_DIR" ]; then
  OUT_DIR="$(mktemp -d /tmp/chathub-bench.XXXXXX)"
else
  mkdir -p "$OUT_DIR"
fi

say "building chathub and loadgen (release) in $BUILD_DIR from $SRC_DIR"
if [ -f "$BUILD_DIR/build.ninja" ]; then
  meson configure "$BUILD_DIR" -Dbuildtype=release -Dbench=true >/dev/null
else
  meson setup "$BUILD_DIR" "$SRC_DIR" -Dbuildtype=release -Dbench=true >"$OUT_DIR/meson-setup.log" ||
    { cat "$OUT_DIR/meson-setup.log" >&2; die "meson setup failed"; }
fi
ninja -C "$BUILD_DIR" chathub bench/loadgen >"$OUT_DIR/build.log" 2>&1 ||
  { tail -30 "$OUT_DIR/build.log" >&2; die "build failed (log: $OUT_DIR/build.log)"; }
CHATHUB="$BUILD_DIR/chathub"
LOADGEN="$BUILD_DIR/bench/loadgen"

# chathub keeps history in SQLite by default: each run gets a fresh data
# directory next to its results (PERSIST=1), or memory only (PERSIST=0).
# A hub without persistence knows neither flag.
if ! "$CHATHUB" --help | grep -q -- '--data-dir'; then
  PERSIST=none
fi

if has ws; then
  command -v node >/dev/null || die "node is missing; install nodejs or set SERVERS=\"raw json\""
  if [ ! -f "$ROOT/bench/reference/node_modules/ws/package.json" ]; then
    say "installing the reference server's npm dependencies"
    (cd "$ROOT/bench/reference" && npm ci --no-audit --no-fund >/dev/null)
  fi
fi

NOISY=0
started=$(date +%s)
for kind in raw json ws; do
  has "$kind" || continue
  for load in fanout rate idle; do
    case " $LOADS " in *" $load "*) ;; *) continue ;; esac
    for n in $(seq 1 "$RUNS"); do
      run_load "$kind" "$load" "$n"
    done
  done
done

print_table
if [ "$NOISY" -gt 0 ]; then
  echo
  echo "Warning: $NOISY run(s) started while other processes kept the machine over ${BUSY_WARN}% busy;"
  echo "their figures are perturbed (see background_busy_pct in the raw files)."
fi
say "done in $(($(date +%s) - started)) s; raw key=value results in $OUT_DIR"
