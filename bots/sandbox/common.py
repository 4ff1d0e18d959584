"""What both legacy apps share: a DB connection per request, login with CSRF, server-side
sessions that can be made to expire, and the fault hooks.

The two apps are "different vendors" (own look, own number formats, own cookie) but a
bot meets the same login flow on both, so that flow is written once here.
"""

from __future__ import annotations

import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from flask import (
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse  # what `redirect` returns

from bots.sandbox.faults import FaultConfig, FaultInjector, install_faults, is_exempt

TEMPLATES = Path(__file__).resolve().parent / "templates"
PUBLIC_PATHS = ("/login", "/logout")


@dataclass
class SessionRecord:
    username: str
    started: float  # time.monotonic() at login
    requests: int = 0
    interstitial_pending: bool = False  # the skin's news page, until clicked through


class SessionStore:
    """Server-side sessions, so that expiry by age or request count can be enforced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, SessionRecord] = {}

    def create(self, username: str, interstitial: bool = False) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[sid] = SessionRecord(username, time.monotonic(),
                                                interstitial_pending=interstitial)
        return sid

    def pending(self, sid: str | None) -> bool:
        with self._lock:
            record = self._sessions.get(sid or "")
            return bool(record and record.interstitial_pending)

    def acknowledge(self, sid: str | None) -> None:
        with self._lock:
            if record := self._sessions.get(sid or ""):
                record.interstitial_pending = False

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def hit(self, sid: str | None, faults: FaultConfig) -> tuple[str | None, bool]:
        """Count one request on the session: (username or None, whether it just expired)."""
        with self._lock:
            record = self._sessions.get(sid or "")
            if record is None:
                return None, sid is not None
            record.requests += 1
            too_old = (faults.session_max_age_s is not None
                       and time.monotonic() - record.started > faults.session_max_age_s)
            too_busy = (faults.session_max_requests is not None
                        and record.requests > faults.session_max_requests)
            if too_old or too_busy:
                del self._sessions[sid or ""]
                return None, True
            return record.username, False


@dataclass(frozen=True)
class LoginForm:
    """How a skin's login looks: its address, template and field names."""

    path: str = "/login"
    template: str = "shared/login.html"
    username: str = "username"
    password: str = "password"
    interstitial: str | None = None  # a page every GET is sent to after login, until acked


@dataclass
class LegacySite:
    """Per-app state kept in `app.extensions["sandbox"]`."""

    name: str
    db_path: Path
    users: dict[str, str]
    home: str
    layout: str
    faults: FaultInjector
    sessions: SessionStore = field(default_factory=SessionStore)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    login: LoginForm = field(default_factory=LoginForm)


def site() -> LegacySite:
    return current_app.extensions["sandbox"]


def get_db() -> sqlite3.Connection:
    """One connection per request (sqlite3 connections must not cross threads)."""
    if "db" not in g:
        db = sqlite3.connect(site().db_path, timeout=15, isolation_level=None)
        db.row_factory = sqlite3.Row
        g.db = db
    return g.db


def utc_now() -> str:
    """Timestamps are stored and shown in UTC, `YYYY-MM-DD HH:MM:SS`, on both apps."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def current_user() -> str:
    return g.user


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok() -> bool:
    sent, expected = request.form.get("csrf_token", ""), session.get("csrf", "")
    return bool(expected) and hmac.compare_digest(sent, expected)


def safe_next(target: str | None, default: str) -> str:
    """Only redirect to a path on this app (no open redirect via ?next=)."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return default


def login_redirect(expired: bool) -> BaseResponse:
    here = request.full_path.rstrip("?") if request.method == "GET" else site().home
    params = {"next": here, **({"expired": "1"} if expired else {})}
    return redirect(site().login.path + "?" + urlencode(params))


def _require_login() -> BaseResponse | None:
    state = site()
    if is_exempt(request.path) or request.path in (*PUBLIC_PATHS, state.login.path):
        return None
    username, expired = state.sessions.hit(session.get("sid"), state.faults.config)
    if username is None:
        session.pop("sid", None)
        return login_redirect(expired)
    g.user = username
    page = state.login.interstitial
    if page and request.path != page and state.sessions.pending(session.get("sid")):
        here = request.full_path.rstrip("?") if request.method == "GET" else state.home
        return redirect(page + "?" + urlencode({"next": here}))
    return None


def acknowledge_interstitial() -> None:
    site().sessions.acknowledge(session.get("sid"))


def _login() -> BaseResponse | str:
    state = site()
    error = None
    form = state.login
    if request.method == "POST":
        username = request.form.get(form.username, "").strip()
        password = request.form.get(form.password, "")
        expected = state.users.get(username)
        if not csrf_ok():
            error = "Your form has expired. Please try again."
        elif expected is None or not hmac.compare_digest(password, expected):
            error = "Invalid username or password."
        else:
            state.sessions.drop(session.get("sid"))
            session["sid"] = state.sessions.create(username, bool(form.interstitial))
            return redirect(safe_next(request.args.get("next"), state.home))
    return render_template(form.template, error=error,
                           expired=request.args.get("expired") == "1")


def _logout() -> BaseResponse:
    site().sessions.drop(session.pop("sid", None))
    session.clear()
    return redirect(site().login.path)


def _unexpected(exc: Exception) -> Response | HTTPException:
    """Any crash looks like the legacy 500 page (the bots must cope with it anyway)."""
    if isinstance(exc, HTTPException):
        return exc
    current_app.logger.exception("unhandled error")
    return Response(render_template("shared/error500.html"), status=500)


def _close_db(_exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def create_legacy_app(import_name: str, *, name: str, db_path: Path,
                      faults: FaultConfig | None, users: dict[str, str], home: str,
                      layout: str, cookie_name: str, login: LoginForm | None = None) -> Flask:
    """A Flask app with the shared plumbing; the caller adds its own pages."""
    app = Flask(import_name, template_folder=str(TEMPLATES), static_folder=None)
    app.config.update(SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_NAME=cookie_name,
                      SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    injector = FaultInjector(faults)
    login = login or LoginForm()
    app.extensions["sandbox"] = LegacySite(name, Path(db_path), dict(users), home, layout,
                                           injector, login=login)
    install_faults(app, injector)  # first: a "down" app answers before checking sessions
    app.before_request(_require_login)
    app.teardown_appcontext(_close_db)
    app.register_error_handler(Exception, _unexpected)
    app.add_url_rule(login.path, "login", _login, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", _logout)
    app.add_url_rule("/", "home", lambda: redirect(home))
    app.jinja_env.globals.update(csrf_token=csrf_token, app_name=name, layout=layout)
    return app
