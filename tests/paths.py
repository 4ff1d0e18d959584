"""Where the repository's own files are, whatever directory pytest was started from."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
SELECTORS = ROOT / "selectors"
