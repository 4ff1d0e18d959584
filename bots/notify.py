"""Tell customers what happened to their refund request, on the channel they used.

One message per source contact of a case (contacts on the same channel with the same
address are one contact: a customer who wrote twice gets one answer, threaded to both
emails). Email is answered over SMTP, threaded to the customer's message; every other
channel (chat, social, phone, portal, spreadsheet) gets a line in a per-channel JSONL
outbox that the channel's own tool sends.

A transactional outbox: the processor writes one `pending` row per contact in the same
transaction that finishes the case (`Notifier.record`), so a crash between finishing and
telling loses nothing; every run (and the scheduler's sweep) then sends what is pending or
failed (`Notifier.send_due`), with exponential backoff, until it is sent or, after
`max_tries`, given up (the run exits 3 and says so). A row holds the facts to tell (outcome,
amount, refund number...), rendered with the current templates when it is sent, so a
template fixed after a failure is used on the retry. Rows are unique on (request, kind):
a rerun adds and sends nothing twice. This is at-least-once, not exactly-once, at one
point: if the process dies after the SMTP server accepted a message but before the row is
marked sent, the next run sends that email again (with the same Message-ID, so many mail
clients show it once). To keep that window from being hit by a *concurrent* run, a
`pending` SMTP row is only retried once it is older than :data:`PENDING_RETRY_AFTER`.
Outbox lines carry the notification id, so the downstream tool can drop a repeated line.

Messages are rendered from Jinja2 templates that ops staff edit
(`config/templates/<outcome>.txt.j2`, first line `Subject: ...`), in a sandbox, and the
rendered text is masked (:func:`bots.intake.extract.mask_secrets`) and checked so that no
card number longer than its last four digits can leave the building.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal
from uuid import uuid4

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, selectinload

from bots.credentials import secret
from bots.errors import ConfigError
from bots.intake.eml import normalise_message_id
from bots.intake.extract import luhn_valid, mask_secrets
from bots.models import Channel
from bots.notify_language import (
    DEFAULT_LANGUAGE,
    LanguageChoice,
    choose_language,
    format_amount,
    format_day,
    is_short,
    plain_name,
    template_languages,
)
from bots.queue import (
    Case,
    NotificationRow,
    NotificationState,
    RequestRow,
    case_ref,
    rowcount,
    utcnow,
)

OUTCOMES = ("refunded", "partial", "rejected", "escalated", "approved")
# A pending SMTP row younger than this may be in the hands of a run that is sending it
# right now: retrying it could send a second copy.
PENDING_RETRY_AFTER = timedelta(minutes=1)
_CHANNEL_NAME = re.compile(r"[a-z0-9_-]{1,40}")


class TemplateError(ConfigError):
    """A message template is missing or broken: the message names the file and the fix."""


class UnsafeMessage(Exception):
    """The rendered text would still show a card number: it is never sent."""


# -- settings -------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SmtpSettings(_Model):
    host: str
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password_secret: str | None = None  # the secret's name: $REFUND_BOTS_<NAME> or keyring
    from_address: str | None = None  # default: NotifySettings.from_address
    subject_prefix: str = "Re: "  # replies are answers to the customer's email
    timeout_seconds: float = Field(30.0, gt=0)


class NotifySettings(_Model):
    enabled: bool = True
    max_tries: int = Field(8, ge=1, le=100)  # then the message is given up (ops are told)
    retry_backoff_seconds: float = Field(60.0, ge=0)  # doubled each try, at most an hour
    smtp: SmtpSettings | None = None  # None: email goes to outbox/email.jsonl like the rest
    outbox_dir: Path = Path("runs/outbox")
    templates_dir: Path = Path("config/templates")
    from_address: str
    company_name: str = "Customer Service"
    # The top templates folder's language; a customer writing in another language with
    # its own subfolder (config/templates/de/) is answered in it (bots.notify_language).
    default_language: str = Field(DEFAULT_LANGUAGE, pattern=r"^[a-z]{2}$")


# -- the table --------------------------------------------------------------------------


class NotifyState(StrEnum):
    SENT = "sent"
    SKIPPED = "skipped"  # already sent, no address to answer, notifications disabled
    FAILED = "failed"  # not sent this time; retried on the next run
    GAVE_UP = "gave_up"  # failed max_tries times: ops must look (the run exits 3)


# -- results and contacts -----------------------------------------------------------------


@dataclass(frozen=True)
class NotificationResult:
    """What happened to one contact's message in this call."""

    channel: str
    to: str | None
    state: NotifyState
    kind: str
    request_ids: tuple[int, ...]
    notification_id: str | None = None
    error: str | None = None  # failed: why (the lead logs it)
    detail: str = ""  # skipped: why
    language: str | None = None  # the language the message is written in
    language_note: str = ""  # why it is not the customer's own language, when it is not


@dataclass(frozen=True)
class Contact:
    """The requests of one case that one message answers (same channel, same address)."""

    channel: str
    to: str | None
    name: str | None
    requests: tuple[RequestRow, ...]
    language: str | None = None  # the customer's language, from their latest contact

    @property
    def request_ids(self) -> tuple[int, ...]:
        return tuple(r.id for r in self.requests)

    @property
    def key_request_id(self) -> int:
        """The request a new notification row is keyed on: the latest contact."""
        return self.requests[-1].id

    @property
    def via_smtp(self) -> bool:
        return self.channel == Channel.EMAIL


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def contacts_of(case: Case) -> list[Contact]:
    """Group the case's requests by (channel, address), in the order they arrived."""
    groups: dict[tuple[str, str], list[RequestRow]] = {}
    for req in case.requests:
        to = recipient_of(req)
        key = (req.channel, to.lower()) if to else (req.channel, f"#request-{req.id}")
        groups.setdefault(key, []).append(req)
    out = []
    for (channel, _), reqs in groups.items():
        name = safe_name(next((r.customer_name for r in reversed(reqs) if r.customer_name),
                              None))
        language = next((r.language for r in reversed(reqs) if r.language), None)
        out.append(Contact(channel, recipient_of(reqs[-1]), name, tuple(reqs), language))
    return out


def recipient_of(req: RequestRow) -> str | None:
    """Where the answer goes: the reply address for email, else reply_to/handle/phone/email."""
    if req.channel == Channel.EMAIL:
        candidates: Iterable[str | None] = (req.reply_to, req.customer_email)
    else:
        candidates = (req.reply_to, req.customer_handle, req.customer_phone, req.customer_email)
    return next((c.strip() for c in candidates if c and c.strip()), None)


# -- never tell a stranger (issue #12) ------------------------------------------------------


@dataclass(frozen=True)
class OrderCustomer:
    """How the order system reaches the order's customer: the only addresses told facts."""

    email: str | None
    phone: str | None = None

    def owns(self, req: RequestRow) -> bool:
        """The contact came from the order's customer (same email, or same phone number)."""
        return bool(
            (self.email and req.customer_email
             and req.customer_email.strip().lower() == self.email.strip().lower())
            or same_phone(req.customer_phone, self.phone))

    def answer_to(self, req: RequestRow) -> str | None:
        """Where a reply to the owner goes: the order's address, never a foreign Reply-To."""
        email_ok = bool(self.email and req.customer_email and
                        req.customer_email.strip().lower() == self.email.strip().lower())
        if req.channel == Channel.EMAIL:
            return req.customer_email if email_ok else None
        usual = recipient_of(req)  # the channel's own recipient, when it is the order's
        if usual and ((self.email and usual.lower() == self.email.strip().lower())
                      or same_phone(usual, self.phone)):
            return usual
        if email_ok:
            return req.customer_email
        return req.customer_phone if same_phone(req.customer_phone, self.phone) else None


def same_phone(a: str | None, b: str | None) -> bool:
    """One number however written: the last 9 digits agree (as the order system searches)."""
    da, db = re.sub(r"\D", "", a or ""), re.sub(r"\D", "", b or "")
    return len(da) >= 9 and len(db) >= 9 and da[-9:] == db[-9:]


def stranger_recipient(req: RequestRow) -> str | None:
    """Where the neutral "received" note to someone who is not the order's customer goes.

    The sender's own address, never a Reply-To (which may point anywhere).
    """
    if req.channel == Channel.EMAIL:
        return req.customer_email or None
    return recipient_of(req)


RECEIVED = Rendered(
    "We have received your message ({case_ref})",
    "Hello,\n\nThank you for your message. We have received it and it will be checked "
    "(reference {case_ref}).\n\nFor your privacy we only share details about an order with "
    "the contact details on that order.\n\nKind regards,\n{company_name}\n")


def contacts_for(case: Case, customer: OrderCustomer) -> list[tuple[Contact, bool]]:
    """`contacts_of` when the order's customer is known: (contact, is the order's customer).

    A contact from the customer is answered at the order's address; anyone else only
    gets the neutral RECEIVED note, at their own sender address.
    """
    groups: dict[tuple[str, str, bool], list[RequestRow]] = {}
    for req in case.requests:
        owner = customer.owns(req)
        to = customer.answer_to(req) if owner else stranger_recipient(req)
        key = (req.channel, to.lower() if to else f"#request-{req.id}", owner)
        groups.setdefault(key, []).append(req)
    out = []
    for (channel, _, owner), reqs in groups.items():
        last = reqs[-1]
        to = customer.answer_to(last) if owner else stranger_recipient(last)
        name = safe_name(next((r.customer_name for r in reversed(reqs) if r.customer_name),
                              None)) if owner else None
        language = next((r.language for r in reversed(reqs) if r.language), None)
        out.append((Contact(channel, to, name, tuple(reqs), language), owner))
    return out


# -- end of "never tell a stranger" ----------------------------------------------------------


def thread_ids(contact: Contact) -> list[str]:
    """Message-IDs (with brackets) of the customer's emails, oldest first.

    `in_reply_to` holds the email's Message-ID; without it an email's source id is its
    Message-ID, unless intake had to fall back to a content hash (`sha256:`).
    """
    ids = []
    for req in contact.requests:
        raw = req.in_reply_to or (req.source_id if req.channel == Channel.EMAIL
                                  and not req.source_id.startswith("sha256:") else None)
        value = normalise_message_id(raw)
        if value and value.isascii() and "@" in value and f"<{value}>" not in ids:
            ids.append(f"<{value}>")
    return ids


# -- templates and safety -----------------------------------------------------------------


class Templates:
    """The editable message templates. No cache: an edit takes effect on the next message."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.folder)),
            autoescape=False,  # plain text, not HTML
            undefined=jinja2.StrictUndefined,  # a typo in a variable name is an error
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            cache_size=0,
        )

    def path(self, outcome: str, language: str | None = None) -> Path:
        """The template file; `language`: that language's subfolder (`de/refunded.txt.j2`)."""
        return self.folder / (language or "") / f"{outcome}.txt.j2"

    def languages(self) -> set[str]:
        return template_languages(self.folder)

    def render(self, outcome: str, variables: dict[str, str],
               language: str | None = None) -> Rendered:
        """Render, mask, check and split into subject and body."""
        path = self.path(outcome, language)
        name = f"{language}/{path.name}" if language else path.name
        try:
            text = self.env.get_template(name).render(**variables)
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(f"{path}: template not found: create it (first line "
                                f"'Subject: ...')") from exc
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}, line {exc.lineno}: template syntax error: "
                                f"{exc.message}") from exc
        except jinja2.TemplateError as exc:  # undefined variable, sandbox violation...
            raise TemplateError(f"{path}: template error: {exc}; variables available: "
                                f"{', '.join(sorted(variables))}") from exc
        return _split_subject(path, safe_text(text))


def _split_subject(path: Path, text: str) -> Rendered:
    lines = text.lstrip("\r\n").splitlines()
    first = lines[0] if lines else ""
    if not first.lower().startswith("subject:") or not first[8:].strip():
        raise TemplateError(f"{path}: the first line must be 'Subject: ...' (found "
                            f"{first[:60]!r})")
    body = "\n".join(lines[1:]).strip("\n") + "\n"
    return Rendered(" ".join(first[8:].split()), body)


_DIGITISH = re.compile(r"\d(?:[ .\-/_\u00a0\n]?\d)*")


def card_numbers_in(text: str) -> list[str]:
    """Luhn-valid 13-19 digit runs (digits in groups split by space . - /) in `text`.

    Stricter than the masking on purpose (any group size, more separators): it is the
    last check before a message leaves, not the mask itself.
    """
    found = []
    for m in _DIGITISH.finditer(text):
        groups = re.split(r"[ .\-/_\u00a0\n]", m.group(0))
        for i in range(len(groups)):
            digits = ""
            for group in groups[i:]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    found.append(digits)
    return found


def safe_text(text: str) -> str:
    """Mask card numbers and credentials; refuse text where one would still show."""
    masked = mask_secrets(text)
    if card_numbers_in(masked):
        raise UnsafeMessage("the message would show a card number: not sent (check the "
                            "template and the customer data it prints)")
    return masked


def template_variables(case: Case, contact: Contact, *, amount: Decimal | None,
                       currency: str | None, refund_number: str | None, reason: str,
                       card_last4: str | None, company_name: str,
                       language: str = DEFAULT_LANGUAGE) -> dict[str, str]:
    """Everything a template may print, as text ("" when unknown, so `{% if %}` works).

    `amount` and `money` (the amount with its currency) and `date` are written the way
    the message's `language` writes them; `short` is "yes" on chat, social and voice.
    """
    code = currency or case.currency or ""
    number, with_currency = format_amount(amount, code or None, language)
    return {
        "customer_name": contact.name or safe_name(case.customer_name) or "customer",
        "case_ref": case_ref(case.id),
        "order_number": case.order_number or "",
        "amount": number,
        "money": with_currency,
        "currency": code,
        "refund_number": refund_number or "",
        "reason": reason or "",
        "card_last4": last4(card_last4),
        "company_name": company_name,
        "date": format_day(utcnow().date(), language),
        "short": "yes" if is_short(contact.channel) else "",
        "language": language,
    }


def last4(value: str | None) -> str:
    """Only ever the last four digits, whatever the caller passed."""
    digits = re.sub(r"\D", "", value or "")
    return digits[-4:] if len(digits) >= 4 else ""


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def safe_name(name: str | None) -> str | None:
    """A customer name fit for a header or a greeting: one line, nothing card-like in it."""
    text = mask_secrets(_one_line(plain_name(name)))[:200]
    return text if text and not card_numbers_in(text) else None


SAMPLE = {"customer_name": "Ada Lovelace", "case_ref": "C-000001", "order_number": "ORD-100001",
          "amount": "12.50", "money": "€12.50", "currency": "EUR", "refund_number": "RF-000001",
          "reason": "Delivered within the 30-day window.", "card_last4": "4242",
          "company_name": "Example Ltd", "date": "3 December 2026", "short": "",
          "language": "en"}


# -- the notifier -----------------------------------------------------------------------------


class Notifier:
    """Records each case's outcome for each of its contacts, and sends it, once."""

    def __init__(self, settings: NotifySettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.templates = Templates(settings.templates_dir)

    def check_templates(self) -> list[Path]:
        """Render every outcome's template, in every language, long and short, with sample
        values (for `doctor`, start-up)."""
        languages: list[str | None] = [None, *sorted(self.templates.languages())]
        for language in languages:
            for outcome in OUTCOMES:
                for short in ("", "yes"):
                    self.templates.render(outcome, {**SAMPLE, "short": short}, language)
        return [self.templates.path(o, lang) for lang in languages for o in OUTCOMES]

    def choose(self, contact: Contact) -> LanguageChoice:
        """The language `contact` is answered in (bots.notify_language)."""
        return choose_language(contact.language, self.templates.languages(),
                               self.settings.default_language)

    # -- the outbox ---------------------------------------------------------------------------

    def record(self, s: Session, case: Case, *, outcome: str, amount: Decimal | None,
               currency: str | None, refund_number: str | None, reason: str,
               card_last4: str | None, run_id: str | None,
               customer: OrderCustomer | None = None,
               skip: Sequence[int] = ()) -> list[NotificationRow]:
        """Add a pending row per contact to `s`, the transaction that finishes the case.

        With the order's `customer` known, only their contacts are told facts (at the
        order's address); anyone else's row carries the neutral "received" note. Contacts
        with no address, contacts already told this outcome, and `skip` (key request ids)
        get no row. Nothing is rendered or sent here.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        if not self.settings.enabled:
            return []
        base = {"amount": None if amount is None else str(amount), "currency": currency,
                "refund_number": refund_number, "reason": reason,
                "card_last4": last4(card_last4),
                "customer": None if customer is None else [customer.email, customer.phone]}
        rows = []
        for contact, owner in _pairs(case, customer):
            if contact.to is None or contact.key_request_id in skip:
                continue
            facts = json.dumps({**base, "stranger": not owner})
            if _existing(s, contact, outcome) is not None:
                continue
            message_id = None
            if contact.via_smtp:
                # Not email.utils.make_msgid: its long random decimal run is Luhn-valid one
                # time in ten, and a reply must never carry anything that looks like a card.
                message_id = (f"<{case_ref(case.id)}.{secrets.token_urlsafe(12)}"
                              f"@{_domain(self._from_address())}>")
            now = utcnow()
            row = NotificationRow(
                notification_id=f"n-{uuid4().hex}", case_id=case.id,
                request_id=contact.key_request_id, kind=outcome, channel=contact.channel,
                recipient=contact.to, subject="", body="", facts=facts, message_id=message_id,
                state=NotificationState.PENDING, attempts=0, run_id=run_id, created_at=now,
                updated_at=now)
            s.add(row)
            rows.append(row)
        return rows

    def send_due(self, *, case_id: int | None = None, force: bool = False
                 ) -> list[NotificationResult]:
        """Send every pending or failed message that is due (one case's, or all).

        `force` ignores the backoff (a case whose messages are asked for explicitly).
        """
        now = utcnow()
        with Session(self.engine) as s:
            query = select(NotificationRow).where(NotificationRow.state.in_(
                (NotificationState.PENDING, NotificationState.FAILED)))
            if case_id is not None:
                query = query.where(NotificationRow.case_id == case_id)
            if not force:
                query = query.where(or_(NotificationRow.next_attempt_at.is_(None),
                                        NotificationRow.next_attempt_at <= now))
            rows = list(s.scalars(query.order_by(NotificationRow.id)))
        results = []
        cases: dict[int, Case] = {}
        for row in rows:
            case = cases.get(row.case_id) or self._case(row.case_id)
            if case is None:  # pragma: no cover - rows reference their case
                continue
            cases[row.case_id] = case
            contact, _ = _contact_of(case, row)
            if self._claim(row, contact):
                results.append(self._deliver(case, contact, row))
            else:
                results.append(self._result(
                    contact, row.kind, NotifyState.FAILED, row,
                    error="another run started sending this message less than "
                          f"{PENDING_RETRY_AFTER.seconds} s ago; retried later"))
        return results

    def notify_case(self, case: Case, *, outcome: str, amount: Decimal | None,
                    currency: str | None, refund_number: str | None, reason: str,
                    card_last4: str | None, run_id: str | None,
                    customer: OrderCustomer | None = None) -> list[NotificationResult]:
        """Record and send `outcome` to every contact of `case` now; one result per contact.

        Raises :class:`TemplateError` (a settings problem) before anything is recorded;
        a delivery failure never raises: it is a `failed` result, retried later.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        # With the order's customer known, only they are told facts; anyone else gets the
        # neutral RECEIVED note (issue #12).
        pairs = _pairs(case, customer)
        contacts = [c for c, _ in pairs]
        if not self.settings.enabled:
            return [self._result(c, outcome, NotifyState.SKIPPED,
                                 detail="notifications are disabled") for c in contacts]
        unsafe: dict[int, UnsafeMessage] = {}
        for contact, owner in pairs:  # render all first: a broken template records nothing
            if not owner:
                continue  # the neutral note: no facts to check
            choice = self.choose(contact)
            try:
                self.templates.render(outcome, template_variables(
                    case, contact, amount=amount, currency=currency,
                    refund_number=refund_number, reason=reason, card_last4=card_last4,
                    company_name=self.settings.company_name, language=choice.language),
                    choice.folder)
            except UnsafeMessage as exc:
                unsafe[contact.key_request_id] = exc
        with Session(self.engine) as s, s.begin():
            self.record(s, case, outcome=outcome, amount=amount, currency=currency,
                        refund_number=refund_number, reason=reason, card_last4=card_last4,
                        run_id=run_id, customer=customer, skip=list(unsafe))
        sent = {r.request_ids[-1] if r.request_ids else 0: r
                for r in self.send_due(case_id=case.id, force=True) if r.kind == outcome}
        return [self._answer(c, outcome, unsafe, sent) for c in contacts]

    def _answer(self, contact: Contact, outcome: str, unsafe: dict[int, UnsafeMessage],
                sent: dict[int, NotificationResult]) -> NotificationResult:
        if contact.to is None:
            return self._result(contact, outcome, NotifyState.SKIPPED,
                                detail=f"no address to answer on {contact.channel}")
        if contact.key_request_id in unsafe:
            return self._result(contact, outcome, NotifyState.FAILED,
                                error=str(unsafe[contact.key_request_id]))
        for request_id in reversed(contact.request_ids):
            if request_id in sent:
                return sent[request_id]
        with Session(self.engine) as s:
            row = _existing(s, contact, outcome)
        if row is not None and row.state == NotificationState.SENT and row.sent_at:
            return self._result(contact, outcome, NotifyState.SKIPPED, row,
                                detail=f"already sent {row.sent_at:%Y-%m-%d %H:%M} UTC")
        return self._result(contact, outcome, NotifyState.FAILED, row,
                            error=(row.last_error if row is not None else None)
                            or "not sent: waiting for a retry")

    def _received(self, case: Case) -> Rendered:
        """The neutral note for a sender who is not the order's customer: no order facts.

        Ops may word it in `received.txt.j2` (variables: case_ref, company_name only).
        """
        values = {"case_ref": case_ref(case.id), "company_name": self.settings.company_name}
        if self.templates.path("received").exists():
            return self.templates.render("received", values)
        return Rendered(RECEIVED.subject.format(**values), RECEIVED.body.format(**values))

    # -- one message --------------------------------------------------------------------------

    def _case(self, case_id: int) -> Case | None:
        with Session(self.engine) as s:
            return s.scalar(select(Case).options(selectinload(Case.requests))
                            .where(Case.id == case_id))

    def _claim(self, row: NotificationRow, contact: Contact) -> bool:
        """Take an unsent row for this run, atomically (conditional UPDATE on `attempts`).

        A new or failed row is taken at once; a `pending` one that a run already started
        (it died mid-send, or is sending now) at once for the outbox, after
        PENDING_RETRY_AFTER for SMTP.
        """
        now = utcnow()
        if (row.state == NotificationState.PENDING and row.attempts > 0 and contact.via_smtp
                and self.settings.smtp is not None
                and now - row.updated_at < PENDING_RETRY_AFTER):
            return False
        with Session(self.engine) as s, s.begin():
            won = rowcount(s.execute(
                update(NotificationRow)
                .where(NotificationRow.id == row.id, NotificationRow.attempts == row.attempts,
                       NotificationRow.state.in_((NotificationState.PENDING,
                                                  NotificationState.FAILED)))
                .values(state=NotificationState.PENDING, attempts=row.attempts + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            ))
        row.attempts += 1
        return won == 1

    def _render(self, case: Case, contact: Contact, row: NotificationRow,
                choice: LanguageChoice) -> Rendered:
        facts = json.loads(row.facts or "{}")
        amount = facts.get("amount")
        if facts.get("stranger"):
            rendered = self._received(case)
            row.subject, row.body = rendered.subject, rendered.body
            return rendered
        rendered = self.templates.render(row.kind, template_variables(
            case, contact, amount=Decimal(amount) if amount is not None else None,
            currency=facts.get("currency"), refund_number=facts.get("refund_number"),
            reason=facts.get("reason") or "", card_last4=facts.get("card_last4"),
            company_name=self.settings.company_name, language=choice.language),
            choice.folder)
        subject = rendered.subject
        if contact.via_smtp and self.settings.smtp is not None:
            subject = self.settings.smtp.subject_prefix + subject
        row.subject, row.body = subject, rendered.body
        return rendered

    def _deliver(self, case: Case, contact: Contact, row: NotificationRow) -> NotificationResult:
        choice = self.choose(contact)
        try:
            self._render(case, contact, row, choice)
            if contact.via_smtp and self.settings.smtp is not None:
                self._send_smtp(self._email(case, contact, row))
            else:
                self._append_outbox(case, contact, row, choice)
        except Exception as exc:  # noqa: BLE001 - any delivery failure is retried next run
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            gave_up = row.attempts >= self.settings.max_tries
            self._mark(row, NotificationState.GAVE_UP if gave_up else NotificationState.FAILED,
                       error)
            return self._result(contact, row.kind,
                                NotifyState.GAVE_UP if gave_up else NotifyState.FAILED, row,
                                error=error)
        self._mark(row, NotificationState.SENT, None)
        return replace(self._result(contact, row.kind, NotifyState.SENT, row),
                       language=choice.language, language_note=choice.note)

    def _mark(self, row: NotificationRow, state: str, error: str | None) -> None:
        now = utcnow()
        values: dict[str, object] = {"state": state, "updated_at": now, "last_error": error,
                                     "subject": row.subject, "body": row.body}
        if state == NotificationState.SENT:
            values["sent_at"] = now
        if state == NotificationState.FAILED:
            delay = min(3600.0, self.settings.retry_backoff_seconds * 2 ** (row.attempts - 1))
            values["next_attempt_at"] = now + timedelta(seconds=delay)
        with Session(self.engine) as s, s.begin():
            s.execute(update(NotificationRow).where(NotificationRow.id == row.id)
                      .values(**values).execution_options(synchronize_session=False))

    # -- email ---------------------------------------------------------------------------------

    def _from_address(self) -> str:
        smtp = self.settings.smtp
        return (smtp.from_address if smtp and smtp.from_address else self.settings.from_address)

    def _email(self, case: Case, contact: Contact, row: NotificationRow) -> EmailMessage:
        """The reply, threaded under the customer's email(s), from the stored row."""
        msg = EmailMessage()
        msg["From"] = Address(display_name=self.settings.company_name,
                              addr_spec=self._from_address())
        msg["To"] = Address(display_name=contact.name or "", addr_spec=row.recipient)
        msg["Subject"] = row.subject
        msg["Date"] = format_datetime(utcnow())
        msg["Message-ID"] = row.message_id
        refs = thread_ids(contact)
        if refs:
            msg["In-Reply-To"] = refs[-1]
            msg["References"] = " ".join(refs)
        msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: no auto-reply loops
        msg["X-Refund-Case"] = case_ref(case.id)
        msg.set_content(row.body)
        return msg

    def _send_smtp(self, msg: EmailMessage) -> None:
        smtp = self.settings.smtp
        assert smtp is not None
        send_smtp(smtp, msg, "smtp")

    # -- outbox --------------------------------------------------------------------------------

    def outbox_path(self, channel: str) -> Path:
        if not _CHANNEL_NAME.fullmatch(channel):
            raise ValueError(f"channel {channel!r} cannot name an outbox file")
        return self.settings.outbox_dir / f"{channel}.jsonl"

    def _append_outbox(self, case: Case, contact: Contact, row: NotificationRow,
                       choice: LanguageChoice | None = None) -> None:
        """One JSON line, appended with a single write, flushed and fsynced.

        A retried row writes the same line again (same notification id, same
        created_at): the channel's tool drops lines whose id it has already sent.
        """
        line: dict[str, str | int | list[str] | None] = {
            "notification_id": row.notification_id,
            "case_ref": case_ref(case.id),
            "kind": row.kind,
            "channel": contact.channel,
            "to": row.recipient,
            "customer_name": contact.name,
            "subject": row.subject,
            "body": row.body,
            "created_at": row.created_at.isoformat(),
            "request_id": row.request_id,
            "in_reply_to": contact.requests[-1].source_id,
        }
        if choice is not None:  # which language, and why not the customer's when it is not
            line["language"] = choice.language
            if choice.note:
                line["language_note"] = choice.note
        if contact.via_smtp:  # email without SMTP: the mail tool threads with these
            line["message_id"] = row.message_id
            line["references"] = thread_ids(contact)
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        path = self.outbox_path(contact.channel)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def _result(contact: Contact, kind: str, state: NotifyState,
                row: NotificationRow | None = None, *, error: str | None = None,
                detail: str = "") -> NotificationResult:
        return NotificationResult(contact.channel, contact.to, state, kind, contact.request_ids,
                                  row.notification_id if row is not None else None, error,
                                  detail)


def send_smtp(smtp: SmtpSettings, msg: EmailMessage, where: str) -> None:
    """Send `msg` as it is, over one connection of its own (customer answers and alerts).

    Stdlib smtplib, chosen over rpaframework's ImapSmtp: its `send_message` needs
    `authorize_smtp` (a login) first, which an unauthenticated relay does not take, and it
    builds its own message, so the threading headers and our Message-ID would have to be
    forced through it; smtplib sends the exact EmailMessage built here. `where` names the
    settings block in errors ("smtp", "alerts.smtp").
    """
    # Loading the CA bundle costs tens of ms: only when TLS is used.
    context = ssl.create_default_context() if smtp.security != "none" else None
    conn: smtplib.SMTP
    if smtp.security == "ssl":
        conn = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds,
                                context=context)
    else:
        conn = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    with conn:
        if smtp.security == "starttls":
            conn.starttls(context=context)
        if smtp.username:
            if not smtp.password_secret:
                raise ConfigError(f"{where}.username is set but {where}.password_secret is "
                                  "not")
            conn.login(smtp.username, secret(smtp.password_secret))
        conn.send_message(msg)


def _existing(s: Session, contact: Contact, kind: str) -> NotificationRow | None:
    """A row for this contact and kind, keyed on any of the contact's requests."""
    return s.scalars(
        select(NotificationRow)
        .where(NotificationRow.kind == kind, NotificationRow.request_id.in_(contact.request_ids))
        .order_by(NotificationRow.id)
    ).first()


def _pairs(case: Case, customer: OrderCustomer | None) -> list[tuple[Contact, bool]]:
    """The case's contacts, each with whether it is the order's customer (all, if unknown)."""
    if customer is None:
        return [(c, True) for c in contacts_of(case)]
    return contacts_for(case, customer)


def _contact_of(case: Case, row: NotificationRow) -> tuple[Contact, bool]:
    """The contact a row answers (grouped as when it was recorded), and if it is the owner."""
    facts = json.loads(row.facts or "{}")
    who = facts.get("customer")
    customer = OrderCustomer(who[0], who[1]) if isinstance(who, list) and len(who) == 2 else None
    for contact, owner in _pairs(case, customer):
        if row.request_id in contact.request_ids:
            return contact, owner
    return Contact(row.channel, row.recipient, None, ()), False  # pragma: no cover


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def sent_notifications(engine: Engine, case_id: int) -> Sequence[NotificationRow]:
    """Every notification row of a case (for `cases show` and tests)."""
    with Session(engine) as s:
        return list(s.scalars(select(NotificationRow).where(NotificationRow.case_id == case_id)
                              .order_by(NotificationRow.id)))
