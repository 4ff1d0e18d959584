"""Crash and stall points: the chaos harness's way to kill or freeze a runner on purpose."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bots.tools.chaos import process_state

SCRIPT = ("from bots.work.crashpoints import crash_point\n"
          "crash_point('before_submit'); print('woke', flush=True)\n"
          "crash_point('before_submit'); print('again', flush=True)\n")


def run_script(env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFUND_BOTS_")}
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env={**clean, **env},
                            stdout=subprocess.PIPE, text=True)


def test_a_stall_point_freezes_the_process_once_until_sigcont() -> None:
    proc = run_script({"REFUND_BOTS_STALL_POINTS": "before_submit:1"})
    try:
        deadline = time.monotonic() + 25
        while process_state(proc.pid) != "T":
            assert proc.poll() is None and time.monotonic() < deadline, "it never froze"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=25)
    finally:
        proc.kill()
    assert out.split() == ["woke", "again"]  # the second pass does not freeze again
    assert proc.returncode == 0


def test_a_crash_point_kills_and_no_plan_does_nothing() -> None:
    crashed = run_script({"REFUND_BOTS_CRASH_POINTS": "before_submit:1"})
    assert crashed.wait(timeout=25) == -signal.SIGKILL
    calm = run_script({})
    out, _ = calm.communicate(timeout=25)
    assert calm.returncode == 0 and out.split() == ["woke", "again"]
