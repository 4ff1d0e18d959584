"""The console's settings (`console:` in the settings file)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # 0.0.0.0 to serve other machines (put HTTPS in front)
    port: int = Field(8200, ge=0, le=65535)
    # How alerts link to the console (default http://host:port).
    public_url: str | None = None
    threads: int = Field(8, ge=1, le=64)
    # An escalation waiting longer than this is past its SLA (inbox, alerts).
    sla_hours: float = Field(24.0, gt=0)
    # A decision that pays more than this needs a second user's approval (null: never).
    four_eyes_above: Decimal | None = Field(Decimal("1000.00"), ge=0)
    # The session-signing key: $REFUND_BOTS_<NAME> or the keyring. Unset: a random key
    # per start (everyone logs in again after a restart).
    secret_key_secret: str = "CONSOLE_SECRET_KEY"
    login_rate_limit: str = "5 per minute"  # per address and per user name (flask-limiter)
    session_hours: float = Field(12.0, gt=0)
    cookie_secure: bool = False  # true when the console is served over HTTPS

    def link(self, path: str = "/") -> str:
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/") + path
