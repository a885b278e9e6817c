"""The counter's counts against the truth, and supervision's LineZone on Roboflow
``trackers`` on the same detections.

Clips come from ``ubiq.models.datasets.crossings`` (objects of the generated photo set
crossing a line in both directions, overlapping pairs crossing together, one object
stopping beside the line and turning back). ``ubiq-det-mnv2`` (or ``--model``) runs once per
clip (its detections are cached), then:

- ubiq: the ``counter`` app's stages (Track + Rules with its shipped defaults);
- peer: ``trackers.ByteTrackTracker`` (defaults, and with thresholds for this detector)
  feeding ``supervision.LineZone`` (box centre as the anchor, 3 frames of hysteresis:
  the same rule as ubiq's), counting per class.

    python benchmarks/counter_vs_supervision.py --seeds 101 102 103 --workdir /tmp/counter

prints, per clip, the true counts and each counter's, and how many clips each gets exact.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from ubiq.apps.app import App
from ubiq.models.datasets import crossings
from ubiq.types import Detections, Frame, FrameResult


def detections_for(clip, workdir: Path, seed: int, model_name: str = "ubiq-det-mnv2"):
    """``[(xyxy, scores, class_id)]`` per frame from the model at conf 0.05 (cached by the
    model file's hash)."""
    from ubiq.models.runtime.model import resolve_model_path

    path = resolve_model_path(model_name)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    cache = workdir / f"det-{seed}-{digest}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=True)
        return list(data["frames"]), list(data["labels"])
    from ubiq.models.runtime.model import DetectionModel

    model = DetectionModel.load(str(path), confidence_threshold=0.05)
    frames = []
    for index in range(clip.frames):
        found = model(clip.render(index))
        frames.append((found.xyxy, found.confidence, found.class_id))
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=np.array(frames, dtype=object), labels=np.array(model.labels))
    return frames, list(model.labels)


def ubiq_counts(clip, frames, labels, conf: float, sets: tuple[str, ...] = ()) -> dict:
    line = ",".join(str(v) for v in clip.line)
    app = App.from_yaml(
        None,
        [f"conf={conf}", f"cameras.0.lines=[{{name: line, points: [{line}]}}]", *sets],
        app="counter",
    )
    camera = app.config.cameras[0]
    rules = app.rules_for(camera)
    from ubiq.pipelines.track.stage import Track

    track = Track(
        app.config.tracker,
        lost_buffer_s=app.config.lost_buffer_s,
        class_aware=app.config.class_aware,
        **app.config.track,
    )
    image = np.zeros((crossings.HEIGHT, crossings.WIDTH, 3), np.uint8)
    stages = [track, rules]
    for index, (xyxy, scores, class_id) in enumerate(frames):
        keep = scores >= conf
        result = FrameResult(
            Frame(image, index, int(index * 1e9 / clip.spec.fps)),
            Detections(xyxy[keep], scores[keep], class_id[keep], labels=tuple(labels)),
        )
        for stage in stages:
            result = stage(result)
    track.finish()
    counts = rules.counts()["lines"]["line"]
    return {label: dict(value) for label, value in sorted(counts.items())}


def peer_counts(clip, frames, labels, conf: float, options: dict) -> dict:
    import supervision as sv
    import trackers

    tracker = trackers.ByteTrackTracker(frame_rate=clip.spec.fps, **options)
    x1, y1, x2, y2 = clip.line
    zone = sv.LineZone(
        start=sv.Point(x1, y1),
        end=sv.Point(x2, y2),
        triggering_anchors=[sv.Position.CENTER],
        minimum_crossing_threshold=3,
    )
    for xyxy, scores, class_id in frames:
        keep = scores >= conf
        detections = sv.Detections(
            xyxy=xyxy[keep].astype(np.float32),
            confidence=scores[keep].astype(np.float32),
            class_id=class_id[keep].astype(int),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracked = tracker.update(detections)
        tracked = tracked[tracked.tracker_id >= 0] if tracked.tracker_id is not None else tracked
        zone.trigger(tracked)
    counts: dict[str, dict[str, int]] = {}
    # supervision's "in" is the opposite side convention to ubiq's: map by geometry.
    for class_id, n in zone.in_count_per_class.items():
        counts.setdefault(labels[int(class_id)], {"in": 0, "out": 0})["out"] += n
    for class_id, n in zone.out_count_per_class.items():
        counts.setdefault(labels[int(class_id)], {"in": 0, "out": 0})["in"] += n
    return dict(sorted(counts.items()))


def errors(counts: dict, truth: dict) -> int:
    """Sum over labels and directions of |counted - true|."""
    total = 0
    for label in set(counts) | set(truth):
        for direction in ("in", "out"):
            total += abs(
                counts.get(label, {}).get(direction, 0) - truth.get(label, {}).get(direction, 0)
            )
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--workdir", default="/tmp/ubiq-counter-bench")
    parser.add_argument("--conf", type=float, default=0.2, help="the counter's default")
    parser.add_argument("--model", default="ubiq-det-mnv2", help="zoo name or model file")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="counter app setting, as `ubiq run --set` (label_s=null join_s=0: the old rules)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    peers = {
        "trackers ByteTrack + LineZone": {},
        "trackers ByteTrack (thresholds 0.3) + LineZone": dict(
            track_activation_threshold=0.3, high_conf_det_threshold=0.3
        ),
    }
    exact = {"ubiq counter": 0, **{name: 0 for name in peers}}
    total_errors = dict.fromkeys(exact, 0)
    rows = []
    for seed in args.seeds:
        clip = crossings.generate(crossings.CrossingSpec(seed=seed))
        frames, labels = detections_for(clip, workdir, seed, args.model)
        truth = clip.truth()
        results = {"ubiq counter": ubiq_counts(clip, frames, labels, args.conf, tuple(args.set))}
        for name, options in peers.items():
            results[name] = peer_counts(clip, frames, labels, args.conf, options)
        print(f"seed {seed}: truth {json.dumps(truth)}")
        for name, counts in results.items():
            wrong = errors(counts, truth)
            exact[name] += wrong == 0
            total_errors[name] += wrong
            print(f"  {name:48s} {'exact' if wrong == 0 else f'{wrong} off'}: {json.dumps(counts)}")
        rows.append({"seed": seed, "truth": truth, **results})
    print(f"\nexact clips out of {len(args.seeds)} (total miscounts):")
    for name in exact:
        print(f"  {name:48s} {exact[name]} ({total_errors[name]})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
