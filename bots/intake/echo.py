"""Our own answers echoed back: a channel export that carries a message the bot sent.

Chat and social tools export whole conversations, and some mark nothing about who wrote
what (or mark our API-posted answers as the customer's). Such a message quotes the case
reference, so it looks like a follow-up; read as a request it would reopen the case. The
bot recognises its own words by their text: a request whose text is one of the messages
sent for the case it names (the whole message, or a long enough part of it, as exports
cut long messages) is quarantined, never a case. A customer who quotes our answer and
adds a question is a follow-up, not an echo.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CASE_REF = re.compile(r"\bC-(\d{6,})\b")
MIN_PART = 40  # characters: a shorter piece of our message ("Hi Ana,") proves nothing


def case_ids_named(text: str) -> set[int]:
    """The case ids a text quotes ("C-000042")."""
    return {int(m[1]) for m in CASE_REF.finditer(text or "")}


def flat(text: str) -> str:
    """Text as exports may re-flow it: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def echoed(text: str, sent: Iterable[str]) -> bool:
    """Whether `text` is (a long part of) one of the messages `sent`."""
    mine = flat(text)
    if not mine:
        return False
    for body in sent:
        ours = flat(body)
        if mine == ours or (len(mine) >= MIN_PART and mine in ours):
            return True
    return False
