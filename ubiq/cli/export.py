"""``ubiq export``: a ``ubiq train`` checkpoint to ONNX, TFLite or OpenVINO IR with its
manifest.

```
ubiq export runs/det/weights/best.pt --format onnx [--out model.onnx]
ubiq export runs/det/weights/best.pt --format tflite [--int8 --calib DATA.yaml]
ubiq export runs/det/weights/best.pt --format openvino [--out model.xml]
ubiq export runs/cls/weights/best.pt --format onnx --task embed [--out embedder.onnx]
```

``--task embed`` writes the checkpoint's backbone with global pooling: an embedder (one
vector per image) for ``ubiq learn --embedder``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``export`` command."""
    parser = subparsers.add_parser(
        "export",
        help="export a trained checkpoint to ONNX, TFLite or OpenVINO IR",
        description="Export a ubiq checkpoint with its manifest, checked against torch.",
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="weights/best.pt of a ubiq train run")
    parser.add_argument("--format", choices=("onnx", "tflite", "openvino"), default="onnx")
    parser.add_argument(
        "--out", help="output file (default: RUN/model.onnx; RUN/model.xml for openvino)"
    )
    parser.add_argument(
        "--task",
        choices=("embed",),
        help="embed: export the backbone as an embedder (one vector per image) for ubiq learn",
    )
    parser.add_argument("--int8", action="store_true", help="tflite: full int8 (Coral form)")
    parser.add_argument(
        "--calib", help="tflite --int8: calibration images (data.yaml, image folder or glob)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ubiq.models.toolchain.export.onnx_export import export_onnx
    except ImportError as error:
        raise BackendUnavailable(
            "export", error.name or "torch", "pip install 'ubiq[train]'"
        ) from error
    out = args.out
    if args.format == "openvino" and out and Path(out).suffix.lower() != ".xml":
        raise ConfigError(f"--out for --format openvino must end in .xml, got {out}")
    if args.format in ("tflite", "openvino") and out:
        out = str(Path(out).with_suffix(".onnx"))
    if args.task == "embed":
        return _export_embedder(args, out)
    result = export_onnx(args.checkpoint, out)
    print(f"onnx: {result.path} (max |onnx - torch| {result.max_abs_diff:.1e})")
    print(f"manifest: {result.manifest_path}")
    if args.format == "tflite":
        _export_tflite(args, result)
    if args.format == "openvino":
        from ubiq.models.toolchain.export.openvino_ir import export_openvino

        ir = export_openvino(result.path, Path(args.out) if args.out else None)
        print(
            f"openvino: {ir.path} + {ir.weights_path.name} "
            f"(max |openvino f32 - onnx| {ir.max_abs_diff:.1e}); "
            f"run it with: ubiq detect --model {ir.path}"
        )
    return 0


def _export_embedder(args: argparse.Namespace, out: str | None) -> int:
    from ubiq.models.toolchain.export.embed_export import export_embedder

    if args.format != "onnx":
        raise ConfigError(f"--task embed exports ONNX only, got --format {args.format}")
    if out and Path(out).suffix.lower() != ".onnx":
        raise ConfigError(f"--out for --task embed must end in .onnx, got {out}")
    result = export_embedder(args.checkpoint, out)
    print(
        f"embedder: {result.path} ({result.notes[0]}; max |onnx - torch| {result.max_abs_diff:.1e})"
    )
    print(f"manifest: {result.manifest_path}")
    return 0


def _export_tflite(args: argparse.Namespace, onnx_result) -> None:
    from ubiq.models.toolchain.export.tflite import export_checkpoint_tflite

    if args.int8 and not args.calib:
        raise ConfigError("--int8 needs --calib DATA (a data.yaml, an image folder or a glob)")
    result = export_checkpoint_tflite(
        args.checkpoint, onnx_result, int8=args.int8, calib=args.calib
    )
    print(
        f"tflite float32: {result.float_model.path} "
        f"(max |tflite - torch| {result.max_abs_diff:.1e})"
    )
    if result.int8_model is not None:
        cosine = ", ".join(f"{c:.4f}" for c in result.int8_cosine)
        print(f"tflite int8: {result.int8_model.path} (cosine to torch {cosine})")
    for note in result.notes:
        print(f"note: {note}")
