from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from paths import ROOT, SELECTORS
from postgres import Postgres, running_postgres

from bots.config import Settings, load_settings
from bots.tools.demo import DEMO_SEED, demo_overrides, use_sandbox_credentials

# A unit test that takes longer than pyproject's `timeout` (30 s) is a hang (a lease that is
# never released, a server that never answers): it fails instead of stalling the suite.
# End-to-end tests drive a browser through whole runs and get this much instead.
E2E_TIMEOUT_S = 600

# Hypothesis: 200 examples per property in the test command; `--hypothesis-profile
# mutation` (scripts/mutation.sh) runs 30, since every mutant reruns the properties.
hypothesis_settings.register_profile("default", max_examples=200, deadline=None)
hypothesis_settings.register_profile("mutation", max_examples=30, deadline=None)
hypothesis_settings.load_profile("default")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--perf", action="store_true",
                     help="also run the wall-clock tests (marker perf): on a quiet machine, "
                          "never in CI; speed is measured with `refund-bots bench`")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_perf = pytest.mark.skip(reason="wall-clock assertion: run with --perf on a quiet machine")
    for item in items:
        if "perf" in item.keywords and not config.getoption("--perf"):
            item.add_marker(skip_perf)
        if "e2e" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _quicker_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt with a smaller work factor in tests: the same code path, a fraction of the CPU.

    The real cost (werkzeug's default, ~0.1-0.4 s a hash) would make every test that creates
    a few console users slow on a shared machine; what is tested is that scrypt is used.
    """
    import bots.queue.staff

    monkeypatch.setattr(bots.queue.staff, "HASH_METHOD", "scrypt:2048:8:1")


@dataclass
class Sandbox:
    orders_url: str
    payments_url: str
    orders_db: Path
    payments_db: Path
    process: object
    skin: str = "default"

    def refunds(self) -> list[dict[str, object]]:
        """The payment portal's own record of refunds: the ground truth for the tests."""
        with sqlite3.connect(self.payments_db) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM refunds ORDER BY id")]

    def set_faults(self, **fields: object) -> None:
        self.process.set_faults(**fields)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL cluster for the whole session (a fresh database per test)."""
    with running_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty queue database on each backend the bots support."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.sqlite'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.url()


@pytest.fixture
def sandbox(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """Both legacy apps, freshly seeded, on free loopback ports, in their own process.

    Parametrize it indirectly with a skin name to get another look of the same apps.
    """
    from bots.sandbox.server import SandboxProcess

    skin = getattr(request, "param", "default")
    use_sandbox_credentials()
    with SandboxProcess(data_dir=tmp_path / "sandbox", seed=DEMO_SEED,
                        today=date.today(), skin=skin) as sb:
        yield Sandbox(sb.orders_url, sb.payments_url, sb.orders_db, sb.payments_db, sb, skin)


def skin_selectors(skin: str) -> dict[str, object]:
    """The settings a skin needs: its selector files, nothing else."""
    if skin == "default":
        return {}
    folder = SELECTORS / "examples" / skin
    return {"orders__selectors": str(folder / "orders.yaml"),
            "payments__selectors": str(folder / "payments.yaml")}


@pytest.fixture
def settings_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Settings pointing at a sandbox, with the run folders under tmp_path."""
    monkeypatch.chdir(ROOT)  # the settings name config/ and selectors/ files relative to it

    def make(sb: Sandbox, **overrides: object) -> Settings:
        return load_settings(None, runs_dir=str(tmp_path / "runs"),
                             **{**demo_overrides(tmp_path, sb.orders_url, sb.payments_url),
                                **skin_selectors(sb.skin), **overrides})

    return make
