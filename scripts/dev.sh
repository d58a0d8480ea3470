#!/usr/bin/env bash
# chathub developer entry point. On a fresh Debian 12 machine:
#
#   ./scripts/dev.sh run [chathub args...]   install what is missing, build, start on :8080
#   ./scripts/dev.sh test                    install what is missing, build, run every test
#
# `test` ends with one line "N passed, M failed" summed over every suite it
# ran (see run_suite), and exits non-zero if anything failed or did not build.
# Both commands are idempotent: they install and configure only what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(
  build-essential meson ninja-build pkg-config
  libuv1-dev libwslay-dev libhttp-parser-dev libjansson-dev libsqlite3-dev
  clang nodejs npm chromium
  redis-server libhiredis-dev
  libicu-dev
  zlib1g-dev
  libssl-dev openssl
)

# Counts summed over all suites by run_suite.
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
BUILD_FAILED=0

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'dev.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
  cat <<'EOF'
usage: scripts/dev.sh run [chathub args...]   build and start chathub (default --port 8080)
       scripts/dev.sh test                    build and run every test suite
EOF
}

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# Installs the project's Debian packages that are missing.
install_system_packages() {
  install_packages "${APT_PACKAGES[@]}"
  say "system packages: all present"
}

# Runs `npm ci` in tests/ when node_modules is missing or older than the
# lockfile. Sets NPM_CHANGED=1 when it installed something.
NPM_CHANGED=0
install_node_modules() {
  local stamp=tests/node_modules/.package-lock.json
  if [ -d tests/node_modules ] && [ -f "$stamp" ] && [ ! tests/package-lock.json -nt "$stamp" ]; then
    say "tests/node_modules: up to date"
    return 0
  fi
  say "installing test dependencies (npm ci in tests/)"
  # playwright-core never downloads browsers; the variable makes sure of it.
  (cd tests && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
  NPM_CHANGED=1
}

# configure DIR [meson setup args...]: sets DIR up, or reconfigures it when it
# exists so that the given options apply.
configure() {
  local dir=$1
  shift
  if [ -f "$dir/meson-private/coredata.dat" ]; then
    if [ "$#" -gt 0 ] || [ "$NPM_CHANGED" -eq 1 ]; then
      meson setup --reconfigure "$dir" "$@"
    fi
  else
    meson setup "$dir" "$@"
  fi
}

# build DIR [meson setup args...]: configure and compile. Returns non-zero on failure.
build() {
  local dir=$1
  shift
  say "building in $dir"
  configure "$dir" "$@" && ninja -C "$dir"
}

# count_results TESTLOG: prints "passed failed skipped" for a meson testlog.json.
count_results() {
  python3 - "$1" <<'EOF'
import json, sys
passed = failed = skipped = 0
with open(sys.argv[1], encoding='utf-8') as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        result = json.loads(line).get('result')
        if result in ('OK', 'EXPECTEDFAIL'):
            passed += 1
        elif result == 'SKIP':
            skipped += 1
        else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, anything unknown
            failed += 1
print(passed, failed, skipped)
EOF
}

# run_suite NAME DIR [meson setup args...]: builds DIR with the given options,
# runs its meson tests and adds the results to the totals. A build that fails
# counts as one failed test, so the final line never hides it.
run_suite() {
  local name=$1 dir=$2
  shift 2
  say "suite $name ($dir)"
  if ! build "$dir" "$@"; then
    printf 'dev.sh: suite %s: build failed\n' "$name" >&2
    BUILD_FAILED=1
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    return 0
  fi
  local log="$dir/meson-logs/testlog.json"
  rm -f "$log"
  local rc=0
  meson test -C "$dir" --print-errorlogs || rc=$?
  if [ ! -f "$log" ]; then
    printf 'dev.sh: suite %s: meson test wrote no results (exit %s)\n' "$name" "$rc" >&2
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    return 0
  fi
  local counts p f s
  counts=$(count_results "$log") || counts="0 1 0"
  read -r p f s <<<"$counts"
  printf 'suite %s: %s passed, %s failed, %s skipped\n' "$name" "$p" "$f" "$s"
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    # meson failed for a reason the log does not show: count it.
    printf 'dev.sh: suite %s: meson test exited %s\n' "$name" "$rc" >&2
    f=1
  fi
  TOTAL_PASSED=$((TOTAL_PASSED + p))
  TOTAL_FAILED=$((TOTAL_FAILED + f))
  TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
}

# run_fuzz SECONDS: builds the libFuzzer targets with clang (ASan+UBSan) and
# runs each on a scratch copy of its seed corpus for SECONDS. A target that
# builds and runs without a crash counts as one passed test.
run_fuzz() {
  local secs=$1 dir=build-fuzz
  say "suite fuzz ($dir, ${secs}s per target)"
  if ! CC=clang build "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
      -Dintegration=disabled; then
    printf 'dev.sh: suite fuzz: build failed\n' >&2
    BUILD_FAILED=1
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    return 0
  fi
  local t corpus scratch out
  # fuzz_tls exists when OpenSSL was found; it starts from an empty corpus.
  for t in http ws $([ -x "./$dir/tests/fuzz/fuzz_tls" ] && echo tls); do
    corpus=tests/fuzz/corpus/$t
    scratch=$(mktemp -d)
    if [ -d "$corpus" ]; then cp -r "$corpus"/. "$scratch"/; fi
    out="$dir/fuzz_$t.log"
    if "./$dir/tests/fuzz/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 \
        "$scratch" >"$out" 2>&1; then
      printf 'fuzz_%s: %s executions, no crash\n' "$t" \
        "$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$')"
      TOTAL_PASSED=$((TOTAL_PASSED + 1))
    else
      printf 'dev.sh: fuzz_%s found a problem:\n' "$t" >&2
      tail -40 "$out" >&2
      TOTAL_FAILED=$((TOTAL_FAILED + 1))
    fi
    rm -rf "$scratch"
  done
}

# run_windows: cross-builds chathub.exe with mingw-w64 (libraries from
# Debian's source packages through the wraps), runs the unit tests under Wine
# and a smoke test of the .exe against Linux clients (scripts/cross-test.sh).
# Counts the unit tests from the cross build's testlog and the smoke checks
# from build-win/smoke-result.txt.
run_windows() {
  say "suite windows (build-win)"
  local rc=0
  ./scripts/cross-test.sh windows || rc=$?
  local log=build-win/meson-logs/testlog.json p=0 f=0 s=0
  if [ -f "$log" ]; then
    read -r p f s <<<"$(count_results "$log")"
  fi
  local sp=0 sf=0
  if [ -f build-win/smoke-result.txt ]; then
    read -r _ sp _ sf <build-win/smoke-result.txt || true
  fi
  if [ "$rc" -ne 0 ] && [ $((f + sf)) -eq 0 ]; then
    printf 'dev.sh: suite windows: cross-test.sh exited %s\n' "$rc" >&2
    f=1
  fi
  printf 'suite windows: %s passed, %s failed (unit under wine), %s passed, %s failed (smoke)\n' \
    "$p" "$f" "$sp" "$sf"
  TOTAL_PASSED=$((TOTAL_PASSED + p + sp))
  TOTAL_FAILED=$((TOTAL_FAILED + f + sf))
  TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
}

cmd_run() {
  install_system_packages
  build build || die "build failed"
  # --port 8080 unless the caller names a port; the command line is shown
  # once, exactly as it runs (quoted as a shell would need it).
  local args=("$@") a has_port=0
  for a in "$@"; do
    case "$a" in --port | --port=*) has_port=1 ;; esac
  done
  [ "$has_port" -eq 1 ] || args=(--port 8080 "${args[@]}")
  say "running: ./build/chathub$(printf ' %q' "${args[@]}")"
  exec ./build/chathub "${args[@]}"
}

# If `test` stops early (an install step failed), still end with the summary
# line, counting the stop as a failure.
SUMMARY_PRINTED=0
summary_on_exit() {
  local rc=$?
  if [ "$SUMMARY_PRINTED" -eq 0 ]; then
    echo "dev.sh: stopped before the tests finished (exit $rc)" >&2
    echo "$TOTAL_PASSED passed, $((TOTAL_FAILED + 1)) failed"
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}

cmd_test() {
  trap summary_on_exit EXIT
  install_system_packages
  install_node_modules
  # Every suite's counts are summed into the last line.
  run_suite default build -Dintegration=enabled
  # The whole suite again under AddressSanitizer and UBSan; UBSan findings
  # abort, and LeakSanitizer makes a leaking server exit non-zero, which the
  # integration tests' clean-shutdown checks catch.
  # ASan's quarantine keeps freed memory resident, so tests that compare the
  # server's RSS before and after print the figures but do not judge them.
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  CHATHUB_SANITIZED=1 run_suite asan build-asan -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug -Dintegration=enabled
  run_fuzz "${FUZZ_SECONDS:-60}"
  run_windows

  echo "skipped: $TOTAL_SKIPPED"
  if [ "$BUILD_FAILED" -ne 0 ]; then
    echo "dev.sh: a build failed (see above)" >&2
  fi
  if [ $((TOTAL_PASSED + TOTAL_FAILED)) -eq 0 ]; then
    echo "dev.sh: no test ran" >&2
    SUMMARY_PRINTED=1
    echo "0 passed, 0 failed"
    exit 1
  fi
  SUMMARY_PRINTED=1
  echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
  if [ "$TOTAL_FAILED" -ne 0 ] || [ "$BUILD_FAILED" -ne 0 ]; then
    exit 1
  fi
  exit 0
}

main() {
  local cmd=${1:-}
  [ "$#" -gt 0 ] && shift
  case "$cmd" in
    run) cmd_run "$@" ;;
    test) [ "$#" -eq 0 ] || { usage >&2; exit 2; }; cmd_test ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
