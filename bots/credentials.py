"""Secrets by name, from the environment or the OS keyring, never from settings files.

Kept apart from the settings so that no settings dump, log line or report can
ever contain a secret: they are looked up at the moment they are needed.
"""

from __future__ import annotations

import os

from bots.errors import ConfigError

ENV_PREFIX = "REFUND_BOTS_"


def secret(name: str) -> str:
    """A secret by name: `$REFUND_BOTS_<NAME>`, else the OS keyring (service "refund-bots")."""
    value = os.environ.get(ENV_PREFIX + name)
    if value:
        return value
    try:
        import keyring  # optional: only where ops teams use an OS keyring

        value = keyring.get_password("refund-bots", name)
    except Exception:  # no keyring package or no backend: fall through to the error
        value = None
    if value:
        return value
    raise ConfigError(
        f"secret {name} is not set: export {ENV_PREFIX}{name}=... "
        f"or store it with `keyring set refund-bots {name}`"
    )
