"""``ubiq models``: list, pull and inspect zoo models.

```
ubiq models list [--json]
ubiq models pull NAME [--force]
ubiq models info NAME_OR_PATH
ubiq models backbones [--json] [--width W] [--imgsz 224]
```
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.manifest import ModelManifest, manifest_path_for


def add_parser(subparsers: Any) -> None:
    """Adds the ``models`` command and its subcommands to the top-level subparsers."""
    parser = subparsers.add_parser(
        "models",
        help="list, pull and inspect zoo models",
        description="List, pull and inspect the models of the ubiq zoo.",
    )
    parser.set_defaults(handler=run, models_parser=parser)
    commands = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    list_parser = commands.add_parser("list", help="list zoo models and whether they are cached")
    list_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    pull_parser = commands.add_parser("pull", help="fetch a zoo model into the cache")
    pull_parser.add_argument("name", metavar="NAME", help="zoo name, such as blazeface")
    pull_parser.add_argument("--force", action="store_true", help="fetch again even if cached")
    pull_parser.add_argument(
        "--timeout", type=float, default=20.0, metavar="SECONDS", help="network timeout"
    )

    info_parser = commands.add_parser("info", help="show a model's manifest and cache status")
    info_parser.add_argument(
        "target", metavar="NAME_OR_PATH", help="zoo name or a model file (.onnx, .tflite)"
    )
    info_parser.add_argument("--json", action="store_true", help="print JSON")

    backbones_parser = commands.add_parser(
        "backbones",
        help="list the trainable backbones with their parameters and MACs (needs [train])",
        description=(
            "List the backbone families with the parameters and multiply-accumulates (MACs) "
            "of their 1000-class classifier (comparable with the papers) and of the dense "
            "backbone alone, and the backbone's stride-8/16/32 channels."
        ),
    )
    backbones_parser.add_argument("--json", action="store_true", help="print JSON")
    backbones_parser.add_argument(
        "--width", type=float, default=1.0, metavar="W", help="channel multiplier (default 1.0)"
    )
    backbones_parser.add_argument(
        "--imgsz", type=int, default=224, metavar="PIXELS", help="square input size for MACs"
    )


def _human_size(num_bytes: int) -> str:
    size = float(num_bytes)
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _entry_rows() -> list[dict[str, Any]]:
    from ubiq.models.zoo import cached_path, list_entries

    rows = []
    for entry in list_entries():
        path = cached_path(entry.name)
        rows.append(
            {
                "name": entry.name,
                "task": entry.task,
                "license": entry.license,
                "cached": path is not None,
                "size_bytes": path.stat().st_size if path is not None else None,
                "path": str(path) if path is not None else None,
                "extra": entry.extra,
                "description": entry.description,
            }
        )
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    """Prints the zoo as a table (name, task, licence, cached, size) or as JSON."""
    rows = _entry_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("NAME", "TASK", "LICENCE", "CACHED", "SIZE")]
    for row in rows:
        size = _human_size(row["size_bytes"]) if row["cached"] else "-"
        license_text = row["license"] + (f" [{row['extra']}]" if row["extra"] else "")
        cached = "yes" if row["cached"] else "no"
        table.append((row["name"], row["task"], license_text, cached, size))
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Pulls a zoo model and prints its path."""
    from ubiq.models.zoo import pull

    path = pull(args.name, force=args.force, timeout_s=args.timeout)
    print(path)
    return 0


def _path_info(path: Path) -> dict[str, Any]:
    """Opens the file with its runtime (so a corrupt file is an error) and finds its manifest
    the way ``ubiq detect`` does."""
    from ubiq.errors import ModelError
    from ubiq.models.runtime.backend import load_backend
    from ubiq.models.runtime.model import find_manifest
    from ubiq.models.zoo.ultralytics_adapter import file_sha256

    runtime = load_backend(path)
    info: dict[str, Any] = {
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "sha256": file_sha256(path),
        "backend": runtime.name,
        "inputs": [[t.name, list(t.shape), t.dtype] for t in runtime.inputs],
        "outputs": [[t.name, list(t.shape), t.dtype] for t in runtime.outputs],
    }
    sidecar = manifest_path_for(path)
    try:
        manifest = find_manifest(path, runtime)
    except ModelError as error:
        info["manifest"] = None
        info["manifest_from"] = f"none: {error}"
        return info
    if sidecar.is_file():
        info["manifest_from"] = str(sidecar)
    elif "names" in runtime.metadata:
        info["manifest_from"] = "Ultralytics ONNX metadata"
    elif "ubiq.manifest" in runtime.metadata:
        info["manifest_from"] = "ubiq.manifest ONNX metadata"
    else:
        info["manifest_from"] = "guessed from the output shapes"
    info["manifest"] = manifest.to_dict()
    return info


def _zoo_info(name: str) -> dict[str, Any]:
    from ubiq.models.zoo import cached_path, get_entry

    entry = get_entry(name)
    path = cached_path(entry.name)
    info: dict[str, Any] = {
        "name": entry.name,
        "task": entry.task,
        "license": entry.license,
        "description": entry.description,
        "extra": entry.extra,
        "sha256": entry.sha256 or None,
        "sources": [source.describe() for source in entry.sources],
        "cached": path is not None,
        "path": str(path) if path is not None else None,
    }
    sidecar = manifest_path_for(path) if path is not None else None
    if sidecar is not None and sidecar.is_file():
        info["manifest"] = ModelManifest.load(sidecar).to_dict()
    elif entry.manifest:
        info["manifest"] = entry.manifest
    else:
        info["manifest"] = None
        info["manifest_from"] = "built from the Ultralytics ONNX metadata at pull time"
    return info


def cmd_info(args: argparse.Namespace) -> int:
    """Prints a zoo model's or a model file's manifest and cache status."""
    from ubiq.models.zoo import list_entries

    target = Path(args.target).expanduser()
    names = {entry.name for entry in list_entries()}
    if args.target in names:
        info = _zoo_info(args.target)
    elif target.is_file():
        info = _path_info(target)
    elif "/" in args.target or target.suffix:
        raise ModelError(f"model file not found: {target}")
    else:
        info = _zoo_info(args.target)  # raises ZooError with close names
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    manifest = info.pop("manifest")
    for key, value in info.items():
        if value is None or value == []:
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(f"  {item}")
            continue
        print(f"{key}: {value}")
    if manifest:
        print("manifest:")
        print(json.dumps(manifest, indent=2))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    """Prints every backbone family's parameters and MACs as a table or as JSON.

    Raises:
        BackendUnavailable: If torch is not installed.
        ConfigError: If the width or image size is not positive.
    """
    try:
        import torch  # noqa: F401
    except ImportError as error:
        raise BackendUnavailable("train", "torch", "pip install 'ubiq[train]'") from error
    from ubiq.models.toolchain.backbones import BACKBONES
    from ubiq.models.toolchain.backbones.profile import backbone_report

    if not args.width > 0:
        raise ConfigError(f"--width must be a number > 0, got {args.width}")
    if args.imgsz <= 0:
        raise ConfigError(f"--imgsz must be a positive number of pixels, got {args.imgsz}")
    rows = [backbone_report(name, args.width, args.imgsz) for name in BACKBONES]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        (
            "NAME",
            "WIDTH",
            "PARAMS (M)",
            f"MACS@{args.imgsz} (M)",
            "BACKBONE PARAMS (M)",
            "BACKBONE MACS (M)",
            "OUT CHANNELS",
        )
    ]
    for row in rows:
        table.append(
            (
                row["name"],
                f"{row['width']:g}",
                f"{row['params'] / 1e6:.2f}",
                f"{row['macs'] / 1e6:.1f}",
                f"{row['backbone_params'] / 1e6:.2f}",
                f"{row['backbone_macs'] / 1e6:.1f}",
                "/".join(str(channels) for channels in row["out_channels"]),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


_COMMANDS = {"list": cmd_list, "pull": cmd_pull, "info": cmd_info, "backbones": cmd_backbones}


def run(args: argparse.Namespace) -> int:
    """Dispatches ``ubiq models SUBCOMMAND``; prints help and returns 2 without one."""
    command = _COMMANDS.get(getattr(args, "models_command", None) or "")
    if command is None:
        parser = getattr(args, "models_parser", None)
        if parser is not None:
            parser.print_help(sys.stderr)
        return 2
    return command(args)
