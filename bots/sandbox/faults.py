"""Fault injection: the ways real legacy back-offices fail, on demand.

Bots are only as good as their handling of slow pages, 500s, hangs, expired sessions
and maintenance windows, so the sandbox can produce each of them, off by default and
changeable while it runs (`POST /_sandbox/faults`) so a test can break an app mid-flow.
Random draws come from one seeded generator per app, so a failing run can be replayed.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from flask import Flask, Response, jsonify, render_template, request

EXEMPT_PREFIXES = ("/_sandbox/", "/static/")


@dataclass
class FaultConfig:
    latency_ms: int = 0
    error_rate: float = 0.0  # share of requests answering a legacy 500 page
    error_paths: str | None = None  # only paths matching this regex fail (null: every path)
    hang_rate: float = 0.0  # share of requests that sleep `hang_seconds` before answering
    hang_seconds: float = 30.0
    # Only requests whose path matches this regex hang (null: every path), and only these
    # methods (comma-separated, e.g. "POST"; null: every method). A hang comes *before* the
    # app handles the request: a held refund POST is then carried out, after the client
    # may have given up on it (the "submit still running on the portal" case).
    hang_paths: str | None = None
    hang_methods: str | None = None
    session_max_age_s: float | None = None  # sessions expire this long after login
    session_max_requests: int | None = None  # ... or after this many requests
    maintenance: bool = False  # every page is the 503 maintenance page
    seed: int = 1

    def __post_init__(self) -> None:
        """Refuse a bad value where the config is made (CLI flags too), not at the first page."""
        for f in fields(self):
            setattr(self, f.name, _checked(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# field -> (accepted JSON types, may be null, minimum, maximum)
_RULES: dict[str, tuple[tuple[type, ...], bool, float | None, float | None]] = {
    "latency_ms": ((int,), False, 0, None),
    "error_rate": ((int, float), False, 0, 1),
    "error_paths": ((str,), True, None, None),
    "hang_rate": ((int, float), False, 0, 1),
    "hang_seconds": ((int, float), False, 0, None),
    "hang_paths": ((str,), True, None, None),
    "hang_methods": ((str,), True, None, None),
    "session_max_age_s": ((int, float), True, 0, None),
    "session_max_requests": ((int,), True, 0, None),
    "maintenance": ((bool,), False, None, None),
    "seed": ((int,), False, None, None),
}


def _checked(name: str, value: object) -> object:
    """The value for a field, or ValueError naming what is wrong (the caller shows it)."""
    if name not in _RULES:
        raise ValueError(f"unknown fault field {name!r}; known: {', '.join(_RULES)}")
    types, nullable, low, high = _RULES[name]
    if value is None:
        if not nullable:
            raise ValueError(f"{name} cannot be null")
        return None
    if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
        raise ValueError(f"{name} must be {' or '.join(t.__name__ for t in types)}")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and name == "hang_methods":
        return _methods(value)
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{name} is not a valid regex: {exc}") from exc
        return value
    if not isinstance(value, int | float):  # cannot happen: the other rules are all numbers
        raise ValueError(f"{name} must be a number")
    number = float(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be between {low} and {high}")
    return float(value) if float in types else value


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _methods(value: str) -> str:
    """'post, get' -> 'POST,GET'; ValueError on an empty list or an unknown method."""
    names = [m.strip().upper() for m in value.split(",") if m.strip()]
    if not names:
        raise ValueError("hang_methods must name at least one HTTP method (null: every method)")
    if unknown := [m for m in names if m not in HTTP_METHODS]:
        raise ValueError(f"hang_methods: unknown HTTP method(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(HTTP_METHODS))}")
    return ",".join(names)


def _hangs(cfg: FaultConfig, path: str, method: str) -> bool:
    """Whether this request is one the hang faults may hold (the draw comes after)."""
    if cfg.hang_paths is not None and not re.search(cfg.hang_paths, path):
        return False
    return cfg.hang_methods is None or method.upper() in cfg.hang_methods.split(",")


@dataclass(frozen=True)
class Verdict:
    """What the faults decided for one request: sleep first, then maybe a failure page."""

    sleep_s: float = 0.0
    failure: str | None = None  # "maintenance" | "error" | None


class FaultInjector:
    """The live fault settings of one app, shared by its request threads."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = replace(config) if config else FaultConfig()
        self._rng = random.Random(self._config.seed)

    @property
    def config(self) -> FaultConfig:
        """A snapshot: callers never see a half-applied update."""
        with self._lock:
            return replace(self._config)

    def update(self, changes: dict[str, object]) -> FaultConfig:
        """Change some fields at once (all or none); a new seed restarts the random draws."""
        checked = {name: _checked(name, value) for name, value in changes.items()}
        with self._lock:
            config = replace(self._config)
            for name, value in checked.items():  # each value checked against its field's rule
                setattr(config, name, value)
            self._config = config
            if "seed" in checked:
                self._rng = random.Random(self._config.seed)
            return replace(self._config)

    def decide(self, path: str = "/", method: str = "GET") -> Verdict:
        with self._lock:
            cfg = self._config
            sleep_s = cfg.latency_ms / 1000
            if cfg.maintenance:
                return Verdict(sleep_s, "maintenance")
            if (cfg.hang_rate > 0 and _hangs(cfg, path, method)
                    and self._rng.random() < cfg.hang_rate):
                sleep_s += cfg.hang_seconds
            if cfg.error_rate > 0 and (cfg.error_paths is None or re.search(
                    cfg.error_paths, path)) and self._rng.random() < cfg.error_rate:
                return Verdict(sleep_s, "error")
            return Verdict(sleep_s)


def is_exempt(path: str) -> bool:
    """The sandbox's own control endpoints must keep working while the app is 'broken'."""
    return path.startswith(EXEMPT_PREFIXES)


def error_page() -> Response:
    response = Response(render_template("shared/error500.html"), status=500)
    return response


def maintenance_page() -> Response:
    response = Response(render_template("shared/maintenance.html"), status=503)
    response.headers["Retry-After"] = "120"
    return response


def install_faults(app: Flask, injector: FaultInjector) -> None:
    """Hook the injector in front of every page and add the `/_sandbox/*` endpoints."""

    @app.before_request
    def _inject() -> Response | None:
        if is_exempt(request.path):
            return None
        verdict = injector.decide(request.path, request.method)
        if verdict.sleep_s:
            time.sleep(verdict.sleep_s)
        if verdict.failure == "maintenance":
            return maintenance_page()
        if verdict.failure == "error":
            return error_page()
        return None

    @app.get("/_sandbox/health")
    def _health() -> Response:
        return Response("ok", mimetype="text/plain")

    @app.get("/_sandbox/faults")
    def _get_faults() -> Response:
        return jsonify(injector.config.to_dict())

    @app.post("/_sandbox/faults")
    def _set_faults() -> tuple[Response, int] | Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(error="expected a JSON object of fault fields"), 400
        try:
            return jsonify(injector.update(body).to_dict())
        except ValueError as exc:
            return jsonify(error=str(exc)), 400


FAULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(FaultConfig))
