"""Who holds a lease: a runner identity that can be proven dead, never a bare pid.

`host|boot|pidns|pid|start|instance`: the host name, the kernel's boot id, the pid
namespace, the pid and the process start time (so a recycled pid or a container sharing
the host name is never mistaken for the holder), and a random instance id. A holder is
*provably* dead only when it ran on this very kernel and pid namespace and its process is
gone or is another process now; anything else (another machine, a container we cannot
see into, an identity in an older format) is trusted until its lease runs out.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from pathlib import Path

SEP = "|"


@functools.cache
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8] or "noboot"
    except OSError:
        return "noboot"


@functools.cache
def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "nons"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "unknown"
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else "unknown"


def runner_id(tag: str, *, pid: int | None = None) -> str:
    """This process's identity, with a tag saying what it is (worker name, scheduler...)."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname().replace(SEP, "_")[:60]
    start = _start_time(pid) or "unknown"
    parts = (host, _boot_id(), _pid_namespace(), str(pid), start, secrets.token_hex(4))
    return SEP.join(parts) + SEP + tag.replace(SEP, "_")[:80]


def holder_is_dead(owner: str) -> bool:
    """True only when `owner` certainly is no longer running (see the module docstring)."""
    parts = owner.split(SEP)
    if len(parts) < 6:
        return False  # not our format: trust the lease
    host, boot, pidns, pid, start = parts[:5]
    if (host != socket.gethostname().replace(SEP, "_")[:60] or boot != _boot_id()
            or pidns != _pid_namespace() or not pid.isdigit()):
        return False
    now = _start_time(int(pid))
    if now is None:
        return True  # no such process on this kernel: it died
    return start != "unknown" and now != "unknown" and now != start  # the pid was recycled


def same_process(owner: str) -> bool:
    """Is `owner` an identity of this very process (any instance)?"""
    parts = owner.split(SEP)
    return (len(parts) >= 6 and parts[3] == str(os.getpid())
            and parts[1] == _boot_id() and parts[2] == _pid_namespace())
