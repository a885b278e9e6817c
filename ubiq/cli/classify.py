"""``ubiq classify``: run an image classifier (a ``ubiq learn`` folder or a softmax
classifier) on an image, a folder of images or a video.

```
ubiq classify --source photo.jpg --model my-pets
ubiq classify --source pets/ --model my-pets --jsonl answers.jsonl
ubiq classify --source clip.mp4 --model my-pets --jsonl answers.jsonl --every 10
```

One JSON object per picture (``--jsonl``): ``{"file", "label", "confidence", "top"}`` for
images, ``{"frame", "ts", "label", "confidence", "top"}`` for video frames; a learned
classifier adds ``"similarity"`` (the cosine to the answered class) and answers
``"unknown"`` below the class's threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ubiq.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Adds the ``classify`` command."""
    parser = subparsers.add_parser(
        "classify",
        help="classify images, folders or videos with a learned or trained classifier",
        description="Classify every picture of a source; one line (and JSONL record) each.",
    )
    parser.add_argument("--source", required=True, help="an image, a folder of images or a video")
    parser.add_argument("--model", required=True, help="a `ubiq learn` folder or classifier file")
    parser.add_argument("--jsonl", metavar="OUT", help="write one JSON object per picture")
    parser.add_argument("--top", type=int, default=3, help="classes listed per record (3)")
    parser.add_argument(
        "--every", type=int, default=1, metavar="N", help="video: classify every N-th frame"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N pictures")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(handler=run)


def record_of(answer: Any, top: int) -> dict[str, Any]:
    """The JSON fields of one answer (without where the picture came from)."""
    record: dict[str, Any] = {
        "label": answer.label,
        "confidence": round(answer.confidence, 4),
    }
    if hasattr(answer, "similarity"):
        record["similarity"] = round(answer.similarity, 4)
    record["top"] = [[label, round(p, 4)] for label, p in answer.top(top)]
    return record


def run(args: argparse.Namespace) -> int:
    for name in ("top", "every"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.jsonl and Path(args.jsonl).expanduser().is_dir():
        raise ConfigError(f"--jsonl {args.jsonl} is a folder; give a file name")
    from ubiq.hardware.sources import open_source
    from ubiq.models.runtime.tasks import Classifier

    classifier = Classifier.load(args.model, num_threads=args.threads)
    folder = Path(args.source).expanduser()
    source = (
        _ImageTree(folder) if folder.is_dir() else open_source(args.source, vid_stride=args.every)
    )
    labels = set(classifier.labels)
    matched = judged = 0
    counts: Counter[str] = Counter()
    seconds = 0.0
    out = None
    try:
        with source:
            if args.jsonl:
                path = Path(args.jsonl).expanduser()
                path.parent.mkdir(parents=True, exist_ok=True)
                out = path.open("w", encoding="utf-8")
            first_ns = None
            for frame in source:
                start = time.perf_counter()
                answer = classifier(frame.image)
                seconds += time.perf_counter() - start
                record = record_of(answer, args.top)
                if frame.path is not None:
                    where: dict[str, Any] = {"file": frame.path}
                    name = Path(frame.path).name
                else:
                    first_ns = frame.timestamp_ns if first_ns is None else first_ns
                    ts = (frame.timestamp_ns - first_ns) / 1e9
                    where = {"frame": frame.index, "ts": round(ts, 6)}
                    name = f"frame {frame.index}"
                counts[answer.label] += 1
                if frame.path is not None and Path(frame.path).parent.name in labels:
                    judged += 1
                    matched += answer.label == Path(frame.path).parent.name
                if out is not None:
                    out.write(json.dumps({**where, **record}) + "\n")
                    out.flush()
                if not args.quiet:
                    extra = (
                        f" (cosine {record['similarity']:.3f})" if "similarity" in record else ""
                    )
                    print(f"{name}: {answer.label} {answer.confidence:.2f}{extra}", flush=True)
                if args.max_frames is not None and sum(counts.values()) >= args.max_frames:
                    break
    finally:
        if out is not None:
            out.close()
    total = sum(counts.values())
    per = seconds / max(total, 1) * 1e3
    tally = ", ".join(f"{label} {n}" for label, n in counts.most_common())
    print(f"classified {total} picture{'s' * (total != 1)} ({per:.1f} ms each): {tally or 'none'}")
    if judged:
        print(
            f"{matched} of {judged} pictures in folders named after a class were answered "
            f"that class ({100 * matched / judged:.1f}%)"
        )
    return 0


class _ImageTree:
    """The images of a folder and its sub-folders, sorted by path (a class-folder tree
    such as ``ubiq learn --data`` reads); a file that does not decode is skipped with a
    warning naming it."""

    def __init__(self, root: Path) -> None:
        from ubiq.errors import SourceError
        from ubiq.models.datasets.yolo import IMAGE_SUFFIXES

        self.paths = sorted(
            p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.paths:
            raise SourceError(f"no images in folder {root} or its sub-folders")

    def __enter__(self) -> _ImageTree:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self):
        import logging

        import cv2

        from ubiq.types import Frame

        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                logging.getLogger(__name__).warning("skipping %s: not a decodable image", path)
                continue
            yield Frame(image=image, index=index, timestamp_ns=0, source_id="0", path=str(path))
