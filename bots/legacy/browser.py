"""Finding and launching Chromium for Playwright.

Playwright's own download (`playwright install chromium`) is preferred where it
exists; on closed networks a distribution Chromium works through
`executable_path`. The search order is fixed and printed by `refund-bots doctor`
so ops staff can see which browser a bot will use, and override it.

Headless runs prefer the distribution's `chromium-headless-shell` to its full
Chromium: the same engine without the browser's UI layer, measured at half the CPU
and wall time per page load on a 2-core machine (what Playwright's own download uses
for headless runs too).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Where distributions put the real binary (the /usr/bin names are often shell wrappers).
SYSTEM_CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/snap/bin/chromium",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/usr/bin/microsoft-edge",
)
# Chromium's headless shell (Debian: `chromium-headless-shell`): for headless runs only.
HEADLESS_SHELL_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "/usr/bin/chromium-headless-shell",
)
PATH_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

CLOSED_NETWORK_ARGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


class BrowserNotFound(Exception):
    pass


@dataclass(frozen=True)
class BrowserChoice:
    """How Playwright will start Chromium, and why that one."""

    executable: str | None  # None: Playwright's bundled browser or `channel`
    channel: str | None
    source: str  # human explanation for `doctor` and the run log


def playwright_bundled_chromium() -> str | None:
    """Path of the Chromium that `playwright install` downloaded, if any."""
    root = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(Path.home() / ".cache/ms-playwright")
    if root == "0":
        return None
    hits = sorted(Path(root).glob("chromium*/chrome-linux*/chrome")) + sorted(
        Path(root).glob("chromium_headless_shell*/chrome-*/headless_shell")
    )
    return str(hits[-1]) if hits else None


def find_browser(executable: str | None = None, channel: str | None = None,
                 headless: bool = True) -> BrowserChoice:
    """Resolve the browser: setting > Playwright's own > (headless: the system's headless
    shell) > system Chromium/Chrome."""
    if executable:
        if not Path(executable).exists() and not shutil.which(executable):
            raise BrowserNotFound(f"configured browser not found: {executable}")
        return BrowserChoice(shutil.which(executable) or executable, None, "configured")
    if channel:
        return BrowserChoice(None, channel, f"installed channel '{channel}'")
    if playwright_bundled_chromium():
        return BrowserChoice(None, None, "Playwright's bundled Chromium")
    for candidate in (HEADLESS_SHELL_CANDIDATES if headless else ()) + SYSTEM_CANDIDATES:
        if Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return BrowserChoice(candidate, None, f"system browser {candidate}")
    for name in PATH_NAMES:
        if found := shutil.which(name):
            return BrowserChoice(found, None, f"system browser {found} (PATH)")
    raise BrowserNotFound(
        "no Chromium found. Install one: `playwright install chromium` (needs its CDN), or "
        "`sudo apt-get install chromium chromium-headless-shell`, or set "
        "REFUND_BOTS_BROWSER=/path/to/chrome"
    )


def launch_options(choice: BrowserChoice, *, headless: bool = True,
                   slow_mo_ms: int = 0) -> dict[str, Any]:
    """Keyword arguments for `playwright.chromium.launch()`."""
    args = list(CLOSED_NETWORK_ARGS)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    options: dict[str, Any] = {"headless": headless, "args": args}
    if slow_mo_ms:
        options["slow_mo"] = slow_mo_ms
    if choice.executable:
        options["executable_path"] = choice.executable
    if choice.channel:
        options["channel"] = choice.channel
    return options
