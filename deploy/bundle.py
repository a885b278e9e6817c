"""Device bundles: a model converted for a target, packed with a check script.

:func:`build_bundle` converts the model (:mod:`ubiq.models.toolchain.export.targets`) and writes
``APP-TARGET.tar.gz`` with ``bundle.json``, ``check.sh`` (``ubiq doctor --json``, then
``ubiq bench`` on the bundled models, run on the device), the models with their manifests
and an optional app config.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import tarfile
import time
from pathlib import Path

from ubiq import __version__
from ubiq.errors import ConfigError
from ubiq.paths import file_sha256

from .units import check_app_name

TARGETS = ("pi5", "jetson", "coral", "x86")
"""Device kinds a bundle can be made for."""


def check_script(models: list[str], device: str) -> str:
    """The ``check.sh`` of a bundle: ``ubiq doctor --json``, then ``ubiq bench`` on ``models``.

    Args:
        models: File names under ``model/``; the first is the primary model.
        device: The ``--device`` of ``ubiq bench`` for the target (``cpu``, ``tensorrt``, ...).
    """
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

    The conversion (see :mod:`ubiq.models.toolchain.export.targets`) works in
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
    from ubiq.models.toolchain.export.targets import convert_for_target

    check_app_name(app)
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
    script = check_script([p.name for p in models], converted.device)
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
