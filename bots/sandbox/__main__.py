"""`python -m bots.sandbox`: both legacy apps in the foreground, for humans and for
`SandboxProcess` (which starts this with free ports and waits for the READY line)."""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from bots.sandbox.faults import FaultConfig
from bots.sandbox.server import serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bots.sandbox",
                                description="Sandbox legacy order system and payment portal.")
    p.add_argument("--data-dir", type=Path, default=Path("runs/sandbox"),
                   help="where the two SQLite databases live (default: runs/sandbox)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--orders-port", type=int, default=8101, help="0: any free port")
    p.add_argument("--payments-port", type=int, default=8102, help="0: any free port")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    p.add_argument("--today", type=date.fromisoformat, default=None,
                   help="YYYY-MM-DD the data is dated relative to (default: today)")
    p.add_argument("--reset", action="store_true", help="regenerate the databases")
    p.add_argument("--skin", choices=("default", "oldschool"), default="default",
                   help="the apps' look: default, or oldschool (German formats, iframe, "
                        "modal, interstitials; selectors in selectors/examples/oldschool/)")
    faults = p.add_argument_group("fault injection (off by default)")
    faults.add_argument("--latency-ms", type=int, default=0)
    faults.add_argument("--error-rate", type=float, default=0.0,
                        help="share of requests answering a 500 page")
    faults.add_argument("--hang-rate", type=float, default=0.0,
                        help="share of requests that sleep --hang-seconds first")
    faults.add_argument("--error-paths", default=None, metavar="REGEX",
                        help="only paths matching this regex fail (default: every path)")
    faults.add_argument("--hang-seconds", type=float, default=30.0)
    faults.add_argument("--hang-paths", default=None, metavar="REGEX",
                        help="only paths matching this regex hang (default: every path)")
    faults.add_argument("--hang-methods", default=None, metavar="METHODS",
                        help="only these methods hang, e.g. POST (default: every method)")
    faults.add_argument("--session-max-age", type=float, default=None, metavar="SECONDS")
    faults.add_argument("--session-max-requests", type=int, default=None, metavar="N")
    faults.add_argument("--maintenance", action="store_true")
    faults.add_argument("--fault-seed", type=int, default=1, help="seed of the fault draws")
    return p.parse_args(argv)


def faults_from(args: argparse.Namespace) -> FaultConfig:
    """The fault settings the flags ask for (ValueError names a bad one)."""
    return FaultConfig(latency_ms=args.latency_ms, error_rate=args.error_rate,
                       error_paths=args.error_paths, hang_rate=args.hang_rate,
                       hang_seconds=args.hang_seconds, hang_paths=args.hang_paths,
                       hang_methods=args.hang_methods, session_max_age_s=args.session_max_age,
                       session_max_requests=args.session_max_requests,
                       maintenance=args.maintenance, seed=args.fault_seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        faults = faults_from(args)
    except ValueError as exc:
        raise SystemExit(f"python -m bots.sandbox: {exc}") from None
    serve(args.data_dir, orders_port=args.orders_port, payments_port=args.payments_port,
          host=args.host, seed=args.seed, reset=args.reset, faults=faults, today=args.today,
          skin=args.skin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
