"""Fresh PostgreSQL databases for the chaos and scale tools: on a given server or a throwaway one.

Several runners share one PostgreSQL queue in production; the proofs (`chaos --runners N`,
`bench scale`) must run on the same. Each round needs an empty queue, so the tools make a
new database per round: on the server a `--queue-url` names (its user needs CREATEDB), or
on a cluster of their own in a temporary folder (`--postgres`: Debian's `postgresql`
server binaries, run as the `postgres` system user because `initdb` refuses root), stopped
and removed on exit.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError


class PostgresUnavailable(RuntimeError):
    """No server to use: the message says what is missing and how to get it."""


def database_factory(server_url: str) -> Callable[[], str]:
    """A function that creates a new empty database on `server_url`'s server; its URL."""
    url = make_url(server_url)
    if not url.drivername.startswith("postgresql"):
        raise PostgresUnavailable(f"{url.drivername}: --queue-url must be a PostgreSQL URL "
                                  "(postgresql+psycopg://user@host:port/db)")

    def create() -> str:
        name = f"{_PREFIX}{uuid.uuid4().hex[:12]}"
        _on_server(server_url, f'CREATE DATABASE "{name}"',
                   f"cannot create a database on {url.host}:{url.port}")
        return url.set(database=name).render_as_string(hide_password=False)

    return create


def drop_database(server_url: str, url: str) -> None:
    """Drop a database that `database_factory(server_url)` made (its name says so; any
    other is refused): a benchmark's pass leaves nothing behind, neither on a user's
    server nor for autovacuum to work through while the next pass is measured."""
    name = make_url(url).database or ""
    if not name.startswith(_PREFIX):
        raise ValueError(f"{name!r} was not made by database_factory: not dropped")
    _on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
               f"cannot drop the database {name}")


def _on_server(server_url: str, sql: str, failure: str) -> None:
    """Run `sql` outside a transaction (CREATE and DROP DATABASE need that); a failure is
    PostgresUnavailable, `failure` then the server's first line."""
    engine = create_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    except SQLAlchemyError as exc:
        raise PostgresUnavailable(f"{failure}: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


_PREFIX = "chaos_"


def _bin_dir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise PostgresUnavailable("PostgreSQL server binaries not found: apt-get install postgresql "
                              "(or give --queue-url of a server)")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*args: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise PostgresUnavailable(f"{Path(args[0]).name} failed: "
                                  f"{(done.stderr or done.stdout).strip()[-500:]}")


def check_server_installed() -> Path:
    """The server binaries' folder; PostgresUnavailable says what is missing."""
    bin_dir = _bin_dir()
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("the postgres system user is missing "
                                      "(apt-get install postgresql creates it)") from None
    return bin_dir


@contextmanager
def throwaway_postgres(password: str | None = None) -> Iterator[str]:
    """A PostgreSQL server of our own on a free loopback port; yields its server URL.

    With a `password`, TCP logins need it (scram-sha-256), so that a wrong one can be
    tested; without, they are trusted. Stopping and removing are not waited for: a
    loaded machine's slow shutdown, or removing hundreds of databases' files, must not
    count against whatever ran last.
    """
    bin_dir = check_server_installed()
    base = Path(tempfile.mkdtemp(prefix="refund-bots-pg-"))
    data = base / "data"
    data.mkdir()
    auth = ["-A", "trust"]
    if password is not None:
        pwfile = base / "pw"
        pwfile.write_text(password + "\n")
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    if os.geteuid() == 0:
        for path in base.iterdir():
            shutil.chown(path, "postgres")
        shutil.chown(base, "postgres")
    port = free_port()
    try:
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), *auth, "-U", "postgres",
                     "--no-sync")
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o",
                     f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
                     f"-c max_connections=300", "-l", str(data / "server.log"), "-w", "start")
        login = f":{quote(password, safe='')}" if password is not None else ""
        yield f"postgresql+psycopg://postgres{login}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                       + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-W",
                          "stop"], capture_output=True, timeout=60, check=False)
        subprocess.Popen(["rm", "-rf", "--", str(base)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
