"""``ubiq deploy``: a systemd unit for an app, and a bundle to copy to a device.

``install`` renders ``deploy/systemd/ubiq@.service.in`` (kept in this module too, so an
installed wheel has it) into ``<unit-dir>/ubiq@APP.service``; it never runs ``systemctl``
or ``useradd`` itself, it prints the commands. ``bundle`` packs a model, its manifest,
an optional config and a ``check.sh`` into ``APP-TARGET.tar.gz``, after converting the
model for the target (:mod:`ubiq.models.export.targets`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
import tarfile
import time
from pathlib import Path

from ubiq import __version__
from ubiq.errors import ConfigError, UbiqError
from ubiq.paths import file_sha256

UNIT_TEMPLATE = """\
# ubiq app @APP@: rendered by `ubiq deploy install` from deploy/systemd/ubiq@.service.in.
# The runner sends READY=1 once its source is open and WATCHDOG=1 with every frame
# (at most every WatchdogSec/2): a pipeline that delivers no frame for WatchdogSec
# (a hung camera, a wedged runtime) is restarted. ExecStart must be a ubiq pipeline.
[Unit]
Description=ubiq app %i
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
WatchdogSec=60
User=@USER@
SupplementaryGroups=video audio
StateDirectory=ubiq
WorkingDirectory=/var/lib/ubiq
Environment=UBIQ_HOME=/var/lib/ubiq PYTHONUNBUFFERED=1
ExecStart=@EXEC_START@
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=15
StandardOutput=journal
StandardError=journal

[Install]
WantedBy=multi-user.target
"""

TARGETS = ("pi5", "jetson", "coral", "x86")
_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SYSTEMD_SPECIAL = re.compile(r"[\s\"'\\;]")


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
        "Prints the systemctl commands to run; runs none itself.",
    )
    install.add_argument("app", help="app name (letters, digits, '-', '_', '.')")
    install.add_argument(
        "--command",
        required=True,
        dest="service_command",
        metavar="COMMAND",
        help='the command to run, e.g. "ubiq detect csi:0 ..."',
    )
    install.add_argument("--user", default="ubiq", help="system user to run as (default ubiq)")
    install.add_argument(
        "--unit-dir", type=Path, default=Path("/etc/systemd/system"), help="where to write"
    )
    install.add_argument("--dry-run", action="store_true", help="print the unit, write nothing")
    install.set_defaults(handler=run_install)

    bundle = actions.add_parser(
        "bundle",
        help="convert a model for a device and pack it with check.sh into APP-TARGET.tar.gz",
        description="Converts a model for the target (ONNX fp32 and, with --calib, int8 "
        "for x86 and pi5; static-shape ONNX for jetson, whose TensorRT engine is built on "
        "the device; an _edgetpu.tflite for coral) and packs it with its manifest, an "
        "optional config and check.sh (ubiq doctor + ubiq bench on the device).",
    )
    bundle.add_argument("app", help="app name (letters, digits, '-', '_', '.')")
    bundle.add_argument("--target", required=True, choices=TARGETS, help="device kind")
    bundle.add_argument(
        "--model", required=True, help="ubiq train checkpoint (.pt), model file or zoo name"
    )
    bundle.add_argument(
        "--calib",
        help="calibration images (data.yaml, folder or glob): int8 for x86/pi5, "
        "needed for coral from a checkpoint",
    )
    bundle.add_argument("--config", type=Path, default=None, help="app config file (YAML)")
    bundle.add_argument("--out", type=Path, required=True, help="output folder")
    bundle.set_defaults(handler=run_bundle)


def _check_app(app: str) -> str:
    if not _APP_NAME.match(app):
        raise ConfigError(
            f"APP must be letters, digits, '-', '_' or '.', starting with a letter or digit; "
            f"got {app!r}"
        )
    return app


def _systemd_quote(argument: str) -> str:
    """Quotes one argument for ``ExecStart=`` (``%`` and ``$`` are escaped as systemd wants)."""
    text = argument.replace("%", "%%").replace("$", "$$")
    if argument == "" or _SYSTEMD_SPECIAL.search(argument):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def exec_start(command: str) -> str:
    """Turns a shell-style command into an ``ExecStart=`` value with an absolute program.

    Args:
        command: e.g. ``"ubiq detect csi:0 --model blazeface"``.

    Raises:
        ConfigError: If the command is empty, unparsable, or its program is not found.
    """
    try:
        words = shlex.split(command)
    except ValueError as error:
        raise ConfigError(f"--command could not be parsed ({error}): {command!r}") from error
    if not words:
        raise ConfigError("--command must not be empty, e.g. --command 'ubiq detect csi:0'")
    program = words[0]
    if not os.path.isabs(program):
        found = shutil.which(program)
        beside_python = Path(sys.executable).parent / program
        if found is None and beside_python.is_file():
            found = str(beside_python)
        if found is None:
            raise ConfigError(
                f"--command program {program!r} is not on PATH; give its absolute path, "
                f"e.g. /opt/ubiq/.venv/bin/{program}"
            )
        program = os.path.abspath(found)
    return " ".join(_systemd_quote(word) for word in [program, *words[1:]])


def render_unit(app: str, command: str, user: str = "ubiq") -> str:
    """Renders the systemd unit of ``app``.

    Args:
        app: App name; the unit is ``ubiq@APP.service``.
        command: The command the service runs.
        user: The system user it runs as.

    Raises:
        ConfigError: If a value is invalid (see :func:`exec_start`).
    """
    _check_app(app)
    if not _APP_NAME.match(user):
        raise ConfigError(f"--user must be a plain user name, got {user!r}")
    return (
        UNIT_TEMPLATE.replace("@APP@", app)
        .replace("@USER@", user)
        .replace("@EXEC_START@", exec_start(command))
    )


def _user_exists(user: str) -> bool:
    import pwd  # POSIX only: imported here so `ubiq --help` works everywhere

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def run_install(args: argparse.Namespace) -> int:
    unit = render_unit(args.app, args.service_command, args.user)
    name = f"ubiq@{args.app}.service"
    if args.dry_run:
        print(f"# {args.unit_dir / name}")
        print(unit, end="")
        return 0
    unit_dir = args.unit_dir
    if not unit_dir.is_dir() or not os.access(unit_dir, os.W_OK):
        raise UbiqError(
            f"cannot write {unit_dir / name}: installing a service needs root; run "
            "sudo "
            + shlex.join(["ubiq", "deploy", "install", args.app, "--command", args.service_command])
            + " (or add --dry-run to see the unit)"
        )
    path = unit_dir / name
    try:
        path.write_text(unit)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from error
    print(f"wrote {path}")
    steps = []
    if not _user_exists(args.user):
        steps.append(f"sudo useradd --system --groups video,audio {args.user}")
    steps.append(
        f"for a Coral: sudo usermod -aG plugdev {args.user} (USB) or -aG apex (PCIe), "
        "then add the group to SupplementaryGroups= in the unit"
    )
    steps += [
        "sudo systemctl daemon-reload",
        f"sudo systemctl enable --now ubiq@{args.app}",
        f"journalctl -u ubiq@{args.app} -f",
    ]
    print("next:\n" + "\n".join(f"  {step}" for step in steps))
    return 0


def _check_script(models: list[str], device: str) -> str:
    paths = " ".join(shlex.quote(f"model/{name}") for name in models)
    lines = [
        "#!/bin/sh",
        "# Run on the device after unpacking: reports the machine, then times the bundled",
        "# model(s). UBIQ=/path/to/ubiq overrides the command (default: ubiq on PATH).",
        "set -eu",
        'cd "$(dirname "$0")"',
        'UBIQ="${UBIQ:-ubiq}"',
        "echo '== ubiq doctor --json (saved to doctor.json)'",
        '"$UBIQ" doctor --json > doctor.json',
        "cat doctor.json",
    ]
    if device == "tensorrt":
        lines.append("echo '(the first TensorRT run builds the engine: minutes, once)'")
    lines += [
        "echo " + shlex.quote(f"== ubiq bench {paths} --device {device} --runs 20"),
        f'"$UBIQ" bench {paths} --device {device} --runs 20',
    ]
    if len(models) > 1:
        lines.append(
            "echo "
            + shlex.quote(
                f"use model/{models[1]} only where it is faster than model/{models[0]} "
                "above; bundle.json has its agreement with it"
            )
        )
    return "\n".join(lines) + "\n"


def build_bundle(
    app: str,
    target: str,
    model: str | Path,
    out_dir: Path,
    config: Path | None = None,
    calib: str | None = None,
) -> Path:
    """Converts a model for a device and writes ``<out_dir>/APP-TARGET.tar.gz``.

    The conversion (see :mod:`ubiq.models.export.targets`) works in
    ``<out_dir>/APP-TARGET.models/``, which is kept so its files can be reused.

    Members (under ``APP/``): ``bundle.json`` (what was done, hashes, agreement of an int8
    model with fp32), ``check.sh`` (mode 755), ``model/<files>`` with their manifests,
    ``config/<file>``.

    Args:
        app: App name.
        target: One of ``pi5``, ``jetson``, ``coral``, ``x86``.
        model: A ``ubiq train`` checkpoint, a model file or a zoo name.
        out_dir: Folder for the archive (created).
        config: Optional app config file, copied as is.
        calib: Calibration images for an int8 model (x86, pi5) or the Edge TPU (coral).

    Returns:
        The archive's path.

    Raises:
        ConfigError: For a bad name, target, config path, or a model the target cannot use.
        ModelError: If the model file is not found or a conversion fails.
        BackendUnavailable: If a converter is missing (torch, edgetpu_compiler).
    """
    from ubiq.models.export.targets import convert_for_target

    _check_app(app)
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if config is not None and not Path(config).is_file():
        raise ConfigError(f"--config file not found: {config}")
    out_dir = Path(out_dir)
    archive = out_dir / f"{app}-{target}.tar.gz"
    work = out_dir / f"{app}-{target}.models"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out: cannot write {archive}: {error.strerror}") from error
    try:
        converted = convert_for_target(model, target, work, calib=calib)
    finally:
        with contextlib.suppress(OSError):
            work.rmdir()  # only when empty: nothing was made here
    models = [converted.primary, *converted.alternatives]
    info = {
        "app": app,
        "target": target,
        "ubiq_version": __version__,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": _describe(converted.primary),
        "alternatives": [
            {**_describe(p), "agreement": converted.fidelity.get(p.name)}
            for p in converted.alternatives
        ],
        "device": converted.device,
        "conversion": converted.steps,
        "config": f"config/{Path(config).name}" if config else None,
        "check": "check.sh",
    }
    partial = archive.with_name(archive.name + ".partial")
    script = _check_script([p.name for p in models], converted.device)
    try:
        _write_archive(partial, archive, app, info, script, converted.files, config)
    except OSError as error:
        where = error.filename if error.filename and Path(error.filename) != partial else archive
        raise ConfigError(f"cannot write {archive}: {where}: {error.strerror}") from error
    finally:
        with contextlib.suppress(OSError):  # gone once moved; the folder may be unusable
            partial.unlink(missing_ok=True)
    return archive


def _describe(model: Path) -> dict:
    from ubiq.manifest import manifest_path_for

    manifest = manifest_path_for(model)
    return {
        "file": f"model/{model.name}",
        "sha256": file_sha256(model),
        "size_bytes": model.stat().st_size,
        "manifest": f"model/{manifest.name}" if manifest.is_file() else None,
    }


def _write_archive(
    partial: Path,
    archive: Path,
    app: str,
    info: dict,
    script: str,
    files: list[Path],
    config: str | Path | None,
) -> None:
    """Writes the bundle to ``partial`` and moves it to ``archive`` when complete."""

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
        member = tarfile.TarInfo(f"{app}/{name}")
        member.size, member.mode, member.mtime = len(data), mode, int(time.time())
        tar.addfile(member, io.BytesIO(data))

    with tarfile.open(partial, "w:gz") as tar:
        add_bytes(tar, "bundle.json", (json.dumps(info, indent=2) + "\n").encode())
        add_bytes(tar, "check.sh", script.encode(), 0o755)
        for path in files:
            tar.add(path, arcname=f"{app}/model/{path.name}")
        if config:
            tar.add(config, arcname=f"{app}/config/{Path(config).name}")
    partial.replace(archive)


def run_bundle(args: argparse.Namespace) -> int:
    archive = build_bundle(args.app, args.target, args.model, args.out, args.config, args.calib)
    print(f"wrote {archive}")
    print(f"on the device: tar xzf {archive.name} && sh {args.app}/check.sh")
    return 0
