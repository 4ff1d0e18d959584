#!/usr/bin/env bash
# One command: set everything up (including the servers the tests start), lint, run the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/test-services.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
