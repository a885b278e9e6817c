"""The counter's counts against the truth, and supervision's LineZone on Roboflow
``trackers`` on the same detections.

Clips come from ``ubiq.models.datasets.crossings`` (objects of the generated photo set
crossing a line in both directions, overlapping pairs crossing together, one object
stopping beside the line and turning back). ``ubiq-det-mnv2-320``, the apps' default (or
``--model``) runs once per clip (its detections are cached), then:

- ubiq: the ``counter`` app's stages (Track + Rules with its shipped defaults);
- peer: ``trackers.ByteTrackTracker`` (defaults, and with thresholds for this detector)
  feeding ``supervision.LineZone`` (box centre as the anchor, 3 frames of hysteresis:
  the same rule as ubiq's), counting per class.

    python benchmarks/counter_vs_supervision.py --seeds 101 102 103 --workdir /tmp/counter

prints, per clip, the true counts and each counter's, and how many clips each gets exact.
It also says which true crossings the detector did not see (no box of the object's own
class in 3 frames or more on one side of the line: the far object of an overlapping pair
hidden behind the near one, a thin object the detector misses; see ``crossings_seen``),
how many of the seen ones it lost for longer than a second around the line (an occlusion a
tracker must bridge), and scores every counter a second time against the crossings it saw:
what any counter could count from these detections.
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
from ubiq.types import Detections, Frame, FrameResult, iou_matrix


def detections_for(clip, workdir: Path, seed: int, model_name: str = "ubiq-det-mnv2-320"):
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
    track = app.track_stage()
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


def own_boxes(clip, frames, labels, conf: float) -> tuple[np.ndarray, np.ndarray]:
    """Which objects the detector gave a box of their own, frame by frame.

    Returns ``(seen, visible)``, both ``(objects, frames)``: ``seen`` where a box of the
    object's own class at ``conf`` or more overlaps its pixels' box at IoU 0.3 or more and
    overlaps no other object's box more (a box over both objects of a pair is the near
    one's); ``visible`` the fraction of its pixels no nearer object covers (NaN where it is
    not in the frame).
    """
    seen = np.zeros((len(clip.walkers), clip.frames), bool)
    visible = np.full((len(clip.walkers), clip.frames), np.nan, np.float32)
    names = np.asarray(labels)
    for frame in range(clip.frames):
        rows, boxes, shown = clip.boxes(frame)
        if not rows:
            continue
        visible[rows, frame] = shown
        xyxy, scores, class_id = frames[frame]
        keep = scores >= conf
        if not keep.any():
            continue
        overlap = iou_matrix(xyxy[keep].astype(np.float32), boxes)
        best = overlap.argmax(axis=1)
        kinds = names[class_id[keep].astype(int)]
        for row, index in enumerate(rows):
            mine = (best == row) & (overlap[:, row] >= 0.3)
            seen[index, frame] = bool((kinds[mine] == clip.walkers[index].label).any())
    return seen, visible


def crossings_seen(clip, frames, labels, conf: float, min_frames: int = 3) -> list[dict]:
    """What the detector gave of each true crossing.

    For every object whose path crosses the line: in how many frames of its path before its
    centre passes the line, and from then on, it has a box of its own (:func:`own_boxes`);
    ``gap``, the frames from its last such box before that moment to its first after (the
    occlusion a tracker must bridge: 1 when it is boxed on both sides of the moment); and the
    median fraction of it no nearer object covers over the 15 frames either side. ``seen``
    is true when both sides have ``min_frames`` such frames, the hysteresis a count needs: a
    crossing that is not seen cannot be counted from these detections by any tracker.
    """
    x_line = crossings.WIDTH / 2
    seen_at, visible = own_boxes(clip, frames, labels, conf)
    out = []
    for index, walker in enumerate(clip.walkers):
        drawn = np.flatnonzero(~np.isnan(walker.xs))
        sides = np.sign(walker.xs[drawn] - x_line)
        if len(drawn) < 2 or sides[0] == sides[-1] or walker.stop:
            continue
        at = int(drawn[np.flatnonzero(sides != sides[0])[0]])
        before = np.flatnonzero(seen_at[index, :at])
        after = at + np.flatnonzero(seen_at[index, at:])
        near = visible[index, max(0, at - 15) : at + 15]
        near = near[~np.isnan(near)]
        counts = {"before": len(before), "after": len(after)}
        out.append(
            {
                "walker": index,
                "label": walker.label,
                "direction": "in" if sides[0] > 0 else "out",
                "frame": at,
                "pair_far": walker.depth > 1.0,
                "visible": round(float(np.median(near)) if len(near) else 0.0, 2),
                **counts,
                "gap": int(after[0] - before[-1]) if len(before) and len(after) else None,
                "seen": min(counts.values()) >= min_frames,
            }
        )
    return out


def countable(seen: list[dict]) -> dict:
    """The true counts of the crossings the detector saw (see :func:`crossings_seen`)."""
    counts: dict[str, dict[str, int]] = {}
    for row in seen:
        if row["seen"]:
            counts.setdefault(row["label"], {"in": 0, "out": 0})[row["direction"]] += 1
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


def add_set_option(parser: argparse.ArgumentParser, app: str, note: str = "") -> None:
    """``--set KEY=VALUE`` (repeatable): an ``app`` setting, as ``ubiq run --set``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"{app} app setting, as `ubiq run --set`{note}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--workdir", default="/tmp/ubiq-counter-bench")
    parser.add_argument("--conf", type=float, default=0.2, help="the counter's default")
    parser.add_argument(
        "--model", default="ubiq-det-mnv2-320", help="zoo name or model file (the apps' default)"
    )
    add_set_option(parser, "counter", " (label_s=null join_s=0: the old rules)")
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
    exact_seen, errors_seen = dict.fromkeys(exact, 0), dict.fromkeys(exact, 0)
    unseen_total, seen_total, bridged, rows = 0, 0, 0, []
    for seed in args.seeds:
        clip = crossings.generate(crossings.CrossingSpec(seed=seed))
        frames, labels = detections_for(clip, workdir, seed, args.model)
        truth = clip.truth()
        seen = crossings_seen(clip, frames, labels, args.conf)
        seen_truth = countable(seen)
        results = {"ubiq counter": ubiq_counts(clip, frames, labels, args.conf, tuple(args.set))}
        for name, options in peers.items():
            results[name] = peer_counts(clip, frames, labels, args.conf, options)
        print(f"seed {seed}: truth {json.dumps(truth)}")
        for row in seen:
            seen_total += row["seen"]
            bridged += row["seen"] and row["gap"] > clip.spec.fps
            if not row["seen"]:
                unseen_total += 1
                kind = "far object of a pair" if row["pair_far"] else "alone"
                print(
                    f"  not seen crossing: {row['label']} {row['direction']} at frame "
                    f"{row['frame']} ({kind}, {row['visible']:.0%} of it visible): a box of "
                    f"its own in {row['before']} frames before, {row['after']} after"
                )
        for name, counts in results.items():
            wrong, wrong_seen = errors(counts, truth), errors(counts, seen_truth)
            exact[name] += wrong == 0
            total_errors[name] += wrong
            exact_seen[name] += wrong_seen == 0
            errors_seen[name] += wrong_seen
            verdict = "exact" if wrong == 0 else f"{wrong} off ({wrong_seen} off the seen)"
            print(f"  {name:48s} {verdict}: {json.dumps(counts)}")
        rows.append({"seed": seed, "truth": truth, "seen": seen, **results})
    print(f"\nexact clips out of {len(args.seeds)} (total miscounts):")
    for name in exact:
        print(f"  {name:48s} {exact[name]} ({total_errors[name]})")
    print(
        f"\n{seen_total} true crossings seen, {bridged} of them boxed on both sides only with "
        f"more than a second without a box of their own around the line"
    )
    print(
        f"\nagainst the crossings the detector saw ({unseen_total} of the true crossings not "
        f"seen), exact clips out of {len(args.seeds)} (total miscounts):"
    )
    for name in exact:
        print(f"  {name:48s} {exact_seen[name]} ({errors_seen[name]})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
