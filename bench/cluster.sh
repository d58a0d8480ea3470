#!/usr/bin/env bash
# bench/cluster.sh: two hubs sharing one redis-server, beside one hub, under
# the same loads, in one run; prints one markdown table (issue 11's figures).
#
#   bench/cluster.sh                 the full run (about 2-3 minutes)
#   QUICK=1 bench/cluster.sh         a smoke run: 100 connections, 1 s
#   MODE=raw bench/cluster.sh        raw mode instead of chathub.v1
#   CHATHUB=/path/chathub LOADGEN=/path/loadgen bench/cluster.sh   no build
#
# Columns: "1 hub" (the default memory engine, SQLite history), "1 hub +
# Redis" and "2 hubs + Redis" (--redis, connections spread round-robin over
# the two hubs, so senders and subscribers are on both). Loads: (a) fan-out
# at saturation (FANOUT_CONNS subscribers, SENDERS of them publishing SIZE
# bytes as fast as a window of WINDOW undelivered messages per sender
# allows) and (b) the same room at RATE messages per second per sender, for
# latency, and (c) the issue's target load: TARGET_RATE messages per second
# per sender, which with 1000 receivers offers 1,000,000 deliveries/s. Redis CPU per room message comes from INFO CPU before and after
# each run (divided by the messages sent in the whole run) and from
# /proc/PID/stat over the measured window (loadgen --watch-pid, divided by
# the messages published in it). See bench/README.md.
#
# Invariants: every process it starts (redis-server, hubs) is stopped by its
# PID, also on errors and Ctrl-C; it never signals anything else. Loopback
# only; Redis runs in a temporary directory with the settings
# docs/operations.md recommends. Figures are reports, never pass/fail.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- configuration (environment) ---------------------------------------
SRC_DIR="${SRC_DIR:-$ROOT}"
BUILD_DIR="${BUILD_DIR:-/tmp/bench-cluster-build}"
OUT_DIR="${OUT_DIR:-}"
QUICK="${QUICK:-0}"
MODE="${MODE:-json}"                 # json (chathub.v1) or raw
if [ "$QUICK" = 1 ]; then
  RUNS="${RUNS:-1}"; DURATION="${DURATION:-1}"; WARMUP="${WARMUP:-0.2}"; DRAIN="${DRAIN:-1}"
  FANOUT_CONNS="${FANOUT_CONNS:-100}"
else
  RUNS="${RUNS:-1}"; DURATION="${DURATION:-10}"; WARMUP="${WARMUP:-2}"; DRAIN="${DRAIN:-15}"
  FANOUT_CONNS="${FANOUT_CONNS:-1000}"
fi
SENDERS="${SENDERS:-10}"
SIZE="${SIZE:-64}"
WINDOW="${WINDOW:-16}"
RATE="${RATE:-2}"
TARGET_RATE="${TARGET_RATE:-100}"   # (c): per sender; 10 x 100 msg/s x ~1000 receivers = the 1M/s target
REDIS_FSYNC="${REDIS_FSYNC:-always}" # appendfsync: always (docs/operations.md) or everysec, to compare
COLUMNS_RUN="${COLUMNS_RUN:-single redis1 redis2}" # which columns to measure
HUB_CPUS="${HUB_CPUS:-0 1}"          # cores of hub 1 and hub 2 (the single hub takes the first)
REDIS_CPU="${REDIS_CPU:-1}"          # core of redis-server ("" = not pinned)
LOADGEN_CPU="${LOADGEN_CPU:-}"       # core of loadgen ("" = not pinned)
NICE="${NICE:--15}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

case "$MODE" in json | raw) ;; *) die "MODE must be json or raw" ;; esac
command -v redis-server >/dev/null || die "redis-server is not installed (scripts/dev.sh installs it)"
command -v redis-cli >/dev/null || die "redis-cli is not installed (package redis-tools)"
command -v taskset >/dev/null || die "taskset is missing (util-linux)"

PRIO=()
if [ "$NICE" != 0 ] && [ "$(id -u)" = 0 ]; then PRIO=(nice -n "$NICE"); fi
# pin CPU: "taskset -c CPU" or nothing, spliced unquoted in front of a
# command so that the command itself is the process started with & (its
# PID is $!, the one sampled and signalled).
pin() { if [ -n "$1" ]; then echo taskset -c "$1"; fi; }

# ---- processes, stopped by PID -----------------------------------------
PIDS=()
REDIS_PID=""
REDIS_PORT=""

stop_pid() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

stop_hubs() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  PIDS=()
}

on_exit() {
  local rc=$?
  stop_hubs
  [ -n "$REDIS_PID" ] && stop_pid "$REDIS_PID"
  exit "$rc"
}
trap on_exit EXIT
trap 'say interrupted; exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_hub LOG CPU ARGS...: starts a hub, sets HUB_PID and HUB_PORT once it
# prints its URL and /healthz says 200.
start_hub() {
  local log="$1" cpu="$2"
  shift 2
  # shellcheck disable=SC2046 # pin's output is meant to split into words
  "${PRIO[@]}" $(pin "$cpu") "$CHATHUB" --host 127.0.0.1 --port 0 --rate 0 --max-conns-per-ip 0 \
    --max-conns 0 --drain-timeout 1 --log-level warn "$@" >"$log.out" 2>"$log.err" &
  HUB_PID=$!
  PIDS+=("$HUB_PID")
  HUB_PORT=""
  for _ in $(seq 1 200); do
    [ -n "$HUB_PORT" ] ||
      HUB_PORT="$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)/.*#\1#p' "$log.out" 2>/dev/null || true)"
    if [ -n "$HUB_PORT" ] && curl -fsS -o /dev/null "http://127.0.0.1:$HUB_PORT/healthz" 2>/dev/null; then
      return 0
    fi
    kill -0 "$HUB_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$log.err" >&2 || true
  die "hub did not become ready (see $log.err)"
}

redis_cpu() {
  redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' |
    awk -F: '/^used_cpu_sys:/ {s = $2} /^used_cpu_user:/ {u = $2} END {printf "%.6f\n", s + u}'
}

# ---- one run --------------------------------------------------------------
# run_load COLUMN LOAD N: output in $OUT_DIR/COLUMN-LOAD-N.txt.
run_load() {
  local col="$1" load="$2" n="$3" base="$OUT_DIR/$1-$2-$3"
  local ports=() pids=() cpus=() prefix="bench$n-$col-$load:"
  read -ra cpus <<<"$HUB_CPUS"
  local nhubs=1 redis_args=() k
  case "$col" in
    single) nhubs=1 ;;
    redis1) nhubs=1 ;;
    redis2) nhubs=2 ;;
  esac
  if [ "$col" != single ]; then
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
  fi
  for k in $(seq 1 "$nhubs"); do
    if [ "$col" = single ]; then
      redis_args=(--data-dir "$base.hub$k.data")
    else
      redis_args=(--redis "redis://127.0.0.1:$REDIS_PORT" --node-id "b$k" --redis-prefix "$prefix")
    fi
    start_hub "$base.hub$k" "${cpus[$((k - 1))]:-}" "${redis_args[@]}"
    ports+=("$HUB_PORT")
    pids+=("$HUB_PID")
  done
  local mode=(--path /ws/bench)
  [ "$MODE" = json ] && mode+=(--json --room bench)
  local args=()
  case "$load" in
    fanout)
      args=(--conns "$FANOUT_CONNS" --senders "$SENDERS" --size "$SIZE" --rate 0 --window "$WINDOW"
        --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" --stall 10) ;;
    rate)
      args=(--conns "$FANOUT_CONNS" --senders "$SENDERS" --size "$SIZE" --rate "$RATE"
        --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN") ;;
    target)
      args=(--conns "$FANOUT_CONNS" --senders "$SENDERS" --size "$SIZE" --rate "$TARGET_RATE"
        --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN") ;;
  esac
  local extra=(--server-pid "${pids[0]}")
  for k in $(seq 2 "$nhubs"); do
    extra+=(--also-port "${ports[$((k - 1))]}" --also-pid "${pids[$((k - 1))]}")
  done
  local r0="" rc=0
  if [ "$col" != single ]; then
    extra+=(--watch-pid "$REDIS_PID")
    r0="$(redis_cpu)"
  fi
  # shellcheck disable=SC2046 # as above
  "${PRIO[@]}" $(pin "$LOADGEN_CPU") "$LOADGEN" --host 127.0.0.1 --port "${ports[0]}" "${mode[@]}" \
    "${args[@]}" "${extra[@]}" >"$base.txt" 2>"$base.loadgen.err" || rc=$?
  if [ -n "$r0" ]; then
    local r1 total
    r1="$(redis_cpu)"
    total="$(sed -n 's/^published_total=//p' "$base.txt")"
    awk -v a="$r0" -v b="$r1" -v m="${total:-0}" 'BEGIN {
      printf "redis_info_cpu_sec=%.3f\n", b - a
      if (m > 0) printf "redis_info_cpu_us_per_message=%.2f\n", (b - a) * 1e6 / m }' >>"$base.txt"
  fi
  for k in "${!pids[@]}"; do
    kill -0 "${pids[$k]}" 2>/dev/null || { say "hub $((k + 1)) died during $col $load"; echo "server_died=1" >>"$base.txt"; }
  done
  stop_hubs
  [ -s "$base.loadgen.err" ] && sed 's/^/    /' "$base.loadgen.err" | head -5 >&2
  [ "$rc" -eq 0 ] || say "loadgen exited $rc for $col $load (see $base.loadgen.err)"
  say "$col $load run $n: $(grep -E '^(failures|deliveries_per_sec|missing_pct|latency_p50_us|latency_p99_us|server_cpu_ns_per_delivery|watch_cpu_us_per_published|redis_info_cpu_us_per_message)=' "$base.txt" | tr '\n' ' ')"
}

value() {
  local col="$1" load="$2" key="$3" f vals=()
  for f in "$OUT_DIR/$col-$load-"*.txt; do
    [ -f "$f" ] || continue
    local v
    v="$(sed -n "s/^$key=//p" "$f" | head -1)"
    [ -n "$v" ] && vals+=("$v")
  done
  if [ "${#vals[@]}" -eq 0 ]; then echo "n/a"; return; fi
  printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {
    m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m }'
}

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

has() { case " $COLUMNS_RUN " in *" $1 "*) return 0 ;; esac; return 1; }

row() {
  local label="$1" load="$2" key="$3" col
  local out="| $label |"
  for col in single redis1 redis2; do
    if has "$col"; then out+=" $(fmt "$(value "$col" "$load" "$key")") |"; else out+=" n/a |"; fi
  done
  echo "$out"
}

# ---- main -----------------------------------------------------------------
if [ -z "$OUT_DIR" ]; then OUT_DIR="$(mktemp -d /tmp/chathub-cluster-bench.XXXXXX)"; else mkdir -p "$OUT_DIR"; fi
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ -z "${CHATHUB:-}" ] || [ -z "${LOADGEN:-}" ]; then
  say "building chathub and loadgen (release, Redis engine) in $BUILD_DIR from $SRC_DIR"
  if [ -f "$BUILD_DIR/build.ninja" ]; then
    meson configure "$BUILD_DIR" -Dbuildtype=release -Dbench=true -Dredis=enabled >/dev/null
  else
    meson setup "$BUILD_DIR" "$SRC_DIR" -Dbuildtype=release -Dbench=true -Dredis=enabled \
      >"$OUT_DIR/meson-setup.log" || { cat "$OUT_DIR/meson-setup.log" >&2; die "meson setup failed"; }
  fi
  ninja -C "$BUILD_DIR" chathub bench/loadgen >"$OUT_DIR/build.log" 2>&1 ||
    { tail -30 "$OUT_DIR/build.log" >&2; die "build failed (log: $OUT_DIR/build.log)"; }
  CHATHUB="${CHATHUB:-$BUILD_DIR/chathub}"
  LOADGEN="${LOADGEN:-$BUILD_DIR/bench/loadgen}"
fi
"$CHATHUB" --help | grep -q -- '--node-id' || die "$CHATHUB has no --redis/--node-id (no Redis engine wired in)"

# A private redis-server: free port, temporary directory, AOF with fsync on
# every write, no eviction (docs/operations.md).
for _ in $(seq 1 50); do
  REDIS_PORT=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
  port_in_use "$REDIS_PORT" || break
done
mkdir -p "$OUT_DIR/redis"
# shellcheck disable=SC2046 # as above
$(pin "$REDIS_CPU") redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$OUT_DIR/redis" \
  --save '' --appendonly yes --appendfsync "$REDIS_FSYNC" --maxmemory-policy noeviction --daemonize no \
  --loglevel warning >"$OUT_DIR/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 1 100); do
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start (see $OUT_DIR/redis.log)"
say "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"

started=$(date +%s)
for col in single redis1 redis2; do
  has "$col" || continue
  for load in fanout rate target; do
    for n in $(seq 1 "$RUNS"); do run_load "$col" "$load" "$n"; done
  done
done

echo
echo "### 1 hub vs 2 hubs + Redis: $MODE mode, $FANOUT_CONNS subscribers, $SENDERS senders, $SIZE B, appendfsync $REDIS_FSYNC, median of $RUNS run(s)"
echo
echo "| figure | 1 hub (memory engine, SQLite) | 1 hub + Redis | 2 hubs + Redis |"
echo "|---|---:|---:|---:|"
row "(a) fan-out: deliveries/s" fanout deliveries_per_sec
row "(a) fan-out: latency p50 µs" fanout latency_p50_us
row "(a) fan-out: latency p99 µs" fanout latency_p99_us
row "(a) fan-out: hub CPU ns per delivery (all hubs)" fanout server_cpu_ns_per_delivery
row "(a) fan-out: Redis CPU µs per room message (window, /proc)" fanout watch_cpu_us_per_published
row "(a) fan-out: Redis CPU µs per room message (INFO CPU, whole run)" fanout redis_info_cpu_us_per_message
row "(a) fan-out: missing %" fanout missing_pct
row "(a) fan-out: out of order" fanout out_of_order
row "(b) $RATE msg/s x $SENDERS: latency p50 µs" rate latency_p50_us
row "(b) latency p99 µs" rate latency_p99_us
row "(b) latency max µs" rate latency_max_us
row "(b) deliveries/s" rate deliveries_per_sec
row "(b) hub CPU ns per delivery" rate server_cpu_ns_per_delivery
row "(b) Redis CPU µs per room message (window, /proc)" rate watch_cpu_us_per_published
row "(b) missing %" rate missing_pct
row "(c) $TARGET_RATE msg/s x $SENDERS (target load): deliveries/s" target deliveries_per_sec
row "(c) latency p50 µs" target latency_p50_us
row "(c) latency p99 µs" target latency_p99_us
row "(c) hub CPU ns per delivery" target server_cpu_ns_per_delivery
row "(c) Redis CPU µs per room message (window, /proc)" target watch_cpu_us_per_published
row "(c) missing %" target missing_pct
row "connection failures (a)" fanout failures
echo
echo "Cores: hubs on CPU(s) $HUB_CPUS (the single hub on the first), redis-server on ${REDIS_CPU:-any},"
echo "loadgen on ${LOADGEN_CPU:-any}; $(nproc) CPUs on this machine, load average $(cut -d' ' -f1 /proc/loadavg) at the end. Targets (issue 11): 2 hubs >= 1,000,000"
echo "deliveries/s at p99 <= 100 ms, Redis <= 50 µs CPU per room message. Raw files: $OUT_DIR"
say "done in $(($(date +%s) - started)) s"
