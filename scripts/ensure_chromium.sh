#!/usr/bin/env bash
# Make a headless Chromium available for the report rendering test (tests/test_report_html_chromium.py).
#
# Prints the path of the browser on stdout and exits 0 when one is usable; exits non-zero with the
# reason on stderr when it cannot be installed (no apt-get, not root and no sudo, no package mirror).
# Safe to call repeatedly: it installs only when no browser is found.
set -euo pipefail

find_browser() {
  for name in chromium chromium-browser google-chrome chrome; do
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  done
  return 1
}

if path=$(find_browser); then echo "$path"; exit 0; fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no chromium on PATH and no apt-get to install Debian's 'chromium'" >&2
  exit 2
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure_chromium: not root and no password-less sudo; run 'apt-get install -y chromium' as root" >&2
    exit 3
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >&2; then
  # The package lists may be missing or stale on a fresh image.
  $SUDO apt-get update -q >&2 || { echo "ensure_chromium: apt-get update failed (no package mirror reachable?)" >&2; exit 4; }
  $SUDO apt-get install -y -q --no-install-recommends chromium >&2 \
    || { echo "ensure_chromium: apt-get install chromium failed" >&2; exit 5; }
fi
if path=$(find_browser); then echo "$path"; exit 0; fi
echo "ensure_chromium: chromium installed but not found on PATH" >&2
exit 6
