"""`refund-bots service print|write`: systemd units for running unattended."""

from __future__ import annotations

import configparser
import stat
from pathlib import Path

from typer.testing import CliRunner

from bots.cli import app


def test_service_print_names_every_unit_and_n_runners(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["service", "print", "--runners", "3", "--user", "rb",
                                   "--workdir", str(tmp_path), "--executable",
                                   "/opt/rb/.venv/bin/refund-bots"])
    assert out.exit_code == 0, out.output
    for name in ("refund-bots-scheduler.service", "refund-bots-console.service",
                 "refund-bots-runner@.service", "refund-bots.env"):
        assert f"# ---- {name} ----" in out.output
    assert "ExecStart=/opt/rb/.venv/bin/refund-bots process" in out.output
    assert "refund-bots-runner@1 refund-bots-runner@2 refund-bots-runner@3" in out.output


def test_service_write_makes_valid_units_and_a_private_env_file(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["service", "write", str(tmp_path / "units"), "--workdir",
                                   str(tmp_path), "--config", str(tmp_path / "s.yaml")])
    assert out.exit_code == 0, out.output
    units = tmp_path / "units"
    for unit in units.glob("*.service"):
        parsed = configparser.ConfigParser(strict=False, interpolation=None)
        parsed.optionxform = str  # type: ignore[assignment,method-assign]
        parsed.read_string(unit.read_text())
        service = parsed["Service"]
        assert service["User"] == "refundbots" and service["WorkingDirectory"] == str(tmp_path)
        assert service["ExecStart"].endswith(f"--config {tmp_path / 's.yaml'}")
        assert service["EnvironmentFile"] == "/etc/refund-bots/refund-bots.env"
    env = units / "refund-bots.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "REFUND_BOTS_ORDERS_PASSWORD=\n" in env.read_text()
