"""Settings: YAML under `config/`, overridden by environment variables.

Secrets are deliberately not part of the settings model: they are looked up by
name at the moment they are needed (`secret()`), from the environment or the OS
keyring, so that no settings dump, log line or report can ever contain them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bots.alerts import AlertSettings
from bots.console.settings import ConsoleSettings
from bots.credentials import ENV_PREFIX, secret
from bots.errors import ConfigError
from bots.intake.sources import AnySource
from bots.notify import NotifySettings
from bots.reports.threeway import ReconcileSettings

DEFAULT_SETTINGS = Path("config/settings.yaml")
__all__ = ["ConfigError", "Settings", "load_settings", "secret"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrowserSettings(_Model):
    executable: str | None = None  # None: find one (see bots.legacy.browser)
    channel: str | None = None  # "chrome" / "msedge" when using an installed Chrome/Edge
    headless: bool = True
    slow_mo_ms: int = 0
    timeout_ms: int = 15_000
    trace_failures: bool = True
    # A screencast in the trace too. Off: the trace still holds a DOM snapshot of every
    # action (the trace viewer shows them), and a failure saves full-page screenshots; the
    # screencast made recording cost more than the rest of the trace.
    trace_screenshots: bool = False


class AppSettings(_Model):
    url: str
    username: str
    password_secret: str  # the secret's name, e.g. ORDERS_PASSWORD -> $REFUND_BOTS_ORDERS_PASSWORD
    selectors: Path


class ProcessingSettings(_Model):
    workers: int = Field(1, ge=1, le=16)
    max_attempts: int = Field(3, ge=1, le=20)
    backoff_seconds: float = Field(2.0, ge=0)
    backoff_max_seconds: float = Field(60.0, ge=0)
    lease_seconds: int = Field(300, ge=10)
    circuit_breaker: int = Field(5, ge=1)  # consecutive system exceptions that stop the run
    step_retries: int = Field(2, ge=0, le=10)  # page loads retried in place before failing
    # How long a refund submit may still be running on the portal after our side gave up
    # (null: 4x the browser timeout, at least 30 s). Until then a pending refund whose key
    # is not in the history is never declared absent: the case waits.
    submit_grace_seconds: float | None = Field(None, ge=0)


class IntakeSettings(_Model):
    sources: list[AnySource] = []
    # Processes reading the folder sources' files while intake stores; None: one per
    # CPU but one; 0: none (all read in the intake process). See bots.intake.parallel.
    readers: int | None = Field(None, ge=0)


class ScheduleJob(_Model):
    command: Literal["run", "intake", "process", "report", "notify"] = "run"
    every_minutes: int | None = Field(None, ge=1)
    at: str | None = None  # "HH:MM", daily


class RetentionSettings(_Model):
    """How long run folders (`runs/<run-id>/`) are kept; null: forever."""

    keep_days: int | None = Field(None, ge=1)
    keep_runs: int | None = Field(None, ge=1)


class ScheduleSettings(_Model):
    jobs: list[ScheduleJob] = []
    run_at_start: bool = True  # run the first job at once instead of waiting a period
    log: Path | None = None  # the scheduler's own log (default <runs_dir>/scheduler.log)
    retention: RetentionSettings = RetentionSettings()


class HealthSettings(_Model):
    """Selector health (`doctor --live`, and before `process` works its first case)."""

    before_process: bool = True  # check the selectors on live pages before the first case
    order_number: str | None = None  # a known order to check on; None: the first one listed


class Settings(_Model):
    queue_url: str = "sqlite:///runs/queue.sqlite"
    runs_dir: Path = Path("runs")
    policy: Path = Path("config/policy.yaml")
    signals: Path | None = Path("config/signals.yaml")  # null: no fraud screening
    browser: BrowserSettings = BrowserSettings()
    orders: AppSettings
    payments: AppSettings
    processing: ProcessingSettings = ProcessingSettings()
    intake: IntakeSettings = IntakeSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    notify: NotifySettings | None = None  # null: customers are not notified by the bots
    health: HealthSettings = HealthSettings()
    # issue 15: clear-text connections to other machines are refused unless this says so
    # (bots/transport.py); `doctor` warns while it is on.
    allow_insecure_transport: bool = False
    # issue 15: the report's three-way check against the order notes (bots/reports/threeway.py)
    reconcile: ReconcileSettings = ReconcileSettings()

    @field_validator("runs_dir")
    @classmethod
    def _runs_dir_is_a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"runs_dir {value} exists and is not a folder")
        return value
    console: ConsoleSettings = ConsoleSettings()  # the ops console; also SLA and four eyes
    alerts: AlertSettings | None = None  # null: no alerts to ops staff


# Environment variables that override one setting each (documented in the README).
_ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "QUEUE_URL": ("queue_url",),
    "RUNS_DIR": ("runs_dir",),
    "POLICY": ("policy",),
    "BROWSER": ("browser", "executable"),
    "BROWSER_CHANNEL": ("browser", "channel"),
    "HEADLESS": ("browser", "headless"),
    "ORDERS_URL": ("orders", "url"),
    "ORDERS_USER": ("orders", "username"),
    "PAYMENTS_URL": ("payments", "url"),
    "PAYMENTS_USER": ("payments", "username"),
    "WORKERS": ("processing", "workers"),
    "CONSOLE_URL": ("console", "public_url"),
}


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read settings from YAML (default `config/settings.yaml`), then env, then overrides.

    `overrides` take dotted keys with `__` (e.g. `orders__url=...`) so the CLI and
    the demo can point the bots at a sandbox without writing files.
    """
    # An explicit path (-c) always wins: never a silent fall-back to another configuration.
    path = Path(path) if path is not None else Path(
        os.environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_SETTINGS)
    if not path.exists():
        raise ConfigError(f"settings file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{path} is not a settings file (it is a directory or a device)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: settings must be a YAML mapping (key: value lines)")
    for name, keys in _ENV_OVERRIDES.items():
        if (value := os.environ.get(ENV_PREFIX + name)) not in (None, ""):
            _set(data, keys, value)
    for dotted, value in overrides.items():
        if value is not None:
            _set(data, tuple(dotted.split("__")), value)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid settings:\n{exc}") from exc


def _set(data: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
