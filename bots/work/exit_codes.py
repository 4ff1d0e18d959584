"""Exit status of a run, for the scheduler (cron, systemd) that launched it.

0 done; 1 could not run (settings, browser, sandbox); 3 done, but cases failed or the
reconciliation found problems; 4 stopped by the circuit breaker (the legacy apps kept
failing; remaining cases stay queued); 5 another run holds the lock.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PROBLEMS = 3
EXIT_CIRCUIT = 4
EXIT_LOCKED = 5
