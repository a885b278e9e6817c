"""``ubiq train``: train a detector, classifier or segmenter on the CPU.

```
ubiq train --task detect --backbone mobilenet_v2 --width 0.5 --data DATA.yaml \
    --epochs 30 --imgsz 320 --out runs/det
ubiq train --resume --out runs/det
ubiq train --task kws --commands commands.yaml --epochs 20 --out runs/commands
ubiq train --task detect --arch yolov8n --data DATA.yaml --epochs 10 --out runs/yolo
ubiq train --task classify --backbone mobilenet_v3_small --width 0.35 --data DIGITS \
    --imgsz 32 --out runs/student --teacher runs/teacher/weights/best.pt --kd-weight 1.0
```

``--task kws --commands FILE`` first speaks every phrase of a commands file (and its wake
phrase) with espeak-ng into ``OUT/data`` (:mod:`ubiq.models.datasets.command_training`),
then trains a command classifier on it for ``ubiq listen --model``.

``--teacher`` distills a trained checkpoint of the same task, classes and image size into
the student (see :mod:`ubiq.models.toolchain.compress.distill`); ``--resume`` reloads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``train`` command."""
    parser = subparsers.add_parser(
        "train",
        help="train a model (detect, classify, segment) on the CPU",
        description="Train a ubiq model, or an Ultralytics one with --arch, on the CPU.",
    )
    parser.add_argument("--task", choices=("detect", "classify", "segment", "kws"))
    parser.add_argument("--data", help="data.yaml (detect, segment) or image-folder root")
    parser.add_argument("--out", required=True, help="run folder (weights/, results.csv/png)")
    parser.add_argument(
        "--backbone",
        default="auto",
        help="see `ubiq models backbones` (auto: mobilenet_v2, or dscnn for kws)",
    )
    parser.add_argument("--width", type=float, default=1.0, help="backbone width multiplier")
    parser.add_argument("--arch", help="train an Ultralytics architecture instead (yolov8n, ...)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=320, help="square input size (x32)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--teacher",
        metavar="CKPT",
        help="distill from this `ubiq train` checkpoint (detect, classify; same classes, imgsz)",
    )
    parser.add_argument(
        "--kd-weight", type=float, default=1.0, help="factor of the distillation loss"
    )
    parser.add_argument(
        "--kd-temperature", type=float, default=4.0, help="distillation softening temperature"
    )
    parser.add_argument(
        "--commands",
        metavar="FILE",
        help="kws: train a command classifier for this commands file (speech made by espeak-ng)",
    )
    parser.add_argument("--wake", help="kws --commands: a wake phrase to learn as well")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.arch:
        return _run_ultralytics(args)
    if args.commands and not args.resume:
        args.data = _command_set(args)
    if not args.resume:
        if not args.task:
            raise ConfigError("--task is required (detect, classify or segment)")
        if not args.data:
            raise ConfigError("--data is required")
    try:
        from ubiq.models.toolchain.train.trainer import TrainOptions, train
    except ImportError as error:
        raise BackendUnavailable(
            "train", error.name or "torch", "pip install 'ubiq[train]'"
        ) from error
    options = TrainOptions(
        task=args.task or "detect",
        data=str(args.data or ""),
        out=args.out,
        backbone=args.backbone,
        width=args.width,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
        teacher=str(Path(args.teacher).resolve()) if args.teacher else None,
        kd_weight=args.kd_weight,
        kd_temperature=args.kd_temperature,
    )
    result = train(options, resume=args.resume)
    metrics = "  ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    print(f"trained {result.epochs} epochs in {result.seconds / 60:.1f} min; best: {metrics}")
    if "threshold" in result.extra:
        chosen = result.extra["threshold_chosen"]
        check = result.extra.get("verify_threshold")
        also = "" if check is None else f" with the phone check at {check:.2f}"
        heard = result.extra.get("phone_threshold")
        if heard is not None:
            also += f", after the phone recogniser on its own at {heard:.2f}"
        print(f"threshold: {result.extra['threshold']:.2f}{also}, chosen as the {chosen}")
    print(f"weights: {result.best}")
    print(f"curves:  {Path(result.out) / 'results.png'}")
    print(f"export:  ubiq export {result.best} --format onnx")
    return 0


def _command_set(args: argparse.Namespace) -> str:
    """Speaks the commands file's phrases into ``OUT/data`` (kept when it already exists)."""
    import yaml

    from ubiq.models.datasets.command_training import make_command_training_set
    from ubiq.pipelines.speech.commands import load_commands

    if args.task not in (None, "kws"):
        raise ConfigError(f"--commands trains a kws model, not --task {args.task}")
    if args.data:
        raise ConfigError("give --commands or --data, not both")
    args.task = "kws"
    commands = load_commands(args.commands).with_wake(args.wake)
    phrases = list(commands.texts) + ([commands.wake] if commands.wake else [])
    root = Path(args.out) / "data"
    description = root / "dataset.yaml"
    if description.is_file():
        made = yaml.safe_load(description.read_text(encoding="utf-8")) or {}
        if made.get("phrases") != phrases:
            raise ConfigError(
                f"{root} was spoken for other commands; remove it or choose another --out"
            )
        if (made.get("pronunciations") or {}) != dict(commands.pronunciations):
            # the clips do not depend on them (espeak-ng speaks the text); the phone check does
            made.pop("pronunciations", None)
            if commands.pronunciations:
                made["pronunciations"] = dict(commands.pronunciations)
            text = yaml.safe_dump(made, sort_keys=False, allow_unicode=True)
            description.write_text(text, encoding="utf-8")
        print(f"reusing the spoken command set in {root}", file=sys.stderr)
        return str(root)
    print(f"speaking {len(phrases)} phrases with espeak-ng into {root}", file=sys.stderr)
    make_command_training_set(
        root,
        phrases,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
        pronunciations=commands.pronunciations,
    )
    return str(root)


def _run_ultralytics(args: argparse.Namespace) -> int:
    if args.task not in (None, "detect"):
        raise ConfigError(f"--arch trains detectors only, not --task {args.task}")
    if args.teacher:
        raise ConfigError("--teacher distills ubiq models only, not --arch ones")
    if not args.data:
        raise ConfigError("--data is required")
    if not Path(args.data).is_file():
        raise ConfigError(f"--data {args.data} does not exist")
    from ubiq.models.zoo.ultralytics_adapter import train_ultralytics

    onnx_path = train_ultralytics(
        args.arch,
        args.data,
        args.out,
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        seed=args.seed,
    )
    print(f"trained {args.arch} with Ultralytics (AGPL-3.0) in {args.out}")
    print(f"exported: {onnx_path}")
    return 0
