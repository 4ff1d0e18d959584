from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from paths import ROOT
from rich.console import Console

from bots.config import load_settings
from bots.queue import Queue, runner_id
from bots.work.exit_codes import EXIT_LOCKED, EXIT_OK
from bots.work.scheduler import RUN_LOCK, Scheduler


def _config(tmp_path: Path, jobs: list[dict]) -> Path:
    data = yaml.safe_load((ROOT / "config/settings.yaml").read_text())
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(b"From: Ann <ann@example.com>\nMessage-ID: <a@x>\n"
                                  b"Subject: refund ORD-100001\n\nplease refund\n")
    data.update(queue_url=f"sqlite:///{tmp_path / 'q.sqlite'}", runs_dir=str(tmp_path / "runs"),
                policy=str(ROOT / "config/policy.yaml"), signals=str(ROOT / "config/signals.yaml"),
                intake={"sources": [{"kind": "eml_folder", "path": str(inbox)}]},
                schedule={"jobs": jobs})
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_once_runs_every_job(tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "intake", "every_minutes": 5}])
    settings = load_settings(config)
    assert Scheduler(settings, config, Console()).run_forever(once=True) == EXIT_OK
    assert len(Queue(settings.queue_url).cases()) == 1


def test_a_job_is_skipped_while_another_run_holds_the_lock(tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "intake", "every_minutes": 5}])
    settings = load_settings(config)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = runner_id("scheduler", pid=other.pid)  # another live scheduler process
        assert Queue(settings.queue_url).acquire_lock(RUN_LOCK, owner, 600)
        assert Scheduler(settings, config, Console()).run_job("intake") == EXIT_LOCKED
        assert Queue(settings.queue_url).cases() == []
    finally:
        other.kill()
        other.wait()
    # Its holder died without releasing it: the next job takes the lock over.
    assert Scheduler(settings, config, Console()).run_job("intake") == EXIT_OK


def test_sigterm_stops_the_loop_cleanly(tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "intake", "every_minutes": 60}])
    proc = subprocess.Popen([sys.executable, "-m", "bots", "schedule", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # wait for its readiness line, not for a fixed time
        seen.append(line)
        if line.startswith("scheduled:"):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    assert "scheduler stopped" in out


def test_a_holder_in_the_old_format_or_alive_elsewhere_is_trusted_until_expiry(
        tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "intake", "every_minutes": 5}])
    settings = load_settings(config)
    # "host:pid:tag" says nothing provable (a recycled pid, another container): wait it out
    assert Queue(settings.queue_url).acquire_lock(RUN_LOCK, "elsewhere:1:scheduler", 600)
    assert Scheduler(settings, config, Console()).run_job("intake") == EXIT_LOCKED


def test_process_jobs_take_no_lock_so_runners_scale_out(tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "process", "every_minutes": 5}])
    settings = load_settings(config)
    assert Queue(settings.queue_url).acquire_lock(RUN_LOCK, "elsewhere:1:scheduler", 600)
    assert Scheduler(settings, config, Console()).run_job("process") != EXIT_LOCKED


def test_the_first_job_runs_at_start_and_next_times_are_told_and_logged(
        tmp_path: Path) -> None:
    config = _config(tmp_path, [{"command": "intake", "every_minutes": 60}])
    proc = subprocess.Popen([sys.executable, "-m", "bots", "schedule", "--config", str(config)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the job ran at start, then says when it runs next
        seen.append(line)
        if "next at" in line and any("at start" in s for s in seen):
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    assert "scheduled: intake every 60 minutes, next at" in out
    assert "Intake: 1 new request(s)" in out
    log = (tmp_path / "runs" / "scheduler.log").read_text()
    assert "intake finished with exit status 0" in log and "scheduler stopped" in log


def test_retention_deletes_only_old_run_folders(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from bots.runs import prune_runs

    runs = tmp_path / "runs"
    names = ["20261101-000000-aaaa", "20261125-000000-bbbb", "20261130-000000-cccc",
             "20261201-000000-dddd"]
    for name in [*names, "sandbox", "outbox"]:
        (runs / name).mkdir(parents=True)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    gone = prune_runs(runs, keep_days=10, keep_runs=None, now=now)
    assert [p.name for p in gone] == ["20261101-000000-aaaa"]
    gone = prune_runs(runs, keep_days=None, keep_runs=1, now=now,
                      protect={"20261125-000000-bbbb"})
    assert [p.name for p in gone] == ["20261130-000000-cccc"]
    assert sorted(p.name for p in runs.iterdir()) == ["20261125-000000-bbbb",
                                                      "20261201-000000-dddd", "outbox",
                                                      "sandbox"]


def test_retention_reads_both_run_id_forms_and_nothing_else(tmp_path: Path) -> None:
    """Run ids gained a "T" on 2026-12-03: folders named the old way are still runs."""
    from datetime import UTC, datetime

    from bots.runs import prune_runs

    runs = tmp_path / "runs"
    for name in ["20261101-000000-aaaa", "20261102T000000-bbbb", "20261201T000000-cccc",
                 "20261101X000000-dddd", "20261101T000000-ABCD"]:
        (runs / name).mkdir(parents=True)
    gone = prune_runs(runs, keep_days=10, keep_runs=None,
                      now=datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert sorted(p.name for p in gone) == ["20261101-000000-aaaa", "20261102T000000-bbbb"]


def test_a_run_id_never_reads_as_a_card_number() -> None:
    """Card masking blanks any 13-19 digits that pass Luhn, whatever their grouping: the
    old ids (18 digits and hyphens) were blanked out of about one run in seventy's audit
    texts. 20,000 random seconds of a year, with random suffixes, are left as they are."""
    import random
    from datetime import UTC, datetime, timedelta

    from bots.intake.extract import mask_secrets
    from bots.runs import RUN_ID, new_run_id, run_started

    old = "20261202-153911-7232"  # a real id of the old form, Luhn-valid
    assert mask_secrets(f"run {old} started") != f"run {old} started"
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(20_000):
        when = start + timedelta(seconds=rng.randrange(366 * 86_400))
        run_id = new_run_id(when)
        text = f"run {run_id} started; run {run_id[:-4]}{rng.randrange(10_000):04d} too"
        assert mask_secrets(text) == text, text
        assert RUN_ID.fullmatch(run_id) and run_started(run_id) == when.replace(microsecond=0)
