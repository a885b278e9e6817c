"""``ubiq data``: make training sets from real images, and check datasets.

```
ubiq data synth --out DIR [--train N] [--val N] [--imgsz N] [--seed S] [--max-objects K]
    [--upright P] [--min-box PX] [--min-visible F] [--overlap P]
ubiq data digits --out DIR [--val-fraction F] [--seed S] [--size N]
ubiq data faces --out DIR [--val-fraction F] [--seed S] [--size N]
ubiq data objects --out DIR [--train N] [--val N] [--size N] [--seed S]
ubiq data keywords --out DIR --words yes,no,stop [--seed S]
ubiq data check DATA_YAML_OR_FOLDER
```
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError, DatasetError


def add_parser(subparsers: Any) -> None:
    """Adds the ``data`` command and its subcommands to the top-level subparsers."""
    parser = subparsers.add_parser(
        "data",
        help="make training sets from real photographs and check datasets",
        description="Make training sets from real photographs and check datasets.",
    )
    parser.set_defaults(handler=run, data_parser=parser)
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    synth = commands.add_parser(
        "synth",
        help="composite a YOLO detection set (6 classes) from real photographs",
        description="Objects cut out of scikit-image's photographs (cat, cup, rocket, "
        "motorcycle, astronaut, coin) pasted on real backgrounds; YOLO layout with masks.",
    )
    synth.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    synth.add_argument("--train", type=int, default=800, metavar="N", help="train images")
    synth.add_argument("--val", type=int, default=200, metavar="N", help="val images")
    synth.add_argument("--imgsz", type=int, default=320, metavar="N", help="image side (px)")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")
    synth.add_argument(
        "--max-objects", type=int, default=4, metavar="K", help="most objects per image"
    )
    synth.add_argument(
        "--upright",
        type=float,
        default=0.0,
        metavar="P",
        help="share of objects pasted unrotated, as a camera sees them (default 0)",
    )
    synth.add_argument(
        "--min-box",
        type=int,
        default=6,
        metavar="PX",
        help="thinnest box pasted and labelled, in pixels (default 6)",
    )
    synth.add_argument(
        "--min-visible",
        type=float,
        default=0.4,
        metavar="F",
        help="share of an object left unhidden for it to be labelled (default 0.4)",
    )
    synth.add_argument(
        "--overlap",
        type=float,
        default=0.0,
        metavar="P",
        help="chance an object is pasted over an earlier one (default 0)",
    )

    for name, what in (
        ("digits", "scikit-learn's 1,797 handwritten digits (10 classes)"),
        ("faces", "scikit-image's LFW subset: 100 faces, 100 non-faces"),
    ):
        folder = commands.add_parser(name, help=f"write {what} as an image folder")
        folder.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
        folder.add_argument(
            "--val-fraction", type=float, default=0.2, metavar="F", help="share of val images"
        )
        folder.add_argument("--seed", type=int, default=0, metavar="S", help="split seed")
        folder.add_argument("--size", type=int, default=32, metavar="N", help="image side (px)")

    objects = commands.add_parser(
        "objects",
        help="write pictures of single objects cut out of real photographs as an image "
        "folder (few per class: for ubiq learn)",
    )
    objects.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    objects.add_argument("--train", type=int, default=5, metavar="N", help="pictures per class")
    objects.add_argument("--val", type=int, default=20, metavar="N", help="val pictures per class")
    objects.add_argument("--size", type=int, default=128, metavar="N", help="longest side (px)")
    objects.add_argument("--seed", type=int, default=0, metavar="S", help="random seed")

    keywords = commands.add_parser(
        "keywords", help="write a keyword-spotting set spoken by espeak-ng (WAV folders)"
    )
    keywords.add_argument("--out", required=True, metavar="DIR", help="output folder")
    keywords.add_argument(
        "--words", required=True, help="comma-separated keywords, such as yes,no,stop"
    )
    keywords.add_argument("--seed", type=int, default=0, help="random seed")

    check = commands.add_parser(
        "check", help="validate a YOLO data.yaml or an image folder and count its classes"
    )
    check.add_argument(
        "target", type=Path, metavar="DATA_YAML_OR_FOLDER", help="data.yaml or dataset folder"
    )


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_synth(args: argparse.Namespace) -> int:
    """Generates the composited detection set and prints its data.yaml path."""
    from ubiq.models.datasets.synth import generate_detection_set
    from ubiq.models.datasets.yolo import load_yolo_split

    data_yaml = generate_detection_set(
        args.out,
        train_images=args.train,
        val_images=args.val,
        imgsz=args.imgsz,
        seed=args.seed,
        max_objects=args.max_objects,
        upright=args.upright,
        min_box_px=args.min_box,
        min_visible=args.min_visible,
        overlap=args.overlap,
        progress=sys.stderr.isatty(),
    )
    boxes = 0
    names: list[str] = []
    for split in ("train", "val"):
        loaded = load_yolo_split(data_yaml, split)
        boxes += int(loaded.class_counts().sum())
        names = loaded.names
    print(data_yaml)
    print(
        f"{args.train} train + {args.val} val images at {args.imgsz} px, {boxes} objects of "
        f"{len(names)} classes ({', '.join(names)}); preview: {data_yaml.parent / 'preview.jpg'}"
    )
    return 0


def _cmd_folder(args: argparse.Namespace, make: Any) -> int:
    from ubiq.models.datasets.classify import load_image_folder

    root = make(args.out, val_fraction=args.val_fraction, seed=args.seed, size=args.size)
    counts = {split: len(load_image_folder(root, split)[0]) for split in ("train", "val")}
    class_names = load_image_folder(root, "train")[2]
    print(root)
    print(
        f"{counts['train']} train + {counts['val']} val images at {args.size} px, "
        f"{len(class_names)} classes ({', '.join(class_names)})"
    )
    return 0


def cmd_digits(args: argparse.Namespace) -> int:
    """Writes the digits image folder and prints its path."""
    from ubiq.models.datasets.classify import make_digits_set

    return _cmd_folder(args, make_digits_set)


def cmd_objects(args: argparse.Namespace) -> int:
    """Writes the single-object pictures and prints their folder."""
    from ubiq.models.datasets.classify import load_image_folder, make_objects_set

    root = make_objects_set(
        args.out,
        train_per_class=args.train,
        val_per_class=args.val,
        size=args.size,
        seed=args.seed,
    )
    class_names = load_image_folder(root, "train")[2]
    print(root)
    print(
        f"{args.train} train + {args.val} val pictures per class, {len(class_names)} classes "
        f"({', '.join(class_names)})"
    )
    return 0


def cmd_faces(args: argparse.Namespace) -> int:
    """Writes the faces image folder and prints its path."""
    from ubiq.models.datasets.classify import make_faces_set

    return _cmd_folder(args, make_faces_set)


def _check_yolo(data_yaml: Path) -> None:
    from ubiq.models.datasets.yolo import load_data_yaml, load_yolo_split

    data, _, names = load_data_yaml(data_yaml)
    splits = [split for split in ("train", "val", "test") if data.get(split)]
    rows = [["SPLIT", "IMAGES", "BACKGROUND", "BOXES", *names]]
    for split in splits:
        loaded = load_yolo_split(data_yaml, split)
        counts = loaded.class_counts()
        background = sum(1 for item in loaded.items if len(item.class_ids) == 0)
        rows.append(
            [
                split,
                str(len(loaded.items)),
                str(background),
                str(int(counts.sum())),
                *(str(int(count)) for count in counts),
            ]
        )
    print(f"{data_yaml}: YOLO detection set, {len(names)} classes")
    _print_table(rows)


def _check_image_folder(root: Path) -> None:
    import numpy as np

    from ubiq.models.datasets.classify import load_image_folder

    splits = [split for split in ("train", "val", "test") if (root / split).is_dir()]
    if not splits:
        raise DatasetError(f"{root}: neither a data.yaml nor an image folder (train/<class>/*.png)")
    results = {split: load_image_folder(root, split) for split in splits}
    names = sorted({name for _, _, class_names in results.values() for name in class_names})
    rows = [["SPLIT", "IMAGES", *names]]
    for split, (paths, labels, class_names) in results.items():
        counts = dict(zip(class_names, np.bincount(labels, minlength=len(class_names))))
        rows.append([split, str(len(paths)), *(str(int(counts.get(name, 0))) for name in names)])
    print(f"{root}: image folder, {len(names)} classes")
    _print_table(rows)


def cmd_check(args: argparse.Namespace) -> int:
    """Validates a dataset and prints the images and objects per class and split."""
    target = args.target.expanduser()
    if target.is_file():
        _check_yolo(target)
    elif (target / "data.yaml").is_file():
        _check_yolo(target / "data.yaml")
    elif target.is_dir():
        _check_image_folder(target)
    else:
        raise DatasetError(f"dataset not found: {target}")
    return 0


def cmd_keywords(args: argparse.Namespace) -> int:
    """Writes a keyword set with espeak-ng and prints its path."""
    from ubiq.models.datasets.speech import make_keyword_set

    words = [word.strip() for word in args.words.split(",") if word.strip()]
    if not words:
        raise ConfigError(f"--words names no keyword: {args.words!r}")
    root = make_keyword_set(args.out, words, seed=args.seed, progress=sys.stderr.isatty())
    print(root)
    return 0


_COMMANDS = {
    "synth": cmd_synth,
    "digits": cmd_digits,
    "faces": cmd_faces,
    "objects": cmd_objects,
    "keywords": cmd_keywords,
    "check": cmd_check,
}


def run(args: argparse.Namespace) -> int:
    """Dispatches ``ubiq data SUBCOMMAND``; prints help and returns 2 without one."""
    command = _COMMANDS.get(getattr(args, "data_command", None) or "")
    if command is None:
        parser = getattr(args, "data_parser", None)
        if parser is not None:
            parser.print_help(sys.stderr)
        return 2
    return command(args)
