"""Fraud and abuse signals: scored, explained, and they escalate, never reject.

A signal is a fact that makes a refund worth a human look (many refunds for one
customer, a spoofed sender, a "not received" claim on a delivered order...). Each
one that fires carries a score and a sentence an ops agent can check; when the
scores add up to `escalate_at_score` the case goes to a human. Signals never
reject on their own: they are evidence of risk, not proof of abuse, and a wrong
automatic rejection of an honest customer costs more than a human's minute.

Pure logic (dataclasses in, dataclasses out; no browser, no database) so every
rule is testable alone. The processor gathers the facts into a `SignalContext`,
calls `assess`, and folds the result into the policy decision with
`escalate_decision`.

Email authentication (RFC 8601 `Authentication-Results`) follows these rules:

1. Only headers whose authserv-id is in `trusted_authserv_ids` count. Anybody can
   write an `Authentication-Results` header into the message they send, so a
   header from any other authserv-id is ignored, whatever it says.
2. Headers are read top to bottom, newest first (every mail server prepends its
   own). The trusted headers that count are the first block of them: reading
   down, it ends at the first untrusted header after it. A header claiming our
   authserv-id further down was in the message before a foreign server handled
   it, so our server did not write it: it is ignored. (RFC 8601 section 5 also
   asks our border server to delete such forgeries; this is the second belt.)
3. DMARC is the verdict when our server gives one: `dmarc=fail` fires the signal,
   and a fail wins over a pass (a forgery next to ours can only add a fail, it
   cannot hide one). `dmarc=pass` outweighs SPF and DKIM failures: forwarding
   breaks SPF and mailing lists break DKIM signatures, and DMARC passes exactly
   when one aligned method still vouches for the sender's domain.
4. Without a DMARC verdict (none, temperror, permerror or absent), the signal
   fires when SPF (fail or softfail) or DKIM (fail) failed and neither passed:
   one method that passes is enough, as DMARC itself would judge it.
5. No trusted header at all (another channel, or mail that did not go through our
   server) is no evidence either way: the signal does not fire.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bots.models import ChargeFacts, Decision, OrderFacts, Outcome, money

# -- settings ------------------------------------------------------------------------------


class SignalsError(Exception):
    """The signals file is invalid: the message says where."""


class SignalScores(BaseModel):
    """Points each signal adds when it fires (0 switches a signal off)."""

    model_config = ConfigDict(extra="forbid")

    customer_velocity: int = Field(30, ge=0)
    store_velocity: int = Field(50, ge=0)
    refund_ratio: int = Field(30, ge=0)
    amount_vs_usual: int = Field(20, ge=0)
    sender_mismatch: int = Field(50, ge=0)
    email_auth: int = Field(50, ge=0)
    not_received_but_delivered: int = Field(50, ge=0)
    early_claim: int = Field(20, ge=0)
    reply_to_elsewhere: int = Field(20, ge=0)  # an email's Reply-To is not its From


class SignalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_velocity: int = Field(2, ge=1, description="max refunds per customer in the window")
    customer_window_days: int = Field(30, ge=1)
    store_velocity: int = Field(40, ge=1, description="max refunds store-wide in the window")
    store_window_hours: int = Field(24, ge=1)
    max_refund_ratio: Decimal = Field(Decimal("0.5"), gt=0, description="refunds / orders")
    ratio_min_orders: int = Field(3, ge=1, description="orders needed before the ratio counts")
    amount_vs_usual_factor: Decimal = Field(Decimal("3"), gt=0)
    usual_min_orders: int = Field(3, ge=1, description="orders needed to know what is usual")
    early_claim_days: int = Field(2, ge=0, description="claims sooner after the order are early")
    trusted_authserv_ids: list[str] = []
    escalate_at_score: int = Field(50, ge=1)
    scores: SignalScores = SignalScores()

    @field_validator("trusted_authserv_ids")
    @classmethod
    def _plain_ids(cls, ids: list[str]) -> list[str]:
        """authserv-ids are compared case-insensitively, like the domain names they are."""
        cleaned = []
        for raw in ids:
            value = raw.strip().lower()
            if not value or re.search(r"[\s;()\"=]", value):
                raise ValueError(f"{raw!r} is not an authserv-id (a mail server name such "
                                 f"as mx.example.com, without spaces, ';', '(' or '=')")
            cleaned.append(value)
        return cleaned


def load_signals(path: Path) -> SignalSettings:
    """The thresholds from YAML, with errors that name the file and the field."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise SignalsError(f"signals file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise SignalsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SignalsError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return SignalSettings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise SignalsError(f"{path}: invalid signals settings:\n  " + "\n  ".join(lines)) from exc


def customer_window_start(settings: SignalSettings, now: datetime) -> datetime:
    """Oldest refund time that counts for customer velocity (for the caller's query)."""
    return _utc(now) - timedelta(days=settings.customer_window_days)


def store_window_start(settings: SignalSettings, now: datetime) -> datetime:
    """Oldest refund time that counts for store-wide velocity (for the caller's query)."""
    return _utc(now) - timedelta(hours=settings.store_window_hours)


# -- inputs and outputs --------------------------------------------------------------------


class _ContactLike(Protocol):
    @property
    def channel(self) -> str: ...
    @property
    def customer_email(self) -> str | None: ...
    @property
    def auth_results(self) -> str | None: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def reason_category(self) -> str: ...


@dataclass(frozen=True)
class Contact:
    """What the signals need from one customer contact of the case."""

    channel: str
    customer_email: str | None
    auth_results: str | None
    received_at: datetime
    reason_category: str = "other"
    reply_to: str | None = None

    @classmethod
    def of(cls, request: _ContactLike) -> Contact:
        """From a `RefundRequest` or a queue `RequestRow` (same attribute names)."""
        return cls(request.channel, request.customer_email, request.auth_results,
                   request.received_at, request.reason_category or "other",
                   getattr(request, "reply_to", None))


@dataclass(frozen=True)
class SignalContext:
    """Everything the signals look at for one case, gathered by the processor.

    `customer_refunds` is the customer's whole refund history known to the bot
    (time, amount), excluding this case: velocity filters it to its window, the
    ratio uses all of it. `store_refunds_in_window` counts refunds store-wide since
    `store_window_start`, excluding this one. `customer_order_count` is None and
    `customer_order_totals` empty when unknown: those signals then stay silent.
    """

    order: OrderFacts
    charge: ChargeFacts
    contacts: tuple[Contact, ...]
    amount: Decimal
    now: datetime
    customer_refunds: list[tuple[datetime, Decimal]] = field(default_factory=list)
    store_refunds_in_window: int = 0
    customer_order_count: int | None = None
    customer_order_totals: list[Decimal] = field(default_factory=list)


@dataclass(frozen=True)
class Signal:
    name: str
    score: int
    explanation: str


@dataclass(frozen=True)
class Assessment:
    signals: tuple[Signal, ...]
    score: int
    escalate: bool
    summary: str

    @property
    def explanations(self) -> tuple[str, ...]:
        return tuple(s.explanation for s in self.signals)


# -- assessment ----------------------------------------------------------------------------


def assess(settings: SignalSettings, ctx: SignalContext) -> Assessment:
    """Run every signal; escalate when their scores reach the threshold."""
    fired = tuple(s for check in _CHECKS if (s := check(settings, ctx)) is not None)
    score = sum(s.score for s in fired)
    escalate = score >= settings.escalate_at_score
    return Assessment(fired, score, escalate, _summary(fired, score, escalate,
                                                       settings.escalate_at_score))


def escalate_decision(decision: Decision, assessment: Assessment) -> Decision:
    """Fold an assessment into a policy decision: a payment becomes an escalation.

    A rejection stays a rejection (signals never reject, and never turn a policy
    rejection into a payment); an escalation gains the signals' reasons so the
    human sees them; below the threshold the decision is unchanged.
    """
    if not assessment.escalate or decision.outcome is Outcome.REJECT:
        return decision
    return Decision(Outcome.ESCALATE, decision.amount,
                    (*decision.reasons, assessment.summary, *assessment.explanations))


def _summary(fired: Sequence[Signal], score: int, escalate: bool, threshold: int) -> str:
    if not fired:
        return "No fraud or abuse signal fired."
    names = ", ".join(s.name.replace("_", " ") for s in fired)
    if escalate:
        return (f"Fraud signals scored {score} (escalation at {threshold}): {names}; "
                f"a human decides.")
    return f"Fraud signals scored {score}, below the escalation threshold of {threshold}: {names}."


def _customer_velocity(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """Many refunds for one customer in a short time: serial refunders, account takeover."""
    start = customer_window_start(settings, ctx.now)
    recent = sorted(_utc(when) for when, _ in ctx.customer_refunds if _utc(when) >= start)
    count = len(recent) + 1  # with this one
    if count <= settings.customer_velocity:
        return None
    dates = ", ".join(f"{w:%Y-%m-%d}" for w in recent)
    return Signal("customer_velocity", settings.scores.customer_velocity,
                  f"{count} refunds for this customer in the last "
                  f"{settings.customer_window_days} days counting this one "
                  f"(limit {settings.customer_velocity}); earlier ones on {dates}.")


def _store_velocity(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """A store-wide surge: a coordinated abuse wave, or a bot or policy gone wrong."""
    count = ctx.store_refunds_in_window + 1
    if count <= settings.store_velocity:
        return None
    return Signal("store_velocity", settings.scores.store_velocity,
                  f"{count} refunds store-wide in the last {settings.store_window_hours} hours "
                  f"counting this one (limit {settings.store_velocity}): check for an abuse "
                  f"wave or a misbehaving bot before paying more.")


def _refund_ratio(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """Customers who refund most of what they buy; needs enough orders to mean anything."""
    orders = ctx.customer_order_count
    if orders is None or orders < settings.ratio_min_orders:
        return None
    refunds = len(ctx.customer_refunds) + 1
    ratio = Decimal(refunds) / Decimal(orders)
    if ratio <= settings.max_refund_ratio:
        return None
    return Signal("refund_ratio", settings.scores.refund_ratio,
                  f"This would be refund {refunds} on {orders} orders for this customer "
                  f"({_pct(ratio)}, limit {_pct(settings.max_refund_ratio)}).")


def _amount_vs_usual(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """A refund far above what this customer usually spends: a stolen account or card."""
    totals = ctx.customer_order_totals
    if len(totals) < settings.usual_min_orders:
        return None
    usual = money(statistics.median(totals))
    limit = settings.amount_vs_usual_factor * usual
    if ctx.amount <= limit:
        return None
    times = f"{(ctx.amount / usual).quantize(Decimal('0.1'))}× " if usual > 0 else "above "
    return Signal("amount_vs_usual", settings.scores.amount_vs_usual,
                  f"Refund of {money(ctx.amount)} {ctx.order.currency} is {times}this "
                  f"customer's usual order value (median {usual} over {len(totals)} orders; "
                  f"limit {settings.amount_vs_usual_factor}×).")


def _sender_mismatch(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """Someone other than the buyer asks for the money: impersonation or a mix-up."""
    owner = ctx.order.email.strip().lower()
    others = sorted({f"{c.customer_email.strip().lower()} ({c.channel})" for c in ctx.contacts
                     if c.customer_email and c.customer_email.strip().lower() != owner})
    if not others:
        return None
    return Signal("sender_mismatch", settings.scores.sender_mismatch,
                  f"Request from {', '.join(others)} but order {ctx.order.order_number} "
                  f"belongs to {ctx.order.email}.")


def _reply_to_elsewhere(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """An email asking that answers go to another address than its sender's (issue #12).

    The bot never answers there (see `bots.notify.OrderCustomer`); the signal tells the
    human that someone may be trying to read the customer's answers.
    """
    others = sorted({f"{c.customer_email} -> {c.reply_to}" for c in ctx.contacts
                     if c.channel == "email" and c.reply_to and c.customer_email
                     and c.reply_to.strip().lower() != c.customer_email.strip().lower()})
    if not others:
        return None
    return Signal("reply_to_elsewhere", settings.scores.reply_to_elsewhere,
                  f"Reply-To points away from the sender ({'; '.join(others)}): answers go "
                  f"only to the order's address.")


def _email_auth(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """A sender address our own mail server could not authenticate may be forged."""
    trusted = frozenset(settings.trusted_authserv_ids)
    failures = [f"{c.customer_email or 'unknown sender'}: {why}" for c in ctx.contacts
                if c.auth_results and (why := auth_failure(c.auth_results, trusted))]
    if not failures:
        return None
    return Signal("email_auth", settings.scores.email_auth,
                  f"Email authentication failed ({'; '.join(failures)}): the sender address "
                  f"may be forged.")


def _not_received_but_delivered(settings: SignalSettings,
                                ctx: SignalContext) -> Signal | None:
    """A "never arrived" claim on an order the carrier marked delivered.

    Honest customers hit this too (porch theft, a neighbour took it in), which is
    why a human with the carrier's proof of delivery decides rather than the bot.
    """
    if not _shows_delivered(ctx.order, ctx.now):
        return None
    claims = [c for c in ctx.contacts if c.reason_category == "not_received"]
    if not claims:
        return None
    claimed = min(_utc(c.received_at) for c in claims).date()
    delivered = ctx.order.delivery_date
    when = f" on {delivered:%Y-%m-%d}" if delivered else ""
    if delivered is not None and delivered > claimed:
        note = " (after the claim: it may have arrived since)"
    else:
        note = " (before the claim)" if delivered is not None else ""
    return Signal("not_received_but_delivered", settings.scores.not_received_but_delivered,
                  f"Customer says the order never arrived (claimed {claimed:%Y-%m-%d}) but the "
                  f"order system shows it delivered{when}{note}.")


def _early_claim(settings: SignalSettings, ctx: SignalContext) -> Signal | None:
    """A claim before the goods can have been seen: before delivery, or right after ordering."""
    if not ctx.contacts:
        return None
    claimed = min(_utc(c.received_at) for c in ctx.contacts).date()
    order = ctx.order
    if order.delivery_date is not None and claimed < order.delivery_date:
        return Signal("early_claim", settings.scores.early_claim,
                      f"Claim made {claimed:%Y-%m-%d}, before the recorded delivery on "
                      f"{order.delivery_date:%Y-%m-%d}.")
    age = (claimed - order.order_date).days
    if age < 0:
        return Signal("early_claim", settings.scores.early_claim,
                      f"Claim made {claimed:%Y-%m-%d}, before the order was placed on "
                      f"{order.order_date:%Y-%m-%d}.")
    if age < settings.early_claim_days:
        return Signal("early_claim", settings.scores.early_claim,
                      f"Claim made {age} day(s) after the order of {order.order_date:%Y-%m-%d} "
                      f"(early if under {settings.early_claim_days} days).")
    return None


_CHECKS = (_customer_velocity, _store_velocity, _refund_ratio, _amount_vs_usual,
           _sender_mismatch, _reply_to_elsewhere, _email_auth, _not_received_but_delivered,
           _early_claim)


def _shows_delivered(order: OrderFacts, now: datetime) -> bool:
    if order.status.lower() == "delivered":
        return True
    return order.delivery_date is not None and order.delivery_date <= _utc(now).date()


def _utc(when: datetime) -> datetime:
    """Naive datetimes are UTC (the queue's convention), so they compare with aware ones."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _pct(ratio: Decimal) -> str:
    return f"{(ratio * 100).quantize(Decimal('1'))}%"


# -- RFC 8601 Authentication-Results -------------------------------------------------------

SPF_FAIL = frozenset({"fail", "softfail"})
DKIM_FAIL = frozenset({"fail"})


@dataclass(frozen=True)
class AuthResult:
    """One method's result in an Authentication-Results header, e.g. dmarc=fail."""

    method: str  # lower case: spf, dkim, dmarc...
    result: str  # lower case: pass, fail, softfail, none...
    properties: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class AuthHeader:
    authserv_id: str  # lower case
    results: tuple[AuthResult, ...]


def parse_auth_results(value: str) -> AuthHeader | None:
    """One header value; None when it has no authserv-id. Never raises.

    Handles comments in parentheses (nested, anywhere), quoted strings, a version
    after the authserv-id or a method, `none`, and any letter case.
    """
    parts = _split_semicolons(_strip_comments(value))
    if not parts:
        return None
    head = parts[0].split()
    if not head:
        return None
    authserv_id = _unquote(head[0]).lower()
    results = tuple(r for part in parts[1:] if (r := _parse_resinfo(part)) is not None)
    return AuthHeader(authserv_id, results)


def trusted_auth_headers(raw: str, trusted: Iterable[str]) -> list[AuthHeader]:
    """The headers our own server wrote: the first block of trusted ones, top down."""
    ids = {t.lower() for t in trusted}
    block: list[AuthHeader] = []
    for line in raw.splitlines():
        header = parse_auth_results(line)
        if header is None:
            continue
        if header.authserv_id in ids:
            block.append(header)
        elif block:
            break  # trusted-looking headers below a foreign one were not written by us
    return block


def auth_failure(raw: str, trusted: Iterable[str]) -> str | None:
    """Why the trusted headers show a failed authentication, or None (module rules 1-5)."""
    results = [r for h in trusted_auth_headers(raw, trusted) for r in h.results]
    by_method: dict[str, set[str]] = {}
    for r in results:
        by_method.setdefault(r.method, set()).add(r.result)
    dmarc = by_method.get("dmarc", set())
    if "fail" in dmarc:
        domain = _prop(results, "dmarc", "header.from")
        return f"DMARC fail{f' for {domain}' if domain else ''}"
    if "pass" in dmarc:
        return None
    spf, dkim = by_method.get("spf", set()), by_method.get("dkim", set())
    if "pass" in spf or "pass" in dkim:
        return None
    failed = []
    if spf & SPF_FAIL:
        mailfrom = _prop(results, "spf", "smtp.mailfrom")
        failed.append(f"SPF {'/'.join(sorted(spf & SPF_FAIL))}"
                      f"{f' for {mailfrom}' if mailfrom else ''}")
    if dkim & DKIM_FAIL:
        domain = _prop(results, "dkim", "header.d")
        failed.append(f"DKIM fail{f' for {domain}' if domain else ''}")
    return ", ".join(failed) or None


_RESINFO = re.compile(r"\s*([a-z0-9_.-]+)\s*(?:/\s*\d+\s*)?=\s*([a-z0-9_-]+)(.*)", re.I | re.S)
_PROPERTY = re.compile(r"([a-z0-9_-]+\.[a-z0-9_.-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|\S+)", re.I)


def _parse_resinfo(part: str) -> AuthResult | None:
    match = _RESINFO.match(part)
    if match is None:
        return None  # "none", or something we cannot read: no result claimed
    method, result, rest = match.groups()
    props = {k.lower(): _unquote(v) for k, v in _PROPERTY.findall(rest)}
    return AuthResult(method.lower(), result.lower(), props)


def _prop(results: Sequence[AuthResult], method: str, name: str) -> str | None:
    return next((r.properties[name] for r in results
                 if r.method == method and r.result != "pass" and name in r.properties), None)


def _chars(value: str) -> Iterator[tuple[str, bool, int]]:
    """(character, inside a quoted string, comment depth) with escapes resolved as pairs."""
    quoted, depth, escaped = False, 0, False
    for ch in value:
        if escaped:
            escaped = False
            yield ch, quoted, depth
            continue
        if ch == "\\" and (quoted or depth):
            escaped = True
            yield ch, quoted, depth
            continue
        if depth:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            yield ch, quoted, max(depth, 1) if ch == ")" else depth
            continue
        if ch == '"':
            quoted = not quoted
            yield ch, True, 0
            continue
        if ch == "(" and not quoted:
            depth = 1
        yield ch, quoted, depth


def _strip_comments(value: str) -> str:
    """Comments become a space (they separate tokens, RFC 5322 CFWS); quotes stay."""
    return "".join(" " if depth else ch for ch, _, depth in _chars(value))


def _split_semicolons(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    for ch, quoted, _ in _chars(value):
        if ch == ";" and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p] if parts[0] else []


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
