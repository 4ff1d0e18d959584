"""Regex searches over a whole column of texts at once, in Arrow's RE2 kernels.

Intake runs the same few patterns over every message of an export: searching
them one text at a time costs a Python call and a backtracking scan per text and
pattern, and was most of intake's time. Arrow (pandas' own string engine) runs a
pattern over a whole column in one call, with RE2's linear-time matcher.

RE2 is not Python's `re`, so a pattern only goes to RE2 on the texts where both
are known to answer the same, read from the parsed pattern: on any text when it
uses plain constructs (literals, classes of literals, groups, alternation,
repetition, `.`); on ASCII text only when it also uses `\\b`, `\\d`, `\\w` or
case-insensitivity (RE2 reads those as ASCII, Python as Unicode). Every other
text, pattern or construct (lookarounds, `\\s`, `$`...) is searched by Python's
`re`, so the answers are always exactly those of `re.search`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

try:  # how `re` itself parses a pattern: the only exact reading of Python's syntax
    # (private modules on purpose, absent from typeshed, hence the ignores)
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Python that moved them
    _sre = _sre_parser = None


class Reach(IntEnum):
    """On which texts RE2 gives the same answer as Python's `re` for a pattern."""

    NONE = 0
    ASCII = 1
    ANY = 2


@dataclass(frozen=True)
class ColumnPattern:
    source: str
    python: re.Pattern[str]
    reach: Reach
    # The pattern without its `\b` / `\B` when that is all that keeps RE2 to ASCII text:
    # it matches wherever the pattern does, so a text it misses needs no Python search.
    widened: str | None = None


@lru_cache(maxsize=256)
def column_pattern(source: str) -> ColumnPattern:
    """`source` (Python `re` syntax, inline flags only) with where RE2 may run it."""
    python = re.compile(source)
    reach = _reach(source) if _re2_compiles(source) else Reach.NONE
    widened = None
    if reach is Reach.ASCII:
        candidate = without_boundaries(source)
        if _re2_compiles(candidate) and _reach(candidate) is Reach.ANY:
            widened = candidate
    return ColumnPattern(source, python, reach, widened)


def without_boundaries(source: str) -> str:
    """`source` with its word-boundary assertions (`\\b`, `\\B`) taken out.

    Outside character classes only: inside one, `\\b` is a backspace character.
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source):
            if in_class or source[i + 1] not in "bB":
                out.append(source[i:i + 2])
            i += 2
            continue
        out.append(ch)
        i += 1
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            for lead in "^]":  # `[]...]` and `[^]...]`: a leading `]` is a literal
                if source[i:i + 1] == lead:
                    out.append(lead)
                    i += 1
    return "".join(out)


def _re2_compiles(source: str) -> bool:
    try:
        pc.match_substring_regex(pa.array([""]), source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _reach(source: str) -> Reach:
    if _sre is None:  # a Python whose regex internals differ: Python does all the work
        return Reach.NONE
    try:
        parsed = _sre_parser.parse(source)
    except Exception:
        return Reach.NONE
    flags = parsed.state.flags & ~re.UNICODE
    if flags & ~re.IGNORECASE:
        return Reach.NONE  # MULTILINE, DOTALL, VERBOSE...: RE2 reads them differently
    return min(Reach.ASCII if flags else Reach.ANY, _walk(list(parsed)))


def _walk(items: list[tuple[Any, Any]]) -> Reach:
    return min((_node(op, av) for op, av in items), default=Reach.ANY)


def _node(op: Any, av: Any) -> Reach:  # noqa: PLR0911
    k = _sre
    if op in (k.LITERAL, k.NOT_LITERAL, k.ANY):
        return Reach.ANY
    if op is k.IN:
        return min((_node(o, a) if o is k.CATEGORY else
                    Reach.ANY if o in (k.LITERAL, k.RANGE, k.NEGATE) else Reach.NONE
                    for o, a in av), default=Reach.ANY)
    if op is k.CATEGORY:
        # \s differs even on ASCII text (Python adds \v and \x1c-\x1f); \d and \w only beyond.
        same_on_ascii = (k.CATEGORY_DIGIT, k.CATEGORY_NOT_DIGIT, k.CATEGORY_WORD,
                         k.CATEGORY_NOT_WORD)
        return Reach.ASCII if av in same_on_ascii else Reach.NONE
    if op is k.AT:
        if av in (k.AT_BOUNDARY, k.AT_NON_BOUNDARY):
            return Reach.ASCII
        # `$` differs: Python's also matches before a final newline.
        return Reach.ANY if av in (k.AT_BEGINNING, k.AT_BEGINNING_STRING) else Reach.NONE
    if op is k.BRANCH:
        return min((_walk(list(branch)) for branch in av[1]), default=Reach.ANY)
    if op is k.SUBPATTERN:
        _, add, remove, body = av
        if (add | remove) & ~re.IGNORECASE:
            return Reach.NONE
        return min(Reach.ASCII if add | remove else Reach.ANY, _walk(list(body)))
    if op in (k.MAX_REPEAT, k.MIN_REPEAT):
        return _walk(list(av[2]))
    return Reach.NONE  # lookarounds, backreferences, atomic groups, possessive repeats


class TextColumn:
    """Texts prepared once for any number of column searches.

    ASCII texts, other texts RE2 can read (valid UTF-8), and the rest (lone
    surrogates from broken JSON) are kept apart: each pattern runs in RE2 on the
    parts its reach allows and in Python on the others.
    """

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = list(texts)
        ascii_idx, wide_idx, other_idx = [], [], []
        for i, text in enumerate(self.texts):
            if text.isascii():
                ascii_idx.append(i)
            elif _encodable(text):
                wide_idx.append(i)
            else:
                other_idx.append(i)
        self._parts = [
            (Reach.ASCII, np.array(ascii_idx, dtype=np.int64),
             _array([self.texts[i] for i in ascii_idx])),
            (Reach.ANY, np.array(wide_idx, dtype=np.int64),
             _array([self.texts[i] for i in wide_idx])),
        ]
        self._other = other_idx

    def __len__(self) -> int:
        return len(self.texts)

    def first_match(self, pattern: ColumnPattern) -> np.ndarray:
        """Where each text's first match starts (a character offset), -1 where none.

        Exactly `[m.start() if (m := rx.search(t)) else -1 for t in texts]`.
        """
        out = np.full(len(self.texts), -1, dtype=np.int64)
        python_idx = list(self._other)
        for reach, idx, array in self._parts:
            if not len(idx):
                continue
            if pattern.reach < reach:
                if pattern.widened is None:
                    python_idx += idx.tolist()
                else:
                    hits = _numpy(pc.match_substring_regex(array, pattern.widened))
                    python_idx += idx[hits].tolist()
                continue
            found = _numpy(pc.find_substring_regex(array, pattern.source))
            out[idx] = found
            if reach is not Reach.ASCII:  # Arrow counts bytes: characters only in ASCII text
                for i in idx[found >= 0].tolist():
                    out[i] = _char_offset(self.texts[i], int(out[i]))
        search = pattern.python.search
        for i in python_idx:
            m = search(self.texts[i])
            if m:
                out[i] = m.start()
        return out

    def may_match(self, pattern: ColumnPattern) -> np.ndarray:
        """Whether each text matches, or may: texts RE2 cannot answer for count as True.

        For gates: a cheap necessary condition, checked over the column, tells which
        texts cannot need the costly per-text work.
        """
        out = np.ones(len(self.texts), dtype=bool)
        for reach, idx, array in self._parts:
            if len(idx) and pattern.reach >= reach:
                out[idx] = _numpy(pc.match_substring_regex(array, pattern.source))
        return out


def _numpy(result: pa.Array) -> np.ndarray:
    return result.to_numpy(zero_copy_only=False)


def _array(texts: list[str]) -> pa.Array:
    return pa.array(texts, type=pa.large_string())


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _char_offset(text: str, byte_offset: int) -> int:
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8"))
