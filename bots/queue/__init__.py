"""The durable work queue: requests, cases, leases, refund intents, audit trail, runs.

Everything a bot learns is written here before it acts on it, so a crash at any point
leaves enough on disk for the next runner to carry on without paying twice. SQLite is
the embedded default (one machine, any number of runners); PostgreSQL serves runners on
several machines. One module per concern:

- `schema` the tables; `engine` connecting and migrating (`migrations/`, Alembic);
- `intake` the producer side (requests, cases, follow-ups, quarantine);
- `leases` claims and every fenced write a runner makes; `identity` who holds a lease;
- `intents` the exactly-once refund intents; `decisions` people's decisions;
- `audit` the trail; `locks` named leases for what must be single; `views` reading.
"""

from __future__ import annotations

from bots.queue.audit import AuditTrail
from bots.queue.base import rowcount
from bots.queue.breaks import BreakError, BreakRow, Breaks, BreakState, Sighting
from bots.queue.decisions import Decisions
from bots.queue.engine import QueueError, safe_url
from bots.queue.identity import holder_is_dead, runner_id
from bots.queue.intake import INSERT_BATCH, IntakeStore, Stored, case_key_for
from bots.queue.intents import CustomerLimit, CustomerLimitReached, Intents
from bots.queue.leases import LeaseLost, Leases
from bots.queue.locks import LockHeld, Locks
from bots.queue.schema import (
    AuditRow,
    Base,
    Case,
    CaseState,
    IntentState,
    Lease,
    LockRow,
    Money,
    NotificationRow,
    NotificationState,
    QuarantineRow,
    RefundIntent,
    RequestRow,
    RunRow,
    UTCDateTime,
    case_ref,
    utcnow,
)
from bots.queue.views import CaseFilter, Views


class Queue(IntakeStore, Leases, Intents, Decisions, AuditTrail, Breaks, Locks, Views):
    """Producer/consumer API over the queue database (see the modules for each concern)."""


__all__ = [
    "INSERT_BATCH", "AuditRow", "Base", "BreakError", "BreakRow", "BreakState", "Breaks",
    "Sighting", "Case", "CaseFilter", "CaseState", "CustomerLimit",
    "CustomerLimitReached", "IntentState", "Lease", "LeaseLost", "LockHeld", "LockRow", "Money",
    "NotificationRow", "NotificationState", "QuarantineRow", "Queue", "QueueError",
    "RefundIntent", "RequestRow", "RunRow", "Stored", "UTCDateTime", "case_key_for", "case_ref",
    "holder_is_dead", "rowcount", "runner_id", "safe_url", "utcnow",
]
