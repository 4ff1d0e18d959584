#!/usr/bin/env bash
# One command: set everything up, start the sandbox legacy apps, generate a demo inbox and
# spreadsheet, run the whole pipeline in a real Chromium and write the Excel report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/refund-bots demo "$@"
