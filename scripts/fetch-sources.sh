#!/usr/bin/env bash
# Fetches the sources of the Meson fallback subprojects (subprojects/*.wrap)
# from Debian's source packages, checks every file against a pinned sha256
# and puts it where the wraps expect it:
#
#   subprojects/packagecache/<orig tarball>          read by Meson (source_filename)
#   subprojects/packagefiles/debian/<pkg>/<patch>    Debian's patches (diff_files)
#
# Usage: scripts/fetch-sources.sh [--check]
#   --check   only verify what is in place; exit 1 if anything is missing or wrong
#
# Idempotent: when every file is present with the right hash it does nothing
# and needs no network. Downloads are also kept in a per-machine cache
# ($CHATHUB_SOURCE_CACHE, default ~/.cache/chathub-sources), so a fresh clone
# on the same machine is served from there.
#
# Where the sources come from: the machine's own apt sources, turned into
# deb-src entries in a private apt directory (the system's apt configuration
# is not touched, and no host name is written anywhere in this repository).
# `apt-get source --download-only` then fetches the packages; apt checks them
# against the signed Sources index, and this script checks them again against
# the hashes pinned below and in the wrap files, so an unexpected file is a
# loud failure, never a silent substitution.
#
# Notes:
# - wslay: Debian's mirror does not serve wslay's own orig tarball (404), so the
#   source is the copy of wslay 1.1.1 that aria2's orig tarball bundles in
#   deps/wslay/ (the overlay builds only that directory).
# - sqlite3: Debian ships the full source tree, not the amalgamation. The script
#   checks Debian's orig tarball, applies Debian's source fixes, generates
#   sqlite3.c natively (needs tclsh, make and a C compiler) and packs it as a
#   reproducible .tar whose hash is pinned in subprojects/sqlite3.wrap.
#
# Needs: apt-get, tar, xz, sha256sum, patch; for sqlite3 also tclsh, make, cc.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUB="$ROOT/subprojects"
PKGCACHE="$SUB/packagecache"
PATCHROOT="$SUB/packagefiles/debian"
MACHINE_CACHE="${CHATHUB_SOURCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chathub-sources}"

CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "fetch-sources.sh: unknown argument: $1" >&2; exit 2 ;;
esac

say() { printf 'fetch-sources: %s\n' "$*" >&2; }
die() { printf 'fetch-sources: ERROR: %s\n' "$*" >&2; exit 1; }

# --- What is fetched ---------------------------------------------------------
# One line per tarball Meson reads: wrap name, Debian source package, file name.
# The expected sha256 is the wrap file's source_hash (one place for each hash).
ORIGS=(
  "libuv       libuv1       libuv1_1.44.2.orig.tar.gz"
  "http-parser http-parser  http-parser_2.9.4.orig.tar.gz"
  "wslay       aria2        aria2_1.36.0.orig.tar.gz"
  "jansson     jansson      jansson_2.14.orig.tar.gz"
)

# Debian patches the wraps apply (diff_files), and the sqlite3 ones this script
# applies before generating the amalgamation: sha256, source package, file.
# A new Debian revision that changes one of them fails here on purpose: review
# the change, then update the hash (and the wrap's diff_files if needed).
PATCHES=(
  "56cc65cd7f31023ddd31a09514cb4cbae78a2bb8e66578861d85642f43dfc757 libuv1 path_max_zero_st_size"
  "a5526baee2e390044eaf31548efe043b5dd91b6cb86a60657c0f560b3692575c libuv1 fix-cve-2024-24806"
  "7653ecc333977839868f75e8ba6c58cf1d79e4db705862620b8bae588d9b2df2 http-parser cherry-pick.v2.9.4-4-g805a0d1.fix-test-numbers.patch"
  "182b4793ba0d6faaf359ca00411dc7c6e200490fa8ddc8f357b7cadaa5ecff50 http-parser cherry-pick.v2.9.4-6-gd9275da.fix-wsign-compare-warning.patch"
  "08f8b7e69247d9d96384639459ebfe9ba4a5c4f701f17254e6c2eb2ed2111b9d http-parser cherry-pick.v2.9.4-7-g4b99e42.test-content-length-header-parsing.patch"
  "07a46cf3cfcadd7dce3351563674c084f74b1c7cde0b7bdcc33bb8eea1311042 http-parser cherry-pick.v2.9.4-8-ge13b274.allow-content-length-and-transfer-encoding-chunked.patch"
  "11c032cf8b02a2224f1fa0541e6b458eaae2197d47fc7f166734b5876bba8bbc http-parser cherry-pick.v2.9.4-9-g4f15b7d.fix-sizeof-http-parser-assert.patch"
  "649dd737d26b9e5734eba52c4261678f0ac1482ce973f32fa2b3f6e7e5ba8111 http-parser CVE-2020-8287.patch"
  "933a6bb0bfc70d40ce12870d4420820cf49e4002b800e531f39020bc98190cee sqlite3 41-fix_a_bug_in_the_NOT_NULL-IS_NULL_optimization.patch"
  "923461db0bc48bc6375b7202beb0dc8d22ea8f7db039ee5a7d97ba963b0b7f5a sqlite3 42-CVE-2025-6965.patch"
  "ed6eaab9a950646c53b1c6bf784e11e0573e1fea3d85ed2062ba38bc5cee2e5c sqlite3 0001-Fix-a-buffer-overread-in-the-sessions-extension-that.patch"
  "ddef97964f6b95b3399d33bb089005451fde329515f97f7d95a7fd90a75db6bc sqlite3 0002-Avoid-a-stack-overflow-that-could-be-caused-by-a-rec.patch"
  "7b007a9bca84eeb753ca1587393e16cc0095c8c2e1f75b082368020c5f1b065b sqlite3 0003-Fix-a-technically-undefined-signed-integer-overflow-.patch"
)

# sqlite3: Debian's orig tarball (checked here) and the generated amalgamation
# (checked against subprojects/sqlite3.wrap).
SQLITE_ORIG="sqlite3_3.40.1.orig.tar.xz"
SQLITE_ORIG_SHA256="aaa776260ab4dc976db34aa7891819484c8676b5b2783123ebc6301e2ca5d655"
SQLITE_SRCDIR="sqlite3-3.40.1"
SQLITE_AMALG_DIR="sqlite-amalgamation-3400100"
SQLITE_AMALG_TAR="$SQLITE_AMALG_DIR.tar"

# --- Helpers ------------------------------------------------------------------
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# has_sha256 FILE HASH: true when FILE exists and has that hash.
has_sha256() { [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]; }

# wrap_hash WRAPNAME: the source_hash of subprojects/WRAPNAME.wrap.
wrap_hash() {
  local h
  h="$(sed -n 's/^source_hash[[:space:]]*=[[:space:]]*\([0-9a-fA-F]\{64\}\)[[:space:]]*$/\1/p' "$SUB/$1.wrap")"
  [ -n "$h" ] || die "no source_hash in subprojects/$1.wrap"
  printf '%s\n' "$h"
}

# need_tools TOOL...: fail with one clear message naming every missing tool.
need_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  [ "${#missing[@]}" -eq 0 ] ||
    die "missing tools: ${missing[*]} (Debian: apt-get install -y tar xz-utils patch tcl make gcc)"
}

# --- What is missing? -----------------------------------------------------------
missing_origs=()     # "wrap srcpkg file"
missing_patches=()   # "sha pkg file"
need_sqlite=0

scan() {
  missing_origs=(); missing_patches=(); need_sqlite=0
  local line wrap pkg file sha
  for line in "${ORIGS[@]}"; do
    read -r wrap pkg file <<<"$line"
    has_sha256 "$PKGCACHE/$file" "$(wrap_hash "$wrap")" || missing_origs+=("$line")
  done
  for line in "${PATCHES[@]}"; do
    read -r sha pkg file <<<"$line"
    [ "$pkg" = sqlite3 ] && continue   # applied by this script, not by Meson
    has_sha256 "$PATCHROOT/$pkg/$file" "$sha" || missing_patches+=("$line")
  done
  has_sha256 "$PKGCACHE/$SQLITE_AMALG_TAR" "$(wrap_hash sqlite3)" || need_sqlite=1
}

report_missing() {
  local line
  for line in "${missing_origs[@]}"; do say "missing or wrong hash: subprojects/packagecache/${line##* }"; done
  for line in "${missing_patches[@]}"; do
    read -r _ pkg file <<<"$line"
    say "missing or wrong hash: subprojects/packagefiles/debian/$pkg/$file"
  done
  [ "$need_sqlite" -eq 0 ] || say "missing or wrong hash: subprojects/packagecache/$SQLITE_AMALG_TAR"
}

nothing_missing() {
  [ "${#missing_origs[@]}" -eq 0 ] && [ "${#missing_patches[@]}" -eq 0 ] && [ "$need_sqlite" -eq 0 ]
}

scan
if nothing_missing; then
  say "all sources present, hashes OK"
  exit 0
fi
if [ "$CHECK_ONLY" -eq 1 ]; then
  report_missing
  die "sources incomplete: run scripts/fetch-sources.sh"
fi

need_tools sha256sum tar xz patch
mkdir -p "$PKGCACHE" "$MACHINE_CACHE/files"

# --- Private apt state with deb-src entries ----------------------------------
APTDIR="$MACHINE_CACHE/apt"
APT_OPTS=()
apt_ready=0

# Writes deb-src copies of the machine's enabled apt sources (deb822 *.sources
# and one-line *.list / sources.list) into $APTDIR and runs `apt-get update`
# on them. Nothing in /etc/apt is modified.
setup_private_apt() {
  [ "$apt_ready" -eq 1 ] && return 0
  need_tools apt-get
  rm -rf "$APTDIR"
  mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
  : >"$APTDIR/sources.list"
  local f n=0
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    sed -E 's/^Types:.*$/Types: deb-src/' "$f" >"$APTDIR/sources.list.d/$(basename "$f")"
    n=$((n + 1))
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n -E 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' "$f" >>"$APTDIR/sources.list"
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || die "no apt sources found in /etc/apt (need Debian's apt sources to derive deb-src entries)"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$APTDIR/sources.list"
    -o "Dir::Etc::SourceParts=$APTDIR/sources.list.d"
    -o "Dir::State::Lists=$APTDIR/lists"
    -o "Dir::Cache=$APTDIR/cache"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Debug::NoLocking=1"
  )
  say "apt-get update (private deb-src lists in $APTDIR)"
  # A third-party source without a Sources index makes update report an
  # error; what matters is whether the packages below can then be fetched.
  if ! apt-get "${APT_OPTS[@]}" -q update >"$APTDIR/update.log" 2>&1; then
    say "apt-get update reported problems (see $APTDIR/update.log); trying anyway"
  fi
  apt_ready=1
}

# apt_source PKG: downloads Debian source package PKG into $MACHINE_CACHE/dl/PKG.
apt_source() {
  local pkg="$1" dir="$MACHINE_CACHE/dl/$1"
  setup_private_apt
  rm -rf "$dir"; mkdir -p "$dir"
  say "apt-get source --download-only $pkg"
  if ! (cd "$dir" && apt-get "${APT_OPTS[@]}" -q source --download-only "$pkg") >"$dir/apt.log" 2>&1; then
    sed 's/^/  /' "$dir/apt.log" >&2
    die "could not download Debian source package '$pkg' (see above)"
  fi
}

# fetch_file PKG FILE SHA: makes $MACHINE_CACHE/files/FILE a copy with hash
# SHA, downloading source package PKG if needed. Sets REPLY to its path.
# (REPLY rather than stdout: the private apt state must survive between calls.)
fetch_file() {
  local pkg="$1" file="$2" sha="$3" cached="$MACHINE_CACHE/files/$2"
  REPLY="$cached"
  has_sha256 "$cached" "$sha" && return 0
  [ -f "$MACHINE_CACHE/dl/$pkg/$file" ] || apt_source "$pkg"
  local got="$MACHINE_CACHE/dl/$pkg/$file"
  [ -f "$got" ] || die "source package '$pkg' has no file $file (Debian moved to another upstream version? files: $(cd "$MACHINE_CACHE/dl/$pkg" && ls | tr '\n' ' '))"
  local actual; actual="$(sha256_of "$got")"
  [ "$actual" = "$sha" ] || die "sha256 mismatch for $file from '$pkg': expected $sha, got $actual"
  cp -f "$got" "$cached"
}

# debian_patch PKG FILE SHA: puts Debian patch FILE of PKG, checked, in the
# machine cache. Sets REPLY to its path.
debian_patch() {
  local pkg="$1" file="$2" sha="$3" cached="$MACHINE_CACHE/files/debian/$1/$2"
  REPLY="$cached"
  has_sha256 "$cached" "$sha" && return 0
  local deb
  deb="$(ls "$MACHINE_CACHE/dl/$pkg/"*.debian.tar.* 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then apt_source "$pkg"; deb="$(ls "$MACHINE_CACHE/dl/$pkg/"*.debian.tar.* 2>/dev/null | head -n1 || true)"; fi
  [ -n "$deb" ] || die "source package '$pkg' has no debian.tar.* (patches)"
  mkdir -p "$MACHINE_CACHE/files/debian/$pkg"
  tar -xf "$deb" -O "debian/patches/$file" >"$cached.tmp" 2>/dev/null ||
    die "$(basename "$deb") has no debian/patches/$file (new Debian revision? review debian/patches/series)"
  local actual; actual="$(sha256_of "$cached.tmp")"
  if [ "$actual" != "$sha" ]; then
    rm -f "$cached.tmp"
    die "sha256 mismatch for Debian patch $pkg/$file: expected $sha, got $actual (new Debian revision? review it, then update PATCHES in this script)"
  fi
  mv -f "$cached.tmp" "$cached"
}

# --- Orig tarballs and Debian patches -------------------------------------------
for line in "${missing_origs[@]}"; do
  read -r wrap pkg file <<<"$line"
  fetch_file "$pkg" "$file" "$(wrap_hash "$wrap")"
  cp -f "$REPLY" "$PKGCACHE/$file"
  say "ok  subprojects/packagecache/$file"
done
for line in "${missing_patches[@]}"; do
  read -r sha pkg file <<<"$line"
  debian_patch "$pkg" "$file" "$sha"
  mkdir -p "$PATCHROOT/$pkg"
  cp -f "$REPLY" "$PATCHROOT/$pkg/$file"
  say "ok  subprojects/packagefiles/debian/$pkg/$file"
done

# --- sqlite3 amalgamation ---------------------------------------------------------
if [ "$need_sqlite" -eq 1 ]; then
  want="$(wrap_hash sqlite3)"
  cached="$MACHINE_CACHE/files/$SQLITE_AMALG_TAR"
  if has_sha256 "$cached" "$want"; then
    cp -f "$cached" "$PKGCACHE/$SQLITE_AMALG_TAR"
  else
    need_tools tclsh make cc
    fetch_file sqlite3 "$SQLITE_ORIG" "$SQLITE_ORIG_SHA256"
    orig="$REPLY"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    tar -xJf "$orig" -C "$work"
    for line in "${PATCHES[@]}"; do
      read -r sha pkg file <<<"$line"
      [ "$pkg" = sqlite3 ] || continue
      debian_patch sqlite3 "$file" "$sha"
      patch -d "$work/$SQLITE_SRCDIR" -p1 -s -f <"$REPLY" >/dev/null || die "Debian patch sqlite3/$file does not apply"
    done
    say "generating sqlite3.c (configure && make sqlite3.c, about 20 s)"
    mkdir -p "$work/bld" "$work/$SQLITE_AMALG_DIR"
    if ! (cd "$work/bld" && CC=cc "../$SQLITE_SRCDIR/configure" --disable-tcl --disable-readline \
          && make sqlite3.c) >"$work/gen.log" 2>&1; then
      tail -n 30 "$work/gen.log" >&2
      die "generating the sqlite3 amalgamation failed"
    fi
    cp "$work/bld/sqlite3.c" "$work/bld/sqlite3.h" "$work/bld/sqlite3ext.h" "$work/$SQLITE_AMALG_DIR/"
    # Reproducible archive: fixed order, times and owners; no compression,
    # so the bytes do not depend on a compressor's version.
    tar --sort=name --mtime='2022-12-28 14:03:47Z' --owner=0 --group=0 --numeric-owner \
        --format=gnu -C "$work" -cf "$work/$SQLITE_AMALG_TAR" "$SQLITE_AMALG_DIR"
    actual="$(sha256_of "$work/$SQLITE_AMALG_TAR")"
    if [ "$actual" != "$want" ]; then
      die "generated $SQLITE_AMALG_TAR has sha256 $actual, subprojects/sqlite3.wrap expects $want (Debian's sqlite3 sources or tools changed; review, then update source_hash)"
    fi
    cp -f "$work/$SQLITE_AMALG_TAR" "$cached"
    cp -f "$cached" "$PKGCACHE/$SQLITE_AMALG_TAR"
    rm -rf "$work"; trap - EXIT
  fi
  say "ok  subprojects/packagecache/$SQLITE_AMALG_TAR"
fi

scan
if ! nothing_missing; then
  report_missing
  die "sources still incomplete after fetching"
fi
say "all sources present, hashes OK"
