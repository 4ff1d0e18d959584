"""The chaos harness: kill and freeze the bots at random moments, prove nobody is paid twice.

Each round starts a fresh sandbox, a fresh queue (SQLite, or a new PostgreSQL database)
and the demo inputs plus small-refund requests (each well under half its charge, so the
portal's balance check would accept a duplicate: only the bot's exactly-once logic stands
in the way). Then `--runners N` processes of `refund-bots run` work the queue at once,
relaunched as they end, while the harness draws a fate for each:

- **crash point**: it SIGKILLs itself at a named point (right before the submit, between
  the portal's confirmation and recording the refund number, after recording, after the
  order note; see bots.work.crashpoints);
- **timer**: SIGKILLed from outside (the whole process group, browser too) at a random
  moment after it took its first case;
- **stall**: frozen (SIGSTOP) past its lease, at the stall point right before the submit
  or from outside at a random moment of its work, while the others take its case over;
  then SIGCONT;
- **clean**: left alone.

The sandbox also holds a share of the refund POSTs longer than the bots' page timeout
and then carries them out (hung submits). A kill or a freeze counts only when it lands
on a runner holding a case (a crash or stall point always does); one that hits a runner
still starting, reading the inputs or waiting on an empty queue is logged, not counted.
When the budget is spent, clean runs drain the queue and the round is checked in the
portal's own database, the queue and the outbox (see bots.tools.chaos_verify).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from random import Random

import yaml

from bots.config import Settings, load_settings
from bots.decide.policy import load_policy
from bots.queue import CaseState, Queue
from bots.queue.identity import SEP
from bots.tools.chaos_data import (
    SmallRefund,
    expected_refunds,
    small_refund_requests,
    write_portal_forms,
)
from bots.tools.chaos_verify import portal_refunds, verify_round
from bots.tools.demo import DEMO_SEED, demo_overrides, prepare_inputs
from bots.work.exit_codes import EXIT_CIRCUIT, EXIT_OK, EXIT_PROBLEMS

__all__ = ["ChaosPlan", "ChaosResult", "RoundResult", "SmallRefund", "expected_refunds",
           "run_chaos", "small_refund_requests", "write_portal_forms"]

CRASH_PLAN = "before_submit:0.15,after_submit:0.35,after_record:0.15,after_note:0.15"
STALL_PLAN = "before_submit:0.6"
FATES = (("crash point", 0.3), ("timer", 0.3), ("stall", 0.25), ("clean", 0.15))


@dataclass(frozen=True)
class ChaosPlan:
    """How hard a round shakes the bots; the defaults are the long proof's."""

    runners: int = 1
    events_per_round: int = 0  # kills + stalls per round (0: 4, or 3 per runner)
    small_refunds: int = 30  # small-refund requests added to the demo's (as many as fit)
    hang_rate: float = 0.25  # share of refund POSTs the portal holds past the timeout
    timeout_ms: int = 4000  # the bots' page timeout
    hang_seconds: float = 15.0  # how long a held POST waits before the portal carries it out
    grace_seconds: float = 30.0  # processing.submit_grace_seconds: longer than any hang
    lease_seconds: int = 25  # must cover timeout x (step_retries + 2) + 10 s
    step_retries: int = 1
    max_attempts: int = 10  # kills count as attempts: do not set cases aside too soon
    with_demo: bool = True  # the demo's requests on every channel too, not only small ones
    opening: tuple[str, ...] = ()  # fates of a round's first launches (then drawn at random)
    crash_plan: str = CRASH_PLAN  # REFUND_BOTS_CRASH_POINTS of a "crash point" runner
    stall_plan: str = STALL_PLAN  # REFUND_BOTS_STALL_POINTS of a "stall point" runner

    @property
    def per_round(self) -> int:
        return self.events_per_round or (4 if self.runners == 1 else 3 * self.runners)


@dataclass
class RoundResult:
    round: int
    kills: int = 0
    stalls: int = 0
    idle: int = 0  # kills/stalls that landed on an empty queue: not counted
    runs: int = 0
    problems: list[str] = field(default_factory=list)
    refunds: int = 0
    told: int = 0
    resent: int = 0
    deferred: int = 0  # times a case waited for a submit that may still be running
    takeovers: int = 0  # cases claimed from a runner that died or stalled
    abandoned: int = 0  # cases a woken runner gave up because another held them
    how: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return self.kills + self.stalls


@dataclass
class ChaosResult:
    rounds: list[RoundResult] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name)) for r in self.rounds)

    @property
    def kills(self) -> int:
        return self.total("kills")

    @property
    def stalls(self) -> int:
        return self.total("stalls")

    @property
    def events(self) -> int:
        return self.kills + self.stalls

    @property
    def runs(self) -> int:
        return self.total("runs")

    @property
    def refunds(self) -> int:
        return self.total("refunds")

    @property
    def how(self) -> Counter[str]:
        return sum((r.how for r in self.rounds), Counter())

    @property
    def problems(self) -> list[str]:
        return [f"round {r.round}: {p}" for r in self.rounds for p in r.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.kills} kill(s) and {self.stalls} stall(s) ({dict(self.how)}; "
                f"{self.total('idle')} more on an empty queue, not counted), {self.runs} run(s), "
                f"{len(self.rounds)} round(s): {self.refunds} refund(s) in the portal, "
                f"{self.total('told')} contact(s) told ({self.total('resent')} re-sent with the "
                f"same id), {self.total('deferred')} wait(s) for a submit in flight, "
                f"{self.total('takeovers')} takeover(s), {self.total('abandoned')} case(s) "
                f"abandoned by a woken runner")


def run_chaos(folder: Path, *, kills: int, seed: int, plan: ChaosPlan | None = None,
              new_queue_url: Callable[[], str] | None = None,
              say: Callable[[str], None] = print) -> ChaosResult:
    """Rounds until `kills` kills and stalls have landed on a queue with work in it.

    `new_queue_url` gives each round an empty queue database (PostgreSQL); None: a SQLite
    file in the round's folder.
    """
    plan = plan or ChaosPlan()
    rng = Random(seed)
    result = ChaosResult()
    n = 0
    while result.events < kills:
        n += 1
        budget = min(plan.per_round, kills - result.events)
        url = new_queue_url() if new_queue_url else None
        res = _round(folder / f"round-{n:03d}", n, budget, rng, plan, url)
        result.rounds.append(res)
        say(f"round {n}: {res.kills} kill(s), {res.stalls} stall(s) ({dict(res.how)}; "
            f"{res.idle} idle) in {res.runs} run(s), {res.refunds} refund(s), {res.told} "
            f"told, {res.deferred} wait(s), {res.takeovers} takeover(s): "
            f"{'OK' if not res.problems else '; '.join(res.problems)}")
        if n >= 3 and result.events == 0:
            raise RuntimeError("three rounds without a single kill landing on work: the bots "
                               "finish before the harness can strike (see the round logs)")
    return result


# -- one round ------------------------------------------------------------------------------

def _round(folder: Path, n: int, budget: int, rng: Random, plan: ChaosPlan,
           queue_url: str | None) -> RoundResult:
    from bots.sandbox.data import build_dataset
    from bots.sandbox.faults import FaultConfig
    from bots.sandbox.server import SandboxProcess

    res = RoundResult(n)
    today = date.today()
    folder.mkdir(parents=True, exist_ok=True)
    faults = FaultConfig(hang_rate=plan.hang_rate, hang_seconds=plan.hang_seconds,
                         hang_paths=r"/refund$", hang_methods="POST", seed=rng.randrange(10**6))
    with SandboxProcess(data_dir=folder / "sandbox", seed=DEMO_SEED, today=today,
                        faults=faults) as sb:
        ds = build_dataset(seed=DEMO_SEED, today=today)
        reqs = prepare_inputs(folder, ds, today) if plan.with_demo else []
        settings, config = _settings(folder, sb.orders_url, sb.payments_url, plan, queue_url)
        policy = load_policy(settings.policy)
        small = small_refund_requests(ds, policy, plan.small_refunds, rng,
                                      avoid=[r.email for r in reqs], per_customer=3)
        write_portal_forms(folder / "forms", small, datetime.now(UTC), prefix=f"chaos{n}")
        queue = Queue(settings.queue_url)
        before = {r["refund_id"] for r in portal_refunds(sb.payments_db)}
        shaker = _Shaker(config, rng, plan, queue, folder / "logs", res)
        try:
            shaker.shake(budget)
            shaker.drain()
        finally:
            shaker.kill_all()
        after = [r for r in portal_refunds(sb.payments_db) if r["refund_id"] not in before]
        res.refunds = len(after)
        verdict = verify_round(settings, queue, ds, [*reqs, *small], after, policy)
        res.problems, res.told, res.resent = verdict.problems, verdict.told, verdict.resent
        _count_recoveries(queue, settings, res)
    return res


def _settings(folder: Path, orders_url: str, payments_url: str, plan: ChaosPlan,
              queue_url: str | None) -> tuple[Settings, Path]:
    overrides = demo_overrides(folder, orders_url, payments_url)
    demo_sources = overrides.pop("intake__sources")
    sources = [*(demo_sources if plan.with_demo else []),  # type: ignore[misc]
               {"kind": "portal", "path": str(folder / "forms"), "name": "chaos forms"}]
    if queue_url:
        overrides["queue_url"] = queue_url
    settings = load_settings(
        None, runs_dir=str(folder / "runs"), **overrides, intake__sources=sources,
        signals=None,  # velocity rules would escalate a customer's second small refund
        browser__timeout_ms=plan.timeout_ms, browser__trace_failures=False,
        processing__backoff_seconds=0.2,
        processing__lease_seconds=plan.lease_seconds, processing__step_retries=plan.step_retries,
        processing__max_attempts=plan.max_attempts,
        processing__submit_grace_seconds=plan.grace_seconds)
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")), encoding="utf-8")
    return settings, path


def _count_recoveries(queue: Queue, settings: Settings, res: RoundResult) -> None:
    for case in queue.cases():
        for a in queue.audit_trail(case.id):
            res.deferred += a.event == "deferred"
            res.takeovers += a.event == "claimed" and "taken over" in (a.detail or "")
    for log in Path(settings.runs_dir).glob("*/run.log"):
        res.abandoned += log.read_text(encoding="utf-8", errors="replace").count("abandoned: ")


# -- the runners and what happens to them ---------------------------------------------------

def process_state(pid: int) -> str:
    """The kernel's state letter for a process (T: stopped, Z: zombie); '' once gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


@dataclass
class _Runner:
    proc: subprocess.Popen[bytes]
    fate: str
    n: int  # its number in the round (logs/run-NNN.log)
    strike_at: float | None = None  # timer kill or outside stall: when (once it took a case)
    look_at: float = 0.0  # when to look next whether it holds a case
    resume_at: float | None = None  # a stalled runner: when it gets SIGCONT
    struck: bool = False


class _Shaker:
    """Keeps `plan.runners` runs going, strikes them, counts what landed on work."""

    def __init__(self, config: Path, rng: Random, plan: ChaosPlan, queue: Queue, logs: Path,
                 res: RoundResult) -> None:
        self.config, self.rng, self.plan, self.queue, self.res = config, rng, plan, queue, res
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.slots: list[_Runner | None] = [None] * plan.runners
        self.started = time.monotonic()
        self.intake_done = False  # a run ended by itself, so it read every source first

    def _say(self, r: _Runner, what: str) -> None:
        """One line per launch, strike, wake-up and exit, in the round's chaos.log."""
        with (self.logs / "chaos.log").open("a", encoding="utf-8") as fh:
            fh.write(f"{time.monotonic() - self.started:8.1f}s  run {r.n:03d} pid {r.proc.pid} "
                     f"({r.fate}): {what}\n")

    def _holds_case(self, pid: int) -> bool:
        """Whether the runner with this pid holds a case now (its identity's pid field)."""
        return any((c.locked_by or "").split(SEP)[3:4] == [str(pid)]
                   for c in self.queue.cases([CaseState.PROCESSING]))

    # -- launching -------------------------------------------------------------------------

    def _launch(self, fate: str) -> _Runner:
        env = _env()
        env["REFUND_BOTS_CRASH_SEED"] = str(self.rng.random())
        if fate == "crash point":
            env["REFUND_BOTS_CRASH_POINTS"] = self.plan.crash_plan
        elif fate == "stall point" or (fate == "stall" and self.rng.random() < 0.5):
            env["REFUND_BOTS_STALL_POINTS"] = self.plan.stall_plan  # freezes before a submit
            fate = "stall point"
        # "timer" and "stall" (from outside) strike a while after the runner takes a case
        self.res.runs += 1
        runner = _Runner(self._start(env), fate, self.res.runs)
        self._say(runner, "started")
        return runner

    def _start(self, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"run-{self.res.runs:03d}.log").open("ab")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "bots", "run", "--config", str(self.config)],
                cwd=Path.cwd(), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own group: a kill takes its browser down too
        finally:
            log.close()

    def _fate(self) -> str:
        x, acc = self.rng.random(), 0.0
        for fate, share in FATES:
            acc += share
            if x < acc:
                return fate
        return "clean"

    # -- the loop ----------------------------------------------------------------------------

    def shake(self, budget: int) -> None:
        """Run and strike until `budget` strikes landed on work (or the work ran out)."""
        launches_left = budget * 8
        refills = max(1, len(self.slots) - 1)  # once the budget is spent: clean runners
        while True:
            for i, runner in enumerate(self.slots):
                if runner is not None and self._tend(runner):
                    self.slots[i] = runner = None
                if runner is not None or launches_left <= 0:
                    continue
                if self.res.runs and self.queue.pending_count() == 0 and self.queue.cases():
                    continue  # the work is done: nothing left to strike at this round
                if self.res.events < budget:
                    launches_left -= 1
                    opening = self.plan.opening[self.res.runs:self.res.runs + 1]
                    self.slots[i] = self._launch(opening[0] if opening else self._fate())
                elif refills > 0:  # a stalled runner sleeps on: the others work on
                    refills -= 1
                    self.slots[i] = self._launch("clean")
            if all(s is None for s in self.slots):
                return
            time.sleep(0.1)

    def _tend(self, r: _Runner) -> bool:
        """Strike or wake the runner when due; True once it has ended."""
        code = r.proc.poll()
        if code is not None:
            _kill_group(r.proc.pid, signal.SIGKILL)  # a browser it left behind
            self._say(r, f"exited with {code}")
            self.intake_done |= code in (EXIT_OK, EXIT_PROBLEMS, EXIT_CIRCUIT)
            if r.fate == "crash point" and code == -signal.SIGKILL:
                self._landed(r, "kills", "crash point")
            return True
        now = time.monotonic()
        if r.resume_at is not None:
            if now >= r.resume_at:
                _kill_group(r.proc.pid, signal.SIGCONT)
                self._say(r, "woken up (SIGCONT)")
                r.resume_at = None
            return False
        if r.fate == "stall point" and not r.struck and process_state(r.proc.pid) == "T":
            r.struck = True
            self._landed(r, "stalls", "stall point")  # it froze itself right before a submit
            r.resume_at = now + self._hold()
        elif r.fate in ("timer", "stall") and r.strike_at is None and now >= r.look_at:
            r.look_at = now + 0.5
            if self._holds_case(r.proc.pid):  # armed: strike somewhere in its work
                r.strike_at = now + self.rng.uniform(0.2, 8.0)
                self._say(r, f"holds a case; strikes in {r.strike_at - now:.1f}s")
        elif r.strike_at is not None and not r.struck and now >= r.strike_at:
            r.struck = True
            if r.fate == "timer":
                busy = self._holds_case(r.proc.pid)
                _kill_group(r.proc.pid, signal.SIGKILL)
                r.proc.wait(timeout=60)
                self._landed(r, "kills", "timer") if busy else self._idle(r, "SIGKILL")
                return True
            _kill_group(r.proc.pid, signal.SIGSTOP)
            if self._holds_case(r.proc.pid):
                self._landed(r, "stalls", "stall")
                r.resume_at = now + self._hold()
            else:
                self._idle(r, "SIGSTOP")
                _kill_group(r.proc.pid, signal.SIGCONT)
        return False

    def _hold(self) -> float:
        """Frozen past the lease, so that another runner may take the case over."""
        return self.plan.lease_seconds + self.rng.uniform(2.0, 6.0)

    def _landed(self, r: _Runner, kind: str, how: str) -> None:
        setattr(self.res, kind, getattr(self.res, kind) + 1)
        self.res.how[how] += 1
        self._say(r, f"{how}: counted as {kind[:-1]} {getattr(self.res, kind)}")

    def _idle(self, r: _Runner, what: str) -> None:
        """A strike at a runner that held no case (starting, intake, waiting): not counted."""
        self.res.idle += 1
        self._say(r, f"{what} while it held no case: not counted")

    def drain(self) -> None:
        """Clean runs (all runners at once) until no case is open; at least one when no run
        ended by itself, so that an intake a kill cut short is completed."""
        for _ in range(6):
            if self.intake_done and not self._open_cases():
                return
            procs = []
            for _ in range(self.plan.runners):
                self.res.runs += 1
                procs.append(self._start(_env()))
            for p in procs:
                p.wait(timeout=900)
                _kill_group(p.pid, signal.SIGKILL)
            self.intake_done = True

    def _open_cases(self) -> bool:
        return bool(self.queue.cases(list(CaseState.OPEN)))

    def kill_all(self) -> None:
        for r in self.slots:
            if r is not None:
                _kill_group(r.proc.pid, signal.SIGCONT)
                _kill_group(r.proc.pid, signal.SIGKILL)
                with suppress(subprocess.TimeoutExpired):
                    r.proc.wait(timeout=30)
        self.slots = [None] * len(self.slots)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _env() -> dict[str, str]:
    """The runners' environment: ours without any crash or stall plan of our own."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("REFUND_BOTS_CRASH_", "REFUND_BOTS_STALL_"))}
