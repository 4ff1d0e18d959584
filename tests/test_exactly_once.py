"""The two double refunds of issue 11, reproduced end to end: each must stay impossible.

1. A hung submit: the portal holds the refund POST longer than the bot's page timeout and
   then carries it out. The bot must not read "not in the history yet" as "absent".
2. A stalled runner: runner A freezes (SIGSTOP) right before the submit, past its lease;
   runner B takes the case over and pays; A wakes up and must not pay again.

Both ask for a small amount (well under half the charge), so the portal's balance check
would accept a second identical refund: only the bot's exactly-once logic prevents it.
Ground truth is the portal's own database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from random import Random

import pytest
import yaml
from paths import CONFIG, ROOT

from bots.config import Settings
from bots.decide.policy import load_policy
from bots.queue import CaseState, Queue
from bots.sandbox.data import build_dataset
from bots.tools.chaos import SmallRefund, small_refund_requests, write_portal_forms
from bots.tools.demo import DEMO_SEED
from bots.work.exit_codes import EXIT_OK
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e
WAIT_S = 180  # generous upper bounds for a loaded machine; each wait ends on an event


def one_small_request(folder: Path, seed: int) -> SmallRefund:
    ds = build_dataset(seed=DEMO_SEED, today=date.today())
    [req] = small_refund_requests(ds, load_policy(CONFIG / "policy.yaml"), 1, Random(seed))
    write_portal_forms(folder, [req], datetime.now(UTC))
    return req


def paid_for(sandbox, order_number: str | None) -> list[Decimal]:  # noqa: ANN001
    return [Decimal(str(r["amount"])) for r in sandbox.refunds()
            if r["order_number"] == order_number]


def test_a_refund_post_held_past_the_page_timeout_is_paid_once(sandbox, settings_for,
                                                               tmp_path: Path) -> None:
    req = one_small_request(tmp_path / "forms", seed=11)
    settings = settings_for(
        sandbox, intake__sources=[{"kind": "portal", "path": str(tmp_path / "forms")}],
        browser__timeout_ms=3000, processing__step_retries=0,
        processing__backoff_seconds=0.2, processing__submit_grace_seconds=25)
    # Every refund POST is held 12 s (the bot gives up after 3 s), then carried out.
    sandbox.set_faults(hang_rate=1.0, hang_seconds=12.0, hang_paths=r"/refund$",
                       hang_methods="POST")

    code = execute(settings, "run", intake=True, process=True)

    assert paid_for(sandbox, req.order_number) == [Decimal(str(req.amount))]
    assert code == EXIT_OK
    [case] = Queue(settings.queue_url).cases()
    [refund] = [r for r in sandbox.refunds() if r["order_number"] == req.order_number]
    assert case.state == CaseState.DONE and case.refund_number == refund["refund_id"]
    events = [a.event for a in Queue(settings.queue_url).audit_trail(case.id)]
    assert "deferred" in events, events  # it waited for the submit still running


# -- a stalled runner -------------------------------------------------------------------------

def write_settings(settings: Settings, path: Path) -> Path:
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    return path


def process_state(pid: int) -> str:
    """The kernel's state letter for a process (T: stopped), '' once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def wait_for(what: str, check, timeout: float = WAIT_S) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def runner_a(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holds runner A's process; killed with its browser whatever the test's outcome."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)


def start_stalling_runner(settings: Settings, tmp_path: Path, point: str,
                          runner_a: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Runner A: `refund-bots process` in a process that freezes itself (SIGSTOP) at `point`."""
    log = (tmp_path / "runner-a.log").open("wb")
    a = subprocess.Popen(
        [sys.executable, "-m", "bots", "process", "--config",
         str(write_settings(settings, tmp_path / "settings.yaml"))],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "REFUND_BOTS_STALL_POINTS": f"{point}:1"})
    runner_a.append(a)
    wait_for(f"runner A to stall at {point}", lambda: process_state(a.pid) in ("T", ""))
    assert a.poll() is None, (tmp_path / "runner-a.log").read_text()
    return a


def test_a_runner_stalled_past_its_lease_does_not_pay_after_another_took_over(
        sandbox, settings_for, tmp_path: Path, queue_url: str,
        runner_a: list[subprocess.Popen[bytes]]) -> None:
    req = one_small_request(tmp_path / "forms", seed=12)
    # The lease must cover the longest submit: timeout x (step retries + 2) + 10 s = 16 s.
    settings = settings_for(
        sandbox, queue_url=queue_url,
        intake__sources=[{"kind": "portal", "path": str(tmp_path / "forms")}],
        browser__timeout_ms=2000, processing__step_retries=1, processing__lease_seconds=20,
        processing__backoff_seconds=0.2)
    assert execute(settings, "intake", intake=True, process=False) == EXIT_OK
    queue = Queue(settings.queue_url)
    [case] = queue.cases()

    # Runner A freezes itself (SIGSTOP) right before the submit, its intent recorded.
    a = start_stalling_runner(settings, tmp_path, "before_submit", runner_a)
    assert [i.state for i in queue.intents(case.id)] == ["pending"]

    # A's lease runs out while it is frozen; runner B takes the case over and pays.
    def lease_expired() -> bool:
        held = queue.get_case(case.id)
        return held is not None and held.locked_until is not None and \
            held.locked_until.replace(tzinfo=UTC) < datetime.now(UTC)

    wait_for("runner A's lease to run out", lease_expired)
    assert execute(settings, "process", intake=False, process=True) == EXIT_OK
    assert paid_for(sandbox, req.order_number) == [Decimal(str(req.amount))]

    # A wakes up: it must notice it lost the case and touch nothing.
    os.killpg(a.pid, signal.SIGCONT)
    a.wait(timeout=WAIT_S)
    output = (tmp_path / "runner-a.log").read_text(errors="replace")
    assert paid_for(sandbox, req.order_number) == [Decimal(str(req.amount))], output
    done = queue.get_case(case.id)
    assert done is not None and done.state == CaseState.DONE
    assert done.refund_number == next(r["refund_id"] for r in sandbox.refunds()
                                      if r["order_number"] == req.order_number)
    runs = sorted((tmp_path / "runs").glob("*/run.log"))
    assert any("abandoned" in p.read_text(errors="replace") for p in runs), output


def test_a_runner_paused_between_its_last_check_and_the_click_never_clicks_late(
        sandbox, settings_for, tmp_path: Path, queue_url: str,
        runner_a: list[subprocess.Popen[bytes]]) -> None:
    """The window the lease alone cannot close: A checked its lease and stamped the intent,
    then froze before the click, longer than its lease and the in-flight grace. B declares
    the submit absent and pays. A wakes up with the click still to do: it must decline it."""
    req = one_small_request(tmp_path / "forms", seed=13)
    settings = settings_for(
        sandbox, queue_url=queue_url,
        intake__sources=[{"kind": "portal", "path": str(tmp_path / "forms")}],
        browser__timeout_ms=2000, processing__step_retries=1, processing__lease_seconds=20,
        processing__submit_grace_seconds=20, processing__backoff_seconds=0.2)
    assert execute(settings, "intake", intake=True, process=False) == EXIT_OK
    queue = Queue(settings.queue_url)
    [case] = queue.cases()

    a = start_stalling_runner(settings, tmp_path, "after_last_check", runner_a)
    [intent] = queue.intents(case.id)
    assert intent.state == "pending" and intent.submit_started_at is not None  # stamped

    def b_may_declare_it_absent() -> bool:  # A's lease and the grace since its stamp are over
        held = queue.get_case(case.id)
        stamp = intent.submit_started_at.replace(tzinfo=UTC)  # type: ignore[union-attr]
        return held is not None and held.locked_until is not None and \
            held.locked_until.replace(tzinfo=UTC) < datetime.now(UTC) and \
            (datetime.now(UTC) - stamp).total_seconds() > 21

    wait_for("runner A's lease and grace to run out", b_may_declare_it_absent)
    assert execute(settings, "process", intake=False, process=True) == EXIT_OK
    assert paid_for(sandbox, req.order_number) == [Decimal(str(req.amount))]

    os.killpg(a.pid, signal.SIGCONT)  # A wakes up right before its click
    a.wait(timeout=WAIT_S)
    output = (tmp_path / "runner-a.log").read_text(errors="replace")
    assert paid_for(sandbox, req.order_number) == [Decimal(str(req.amount))], output
    assert "declined" in output, output
    done = queue.get_case(case.id)
    assert done is not None and done.state == CaseState.DONE
