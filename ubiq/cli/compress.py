"""``ubiq compress``: prune, distill and quantize a model, measuring and gating every step.

```
ubiq compress MODEL --recipe RECIPE.yaml --out DIR
ubiq compress MODEL [--prune 0.5] [--distill TEACHER.pt] [--quantize int8|fp16|dynamic]
    [--train DATA] [--calib DATA] [--val DATA] [--max-drop 1.0] [--threads 2] --out DIR
```

MODEL is a ``ubiq train`` checkpoint (``.pt``: every step) or an ONNX model with a
manifest (quantize only). The result is ``DIR/model.<kind>.onnx`` with its manifest;
``DIR/report.md`` (and ``.json``, ``.png``) holds every artifact's measurements.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``compress`` command."""
    parser = subparsers.add_parser(
        "compress",
        help="prune, distill, quantize a model; measure and gate every step",
        description="Compress a model step by step; a step that makes it slower or loses "
        "more than --max-drop points is reported and not handed over.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint (.pt) or model (.onnx)")
    parser.add_argument("--recipe", help="recipe YAML (steps, data, max_drop, threads)")
    parser.add_argument("--prune", type=float, metavar="RATIO", help="keep this MACs ratio")
    parser.add_argument("--distill", metavar="TEACHER", help="teacher checkpoint (.pt)")
    parser.add_argument("--quantize", choices=("int8", "fp16", "dynamic"))
    parser.add_argument("--train", metavar="DATA", help="training data (prune, distill)")
    parser.add_argument("--calib", metavar="DATA", help="calibration images (int8)")
    parser.add_argument("--val", metavar="DATA", help="validation data.yaml for the metric")
    parser.add_argument("--max-drop", type=float, default=1.0, help="points (default 1.0)")
    parser.add_argument("--threads", type=int, default=2, help="inference threads (default 2)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(handler=run)


def _check_flags(args: argparse.Namespace) -> None:
    """The data flags' checks with the flags' names, in the order the pipeline meets them
    (the library names the recipe's fields instead)."""
    if args.val and not Path(args.val).exists():
        raise ConfigError(f"--val {args.val} does not exist")
    if args.quantize == "int8" and not args.calib and Path(args.model).is_file():
        raise ConfigError("--quantize int8 needs --calib DATA (images or data.yaml)")


def run(args: argparse.Namespace) -> int:
    try:
        from ubiq.models.toolchain.compress.pipeline import compress
        from ubiq.models.toolchain.compress.recipe import load_recipe, recipe_from_flags
    except ImportError as error:
        raise BackendUnavailable(
            "compress", error.name or "torch", "pip install 'ubiq[train]'"
        ) from error
    if args.max_drop < 0:
        raise ConfigError(f"--max-drop must be >= 0 points, got {args.max_drop}")
    if args.recipe:
        if args.prune is not None or args.distill or args.quantize:
            raise ConfigError("give either --recipe or --prune/--distill/--quantize, not both")
        recipe = load_recipe(args.recipe)
    else:
        recipe = recipe_from_flags(
            prune=args.prune,
            distill=args.distill,
            quantize=args.quantize,
            train=args.train,
            calib=args.calib,
            val=args.val,
            max_drop=args.max_drop,
            threads=args.threads,
        )
        _check_flags(args)
    result = compress(
        Path(args.model),
        recipe,
        Path(args.out),
        progress=sys.stderr.isatty(),
        on_step=lambda text: print(text, file=sys.stderr),
    )
    for row in result.rows:
        metric = "-" if row.metric is None else f"{row.metric:.2f}"
        print(
            f"{row.name:10s} p50 {row.latency_p50_ms:7.2f} ms  {row.metric_name or 'metric'} "
            f"{metric}  {'accepted' if row.accepted else 'rejected'}"
        )
    for gate in result.gates:
        print(f"gate: {gate}")
    print(f"result: {result.result}")
    print(f"report: {result.report['md']}")
    return 0
