"""Configured intake sources (`intake.sources` in the settings) and how each is read.

The settings name a kind and a path; this module turns that into a stream of
intake items, so the pipeline never needs to know what a channel looks like.
A source that is not there is reported, not skipped: a silently missing inbox
looks exactly like a quiet day.

Kinds: `eml_folder`, `maildir`, `spreadsheet` (`SourceConfig`), `imap` (`MailboxConfig`),
`voice` (`VoiceSourceConfig`: recordings, transcribed offline), and
the record exports `chat`, `social`, `phone`, `portal` (`ExportSourceConfig`), each a
file or a folder of files, with a `fields:` map for a tool's own export format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bots.intake import chat, phone, portal, social, voice
from bots.intake.eml import DEFAULT_MAX_BYTES, is_maildir, read_eml_folder, read_maildir
from bots.intake.extract import (
    DEFAULT_ORDER_PATTERNS,
    PHONE_REGIONS,
    check_order_patterns,
    currency_code,
)
from bots.intake.folders import folder_files
from bots.intake.imap import MailboxConfig, read_mailbox
from bots.intake.records import DEFAULT_MAX_BYTES as EXPORT_MAX_BYTES
from bots.intake.records import FieldOverrides
from bots.intake.spreadsheet import (
    DEFAULT_COLUMNS,
    EXCEL_SUFFIXES,
    FIELDS,
    read_spreadsheet,
)
from bots.models import Channel, IntakeItem, Quarantined

SourceKind = Literal["eml_folder", "maildir", "spreadsheet"]
ExportKind = Literal["chat", "social", "phone", "portal"]
_CHANNELS: dict[str, str] = {"eml_folder": Channel.EMAIL.value, "maildir": Channel.EMAIL.value,
                             "spreadsheet": Channel.SPREADSHEET.value,
                             "chat": Channel.CHAT.value, "social": Channel.SOCIAL.value,
                             "phone": Channel.PHONE.value, "portal": Channel.PORTAL.value,
                             "voice": Channel.VOICE.value}
# .txt is accepted as a named file but not picked up from folders: too many other uses.
FOLDER_SUFFIXES = (*EXCEL_SUFFIXES, ".csv", ".tsv")
# Per export kind: the fields its `fields:` map may name, and the files read from a folder.
EXPORT_FIELDS: dict[str, tuple[str, ...]] = {
    "chat": chat.FIELDS, "social": social.FIELDS, "phone": phone.FIELDS, "portal": portal.FIELDS}
EXPORT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "chat": chat.SUFFIXES, "social": social.SUFFIXES, "phone": phone.SUFFIXES,
    "portal": portal.SUFFIXES}


class _Source(BaseModel):
    """What every file-based source has: where, and how to read numbers, dates and phones."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    name: str | None = None
    order_patterns: list[str] | None = None
    default_currency: str | None = None
    default_region: str | None = None  # ISO 3166 code placing national phone numbers ("GB")
    date_dayfirst: bool = True

    @field_validator("order_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str] | None) -> list[str] | None:
        return check_order_patterns(value)

    @field_validator("default_currency")
    @classmethod
    def _currency_known(cls, value: str | None) -> str | None:
        if value is not None and currency_code(value) is None:
            raise ValueError(f"default_currency {value!r} is not a known ISO currency code")
        return currency_code(value) if value else None

    @field_validator("default_region")
    @classmethod
    def _region_known(cls, value: str | None) -> str | None:
        if value is not None and value.upper() not in PHONE_REGIONS:
            raise ValueError(f"default_region {value!r} is not a known ISO 3166 region code "
                             "(e.g. GB, DE, US)")
        return value.upper() if value else None

    @property
    def label(self) -> str:
        return self.name or str(self.path)

    @property
    def patterns(self) -> list[str]:
        return self.order_patterns or list(DEFAULT_ORDER_PATTERNS)


class SourceConfig(_Source):
    """An email folder or spreadsheet source (an entry of `intake.sources`).

    `columns` replaces the header synonyms of the fields it names (the other fields
    keep the defaults); `order_patterns` replaces the default order-number patterns.
    """

    kind: SourceKind
    columns: dict[str, list[str]] | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    # Spreadsheets: a formula cell's saved result is used as its value only when true
    # (the default quarantines the row: a formula is not data the customer gave).
    trust_formula_results: bool = False

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        unknown = set(value or {}) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown column fields {sorted(unknown)}; known: {list(FIELDS)}")
        return value

    @property
    def merged_columns(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in {**DEFAULT_COLUMNS, **(self.columns or {})}.items()}


class ExportSourceConfig(_Source):
    """A chat, social, phone or portal export: a file, or a folder the tool drops files in.

    `fields` maps canonical fields to where this tool keeps them: a dotted JSON path
    (`visitor.email`, `messages`, `author.type`) or a CSV column header, or a list
    of candidates tried in order. The fields it names replace the defaults; the
    others keep them. `records_key` is the dotted path of the list of records in a
    JSON document (found by itself for the usual names). `customer_roles` (chat)
    are the author roles whose messages are the customer's; `platform` (social)
    names the network when the export does not say; `own_handles` (social) are the
    business's own accounts, whose messages in the export are our answers, not requests.
    """

    kind: ExportKind
    fields: dict[str, str | list[str]] | None = None
    records_key: str | None = None
    customer_roles: list[str] | None = None
    platform: str | None = None
    own_handles: list[str] | None = None
    max_bytes: int = Field(EXPORT_MAX_BYTES, ge=1)

    @model_validator(mode="after")
    def _fits_kind(self) -> ExportSourceConfig:
        known = EXPORT_FIELDS[self.kind]
        unknown = sorted(set(self.fields or {}) - set(known))
        if unknown:
            raise ValueError(f"unknown fields {unknown} for kind '{self.kind}'; known: "
                             f"{list(known)}")
        for name, value in (self.fields or {}).items():
            if not value or (not isinstance(value, str) and not all(value)):
                raise ValueError(f"field '{name}' maps to nothing")
        if self.customer_roles is not None and self.kind != "chat":
            raise ValueError("customer_roles is for chat sources only")
        if self.platform is not None and self.kind != "social":
            raise ValueError("platform is for social sources only")
        if self.own_handles is not None and self.kind != "social":
            raise ValueError("own_handles is for social sources only")
        if self.records_key is not None and self.kind == "phone":
            raise ValueError("records_key is for JSON exports; phone call logs are CSV")
        return self

    @property
    def channel(self) -> str:
        return _CHANNELS[self.kind]


class VoiceSourceConfig(_Source):
    """A folder of voicemail / IVR recordings (WAV, MP3, OGG, FLAC) with optional sidecars.

    `min_confidence` (0..1) is how sure the transcription must be of an order number to
    use it (see `bots.intake.transcribe`); below it the request escalates with the
    transcript and the recording. `default_region` places national caller ids.
    """

    kind: Literal["voice"]
    min_confidence: float = Field(1.0, ge=0.0, le=1.0)


AnySource = Annotated[SourceConfig | ExportSourceConfig | MailboxConfig | VoiceSourceConfig,
                      Field(discriminator="kind")]


def read_source(cfg: SourceConfig | ExportSourceConfig | MailboxConfig | VoiceSourceConfig
                ) -> Iterator[IntakeItem]:
    """Every item of one configured source; a missing source is one quarantined item.

    A mailbox that cannot be reached raises `MailboxError`: that is an outage, not bad
    input, and the pipeline reports it as a failed source.
    """
    for part in source_parts(cfg):
        yield from read_part(part)


@dataclass(frozen=True)
class SourcePart:
    """What one reader reads on its own: a file of a folder source, or a whole source.

    Spreadsheet and export folders are read file by file; mailboxes, mail folders and
    voice folders are one part. `problem` is input refused before reading (a missing
    source, a FIFO in the folder, an unsupported file type): it is quarantined, never
    read.
    """

    cfg: SourceConfig | ExportSourceConfig | MailboxConfig | VoiceSourceConfig
    file: Path | None = None
    problem: Quarantined | None = None


def source_parts(cfg: SourceConfig | ExportSourceConfig | MailboxConfig | VoiceSourceConfig
                 ) -> list[SourcePart]:
    """The parts of a source, in the order they are read."""
    if isinstance(cfg, MailboxConfig):
        return [SourcePart(cfg)]
    channel = _CHANNELS[cfg.kind]
    path = Path(cfg.path)
    if not path.exists():
        return [SourcePart(cfg, problem=_problem(
            cfg, channel, "missing", f"source '{cfg.label}' is missing: {path} does not exist"))]
    if isinstance(cfg, ExportSourceConfig):
        return _export_parts(cfg, path)
    if isinstance(cfg, SourceConfig) and cfg.kind == "spreadsheet":
        return _spreadsheet_parts(cfg, channel, path)
    return [SourcePart(cfg)]


def read_part(part: SourcePart) -> Iterator[IntakeItem]:
    """Every item of one part of a source (see `source_parts`)."""
    cfg = part.cfg
    if part.problem is not None:
        yield part.problem
    elif isinstance(cfg, MailboxConfig):
        yield from read_mailbox(cfg)
    elif isinstance(cfg, VoiceSourceConfig):
        yield from voice.read_voice_folder(Path(cfg.path), default_region=cfg.default_region,
                                           min_confidence=cfg.min_confidence)
    elif isinstance(cfg, ExportSourceConfig):
        if part.file is not None:
            yield from read_export_file(cfg, part.file)
    elif cfg.kind == "eml_folder":
        yield from _eml_folder(cfg, _CHANNELS[cfg.kind], Path(cfg.path))
    elif cfg.kind == "maildir":
        yield from _maildir(cfg, _CHANNELS[cfg.kind], Path(cfg.path))
    elif part.file is not None:
        yield from read_spreadsheet(part.file, columns=cfg.merged_columns,
                                    order_patterns=cfg.patterns,
                                    default_currency=cfg.default_currency,
                                    date_dayfirst=cfg.date_dayfirst,
                                    default_region=cfg.default_region,
                                    trust_formula_results=cfg.trust_formula_results)


def _eml_folder(cfg: SourceConfig, channel: str, path: Path) -> Iterator[IntakeItem]:
    if not path.is_dir():
        yield _problem(cfg, channel, "not-a-folder",
                       f"source '{cfg.label}' should be a folder of .eml files: {path} is not "
                       "a folder")
        return
    yield from read_eml_folder(path, order_patterns=cfg.patterns, max_bytes=cfg.max_bytes)


def _maildir(cfg: SourceConfig, channel: str, path: Path) -> Iterator[IntakeItem]:
    if not is_maildir(path):
        yield _problem(cfg, channel, "not-a-maildir",
                       f"source '{cfg.label}' should be a Maildir (a folder with cur/, new/ and "
                       f"tmp/): {path} is not one")
        return
    yield from read_maildir(path, order_patterns=cfg.patterns, max_bytes=cfg.max_bytes)


def _file_part(cfg: SourceConfig | ExportSourceConfig, file: Path | Quarantined) -> SourcePart:
    if isinstance(file, Quarantined):
        return SourcePart(cfg, problem=file)
    return SourcePart(cfg, file)


def _spreadsheet_parts(cfg: SourceConfig, channel: str, path: Path) -> list[SourcePart]:
    if path.is_dir():
        files = list(folder_files(path, lambda p: p.suffix.lower() in FOLDER_SUFFIXES
                                  and not p.name.startswith(("~$", ".")),  # Excel locks, hidden
                                  channel))
    else:
        files = [path]  # an unsupported type is quarantined by read_spreadsheet, with the reason
    return [_file_part(cfg, file) for file in files]


def _export_parts(cfg: ExportSourceConfig, path: Path) -> list[SourcePart]:
    suffixes = EXPORT_SUFFIXES[cfg.kind]
    if path.is_dir():
        files = list(folder_files(path, lambda p: p.suffix.lower() in suffixes
                                  and not p.name.startswith(("~$", ".")), cfg.channel))
    else:
        files = [path]
    parts = []
    for file in files:
        if not isinstance(file, Quarantined) and file.suffix.lower() not in suffixes:
            parts.append(SourcePart(cfg, problem=_problem(
                cfg, cfg.channel, "unsupported",
                f"source '{cfg.label}': unsupported file type '{file.suffix}' for a "
                f"{cfg.kind} export (expected {', '.join(suffixes)})")))
            continue
        parts.append(_file_part(cfg, file))
    return parts


class _ExportOptions(TypedDict):
    """The keyword arguments every export adapter takes alike."""

    fields: FieldOverrides | None
    order_patterns: Sequence[str]
    default_currency: str | None
    default_region: str | None
    date_dayfirst: bool
    max_bytes: int


def read_export_file(cfg: ExportSourceConfig, file: Path) -> Iterator[IntakeItem]:
    """One file of an export source, read by its kind's adapter."""
    common: _ExportOptions = {
        "fields": cfg.fields, "order_patterns": cfg.patterns,
        "default_currency": cfg.default_currency, "default_region": cfg.default_region,
        "date_dayfirst": cfg.date_dayfirst, "max_bytes": cfg.max_bytes}
    if cfg.kind == "chat":
        yield from chat.read_chat_export(
            file, records_key=cfg.records_key,
            customer_roles=cfg.customer_roles or chat.CUSTOMER_ROLES, **common)
    elif cfg.kind == "social":
        yield from social.read_social_export(file, records_key=cfg.records_key,
                                             platform=cfg.platform,
                                             own_handles=cfg.own_handles or (), **common)
    elif cfg.kind == "phone":
        yield from phone.read_call_log(file, **common)
    else:
        yield from portal.read_portal_file(file, records_key=cfg.records_key, **common)


def _problem(cfg: _Source, channel: str, what: str, reason: str) -> Quarantined:
    return Quarantined(channel, f"source-{what}:{cfg.path}", reason, source_ref=str(cfg.path))
