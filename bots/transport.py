"""Encryption in transit by default: every connection to another machine uses TLS.

Customer mail, the legacy apps' sessions and the queue's data cross the network; to a host
other than this machine (loopback) they must be encrypted: IMAP over SSL or STARTTLS, SMTP
over SSL or STARTTLS, https for the legacy apps, and PostgreSQL with `sslmode=require` (or
stricter; the queue adds `require` when the URL says nothing). A deployment that really
must talk in clear (an old app on a private segment) says so with
`allow_insecure_transport: true`, and `refund-bots doctor` warns about it on every check.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import URL

SECURE_SSLMODES = ("require", "verify-ca", "verify-full")


def is_loopback(host: str | None) -> bool:
    name = (host or "").strip().strip("[]").lower()
    if not name or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def secure_postgres_url(url: URL) -> URL:
    """A remote PostgreSQL URL without an sslmode gets `sslmode=require`."""
    if not url.drivername.startswith("postgresql") or is_loopback(url.host):
        return url
    if "sslmode" in url.query:
        return url
    return url.update_query_dict({"sslmode": "require"})


def insecure_transports(settings: Any) -> list[str]:
    """Every configured connection to another machine that would not be encrypted."""
    found: list[str] = []
    for name in ("orders", "payments"):
        parts = urlsplit(getattr(settings, name).url)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            found.append(f"{name}.url {parts.scheme}://{parts.hostname} is not https")
    for source in settings.intake.sources:
        if getattr(source, "kind", "") == "imap" and not is_loopback(source.host) \
                and not (source.ssl or source.starttls):
            found.append(f"IMAP source '{source.label}' ({source.host}) has neither ssl nor "
                         "starttls")
    smtp = settings.notify.smtp if settings.notify is not None else None
    if smtp is not None and smtp.security == "none" and not is_loopback(smtp.host):
        found.append(f"notify.smtp ({smtp.host}) has security: none")
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only for this check

    try:
        queue = make_url(settings.queue_url)
    except Exception:  # noqa: BLE001 - an unparseable URL is reported by the queue itself
        return found
    if queue.drivername.startswith("postgresql") and not is_loopback(queue.host):
        mode = str(queue.query.get("sslmode", "require"))
        if mode not in SECURE_SSLMODES:
            found.append(f"queue_url to {queue.host} has sslmode={mode}")
    return found
