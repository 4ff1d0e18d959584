"""The command line at 80 columns: ids, order numbers and outcomes are never cut."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer.main
from test_escalations import escalated_case
from typer.testing import CliRunner

from bots.cli import app
from bots.models import RefundRequest
from bots.queue import Queue


def _run(queue: Queue, *args: str) -> str:
    out = CliRunner().invoke(app, list(args), env={"REFUND_BOTS_QUEUE_URL": queue.url,
                                                   "COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    assert max(len(line) for line in out.output.splitlines()) <= 80, out.output
    return out.output


def test_cases_list_and_show_fit_80_columns_without_cutting_ids(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    case = escalated_case(queue, 7)
    for n in range(3):
        queue.add_request(RefundRequest(
            channel="email", source_id=f"m{n}", received_at=datetime(2026, 11, 28, tzinfo=UTC),
            reason_text="refund " * 80, order_number=f"ORD-12345678{n}",
            customer_email=f"a.very.long.customer.address.{n}@subdomain.example.com",
            customer_name="Name " * 10, requested_amount=Decimal("1234.56")))
    listing = _run(queue, "cases", "list")
    for n in range(3):
        assert f"ORD-12345678{n}" in listing
    assert f"C-{case:06d}" in listing and "escalated" in listing

    shown = _run(queue, "cases", "show", "ORD-100007")  # by order number
    assert f"C-{case:06d}" in shown and "ORD-100007" in shown
    assert "evidence (what the bot saw)" in shown and "Charge TX-1" in shown
    assert "case_opened" in shown or "claimed" in shown


def test_cases_show_says_plainly_when_nothing_matches(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    out = CliRunner().invoke(app, ["cases", "show", "ORD-000000"],
                             env={"REFUND_BOTS_QUEUE_URL": queue.url})
    assert out.exit_code == 1 and "no case ORD-000000" in out.output


def _commands(command: Any, path: list[str]) -> Iterator[list[str]]:
    yield path
    if hasattr(command, "list_commands"):  # a group (Typer vendors its own Click)
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), [*path, name])


def test_no_help_text_is_cut_at_80_columns() -> None:
    """Rich ends a word too long for its column with an ellipsis: every --help, read whole."""
    paths = list(_commands(typer.main.get_command(app), []))
    assert len(paths) > 40 and ["bench", "queue"] in paths
    for path in paths:
        out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert out.exit_code == 0, (path, out.output)
        cut = [line for line in out.output.splitlines() if "…" in line or len(line) > 80]
        assert not cut, (path, cut)


def test_flags_show_no_bool_metavar() -> None:
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "80"})
    line = next(x for x in out.output.splitlines() if "--dry-run" in x)
    assert "<bool>" not in line
