#!/usr/bin/env bash
# Set up everything refund-bots needs on a fresh Debian/Ubuntu machine. Idempotent:
# safe to run again; each step is skipped when already done.
#   - Python >= 3.11 with venv, a virtual environment in .venv, the package + dev tools
#   - a Chromium for Playwright: Playwright's own if installed, else the system's,
#     else Debian's `chromium` (apt, when root), else `playwright install chromium`;
#     with apt also Debian's `chromium-headless-shell`, which headless runs prefer
#     (half the CPU per page load of the full browser)
# Set REFUND_BOTS_BROWSER=/path/to/chrome to use a browser of your choice.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
SUDO=""; is_root || SUDO="sudo"
apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null; then say "installing python3"; apt_install python3 python3-venv; fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "refund-bots needs Python 3.11 or newer; $PY is $("$PY" -V 2>&1). Set PYTHON=python3.12 ..." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv && "$PY" -m venv .venv
  fi
fi
if ! .venv/bin/python -c 'import bots, playwright, pytest, ruff' 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  say "installing refund-bots and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch .venv/.installed
fi

browser_ok() { .venv/bin/python -c 'from bots.legacy.browser import find_browser; print(find_browser().source)' 2>/dev/null; }
if ! browser_ok >/dev/null; then
  if command -v apt-get >/dev/null && { is_root || command -v sudo >/dev/null; }; then
    say "installing Chromium from the distribution (apt-get install chromium)"
    apt_install chromium || apt_install chromium-browser || true
  fi
  if ! browser_ok >/dev/null; then
    say "installing Playwright's Chromium (playwright install chromium)"
    .venv/bin/playwright install chromium
  fi
fi
if [ ! -x /usr/lib/chromium/chromium-headless-shell ] && [ -x /usr/lib/chromium/chromium ] \
   && command -v apt-get >/dev/null && { is_root || command -v sudo >/dev/null; }; then
  say "installing Chromium's headless shell (apt-get install chromium-headless-shell)"
  apt_install chromium-headless-shell || true
fi
say "browser: $(browser_ok)"
# The demo speaks its voicemail with espeak-ng (issue 17); without it the demo has none.
if ! command -v espeak-ng >/dev/null && command -v apt-get >/dev/null \
   && { is_root || command -v sudo >/dev/null; }; then
  say "installing espeak-ng (the demo's voicemail)"
  apt_install espeak-ng || true
fi
