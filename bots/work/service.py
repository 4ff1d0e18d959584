"""Running unattended: systemd units for the scheduler, the console and N processing runners.

`refund-bots service print` writes them to the terminal (`service write DIR` into files):

- `refund-bots-scheduler.service`: `refund-bots schedule` (intake, report, the alerts);
- `refund-bots-console.service`: the ops console;
- `refund-bots-runner@.service`: a template; `refund-bots-runner@1` ... `@N` each run
  `refund-bots process` and start again a minute after it drained the queue. Runners take
  no lock: cases are leased one by one, so N runners (on one or several machines) share
  the queue;
- `refund-bots.env`: the secrets, for `EnvironmentFile=` (mode 0600, owned by root).

Every unit runs as an unprivileged user in the installation folder, restarts on failure,
and logs to the journal (`journalctl -u 'refund-bots*'`).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ENV_FILE = "/etc/refund-bots/refund-bots.env"
SECRETS = ("REFUND_BOTS_ORDERS_PASSWORD", "REFUND_BOTS_PAYMENTS_PASSWORD",
           "REFUND_BOTS_CONSOLE_SECRET_KEY", "REFUND_BOTS_SMTP_PASSWORD",
           "REFUND_BOTS_ALERTS_WEBHOOK")


@dataclass(frozen=True)
class ServicePlan:
    workdir: Path  # where config/ and selectors/ are (relative paths in the settings)
    user: str
    executable: str  # the refund-bots command (the venv's)
    config: Path | None
    runners: int
    env_file: str = ENV_FILE
    restart_seconds: int = 60  # a runner starts again this long after draining the queue


def default_executable() -> str:
    return str(Path(sys.executable).with_name("refund-bots"))


def units(plan: ServicePlan) -> dict[str, str]:
    """File name -> content, for /etc/systemd/system/ (and the env file)."""
    config = f" --config {shlex.quote(str(plan.config))}" if plan.config else ""
    exe = shlex.quote(plan.executable)
    common = (f"User={plan.user}\nGroup={plan.user}\nWorkingDirectory={plan.workdir}\n"
              f"EnvironmentFile={plan.env_file}\nEnvironment=PYTHONUNBUFFERED=1\n"
              "NoNewPrivileges=true\nPrivateTmp=true\nProtectSystem=full\n")
    return {
        "refund-bots-scheduler.service": f"""[Unit]
Description=refund-bots scheduler (intake, reports, alerts)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{common}ExecStart={exe} schedule{config}
# SIGTERM: the case in hand is finished, no new one is started
KillSignal=SIGTERM
TimeoutStopSec=300
Restart=on-failure
RestartSec=30

[Install]
WantedBy=multi-user.target
""",
        "refund-bots-console.service": f"""[Unit]
Description=refund-bots ops console
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{common}ExecStart={exe} console{config}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
""",
        "refund-bots-runner@.service": f"""[Unit]
Description=refund-bots processing runner %i
After=network-online.target
Wants=network-online.target
# a runner exits when the queue is drained (or with 3/4 on trouble): start it again
StartLimitIntervalSec=0

[Service]
Type=simple
{common}ExecStart={exe} process{config}
KillSignal=SIGTERM
TimeoutStopSec=300
Restart=always
RestartSec={plan.restart_seconds}

[Install]
WantedBy=multi-user.target
""",
        "refund-bots.env": "# Secrets of refund-bots (mode 0600, root:root). NAME=value lines.\n"
                           + "".join(f"{name}=\n" for name in SECRETS)
                           + "# REFUND_BOTS_QUEUE_URL=postgresql+psycopg://refundbots@db/refunds\n",
    }


def install_hint(plan: ServicePlan) -> str:
    runners = " ".join(f"refund-bots-runner@{i}" for i in range(1, plan.runners + 1))
    return (f"sudo install -d -m 0700 {Path(plan.env_file).parent}\n"
            f"sudo install -m 0600 refund-bots.env {plan.env_file}   # then fill in the secrets\n"
            "sudo cp refund-bots-*.service /etc/systemd/system/ && sudo systemctl daemon-reload\n"
            f"sudo systemctl enable --now refund-bots-scheduler refund-bots-console {runners}")
