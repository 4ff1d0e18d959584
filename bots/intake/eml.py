"""Email intake: .eml files (a folder an ops mailbox rule drops them into) or raw bytes.

`parse_eml_bytes` knows nothing about files so that the IMAP adapter can feed it
the same bytes a folder would hold. Every message becomes exactly one item: a
request, or a quarantined entry with a reason a person can act on. Nothing a
shared inbox receives (junk, bounces, broken encodings) may raise.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bots.intake.extract import (
    DEFAULT_ORDER_PATTERNS,
    classify_reason,
    clean_text,
    cut_text,
    find_order_numbers,
    html_to_text,
    mask_secrets,
    normalise_email,
    order_doubts,
    read_amount,
    relative_amount_doubts,
)
from bots.intake.folders import folder_files, read_regular
from bots.intake.mail_reading import (
    customer_behind_robot,
    forwarded,
    new_text,
    not_a_request,
    robot_sender,
    unreadable,
)
from bots.models import Channel, IntakeItem, Quarantined, RefundRequest

CHANNEL = Channel.EMAIL.value
DEFAULT_MAX_BYTES = 5_000_000
REASON_LIMIT = 5000
EXCERPT_LIMIT = 200
SCAN_LIMIT = 50_000  # characters of subject + body looked at; the stored text is far shorter
MAX_SOURCE_ID = 250  # the queue stores 300; longer Message-IDs are hashed instead
# A body where more than this share of characters is unreadable is not a customer's message.
MAX_UNREADABLE_SHARE = 0.3
# The header block (everything before the first blank line). Exchange Online refuses mail
# with more than 256 KB of headers; no customer's message comes near it.
MAX_HEADER_BYTES = 256 * 1024
# One header value as handed to the stdlib's structured header parser (see _BoundedPolicy).
MAX_FIELD_CHARS = 2000  # twice RFC 5322's line limit: a From or Content-Type is far shorter
MAX_SUBJECT_CHARS = SCAN_LIMIT  # free text, parsed in linear-ish time; no more is read
_BOM = b"\xef\xbb\xbf"
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")  # a field name (RFC 5322 2.2), then a colon

_BROKEN_MULTIPART = ("NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect",
                     "MultipartInvariantViolationDefect")
_LATIN1_ALIASES = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "l1",
                             "iso_8859-1", "windows-1252", "cp1252"})
_ASCII_ALIASES = frozenset({"us-ascii", "ascii", "us_ascii", "ansi_x3.4-1968"})
_UNREADABLE = re.compile(r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

if TYPE_CHECKING:  # typeshed's EmailPolicy is generic in the message class it builds
    _EmailPolicy = EmailPolicy[EmailMessage]
else:  # the runtime class is not subscriptable
    _EmailPolicy = EmailPolicy


class _BoundedPolicy(_EmailPolicy):
    """`policy.default`, except that a header value is cut before its structured parse.

    The stdlib header parser is quadratic or worse on some inputs, well below
    MAX_HEADER_BYTES: a From of 16,000 characters of comments takes 4 s, 250 KB of
    encoded words in a Subject 2 GB of memory. Only the headers this module reads
    are parsed (From, Reply-To, Subject, Date, Content-*), each useful well within
    its limit; the raw values (Message-ID, Authentication-Results) are read uncut
    from `raw_items`.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        limit = MAX_SUBJECT_CHARS if name.lower() == "subject" else MAX_FIELD_CHARS
        if not hasattr(value, "name") and len(value) > limit:  # not yet parsed
            value = value[:limit]
        return super().header_fetch_parse(name, value)


MAIL_POLICY = _BoundedPolicy()  # public so that the IMAP adapter parses headers the same way


class _Reject(Exception):
    """A message that must be quarantined; carries the plain-English reason."""

    def __init__(self, reason: str, excerpt: str = "") -> None:
        super().__init__(reason)
        self.reason, self.excerpt = reason, excerpt


def read_eml_folder(folder: Path, *, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[IntakeItem]:
    """Every `*.eml` in `folder`, by file name so that runs are reproducible.

    Symlinks, FIFOs and devices are refused (quarantined) and never opened.
    """
    for path in folder_files(Path(folder), lambda p: p.suffix == ".eml", CHANNEL):
        yield path if isinstance(path, Quarantined) else _read_eml_file(
            path, order_patterns=order_patterns, max_bytes=max_bytes)


def read_maildir(folder: Path, *, order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[IntakeItem]:
    """Every message of a Maildir (`new/`, then `cur/`), by file name; never `tmp/`.

    `tmp/` holds messages still being delivered. The folder is only read, like an
    exported `.eml` folder: the queue knows each message by its Message-ID, so
    reading it again adds nothing, and the mail client keeps its own flags.
    """
    for sub in ("new", "cur"):
        for path in folder_files(Path(folder) / sub, lambda p: not p.name.startswith("."),
                                 CHANNEL):
            yield path if isinstance(path, Quarantined) else _read_eml_file(
                path, order_patterns=order_patterns, max_bytes=max_bytes)


def is_maildir(folder: Path) -> bool:
    return all((Path(folder) / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _read_eml_file(path: Path, *, order_patterns: Sequence[str], max_bytes: int) -> IntakeItem:
    ref = str(path)
    try:
        stat = path.stat()
        if stat.st_size > max_bytes:
            return Quarantined(CHANNEL, _file_digest(path), _too_large(stat.st_size, max_bytes),
                               source_ref=ref)
        data = read_regular(path, max_bytes)  # never through a link swapped in since
    except OSError as exc:
        return Quarantined(CHANNEL, f"unreadable:{ref}",
                           f"the file could not be read: {exc.strerror or exc}", source_ref=ref)
    mtime = datetime.fromtimestamp(stat.st_mtime, UTC)
    return parse_eml_bytes(data, source_ref=ref, order_patterns=order_patterns,
                           fallback_time=mtime, max_bytes=max_bytes)


def _file_digest(path: Path) -> str:
    """sha256 of a file too large to load at once (the same id its bytes would get)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _too_large(size: int, max_bytes: int) -> str:
    return (f"the message is {size:,} bytes, larger than the {max_bytes:,}-byte limit "
            f"(probably large attachments): handle it by hand")


def parse_eml_bytes(data: bytes, *, source_ref: str,
                    order_patterns: Sequence[str] = DEFAULT_ORDER_PATTERNS,
                    fallback_time: datetime | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> IntakeItem:
    """One raw RFC 5322 message as a request, or quarantined with the reason. Never raises.

    `fallback_time` is used when the Date header is missing or nonsense (a file's
    mtime, an IMAP INTERNALDATE); without one, now.
    """
    digest_id = f"sha256:{hashlib.sha256(data).hexdigest()}"
    if not data:
        # Every empty message has the same hash: tell them apart by where they came from.
        return Quarantined(CHANNEL, f"empty:{source_ref}", "the file is empty (0 bytes)",
                           source_ref=source_ref)
    if len(data) > max_bytes:
        return Quarantined(CHANNEL, digest_id, _too_large(len(data), max_bytes),
                           source_ref=source_ref)
    data = _without_lead(data)
    if problem := _oversized_headers(data) or _too_many_parts(data):
        return Quarantined(CHANNEL, digest_id, problem, _raw_excerpt(data), source_ref)
    try:
        msg = BytesParser(policy=MAIL_POLICY).parsebytes(data)
        source_id = _message_id(msg) or digest_id
    except Exception as exc:  # the parser is lenient; this is the last line of defence
        return Quarantined(CHANNEL, digest_id, f"not a readable email (MIME error: {exc})",
                           _raw_excerpt(data), source_ref)
    try:
        return _to_request(msg, source_id, source_ref, order_patterns, fallback_time)
    except _Reject as rej:
        return Quarantined(CHANNEL, source_id, rej.reason, rej.excerpt or _raw_excerpt(data),
                           source_ref)
    except Exception as exc:  # a malformed header or part we did not foresee
        return Quarantined(CHANNEL, source_id,
                           f"not a readable email ({type(exc).__name__}: {exc})",
                           _raw_excerpt(data), source_ref)


def _without_lead(data: bytes) -> bytes:
    """The message without a UTF-8 byte order mark or blank lines before the first header.

    Notepad and some export tools write a BOM, and a mail saved by hand may start
    with an empty line; either way the parser would see no header at all and the
    customer's mail would be quarantined as "not an email".
    """
    trimmed = data.removeprefix(_BOM).lstrip(b" \t\r\n")
    return trimmed or data


def _oversized_headers(data: bytes) -> str | None:
    """Why the header block is too large to parse, or None. Looks at a bounded prefix only.

    Parsing a megabyte of headers takes the stdlib seconds and proves nothing: the
    message is quarantined before it is parsed.
    """
    if len(data) <= MAX_HEADER_BYTES or _header_end(data, MAX_HEADER_BYTES + 3) >= 0:
        return None
    if not _HEADER_LINE.match(data):
        return None  # no header at all: the parser takes it all as body, cheaply
    end = _header_end(data, len(data))  # rare: only for a message that is refused anyway
    size = len(data) if end < 0 else end
    return (f"mail headers are {_size(size)}, more than the {_size(MAX_HEADER_BYTES)} a mail "
            "can sensibly have: handle it by hand")


# MIME structure bounds, checked on the raw bytes before the parser sees them: the stdlib
# parser's time grows faster than linearly with the number of parts (a 5 MB mail of 138,000
# parts took 64 s of CPU). A customer's mail has a handful of parts and two or three levels;
# the decoded size of every part together is bounded by `max_bytes` (MIME encodings never
# expand when decoded).
MAX_MIME_PARTS = 200
MAX_MIME_CONTAINERS = 12  # multipart/* and message/rfc822 parts: bounds the nesting too
_BOUNDARY_LINE = re.compile(rb"(?m)^--[!-~]")
_CONTAINER = re.compile(rb"(?im)^content-type:[ \t]*(?:multipart/|message/rfc822)")


def _too_many_parts(data: bytes) -> str | None:
    """Why the message's MIME structure is too large to parse, or None."""
    if b"--" not in data:
        return None
    containers = len(_CONTAINER.findall(data))
    if containers > MAX_MIME_CONTAINERS:
        return (f"the message nests {containers} multipart or attached-message parts (more "
                f"than {MAX_MIME_CONTAINERS}): not read, handle it by hand")
    delimiters = len(_BOUNDARY_LINE.findall(data))
    if containers and delimiters > MAX_MIME_PARTS + containers:
        return (f"the message has about {delimiters - containers:,} MIME parts (more than "
                f"{MAX_MIME_PARTS}): not read, handle it by hand")
    return None


def _header_end(data: bytes, limit: int) -> int:
    """Where the first blank line starts within data[:limit] (any line ending), or -1."""
    found = [i for sep in (b"\n\n", b"\n\r\n", b"\r\r") if (i := data.find(sep, 0, limit)) >= 0]
    return min(found, default=-1)


def _size(n: int) -> str:
    return f"{n / 1024 ** 2:.1f} MB" if n >= 1024 ** 2 * 0.95 else f"{n / 1024:.0f} KB"


def _to_request(msg: EmailMessage, source_id: str, source_ref: str,
                order_patterns: Sequence[str], fallback_time: datetime | None) -> RefundRequest:
    if not msg.keys():
        raise _Reject("not an email: the file has no mail headers at all")
    name, sender = _address(msg, "From")
    if not sender:
        raise _Reject("no sender: the From address is missing or not a valid email address")
    subject = _header(msg, "Subject")
    body = _body(msg)
    text = mask_secrets(_bounded(f"{subject}\n\n{body}"))
    excerpt = clean_text(text, EXCERPT_LIMIT)
    if _is_automatic(msg, sender):
        raise _Reject("an automatic message (bounce or auto-reply), not a customer request",
                      excerpt)
    # Issue #12: what a real inbox holds besides requests, and bodies the bot cannot read.
    if why := not_a_request(msg, subject, body):
        raise _Reject(why, excerpt)
    if not subject.strip() and not body.strip():
        raise _Reject("the message has no subject and no text", excerpt)
    if why := unreadable(msg, body):
        raise _Reject(why, excerpt)
    reply_to = _address(msg, "Reply-To")[1] or sender
    doubts: list[str] = []
    if original := forwarded(msg, body, subject):  # the customer is who wrote the original
        name, sender, reply_to = original.name, original.email, original.email
        text = mask_secrets(_bounded(f"{subject}\n\n{original.text}"))
        search = _unquoted(text)
    else:
        search = _unquoted(text)
        if robot_sender(sender, name):  # a form robot or a group: the customer is elsewhere
            customer = customer_behind_robot(reply_to if reply_to != sender else None,
                                             sender, search)
            if customer is None:
                doubts.append(f"the mail was sent by {sender}, a robot or group address, and "
                              "names no customer address: a human identifies the customer")
            else:
                sender = reply_to = customer
    orders = find_order_numbers(search, order_patterns)  # quoted history is context only
    amount = read_amount(search, order_patterns)
    doubts += [*order_doubts(orders), *amount.doubts,
               *relative_amount_doubts(search, amount.amount is not None)]
    return RefundRequest(
        channel=CHANNEL,
        source_id=source_id,
        received_at=_received_at(msg, fallback_time),
        reason_text=clean_text(text, REASON_LIMIT),
        customer_email=sender,
        customer_name=clean_text(mask_secrets(name), 200) or None,
        order_number=orders[0] if orders else None,
        requested_amount=amount.amount,
        currency=amount.currency,
        doubts=tuple(dict.fromkeys(doubts)),
        reason_category=classify_reason(search),
        reply_to=reply_to,
        source_ref=source_ref,
        auth_results=_auth_results(msg),
        in_reply_to=_original_message_id(msg),
    )


def _auth_results(msg: Message) -> str | None:
    """Every Authentication-Results header, raw and unfolded, top first, one per line.

    Raw because the parsed header object may rewrite it; which of them to trust
    is decided later by bots.decide.signals (by authserv-id), never here.
    """
    values = [re.sub(r"\r?\n", "", str(v)).replace("\r", " ").strip()
              for k, v in msg.raw_items() if k.lower() == "authentication-results"]
    text = "\n".join(v for v in values if v)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") or None


def _original_message_id(msg: Message) -> str | None:
    """The Message-ID with its angle brackets, for the In-Reply-To of our answer."""
    raw = next((str(v) for k, v in msg.raw_items() if k.lower() == "message-id"), "")
    value = re.sub(r"\s+", "", raw).strip("<>")
    if not value or len(value) > 398 or not value.isprintable():
        return None
    return f"<{value}>"


def _message_id(msg: Message) -> str | None:
    # The raw value: the parsed header object mangles folded or odd ids ("<abc\r\n @x>").
    return normalise_message_id(
        next((str(v) for k, v in msg.raw_items() if k.lower() == "message-id"), None))


def normalise_message_id(raw: str | None) -> str | None:
    """A Message-ID as a source id: no brackets or folding whitespace; None if unusable.

    Public so that other mail adapters (IMAP, Exchange) give the same message the same id.
    """
    if raw is None:
        return None
    value = re.sub(r"\s+", "", raw).strip("<>")
    return value if value and len(value) <= MAX_SOURCE_ID and value.isprintable() else None


def _header(msg: Message, name: str) -> str:
    """A header as text; a header whose encoding is broken still gives what it can."""
    try:
        value = msg.get(name)
        return "" if value is None else str(value)
    except Exception:
        raw = next((v for k, v in msg.raw_items() if k.lower() == name.lower()), "")
        return str(raw)


def _address(msg: Message, name: str) -> tuple[str, str | None]:
    """(display name, normalised address) of the first address of a header."""
    raw = _header(msg, name)
    if not raw.strip():
        return "", None
    try:
        pairs = getaddresses([raw])
    except Exception:
        pairs = []
    for display, addr in pairs:
        if normal := normalise_email(addr):
            return display, normal
    return "", normalise_email(raw)


def _is_automatic(msg: Message, sender: str) -> bool:
    """Bounces and out-of-office replies: answering them would start a mail loop."""
    auto = _header(msg, "Auto-Submitted").strip().lower()
    local = sender.split("@", 1)[0]
    return (bool(auto) and auto != "no") or local in ("mailer-daemon", "postmaster") or (
        msg.get_content_type() == "multipart/report")


def _received_at(msg: Message, fallback: datetime | None) -> datetime:
    now = datetime.now(UTC)
    try:
        when = parsedate_to_datetime(_header(msg, "Date").strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        when = None
    if when is not None:
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        # A date in the future is a broken clock, not a fact: fall back like a missing one.
        if when <= now + timedelta(days=1):
            return when
    return fallback.astimezone(UTC) if fallback else now


def _body(msg: EmailMessage) -> str:
    """The customer's words: text/plain if there is one, else the HTML part as text."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        if any(type(d).__name__ in _BROKEN_MULTIPART for d in msg.defects):
            raise _Reject("broken MIME structure: a multipart message without a usable "
                          "boundary, its parts cannot be told apart")
        return ""
    text = _decode_part(part)
    return html_to_text(text) if part.get_content_type() == "text/html" else text


def _decode_part(part: Message) -> str:
    """Decode with the declared charset, else UTF-8, replacing what cannot be decoded.

    Mailers routinely lie about or misspell charsets; a mostly readable body is
    still the customer's request, a body of replacement characters is not.
    """
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    declared = (part.get_content_charset() or "us-ascii").strip().lower()
    candidates = _charset_candidates(declared)
    for candidate in candidates:
        try:
            return payload.decode(candidate)
        except (UnicodeDecodeError, LookupError):
            continue
    text = payload.decode(candidates[0], errors="replace")
    if text and len(_UNREADABLE.findall(text)) / len(text) > MAX_UNREADABLE_SHARE:
        raise _Reject(f"the text cannot be decoded (declared character set '{declared}'): "
                      "mostly unreadable characters")
    return text


def _charset_candidates(declared: str) -> list[str]:
    """Charsets to try, most likely first, as browsers do it.

    "iso-8859-1" is nearly always really windows-1252 (the euro sign is 0x80);
    "us-ascii" (also what a missing charset means) is often really UTF-8.
    """
    if declared in _LATIN1_ALIASES:
        return ["cp1252", "latin-1"]
    if declared in _ASCII_ALIASES:
        return ["ascii", "utf-8", "cp1252"]
    return [declared, "utf-8"] if _known_charset(declared) else ["utf-8"]


def _known_charset(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _bounded(text: str, limit: int = SCAN_LIMIT) -> str:
    """The head of a long message: all that is stored, searched and classified."""
    return cut_text(text, limit)


def _unquoted(text: str) -> str:
    """The customer's own words: no quoted history, signature or footer (`new_text`)."""
    return new_text(text)


def _raw_excerpt(data: bytes) -> str:
    return clean_text(mask_secrets(data[:4000].decode("utf-8", errors="replace")), EXCERPT_LIMIT)
