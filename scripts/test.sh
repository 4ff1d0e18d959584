#!/usr/bin/env bash
# One command: set everything up (including the servers the tests start), lint, type-check,
# run the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/test-services.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
