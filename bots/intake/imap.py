"""Shared-mailbox intake: unseen mail in a folder becomes intake items, handled mail is filed.

The mailbox layer is rpaframework's `RPA.Email.ImapSmtp` (selecting, listing and
creating folders, flagging), with `RPA.Email.Exchange` for Microsoft 365 over EWS. Where
ImapSmtp cannot do what a refund intake must, this module drops to the
`imaplib` connection ImapSmtp wraps, and each such place says why. In short:

* `authorize_imap` always uses `IMAP4_SSL` without an SSL context, and Python's
  default for that is *unverified* TLS; it also cannot do plain IMAP or STARTTLS.
  We open the connection ourselves (verified by default, private CA supported)
  and hand it to ImapSmtp.
* `list_messages` searches by sequence number and fetches `(UID RFC822)` of every
  hit: in a read-write folder that sets \\Seen *before* anything was processed.
  On Dovecot the reply then carries `FLAGS (\\Seen)` between UID and RFC822, its
  regex misses the UID and the message is skipped: `list_messages("UNSEEN")`
  returns nothing and marks all unseen mail read (tests/test_imap.py proves it).
  It also downloads oversized mail and gives a re-parsed `Message`, not the raw
  bytes. We search by UID, check RFC822.SIZE, then fetch `BODY.PEEK[]` (no flags).
* `move_messages` is COPY + \\Deleted + EXPUNGE that ignores a failed COPY (the
  message is deleted, not moved: proven in the tests), and its EXPUNGE purges
  every deleted message in the shared folder, not just ours. We use UID MOVE
  (RFC 6851), or COPY, check, then UID EXPUNGE (UIDPLUS).

Never lose mail: a message is flagged and moved only after its item was yielded
and the consumer asked for the next one (i.e. it has been queued). A crash in
between leaves it unseen in the folder; reading it again is harmless because the
queue is unique on (channel, Message-ID).
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import re
import ssl
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bots.credentials import secret
from bots.intake.eml import MAIL_POLICY, parse_eml_bytes
from bots.intake.extract import (
    DEFAULT_ORDER_PATTERNS,
    check_order_patterns,
    clean_text,
    mask_secrets,
)
from bots.models import Channel, IntakeItem, Quarantined

if TYPE_CHECKING:  # rpaframework takes half a second to import: only when a mailbox is read
    from RPA.Email.ImapSmtp import ImapSmtp

CHANNEL = Channel.EMAIL.value
TIMEOUT_SECONDS = 60
EXCERPT_LIMIT = 200
MAX_SOURCE_ID = 250  # as in bots.intake.eml: longer Message-IDs are not used as ids
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_FOLDER_NAME = re.compile(r'^[\x20-\x7e]+$')


class MailboxError(Exception):
    """The mailbox cannot be read (connection, TLS, login, folder). Never contains a password."""


class MailboxConfig(BaseModel):
    """One shared mailbox read over IMAP (or Exchange Web Services for `provider: exchange`).

    `password_secret` names a secret (`$REFUND_BOTS_<NAME>` or the keyring), so
    that the password never sits in the settings file.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["imap"] = "imap"
    name: str | None = None
    host: str
    port: int = Field(993, ge=1, le=65535)
    ssl: bool = True  # implicit TLS (IMAPS, usually 993)
    starttls: bool = False  # plain connection upgraded with STARTTLS (usually 143)
    user: str
    password_secret: str
    folder: str = "INBOX"
    processed_folder: str | None = "Processed"  # None: only flag handled mail as seen
    max_bytes: int = Field(5_000_000, ge=1)
    verify_tls: bool = True
    ca_file: Path | None = None  # a private CA: then only it is trusted, not the system's
    provider: Literal["imap", "exchange"] = "imap"
    order_patterns: list[str] | None = None
    # Exchange only: the shared mailbox's address when `user` is a person with access to it,
    # and whether the secret is an OAuth2 JSON blob instead of a password (see _read_exchange).
    exchange_mailbox: str | None = None
    exchange_oauth: bool = False

    @field_validator("folder", "processed_folder")
    @classmethod
    def _plain_folder_name(cls, value: str | None) -> str | None:
        # Non-ASCII names need IMAP's modified UTF-7 and quotes/backslashes break ImapSmtp's
        # quoting: refuse them here rather than fail half-way through a run.
        if value is not None and (not _FOLDER_NAME.match(value) or '"' in value or "\\" in value):
            raise ValueError(f"folder name {value!r} must be printable ASCII without quotes or "
                             "backslashes")
        return value

    @field_validator("order_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str] | None) -> list[str] | None:
        return check_order_patterns(value)

    @model_validator(mode="after")
    def _consistent(self) -> MailboxConfig:
        if self.ssl and self.starttls:
            raise ValueError("choose one of ssl (implicit TLS, port 993) and starttls (port 143)")
        if self.processed_folder is not None and self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder (or be null)")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.user}@{self.host}/{self.folder}"

    @property
    def patterns(self) -> list[str]:
        return self.order_patterns or list(DEFAULT_ORDER_PATTERNS)


def read_mailbox(cfg: MailboxConfig) -> Iterator[IntakeItem]:
    """Every unseen message of `cfg.folder` as one item, oldest first; handled mail is filed.

    Raises `MailboxError` when the mailbox cannot be reached or read, and after the
    last item if some handled messages could not be flagged or moved (they will be
    read again next time, which the queue ignores).
    """
    if cfg.provider == "exchange":
        yield from _read_exchange(cfg)
        return
    lib = _connect(cfg)
    try:
        yield from _read_imap(lib, cfg)
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailboxError(f"{_where(cfg)}: the IMAP session failed: {exc}") from exc
    finally:
        _disconnect(lib)


# -- connection -------------------------------------------------------------------------------


def _where(cfg: MailboxConfig) -> str:
    return f"mailbox {cfg.user}@{cfg.host}:{cfg.port}"


def _password(cfg: MailboxConfig) -> str:
    return secret(cfg.password_secret)


def ssl_context(cfg: MailboxConfig) -> ssl.SSLContext:
    """Verified TLS by default; with `ca_file` only that CA is trusted (a private PKI)."""
    if not cfg.verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if cfg.ca_file is not None and not Path(cfg.ca_file).is_file():
        raise MailboxError(f"{_where(cfg)}: ca_file {cfg.ca_file} does not exist")
    return ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)


def _open(cfg: MailboxConfig) -> imaplib.IMAP4:
    """The raw connection, TLS as configured (ImapSmtp can only do unverified implicit TLS)."""
    mode = "IMAPS" if cfg.ssl else "STARTTLS" if cfg.starttls else "plain IMAP"
    if mode == "plain IMAP" and cfg.host not in _LOOPBACK:
        logger.warning("{}: connecting without TLS, the password travels in clear text",
                       _where(cfg))
    ctx = ssl_context(cfg) if cfg.ssl or cfg.starttls else None
    conn: imaplib.IMAP4 | None = None
    try:
        if cfg.ssl:
            conn = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=ctx,
                                     timeout=TIMEOUT_SECONDS)
        else:
            conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=TIMEOUT_SECONDS)
            if cfg.starttls:
                conn.starttls(ctx)
        return conn
    except (OSError, imaplib.IMAP4.error) as exc:
        if conn is not None:
            _quiet_logout(conn)
        hint = ""
        if isinstance(exc, ssl.SSLCertVerificationError):
            hint = " (set ca_file to the CA that signed the server's certificate)"
        raise MailboxError(f"{_where(cfg)}: cannot connect ({mode}) as {cfg.user}: "
                           f"{exc}{hint}") from exc


def _connect(cfg: MailboxConfig) -> ImapSmtp:
    """A logged-in ImapSmtp whose `imap_conn` is our own, properly secured connection."""
    with warnings.catch_warnings():  # rpaframework's own imports warn about a jsonpath rename
        warnings.simplefilter("ignore", DeprecationWarning)
        from RPA.Email.ImapSmtp import ImapSmtp

    password = _password(cfg)
    conn = _open(cfg)
    try:
        conn.login(cfg.user, password)
    except (imaplib.IMAP4.error, OSError) as exc:
        _quiet_logout(conn)
        said = str(exc).replace(password, "***") if password else str(exc)
        # `from None`: the chained frames hold the password as a local variable.
        raise MailboxError(f"{_where(cfg)}: login failed for user {cfg.user}: {said}") \
            from None
    # The password is not given to ImapSmtp, so that it is not kept on the object.
    lib = ImapSmtp(imap_server=cfg.host, imap_port=cfg.port, account=cfg.user)
    lib.imap_conn = conn
    return lib


def _disconnect(lib: ImapSmtp) -> None:
    """LOGOUT only: CLOSE (which ImapSmtp's __del__ sends) would expunge others' deleted mail."""
    conn, lib.imap_conn = lib.imap_conn, None
    if conn is not None:
        _quiet_logout(conn)


def _quiet_logout(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except Exception:  # the server is gone or the session broke: just drop the socket
        with contextlib.suppress(Exception):
            conn.shutdown()


def _capabilities(conn: imaplib.IMAP4) -> set[str]:
    """Capabilities after login (servers announce MOVE/UIDPLUS only then; imaplib keeps
    the pre-login list)."""
    typ, data = conn.capability()
    if typ != "OK" or not data or not isinstance(data[0], bytes):
        return set(conn.capabilities)
    return set(data[0].decode(errors="replace").upper().split())


# -- reading ----------------------------------------------------------------------------------


def _read_imap(lib: ImapSmtp, cfg: MailboxConfig) -> Iterator[IntakeItem]:
    conn = lib.imap_conn
    try:
        lib.select_folder(cfg.folder)
    except ValueError:
        raise MailboxError(f"{_where(cfg)}: folder {cfg.folder!r} does not exist") from None
    uidvalidity = _uidvalidity(conn)
    if cfg.processed_folder:
        _ensure_folder(lib, cfg, cfg.processed_folder)
    caps = _capabilities(conn)
    uids = _unseen_uids(conn)
    logger.info("{}: {} unseen message(s)", cfg.label, len(uids))
    failures: list[str] = []
    for uid in uids:
        item = _fetch_item(conn, cfg, uid, uidvalidity)
        if item is None:  # expunged by another client since the search
            continue
        yield item
        # Only now (the consumer has taken the item and asked for more) is it safe to file it.
        if problem := _file_away(lib, cfg, uid, caps):
            failures.append(problem)
    if failures:
        raise MailboxError(f"{_where(cfg)}: {len(failures)} handled message(s) could not be "
                           f"filed and will be read again next run: {'; '.join(failures[:5])}")


def _uidvalidity(conn: imaplib.IMAP4) -> str:
    _, data = conn.response("UIDVALIDITY")
    return data[0].decode() if data and isinstance(data[0], bytes) else "0"


def _ensure_folder(lib: ImapSmtp, cfg: MailboxConfig, name: str) -> None:
    if any(f["name"] == name for f in lib.get_folder_list()):
        return
    # ImapSmtp.create_folder passes the name unquoted (a name with a space would break).
    if not lib.create_folder(_quote(name)):
        raise MailboxError(f"{_where(cfg)}: cannot create folder {name!r} for handled mail")
    logger.info("{}: created folder {!r}", cfg.label, name)


def _unseen_uids(conn: imaplib.IMAP4) -> list[str]:
    """UIDs, not sequence numbers (ImapSmtp's search): those shift as we move messages away."""
    typ, data = conn.uid("SEARCH", "UNSEEN")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID SEARCH UNSEEN failed: {data}")
    raw = data[0] if data and isinstance(data[0], bytes) else b""
    return sorted(raw.decode().split(), key=int)


def _fetch_item(conn: imaplib.IMAP4, cfg: MailboxConfig, uid: str,
                uidvalidity: str) -> IntakeItem | None:
    meta = _fetch_meta(conn, uid)
    if meta is None:
        return None
    size, received = meta
    ref = f"imap://{cfg.user}@{cfg.host}/{cfg.folder};uid={uid}"
    if size > cfg.max_bytes:
        return _oversized(conn, cfg, uid, uidvalidity, size, ref)
    raw = _fetch_literal(conn, uid, "BODY.PEEK[]")  # PEEK: do not set \Seen yet
    if raw is None:
        return None
    return parse_eml_bytes(raw, source_ref=ref, order_patterns=cfg.patterns,
                           fallback_time=received, max_bytes=cfg.max_bytes)


def _fetch_meta(conn: imaplib.IMAP4, uid: str) -> tuple[int, datetime | None] | None:
    """(RFC822.SIZE, INTERNALDATE) without downloading the message."""
    typ, data = conn.uid("FETCH", uid, "(UID RFC822.SIZE INTERNALDATE)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH {uid} failed: {data}")
    for entry in data:
        line = entry[0] if isinstance(entry, tuple) else entry
        if not isinstance(line, bytes) or not re.search(rb"\bUID %s\b" % uid.encode(), line):
            continue  # an unsolicited FETCH (another client changed flags)
        size = re.search(rb"RFC822\.SIZE (\d+)", line)
        if size:
            return int(size.group(1)), _internaldate(line)
    return None


def _internaldate(line: bytes) -> datetime | None:
    found = re.search(rb'INTERNALDATE "([^"]+)"', line)
    if not found:
        return None
    try:
        return datetime.strptime(found.group(1).decode().strip(),
                                 "%d-%b-%Y %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def _fetch_literal(conn: imaplib.IMAP4, uid: str, part: str) -> bytes | None:
    """The bytes of one fetched section; only our section comes back as a literal."""
    typ, data = conn.uid("FETCH", uid, f"({part})")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH {uid} {part} failed: {data}")
    for entry in data:
        if isinstance(entry, tuple) and b"BODY[" in entry[0]:
            return bytes(entry[1])
    return None


def _oversized(conn: imaplib.IMAP4, cfg: MailboxConfig, uid: str, uidvalidity: str,
               size: int, ref: str) -> Quarantined:
    """Quarantined from its headers alone: the body is never downloaded."""
    raw = _fetch_literal(conn, uid, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM SUBJECT)]")
    headers = BytesHeaderParser(policy=MAIL_POLICY).parsebytes(raw or b"")
    source_id = (_message_id(headers.get("Message-ID"))
                 or f"imap:{cfg.user}@{cfg.host}/{cfg.folder};uidvalidity={uidvalidity};"
                    f"uid={uid}")
    where = (f"it was moved to the '{cfg.processed_folder}' folder"
             if cfg.processed_folder else f"it is marked as read in '{cfg.folder}'")
    reason = (f"the message is {size:,} bytes, larger than the {cfg.max_bytes:,}-byte limit "
              f"(probably large attachments): handle it by hand; {where}")
    excerpt = clean_text(mask_secrets(f"From: {_header(headers, 'From')} | "
                                      f"Subject: {_header(headers, 'Subject')}"), EXCERPT_LIMIT)
    return Quarantined(CHANNEL, source_id, reason, excerpt, ref)


def _header(headers: Any, name: str) -> str:
    try:
        return str(headers.get(name) or "")
    except Exception:  # a broken encoded-word: the excerpt is only a hint for humans
        return ""


def _message_id(raw: object) -> str | None:
    """The same normalisation as bots.intake.eml, so both paths give one id per message."""
    if raw is None:
        return None
    value = re.sub(r"\s+", "", str(raw)).strip("<>")
    return value if value and len(value) <= MAX_SOURCE_ID and value.isprintable() else None


# -- filing handled mail ----------------------------------------------------------------------


def _file_away(lib: ImapSmtp, cfg: MailboxConfig, uid: str, caps: set[str]) -> str | None:
    """Flag seen, then move (if configured); the problem in words, or None when done.

    Seen first, so that the message arrives read in the processed folder. If the
    move fails, the flag is taken back: the message stays unseen in the folder and
    is read (and its filing retried) next run, which the queue ignores.
    """
    # ImapSmtp's dict criterion must hold exactly one key (two would be unpacked as a pair).
    if lib.mark_as_read({"uid": uid}) != "OK":
        return f"uid {uid}: cannot flag as seen"
    if not cfg.processed_folder:
        return None
    problem = _move(lib.imap_conn, uid, cfg.processed_folder, caps)
    if problem:
        lib.mark_as_read({"uid": uid}, unread=True)
        return f"uid {uid}: {problem}"
    return None


def _move(conn: imaplib.IMAP4, uid: str, target: str, caps: set[str]) -> str | None:
    """UID MOVE where offered, else COPY and delete the original only if the copy worked.

    Not ImapSmtp.move_messages: it ignores a failed COPY, flags the original
    \\Deleted and expunges it anyway (mail lost, see tests/test_imap.py), and its
    EXPUNGE purges every deleted message in the shared folder, not just ours.
    """
    if "MOVE" in caps:
        typ, data = conn.uid("MOVE", uid, _quote(target))
        return None if typ == "OK" else f"MOVE to {target!r} refused: {data}"
    typ, data = conn.uid("COPY", uid, _quote(target))
    if typ != "OK":
        return f"COPY to {target!r} refused: {data}"
    conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
    if "UIDPLUS" in caps:
        conn.uid("EXPUNGE", uid)
    else:  # without UIDPLUS the only way; it also purges others' \Deleted mail in the folder
        conn.expunge()
    return None


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- Microsoft 365 / Exchange -----------------------------------------------------------------


def _read_exchange(cfg: MailboxConfig) -> Iterator[IntakeItem]:
    """A shared mailbox over EWS with `RPA.Email.Exchange`. UNTESTED against a real server.

    Only a fake of the Exchange library is exercised by the tests (no M365 tenant
    here). `host` is the EWS server (outlook.office365.com), autodiscover is off;
    `user` logs in, `exchange_mailbox` is the shared mailbox (default: `user`).
    Folders are resolved below the inbox as the library does ("INBOX" is the inbox,
    "Processed" is INBOX/Processed). With `exchange_oauth`, the secret is JSON:
    {"client_id": ..., "client_secret": ..., "token": {...}, "tenant": ...} with the
    token from the library's OAuth keywords; otherwise it is the password (basic
    auth, which Microsoft 365 has switched off for most tenants).
    """
    lib = _exchange_login(cfg)
    mailbox = cfg.exchange_mailbox or cfg.user
    if cfg.processed_folder:
        try:
            lib.create_folder(cfg.processed_folder)
        except Exception as exc:  # exchangelib: ErrorFolderExists when it is already there
            if "exist" not in type(exc).__name__.lower() + str(exc).lower():
                raise MailboxError(f"exchange mailbox {mailbox}: cannot create folder "
                                   f"{cfg.processed_folder!r}: {exc}") from exc
    items = lib.list_messages(cfg.folder, items_only=True)  # an exchangelib QuerySet
    for message in items.filter(is_read=False).order_by("datetime_received"):
        ref = f"ews://{mailbox}/{cfg.folder};id={message.id}"
        size = int(message.size or 0)
        if size > cfg.max_bytes:
            yield Quarantined(CHANNEL, _message_id(message.message_id) or f"ews:{message.id}",
                              f"the message is {size:,} bytes, larger than the "
                              f"{cfg.max_bytes:,}-byte limit: handle it by hand",
                              clean_text(mask_secrets(str(message.subject or "")),
                                         EXCERPT_LIMIT), ref)
        else:
            yield parse_eml_bytes(bytes(message.mime_content), source_ref=ref,
                                  order_patterns=cfg.patterns, max_bytes=cfg.max_bytes,
                                  fallback_time=message.datetime_received)
        message.is_read = True
        message.save(update_fields=["is_read"])
        if cfg.processed_folder:
            lib.move_message({"id": message.id, "changekey": message.changekey},
                             target=cfg.processed_folder)


def _exchange_login(cfg: MailboxConfig) -> Any:
    from RPA.Email.Exchange import Exchange

    credential = _password(cfg)
    mailbox = cfg.exchange_mailbox or cfg.user
    try:
        if cfg.exchange_oauth:
            oauth = _oauth_secret(credential, cfg)
            lib = Exchange(tenant=oauth.get("tenant"))
            lib.authorize(cfg.user, autodiscover=False, server=cfg.host,
                          primary_smtp_address=mailbox, is_oauth=True,
                          client_id=oauth.get("client_id"),
                          client_secret=oauth.get("client_secret"), token=oauth.get("token"))
        else:
            lib = Exchange()
            lib.authorize(cfg.user, password=credential, autodiscover=False, server=cfg.host,
                          primary_smtp_address=mailbox)
    except MailboxError:
        raise
    except Exception as exc:
        said = str(exc).replace(credential, "***") if credential else str(exc)
        raise MailboxError(f"exchange mailbox {mailbox} on {cfg.host}: login failed for "
                           f"user {cfg.user}: {type(exc).__name__}: {said}") from None
    return lib


def _oauth_secret(credential: str, cfg: MailboxConfig) -> dict[str, Any]:
    try:
        value = json.loads(credential)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not value.get("client_id"):
        raise MailboxError(f"secret {cfg.password_secret} must be JSON with client_id, "
                           "client_secret and token when exchange_oauth is on")
    return value
