"""Alerts to ops staff: email (SMTP) and a generic JSON webhook, once per condition and period.

An alert is a condition (a run that exited 3, escalations past their SLA...) with a line
of text and a link to the console page to look at. Before it is sent, a row keyed by the
condition and the current period is inserted into the `alerts` table: a second attempt in
the same period (another run, another scheduler, another machine) finds the row and sends
nothing, so a failing nightly run does not flood the team. What each channel answered is
kept on the row (`refund-bots alerts list`).

The webhook body carries `text` (what Slack and Teams incoming webhooks show) and the
structured fields (`condition`, `severity`, `link`, `details`) for anything else.
Webhook URLs carry their own secret: give the URL's secret name (`url_secret`), never the
URL in the settings file.
"""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Literal

import httpx
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from bots.credentials import secret
from bots.errors import ConfigError
from bots.notify import SmtpSettings, send_smtp
from bots.queue.base import Store
from bots.queue.schema import Base, UTCDateTime, utcnow

Severity = Literal["info", "warning", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookSettings(_Model):
    url: str | None = None  # only for URLs without a secret in them (a local receiver)
    url_secret: str | None = None  # the secret's name: $REFUND_BOTS_<NAME> or the keyring
    timeout_seconds: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSettings:
        if not self.url and not self.url_secret:
            raise ValueError("webhook needs url or url_secret")
        return self

    def resolved_url(self) -> str:
        return self.url or secret(self.url_secret or "")


class AlertSettings(_Model):
    enabled: bool = True
    email_to: list[str] = []
    from_address: str = "refund-bots@localhost"
    smtp: SmtpSettings | None = None
    webhook: WebhookSettings | None = None
    period_minutes: int = Field(60, ge=1)  # one alert per condition per period
    exit_codes: list[int] = [1, 3, 4]  # run exit statuses that alert
    spike_ratio: float = Field(1.5, gt=1)  # this week above the forecast by this factor...
    spike_min: int = Field(10, ge=1)  # ...and by at least this many requests


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    condition: Mapped[str] = mapped_column(String(60), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(Text, default="")
    delivered: Mapped[str] = mapped_column(Text, default="{}")  # channel -> "sent" / error


@dataclass(frozen=True)
class Alert:
    condition: str  # stable name: one alert per condition per period
    subject: str
    body: str
    link: str
    severity: Severity = "warning"
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    alert: Alert
    delivered: dict[str, str]  # channel -> "sent" or the error


class Alerter(Store):
    """Sends alerts through the configured channels, once per condition and period."""

    def __init__(self, url: str, settings: AlertSettings) -> None:
        super().__init__(url)
        self.settings = settings

    def period_key(self, condition: str, now: datetime) -> str:
        bucket = int(now.timestamp() // (self.settings.period_minutes * 60))
        return f"{condition}@{bucket}"[:200]

    def send(self, alert: Alert, now: datetime | None = None) -> Sent | None:
        """Send unless this condition alerted in this period already (then None)."""
        if not self.settings.enabled:
            return None
        now = now or utcnow()
        try:
            with self.session() as s:
                s.add(AlertRow(key=self.period_key(alert.condition, now),
                               condition=alert.condition[:60], at=now, subject=alert.subject,
                               body=alert.body, link=alert.link))
        except IntegrityError:
            return None  # sent already in this period, by us or another runner
        delivered = self._deliver(alert)
        with self.session() as s:
            row = s.scalar(select(AlertRow).where(
                AlertRow.key == self.period_key(alert.condition, now)))
            if row is not None:
                row.delivered = json.dumps(delivered)
        return Sent(alert, delivered)

    def history(self, limit: int = 50) -> list[AlertRow]:
        with self.session() as s:
            return list(s.scalars(select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)))

    def _deliver(self, alert: Alert) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.settings.email_to and self.settings.smtp is not None:
            out["email"] = _attempt(lambda: self._email(alert), "email", alert)
        if self.settings.webhook is not None:
            out["webhook"] = _attempt(lambda: self._webhook(alert), "webhook", alert)
        if not out:
            logger.warning("alert {} has no channel configured: {}", alert.condition,
                           alert.subject)
        return out

    def _email(self, alert: Alert) -> None:
        smtp = self.settings.smtp
        assert smtp is not None
        msg = EmailMessage()
        msg["From"] = smtp.from_address or self.settings.from_address
        msg["To"] = ", ".join(self.settings.email_to)
        msg["Subject"] = f"[refund-bots {alert.severity}] {alert.subject}"
        msg["Message-ID"] = make_msgid(domain="refund-bots.local")
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-Refund-Bots-Alert"] = alert.condition
        msg.set_content(f"{alert.body}\n\nOpen the console: {alert.link}\n")
        send_smtp(smtp, msg, "alerts.smtp")

    def _webhook(self, alert: Alert) -> None:
        hook = self.settings.webhook
        assert hook is not None
        payload = {"text": f"[refund-bots {alert.severity}] {alert.subject}\n{alert.link}",
                   "condition": alert.condition, "severity": alert.severity,
                   "subject": alert.subject, "body": alert.body, "link": alert.link,
                   "details": alert.details}
        response = httpx.post(hook.resolved_url(), json=payload, timeout=hook.timeout_seconds)
        response.raise_for_status()


def _attempt(send: Any, channel: str, alert: Alert) -> str:
    """One channel's try: a failing channel never stops the other one, nor the run."""
    try:
        send()
        return "sent"
    except (OSError, smtplib.SMTPException, httpx.HTTPError, ConfigError) as exc:
        # the URL (which may hold a token) never goes in the log, only the error's kind
        error = f"{type(exc).__name__}: {exc}" if channel == "email" else \
            f"{type(exc).__name__}" + (f" {exc.response.status_code}"
                                       if isinstance(exc, httpx.HTTPStatusError) else "")
        logger.error("alert {} not delivered by {}: {}", alert.condition, channel, error)
        return error[:300]
