# Shell helpers shared by scripts/dev.sh and scripts/cross-test.sh: run as
# root, and install the Debian packages that are missing. Sourced, not run.
# The sourcing script defines say() and die().

# as_root CMD...: runs CMD as root (directly, or through sudo).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (and sudo is not installed)"
  fi
}

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# install_packages [--no-recommends] PKG...: installs the Debian packages
# that are missing; does nothing (not even apt-get update) when all are there.
install_packages() {
  command -v dpkg-query >/dev/null 2>&1 || die "this script expects Debian (dpkg not found)"
  local missing=() p opts=()
  if [ "${1:-}" = --no-recommends ]; then
    opts=(--no-install-recommends)
    shift
  fi
  for p in "$@"; do
    case "$p" in
      # A Node.js from elsewhere (NodeSource's nodejs bundles npm) satisfies
      # nodejs and npm; Debian's npm would conflict with it.
      nodejs) command -v node >/dev/null 2>&1 && continue ;;
      npm) command -v npm >/dev/null 2>&1 && continue ;;
    esac
    pkg_installed "$p" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  say "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${opts[@]}" "${missing[@]}"
}
