"""What every part of the queue stands on: the engine, the schema check, transactions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Result
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from bots.queue.engine import make_engine, migrate, session_for


class Store:
    """A connection to one queue database, its schema brought up to date on opening."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        migrate(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction (on SQLite it holds the write lock from its first statement)."""
        with session_for(self.engine) as s:
            yield s


def rowcount(result: Result[object]) -> int:
    """Rows an UPDATE/DELETE matched: its conditions are how runners hand work over."""
    return result.rowcount if isinstance(result, CursorResult) else 0
