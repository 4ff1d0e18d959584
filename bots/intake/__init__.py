"""Intake: every channel's raw input turned into canonical requests (or quarantined)."""

from __future__ import annotations

from bots.intake.eml import parse_eml_bytes, read_eml_folder
from bots.intake.imap import MailboxConfig, MailboxError, read_mailbox
from bots.intake.sources import AnySource, SourceConfig, read_source
from bots.intake.spreadsheet import read_spreadsheet

__all__ = ["AnySource", "MailboxConfig", "MailboxError", "SourceConfig", "parse_eml_bytes",
           "read_eml_folder", "read_mailbox", "read_source", "read_spreadsheet"]
