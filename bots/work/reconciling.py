"""The report stage's reconciliation: read the portal's listing for whole business days,
match it against every intent the queue knows, and keep the break register up to date.

The listing is read one business day at a time (each day one export that fits the
browser's timeout), each day retried before it is given up; only the ledger entries a
day that could not be read might hide are then "unverified". The period runs from the
earliest day this run's intents were opened to today, so a refund landing after the
run's window (a second payment of the same intent, made by a person or another runner)
is still seen when the run's report is written again.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from playwright.async_api import Error as PlaywrightError

from bots.errors import SystemException
from bots.legacy.session import BotSession
from bots.models import ChargeFacts, PortalRefund
from bots.queue import BreakRow, Queue, Sighting, utcnow
from bots.queue.breaks import BreakUpdate, LedgerFacts
from bots.queue.schema import CaseState, IntentState
from bots.reports.reconcile import (
    Approval,
    ChargeBalance,
    LedgerEntry,
    ReconRow,
    ReconStatus,
    reconcile,
    reference_words,
    unread_day,
)
from bots.reports.threeway import (
    OrderNotes,
    OrderNotesSettings,
    ThreeWay,
    check_notes,
    orders_to_read,
    refunds_to_check,
)
from bots.runs import RunFolder

LISTING_ATTEMPTS = 3  # per business day, before the day is reported unread
MAX_DAYS = 62  # a run whose intents go back further reconciles the last MAX_DAYS days
MAX_CHARGES = 50  # charge pages read to check for over-refunds, per report


@dataclass
class Reconciliation:
    rows: list[ReconRow]
    first_day: date
    last_day: date
    unread_days: list[date]
    update: BreakUpdate
    live: list[BreakRow]  # every open / investigating break after this reconciliation
    listing_size: int = 0
    notes: list[str] = field(default_factory=list)
    order_notes: str = ""  # what the three-way step read, in words (the Summary says it)

    def settled(self, row: ReconRow) -> BreakRow | None:
        """The closed break a problem row belongs to (a person settled it), else None."""
        if row.status is ReconStatus.MATCHED:
            return None
        found = self.update.states.get(row.break_key)
        return found if found is not None and not found.is_live else None

    @property
    def problems(self) -> int:
        """Breaks still open after this reconciliation (this run's and every earlier one's)."""
        return len(self.live)


async def reconcile_run(queue: Queue, run: RunFolder, session: BotSession,
                        finished_at: datetime) -> Reconciliation:
    this_run = queue.intents_for_run(run.run_id)
    now = utcnow()  # before the listing is read: a refund settled later may not be in it
    first = min([run.started_at, *(i.created_at for i in this_run)]).astimezone(UTC).date()
    last = max(finished_at, now).astimezone(UTC).date()
    first = max(first, last - timedelta(days=MAX_DAYS - 1))
    listing, unread, notes = await _read_listing(session, run, first, last)
    ledger = queue.reconciliation_ledger(
        since=datetime.combine(first, time(), UTC), run_id=run.run_id,
        keys=_keys(listing), refund_numbers=[p.refund_id for p in listing])
    charges = await _charges_to_check(session, run, listing)
    rows = reconcile([_entry(f, now) for f in ledger], listing, approvals=_approvals(ledger),
                     charges=charges, unread_days=unread)
    rows = [unread_day(d, "retried") for d in unread] + rows  # never "OK" over a blind spot
    notes_agreed: list[str] = []
    wanted = session.settings.reconcile.order_notes
    said = "not checked: reconcile.order_notes.enabled is false"
    if wanted.enabled:
        three = await _three_way(queue, session, run, rows, ledger, first, wanted, unread,
                                 listed_from=now)
        rows += three.rows
        notes_agreed = three.agreed
        said = (f"{three.orders_read} order(s) read, {three.orders_unread} not read "
                "(their refunds: not verified)")
        run.log.info("reconciliation: order notes of {} order(s) read, {} not read",
                     three.orders_read, three.orders_unread)
    sightings = [_sighting(r) for r in rows if r.is_problem]
    matched = [r.break_key for r in rows if r.status is ReconStatus.MATCHED] + notes_agreed
    # In flight: neither a break nor settled; a break opened about it earlier stays open.
    problems = {x.key for x in sightings} | {r.break_key for r in rows
                                             if r.status is ReconStatus.IN_FLIGHT}
    # An intent with no problem row agrees with the portal (matched, or verified absent):
    # a break an earlier report opened about it is over.
    matched += [k for k in (f"intent:{f.intent.key}" for f in ledger) if k not in problems]
    read = [d for d in _days(first, last) if d not in unread]
    matched += [unread_day(d, "").break_key for d in read]  # a day read now closes its break
    update = queue.record_breaks(run.run_id, sightings, matched)
    return Reconciliation(rows, first, last, unread, update, queue.live_breaks(),
                          len(listing), notes, said)


async def _read_listing(session: BotSession, run: RunFolder, first: date, last: date
                        ) -> tuple[list[PortalRefund], list[date], list[str]]:
    days = _days(first, last)
    try:
        worker = await session.worker("report")
    except (SystemException, PlaywrightError) as exc:
        run.log.error("reconciliation: no browser context for the portal: {}", exc)
        return [], days, [f"the payment portal could not be opened: {exc}"]
    listing: list[PortalRefund] = []
    unread: list[date] = []
    notes: list[str] = []
    try:
        # Logged in first: an export fetched without a session answers the login page,
        # which some portals serve with HTTP 200 under their own address.
        try:
            await worker.payments.login()
        except (SystemException, PlaywrightError) as exc:
            run.log.error("reconciliation: the payment portal's login failed: {}", exc)
            return [], days, [f"the payment portal could not be logged into: {exc}"]
        for day in days:
            got = await _with_retries(lambda d=day: worker.payments.list_refunds(d, d))  # type: ignore[misc]
            if isinstance(got, str):
                run.log.error("reconciliation: the portal's listing for {} failed: {}", day, got)
                unread.append(day)
                notes.append(f"listing for {day} could not be read after {LISTING_ATTEMPTS} "
                             f"attempts: {got}")
            else:
                listing += got
    finally:
        await worker.context.close()
    return listing, unread, notes


async def _three_way(queue: Queue, session: BotSession, run: RunFolder, rows: list[ReconRow],
                     ledger: list[LedgerFacts], first: date, wanted: OrderNotesSettings,
                     unread_days: list[date], *, listed_from: datetime) -> ThreeWay:
    """Read the notes of the period's orders and compare them with the portal's refunds.

    The notes are read after the listing: a note naming a refund the queue recorded only
    after `listed_from` (another runner's, landing meanwhile) is no orphan yet.
    """
    refunds = refunds_to_check(rows)
    to_read, over = orders_to_read(refunds, (f.intent.order_number for f in ledger),
                                   wanted.max_orders)
    notes = OrderNotes(unread={o: f"over reconcile.order_notes.max_orders "
                                  f"({wanted.max_orders}) order pages for one report"
                               for o in over})
    if to_read:
        await _read_notes(session, run, to_read, notes)
    named = {m.group("value").strip().rstrip(".") for texts in notes.read.values()
             for t in texts for m in re.finditer(wanted.bot_note_pattern, t)}
    listed = {r.refund_id for r in refunds}
    start = datetime.combine(first, time(), UTC)
    known_before: dict[str, str] = {}
    late: dict[str, tuple[str, str]] = {}
    for f in queue.reconciliation_ledger(since=datetime.max.replace(tzinfo=UTC), run_id="",
                                         keys=(), refund_numbers=sorted(named - listed)):
        number = f.intent.refund_number
        if number and _aware(f.intent.created_at) < start:
            known_before[number] = f.case.ref
        elif number and (when := settled_late(f, listed_from)):
            late[number] = (f.case.ref, when)
    now = utcnow()  # a case a runner holds under a live lease: its note is still to come
    working = {f.case.ref for f in ledger if f.case.state == CaseState.PROCESSING
               and f.case.locked_until is not None and f.case.locked_until > now}
    return check_notes(refunds, notes, known_before, pattern=wanted.bot_note_pattern,
                       in_progress=working, unread_days=unread_days, settled_late=late)


async def _read_notes(session: BotSession, run: RunFolder, orders: list[str],
                      notes: OrderNotes) -> None:
    """Each order's notes, through the order page object; what cannot be read says why."""
    try:
        worker = await session.worker("report-notes")
    except (SystemException, PlaywrightError) as exc:
        run.log.error("reconciliation: no browser context for the order system: {}", exc)
        notes.unread.update(dict.fromkeys(orders, f"the order system could not be opened: {exc}"))
        return
    try:
        for order in orders:
            try:
                got = await worker.orders.read_notes(order)
            except (SystemException, PlaywrightError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                run.log.error("reconciliation: notes of order {} not read: {}", order, why)
                notes.unread[order] = f"its page could not be read ({why})"
                continue
            if got is None:
                notes.unread[order] = "the order system does not find the order"
            else:
                notes.read[order] = got
    finally:
        await worker.context.close()


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def _with_retries(read: Callable[[], Awaitable[list[PortalRefund]]]
                        ) -> list[PortalRefund] | str:
    """The day's refunds, or the last error in words after LISTING_ATTEMPTS tries."""
    error = ""
    for attempt in range(LISTING_ATTEMPTS):
        try:
            return await read()
        except (SystemException, PlaywrightError) as exc:
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if attempt + 1 < LISTING_ATTEMPTS:
                await asyncio.sleep(0.5 * 2**attempt)
    return error


async def _charges_to_check(session: BotSession, run: RunFolder,
                            listing: list[PortalRefund]) -> list[ChargeBalance]:
    """Charges refunded more than once in the period: read their pages (what was paid)."""
    counts = Counter(p.transaction_id for p in listing if p.transaction_id)
    wanted = [txn for txn, n in counts.most_common() if n > 1][:MAX_CHARGES]
    if not wanted:
        return []
    out: list[ChargeBalance] = []
    try:
        worker = await session.worker("report-charges")
    except (SystemException, PlaywrightError) as exc:
        run.log.error("reconciliation: charges not checked for over-refunds: {}", exc)
        return []
    try:
        try:
            await worker.payments.login()
        except (SystemException, PlaywrightError) as exc:
            run.log.error("reconciliation: charges not checked for over-refunds: {}", exc)
            return []
        for txn in wanted:
            try:
                facts: ChargeFacts = await worker.payments.read_charge(txn)
            except (SystemException, PlaywrightError) as exc:
                run.log.error("reconciliation: charge {} not read: {}", txn, exc)
                continue
            out.append(ChargeBalance(facts.transaction_id, facts.order_number, facts.amount,
                                     facts.refunded, facts.currency))
    finally:
        await worker.context.close()
    return out


def _keys(listing: list[PortalRefund]) -> set[str]:
    keys: set[str] = set()
    for p in listing:
        keys.update(reference_words(p.reference.strip()))
    return keys


def _entry(f: LedgerFacts, now: datetime) -> LedgerEntry:
    i = f.intent
    return LedgerEntry(case_ref=f"C-{i.case_id:06d}", order_number=i.order_number,
                       reference=i.key, amount=i.amount, status=i.state,
                       refund_number=i.refund_number, currency=(f.case.currency or "").upper(),
                       transaction_id=i.transaction_id, run_id=i.run_id or "",
                       created_at=i.created_at, in_flight=in_flight(f, now),
                       settled_late=settled_late(f, now))


def in_flight(f: LedgerFacts, now: datetime) -> str:
    """Who is submitting this pending intent now ("" when nobody provably is).

    Only a case in processing under an unexpired lease counts: a runner that died or
    stalled past its lease no longer holds it, and its pending intent is a break.
    """
    case = f.case
    if f.intent.state != IntentState.PENDING or case.state != CaseState.PROCESSING:
        return ""
    if case.locked_until is None or case.locked_until <= now:
        return ""
    return f"{case.locked_by or 'a runner'}, lease until {case.locked_until:%H:%M:%S} UTC"


def settled_late(f: LedgerFacts, listed_from: datetime) -> str:
    """When a confirmed intent was recorded, if at or after `listed_from` ("" otherwise).

    The listing was read from `listed_from` on: a refund another runner recorded since then
    may have landed after its day was read. Only the absence of such a refund waits for the
    next report; its amount, order and any duplicate are checked now. The times come from
    each runner's clock: one running behind makes the row a break, never the other way.
    """
    i = f.intent
    if i.state != IntentState.CONFIRMED or i.resolved_at is None:
        return ""
    at = _aware(i.resolved_at)
    return f"at {at:%H:%M:%S} UTC" if at >= listed_from else ""


def _approvals(ledger: list[LedgerFacts]) -> list[Approval]:
    """What each paying case was allowed in total (policy or human), from its start."""
    seen: dict[int, Approval] = {}
    for f in ledger:
        case = f.case
        if case.id in seen or case.approved_amount is None:
            continue
        seen[case.id] = Approval(case.ref, case.order_number or f.intent.order_number,
                                 case.approved_amount, (case.currency or "").upper(),
                                 since=case.created_at)
    return list(seen.values())


def _sighting(row: ReconRow) -> Sighting:
    return Sighting(key=row.break_key, kind=str(row.status), case_ref=row.case_ref,
                    order_number=row.order_number, reference=row.reference,
                    refund_id=row.portal_refund_id, transaction_id=row.transaction_id,
                    currency=row.currency, ledger_amount=row.ledger_amount,
                    portal_amount=row.portal_amount, day=row.day, note=row.note)
