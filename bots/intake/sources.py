"""Configured intake sources (`intake.sources` in the settings) and how each is read.

The settings name a kind and a path; this module turns that into a stream of
intake items, so the pipeline never needs to know what a channel looks like.
A source that is not there is reported, not skipped: a silently missing inbox
looks exactly like a quiet day.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bots.extract import DEFAULT_ORDER_PATTERNS, currency_code
from bots.intake.eml import DEFAULT_MAX_BYTES, read_eml_folder
from bots.intake.imap import MailboxConfig, read_mailbox
from bots.intake.spreadsheet import (
    DEFAULT_COLUMNS,
    EXCEL_SUFFIXES,
    FIELDS,
    read_spreadsheet,
)
from bots.models import Channel, IntakeItem, Quarantined

SourceKind = Literal["eml_folder", "spreadsheet"]
_CHANNELS: dict[str, str] = {"eml_folder": Channel.EMAIL.value,
                             "spreadsheet": Channel.SPREADSHEET.value}
# .txt is accepted as a named file but not picked up from folders: too many other uses.
FOLDER_SUFFIXES = (*EXCEL_SUFFIXES, ".csv", ".tsv")


class SourceConfig(BaseModel):
    """One intake source (an entry of `intake.sources`).

    `columns` replaces the header synonyms of the fields it names (the other fields
    keep the defaults); `order_patterns` replaces the default order-number patterns.
    """

    model_config = ConfigDict(extra="forbid")

    kind: SourceKind
    path: Path
    name: str | None = None
    columns: dict[str, list[str]] | None = None
    order_patterns: list[str] | None = None
    default_currency: str | None = None
    date_dayfirst: bool = True
    max_bytes: int = DEFAULT_MAX_BYTES

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        unknown = set(value or {}) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown column fields {sorted(unknown)}; known: {list(FIELDS)}")
        return value

    @field_validator("order_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"order pattern {pattern!r} is not a valid regex: {exc}") \
                    from exc
        return value

    @field_validator("default_currency")
    @classmethod
    def _currency_known(cls, value: str | None) -> str | None:
        if value is not None and currency_code(value) is None:
            raise ValueError(f"default_currency {value!r} is not a known ISO currency code")
        return currency_code(value) if value else None

    @property
    def label(self) -> str:
        return self.name or str(self.path)

    @property
    def merged_columns(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in {**DEFAULT_COLUMNS, **(self.columns or {})}.items()}

    @property
    def patterns(self) -> list[str]:
        return self.order_patterns or list(DEFAULT_ORDER_PATTERNS)


AnySource = Annotated[SourceConfig | MailboxConfig, Field(discriminator="kind")]


def read_source(cfg: SourceConfig | MailboxConfig) -> Iterator[IntakeItem]:
    """Every item of one configured source; a missing source is one quarantined item.

    A mailbox that cannot be reached raises `MailboxError`: that is an outage, not bad
    input, and the pipeline reports it as a failed source.
    """
    if isinstance(cfg, MailboxConfig):
        yield from read_mailbox(cfg)
        return
    channel = _CHANNELS[cfg.kind]
    path = Path(cfg.path)
    if not path.exists():
        yield _problem(cfg, channel, "missing",
                       f"source '{cfg.label}' is missing: {path} does not exist")
        return
    if cfg.kind == "eml_folder":
        yield from _eml_folder(cfg, channel, path)
    else:
        yield from _spreadsheets(cfg, channel, path)


def _eml_folder(cfg: SourceConfig, channel: str, path: Path) -> Iterator[IntakeItem]:
    if not path.is_dir():
        yield _problem(cfg, channel, "not-a-folder",
                       f"source '{cfg.label}' should be a folder of .eml files: {path} is not "
                       "a folder")
        return
    yield from read_eml_folder(path, order_patterns=cfg.patterns, max_bytes=cfg.max_bytes)


def _spreadsheets(cfg: SourceConfig, channel: str, path: Path) -> Iterator[IntakeItem]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file()
                       and p.suffix.lower() in FOLDER_SUFFIXES
                       and not p.name.startswith(("~$", ".")))  # Excel lock files, hidden
    else:
        files = [path]  # an unsupported type is quarantined by read_spreadsheet, with the reason
    for file in files:
        yield from read_spreadsheet(file, columns=cfg.merged_columns, order_patterns=cfg.patterns,
                                    default_currency=cfg.default_currency,
                                    date_dayfirst=cfg.date_dayfirst)


def _problem(cfg: SourceConfig, channel: str, what: str, reason: str) -> Quarantined:
    return Quarantined(channel, f"source-{what}:{cfg.path}", reason, source_ref=str(cfg.path))
