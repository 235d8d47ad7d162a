#!/usr/bin/env bash
# Install the system packages vidworker needs, only when missing (idempotent).
# ffmpeg (libx264, libx265, NVENC, libass), Noto CJK fonts for Korean captions,
# and python3-venv. Uses sudo when not root; never touches what is already there.
set -euo pipefail

missing=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
# grep reads all input (no -q): with pipefail an early exit would SIGPIPE fc-list and read as "missing"
if ! fc-list : family 2>/dev/null | grep -i "Noto Sans CJK" >/dev/null; then
  missing+=(fonts-noto-cjk fontconfig)
fi
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
