"""A real, throwaway Dovecot IMAP server for tests (plain IMAP + IMAPS on free loopback ports).

Mail intake bugs live in the protocol details (UIDs, flags, folder creation, TLS),
which a fake server would only imitate; Dovecot starts in well under a second, so
the tests talk to the real thing. Everything lives in one temp folder that is
removed on exit. When dovecot is not installed the tests skip locally but fail
under CI (`CI` set), so a broken CI image cannot pass by skipping everything.
"""

from __future__ import annotations

import contextlib
import copy
import grp
import imaplib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

DOVECOT = Path("/usr/sbin/dovecot")
START_TIMEOUT = 10.0
_FETCH_FLAGS = re.compile(rb"UID (\d+) FLAGS \(([^)]*)\)|FLAGS \(([^)]*)\) UID (\d+)")


def require_dovecot() -> None:
    """Skip (locally) or fail (under CI) when the servers the tests need are missing."""
    missing = [str(p) for p in (DOVECOT,) if not p.exists()]
    missing += [name for name in ("openssl",) if shutil.which(name) is None]
    if not missing:
        return
    reason = (f"{', '.join(missing)} not installed: run scripts/test-services.sh as root "
              "(apt-get install dovecot-imapd openssl)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dovecot:
    """Context manager: a Dovecot with one user, a self-signed certificate and a CA file.

    `cafile` is the server certificate itself (self-signed, with SANs for
    `localhost` and `127.0.0.1`), which is what a client must trust to verify it.
    """

    host = "127.0.0.1"

    def __init__(self, user: str = "refunds", password: str = "test-Pa55word!") -> None:
        self.user = user
        self.password = password
        self.port = 0
        self.ssl_port = 0
        self.dir = Path()
        self.cafile = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = True

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Dovecot:
        require_dovecot()
        try:
            self._start()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def _start(self) -> None:
        # mkdtemp is 0700; the unprivileged login/mail processes must be able to traverse it.
        self.dir = Path(tempfile.mkdtemp(prefix="refund-bots-dovecot-"))
        self.dir.chmod(0o755)
        self.cafile, key = self._make_certificate()
        self.port, self.ssl_port = free_port(), free_port()
        mail = self.dir / "mail"
        mail.mkdir()
        passwd = self.dir / "passwd.d"
        passwd.mkdir(mode=0o755)
        self._write_user(self.user, self.password)
        mail_user = "dovecot" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        entry = pwd.getpwnam(mail_user)
        os.chown(mail, entry.pw_uid, entry.pw_gid)
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._config(mail_user, passwd, key), encoding="utf-8")
        log = (self.dir / "stdout.log").open("wb")
        # -F: stay in the foreground, so that the process we stop is the one we started.
        self._proc = subprocess.Popen([str(DOVECOT), "-F", "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self._wait_ready()

    def _make_certificate(self) -> tuple[Path, Path]:
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30)
        return cert, key

    def _config(self, mail_user: str, passwd: Path, key: Path) -> str:
        root = os.geteuid() == 0
        login_user = "dovenull" if root else mail_user
        internal = "dovecot" if root else mail_user
        internal_group = "dovecot" if root else grp.getgrgid(os.getegid()).gr_name
        # Without root there is nothing to chroot into or switch users with.
        no_chroot = "" if root else "\n  chroot ="
        return f"""\
protocols = imap
listen = {self.host}
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
info_log_path = {self.dir}/dovecot.log
default_login_user = {login_user}
default_internal_user = {internal}
default_internal_group = {internal_group}
first_valid_uid = 1
disable_plaintext_auth = no
# A wrong password is answered at once (tests try some on purpose); the growing
# per-IP penalty is switched off below by making anvil's penalty socket unusable.
auth_failure_delay = 0
auth_mechanisms = plain login
ssl = yes
ssl_cert = <{self.cafile}
ssl_key = <{key}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}/%u
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={pwd.getpwnam(mail_user).pw_gid} home={self.dir}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.ssl_port}
    ssl = yes
  }}{no_chroot}
}}
service anvil {{{no_chroot}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.host}:{self.port}:\n{self.log()}")

    def add_user(self, user: str, password: str) -> Dovecot:
        """The same server seen as another (new, empty) mailbox user.

        Starting and stopping Dovecot costs about a second; a fresh user per test
        isolates tests just as well. Each user has its own passwd-file (`%u` in the
        path): one shared file would be re-read only when its mtime second changes.
        The returned view does not own the server: leaving it stops nothing.
        """
        self._write_user(user, password)
        view = copy.copy(self)
        view.user, view.password, view._proc, view._owner = user, password, None, False
        return view

    def _write_user(self, user: str, password: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._@-]+", user):
            raise ValueError(f"test user names are plain: {user!r}")
        entry = self.dir / "passwd.d" / user
        entry.write_text(f"{user}:{{PLAIN}}{password}\n", encoding="utf-8")
        entry.chmod(0o644)

    def _stop(self) -> None:
        if not self._owner:
            return
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self.dir != Path() and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in
                 (self.dir / "stdout.log", self.dir / "dovecot.log") if p.exists()]
        return "\n".join(parts)[-4000:]

    # -- mailbox helpers ------------------------------------------------------------------

    @contextlib.contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in plain IMAP connection (the tests' own view of the mailbox)."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            conn.login(self.user, self.password)
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.logout()

    def create(self, folder: str) -> None:
        with self.client() as conn:
            typ, data = conn.create(_quote(folder))
            if typ != "OK":
                raise RuntimeError(f"CREATE {folder} failed: {data}")

    def delete(self, folder: str) -> None:
        with self.client() as conn:
            typ, data = conn.delete(_quote(folder))
            if typ != "OK":
                raise RuntimeError(f"DELETE {folder} failed: {data}")

    def append(self, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
        """Deliver one raw message into `folder` (unseen unless `flags` says otherwise)."""
        with self.client() as conn:
            typ, data = conn.append(_quote(folder), f"({flags})" if flags else None,
                                    None, raw)
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {data}")

    def folders(self) -> list[str]:
        with self.client() as conn:
            _, data = conn.list()
        names = []
        for line in data:
            if isinstance(line, bytes):
                names.append(line.decode().rsplit(' "/" ', 1)[-1].strip('"'))
        return names

    def list(self, folder: str = "INBOX") -> list[tuple[int, tuple[str, ...]]]:
        """(uid, flags) of every message in `folder`, by uid; [] when the folder is missing."""
        with self.client() as conn:
            typ, _ = conn.select(_quote(folder), readonly=True)
            if typ != "OK":
                return []
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
        result = []
        for line in data:
            if not isinstance(line, bytes) or not (m := _FETCH_FLAGS.search(line)):
                continue
            uid = m.group(1) or m.group(4)
            flags = (m.group(2) if m.group(1) else m.group(3)).decode()
            result.append((int(uid), tuple(flags.split())))
        return sorted(result)


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
