#!/usr/bin/env bash
# Put promtool (Prometheus's rule and config checker, for `make lint`) at $1.
# A promtool on PATH is linked; otherwise the binary is taken out of Debian's `prometheus`
# package without installing the package (no server, no service, nothing started).
set -euo pipefail
target="$1"
if command -v promtool >/dev/null 2>&1; then
  ln -sf "$(command -v promtool)" "$target"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "promtool: not found and no apt-get here; install Prometheus's promtool and put it on PATH" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download -qq prometheus >/dev/null 2>&1); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  (cd "$work" && apt-get download -qq prometheus >/dev/null)
fi
dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
install -m 0755 "$work/root/usr/bin/promtool" "$target"
"$target" --version | head -1
