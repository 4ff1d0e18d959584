"""Evidence of failed attempts: screenshots and Playwright traces, with secrets removed.

A trace records what the bot typed and what the server answered, so the login
password would be inside it. Traces are therefore rewritten after saving: every
occurrence of a known secret (raw, URL-encoded or JSON-escaped) becomes `***`.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, quote_plus

MASK = b"***"
# The value after a password field's name in a form body, a query string or JSON, however
# the password itself was encoded: masked even when no variant below matches.
_PASSWORD_FIELD = re.compile(
    rb"(?i)((?:pass(?:word|wd)?|pwd|secret)(?:=|%3D|\\?\"\s*:\s*\\?\"))[^&\s\"\\<]+")


def _form_encoded(secret: str) -> set[str]:
    """How browsers and libraries percent-encode a form value, upper and lower case hex."""
    found = {quote(secret, safe=""), quote(secret, safe="~"), quote_plus(secret),
             quote_plus(secret, safe="~"), quote_plus(secret, safe="*~"),
             quote(secret, safe="*-._~"), quote_plus(secret, safe="*-._"),  # WHATWG forms
             quote_plus(secret, safe="*-._~")}
    lower = {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), v) for v in found}
    return found | lower


def _base64_cores(data: bytes) -> set[bytes]:
    """The base64 text `data` becomes inside any longer base64 text, at each of 3 offsets."""
    cores = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + data)
        # The characters fully determined by `data`: skip the ones mixing in the padding
        # before and the unknown bytes after.
        start = (pad * 4 + 2) // 3
        end = ((pad + len(data)) // 3) * 4
        core = encoded[start:end]
        if len(core) >= 6:
            cores.add(core)
            cores.add(core.replace(b"+", b"-").replace(b"/", b"_"))  # URL-safe alphabet
    return cores


def secret_variants(secret: str) -> set[bytes]:
    """Every spelling of `secret` a trace, a log or a HAR can hold: raw, percent-encoded
    (any safe set, either hex case), JSON- and HTML-escaped, and inside base64 text."""
    texts = {secret, *_form_encoded(secret), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=True)[1:-1], html.escape(secret),
             html.escape(secret, quote=False)}
    found = {v.encode() for v in texts if len(v) >= 4}
    for text in list(found):
        found |= _base64_cores(text)
    return found


def scrub_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    for secret in secrets:
        for variant in sorted(secret_variants(secret), key=len, reverse=True):
            data = data.replace(variant, MASK)
    return _PASSWORD_FIELD.sub(lambda m: m.group(1) + MASK, data)


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
