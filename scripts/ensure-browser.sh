#!/usr/bin/env bash
# The one set-up step of the browser tests, shared by `make test` (and so by .ci/run): make sure Debian chromium
# is installed. As root it runs apt-get; otherwise sudo when it works without a password prompt; when neither
# works it stops with one line that says what to run. The browser tests never skip: without a browser they fail.
set -uo pipefail
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
fix="sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "error: the browser tests need Debian chromium and this user cannot install it; run: $fix" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the browser tests need chromium and this machine has no apt-get; install chromium and put it on PATH" >&2
  exit 1
fi
echo "installing Debian chromium for the browser tests (apt-get; once per machine)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null || {
    echo "error: apt-get could not install chromium; run: $fix" >&2
    exit 1
  }
fi
command -v chromium >/dev/null 2>&1 || { echo "error: chromium is still not on PATH after apt-get; run: $fix" >&2; exit 1; }
echo "chromium: $(chromium --version 2>/dev/null || echo installed)"
