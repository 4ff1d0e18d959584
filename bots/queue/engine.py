"""Connecting to the queue database and bringing its schema up to date, safely.

SQLite (one machine) and PostgreSQL (several runners on several machines) behave alike:
- every write transaction takes the write lock at its start (SQLite: `BEGIN IMMEDIATE`;
  PostgreSQL: row locks and conditional UPDATEs), so a read-then-write inside one
  transaction never races another runner;
- the schema is created and upgraded by Alembic migrations under a lock, so two runners
  starting at once on an empty database create it once;
- a database that cannot be reached, refuses the password, or was upgraded by a newer
  refund-bots is a `QueueError` with a plain message (the CLI exits 1), never a traceback.
"""

from __future__ import annotations

import fcntl
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session

from bots.errors import ConfigError
from bots.transport import secure_postgres_url

MIGRATION_LOCK_ID = 7_316_846_513  # pg_advisory_lock key: "refund-bots schema migration"


class QueueError(ConfigError):
    """The queue database cannot be used: the message says why and what to do."""


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable queue URL>"


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise QueueError(f"queue_url is not a database URL: {exc}") from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    parsed = secure_postgres_url(parsed)  # issue 15: remote PostgreSQL over TLS by default
    try:
        engine = create_engine(parsed, future=True, pool_pre_ping=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise QueueError(f"no database driver for {safe_url(url)}: {exc} (PostgreSQL URLs "
                         f"look like postgresql+psycopg://user@host:5432/db)") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers work while one runner writes; busy_timeout makes writers queue up
    # instead of failing with "database is locked" when several runners share the file.
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE: the write lock is taken when the transaction starts, so a transaction
    # that reads and then writes can never find its snapshot outdated by another runner.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def session_for(engine: Engine) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(engine, expire_on_commit=False) as s, s.begin():
        yield s


# -- migrations -------------------------------------------------------------------------


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("bots.queue") / "migrations"))
    return cfg


def head_revision() -> str:
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise QueueError("refund-bots is installed without its queue migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to this version's head (no-op when it is there already)."""
    head = head_revision()
    try:
        if current_revision(engine) == head:
            return
        with _migration_lock(engine) as conn:
            _upgrade(conn, head)
    except OperationalError as exc:
        raise QueueError(unreachable_message(engine.url.render_as_string(hide_password=True),
                                             exc)) from None


def _upgrade(conn: Connection, head: str) -> None:
    current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return  # another runner did it while we waited for the lock
    if current is not None and current not in {s.revision for s in _script().walk_revisions()}:
        raise QueueError(f"the queue database has schema revision {current}, which this "
                         f"refund-bots does not know (newest known: {head}): it was upgraded "
                         f"by a newer refund-bots. Upgrade refund-bots on this machine; the "
                         f"bots will not touch a schema they do not understand.")
    cfg = _config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, head)  # 0001 keeps the tables a 0.1 queue (no migrations) has
    if conn.in_transaction():
        conn.commit()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that alone may migrate: advisory lock (PostgreSQL) or file lock (SQLite)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
            conn.commit()
            try:
                yield conn
            finally:
                if conn.in_transaction():
                    conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
                conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        with engine.connect() as conn:
            yield conn
        return
    with open(f"{database}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.connect() as conn:
                yield conn
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def unreachable_message(where: str, exc: DBAPIError) -> str:
    """What went wrong connecting, in words, without the password."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    low = detail.lower()
    if "password authentication failed" in low or "authentication failed" in low:
        hint = "the database refused the user or password (check the queue URL's credentials)"
    elif "does not exist" in low and "database" in low:
        hint = "the database does not exist (create it, e.g. createdb)"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low:
        hint = "nothing answers at that address (is the database server running?)"
    elif "unable to open database file" in low:
        hint = "the SQLite file cannot be opened (check the folder exists and is writable)"
    else:
        hint = detail
    return f"queue database {where}: {hint}"
