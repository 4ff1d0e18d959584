"""Named leases for what must be single (one scheduler job, one report writer).

Processing needs no global lock: cases are leased one by one (see `leases`). A lock held
by a holder that is provably dead (see `identity`) is taken over at once; any other
holder is trusted until its lease runs out.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from bots.queue.base import Store, rowcount
from bots.queue.identity import holder_is_dead
from bots.queue.schema import LockRow, utcnow


class LockHeld(Exception):
    """Another runner holds the lock."""


class Locks(Store):
    def acquire_lock(self, name: str, owner: str, ttl_seconds: float) -> bool:
        """Take the lock if free, expired or held by a dead holder; renew it if ours."""
        now = utcnow()
        expires = now + timedelta(seconds=ttl_seconds)
        with self.session() as s:
            row = s.get(LockRow, name)
            if row is None:
                try:
                    with s.begin_nested():
                        s.add(LockRow(name=name, owner=owner, expires_at=expires))
                    return True
                except IntegrityError:  # lost an insert race to another runner
                    return False
            free = or_(LockRow.expires_at < now, LockRow.owner == owner)
            if holder_is_dead(row.owner):
                free = or_(free, LockRow.owner == row.owner)
            return rowcount(s.execute(
                update(LockRow).where(LockRow.name == name, free)
                .values(owner=owner, expires_at=expires)
                .execution_options(synchronize_session=False))) == 1

    def release_lock(self, name: str, owner: str) -> None:
        with self.session() as s:
            row = s.get(LockRow, name)
            if row is not None and row.owner == owner:
                s.delete(row)

    def lock_owner(self, name: str) -> str | None:
        with self.session() as s:
            row = s.get(LockRow, name)
            return row.owner if row is not None and row.expires_at >= utcnow() else None
