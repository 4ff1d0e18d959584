"""The console's pages: escalation inbox, case, queue, runs, dashboard, forecast.

Every change (claim, assign, decide, confirm, retry) is a POST with a CSRF token, goes
through `bots.queue.staff.Staff` (the same rules as the command line and the workbook),
and lands in the case's audit trail under the logged-in user's name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from bots.alerts import AlertSettings
from bots.config import Settings
from bots.console import auth, inbox
from bots.console.auth import current, login_required, roles
from bots.models import money
from bots.queue import Case, Queue, case_ref, utcnow
from bots.queue.staff import DECIDERS, Role, Staff, StaffError
from bots.reports.escalations import DecisionRefused, validate_decision
from bots.runs import RUN_ID

bp = Blueprint("views", __name__)
CHANNELS = ("email", "spreadsheet", "chat", "social", "phone", "portal")
RUN_FILES = {"run.log": "text/plain", "reconciliation.xlsx": None, "escalations.xlsx": None}


def _settings() -> Settings:
    return cast(Settings, current_app.extensions["refund_bots_settings"])


def _queue() -> Queue:
    return cast(Queue, current_app.extensions["refund_bots_queue"])


def _staff() -> Staff:
    return auth.staff()


@bp.route("/")
@login_required
def home() -> Response:
    return redirect(url_for("views.inbox"))  # type: ignore[return-value]


# -- the escalation inbox ------------------------------------------------------------------


@bp.route("/inbox", endpoint="inbox")
@login_required
def inbox_page() -> str:
    where = inbox.InboxFilter(
        text=request.args.get("q", "")[:200], channel=request.args.get("channel", ""),
        reason=request.args.get("reason", "")[:200],
        assignee=request.args.get("assignee", "")[:60], overdue=bool(request.args.get("overdue")))
    page = max(0, request.args.get("page", 0, type=int) or 0)
    sla = timedelta(hours=_settings().console.sla_hours)
    rows, total = inbox.inbox(_queue(), where, sla, _staff().pending_proposals(), page)
    return render_template("inbox.html", rows=rows, total=total, where=where, page=page,
                           pages=(total + inbox.PAGE - 1) // inbox.PAGE, channels=CHANNELS,
                           users=_staff().users(), sla_hours=_settings().console.sla_hours)


@bp.route("/find")
@login_required
def find() -> Response:
    """A case by reference or order number (the search box in the header)."""
    text = request.args.get("q", "").strip()
    ref = text.upper().removeprefix("C-")
    if ref.isdigit() and _queue().get_case(int(ref)) is not None:
        return redirect(url_for("views.case", case_id=int(ref)))  # type: ignore[return-value]
    found = _queue().find_cases_by_order(text) if text else []
    if len(found) == 1:
        return redirect(url_for("views.case", case_id=found[0].id))  # type: ignore[return-value]
    flash(f"{len(found)} cases for order {text}: pick one below." if found else
          f"No case with reference or order number {text}.", "info" if found else "error")
    return redirect(url_for("views.inbox", q=text))  # type: ignore[return-value]


# -- one case ---------------------------------------------------------------------------


@bp.route("/cases/<int:case_id>")
@login_required
def case(case_id: int) -> str:
    found = _queue().get_case(case_id)
    if found is None:
        abort(404)
    settings = _settings()
    return render_template(
        "case.html", case=found, ev=inbox.evidence(found, settings.runs_dir),
        trail=_queue().audit_trail(case_id), proposal=_staff().pending_proposal(case_id),
        users=[u for u in _staff().users() if u.role in DECIDERS and u.active],
        four_eyes_above=settings.console.four_eyes_above,
        sla_due=found.updated_at + timedelta(hours=settings.console.sla_hours),
        follow_ups=_follow_ups(found), now=utcnow())


def _follow_ups(found: Case) -> list[Case]:
    return [c for c in _queue().find_cases_by_order(found.order_number or "")
            if c.id != found.id] if found.order_number else []


def _back(case_id: int) -> Response:
    return redirect(url_for("views.case", case_id=case_id))  # type: ignore[return-value]


def _say(ok: bool, message: str) -> None:
    flash(message, "ok" if ok else "error")


@bp.route("/cases/<int:case_id>/claim", methods=["POST"])
@roles(*DECIDERS)
def claim(case_id: int) -> Response:
    try:
        _staff().claim(case_id, current().username)
        _say(True, f"{case_ref(case_id)} is yours.")
    except StaffError as exc:
        _say(False, str(exc))
    return _back(case_id)


@bp.route("/cases/<int:case_id>/release", methods=["POST"])
@roles(*DECIDERS)
def release(case_id: int) -> Response:
    try:
        _staff().release(case_id, current().username)
        _say(True, f"{case_ref(case_id)} released.")
    except StaffError as exc:
        _say(False, str(exc))
    return _back(case_id)


@bp.route("/cases/<int:case_id>/assign", methods=["POST"])
@roles(Role.SUPERVISOR)
def assign(case_id: int) -> Response:
    to = request.form.get("to", "")
    try:
        _staff().assign(case_id, to, by=current().username,
                        comment=request.form.get("comment", "")[:500])
        _say(True, f"{case_ref(case_id)} assigned to {to}.")
    except StaffError as exc:
        _say(False, str(exc))
    return _back(case_id)


@bp.route("/cases/<int:case_id>/decide", methods=["POST"])
@roles(*DECIDERS)
def decide(case_id: int) -> Response:
    user = current()
    try:
        decision, amount, _, comment = validate_decision(
            request.form.get("decision", ""), request.form.get("amount", ""), user.username,
            request.form.get("comment", ""))
    except DecisionRefused as exc:
        _say(False, str(exc))
        return _back(case_id)
    out = _staff().decide(case_id, username=user.username, decision=decision, amount=amount,
                          comment=comment, version=_version(request.form.get("version", "")),
                          four_eyes_above=_settings().console.four_eyes_above,
                          raise_limit=_raise_limit())
    _say(out.status in ("applied", "proposed", "already applied", "already proposed"),
         out.message + (". The next processing run pays it." if out.status == "applied"
                        and decision != "reject" else ""))
    return _back(case_id)


@bp.route("/cases/<int:case_id>/confirm", methods=["POST"])
@roles(*DECIDERS)
def confirm(case_id: int) -> Response:
    approve = request.form.get("answer") == "approve"
    out = _staff().confirm(case_id, username=current().username, approve=approve,
                           comment=request.form.get("comment", "")[:2000])
    _say(out.status == "applied" or (not approve and "refused;" in out.message), out.message)
    return _back(case_id)


def _version(text: str) -> datetime:
    """The case's version as the page showed it; a missing or odd one is refused as stale."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# -- the queue and runs -------------------------------------------------------------------


@bp.route("/queue")
@login_required
def queue_page() -> str:
    return render_template("queue.html", depth=inbox.depth(_queue()),
                           buckets=[name for name, _ in inbox.AGE_BUCKETS],
                           failed=inbox.failed_cases(_queue()),
                           undeliverable=inbox.undeliverable(_queue()))


@bp.route("/cases/<int:case_id>/retry", methods=["POST"])
@roles(Role.SUPERVISOR)
def retry(case_id: int) -> Response:
    ok = _queue().retry(case_id, agent=current().username,
                        comment=request.form.get("comment", "")[:500], run_id=None)
    _say(ok, f"{case_ref(case_id)} queued again: the next processing run takes it up." if ok
         else f"{case_ref(case_id)} has not failed: left as it is.")
    return redirect(url_for("views.queue_page"))  # type: ignore[return-value]


@bp.route("/runs")
@login_required
def runs_page() -> str:
    runs_dir = _settings().runs_dir
    rows = [(r, _run_files(runs_dir, r.run_id)) for r in inbox.runs(_queue())]
    return render_template("runs.html", rows=rows)


def _run_files(runs_dir: Path, run_id: str) -> dict[str, Any]:
    folder = Path(runs_dir) / run_id
    return {"files": [n for n in RUN_FILES if (folder / n).is_file()],
            "screenshots": sorted(p.name for p in (folder / "screenshots").glob("*.png")),
            "traces": sorted(p.name for p in (folder / "traces").glob("*.zip"))}


@bp.route("/runs/<run_id>/files/<path:name>")
@login_required
def run_file(run_id: str, name: str) -> Response:
    """A run's log, workbooks, screenshots and traces; nothing else under runs/."""
    if not RUN_ID.fullmatch(run_id):
        abort(404)
    kind, _, leaf = name.rpartition("/")
    allowed = (kind == "" and leaf in RUN_FILES) or (kind == "screenshots" and
                                                     leaf.endswith(".png")) or \
        (kind == "traces" and leaf.endswith(".zip"))
    if not allowed or "/" in leaf or leaf.startswith("."):
        abort(404)
    folder = Path(_settings().runs_dir).resolve() / run_id / kind
    return send_from_directory(folder, leaf, mimetype=RUN_FILES.get(leaf) or None,
                               as_attachment=not leaf.endswith((".png", ".log")))


# -- dashboard and forecast -----------------------------------------------------------------


@bp.route("/dashboard")
@login_required
def dashboard() -> str:
    from bots.console import charts, metrics

    days = min(max(request.args.get("days", 30, type=int) or 30, 1), 366)
    m = metrics.compute(_queue(), days=days)
    return render_template("dashboard.html", m=m, days=days, charts=charts.dashboard(m))


@bp.route("/forecast")
@login_required
def forecast_page() -> str:
    from bots.console import charts, forecast

    result = forecast.forecast_all(_queue())
    alerts = _settings().alerts or AlertSettings()
    ratio, minimum = alerts.spike_ratio, alerts.spike_min
    return render_template("forecast.html", f=result, spikes=result.spikes(ratio, minimum),
                           chart=charts.forecast_chart(result.total) if result.total else "")


# -- template helpers -------------------------------------------------------------------------


def _age(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60:02d}"
    return f"{minutes // 1440} days"


def _amount(value: Decimal | None) -> str:
    return "" if value is None else f"{money(value):,.2f}"


def _when(value: datetime | None) -> str:
    return "" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _fromjson(text: str | None) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return {}


FILTERS = {"age": _age, "amount": _amount, "when": _when, "fromjson": _fromjson}


def _raise_limit() -> Decimal | None:
    """The policy's four-eyes limit for amounts above the bot's proposal or the ask (#12)."""
    from bots.decide.policy import PolicyError, load_policy

    try:
        return load_policy(_settings().policy).four_eyes_above
    except PolicyError:
        return Decimal("0.00")  # an unreadable policy: every raise needs a second person
