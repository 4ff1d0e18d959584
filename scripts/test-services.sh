#!/usr/bin/env bash
# Install the real servers the test suite starts on free loopback ports by itself.
# Idempotent: installs only what is missing (apt-get update at most once). Without root it
# prints what to install and exits 0: the tests that need a server then skip locally, and
# fail under CI (CI=true), so a CI image without them cannot pass by skipping.
#   - Dovecot (IMAP/IMAPS) + openssl for its throwaway certificate: tests/test_imap.py
#   - LibreOffice Calc + poppler-utils: every workbook converts to PDF, the Summary prints
#     on one page (tests/test_workbooks_render.py)
#   - PostgreSQL (a throwaway cluster per test session, as the postgres user, on a free
#     port): the queue on PostgreSQL and several runners on one queue, tests/postgres.py
#   - espeak-ng: speaks known texts into WAV voicemails for tests/test_voice.py (and the demo)
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# package name -> the file that proves it is installed
declare -A NEEDS=(
  [dovecot-imapd]=/usr/sbin/dovecot
  [openssl]=/usr/bin/openssl
  [libreoffice-calc]=/usr/bin/soffice
  [poppler-utils]=/usr/bin/pdfinfo
  [postgresql]=/usr/lib/postgresql
  [espeak-ng]=/usr/bin/espeak-ng
)

missing=()
for pkg in "${!NEEDS[@]}"; do
  [ -e "${NEEDS[$pkg]}" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  say "test services: all installed (${!NEEDS[*]})"
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  say "test services missing: ${missing[*]}"
  echo "install them as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  echo "(until then the tests that need them skip; with CI=true they fail)" >&2
  exit 0
fi

say "installing test services: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (a parallel set-up) may hold the lock for a while: wait, do not fail.
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
say "test services installed"
