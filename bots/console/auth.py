"""Logging in and out, who is asking, and what their role lets them do.

The session cookie (Flask's, signed) holds the user id and the moment their password last
changed: a changed password or a deactivated user ends every session at once. Login is
rate-limited per address and per user name (flask-limiter), and a wrong user name costs
the same as a wrong password, so the form tells nobody which names exist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar, cast

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from bots.queue.staff import Role, Staff, UserRow

bp = Blueprint("auth", __name__)
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", default_limits=[])

F = TypeVar("F", bound=Callable[..., object])


def staff() -> Staff:
    return cast(Staff, current_app.extensions["refund_bots_staff"])


def _login_limit() -> str:
    return str(current_app.config["LOGIN_RATE_LIMIT"])


def _submitted_name() -> str:
    return "user:" + (request.form.get("username") or "").strip().lower()[:60]


def load_user() -> None:
    """Before every request: g.user is the logged-in, still valid user, or None."""
    g.user = None
    user_id, stamp = session.get("uid"), session.get("pw")
    if not isinstance(user_id, int):
        return
    user = staff().user_by_id(user_id)
    if user is None or not user.active or stamp != user.password_changed_at.isoformat():
        session.clear()
        return
    g.user = user


def current() -> UserRow:
    user = g.get("user")
    if user is None:
        abort(401)
    return cast(UserRow, user)


def login_required(view: F) -> F:
    @functools.wraps(view)
    def wrapped(*args: object, **kwargs: object) -> object:
        if g.get("user") is None:
            return redirect(url_for("auth.login", next=request.path))
        return view(*args, **kwargs)

    return cast(F, wrapped)


def roles(*allowed: Role) -> Callable[[F], F]:
    """The view is for these roles only (403 for the others)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: object, **kwargs: object) -> object:
            user = g.get("user")
            if user is None:
                return redirect(url_for("auth.login", next=request.path))
            if user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        return login_required(cast(F, wrapped))

    return decorate


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"])
@limiter.limit(_login_limit, methods=["POST"], key_func=_submitted_name)
def login() -> str | Response:
    target = request.args.get("next") or ""
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("views.inbox")  # never redirect to another site
    if request.method == "POST":
        user = staff().authenticate(request.form.get("username", ""),
                                    request.form.get("password", ""))
        if user is None:
            flash("Wrong user name or password.", "error")
            return render_template("login.html"), 401  # type: ignore[return-value]
        session.clear()  # a new session for the new identity
        session.permanent = True
        session["uid"], session["pw"] = user.id, user.password_changed_at.isoformat()
        return redirect(target)  # type: ignore[return-value]
    return render_template("login.html")


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    session.clear()
    return redirect(url_for("auth.login"))  # type: ignore[return-value]
