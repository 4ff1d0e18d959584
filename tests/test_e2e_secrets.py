"""No secret in any artifact, and a wrong password tried once (issue #12), end to end.

A whole run against the sandbox with passwords full of the characters encodings change
(`~*%+&=`), customer text full of test card numbers and CVVs, and faults that make the
bot leave traces and screenshots (and log in again mid-case); then every file the run
left (queue database, logs, workbooks' XML, outbox, traces and everything inside their
zips) is searched for the passwords in any encoding and for the card numbers.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import Sandbox

from bots.legacy.artifacts import secret_variants
from bots.queue import Queue
from bots.sandbox.data import build_dataset, pick_scenarios
from bots.tools.demo import DEMO_SEED, INPUTS, customer_of, prepare_inputs
from bots.work.exit_codes import EXIT_ERROR
from bots.work.pipeline import execute

pytestmark = pytest.mark.e2e

ORDERS_PASSWORD = "Or~d*e%r+s&=9 x"
PAYMENTS_PASSWORD = "P~a*y%2B+m&e=n\"t'"
CARDS = ("4111111111111111", "5555555555554444", "378282246310005", "4000056655665556")
CVV = "737"


@pytest.fixture
def secret_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    from bots.sandbox.server import SandboxProcess

    for app, password in (("ORDERS", ORDERS_PASSWORD), ("PAYMENTS", PAYMENTS_PASSWORD)):
        monkeypatch.setenv(f"SANDBOX_{app}_PASSWORD", password)
        monkeypatch.setenv(f"REFUND_BOTS_{app}_PASSWORD", password)
    with SandboxProcess(data_dir=tmp_path / "sandbox", seed=DEMO_SEED,
                        today=date.today()) as sb:
        yield Sandbox(sb.orders_url, sb.payments_url, sb.orders_db, sb.payments_db, sb)


def _card_texts() -> list[str]:
    """Every test card, written the ways customers write them."""
    seps = (" ", "\u00a0", ".", "-", "_", "/", "\n", "")
    return [f"card {sep.join(c[i:i + 4] for i in range(0, len(c), 4))} CVV {CVV}"
            for c in CARDS for sep in seps]


def _write_card_mails(folder: Path, order_number: str, email: str) -> None:
    for i, text in enumerate(_card_texts()):
        msg = EmailMessage()
        msg["From"] = f"Ada <{email}>"
        msg["To"] = "refunds@shop.example"
        msg["Subject"] = f"refund {order_number} {CARDS[i % len(CARDS)]}"
        msg["Date"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        msg["Message-ID"] = f"<card-{i}@mail.example>"
        msg.set_content(f"Please refund {order_number}, it arrived broken. {text}\n"
                        f"password={ORDERS_PASSWORD}")
        (folder / f"card-{i}.eml").write_bytes(bytes(msg))


def _members(path: Path, data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """A file's bytes and, for zips (traces, xlsx) at any depth, every member's."""
    yield str(path), data
    if depth < 3 and data[:2] == b"PK":
        try:
            import io

            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    yield from _members(path / info.filename, z.read(info), depth + 1)
        except zipfile.BadZipFile:
            pass


def _leaks(root: Path) -> list[str]:
    needles = {p: secret_variants(p) for p in (ORDERS_PASSWORD, PAYMENTS_PASSWORD, *CARDS)}
    # A card with any one separator between its digits (space, NBSP in UTF-8, dot...).
    card_runs = [re.compile(rb"(?:\D{0,2})".join(ch.encode() for ch in c)) for c in CARDS]
    cvv = re.compile(rb"(?i)(?:cvv|cvc)\W{0,3}" + CVV.encode())
    found = []
    # What the bot wrote: the run folders (logs, workbooks, traces, screenshots), the
    # queue database and its journal, the outbox. The inputs hold the secrets on purpose.
    files = [p for p in (*(root / "runs").rglob("*"), *(root / "outbox").rglob("*"),
                         *root.glob("queue.sqlite*")) if p.is_file()]
    assert len(files) > 10
    for path in files:
        for name, data in _members(path, path.read_bytes()):
            for secret, variants in needles.items():
                if any(v in data for v in variants):
                    found.append(f"{name}: {secret[:4]}... in some encoding")
            for c, rx in zip(CARDS, card_runs, strict=True):
                if rx.search(data):
                    found.append(f"{name}: card {c[:4]}... with separators")
            if cvv.search(data):
                found.append(f"{name}: a CVV")
    return found


def test_no_secret_in_any_artifact_of_a_run(secret_sandbox: Sandbox, settings_for,
                                            tmp_path: Path,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    prepare_inputs(tmp_path, ds, today)
    scenario = pick_scenarios(ds)["duplicate"]
    _write_card_mails(tmp_path / INPUTS["email"], scenario.order_number,
                      customer_of(ds, scenario).email)
    settings = settings_for(secret_sandbox)
    # Faults: 500 pages (system exceptions leave traces and screenshots) and sessions that
    # expire every few pages (the bot logs in again in the middle of a traced attempt).
    secret_sandbox.set_faults(error_rate=0.2, session_max_requests=6)
    execute(settings, "run", intake=True, process=True, today=today)
    assert list((tmp_path / "runs").rglob("traces/*.zip")), "the faults left no trace to check"
    out, err = capfd.readouterr()
    (tmp_path / "runs" / "console.txt").write_text(out + err, encoding="utf-8")
    leaks = _leaks(tmp_path)
    assert not leaks, "\n".join(leaks[:20])


@pytest.mark.parametrize("preflight", [True, False], ids=["health-check", "processing"])
def test_a_refused_password_stops_the_run_and_is_tried_once(secret_sandbox: Sandbox,
                                                            settings_for, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str],
                                                            preflight: bool) -> None:
    """Refused before the first case (the selector health check) or by a worker's login."""
    today = date.today()
    ds = build_dataset(seed=DEMO_SEED, today=today)
    prepare_inputs(tmp_path, ds, today)
    monkeypatch.setenv("REFUND_BOTS_PAYMENTS_PASSWORD", "wrong~password&=")
    settings = settings_for(secret_sandbox, processing__workers=2,
                            health__before_process=preflight)
    from collections import Counter

    from bots.legacy.base import LegacyApp

    typed: Counter[str] = Counter()  # passwords typed into each app's login form
    real_login_once = LegacyApp._login_once

    async def counting(self: LegacyApp) -> None:
        typed[self.app_name] += 1
        await real_login_once(self)

    monkeypatch.setattr(LegacyApp, "_login_once", counting)

    assert execute(settings, "run", intake=True, process=True, today=today) == EXIT_ERROR

    queue = Queue(settings.queue_url)
    assert not queue.cases(["failed"]) and not queue.cases(["processing"])
    assert queue.pending_count() > 0  # every case stays queued for the next run
    assert secret_sandbox.refunds() == [] or all(
        r["operator"] != "refund.bot" for r in secret_sandbox.refunds())
    # The payment portal refused its password once, and nothing tried it again: not the
    # second worker, not a retry, not the report's reconciliation.
    assert typed["payment portal"] == 1, typed
    assert typed["order system"] <= 2, typed  # accepted, once per worker
    run_log = next((tmp_path / "runs").rglob("run.log")).read_text(encoding="utf-8")
    out = " ".join((capfd.readouterr().out + run_log).split())
    assert "refused" in out and "secret PAYMENTS_PASSWORD" in out
