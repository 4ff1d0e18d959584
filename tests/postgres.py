"""A real, throwaway PostgreSQL server for tests: its own cluster in a temp folder.

Several runners on several machines share one PostgreSQL queue; the claim (FOR UPDATE
SKIP LOCKED), the fencing and the migration lock behave differently there than on
SQLite, so the tests run against the real server. `initdb` refuses root, so the cluster
belongs to the `postgres` system user (Debian's package creates it); it listens on a
free loopback port and a socket in its own folder, and is stopped and removed on exit.
When PostgreSQL is not installed the tests skip locally but fail under CI (`CI` set).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")


def _bin_dir() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return None


def require_postgres() -> Path:
    found = _bin_dir()
    missing = []
    if found is None:
        missing.append("PostgreSQL server (initdb, pg_ctl)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        missing.append("the postgres system user")
    if not missing and found is not None:
        return found
    reason = (f"{', '.join(missing)} not installed: run scripts/test-services.sh as root "
              "(apt-get install postgresql)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PASSWORD = "pg~*%+&=secret"  # TCP logins need it (scram), so a wrong one can be tested


class Postgres:
    """A running cluster; `url()` gives a SQLAlchemy URL for a fresh database in it."""

    def __init__(self, bin_dir: Path, folder: Path, port: int) -> None:
        self.bin_dir, self.folder, self.port = bin_dir, folder, port

    def _as_postgres(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *args], check=True, capture_output=True, text=True,
                              timeout=60)

    def create_database(self, name: str | None = None) -> str:
        name = name or f"q_{uuid.uuid4().hex[:10]}"
        self._as_postgres(str(self.bin_dir / "createdb"), "-h", str(self.folder), "-p",
                          str(self.port), "-U", "postgres", name)
        return name

    def url(self, database: str | None = None, password: str = PASSWORD) -> str:
        return (f"postgresql+psycopg://postgres:{quote(password, safe='')}@127.0.0.1:"
                f"{self.port}/{database or self.create_database()}")


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    bin_dir = require_postgres()
    base = Path(tempfile.mkdtemp(prefix="refund-bots-pg-"))
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
    pg = Postgres(bin_dir, data, free_port())
    pwfile = base / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    pg._as_postgres(str(bin_dir / "initdb"), "-D", str(data), "--auth-local=trust",
                    "--auth-host=scram-sha-256", "-U", "postgres", f"--pwfile={pwfile}",
                    "--no-sync")
    options = (f"-p {pg.port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
               f"-c max_connections=200")
    pg._as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                    str(data / "server.log"), "-w", "start")
    try:
        yield pg
    finally:
        # -m immediate: nothing to keep; not waited for (-W), so a loaded machine's slow
        # shutdown never counts against the last test's timeout.
        subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                       + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-W",
                          "stop"], capture_output=True, timeout=20, check=False)
        # Hundreds of test databases are tens of thousands of files: removing them took
        # over 30 s on a loaded machine, failing the last test's teardown. Not waited for.
        subprocess.Popen(["rm", "-rf", "--", str(base)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
