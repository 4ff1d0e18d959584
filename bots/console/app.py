"""The console's Flask app: settings, security, pages.

Security, on every response: session cookies HttpOnly + SameSite=Strict (+ Secure behind
HTTPS), a CSRF token on every form (Flask-WTF), login rate-limited (Flask-Limiter), Jinja's
autoescaping of every value (customer text is shown as text, never as markup), and a
Content-Security-Policy that allows no script at all: the console needs none.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Response, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect
from loguru import logger

from bots.config import Settings
from bots.console import auth, views
from bots.credentials import secret
from bots.errors import ConfigError
from bots.queue import Queue
from bots.queue.staff import Staff

CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def create_app(settings: Settings, *, secret_key: str | None = None) -> Flask:
    """The console for these settings (its queue database, runs folder, SLA, four eyes)."""
    app = Flask(__name__)
    cfg = settings.console
    app.config.update(
        SECRET_KEY=secret_key or _secret_key(cfg.secret_key_secret),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=cfg.cookie_secure,
        SESSION_COOKIE_NAME="refund_bots_console",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=cfg.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the session: a long case review is fine
        LOGIN_RATE_LIMIT=cfg.login_rate_limit,
        MAX_CONTENT_LENGTH=64 * 1024,  # forms only
    )
    queue = Queue(settings.queue_url)
    app.extensions["refund_bots_settings"] = settings
    app.extensions["refund_bots_queue"] = queue
    app.extensions["refund_bots_staff"] = Staff.on(queue)
    CSRFProtect(app)
    auth.limiter.init_app(app)
    app.before_request(auth.load_user)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.jinja_env.filters.update(views.FILTERS)
    app.after_request(_headers)
    _errors(app)
    return app


def _secret_key(name: str) -> str:
    try:
        return secret(name)
    except ConfigError:  # not set: a fresh key, sessions end on restart
        logger.warning("console: ${} is not set: a random session key is used, everyone logs "
                       "in again after a restart", "REFUND_BOTS_" + name)
        return secrets.token_urlsafe(32)


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _errors(app: Flask) -> None:
    def page(code: int, title: str, message: str) -> Any:
        return render_template("error.html", title=title, message=message), code

    app.register_error_handler(CSRFError, lambda e: page(
        400, "Form expired", "The form was sent without a valid token (an old page, or "
        "another site posting it). Reload the page and try again."))
    app.register_error_handler(403, lambda e: page(
        403, "Not allowed", "Your role does not allow this."))
    app.register_error_handler(404, lambda e: page(404, "Not found", "No such page."))
    app.register_error_handler(429, lambda e: page(
        429, "Too many attempts", "Too many login attempts: wait a minute and try again."))
