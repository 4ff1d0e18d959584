"""A real, throwaway PostgreSQL server for tests: the tools' own (`bots.tools.pgcluster`).

Several runners on several machines share one PostgreSQL queue; the claim (FOR UPDATE
SKIP LOCKED), the fencing and the migration lock behave differently there than on
SQLite, so the tests run against the real server: a cluster in a temporary folder,
owned by the `postgres` system user (`initdb` refuses root), on a free loopback port,
with a password for TCP logins so that a wrong one can be tested. When PostgreSQL is
not installed the tests skip locally but fail under CI (`CI` set).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from bots.tools.pgcluster import (
    PostgresUnavailable,
    check_server_installed,
    database_factory,
    free_port,
    throwaway_postgres,
)

PASSWORD = "pg~*%+&=secret"  # TCP logins need it (scram), so a wrong one can be tested

__all__ = ["PASSWORD", "Postgres", "free_port", "require_postgres", "running_postgres"]


def require_postgres() -> None:
    """Skip (or, under CI, fail) when the server is not installed."""
    try:
        check_server_installed()
    except PostgresUnavailable as exc:
        reason = f"{exc}: run scripts/test-services.sh as root (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)


class Postgres:
    """A running cluster; `url()` gives a SQLAlchemy URL for a fresh database in it."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.port = make_url(server_url).port
        self._new_database = database_factory(server_url)

    def create_database(self) -> str:
        return str(make_url(self._new_database()).database)

    def url(self, database: str | None = None, password: str = PASSWORD) -> str:
        return (f"postgresql+psycopg://postgres:{quote(password, safe='')}@127.0.0.1:"
                f"{self.port}/{database or self.create_database()}")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    require_postgres()
    with throwaway_postgres(password=PASSWORD) as server:
        yield Postgres(server)


def blocked_on_a_lock(engine: Engine, thread: threading.Thread, *, advisory: bool = False
                      ) -> bool:
    """Whether `thread` comes to wait on a lock (seen in `pg_stat_activity`) before it ends.

    For tests that hold one transaction open and check that another one waits for it.
    """
    waits = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                 + (" AND wait_event = 'advisory'" if advisory else ""))
    with engine.connect() as watch:
        while thread.is_alive():
            if watch.execute(waits).scalar_one() > 0:
                return True
            watch.rollback()  # a fresh snapshot of the activity view each time
            time.sleep(0.01)
    return False
