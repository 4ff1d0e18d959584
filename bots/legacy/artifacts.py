"""Evidence of failed attempts: screenshots and Playwright traces, with secrets removed.

A trace records what the bot typed and what the server answered, so the login
password would be inside it. Traces are therefore rewritten after saving: every
occurrence of a known secret (raw, URL-encoded or JSON-escaped) becomes `***`.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = b"***"


def secret_variants(secret: str) -> set[bytes]:
    variants = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    return {v.encode() for v in variants if len(v) >= 4}


def scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    for secret in secrets:
        for variant in sorted(secret_variants(secret), key=len, reverse=True):
            data = data.replace(variant, MASK)
    return data


def scrub_zip(path: Path, secrets: Iterable[str]) -> None:
    """Rewrite a trace.zip in place with every secret masked in every member."""
    secrets = [s for s in secrets if s]
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, scrub_bytes(src.read(info), secrets))
    os.replace(tmp, path)


def zip_contains(path: Path, needle: str) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(v in z.read(i) for i in z.infolist() for v in secret_variants(needle))
