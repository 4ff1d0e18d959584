"""The stages of a run, wired together: intake, processing, report.

The CLI, the scheduler and the demo all call these, so a scheduled run and a
run launched by hand behave exactly alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import select

from bots import collector
from bots.config import ConfigError, IntakeSettings, Settings
from bots.decide.policy import PolicyError, load_policy
from bots.decide.signals import SignalsError, load_signals
from bots.intake import MailboxConfig, MailboxError, read_source
from bots.intake.echo import case_ids_named, echoed
from bots.intake.parallel import read_parts
from bots.intake.sources import ExportSourceConfig, SourceConfig, VoiceSourceConfig, source_parts
from bots.intake.triage import triage_new
from bots.legacy.browser import BrowserNotFound
from bots.legacy.health import preflight
from bots.legacy.session import BotSession
from bots.models import IntakeItem, Quarantined, RefundRequest
from bots.notify import Notifier
from bots.queue import (
    BreakRow,
    Case,
    CaseState,
    QuarantineRow,
    Queue,
    runner_id,
)
from bots.queue.schema import RequestRow, case_ref
from bots.reports.escalations import write_escalations
from bots.reports.reconcile import ReconRow
from bots.reports.report import Books, BreakLine, CaseRow, RunInfo, problem_count, write_report
from bots.runs import STDERR, RunFolder
from bots.transport import insecure_transports
from bots.work.alerts import after_run
from bots.work.exit_codes import EXIT_CIRCUIT, EXIT_ERROR, EXIT_LOCKED, EXIT_OK, EXIT_PROBLEMS
from bots.work.processing import Finished, Processor, ProcessStats
from bots.work.reconciling import Reconciliation, reconcile_run
from bots.work.stopping import request_stop


@dataclass
class IntakeStats:
    new_requests: int = 0
    new_cases: int = 0
    linked: int = 0  # contacts attached to an existing case (same order)
    already_seen: int = 0
    quarantined: int = 0
    failed_sources: int = 0  # a mailbox or folder that could not be read at all
    by_channel: Counter[str] = field(default_factory=Counter)


def run_intake(intake: IntakeSettings, queue: Queue, run: RunFolder) -> IntakeStats:
    """Read every configured source into the queue. Idempotent: re-reading adds nothing.

    Mailboxes are stored one message at a time, in their turn. The files of the folder
    sources between them share batches of `queue.insert_batch` requests a transaction
    (small files are not a transaction each) and are read by `intake.readers` processes
    while this one stores (`bots.intake.parallel`).
    """
    stats = IntakeStats()
    folders: list[FolderSource] = []
    for source in intake.sources:
        if isinstance(source, MailboxConfig):
            _read_folders_into(queue, run, folders, intake.readers, stats)
            folders = []
            _read_mailbox_into(queue, run, source, stats)
        else:
            folders.append(source)
    _read_folders_into(queue, run, folders, intake.readers, stats)
    run.log.info("intake: {}", stats)
    if queue.after_bulk_load(stats.new_requests):  # for the runners that work it next
        run.log.info("intake: planner statistics refreshed after {} new requests",
                     stats.new_requests)
    return stats


FolderSource = SourceConfig | ExportSourceConfig | VoiceSourceConfig


def _read_folders_into(queue: Queue, run: RunFolder, sources: list[FolderSource],
                       readers: int | None, stats: IntakeStats) -> None:
    """Folder sources, in order, as one stream of items (see `run_intake`)."""
    parts = [part for source in sources for part in source_parts(source)]
    with closing(read_parts(parts, readers)) as items:  # the readers stop if storing fails
        _store_items(queue, run, items, stats, queue.insert_batch)


def _read_mailbox_into(queue: Queue, run: RunFolder, source: MailboxConfig,
                       stats: IntakeStats) -> None:
    """A mailbox files each message away when the next one is asked for, so by then the
    message must be stored: mail is queued one at a time (nothing is left pending when a
    mailbox fails). An outage is reported as a failed source; the others are still read."""
    try:
        _store_items(queue, run, read_source(source), stats, 1)
    except MailboxError as exc:  # an outage, not bad input: report it, read the others
        stats.failed_sources += 1
        run.log.error("source {} failed: {}", source.label, exc)
        queue.add_quarantined(Quarantined(
            "email", f"source-failed:{source.label}:{run.run_id}",
            f"source '{source.label}' could not be read: {exc}", source_ref=source.label,
        ), run.run_id)


def _store_items(queue: Queue, run: RunFolder, items: Iterable[IntakeItem], stats: IntakeStats,
                 size: int) -> None:
    """Items into the queue, `size` requests to a transaction; the new ones are triaged
    first (language and priority).

    Files stay where they are: a crash mid-batch only means that their rows are read
    again next run, and stored then.
    """
    pending: list[RefundRequest] = []
    with collector.paused():  # a batch's cycles are collected after it is stored
        for item in items:
            if isinstance(item, Quarantined):
                _quarantine(queue, run, item, stats)
                continue
            pending.append(item)
            if len(pending) >= size:
                _enqueue(queue, run, pending, stats)
                collector.collect_young()
        _enqueue(queue, run, pending, stats)


def _quarantine(queue: Queue, run: RunFolder, item: Quarantined, stats: IntakeStats) -> None:
    if queue.add_quarantined(item, run.run_id):
        stats.quarantined += 1
        run.log.warning("quarantined {} {}: {}", item.channel, item.source_id, item.reason)


def _enqueue(queue: Queue, run: RunFolder, pending: list[RefundRequest],
             stats: IntakeStats) -> None:
    """Store the pending requests and count what storing them did; empties the list.

    Language and priority are worked out only for requests the queue does not hold yet:
    a file read again (an export that grows, read every run) costs its parsing only.
    """
    known = queue.known(pending) if pending else set()
    if pending:
        pending[:] = triage_new(pending, known)
    for echo in _our_echoes(queue, pending):
        pending.remove(echo[0])
        _quarantine(queue, run, echo[1], stats)
    # What the queue holds is not stored again: storing it would only find it there (a
    # write transaction, on SQLite the write lock, for nothing: most of a repeat intake).
    new = [req for req in pending if (req.channel, req.source_id) not in known]
    stored_new = iter(queue.store_requests(new, run.run_id))
    for req in pending:
        stored = None if (req.channel, req.source_id) in known else next(stored_new)
        if stored is None or not stored.new:
            if conflict := _reused_id(queue, req):  # issue #12: never silently "already seen"
                _quarantine(queue, run, conflict, stats)
                continue
            stats.already_seen += 1
            continue
        stats.new_requests += 1
        stats.by_channel[req.channel] += 1
        if stored.opened:
            stats.new_cases += 1
        else:
            stats.linked += 1
    pending.clear()


def _our_echoes(queue: Queue, pending: Sequence[RefundRequest]
                ) -> list[tuple[RefundRequest, Quarantined]]:
    """Requests that are a message the bot itself sent, echoed back in an export.

    Email has its own header for this (X-Refund-Case, see `mail_reading`); other
    channels are checked by text, only for requests that quote a case reference.
    """
    named = {id(req): case_ids_named(req.reason_text) for req in pending
             if req.channel != "email" and req.reason_text}
    wanted = set().union(*named.values()) if named else set()
    if not wanted:
        return []
    sent = queue.sent_texts(wanted)
    echoes: list[tuple[RefundRequest, Quarantined]] = []
    for req in pending:
        ours = [body for case_id in named.get(id(req), ()) for body in sent.get(case_id, ())]
        if ours and echoed(req.reason_text, ours):
            refs = ", ".join(sorted(case_ref(c) for c in named[id(req)]))
            echoes.append((req, Quarantined(
                req.channel, req.source_id,
                f"our own message about {refs} echoed back in the {req.channel} export, "
                f"not a request", req.reason_text[:200], req.source_ref)))
    return echoes


def _reused_id(queue: Queue, req: RefundRequest) -> Quarantined | None:
    """A second email with a known Message-ID but other content: a conflict, for a human.

    Reading the same message again (a mailbox re-sync, an export read twice) gives the same
    sender and text; anything else means the id was reused or forged, and the second
    message would otherwise vanish as "already seen".
    """
    if req.channel != "email":
        return None
    with queue.session() as s:
        stored = s.scalar(select(RequestRow).where(RequestRow.channel == req.channel,
                                                   RequestRow.source_id == req.source_id))
    if stored is None or (stored.customer_email, stored.reason_text) == (
            req.customer_email, req.reason_text):
        return None
    digest = hashlib.sha256(f"{req.customer_email}\x1f{req.reason_text}".encode()).hexdigest()
    return Quarantined(
        req.channel, f"{req.source_id[:200]}#conflict#{digest[:16]}",
        f"Message-ID {req.source_id[:120]} was already used by another message (from "
        f"{stored.customer_email or 'unknown'}) with different content: a reused or forged "
        f"Message-ID; handle this message by hand", req.reason_text[:200], req.source_ref)


async def run_processing(settings: Settings, queue: Queue, run: RunFolder, session: BotSession,
                         *, today: date | None = None,
                         on_case: Callable[[Case, str], None] | None = None,
                         processor_ready: Callable[[Processor], None] | None = None,
                         dry_run: bool = False) -> ProcessStats:
    policy = load_policy(settings.policy)
    signals = load_signals(settings.signals) if settings.signals else None
    notifier = (Notifier(settings.notify, queue.engine)
                if settings.notify and settings.notify.enabled and not dry_run else None)
    processor = Processor(settings, queue, policy, run, signals=signals, today=today,
                          on_case=on_case, dry_run=dry_run, notifier=notifier)
    if processor_ready:
        processor_ready(processor)
    # No global lock: cases are leased one by one, so runners in other processes and on
    # other machines share the queue. A crashed runner's cases come back when their lease
    # runs out (at once when the holder provably died on this machine).
    stats = await processor.process(session)
    if notifier is not None:  # what earlier runs could not deliver, now due again
        for result in await asyncio.to_thread(notifier.send_due):
            stats.notifications[result.state.value] += 1
    return stats


def send_notifications(settings: Settings, console: Console) -> int:
    """Send every pending or failed customer message that is due (the outbox sweep)."""
    if settings.notify is None or not settings.notify.enabled:
        console.print("Notifications are off in the settings: nothing to send.")
        return EXIT_OK
    try:
        queue = Queue(settings.queue_url)
    except ConfigError as exc:
        console.print(f"[red]cannot run:[/] {exc}")
        return EXIT_ERROR
    results = Notifier(settings.notify, queue.engine).send_due()
    counts = Counter(r.state.value for r in results)
    console.print("Customer notifications: " + (", ".join(
        f"{n} {s}" for s, n in sorted(counts.items())) or "nothing due") + ".")
    return EXIT_PROBLEMS if counts.get("gave_up") else EXIT_OK


# -- report stage (issue 15: reconciliation of every portal refund, break register) ------

@dataclass(frozen=True)
class RunReport:
    path: Path
    recon: list[ReconRow]
    open_breaks: int = 0  # breaks still open after this report (this run's and earlier ones)

    @property
    def problems(self) -> int:
        """Anything not matched: this run's unsettled rows, or any break still open."""
        return self.open_breaks


async def write_run_report(settings: Settings, queue: Queue, run: RunFolder,
                           session: BotSession, finished_at: datetime | None = None,
                           proposals: dict[int, Finished] | None = None) -> RunReport:
    """Reconcile the portal's refunds of the run's business days against everything the
    queue knows, update the break register, and write the workbook."""
    finished_at = finished_at or datetime.now(UTC)
    rec = await reconcile_run(queue, run, session, finished_at)
    for note in rec.notes:
        run.log.error("reconciliation: {}", note)
    info = RunInfo(run_id=run.run_id, started_at=run.started_at, finished_at=finished_at,
                   orders_url=settings.orders.url, payments_url=settings.payments.url,
                   dry_run=proposals is not None)
    cases = [case_row(c, (proposals or {}).get(c.id), now=finished_at)
             for c in queue.cases_touched(run.run_id)]
    quarantined = [_quarantined(q) for q in queue.quarantined(run.run_id)]
    head = queue.chain_head()
    books = books_for(rec, str(head) if head else "")
    path = write_report(run.report_path, info, cases, rec.rows, quarantined, books)
    run.log.info("report written: {} ({} open break(s))", path, len(rec.live))
    if proposals is None and (waiting := queue.cases([CaseState.ESCALATED])):
        write_escalations(run.path / "escalations.xlsx", waiting, run.run_id)
        run.log.info("{} escalated case(s) wait for a decision: {}", len(waiting),
                     run.path / "escalations.xlsx")
    return RunReport(path, rec.rows, problem_count(rec.rows, books))


def books_for(rec: Reconciliation, chain_head: str) -> Books:
    now = datetime.now(UTC)
    settled = {}
    for row in rec.rows:
        closed = rec.settled(row)
        if closed is not None:
            settled[row.break_key] = (f"{closed.state} by {closed.resolved_by}: "
                                      f"{closed.resolution}")
    return Books(first_day=rec.first_day, last_day=rec.last_day,
                 opening=[break_line(b, now) for b in rec.update.opening],
                 closing=[break_line(b, now) for b in rec.live],
                 new_breaks=len(rec.update.new), settled=settled,
                 break_refs={k: b.ref for k, b in rec.update.states.items()},
                 unread_days=rec.unread_days, listing_size=rec.listing_size,
                 chain_head=chain_head, order_notes=rec.order_notes)


def break_line(b: BreakRow, now: datetime) -> BreakLine:
    return BreakLine(ref=b.ref, state=b.state, kind=b.kind, first_seen=b.first_seen_at,
                     age_days=b.age_days(now), owner=b.owner or "",
                     business_day=b.business_day or "", case_ref=b.case_ref or "",
                     order_number=b.order_number or "", refund_id=b.refund_id or "",
                     currency=b.currency or "", amount=b.amount, note=b.note,
                     resolution=b.resolution or "")


def case_row(case: Case, proposal: Finished | None = None,
             now: datetime | None = None) -> CaseRow:
    """One line of the Cases sheet; in a dry run, what the bot *would* have done.

    An escalated case's amount is a proposal awaiting a human, never "approved".
    """
    reqs = case.requests
    awaiting: Decimal | None = None
    if proposal is not None:
        outcome, approved, reason = (f"would be {proposal.outcome}", proposal.approved,
                                     proposal.reason)
    else:
        outcome, approved = case.outcome or case.state, case.approved_amount
        reason = case.reason or case.last_error or ""
        if case.state == CaseState.ESCALATED:
            awaiting, approved = case.approved_amount, None
    human = case.human_decision in ("approve", "partial")
    decided = case.updated_at if case.state in (CaseState.DONE, CaseState.ESCALATED,
                                                CaseState.FAILED) else None
    return CaseRow(
        case_ref=case.ref, channels=", ".join(case.channels),
        customer=case.customer_name or "", customer_email=case.customer_email or "",
        order_number=case.order_number or "", requested=case.requested_amount,
        approved=approved, refund_number=case.refund_number, outcome=outcome, reason=reason,
        attempts=case.attempts, sources=len(reqs), currency=(case.currency or "").upper(),
        received_at=min((r.received_at for r in reqs), default=None), decided_at=decided,
        reason_category=reqs[0].reason_category if reqs else "", proposal=awaiting,
        decided_by="human" if human else ("policy" if approved is not None else ""),
    )

# -- end of the report stage (issue 15) ----------------------------------------------------


def _quarantined(row: QuarantineRow) -> Quarantined:
    return Quarantined(channel=row.channel, source_id=row.source_id, reason=row.reason,
                       excerpt=row.excerpt, source_ref=row.source_ref)


# -- a whole run: folder, stages, summary lines and exit status ---------------------------

def execute(settings: Settings, command: str, *, intake: bool, process: bool,
            console: Console | None = None, today: date | None = None,
            dry_run: bool = False, report: bool = False) -> int:
    """One run: its folder, log, stages and exit status. Shared by run/intake/process/demo.

    `report` without `process` (the scheduler's report job, e.g. an end-of-day
    reconciliation): the run reconciles and writes its workbook, processing nothing.
    The summary lines go to `console`; the CLI, the scheduler and the demo pass their own.
    """
    console = console or Console()
    # issue 15: no clear-text connection to another machine unless the settings say so
    if (clear := insecure_transports(settings)) and not settings.allow_insecure_transport:
        console.print("[red]cannot run: connections in clear text to other machines:[/] "
                      + "; ".join(clear) + " (use TLS, or set allow_insecure_transport: true)")
        return EXIT_ERROR
    try:
        queue = Queue(settings.queue_url)
        killed = queue.mark_killed_runs()
    except ConfigError as exc:  # QueueError: unreachable, refused, schema too new
        console.print(f"[red]cannot run:[/] {exc}")
        return EXIT_ERROR
    folder = RunFolder.create(settings.runs_dir)
    queue.start_run(folder.run_id, command, owner=runner_id(f"{command}:{folder.run_id}"))
    for run_id in killed:
        folder.log.warning("run {} was killed before it finished (marked killed)", run_id)
    folder.log.info("run {} ({}) started", folder.run_id, command)
    stats: dict[str, object] = {}
    code = EXIT_OK
    try:
        if intake:
            i = run_intake(settings.intake, queue, folder)
            stats["intake"] = i.__dict__
            console.print(f"Intake: {i.new_requests} new request(s) in {i.new_cases} new case(s), "
                          f"{i.linked} linked to an existing case, {i.already_seen} already seen, "
                          f"{i.quarantined} quarantined.")
            if i.failed_sources:
                console.print(f"[red]{i.failed_sources} source(s) could not be read: see the "
                              f"log and the report's Quarantine sheet.[/]")
                code = EXIT_PROBLEMS
        if process:
            code = max(code, asyncio.run(
                _process_and_report(settings, queue, folder, stats, today, dry_run, console)))
        elif report:
            code = max(code, asyncio.run(_report_only(settings, queue, folder, stats, console)))
    except (ConfigError, PolicyError, SignalsError) as exc:
        console.print(f"[red]cannot run:[/] {exc}")
        code = EXIT_ERROR
    except Exception as exc:
        folder.log.opt(exception=exc).error("run failed")
        console.print(f"[red]run failed:[/] {type(exc).__name__}: {exc}")
        code = EXIT_ERROR
    finally:
        status = {EXIT_OK: "done", EXIT_PROBLEMS: "problems", EXIT_CIRCUIT: "stopped",
                  EXIT_LOCKED: "locked"}.get(code, "error")
        queue.finish_run(folder.run_id, status, stats)
        folder.close()
    console.print(f"Run {folder.run_id}: {status}. Log: {folder.path / 'run.log'}")
    # issue #16: alert ops staff (exit 1/3/4, breaks, SLA, undeliverable notifications)
    for sent in after_run(settings, folder.run_id, command, code, stats):
        channels = ", ".join(sent.delivered) or "no channel"
        console.print(f"Alert sent: {sent.alert.subject} ({channels})")
    return code


async def _report_only(settings: Settings, queue: Queue, folder: RunFolder,
                       stats: dict[str, object], console: Console) -> int:
    """The reconciliation workbook of a run that processes nothing; 3 when not matched."""
    try:
        async with BotSession(settings) as session:
            rep = await write_run_report(settings, queue, folder, session)
    except BrowserNotFound as exc:
        console.print(f"[red]browser:[/] {exc}")
        return EXIT_ERROR
    stats["reconciliation_problems"] = rep.problems  # for alerts, as after processing
    console.print(f"Reconciliation: {'OK' if not rep.problems else f'{rep.problems} open '}"
                  f"{'' if not rep.problems else 'break(s) (refund-bots breaks list)'}.")
    console.print(f"Report: {rep.path}")
    return EXIT_PROBLEMS if rep.problems else EXIT_OK


async def _process_and_report(settings: Settings, queue: Queue, folder: RunFolder,
                              stats: dict[str, object], today: date | None,
                              dry_run: bool, console: Console) -> int:
    total = queue.pending_count()
    holder: list[Processor] = []
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        request_stop()
        if holder:
            holder[0].stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with BotSession(settings) as session:
            # selector health once per run, before the first case (bots/legacy/health.py)
            first = next((c.order_number for c in queue.cases([CaseState.QUEUED])
                          if c.order_number), None)
            if total and settings.health.before_process and not await preflight(
                    session, settings.health.order_number or first, console.print):
                return EXIT_ERROR
            with _progress(total) as progress:
                task = progress.add_task("processing", total=total)

                def on_case(case: Case, outcome: str) -> None:
                    progress.update(task, advance=1, description=f"{case.ref} {outcome}")

                result = await run_processing(settings, queue, folder, session, today=today,
                                              on_case=on_case, dry_run=dry_run,
                                              processor_ready=holder.append)
            rep = await write_run_report(
                settings, queue, folder, session,
                proposals=holder[0].proposals if dry_run and holder else None)
    except BrowserNotFound as exc:
        console.print(f"[red]browser:[/] {exc}")
        return EXIT_ERROR
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    stats["processing"] = {"processed": result.processed, "outcomes": dict(result.outcomes),
                           "system_errors": result.system_errors,
                           "seconds": round(result.seconds, 2)}
    problems = rep.problems
    stats["reconciliation_problems"] = problems  # issue #16: for alerts and the console
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(result.outcomes.items())) or "none"
    console.print(f"{'Dry run: decided' if dry_run else 'Processed'} {result.processed} "
                  f"case(s): {outcomes}.")
    console.print(f"Seconds per case: {result.seconds_per_case:.2f} "
                  f"({result.seconds:.1f} s, {settings.processing.workers} worker(s)).")
    console.print(f"Reconciliation: {'OK' if not problems else f'{problems} open break(s)'}"
                  f"{'' if not problems else ' (refund-bots breaks list)'}.")
    if result.notifications:
        sent = ", ".join(f"{n} {s}" for s, n in sorted(result.notifications.items()))
        console.print(f"Customer notifications: {sent}.")
    if gave_up := result.notifications.get("gave_up"):
        console.print(f"[red]{gave_up} customer message(s) could not be delivered after "
                      f"{settings.notify.max_tries if settings.notify else '?'} tries: see the "
                      f"log; they stay in the queue's notifications table.[/]")
    if (waiting := len(queue.cases(["escalated"]))) and not dry_run:
        console.print(f"Escalated, waiting for a human: {waiting} "
                      f"(decide in {folder.path / 'escalations.xlsx'}, then "
                      f"`refund-bots decisions import FILE`).")
    console.print(f"Report: {rep.path}")
    if result.login_refused:  # issue #12: a wrong password stops the run, exit 1
        console.print(f"[red]Stopped: {result.login_refused}[/] "
                      f"{queue.pending_count()} case(s) stay queued; none was marked failed.")
        return EXIT_ERROR
    if result.circuit_open:
        console.print("[red]Stopped by the circuit breaker: the legacy apps kept failing. "
                      f"{queue.pending_count()} case(s) stay queued.[/]")
        return EXIT_CIRCUIT
    if result.outcomes.get("failed") or problems or result.notifications.get("gave_up"):
        return EXIT_PROBLEMS
    return EXIT_OK


def _progress(total: int) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=STDERR,
                    disable=not sys.stderr.isatty() or total == 0, transient=True)
