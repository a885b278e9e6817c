"""``ubiq deploy``: a systemd unit for an app, and a bundle to copy to a device.

The work is in :mod:`ubiq.deploy.units` (``install``) and :mod:`ubiq.deploy.bundle`
(``bundle``); this module parses the flags and prints. ``install`` never runs
``systemctl`` or ``useradd`` itself, it prints the commands.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ubiq.deploy.bundle import TARGETS, build_bundle
from ubiq.deploy.units import (
    DEFAULT_UNIT_DIR,
    DEFAULT_USER,
    EXAMPLE_COMMAND,
    UnitDirNotWritable,
    find_program,
    install_unit,
    next_steps,
    render_unit,
    unit_name,
)
from ubiq.errors import UbiqError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="install an app as a systemd service, or bundle it for a device",
        description="Deploy an app: `install` writes a systemd unit, `bundle` packs a model, "
        "its manifest, a config and a check script into a .tar.gz for a device.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    install = actions.add_parser(
        "install",
        help="write ubiq@APP.service (needs root unless --dry-run)",
        description="Writes <unit-dir>/ubiq@APP.service running COMMAND as a system user. "
        "Prints the systemctl commands to run; runs none itself. COMMAND must run one of "
        "ubiq's pipelines (detect, listen): the unit is Type=notify with a watchdog.",
        epilog=f'example: `ubiq deploy install people --command "{EXAMPLE_COMMAND}" --dry-run`',
    )
    install.add_argument("app", help="app name (letters, digits, '-', '_', '.')")
    install.add_argument(
        "--command",
        required=True,
        dest="service_command",
        metavar="COMMAND",
        help=f'the command to run, e.g. "{EXAMPLE_COMMAND}"',
    )
    install.add_argument(
        "--user", default=DEFAULT_USER, help=f"system user to run as (default {DEFAULT_USER})"
    )
    install.add_argument("--unit-dir", type=Path, default=DEFAULT_UNIT_DIR, help="where to write")
    install.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    install.set_defaults(handler=run_install)

    bundle = actions.add_parser(
        "bundle",
        help="convert a model for a device and pack it with check.sh into APP-TARGET.tar.gz",
        description="Converts a model for the target (ONNX fp32 and, with --calib, int8 "
        "for x86 and pi5; static-shape ONNX for jetson, whose TensorRT engine is built on "
        "the device; an _edgetpu.tflite for coral) and packs it with its manifest, an "
        "optional config and check.sh, which reports the device (`ubiq doctor --json`) "
        "and times the bundled models on it.",
    )
    bundle.add_argument("app", help="app name (letters, digits, '-', '_', '.')")
    bundle.add_argument("--target", required=True, choices=TARGETS, help="device kind")
    bundle.add_argument(
        "--model", required=True, help="a training checkpoint (.pt), a model file or a zoo name"
    )
    bundle.add_argument(
        "--calib",
        help="calibration images (data.yaml, folder or glob): int8 for x86/pi5, "
        "needed for coral from a checkpoint",
    )
    bundle.add_argument("--config", type=Path, default=None, help="app config file (YAML)")
    bundle.add_argument("--out", type=Path, required=True, help="output folder")
    bundle.set_defaults(handler=run_bundle)


def _as_root(args: argparse.Namespace) -> str:
    """The same ``ubiq deploy install`` under sudo, with ubiq's absolute path (a venv's
    ``bin/`` is not on sudo's PATH)."""
    words = [find_program("ubiq") or "ubiq", "deploy", "install", args.app]
    words += ["--command", args.service_command]
    if args.user != DEFAULT_USER:
        words += ["--user", args.user]
    if args.unit_dir != DEFAULT_UNIT_DIR:
        words += ["--unit-dir", str(args.unit_dir)]
    return "sudo " + shlex.join(words)


def run_install(args: argparse.Namespace) -> int:
    if args.dry_run:
        unit = render_unit(args.app, args.service_command, args.user)
        print(f"# {args.unit_dir / unit_name(args.app)}")
        print(unit, end="")
        return 0
    try:
        path = install_unit(args.app, args.service_command, args.user, args.unit_dir)
    except UnitDirNotWritable as error:
        raise UbiqError(f"{error}; run `{_as_root(args)}` (or add --dry-run)") from error
    print(f"wrote {path}")
    print("next:\n" + "\n".join(f"  {step}" for step in next_steps(args.app, args.user)))
    return 0


def run_bundle(args: argparse.Namespace) -> int:
    archive = build_bundle(args.app, args.target, args.model, args.out, args.config, args.calib)
    print(f"wrote {archive}")
    print(f"on the device: tar xzf {archive.name} && sh {args.app}/check.sh")
    return 0
