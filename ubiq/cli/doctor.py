"""``ubiq doctor``: what this machine is, what ubiq can use on it, and what to fix.

The report and its rules are :mod:`ubiq.deploy.doctor`; this module parses the flags and
prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ubiq.deploy.doctor import collect, format_report


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine: platform, cameras, runtimes, accelerators, temperature",
        description="Reports the platform, cameras, microphones, inference runtimes and "
        "accelerators ubiq can use here, temperatures and throttling, and each problem "
        "found with its fix. Loads no model and opens no device.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    report = collect(args.root)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0
