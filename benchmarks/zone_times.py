"""Zone enter, exit and dwell times on rendered clips against the truth of their paths.

The clips of ``benchmarks/counter_vs_supervision.py`` (objects of the generated photo set
crossing the frame, overlapping pairs, one object stopping and turning back) with a zone,
the middle half of the frame (``x`` from a quarter to three quarters of the width, full
height): every object walks into it and out of it, the stopper stays about 2 s. The
detector's boxes (cached per model file) go through the zone-alert app's Track and Rules
stages; each track is matched to the object its boxes overlap most.

Per object, the truth is the first and the last frame the centre of its pixels in the frame
is inside the zone. The
rules report ``zone.exit`` with ``dwell_s`` from the first frame of the run of frames
inside to the first frame of the run outside (both back-dated over the ``min_frames``
hysteresis), so a dwell time exact to the frame equals the truth's. Printed per object:
its dwell error in frames, and how many frames after the true entry the rules say it
entered (the ``zone.enter`` event's frame less its ``since_s``; 0 when the box's centre
is where the object's is).

    python benchmarks/zone_times.py --seeds 1 2 3 --workdir /tmp/counter

An object counts as right when it has exactly one ``zone.enter`` and one ``zone.exit``
and its dwell is within one frame of the truth. The score is also given over the objects
the detector gave a box of their own class (as ``counter_vs_supervision.own_boxes``) within
a frame of their true entry and of their true exit: the stays any rule could time to the
frame from these detections.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counter_vs_supervision import add_set_option, detections_for, own_boxes  # noqa: E402

from ubiq.apps.app import App  # noqa: E402
from ubiq.models.datasets import crossings  # noqa: E402
from ubiq.types import Detections, Frame, FrameResult, iou_matrix  # noqa: E402

ZONE_X = (crossings.WIDTH / 4, 3 * crossings.WIDTH / 4)


def measure(clip, frames, labels, conf: float, sets: tuple[str, ...] = ()) -> list[dict]:
    """One row per object that enters the zone: truth, events, errors."""
    x0, x1 = ZONE_X
    points = f"[{x0}, 0, {x1}, 0, {x1}, {crossings.HEIGHT}, {x0}, {crossings.HEIGHT}]"
    app = App.from_yaml(
        None,
        [f"conf={conf}", f"cameras.0.zones=[{{name: band, points: {points}}}]", *sets],
        app="zone-alert",
    )
    rules = app.rules_for(app.config.cameras[0])
    track = app.track_stage()
    image = np.zeros((crossings.HEIGHT, crossings.WIDTH, 3), np.uint8)
    owner: dict[int, Counter] = {}  # track -> objects its boxes overlapped
    events = []
    for index, (xyxy, scores, class_id) in enumerate(frames):
        keep = scores >= conf
        result = FrameResult(
            Frame(image, index, int(index * 1e9 / clip.spec.fps)),
            Detections(xyxy[keep], scores[keep], class_id[keep], labels=tuple(labels)),
        )
        result = rules(track(result))
        events += [(index, event) for event in result.events]
        rows, boxes, _ = clip.boxes(index)
        found = result.detections
        if len(rows) and len(found):
            overlap = iou_matrix(found.xyxy.astype(np.float32), boxes)
            for row, track_id in enumerate(found.tracker_id.tolist()):
                best = int(overlap[row].argmax())
                if overlap[row, best] >= 0.3:
                    owner.setdefault(track_id, Counter())[rows[best]] += 1
    events += [(len(frames), event) for event in rules.finish()]
    walker_of = {t: c.most_common(1)[0][0] for t, c in owner.items()}
    seen, _ = own_boxes(clip, frames, labels, conf)
    frame_s = 1.0 / clip.spec.fps
    out = []
    for index, walker in enumerate(clip.walkers):
        # the centre of the object's pixels in the frame (what a camera sees: a wide object
        # half out of the frame has its box, and its centre, cut at the frame's edge)
        columns = np.flatnonzero(walker.alpha.max(axis=0) >= 0.5)
        left = walker.xs - walker.alpha.shape[1] / 2
        seen_left = np.clip(left + columns[0], 0, crossings.WIDTH)
        seen_right = np.clip(left + columns[-1] + 1, 0, crossings.WIDTH)
        centre = (seen_left + seen_right) / 2
        inside = np.flatnonzero((centre >= x0) & (centre <= x1))
        if not len(inside):
            continue
        true_dwell = (inside[-1] + 1 - inside[0]) * frame_s
        mine = [(i, e) for i, e in events if walker_of.get(e.payload.get("track_id")) == index]
        # the frame the rules say it entered: the event's frame less its since_s
        enters = [
            i - round(e.payload["since_s"] * clip.spec.fps)
            for i, e in mine
            if e.kind == "zone.enter"
        ]
        exits = [e.payload["dwell_s"] for _, e in mine if e.kind == "zone.exit"]
        row = {"walker": index, "label": walker.label, "stops": walker.stop}
        # a box of its own within a frame of the true entry and of the true exit: without
        # one, no rule can time the stay to the frame from these detections
        row["timeable"] = bool(
            seen[index, max(0, inside[0] - 1) : inside[0] + 2].any()
            and seen[index, max(0, inside[-1] - 1) : inside[-1] + 2].any()
        )
        row.update(enters=len(enters), exits=len(exits))
        if len(enters) == 1 and len(exits) == 1:
            row["dwell_error_frames"] = round(float((exits[0] - true_dwell) / frame_s), 2)
            row["enter_delay_frames"] = enters[0] - int(inside[0])
        # dwell_s is rounded to the millisecond: one frame at 15 FPS reads as 1.005 frames
        row["right"] = bool(abs(row.get("dwell_error_frames", 99)) <= 1.02)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105])
    parser.add_argument("--workdir", default="/tmp/ubiq-counter-bench")
    parser.add_argument("--conf", type=float, default=0.2, help="the counter's threshold")
    parser.add_argument(
        "--model", default="ubiq-det-mnv2-320", help="zoo name or model file (the apps' default)"
    )
    add_set_option(parser, "zone-alert", " (join_s=0: no joins)")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        clip = crossings.generate(crossings.CrossingSpec(seed=seed))
        frames, labels = detections_for(clip, Path(args.workdir), seed, args.model)
        measured = measure(clip, frames, labels, args.conf, tuple(args.set))
        wrong = [r for r in measured if not r["right"]]
        print(f"seed {seed}: {len(measured) - len(wrong)}/{len(measured)} objects right")
        for row in wrong:
            print(f"  wrong: {row}")
        rows += measured
    per_label: dict[str, list[int]] = {}
    for row in rows:
        per_label.setdefault(row["label"], [0, 0])[row["right"]] += 1
    print(
        f"\nobjects with one enter, one exit and the dwell within one frame: "
        f"{sum(r['right'] for r in rows)}/{len(rows)}"
    )
    for label, (bad, good) in sorted(per_label.items()):
        print(f"  {label:12s} {good}/{good + bad}")
    timeable = [r for r in rows if r["timeable"]]
    print(
        f"of the {len(timeable)} objects the detector gave a box of their own within a frame "
        f"of their true entry and exit: {sum(r['right'] for r in timeable)}/{len(timeable)} "
        "right"
    )
    errors = [r["dwell_error_frames"] for r in rows if "dwell_error_frames" in r]
    delays = [r["enter_delay_frames"] for r in rows if "enter_delay_frames" in r]
    if errors:
        print(
            f"dwell error (frames) of objects with one enter and one exit: median "
            f"{statistics.median(errors):+.2f}, largest |error| {max(map(abs, errors)):.2f}"
        )
        print(
            f"zone.enter event after the true entry (frames): median "
            f"{statistics.median(delays)}, range {min(delays)}..{max(delays)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
