"""``ubiq learn``: teach new classes from a few pictures, on the device, without torch.

```
ubiq learn --embedder EMBEDDER.onnx --data pets/ --out my-pets
ubiq learn --out my-pets --add more-pets/
ubiq classify --source photo.jpg --model my-pets --jsonl answers.jsonl
```

``--data`` holds one sub-folder per class (``pets/my_cat/*.jpg``, ``pets/other_cat/...``;
the layout ``ubiq data`` writes). Each class's weight is the normalised mean embedding of
its pictures (weight imprinting), optionally refined by a few numpy gradient steps
(``--refine``); each class gets an "unknown" threshold chosen from its pictures. ``--add``
adds classes to an existing ``OUT`` and leaves the old ones as they were. ``--task kws``
adapts a keyword model to a speaker from a few WAVs instead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``learn`` command."""
    parser = subparsers.add_parser(
        "learn",
        help="learn new classes from a few examples on the device (weight imprinting)",
        description=(
            "Build a classifier from a few example pictures per class on top of an embedder "
            "(any model whose output is one vector per image), in seconds, without torch. "
            "--task kws adapts a keyword model to a voice from a few WAVs."
        ),
    )
    parser.add_argument("--task", choices=("image", "kws"), default="image")
    parser.add_argument(
        "--embedder",
        metavar="MODEL",
        help="embedder file or zoo name (image); keyword model (kws); default with --add: OUT's",
    )
    parser.add_argument("--data", metavar="DIR", help="examples: one sub-folder per class")
    parser.add_argument("--out", metavar="OUT", required=True, help="the learned model folder")
    parser.add_argument(
        "--add", metavar="DIR", help="add the classes of DIR to an existing OUT, keeping the old"
    )
    parser.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="STEPS",
        help="numpy gradient steps on the new classes' weights after imprinting (default 0)",
    )
    parser.add_argument(
        "--mirror",
        action="store_true",
        help="also learn each picture mirrored (objects that look the same mirrored: pets, "
        "vehicles; not text, digits or logos)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    try:
        from ubiq.cli.learn_kws import add_kws_arguments
    except ImportError:  # the speech side of learning is optional
        pass
    else:
        add_kws_arguments(parser)
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> Path:
    out = Path(args.out).expanduser()
    if args.refine < 0:
        raise ConfigError(f"--refine must be >= 0, got {args.refine}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.add and args.data:
        raise ConfigError(
            "give --data DIR for a new OUT or --add DIR for an existing one, not both"
        )
    if args.add:
        if not (out / "model.json").is_file():
            raise ConfigError(f"--add needs an existing learned model at --out {out}")
    else:
        if not args.data:
            raise ConfigError("--data DIR is required (one sub-folder of examples per class)")
        if not args.embedder:
            raise ConfigError("--embedder MODEL is required with --data")
        if out.exists() and not args.force:
            raise ConfigError(
                f"{out} exists; add classes with --add DIR, or replace it with --force"
            )
    return out


def run(args: argparse.Namespace) -> int:
    if args.task == "kws":
        from ubiq.cli.learn_kws import run_kws

        return run_kws(args)
    out = _check(args)
    from tqdm import tqdm

    from ubiq.models.runtime.embed import Embedder
    from ubiq.models.runtime.imprint import (
        build_head,
        describe,
        embed_examples,
        load_head,
        read_class_folders,
        save_learned,
    )

    base = None
    if args.add:
        base_model = out / "model.json"
        embedder = _embedder_of(out, args)
        from ubiq.manifest import ModelManifest

        base = load_head(base_model, ModelManifest.load(base_model))
        classes = read_class_folders(args.add)
    else:
        embedder = Embedder.load(args.embedder, num_threads=args.threads)
        classes = read_class_folders(args.data)
    if base is not None:
        taken = sorted(set(classes) & set(base.labels))
        if taken:
            raise ConfigError(
                f"class {taken[0]!r} is already learned in {out} ({', '.join(base.labels)}); "
                f"rename its folder or learn into a new --out"
            )
    pictures = sum(len(paths) for paths in classes.values())
    start = time.perf_counter()
    with tqdm(total=pictures, unit="picture", desc="embedding", leave=False) as bar:
        examples = embed_examples(embedder, classes, bar.update, mirror=args.mirror)
    embedded = time.perf_counter()
    head = build_head(examples, base=base, refine_steps=args.refine)
    done = time.perf_counter()
    if base is not None:
        info = dict(embedder.manifest.decoder.params.get("embedder", {}))
    else:
        info = {"name": embedder.manifest.name, "file": embedder.path.name}
    views = ("image", "centre 80%") + (("mirrored",) if args.mirror else ())
    manifest_path = save_learned(
        out, head, embedder.path, embedder.manifest, embedder_info=info, views=views
    )
    per_picture = (embedded - start) / max(pictures, 1) * 1e3
    new = ", ".join(classes)
    print(
        f"learned {len(classes)} class{'es' * (len(classes) != 1)} ({new}) from {pictures} "
        f"pictures in {done - start:.2f} s ({per_picture:.1f} ms a picture, "
        f"{len(views)} views each; weights {(done - embedded) * 1e3:.1f} ms) -> {out}"
    )
    print(describe(head))
    print(f"manifest: {manifest_path}")
    example = args.add or args.data
    print(f"run it with: `ubiq classify --source {example} --model {out}`")
    return 0


def _embedder_of(out: Path, args: argparse.Namespace):
    """The embedder inside a learned folder (``--embedder``, when given, must be it)."""
    from ubiq.models.runtime.embed import Embedder
    from ubiq.models.runtime.model import resolve_model_path
    from ubiq.paths import file_sha256

    embedder = Embedder.load(out, task="classify", num_threads=args.threads)
    if args.embedder:
        given = resolve_model_path(args.embedder)
        if file_sha256(given) != file_sha256(embedder.path):
            raise ConfigError(
                f"--embedder {args.embedder} is not the embedder {out} was learned with; "
                f"leave --embedder out with --add"
            )
    return embedder
