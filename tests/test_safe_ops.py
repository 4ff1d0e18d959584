"""Safe operations (issue #12, section 6): the right settings, one password try, four eyes,
and a clear message with exit 1 for every bad argument, never a traceback."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from paths import CONFIG, ROOT
from typer.testing import CliRunner

from bots.cli import app
from bots.config import ConfigError, load_settings
from bots.models import RefundRequest
from bots.queue import CaseState, Queue
from bots.queue.schema import Case as CaseRow
from bots.queue.staff import Staff
from bots.work.exit_codes import EXIT_ERROR

SETTINGS = CONFIG / "settings.yaml"


@pytest.fixture
def live_and_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A 'live' settings file in $REFUND_BOTS_CONFIG and a 'test' one to pass with -c."""
    monkeypatch.chdir(ROOT)
    live, test = tmp_path / "live.yaml", tmp_path / "test.yaml"
    text = SETTINGS.read_text(encoding="utf-8")
    live.write_text(text + "\nqueue_url: sqlite:///" + str(tmp_path / "live.sqlite") + "\n")
    test.write_text(text + "\nqueue_url: sqlite:///" + str(tmp_path / "test.sqlite") + "\n")
    monkeypatch.setenv("REFUND_BOTS_CONFIG", str(live))
    return live, test


def test_dash_c_wins_over_the_environment(live_and_test: tuple[Path, Path]) -> None:
    """Issue #12: a test configuration passed with -c was ignored and the live one paid."""
    live, test = live_and_test
    assert load_settings(test).queue_url.endswith("test.sqlite")
    assert load_settings(None).queue_url.endswith("live.sqlite")  # no -c: the environment


def test_a_missing_or_broken_dash_c_never_falls_back(live_and_test: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_settings(tmp_path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("orders: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_settings(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listed)


def test_a_runs_dir_that_is_a_file_is_refused(live_and_test: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    _, test = live_and_test
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        load_settings(test, runs_dir=str(tmp_path / "afile"))


# -- every command: bad arguments are a message and exit 1 ----------------------------------


@pytest.fixture
def cli(live_and_test: tuple[Path, Path]) -> tuple[CliRunner, Path]:
    return CliRunner(), live_and_test[1]


@pytest.mark.parametrize("args", [
    ["cases", "show", "abc"],
    ["cases", "show", "C-999999"],
    ["cases", "show", "C-"],
    ["cases", "show", "-5"],
    ["cases", "approve", "C-000001", "--agent", "ana", "--amount", "abc"],
    ["cases", "approve", "C-000001", "--agent", "ana", "--amount", "-5"],
    ["cases", "approve", "C-000001", "--agent", "ana", "--amount", "1.234"],
    ["cases", "approve", "C-000001", "--agent", "ana", "--amount", "NaN"],
    ["cases", "approve", "C-999999", "--agent", "ana"],
    ["cases", "reject", "nonsense", "--agent", "ana"],
    ["cases", "list", "--state", "bogus"],
    ["run", "--today", "2026-13-01"],
    ["process", "--today", "yesterday"],
    ["cases", "retry", "C-x", "--agent", "ana"],
    ["report", "no-such-run"],
    ["decisions", "import", "/no/such/file.xlsx"],
])
def test_bad_arguments_are_a_message_and_exit_1(cli: tuple[CliRunner, Path],
                                                args: list[str]) -> None:
    runner, config = cli
    result = runner.invoke(app, [*args, "-c", str(config)])
    assert result.exit_code == EXIT_ERROR, result.output
    assert "Traceback" not in result.output and result.output.strip()
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit)


@pytest.mark.parametrize("args", [["cases", "list"], ["cases", "show", "C-000001"],
                                  ["doctor", "--no-login"]])
def test_a_settings_path_that_is_a_directory(cli: tuple[CliRunner, Path], tmp_path: Path,
                                             args: list[str]) -> None:
    runner, _ = cli
    result = runner.invoke(app, [*args, "-c", str(tmp_path)])
    assert result.exit_code == EXIT_ERROR and "directory" in result.output
    assert "Traceback" not in result.output


def test_policy_check_of_a_directory(cli: tuple[CliRunner, Path], tmp_path: Path) -> None:
    runner, _ = cli
    result = runner.invoke(app, ["policy", "check", str(tmp_path)])
    assert result.exit_code == EXIT_ERROR and "Traceback" not in result.output


# -- four eyes ---------------------------------------------------------------------------------


def _escalated(queue: Queue, asked: str | None = "40.00", proposal: str = "40.00") -> int:
    from datetime import UTC, datetime

    case_id, _ = queue.add_request(RefundRequest(
        channel="email", source_id="<m1@x>", received_at=datetime(2026, 11, 28, tzinfo=UTC),
        reason_text="refund", customer_email="ada@example.com", order_number="ORD-100001",
        requested_amount=Decimal(asked) if asked else None))
    with queue.session() as s:
        row = s.get(CaseRow, case_id)
        assert row is not None
        row.state, row.approved_amount = CaseState.ESCALATED, Decimal(proposal)
    return case_id


def decide(queue: Queue, case_id: int, agent: str, amount: str) -> str:
    return queue.human_decision(case_id, decision="partial", amount=Decimal(amount), agent=agent,
                                comment="ok", run_id=None, four_eyes_above=Decimal("50.00"))


def test_an_amount_above_the_proposal_needs_a_second_agent(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'q.sqlite'}")
    case_id = _escalated(queue)
    assert decide(queue, case_id, "ana", "400.00") == "needs a second agent"
    case = queue.get_case(case_id)
    assert case is not None and case.state == CaseState.ESCALATED
    assert case.approved_amount == Decimal("40.00")  # nothing applied yet
    assert decide(queue, case_id, "ana", "400.00") == "same agent"
    assert decide(queue, case_id, "bo", "400") == "applied"  # the same amount, written short
    case = queue.get_case(case_id)
    assert case is not None and case.state == CaseState.QUEUED
    assert case.approved_amount == Decimal("400.00")
    events = [a.event for a in queue.audit_trail(case_id)]
    assert events.count("approval_pending") == 1 and events[-1] == "human_decision"


def test_four_eyes_only_above_the_limit_and_only_for_raises(tmp_path: Path) -> None:
    queue = Queue(f"sqlite:///{tmp_path / 'a.sqlite'}")
    assert decide(queue, _escalated(queue), "ana", "45.00") == "applied"  # under the limit
    queue = Queue(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert decide(queue, _escalated(queue, asked="100.00", proposal="100.00"), "ana",
                  "80.00") == "applied"  # less than proposed and asked
    queue = Queue(f"sqlite:///{tmp_path / 'c.sqlite'}")
    assert decide(queue, _escalated(queue, asked="60.00", proposal="100.00"), "ana",
                  "90.00") == "needs a second agent"  # above what the customer asked


def test_four_eyes_from_the_command_line(live_and_test: tuple[Path, Path],
                                         tmp_path: Path) -> None:
    _, config = live_and_test
    policy = tmp_path / "policy.yaml"
    shutil.copy(CONFIG / "policy.yaml", policy)
    with config.open("a") as f:
        f.write(f"policy: {policy}\n")
    queue = Queue(load_settings(config).queue_url)
    staff = Staff.on(queue)
    for name in ("ana", "bo"):
        staff.add_user(name, "agent", "a long enough password")
    case_id = _escalated(queue)
    runner = CliRunner()
    ref = f"C-{case_id:06d}"
    first = runner.invoke(app, ["cases", "approve", ref, "--agent", "ana", "--amount", "400",
                                "-c", str(config)])
    assert first.exit_code == 0 and "second person" in first.output, first.output
    case = queue.get_case(case_id)
    assert case is not None and case.state == CaseState.ESCALATED  # not paid on one say-so
    own = runner.invoke(app, ["cases", "confirm", ref, "--agent", "ana", "-c", str(config)])
    assert own.exit_code == EXIT_ERROR  # the proposer cannot be the second pair of eyes
    second = runner.invoke(app, ["cases", "confirm", ref, "--agent", "bo", "-c", str(config)])
    assert second.exit_code == 0, second.output
    case = queue.get_case(case_id)
    assert case is not None and case.approved_amount == Decimal("400.00")
    assert case.state == CaseState.QUEUED


def test_a_capped_approval_says_the_cap() -> None:
    from datetime import date

    from bots.models import ChargeFacts, LineItem, OrderFacts
    from bots.work.processing import Processor

    order = OrderFacts("ORD-1", "Ada", "a@x.org", "", date(2026, 11, 1), None, "delivered",
                       (LineItem("A", "Mug", "home", Decimal("90.00"), 1),), Decimal("0"),
                       "EUR", "", Decimal("90.00"))
    charge = ChargeFacts("T-1", "ORD-1", Decimal("90.00"), "EUR", Decimal("30.00"))

    class Approved:
        human_agent, human_comment, human_decision = "ana", "", "partial"
        approved_amount = Decimal("80.00")

    d = Processor._human(None, Approved(), order, charge)  # type: ignore[arg-type]
    assert d.amount == Decimal("60.00")
    assert "Capped at 60.00 (approved: 80.00)" in " ".join(d.reasons)
