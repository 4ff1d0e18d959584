"""`refund-bots`: the command line ops staff and schedulers use.

Exit status tells a scheduler whether the run did its job:
0 done; 1 could not run (settings, browser, sandbox); 3 done, but cases failed
or the reconciliation found problems; 4 stopped by the circuit breaker (the
legacy apps kept failing; remaining cases stay queued); 5 another run holds the lock.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from bots.config import ConfigError, Settings, load_settings
from bots.decide.policy import PolicyError, load_policy
from bots.errors import SystemException
from bots.queue import Case, CaseFilter, CaseState, Queue, QueueError, case_ref
from bots.queue.staff import Staff, StaffError
from bots.runs import RunFolder, configure_console
from bots.tools.bench import bench_app
from bots.work.exit_codes import EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS
from bots.work.pipeline import execute, send_notifications

if TYPE_CHECKING:
    from bots.work.service import ServicePlan

app = typer.Typer(help=__doc__, no_args_is_help=True, rich_markup_mode="rich",
                  pretty_exceptions_enable=False)
# A bad argument is a run that could not start: exit 1 like every other such error
# (Click's default for usage errors is 2; Typer 0.2x carries its own copy of Click).
for _click in (click, getattr(typer, "_click", None)):
    if _click is not None:
        _click.exceptions.UsageError.exit_code = EXIT_ERROR
cases_app = typer.Typer(help="Look at cases in the queue.", no_args_is_help=True)
policy_app = typer.Typer(help="Work with refund policy files.", no_args_is_help=True)
decisions_app = typer.Typer(help="Human decisions on escalated cases, from a workbook.",
                            no_args_is_help=True)
users_app = typer.Typer(help="Ops staff who use the console and decide cases.",
                        no_args_is_help=True)
runs_app = typer.Typer(help="Runs: history, status, files.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts to ops staff (email, webhook).", no_args_is_help=True)
service_app = typer.Typer(help="Run refund-bots unattended (systemd units, cron).",
                          no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(runs_app, name="runs")
app.add_typer(alerts_app, name="alerts")
app.add_typer(service_app, name="service")
app.add_typer(decisions_app, name="decisions")
app.add_typer(bench_app, name="bench")
app.add_typer(cases_app, name="cases")
app.add_typer(policy_app, name="policy")
console = Console(stderr=False)

# Typer's rich help shows "<bool>" beside a flag unless it has a metavar: flags show none.
FLAG = " "
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Settings file "
                      "(default config/settings.yaml, or $REFUND_BOTS_CONFIG).")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", "-w", min=1, max=16,
                       help="Browser contexts working the queue at once.")]
TodayOpt = Annotated[str | None, typer.Option(help="Decide as if today were YYYY-MM-DD "
                     "(replaying a past day).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", metavar=FLAG,
                                          help="Log everything to stderr.")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        console.print(f"[red]settings:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None


def _queue(settings: Settings) -> Queue:
    """The queue, or a plain message and exit 1 (unreachable, refused, newer schema)."""
    try:
        return Queue(settings.queue_url)
    except QueueError as exc:
        console.print(f"[red]queue:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None


def _today(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        console.print(f"[red]--today {value!r} is not a date: write YYYY-MM-DD[/]")
        raise typer.Exit(EXIT_ERROR) from None


def _amount(value: str | None) -> Decimal | None:
    """An agent's amount: a positive number with at most two decimals, or a clear error."""
    if value is None:
        return None
    try:
        amount = Decimal(value.strip())
    except (InvalidOperation, ValueError):
        amount = Decimal("NaN")
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(Decimal("0.01")) \
            or amount > Decimal("1000000"):
        console.print(f"[red]--amount {value!r} is not an amount: a positive number with at "
                      f"most two decimals, like 40.00[/]")
        raise typer.Exit(EXIT_ERROR)
    return amount


def _four_eyes(settings: Settings) -> Decimal | None:
    try:
        return load_policy(settings.policy).four_eyes_above
    except PolicyError as exc:
        console.print(f"[red]policy:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None


# -- the pipeline ------------------------------------------------------------------------

DryRunOpt = Annotated[bool, typer.Option("--dry-run", metavar=FLAG,
                                         help="Decide every case and write the "
                      "report, but submit no refund and write nothing in the legacy apps.")]


@app.command()
def run(config: ConfigOpt = None, workers: WorkersOpt = None, today: TodayOpt = None,
        dry_run: DryRunOpt = False, verbose: VerboseOpt = False) -> None:
    """Intake from every source, process the queue in the legacy UIs, write the report."""
    configure_console(verbose)
    settings = _settings(config, processing__workers=workers)
    raise typer.Exit(execute(settings, "run", intake=True, process=True, console=console,
                             today=_today(today),
                             dry_run=dry_run))


@app.command()
def intake(config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Read every configured source into the queue (no browser). Safe to repeat."""
    configure_console(verbose)
    settings = _settings(config)
    raise typer.Exit(execute(settings, "intake", intake=True, process=False,
                             console=console))


@app.command()
def process(config: ConfigOpt = None, workers: WorkersOpt = None, today: TodayOpt = None,
            dry_run: DryRunOpt = False, verbose: VerboseOpt = False) -> None:
    """Work the queued cases in the legacy UIs, then write the run's report."""
    configure_console(verbose)
    settings = _settings(config, processing__workers=workers)
    raise typer.Exit(execute(settings, "process", intake=False, process=True, console=console,
                             today=_today(today), dry_run=dry_run))


@app.command()
def notify(config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Send the customer messages that are due (pending, or failed and due for a retry)."""
    configure_console(verbose)
    raise typer.Exit(send_notifications(_settings(config), console))


@app.command()
def report(run_id: Annotated[str | None, typer.Argument(help="Run to report on "
                                                         "(default: the last one).")] = None,
           config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Write (again) the reconciliation workbook of a run, re-reading the payment portal."""
    from bots.legacy.session import BotSession
    from bots.work.pipeline import write_run_report

    configure_console(verbose)
    settings = _settings(config)
    queue = _queue(settings)
    run_id = run_id or queue.last_run_id()
    row = queue.get_run(run_id) if run_id else None
    if row is None:
        console.print("[red]no such run[/] (runs are listed in the queue database)")
        raise typer.Exit(EXIT_ERROR)
    folder = RunFolder.create(settings.runs_dir, row.run_id)
    folder.started_at = row.started_at

    async def go() -> tuple[Path, int]:
        async with BotSession(settings) as session:
            rep = await write_run_report(settings, queue, folder, session,
                                         row.finished_at or datetime.now(UTC))
            return rep.path, rep.problems

    try:
        path, problems = asyncio.run(go())
    except (SystemException, ConfigError) as exc:
        console.print(f"[red]report failed:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    finally:
        folder.close()
    console.print(f"Reconciliation: {'OK' if not problems else f'{problems} open break(s)'}.")
    console.print(f"Report: {path}")
    raise typer.Exit(EXIT_PROBLEMS if problems else EXIT_OK)  # issue 15: 3 when not matched


# -- sandbox and demo ---------------------------------------------------------------------

@app.command()
def sandbox(
    data_dir: Annotated[Path, typer.Option(help="Where the two apps keep their databases.")]
    = Path("runs/sandbox"),
    orders_port: Annotated[int, typer.Option(help="Order system port (0: any free).")] = 8101,
    payments_port: Annotated[int, typer.Option(help="Payment portal port (0: any free).")] = 8102,
    seed: Annotated[int, typer.Option(help="Seed of the generated demo data.")] = 7,
    reset: Annotated[bool, typer.Option(metavar=FLAG,
                                        help="Regenerate the data from the seed.")] = False,
    latency_ms: Annotated[int, typer.Option(help="Fault: added latency per request.")] = 0,
    error_rate: Annotated[float, typer.Option(help="Fault: share of requests answering 500.")]
    = 0.0,
    error_paths: Annotated[str | None, typer.Option(
        help="Fault: only paths matching this regex fail (default: every path).")] = None,
    hang_rate: Annotated[float, typer.Option(help="Fault: share of requests that hang.")] = 0.0,
    hang_seconds: Annotated[float, typer.Option(help="Fault: how long a hang lasts; the "
                                                "request is then carried out.")] = 30.0,
    hang_paths: Annotated[str | None, typer.Option(
        help="Fault: only paths matching this regex hang, e.g. '/refund$'.")] = None,
    hang_methods: Annotated[str | None, typer.Option(
        help="Fault: only these HTTP methods hang, e.g. POST.")] = None,
    session_max_requests: Annotated[int | None, typer.Option(
        help="Fault: sessions expire after this many requests.")] = None,
    session_max_age: Annotated[float | None, typer.Option(
        help="Fault: sessions expire after this many seconds.")] = None,
    maintenance: Annotated[bool, typer.Option(metavar=FLAG,
                                              help="Fault: show the maintenance page.")] = False,
    skin: Annotated[str, typer.Option(help=(
        "The apps' look: default, or oldschool (German formats, iframe, modal, interstitials; "
        "its selectors are in selectors/, under examples/oldschool/)."))] = "default",
) -> None:
    """Run the sandbox legacy order system and payment portal in the foreground."""
    from bots.sandbox.faults import FaultConfig
    from bots.sandbox.server import SKINS, serve

    if skin not in SKINS:
        console.print(f"[red]unknown skin {skin!r}[/] (one of {', '.join(SKINS)})")
        raise typer.Exit(EXIT_ERROR)
    try:
        faults = FaultConfig(latency_ms=latency_ms, error_rate=error_rate,
                             error_paths=error_paths, hang_rate=hang_rate,
                             hang_seconds=hang_seconds, hang_paths=hang_paths,
                             hang_methods=hang_methods, session_max_requests=session_max_requests,
                             session_max_age_s=session_max_age, maintenance=maintenance)
    except ValueError as exc:
        console.print(f"[red]sandbox:[/] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    serve(data_dir, orders_port=orders_port, payments_port=payments_port, seed=seed,
          reset=reset, faults=faults, skin=skin)


@app.command()
def demo(workers: WorkersOpt = None,
         headed: Annotated[bool, typer.Option(metavar=FLAG,
                                              help="Show the browser window.")] = False,
         folder: Annotated[Path, typer.Option(help="Where the demo keeps its inbox, "
                                              "spreadsheet, queue and sandbox data.")]
         = Path("runs/demo"),
         history: Annotated[int, typer.Option(
             min=0, max=730, help="Also add this many days of generated finished cases (for "
             "the console's dashboard and forecast).")] = 0,
         verbose: VerboseOpt = False) -> None:
    """Start the sandbox, generate a demo inbox and spreadsheet, run the whole pipeline."""
    from bots.tools.demo import run_demo

    configure_console(verbose)
    raise typer.Exit(run_demo(folder, workers=workers, headed=headed, console=console,
                              history=history))


@app.command()
def chaos(kills: Annotated[int, typer.Option(
              help="Kills and stalls that must land on a queue with work in it.")] = 10,
          seed: Annotated[int, typer.Option(help="Seed of the kill schedule.")] = 1,
          runners: Annotated[int, typer.Option(min=1, max=8, help="Runner processes working "
                                               "one queue at once.")] = 1,
          postgres: Annotated[bool, typer.Option(
              "--postgres", help="Queue on a throwaway PostgreSQL server of its own "
              "(Debian's postgresql binaries).")] = False,
          queue_url: Annotated[str | None, typer.Option(
              help="Queue on this PostgreSQL server: a new database per round "
              "(the user needs CREATEDB).")] = None,
          hang_rate: Annotated[float, typer.Option(
              min=0, max=1, help="Share of refund POSTs the portal holds past the bots' "
              "timeout, then carries out.")] = 0.25,
          folder: Annotated[Path, typer.Option(help="Where the rounds keep their data.")]
          = Path("runs/chaos")) -> None:
    """Kill and freeze the bots at random moments, drain, verify no one is paid twice."""
    import shutil
    from contextlib import ExitStack

    from bots.tools.chaos import ChaosPlan, run_chaos
    from bots.tools.demo import use_sandbox_credentials
    from bots.tools.pgcluster import PostgresUnavailable, database_factory, throwaway_postgres

    configure_console(False)
    use_sandbox_credentials()
    shutil.rmtree(folder, ignore_errors=True)
    with ExitStack() as stack:
        try:
            server = queue_url or (stack.enter_context(throwaway_postgres()) if postgres
                                   else None)
            new_queue_url = database_factory(server) if server else None
            if new_queue_url:
                new_queue_url()  # fail now, with a clear message, not in round 1
        except PostgresUnavailable as exc:
            console.print(f"[red]chaos:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
        result = run_chaos(folder, kills=kills, seed=seed,
                           plan=ChaosPlan(runners=runners, hang_rate=hang_rate),
                           new_queue_url=new_queue_url, say=console.print)
    console.print(f"Chaos ({runners} runner(s), queue on "
                  f"{'PostgreSQL' if server else 'SQLite'}): {result.summary()}.")
    for problem in result.problems:
        console.print(f"[red]{problem}[/]")
    console.print("Every eligible order refunded exactly once, every contact told once, no "
                  "request lost." if result.ok else f"[red]{len(result.problems)} problem(s).[/]")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_PROBLEMS)


# -- unattended ---------------------------------------------------------------------------

@app.command()
def schedule(config: ConfigOpt = None, once: Annotated[bool, typer.Option(
        metavar=FLAG, help="Run every job once now, then exit (to test the schedule).")] = False,
        verbose: VerboseOpt = False) -> None:
    """Run the jobs of `schedule:` in the settings until stopped (SIGTERM or Ctrl-C)."""
    from bots.work.scheduler import Scheduler

    configure_console(verbose)
    settings = _settings(config)
    raise typer.Exit(Scheduler(settings, config, console).run_forever(once=once))


@app.command()
def doctor(config: ConfigOpt = None, live: Annotated[bool, typer.Option(
        "--live", help="Also log into both apps (read-only), open a known order and its "
                       "charge, and report every selector key: found / missing / empty / "
                       "unparseable, with the URL. Never submits anything.")] = False,
        login: Annotated[bool, typer.Option(
            help="Log in to each app once, to tell which password is wrong.")] = True) -> None:
    """Check settings, policy, selectors, secrets, browser, logins, apps and sources."""
    from bots.config import secret
    from bots.legacy.browser import BrowserNotFound, find_browser
    from bots.legacy.selectors import load_orders, load_payments

    settings = _settings(config)
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, fn: Callable[[], object]) -> None:
        try:
            checks.append((name, True, str(fn() or "ok")))
        except (ConfigError, PolicyError, BrowserNotFound, OSError, ValueError) as exc:
            checks.append((name, False, str(exc)))

    check("policy", lambda: f"{settings.policy} valid" if load_policy(settings.policy) else "")
    check("orders selectors", lambda: load_orders(settings.orders.selectors) and
          f"{settings.orders.selectors} valid")
    check("payments selectors", lambda: load_payments(settings.payments.selectors) and
          f"{settings.payments.selectors} valid")
    check("orders password", lambda: "set" if secret(settings.orders.password_secret) else "")
    check("payments password", lambda: "set" if secret(settings.payments.password_secret) else "")
    check("browser", lambda: find_browser(settings.browser.executable, settings.browser.channel,
                                          headless=settings.browser.headless).source)
    check("queue", lambda: f"{Queue(settings.queue_url).pending_count()} open case(s)")
    for name, url in (("order system", settings.orders.url),
                      ("payment portal", settings.payments.url)):
        check(f"{name} answers", functools.partial(_answers, url))
    for source in settings.intake.sources:
        path = getattr(source, "path", None)
        if path is not None:
            check(f"source {source.label}", functools.partial(_exists, path))
    if (notify := settings.notify) is not None:
        from bots.notify import Notifier

        def templates() -> str:
            notifier = Notifier(notify, Queue(settings.queue_url).engine)
            return f"{len(notifier.check_templates())} template(s) render"

        check("message templates", templates)
    if login and all(ok for name, ok, _ in checks if name in ("orders password",
                                                           "payments password", "browser")):
        from bots.legacy.session import check_logins

        try:
            for app_name, why in asyncio.run(check_logins(settings)):
                checks.append((f"{app_name} login", why is None, why or "accepted"))
        except Exception as exc:  # noqa: BLE001 - doctor reports, never crashes
            checks.append(("login", False, f"{type(exc).__name__}: {exc}"))
    from bots.transport import insecure_transports  # issue 15: encryption in transit

    clear = insecure_transports(settings)
    if clear:
        checks.append(("transport security", settings.allow_insecure_transport,
                       ("WARNING allow_insecure_transport is on: " if
                        settings.allow_insecure_transport else "refused: ") + "; ".join(clear)))
    else:
        checks.append(("transport security", True, "TLS for every remote connection"))
    table = Table("check", "", "detail")
    for name, ok, detail in checks:
        table.add_row(name, "[green]ok[/]" if ok else "[red]FAIL[/]", detail)
    console.print(table)
    refused = any(name.endswith(" login") and not ok and "refused" in detail
                  for name, ok, detail in checks)
    # --live logs in again: never after a refusal (a password is typed once, accounts lock)
    healthy = (not refused and _doctor_live(settings)) if live else True
    raise typer.Exit(EXIT_OK if healthy and all(ok for _, ok, _ in checks) else EXIT_ERROR)


def _answers(url: str) -> str:
    import httpx

    try:
        status = httpx.get(url, timeout=10, follow_redirects=True).status_code
    except httpx.HTTPError as exc:
        raise OSError(f"{url} does not answer: {exc}") from None
    if status >= 500:
        raise OSError(f"{url} answers HTTP {status}")
    return f"{url} (HTTP {status})"


def _exists(path: Path) -> str:
    if not Path(path).exists():
        raise OSError(f"{path} does not exist")
    return str(path)


def _doctor_live(settings: Settings) -> bool:
    """Every selector key on the live apps (bots/legacy/health.py); True when all is well."""
    from rich.markup import escape

    from bots.legacy.browser import BrowserNotFound
    from bots.legacy.health import HealthReport, live_report
    from bots.legacy.session import BotSession

    async def go() -> HealthReport:
        async with BotSession(settings) as session:
            return await live_report(session, settings.health.order_number)

    try:
        report = asyncio.run(go())
    except (ConfigError, BrowserNotFound) as exc:
        console.print(f"[red]live check:[/] {exc}")
        return False
    table = Table("app", "key", "state", "selector", "url / detail")
    colour = {"found": "green", "not checked": "dim"}
    for k in report.keys:
        state = f"[{colour.get(k.state, 'red')}]{k.state}[/]" + (" (fallback)" if k.fallback
                                                                 else "")
        table.add_row(k.app, k.key, state, escape(k.selector),
                      escape(" ".join(x for x in (k.url, k.detail) if x)))
    console.print(table)
    for line in report.problems + report.unavailable:
        console.print(f"[red]FAIL[/] {escape(line)}")
    bad = report.bad_keys
    console.print(f"Live check: {len(report.keys)} key(s), {len(bad)} missing/empty/unparseable, "
                  f"{len(report.problems) + len(report.unavailable)} problem(s).")
    return report.ok


# -- queue inspection and policy ----------------------------------------------------------

@cases_app.command("list")
def cases_list(
    state: Annotated[list[str] | None, typer.Option(
        help="Only cases in this state (queued, processing, done, escalated, failed, merged); "
             "repeat for several.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only cases with a contact on this "
                                                "channel (email, chat, phone...).")] = None,
    customer: Annotated[str | None, typer.Option(help="Email, name, phone or handle "
                                                 "(part of it).")] = None,
    order: Annotated[str | None, typer.Option(help="This order number.")] = None,
    older_than: Annotated[str | None, typer.Option(help="Opened before this long ago: "
                                                   "30m, 12h, 7d.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Cases per page.")] = 50,
    page: Annotated[int, typer.Option(min=1, help="Which page (newest cases first).")] = 1,
    config: ConfigOpt = None,
) -> None:
    """List cases with their state and outcome, newest first, a page at a time."""
    unknown = sorted(set(state or ()) - set(CaseState.ALL))
    if unknown:
        console.print(f"[red]unknown state {', '.join(unknown)}: use "
                      f"{', '.join(CaseState.ALL)}[/]")
        raise typer.Exit(EXIT_ERROR)
    where = CaseFilter(states=state, channel=channel, customer=customer, order_number=order,
                       older_than=_ago(older_than) if older_than else None)
    cases, total = _queue(_settings(config)).cases_page(where, limit=limit,
                                                        offset=(page - 1) * limit)
    console.print(f"{total} case(s); page {page} of {max(1, -(-total // limit))}")
    console.print(_cases_table(cases))


def _cases_table(cases: list[Case]) -> Table:
    """Cases at any width (80 columns too): ids, orders, states and outcomes are never cut;
    customers and channels fold onto more lines instead."""
    table = Table("case", "state", "outcome", "order", "customer", "channels", "approved",
                  "refund", pad_edge=False, collapse_padding=True)
    for column in table.columns:
        column.overflow = "fold"
    for name in ("case", "state", "outcome", "order", "approved", "refund"):
        column = next(c for c in table.columns if c.header == name)
        column.no_wrap, column.min_width = True, None
    for c in cases:
        table.add_row(c.ref, c.state, c.outcome or "", c.order_number or "",
                      c.customer_email or "", ", ".join(c.channels),
                      str(c.approved_amount or ""), c.refund_number or "")
    return table


def _ago(value: str) -> datetime:
    """'30m', '12h', '7d' ago, as a moment; a clear error for anything else."""
    units = {"m": 60, "h": 3600, "d": 86400}
    number, unit = value[:-1], value[-1:].lower()
    if unit not in units or not number.isdigit():
        console.print(f"[red]--older-than {value!r}: use a number and m, h or d (e.g. 7d)[/]")
        raise typer.Exit(EXIT_ERROR)
    return datetime.now(UTC) - timedelta(seconds=int(number) * units[unit])


@cases_app.command("show")
def cases_show(case: Annotated[str, typer.Argument(
                   help="Case reference (C-000012), id, or an order number.")],
               config: ConfigOpt = None) -> None:
    """Show one case: facts, the evidence the bot saw, contacts, audit trail."""
    settings = _settings(config)
    queue = _queue(settings)
    ref = case.strip().upper().removeprefix("C-")
    found = [c] if ref.isdigit() and (c := queue.get_case(int(ref))) else \
        queue.find_cases_by_order(case)
    if not found:
        console.print(f"[red]no case {case} (by reference or order number)[/]")
        raise typer.Exit(EXIT_ERROR)
    for one in found:
        _show_case(queue, one)


def _show_case(queue: Queue, found: Case) -> None:
    from rich.markup import escape

    from bots.reports.escalations import evidence_text

    def line(label: str, value: object) -> None:
        if value not in (None, ""):
            console.print(f"[bold]{label}:[/] {escape(str(value))}", overflow="fold")

    console.rule(f"{found.ref} {found.state} {found.outcome or ''}".strip())
    line("order", found.order_number or "?")
    line("customer", " ".join(x for x in (found.customer_name, found.customer_email) if x))
    line("requested", f"{found.requested_amount or ''} {found.currency or ''}".strip())
    line("approved", found.approved_amount)
    line("refund", found.refund_number)
    line("reason", found.reason or found.last_error)
    line("assigned to", found.assigned_to)
    if found.human_decision:
        line("human decision", f"{found.human_decision} by {found.human_agent}: "
                               f"{found.human_comment or ''}")
    if found.follows:
        line("follows", case_ref(found.follows))
    if evidence := evidence_text(found.decision):
        console.print("[bold]evidence (what the bot saw):[/]")
        for text in evidence.splitlines():
            console.print("  " + escape(text), overflow="fold")
    for r in found.requests:
        who = r.customer_email or r.customer_phone or r.customer_handle or ""
        console.print(f"[bold]contact[/] {r.channel} {r.received_at:%Y-%m-%d %H:%M} "
                      f"{escape(who)}:", overflow="fold")
        console.print("  " + escape(r.reason_text[:300].replace("\n", " ")), overflow="fold")
    table = Table("at", "actor", "event", "state", "detail", pad_edge=False)
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = table.columns[2].no_wrap = True
    for a in queue.audit_trail(found.id):
        table.add_row(f"{a.at:%m-%d %H:%M}", a.actor, a.event,
                      f"{a.from_state or ''}→{a.to_state or ''}", a.detail)
    console.print(table)


AgentOpt = Annotated[str, typer.Option("--agent", "-a", help="Who decides (for the audit trail).")]
CommentOpt = Annotated[str, typer.Option("--comment", "-m", help="Why, in words.")]
CaseArg = Annotated[str, typer.Argument(help="Case reference (C-000012) or id.")]


def _case_id(ref: str) -> int:
    try:
        case_id = int(ref.strip().upper().removeprefix("C-"))
        if not 0 < case_id < 2**63:
            raise ValueError(ref)
        return case_id
    except ValueError:
        console.print(f"[red]not a case reference: {ref}[/]")
        raise typer.Exit(EXIT_ERROR) from None


def _staff(settings: Settings) -> Staff:
    return Staff.on(Queue(settings.queue_url))


def _decider(staff: Staff, name: str) -> str:
    """--agent must name a user who may decide (`refund-bots users add`)."""
    try:
        return staff.decider(name).username
    except StaffError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None


def _decide(ref: str, decision: str, amount: Decimal | None, agent: str, comment: str,
            config: Path | None) -> None:
    settings = _settings(config)
    staff = _staff(settings)
    out = staff.decide(_case_id(ref), username=_decider(staff, agent), decision=decision,
                       amount=amount, comment=comment, version=None,
                       four_eyes_above=settings.console.four_eyes_above,
                       raise_limit=_four_eyes(settings))
    if out.status == "refused":
        console.print(f"[red]{out.message}[/]")
        raise typer.Exit(EXIT_ERROR)
    console.print(out.message + ("." if out.status != "applied" or decision == "reject"
                                 else ". The next processing run pays it."))
    if out.status == "proposed":
        console.print(f"A second person confirms it: `refund-bots cases confirm {ref} "
                      "--agent NAME` or in the console.")


@cases_app.command("approve")
def cases_approve(case: CaseArg, agent: AgentOpt, comment: CommentOpt = "",
                  amount: Annotated[str | None, typer.Option(
                      help="Pay this amount instead of the bot's proposal (a partial refund).")]
                  = None, config: ConfigOpt = None) -> None:
    """Approve an escalated case; the next processing run submits the refund."""
    from bots.reports.escalations import DecisionRefused, validate_decision

    try:
        _, value, _, _ = validate_decision("partial" if amount else "approve", amount, agent,
                                           comment)
    except DecisionRefused as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    _decide(case, "partial" if value is not None else "approve", value, agent, comment, config)


@cases_app.command("reject")
def cases_reject(case: CaseArg, agent: AgentOpt, comment: CommentOpt = "",
                 config: ConfigOpt = None) -> None:
    """Reject an escalated case, with the reason the customer will be told."""
    _decide(case, "reject", None, agent, comment, config)


@cases_app.command("reassign")
def cases_reassign(case: CaseArg, to: Annotated[str, typer.Option(help="The agent to hand it to.")],
                   agent: AgentOpt, comment: CommentOpt = "", config: ConfigOpt = None) -> None:
    """Hand an escalated case to another agent (--agent: a supervisor)."""
    settings = _settings(config)
    staff = _staff(settings)
    try:
        staff.assign(_case_id(case), to, by=_decider(staff, agent), comment=comment)
    except StaffError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"{case} assigned to {to}.")


@cases_app.command("confirm")
def cases_confirm(case: CaseArg, agent: AgentOpt, comment: CommentOpt = "",
                  refuse: Annotated[bool, typer.Option(
                      "--refuse", metavar=FLAG,
help="Refuse the proposal instead (the case waits for a new "
                      "decision).")] = False,
                  config: ConfigOpt = None) -> None:
    """Four eyes: approve (or --refuse) a decision another user proposed above the limit."""
    staff = _staff(_settings(config))
    out = staff.confirm(_case_id(case), username=_decider(staff, agent), approve=not refuse,
                        comment=comment)
    ok = out.status == "applied" or (refuse and "refused;" in out.message)
    console.print(out.message if ok else f"[red]{out.message}[/]")
    raise typer.Exit(EXIT_OK if ok else EXIT_ERROR)


@cases_app.command("retry")
def cases_retry(agent: AgentOpt, cases: Annotated[list[str] | None, typer.Argument(
                    help="Case references (C-000012) or ids; none with --all-failed.")] = None,
                all_failed: Annotated[bool, typer.Option(
                    "--all-failed", metavar=FLAG, help="Every case the bot gave up on.")] = False,
                comment: CommentOpt = "", config: ConfigOpt = None) -> None:
    """Queue again cases that failed on system errors (after an outage is over)."""
    queue = _queue(_settings(config))
    agent = _decider(Staff.on(queue), agent)
    ids = queue.failed_case_ids() if all_failed else [_case_id(c) for c in cases or []]
    if not ids:
        console.print("No case to retry." if all_failed else
                      "[red]Name the cases to retry, or use --all-failed[/]")
        raise typer.Exit(EXIT_OK if all_failed else EXIT_ERROR)
    refused = [i for i in ids if not queue.retry(i, agent=agent, comment=comment, run_id=None)]
    for case_id in refused:
        console.print(f"[red]{case_ref(case_id)} has not failed: left as it is[/]")
    console.print(f"{len(ids) - len(refused)} case(s) queued again; the next processing run "
                  "takes them up.")
    if refused:
        raise typer.Exit(EXIT_ERROR)


@decisions_app.command("import")
def decisions_import(
    file: Annotated[Path, typer.Argument(help="An escalations.xlsx filled in by ops staff.")],
    config: ConfigOpt = None,
) -> None:
    """Apply the Decision column of an escalations workbook; bad rows are refused with why."""
    from bots.reports.escalations import EscalationsFileError, apply_decisions, read_decisions

    settings = _settings(config)
    try:
        decisions, bad = read_decisions(file)
    except EscalationsFileError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    result = apply_decisions(_queue(settings), decisions, run_id=None,
                             four_eyes_above=settings.console.four_eyes_above,
                             raise_limit=_four_eyes(settings))
    for row in bad:
        console.print(f"[yellow]row {row.row} ({row.case_ref or '?'}) refused: {row.reason}[/]")
    for row in result.refused:
        console.print(f"[yellow]row {row.row} ({row.case_ref or '?'}) refused: {row.reason}[/]")
    for d in result.proposed:
        console.print(f"row {d.row} ({d.case_ref}): above the four-eyes amount, waits for a "
                      "second person (console, or `refund-bots cases confirm`)")
    console.print(f"Applied {len(result.applied)}, already applied {len(result.already_applied)}, "
                  f"waiting for a second approval {len(result.proposed)}, "
                  f"refused {len(bad) + len(result.refused)}. Approved cases are paid by the "
                  f"next processing run.")
    raise typer.Exit(EXIT_OK if not bad and not result.refused else EXIT_PROBLEMS)


@policy_app.command("check")
def policy_check(file: Annotated[Path, typer.Argument(help="Policy YAML to validate.")]) -> None:
    """Validate a policy file and print the rules it sets."""
    try:
        pol = load_policy(file)
    except PolicyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    for key, value in pol.model_dump().items():
        console.print(f"{key}: {value}")
    console.print(f"[green]{file} is valid[/]")


@policy_app.command("simulate")
def policy_simulate(
    file: Annotated[Path, typer.Argument(help="The changed policy YAML to try.")],
    out: Annotated[Path | None, typer.Option(help="Comparison workbook (default: "
                                             "runs/policy-simulation-<time>.xlsx).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay past decisions under a changed policy and write a comparison workbook."""
    from bots.decide.simulate import replay, write_comparison

    settings = _settings(config)
    try:
        policy = load_policy(file)
    except PolicyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    rows = replay(_queue(settings), policy)
    out = out or settings.runs_dir / f"policy-simulation-{datetime.now(UTC):%Y%m%d-%H%M%S}.xlsx"
    write_comparison(out, rows, file)
    changed = sum(r.changed for r in rows)
    console.print(f"Replayed {len(rows)} decision(s): {changed} would change. Workbook: {out}")


# -- ops staff and the console --------------------------------------------------------------

UserArg = Annotated[str, typer.Argument(help="User name (lowercase letters, digits, . _ -).")]
RoleOpt = Annotated[str, typer.Option("--role", "-r", help="agent (claims and decides), "
                    "supervisor (also assigns, retries, decides claimed cases) or viewer.")]
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", metavar=FLAG, help="Read the password from standard input (for scripts); "
    "otherwise it is asked for, hidden.")]


def _password(from_stdin: bool) -> str:
    import sys

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _staff_do(config: Path | None, action: Callable[[Staff], object]) -> None:
    try:
        action(_staff(_settings(config)))
    except StaffError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None


@users_app.command("add")
def users_add(username: UserArg, role: RoleOpt = "agent",
              password_stdin: PasswordStdinOpt = False, config: ConfigOpt = None) -> None:
    """Create a user (the password is stored as a scrypt hash, never as text)."""
    password = _password(password_stdin)
    _staff_do(config, lambda st: st.add_user(username, role, password))
    console.print(f"User {username.strip().lower()} ({role}) created.")


@users_app.command("list")
def users_list(config: ConfigOpt = None) -> None:
    """Every user with role and state."""
    table = Table("user", "role", "active", "created")
    for u in _staff(_settings(config)).users():
        table.add_row(u.username, u.role, "yes" if u.active else "no",
                      f"{u.created_at:%Y-%m-%d}")
    console.print(table)


@users_app.command("passwd")
def users_passwd(username: UserArg, password_stdin: PasswordStdinOpt = False,
                 config: ConfigOpt = None) -> None:
    """Set a user's password (ends their open console sessions)."""
    password = _password(password_stdin)
    _staff_do(config, lambda st: st.set_password(username, password))
    console.print(f"Password of {username} changed.")


@users_app.command("role")
def users_role(username: UserArg, role: Annotated[str, typer.Argument(
        help="agent, supervisor or viewer")], config: ConfigOpt = None) -> None:
    """Change a user's role."""
    _staff_do(config, lambda st: st.set_role(username, role))
    console.print(f"{username} is now {role}.")


@users_app.command("deactivate")
def users_deactivate(username: UserArg, config: ConfigOpt = None) -> None:
    """Stop a user from logging in or deciding (the audit trail keeps their name)."""
    _staff_do(config, lambda st: st.set_active(username, False))
    console.print(f"{username} deactivated.")


@users_app.command("activate")
def users_activate(username: UserArg, config: ConfigOpt = None) -> None:
    """Let a deactivated user log in again."""
    _staff_do(config, lambda st: st.set_active(username, True))
    console.print(f"{username} activated.")


@app.command("console")
def console_cmd(host: Annotated[str | None, typer.Option(
                    help="Address to listen on (default console.host, 127.0.0.1).")] = None,
                port: Annotated[int | None, typer.Option(
                    help="Port (default console.port, 8200; 0: any free one).")] = None,
                config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """The ops console: escalation inbox, queue, runs, dashboard, forecast (until Ctrl-C)."""
    from bots.console.server import serve

    configure_console(verbose)
    settings = _settings(config)
    try:
        serve(settings, host=host, port=port, say=console.print)
    except OSError as exc:
        console.print(f"[red]console:[/] cannot listen: {exc}")
        raise typer.Exit(EXIT_ERROR) from None


@runs_app.command("list")
def runs_list(limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
              config: ConfigOpt = None) -> None:
    """Runs with status, counts, duration and folder."""
    import json

    settings = _settings(config)
    table = Table("run", "command", "started (UTC)", "took", "status", "counts", "folder")
    for column in table.columns:
        column.overflow = "fold"
    table.columns[0].no_wrap = table.columns[4].no_wrap = True
    for r in Queue(settings.queue_url).runs(limit):
        stats = json.loads(r.stats or "{}")
        took = f"{(r.finished_at - r.started_at).total_seconds():.0f} s" if r.finished_at else ""
        counts = ", ".join(f"{n} {o}" for o, n in
                           (stats.get("processing") or {}).get("outcomes", {}).items())
        if (i := stats.get("intake")) is not None:
            counts = f"{i.get('new_requests', 0)} new; " + counts
        table.add_row(r.run_id, r.command, f"{r.started_at:%Y-%m-%d %H:%M}", took, r.status,
                      counts, str(settings.runs_dir / r.run_id))
    console.print(table)


@alerts_app.command("check")
def alerts_check(forecast: Annotated[bool, typer.Option(
                     "--forecast/--no-forecast", metavar=FLAG,
help="Also check this week against the "
                     "forecast (takes seconds).")] = True,
                 config: ConfigOpt = None) -> None:
    """Check the standing conditions now (SLA, undeliverable notifications, forecast spike)."""
    from bots.work.alerts import check

    settings = _settings(config)
    if settings.alerts is None:
        console.print("[red]no `alerts:` in the settings[/]")
        raise typer.Exit(EXIT_ERROR)
    sent = check(settings, forecast=forecast)
    for s in sent:
        console.print(f"Alert sent: {s.alert.subject} ({s.delivered})")
    console.print(f"{len(sent)} alert(s) sent (a condition alerts once per "
                  f"{settings.alerts.period_minutes} min).")


@alerts_app.command("test")
def alerts_test(config: ConfigOpt = None) -> None:
    """Send a test alert through every configured channel, and say what each answered."""
    from bots.alerts import Alert
    from bots.work.alerts import alerter

    settings = _settings(config)
    sender = alerter(settings)
    if sender is None:
        console.print("[red]alerts are off (no `alerts:` in the settings, or enabled: false)[/]")
        raise typer.Exit(EXIT_ERROR)
    sent = sender.send(Alert(f"test:{datetime.now(UTC):%H%M%S}", "Test alert from refund-bots",
                             "If you read this, alerts reach you.",
                             settings.console.link("/"), "info"))
    delivered = sent.delivered if sent else {}
    for channel, answer in delivered.items():
        console.print(f"{channel}: {answer}")
    raise typer.Exit(EXIT_OK if delivered and all(a == "sent" for a in delivered.values())
                     else EXIT_PROBLEMS)


@alerts_app.command("list")
def alerts_list(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
                config: ConfigOpt = None) -> None:
    """The alerts sent, with what each channel answered."""
    from bots.alerts import Alerter, AlertSettings

    settings = _settings(config)
    table = Table("at (UTC)", "condition", "subject", "delivered")
    for column in table.columns:
        column.overflow = "fold"
    for row in Alerter(settings.queue_url, settings.alerts or AlertSettings()).history(limit):
        table.add_row(f"{row.at:%Y-%m-%d %H:%M}", row.condition, row.subject, row.delivered)
    console.print(table)


def _plan(runners: int, user: str, workdir: Path | None, executable: str | None,
          config: Path | None) -> ServicePlan:
    from bots.work.service import ServicePlan, default_executable

    return ServicePlan(workdir=(workdir or Path.cwd()).resolve(), user=user,
                       executable=executable or default_executable(),
                       config=config.resolve() if config else None, runners=runners)


RunnersOpt = Annotated[int, typer.Option(min=1, max=64, help="Processing runners to start.")]
ServiceUserOpt = Annotated[str, typer.Option(help="The unprivileged user the units run as.")]
WorkdirOpt = Annotated[Path | None, typer.Option(
    help="Installation folder, where config/ and selectors/ are (default: here).")]
ExecutableOpt = Annotated[str | None, typer.Option(
    help="The refund-bots command (default: the one of this installation).")]


@service_app.command("print")
def service_print(runners: RunnersOpt = 2, user: ServiceUserOpt = "refundbots",
                  workdir: WorkdirOpt = None, executable: ExecutableOpt = None,
                  config: ConfigOpt = None) -> None:
    """Print the systemd units (scheduler, console, N runners) and the secrets file."""
    from bots.work.service import install_hint, units

    plan = _plan(runners, user, workdir, executable, config)
    for name, text in units(plan).items():
        typer.echo(f"# ---- {name} ----\n{text}")
    typer.echo("# ---- install ----\n" + install_hint(plan))


@service_app.command("write")
def service_write(folder: Annotated[Path, typer.Argument(help="Where to write the files.")],
                  runners: RunnersOpt = 2, user: ServiceUserOpt = "refundbots",
                  workdir: WorkdirOpt = None, executable: ExecutableOpt = None,
                  config: ConfigOpt = None) -> None:
    """Write the systemd units and the secrets file template into a folder."""
    import os

    from bots.work.service import install_hint, units

    plan = _plan(runners, user, workdir, executable, config)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in units(plan).items():
        (folder / name).write_text(text, encoding="utf-8")
        if name.endswith(".env"):
            os.chmod(folder / name, 0o600)
    console.print(f"Written to {folder}. Then, in that folder:\n{install_hint(plan)}")


def main() -> None:  # pragma: no cover
    app()


# == issue 15: breaks, audit, customers, bench reconcile/report ===========================
# (one block: re-apply as a whole; the logic lives in bots/queue/breaks.py,
#  bots/queue/audit.py, bots/reports/audit_export.py, bots/tools/bench_reconcile.py)

breaks_app = typer.Typer(help="The open-break register: reconciliation breaks until someone "
                              "resolves them.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident (hash-chained) audit trail.",
                        no_args_is_help=True)
customers_app = typer.Typer(help="Personal data of customers (erasure).", no_args_is_help=True)
app.add_typer(breaks_app, name="breaks")
app.add_typer(audit_app, name="audit")
app.add_typer(customers_app, name="customers")
BreakArg = Annotated[str, typer.Argument(help="Break reference (B-000003) or id.")]
ReasonOpt = Annotated[str, typer.Option("--comment", "-m", help="Why, in words (required).")]


@breaks_app.command("list")
def breaks_list(all_states: Annotated[bool, typer.Option(
        "--all", help="Resolved and written-off breaks too.")] = False,
        config: ConfigOpt = None) -> None:
    """List open breaks (oldest first) with their age, owner and amount."""
    from bots.queue import BreakState

    queue = Queue(_settings(config).queue_url)
    rows = queue.breaks(None if all_states else BreakState.LIVE)
    table = Table("break", "state", "age (d)", "owner", "kind", "case", "order", "refund",
                  "amount", "note")
    for b in rows:
        amount = f"{b.amount} {b.currency or ''}" if b.amount is not None else ""
        table.add_row(b.ref, b.state, str(b.age_days()), b.owner or "", b.kind,
                      b.case_ref or "", b.order_number or "", b.refund_id or "", amount,
                      b.note[:80])
    console.print(table)
    live = sum(1 for b in rows if b.is_live)
    console.print(f"{live} open break(s)." if live else "No open break.")


@breaks_app.command("show")
def breaks_show(ref: BreakArg, config: ConfigOpt = None) -> None:
    """Show one break: what it is, who owns it, and its audit trail."""
    queue = Queue(_settings(config).queue_url)
    try:
        b = queue.get_break(ref)
    except ValueError:
        b = None
    if b is None:
        console.print(f"[red]no break {ref}[/]")
        raise typer.Exit(EXIT_ERROR)
    seen = f"{b.first_seen_at:%Y-%m-%d %H:%M}"
    console.print(f"[bold]{b.ref}[/] {b.state} ({b.kind}), first seen {seen} in run "
                  f"{b.first_seen_run}, {b.age_days()} day(s) old, last seen in run "
                  f"{b.last_seen_run}; owner {b.owner or '-'}")
    console.print(f"  case {b.case_ref or '-'}, order {b.order_number or '-'}, refund "
                  f"{b.refund_id or '-'}, amount {b.amount} {b.currency or ''}")
    console.print(f"  {b.note}")
    if b.resolution:
        console.print(f"  resolution by {b.resolved_by}: {b.resolution}")
    table = Table("at", "actor", "event", "state", "detail")
    for a in queue.subject_trail(f"break:{b.ref}"):
        table.add_row(f"{a.at:%Y-%m-%d %H:%M:%S}", a.actor, a.event,
                      f"{a.from_state or ''}→{a.to_state or ''}", a.detail)
    console.print(table)


@breaks_app.command("assign")
def breaks_assign(ref: BreakArg, to: Annotated[str, typer.Option(help="Who investigates it.")],
                  agent: AgentOpt, comment: ReasonOpt = "", config: ConfigOpt = None) -> None:
    """Give an open break an owner (it is then being investigated)."""
    from bots.queue import BreakError

    try:
        b = Queue(_settings(config).queue_url).assign_break(ref, owner=to, agent=agent,
                                                             comment=comment)
    except BreakError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"{b.ref} assigned to {b.owner} ({b.state}).")


@breaks_app.command("resolve")
def breaks_resolve(ref: BreakArg, agent: AgentOpt, comment: ReasonOpt = "",
                   write_off: Annotated[bool, typer.Option(
                       "--write-off", help="The money is lost: write it off.")] = False,
                   config: ConfigOpt = None) -> None:
    """Settle an open break (resolved, or written off); reports stop carrying it."""
    from bots.queue import BreakError

    try:
        b = Queue(_settings(config).queue_url).resolve_break(ref, agent=agent, comment=comment,
                                                             write_off=write_off)
    except BreakError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"{b.ref} {b.state} by {b.resolved_by}.")


@audit_app.command("verify")
def audit_verify(head: Annotated[str | None, typer.Option(
        help="The chain head a report carries (ID:HASH): also proves nothing after it "
             "was rewritten or deleted.")] = None, config: ConfigOpt = None) -> None:
    """Walk the hash chain; name the first record edited, deleted or inserted (exit 3)."""
    expect = None
    if head:
        last_id, _, digest = head.partition(":")
        if not last_id.isdigit() or len(digest) != 64:
            console.print("[red]--head must look like 1234:<64 hex digits>[/]")
            raise typer.Exit(EXIT_ERROR)
        expect = (int(last_id), digest.lower())
    report = Queue(_settings(config).queue_url).verify_chain(expect)
    if report.ok:
        console.print(f"Audit trail intact: {report.records} record(s), head {report.head}.")
        raise typer.Exit(EXIT_OK)
    console.print(f"[red]Audit trail broken at record {report.first_bad_id}:[/] {report.problem}")
    raise typer.Exit(EXIT_PROBLEMS)


@audit_app.command("export")
def audit_export(
    start: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), UTC.")],
    end: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), UTC.")],
    out: Annotated[Path | None, typer.Option(help="Workbook (default runs/audit-FROM-TO.xlsx).")]
    = None, config: ConfigOpt = None,
) -> None:
    """A compliance workbook: every decision, approval, refund and break of a period."""
    from datetime import timedelta

    from bots.reports.audit_export import write_audit_export

    settings = _settings(config)
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        console.print("[red]--from and --to are dates: YYYY-MM-DD[/]")
        raise typer.Exit(EXIT_ERROR) from None
    queue = Queue(settings.queue_url)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    until = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    out = out or settings.runs_dir / f"audit-{first}-{last}.xlsx"
    path = write_audit_export(out, queue, since, until)
    console.print(f"Audit export {first} to {last}: {path}")


@customers_app.command("forget")
def customers_forget(email: Annotated[str, typer.Argument(help="The customer's email.")],
                     agent: AgentOpt, comment: ReasonOpt = "",
                     config: ConfigOpt = None) -> None:
    """Erase a customer's personal data; amounts, refunds, decisions and the chain stay."""
    from bots.queue.erasure import ErasureError, forget_customer

    queue = Queue(_settings(config).queue_url)
    try:
        done = forget_customer(queue, email, agent=agent, comment=comment)
    except ErasureError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"Forgot {email}: {done.cases} case(s), {done.requests} contact(s), "
                  f"{done.notifications} message(s), {done.audit} audit text(s) erased. "
                  f"The audit chain still verifies.")


@customers_app.command("purge")
def customers_purge(older_than: Annotated[int, typer.Option(
        "--older-than", min=1, help="Retention period in days: customers whose every case "
                                    "ended longer ago are forgotten.")],
        agent: AgentOpt, comment: ReasonOpt = "", config: ConfigOpt = None) -> None:
    """Apply the retention period: forget every customer whose cases all ended long ago."""
    from bots.queue.erasure import ErasureError, expired_customers, forget_customer

    queue = Queue(_settings(config).queue_url)
    due = expired_customers(queue, older_than)
    try:
        for mail in due:
            forget_customer(queue, mail, agent=agent,
                            comment=comment or f"retention period of {older_than} days")
    except ErasureError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from None
    console.print(f"Forgot {len(due)} customer(s) whose cases ended over {older_than} days ago.")


@bench_app.command("reconcile")
def bench_reconcile_cmd(n: Annotated[int, typer.Option(help="Ledger entries (and as many "
                                                       "portal refunds).")] = 1_000_000,
                        repeat: Annotated[int, typer.Option(help="Timed passes.")] = 3) -> None:
    """Reconcile N ledger entries against N portal refunds (generated); median seconds."""
    from bots.tools.bench_reconcile import bench_reconcile

    configure_console(False)
    r = bench_reconcile(n, repeat)
    console.print(f"reconcile {n:,} ledger entries x {n:,} portal refunds: median "
                  f"{r.median:.2f} s wall, {r.cpu_median:.2f} s CPU "
                  f"{[round(x, 2) for x in r.seconds]}; {r.problems:,} break(s) found")


@bench_app.command("report")
def bench_report_cmd(n: Annotated[int, typer.Option(help="Cases in the workbook.")] = 100_000,
                     repeat: Annotated[int, typer.Option(help="Timed passes.")] = 1,
                     against: Annotated[str | None, typer.Option(
                         help="A git revision (e.g. main): write the same workbook with its "
                              "code too, alternately, each pass in a fresh process.")] = None,
                     ) -> None:
    """Write the reconciliation workbook for N generated cases; seconds and peak memory."""
    from bots.tools.bench_reconcile import bench_report, bench_report_against

    configure_console(False)
    if against:
        import statistics
        import subprocess

        try:
            sides = bench_report_against(n, against, repeat)
        except (OSError, subprocess.CalledProcessError) as exc:
            console.print(f"[red]bench failed:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
        console.print(f"workbook for {n:,} cases, {repeat} pass(es) each, alternately:")
        for s in sides:
            rss = s.rss_growth_mb or [0.0]
            console.print(f"  {s.label}: median {statistics.median(s.cpu):.2f} s CPU, "
                          f"{statistics.median(s.wall):.2f} s wall "
                          f"{[round(x, 2) for x in s.wall]}; peak Python memory "
                          f"{s.peak_mb:.0f} MB, peak RSS growth {statistics.median(rss):.0f} "
                          f"MB; file {s.size_mb:.1f} MB")
        return
    r = bench_report(n, repeat)
    console.print(f"workbook for {n:,} cases: median {r.median:.2f} s wall, {r.cpu_median:.2f} s "
                  f"CPU {[round(x, 2) for x in r.seconds]}, peak Python memory "
                  f"{r.peak_mb:.0f} MB (extra traced pass), file {r.size_mb:.1f} MB")

@bench_app.command("listing")
def bench_listing_cmd(refunds: Annotated[int, typer.Option(
        help="Refunds keyed into the sandbox portal for today.")] = 20_000) -> None:
    """A busy day: N refunds in the sandbox portal, a report with the default settings;
    seconds, and how many rows were left unverified."""
    from bots.tools.bench_listing import bench_listing

    configure_console(False)
    r = bench_listing(refunds)
    console.print(f"{refunds:,} refunds in one day: the day's export read in "
                  f"{r.listing_seconds:.2f} s ({r.listed:,} listed); the whole report "
                  f"(listing, ledger, order notes, breaks, workbook) {r.seconds:.1f} s")
    for status, n in r.statuses.items():
        if n:
            console.print(f"  {status}: {n:,}")
    console.print(f"rows not verified: {r.unverified:,}")
    if r.unverified:
        raise typer.Exit(EXIT_PROBLEMS)

# == end of issue 15 block ==================================================================


@bench_app.command("process")
def bench_process_cmd(
    repeat: Annotated[int, typer.Option(help="Passes over the demo cases.")] = 3,
    workers: WorkersOpt = 1,
    submit: Annotated[bool, typer.Option(help="Real runs: refund form, confirmation and order "
                                              "note, a fresh sandbox per pass.")] = False,
    against: Annotated[str | None, typer.Option(
        help="Also run a git revision's code (e.g. main), alternately with this code.")] = None,
    trace: Annotated[bool, typer.Option(help="Record traces as `process` does by default "
                                             "(the browser's trace_failures setting).")] = False,
) -> None:
    """The bot's seconds per case, next to raw HTTP loading the very same pages (dry run) or
    per paid case (--submit); with --against, before and after side by side."""
    from bots.tools.bench_process import bench_process, describe

    configure_console(False)
    r = bench_process(repeat=repeat, workers=workers or 1, submit=submit, against=against,
                      trace=trace)
    for line in describe(r, repeat, workers or 1):
        console.print(line)


@bench_app.command("queue")
def bench_queue_cmd(
    n: Annotated[int, typer.Option("--n", min=10, help="Contacts to generate.")] = 100_000,
    repeat: Annotated[int, typer.Option(min=1, help="Passes of the intake command; "
                                        "medians shown.")] = 2,
    postgres: Annotated[bool, typer.Option(
        "--postgres", help="Queue on a throwaway PostgreSQL server of its own.")] = False,
    queue_url: Annotated[str | None, typer.Option(
        help="Queue on this PostgreSQL server (a new database per pass), a URL like the "
             "settings' queue_url: postgresql+psycopg://...")] = None,
    readers: Annotated[int | None, typer.Option(
        min=1, help="Reader processes to compare with reading in one process "
                    "[default: one per CPU but one, at least one]")] = None,
) -> None:
    """Intake of N contacts into the queue, a repeat with nothing new, a page of cases list."""
    from contextlib import ExitStack
    from functools import partial

    from bots.tools.bench_queue import bench_queue, describe
    from bots.tools.pgcluster import (
        PostgresUnavailable,
        database_factory,
        drop_database,
        throwaway_postgres,
    )

    configure_console(False)
    with ExitStack() as stack:
        try:
            server = queue_url or (stack.enter_context(throwaway_postgres()) if postgres
                                   else None)
            new_queue_url = database_factory(server) if server else None
            drop_queue_url = partial(drop_database, server) if server else None
            result = bench_queue(n, repeat=repeat, readers=readers,
                                 new_queue_url=new_queue_url, drop_queue_url=drop_queue_url,
                                 say=console.print)
        except PostgresUnavailable as exc:
            console.print(f"[red]bench queue:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
        except QueueError as exc:
            console.print(f"[red]queue:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
    for line in describe(result):
        console.print(line)


@bench_app.command("scale")
def bench_scale_cmd(
    runners: Annotated[str, typer.Option(help="Runner process counts to compare, "
                                         "comma-separated.")] = "1,2,4",
    workers: Annotated[str, typer.Option(help="Workers (browser contexts) per runner to "
                                         "compare, comma-separated.")] = "1",
    latency_ms: Annotated[int, typer.Option(min=0, help="Sandbox latency per page.")] = 150,
    seconds: Annotated[float, typer.Option(min=5, help="Measured window per pass.")] = 60.0,
    warmup: Annotated[float, typer.Option(min=0, help="Start-up time not measured.")] = 20.0,
    repeat: Annotated[int, typer.Option(min=1, help="Passes over every configuration; the "
                                        "table shows medians.")] = 3,
    postgres: Annotated[bool, typer.Option(
        "--postgres", help="Queue on a throwaway PostgreSQL server of its own.")] = False,
    queue_url: Annotated[str | None, typer.Option(
        help="Queue on this PostgreSQL server (a new database per pass).")] = None,
    folder: Annotated[Path, typer.Option(help="Where the passes keep their data.")]
    = Path("runs/bench-scale"),
) -> None:
    """Cases per minute of 1, 2, 4 runner processes on one queue, and CPU seconds per case."""
    import shutil
    from contextlib import ExitStack

    from bots.tools.bench_scale import ScaleConfig, bench_scale, table_rows
    from bots.tools.demo import use_sandbox_credentials
    from bots.tools.pgcluster import PostgresUnavailable, database_factory, throwaway_postgres

    try:
        configs = [ScaleConfig(int(r), int(w)) for w in workers.split(",")
                   for r in runners.split(",")]
    except ValueError:
        console.print("[red]bench scale:[/] --runners and --workers take numbers like 1,2,4")
        raise typer.Exit(EXIT_ERROR) from None
    if any(not 1 <= c.runners <= 16 or not 1 <= c.workers <= 16 for c in configs):
        console.print("[red]bench scale:[/] runners and workers must be between 1 and 16")
        raise typer.Exit(EXIT_ERROR)
    configure_console(False)
    use_sandbox_credentials()
    shutil.rmtree(folder, ignore_errors=True)
    with ExitStack() as stack:
        try:
            server = queue_url or (stack.enter_context(throwaway_postgres()) if postgres
                                   else None)
            new_queue_url = database_factory(server) if server else None
        except PostgresUnavailable as exc:
            console.print(f"[red]bench scale:[/] {exc}")
            raise typer.Exit(EXIT_ERROR) from None
        results = bench_scale(folder, configs, latency_ms=latency_ms, warmup=warmup,
                              seconds=seconds, repeat=repeat, new_queue_url=new_queue_url,
                              say=console.print)
    table = Table(title=f"Runners on one {'PostgreSQL' if server else 'SQLite'} queue, "
                        f"{latency_ms} ms per page (medians of {repeat})")
    for col in ("runners", "workers", "cases/min", "speed-up", "CPU s/case",
                "sandbox CPU s/case", "passes (cases/min)"):
        table.add_column(col, justify="right")
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(f"{os.cpu_count()} CPU(s); load average when done: "
                  f"{', '.join(Path('/proc/loadavg').read_text().split()[:3])}.")
